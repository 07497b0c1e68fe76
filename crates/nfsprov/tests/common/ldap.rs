//! Settings of a service that signs in through the test bed's `slapd`, shared by the tests
//! that need a directory.

use std::os::unix::fs::PermissionsExt as _;

use nfsprov_testbed::slapd;

/// Quota of directory users created at their first sign-in.
pub const DEFAULT_QUOTA_GB: i64 = 7;

pub fn role_groups(users_role: &str) -> String {
    format!(
        "admin={};{users_role}={};auditor={}",
        slapd::group_dn("nfs-admins"),
        slapd::group_dn("nfs-users"),
        slapd::group_dn("nfs-auditors")
    )
}

/// The settings of a service that signs in through `slapd` at `url`.
pub fn ldap_env(
    dir: &std::path::Path,
    url: &str,
    ca: &std::path::Path,
    users_role: &str,
) -> Vec<(String, String)> {
    let pw_file = dir.join("ldap-bind-password");
    std::fs::write(&pw_file, format!("{}\n", slapd::SERVICE_PASSWORD)).unwrap();
    std::fs::set_permissions(&pw_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    [
        ("NFSPROV_LDAP_URL", url.to_string()),
        ("NFSPROV_LDAP_CA_FILE", ca.display().to_string()),
        ("NFSPROV_LDAP_BIND_DN", slapd::SERVICE_DN.to_string()),
        (
            "NFSPROV_LDAP_BIND_PASSWORD_FILE",
            pw_file.display().to_string(),
        ),
        ("NFSPROV_LDAP_USER_BASE", slapd::PEOPLE_DN.to_string()),
        ("NFSPROV_LDAP_GROUP_BASE", slapd::GROUPS_DN.to_string()),
        ("NFSPROV_LDAP_ROLE_GROUPS", role_groups(users_role)),
        (
            "NFSPROV_LDAP_DEFAULT_QUOTA_GB",
            DEFAULT_QUOTA_GB.to_string(),
        ),
        ("NFSPROV_LDAP_TIMEOUT_SECS", "3".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

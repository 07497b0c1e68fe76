//! Sign-in through an LDAP directory or Active Directory (`ldap3`, rustls).
//!
//! One sign-in is one short conversation, over TLS only (LDAPS or StartTLS; the CA comes from
//! the settings): bind as the service account (or stay anonymous), find the one entry the user
//! filter names, find the groups whose members include that DN, then bind as that DN with the
//! user's password. The directory decides the password and whether the account may sign in
//! (a disabled or locked account's bind is refused); nfsprov decides the role from the
//! groups (`NFSPROV_LDAP_ROLE_GROUPS`, first match wins).
//!
//! The answers are kept apart because the API answers them differently: the directory
//! refused the credentials (`Refused`: 401, counted by the guessing limits), the user is in no
//! group that gives a role (`NoRole`: 403), the directory could not be asked (`Down`: 503,
//! not counted, never remembered). An empty password is refused before the directory is
//! asked: to LDAP, a simple bind with a DN and no password is an anonymous bind, which succeeds.
//!
//! An unknown name takes the same steps as a wrong password (both searches and a bind, as a
//! DN that names nobody), so that neither the answer nor its timing tells whether a name exists
//! in the directory.
//!
//! Nothing here touches the database: `auth` creates or updates the local row of a directory
//! user after a successful sign-in.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, ldap_escape};

use crate::model::Role;
use crate::settings::LdapSettings;

/// The LDAP result code of a bind with wrong credentials (also a disabled or locked account,
/// in OpenLDAP's ppolicy and in AD).
const INVALID_CREDENTIALS: u32 = 49;

/// The first RDN of the DN bound, under the user base, when the name matches no one entry.
pub const NOBODY_RDN: &str = "cn=nfsprov-no-such-user";

/// A configured directory, checked when the service starts.
pub struct Directory {
    url: String,
    conn: LdapConnSettings,
    service: Option<(String, String)>,
    user_base: String,
    user_filter: String,
    group_base: String,
    group_filter: String,
    /// Normalized group DN and the role it gives, in the configured order.
    role_groups: Vec<(String, Role)>,
    /// Quota of a user created at their first sign-in.
    pub default_quota_gb: i64,
    timeout: Duration,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the service password.
        f.debug_struct("Directory").field("url", &self.url).finish()
    }
}

/// Who the directory says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub dn: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// No such user, a wrong password, or an account the directory does not let in.
    Refused,
    /// The password is right, but the user is in none of the groups that give a role.
    NoRole,
    /// The directory could not be asked (unreachable, TLS, timeout, service account refused).
    Down(String),
}

/// A DN compared case-insensitively, without the spaces allowed around `,` and `=`.
fn normalize_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| {
            rdn.split('=')
                .map(|p| p.trim().to_lowercase())
                .collect::<Vec<_>>()
                .join("=")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `ROLE=GROUP-DN;ROLE=GROUP-DN...` into (normalized DN, role), in order.
fn parse_role_groups(text: &str) -> anyhow::Result<Vec<(String, Role)>> {
    let mut out = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((role, dn)) = entry.split_once('=') else {
            bail!("NFSPROV_LDAP_ROLE_GROUPS: {entry:?} is not ROLE=GROUP-DN");
        };
        let role = Role::parse(role.trim()).with_context(|| {
            format!("NFSPROV_LDAP_ROLE_GROUPS: {role:?} in {entry:?} is not a role (admin, user or auditor)")
        })?;
        let dn = dn.trim();
        if !dn.contains('=') {
            bail!("NFSPROV_LDAP_ROLE_GROUPS: {dn:?} in {entry:?} is not a DN");
        }
        out.push((normalize_dn(dn), role));
    }
    if out.is_empty() {
        bail!(
            "NFSPROV_LDAP_ROLE_GROUPS is empty: with a directory, name the groups that give a role, e.g. \"admin=cn=nfs-admins,ou=groups,dc=example,dc=com;user=cn=staff,ou=groups,dc=example,dc=com\""
        );
    }
    Ok(out)
}

/// TLS that trusts the CAs in `ca_file`, or the system's.
fn tls_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow::anyhow!("NFSPROV_LDAP_CA_FILE {}: {e}", path.display()))?;
            if certs.is_empty() {
                bail!(
                    "NFSPROV_LDAP_CA_FILE {}: no PEM certificate in it",
                    path.display()
                );
            }
            for c in certs {
                roots.add(c).with_context(|| {
                    format!("NFSPROV_LDAP_CA_FILE {}: a certificate", path.display())
                })?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    // The provider is named: a process default would depend on which rustls features other
    // crates of the build enable.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS for the directory")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Directory {
    /// The directory the settings describe (`None` without `NFSPROV_LDAP_URL`); every setting
    /// is checked and the files are read now, so a mistake stops the service at start.
    pub fn from_settings(s: &LdapSettings) -> anyhow::Result<Option<Arc<Directory>>> {
        let Some(url) = s.url.as_deref().map(str::trim) else {
            return Ok(None);
        };
        let tls_ok = match url.split_once("://").map(|(scheme, _)| scheme) {
            Some("ldaps") => true,
            Some("ldap") => s.starttls,
            _ => bail!(
                "NFSPROV_LDAP_URL={url:?}: expected ldaps://host[:port] or ldap://host[:port]"
            ),
        };
        if !tls_ok {
            bail!(
                "NFSPROV_LDAP_URL={url:?}: passwords would cross the network in clear; use ldaps:// or set NFSPROV_LDAP_STARTTLS=true"
            );
        }
        if s.user_base.trim().is_empty() {
            bail!(
                "NFSPROV_LDAP_USER_BASE is empty: name where users are searched, e.g. \"ou=people,dc=example,dc=com\""
            );
        }
        if !s.user_filter.contains("{username}") {
            bail!(
                "NFSPROV_LDAP_USER_FILTER={:?} does not contain {{username}}",
                s.user_filter
            );
        }
        if !s.group_filter.contains("{dn}") {
            bail!(
                "NFSPROV_LDAP_GROUP_FILTER={:?} does not contain {{dn}}",
                s.group_filter
            );
        }
        let service = match (&s.bind_dn, &s.bind_password_file) {
            (None, None) => None,
            (Some(dn), Some(file)) => {
                let text = std::fs::read_to_string(file).with_context(|| {
                    format!("reading NFSPROV_LDAP_BIND_PASSWORD_FILE {}", file.display())
                })?;
                let password = text.lines().next().unwrap_or("").to_string();
                if password.is_empty() {
                    bail!(
                        "NFSPROV_LDAP_BIND_PASSWORD_FILE {}: the first line is empty",
                        file.display()
                    );
                }
                Some((dn.clone(), password))
            }
            (Some(_), None) => bail!(
                "NFSPROV_LDAP_BIND_DN is set but NFSPROV_LDAP_BIND_PASSWORD_FILE is not: put the password in a file only the service can read"
            ),
            (None, Some(_)) => {
                bail!("NFSPROV_LDAP_BIND_PASSWORD_FILE is set but NFSPROV_LDAP_BIND_DN is not")
            }
        };
        let conn = LdapConnSettings::new()
            .set_conn_timeout(s.timeout)
            .set_starttls(s.starttls && url.starts_with("ldap://"))
            .set_config(tls_config(s.ca_file.as_deref())?);
        let group_base = if s.group_base.trim().is_empty() {
            s.user_base.clone()
        } else {
            s.group_base.clone()
        };
        Ok(Some(Arc::new(Directory {
            url: url.to_string(),
            conn,
            service,
            user_base: s.user_base.clone(),
            user_filter: s.user_filter.clone(),
            group_base,
            group_filter: s.group_filter.clone(),
            role_groups: parse_role_groups(&s.role_groups)?,
            default_quota_gb: s.default_quota_gb,
            timeout: s.timeout,
        })))
    }

    /// Check `username`'s `password` with the directory, and find their role.
    pub async fn login(&self, username: &str, password: &str) -> Result<DirectoryUser, LoginError> {
        if password.is_empty() {
            return Err(LoginError::Refused);
        }
        match tokio::time::timeout(self.timeout, self.converse(username, password)).await {
            Ok(r) => r,
            Err(_) => Err(LoginError::Down(format!(
                "the directory did not answer within {} s",
                self.timeout.as_secs_f64()
            ))),
        }
    }

    async fn converse(&self, username: &str, password: &str) -> Result<DirectoryUser, LoginError> {
        let down = |what: &str, e: ldap3::LdapError| {
            LoginError::Down(format!("the directory {}: {what}: {e}", self.url))
        };
        let (conn, mut ldap) = LdapConnAsync::with_settings(self.conn.clone(), &self.url)
            .await
            .map_err(|e| down("connecting", e))?;
        ldap3::drive!(conn);
        if let Some((dn, pw)) = &self.service {
            ldap.simple_bind(dn, pw)
                .await
                .and_then(|r| r.success())
                .map_err(|e| down("binding as NFSPROV_LDAP_BIND_DN", e))?;
        }
        let filter = self
            .user_filter
            .replace("{username}", &ldap_escape(username));
        let (entries, _) = ldap
            .search(&self.user_base, Scope::Subtree, &filter, vec!["1.1"])
            .await
            .and_then(|r| r.success())
            .map_err(|e| down("searching for the user", e))?;
        // Nobody, or a filter that is ambiguous for this name: nobody to sign in as. The
        // conversation goes on as for a real user, with a DN that names nobody, so that an
        // unknown name and a wrong password look and take alike from outside (an unknown name
        // that never binds answers sooner).
        let (dn, found) = match entries.as_slice() {
            [one] => (SearchEntry::construct(one.clone()).dn, true),
            _ => (format!("{NOBODY_RDN},{}", self.user_base), false),
        };
        let filter = self.group_filter.replace("{dn}", &ldap_escape(dn.as_str()));
        let (groups, _) = ldap
            .search(&self.group_base, Scope::Subtree, &filter, vec!["1.1"])
            .await
            .and_then(|r| r.success())
            .map_err(|e| down("searching for the user's groups", e))?;
        let groups: Vec<String> = groups
            .into_iter()
            .map(|g| normalize_dn(&SearchEntry::construct(g).dn))
            .collect();
        let bind = ldap
            .simple_bind(&dn, password)
            .await
            .map_err(|e| down("binding as the user", e))?;
        let _ = ldap.unbind().await;
        if !found {
            return Err(LoginError::Refused);
        }
        match bind.rc {
            0 => {}
            INVALID_CREDENTIALS => return Err(LoginError::Refused),
            rc => {
                return Err(LoginError::Down(format!(
                    "the directory {} answered the user's bind with result {rc} ({})",
                    self.url, bind.text
                )));
            }
        }
        self.role_groups
            .iter()
            .find(|(g, _)| groups.contains(g))
            .map(|(_, role)| DirectoryUser { dn, role: *role })
            .ok_or(LoginError::NoRole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_compare_without_case_or_spaces() {
        assert_eq!(
            normalize_dn("CN=NFS Admins, OU=Groups ,DC=Example,DC=com"),
            "cn=nfs admins,ou=groups,dc=example,dc=com"
        );
    }

    #[test]
    fn role_groups_are_parsed_in_order_and_mistakes_named() {
        let g = parse_role_groups("admin=cn=a,dc=x ; user = CN=U,DC=X;auditor=cn=r,dc=x;").unwrap();
        assert_eq!(
            g,
            vec![
                ("cn=a,dc=x".to_string(), Role::Admin),
                ("cn=u,dc=x".to_string(), Role::User),
                ("cn=r,dc=x".to_string(), Role::Auditor),
            ]
        );
        for bad in ["", "admin", "root=cn=a,dc=x", "admin=nodn"] {
            let e = parse_role_groups(bad).unwrap_err().to_string();
            assert!(e.contains("NFSPROV_LDAP_ROLE_GROUPS"), "{bad}: {e}");
        }
    }

    fn settings() -> LdapSettings {
        LdapSettings {
            url: Some("ldaps://127.0.0.1:1".into()),
            user_base: "ou=people,dc=x".into(),
            role_groups: "user=cn=u,dc=x".into(),
            ..LdapSettings::default()
        }
    }

    #[test]
    fn clear_text_and_half_set_service_accounts_are_refused_at_start() {
        assert!(
            Directory::from_settings(&LdapSettings::default())
                .unwrap()
                .is_none()
        );
        assert!(Directory::from_settings(&settings()).unwrap().is_some());
        let plain = LdapSettings {
            url: Some("ldap://127.0.0.1:1".into()),
            ..settings()
        };
        let e = Directory::from_settings(&plain).unwrap_err().to_string();
        assert!(e.contains("NFSPROV_LDAP_STARTTLS"), "{e}");
        let starttls = LdapSettings {
            starttls: true,
            ..plain
        };
        assert!(Directory::from_settings(&starttls).unwrap().is_some());
        let half = LdapSettings {
            bind_dn: Some("cn=svc,dc=x".into()),
            ..settings()
        };
        let e = Directory::from_settings(&half).unwrap_err().to_string();
        assert!(e.contains("NFSPROV_LDAP_BIND_PASSWORD_FILE"), "{e}");
        let no_base = LdapSettings {
            user_base: String::new(),
            ..settings()
        };
        let e = Directory::from_settings(&no_base).unwrap_err().to_string();
        assert!(e.contains("NFSPROV_LDAP_USER_BASE"), "{e}");
    }

    #[test]
    fn the_service_password_never_shows_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "service-Secret-5Rt\n").unwrap();
        let s = LdapSettings {
            bind_dn: Some("cn=svc,dc=x".into()),
            bind_password_file: Some(file),
            ..settings()
        };
        let d = Directory::from_settings(&s).unwrap().unwrap();
        assert_eq!(d.service.as_ref().unwrap().1, "service-Secret-5Rt");
        let shown = format!("{d:?} {s:?}");
        assert!(!shown.contains("service-Secret-5Rt"), "{shown}");
    }

    #[tokio::test]
    async fn an_empty_password_is_refused_without_asking_the_directory() {
        // Port 1 refuses connections: asking would be `Down`, not `Refused`.
        let d = Directory::from_settings(&settings()).unwrap().unwrap();
        assert_eq!(d.login("erin", "").await, Err(LoginError::Refused));
        assert!(matches!(
            d.login("erin", "x").await,
            Err(LoginError::Down(_))
        ));
    }
}

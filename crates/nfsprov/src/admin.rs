//! Registering servers, root paths and users: the checks shared by the CLI and the admin API.

use crate::auth;
use crate::datastore::{Datastore, NewServer};
use crate::error::{Error, Result};
use crate::model::{DeletePolicy, Layout, RootPath, RootPathId, Server, ServerId, User};
use crate::spec::{ClientSpec, ExportPolicy, ExportPolicyDoc, RootDir};

/// A host name or IP address that is safe to pass to ssh as a host argument.
fn check_host(field: &str, host: &str) -> Result<()> {
    let spec = ClientSpec::parse(host).map_err(|e| Error::invalid(field, e.0))?;
    match spec.kind() {
        "host" | "ipv4" | "ipv6" => Ok(()),
        other => Err(Error::invalid(
            field,
            format!("must be a host name or an IP address, not a {other} pattern"),
        )),
    }
}

/// Longest host key line accepted.
const MAX_HOST_KEY_LEN: usize = 8192;
/// Longest path of the private key nfsprov logs in with (PATH_MAX).
const MAX_KEY_PATH_LEN: usize = 4096;

/// `type base64` of an OpenSSH public host key (comment dropped).
pub fn normalize_host_key(key: &str) -> Result<String> {
    // An RSA key of 16384 bits is about 2,800 characters of base64.
    if key.len() > MAX_HOST_KEY_LEN {
        return Err(Error::invalid(
            "host_key",
            format!(
                "the key is {} characters long; the limit is {MAX_HOST_KEY_LEN}",
                key.len()
            ),
        ));
    }
    let mut parts = key.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err(Error::invalid(
            "host_key",
            "expected an OpenSSH public key line such as 'ssh-ed25519 AAAA...' (see /etc/ssh/ssh_host_ed25519_key.pub on the server)",
        ));
    };
    const KINDS: [&str; 6] = [
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
        "sk-ssh-ed25519@openssh.com",
    ];
    if !KINDS.contains(&kind) {
        return Err(Error::invalid(
            "host_key",
            format!(
                "unsupported host key type {kind:?}; expected one of {}",
                KINDS.join(", ")
            ),
        ));
    }
    let b64 = blob
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
    if !b64 || blob.len() < 16 {
        return Err(Error::invalid("host_key", "the key data is not base64"));
    }
    Ok(format!("{kind} {blob}"))
}

pub async fn add_server(db: &Datastore, mut s: NewServer) -> Result<Server> {
    let name_ok = !s.name.is_empty()
        && s.name.len() <= 63
        && s.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.name.as_bytes()[0].is_ascii_alphanumeric();
    if !name_ok {
        return Err(Error::invalid(
            "name",
            "use 1-63 lowercase letters, digits or '-', starting with a letter or digit",
        ));
    }
    check_host("ssh_host", &s.ssh_host)?;
    if s.nfs_address.is_empty() {
        s.nfs_address = s.ssh_host.clone();
    }
    check_host("nfs_address", &s.nfs_address)?;
    if s.ssh_port == 0 {
        return Err(Error::invalid("ssh_port", "must be 1-65535"));
    }
    let user_ok = !s.ssh_user.is_empty()
        && s.ssh_user.len() <= 32
        && s.ssh_user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
        && !s.ssh_user.starts_with('-');
    if !user_ok {
        return Err(Error::invalid("ssh_user", "not a valid Unix user name"));
    }
    if !s.ssh_key.starts_with('/') || s.ssh_key.contains('\0') || s.ssh_key.len() > MAX_KEY_PATH_LEN
    {
        return Err(Error::invalid(
            "ssh_key",
            "give the absolute path of the private key nfsprov logs in with",
        ));
    }
    s.host_key = normalize_host_key(&s.host_key)?;
    if crate::model::BackendKind::parse(&s.backend).is_none() {
        return Err(Error::invalid("backend", "must be knfsd or ganesha"));
    }
    db.create_server(&s).await
}

/// Find a server by name, or by id when `server` is a number.
pub async fn find_server(db: &Datastore, server: &str) -> Result<Server> {
    let found = match server.parse::<i64>() {
        Ok(id) => db.server(ServerId(id)).await,
        Err(_) => db.server_by_name(server).await,
    };
    found.map_err(|e| match e {
        Error::NotFound { what, key } => {
            Error::invalid("server", format!("{what} {key} does not exist"))
        }
        other => other,
    })
}

pub async fn add_root_path(
    db: &Datastore,
    server: &str,
    path: &str,
    capacity_gb: i64,
    policy: DeletePolicy,
) -> Result<RootPath> {
    add_root_path_with(db, server, path, capacity_gb, policy, None).await
}

/// A root path with an export policy (`None`: the safe defaults), as a plain directory layout.
pub async fn add_root_path_with(
    db: &Datastore,
    server: &str,
    path: &str,
    capacity_gb: i64,
    policy: DeletePolicy,
    export_policy: Option<&ExportPolicyDoc>,
) -> Result<RootPath> {
    let no_check = |_: Server, _: RootDir, _: Layout| async { Ok(()) };
    add_root_path_checked(
        db,
        server,
        path,
        capacity_gb,
        policy,
        export_policy,
        Layout::Directory,
        no_check,
    )
    .await
}

/// A layout by name, or a 400 naming `layout`.
pub fn checked_layout(name: Option<&str>) -> Result<Layout> {
    let Some(name) = name else {
        return Ok(Layout::Directory);
    };
    match Layout::parse(name) {
        Some(layout) => Ok(layout),
        None => Err(Error::invalid(
            "layout",
            format!("unknown layout {name:?}: directory, btrfs or xfs-project"),
        )),
    }
}

/// A root path of `layout`. `check` asks the server whether the path can hold the layout
/// (after every field is valid, before anything is recorded); its refusal is the answer.
#[allow(clippy::too_many_arguments)]
pub async fn add_root_path_checked<F, Fut>(
    db: &Datastore,
    server: &str,
    path: &str,
    capacity_gb: i64,
    policy: DeletePolicy,
    export_policy: Option<&ExportPolicyDoc>,
    layout: Layout,
    check: F,
) -> Result<RootPath>
where
    F: FnOnce(Server, RootDir, Layout) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let server = find_server(db, server).await?;
    let path = RootDir::parse(path).map_err(|e| Error::invalid("path", e.0))?;
    let export_policy = match export_policy {
        Some(doc) => checked_export_policy(doc)?,
        None => ExportPolicy::default(),
    };
    crate::spec::gb_amount(capacity_gb, 1)
        .map_err(|e| Error::out_of_range(crate::error::Amount::Capacity, e.0))?;
    check(server.clone(), path.clone(), layout).await?;
    db.create_root_path_with(
        server.id,
        &path,
        capacity_gb,
        policy,
        &export_policy,
        layout,
    )
    .await
}

/// A policy document checked, or a 400 naming its field (`export_policy.allowed_clients[1]`).
pub fn checked_export_policy(doc: &ExportPolicyDoc) -> Result<ExportPolicy> {
    ExportPolicy::from_doc(doc)
        .map_err(|e| Error::invalid(format!("export_policy.{}", e.field), e.message))
}

/// Replace root path `id`'s export policy.
pub async fn set_export_policy(
    db: &Datastore,
    id: RootPathId,
    doc: &ExportPolicyDoc,
) -> Result<RootPath> {
    let policy = checked_export_policy(doc)?;
    db.set_root_path_policy(id, &policy).await
}

pub fn checked_password_hash(password: &str) -> Result<String> {
    if password.len() < 8 || password.len() > 1024 {
        return Err(Error::invalid(
            "password",
            "use at least 8 and at most 1024 characters",
        ));
    }
    Ok(auth::hash_password(password)?)
}

pub async fn add_user(
    db: &Datastore,
    username: &str,
    password: &str,
    role: crate::model::Role,
    quota_gb: i64,
) -> Result<User> {
    auth::check_username(username)?;
    if quota_gb < 0 {
        return Err(Error::invalid("quota_gb", "quota cannot be negative"));
    }
    let hash = checked_password_hash(password)?;
    db.create_user(username, &hash, role, quota_gb).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn host_keys_are_normalized_or_refused_naming_host_key() {
        let blob = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        for (input, want) in [
            (format!("ssh-ed25519 {blob}"), format!("ssh-ed25519 {blob}")),
            (
                format!("  ssh-ed25519   {blob}  root@server \n"),
                format!("ssh-ed25519 {blob}"),
            ),
            (format!("ssh-rsa {blob}"), format!("ssh-rsa {blob}")),
            (
                format!("ecdsa-sha2-nistp256 {blob} a comment with spaces"),
                format!("ecdsa-sha2-nistp256 {blob}"),
            ),
        ] {
            assert_eq!(normalize_host_key(&input).unwrap(), want, "{input:?}");
        }
        let long = format!("ssh-ed25519 {}", "A".repeat(MAX_HOST_KEY_LEN));
        for bad in [
            String::new(),
            "ssh-ed25519".into(),
            blob.into(),
            format!("ssh-dss {blob}"),
            format!("SSH-ED25519 {blob}"),
            "ssh-ed25519 AAAA".into(),
            "ssh-ed25519 not-base64-at-all!".into(),
            format!("ssh-ed25519 {blob};id"),
            long,
        ] {
            assert_eq!(field(normalize_host_key(&bad)), "host_key", "{bad:?}");
        }
    }

    #[test]
    fn ssh_hosts_are_a_name_or_an_address() {
        for ok in ["127.0.0.1", "nfs1.example.com", "::1", "server-2"] {
            assert!(check_host("ssh_host", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-oProxyCommand=x",
            "10.0.0.0/8",
            "*.example.com",
            "@netgroup",
            "*",
            "a b",
            "host;id",
        ] {
            assert_eq!(field(check_host("ssh_host", bad)), "ssh_host", "{bad:?}");
        }
    }

    #[test]
    fn passwords_are_bounded() {
        assert_eq!(field(checked_password_hash("short")), "password");
        assert_eq!(field(checked_password_hash(&"x".repeat(1025))), "password");
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    #[test]
    fn layouts_by_name() {
        assert_eq!(checked_layout(None).unwrap(), Layout::Directory);
        assert_eq!(
            checked_layout(Some("directory")).unwrap(),
            Layout::Directory
        );
        assert_eq!(checked_layout(Some("btrfs")).unwrap(), Layout::Btrfs);
        assert_eq!(
            checked_layout(Some("xfs-project")).unwrap(),
            Layout::XfsProject
        );
        for (name, says) in [
            ("zfs", "unknown layout"),
            ("", "unknown layout"),
            ("BTRFS", "unknown layout"),
        ] {
            match checked_layout(Some(name)) {
                Err(Error::Invalid { field, message }) => {
                    assert_eq!(field, "layout");
                    assert!(message.contains(says), "{name:?}: {message}");
                }
                other => panic!("{name:?}: {other:?}"),
            }
        }
    }
}

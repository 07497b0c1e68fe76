//! A real OpenLDAP `slapd` with its own small directory, for nfsprov's LDAP tests.
//!
//! [`Slapd::start`] makes, under its directory: a test CA and a server certificate for
//! `127.0.0.1`/`localhost` signed by it (`openssl`), a `slapd.conf`, the entries of [`USERS`]
//! and [`GROUPS`] loaded with `slapadd`, the configuration converted into a `cn=config` tree
//! with `slaptest -F`, and then runs `slapd -d 256` in the foreground as a child on two free
//! loopback ports: `ldap://` (StartTLS offered) and `ldaps://`. Level 256 (`stats`) writes one
//! line per connection and operation to [`Slapd::log_path`]: what nfsprov asked the directory.
//! The Debian package's own service is never used (setup installs it with services kept from
//! starting).
//!
//! The directory (base [`BASE_DN`]):
//! - people under `ou=people`, `inetOrgPerson` with `uid` and `userPassword`;
//! - groups under `ou=groups`, `groupOfNames` whose `member` values are user DNs (the form AD
//!   also uses, so one group filter, `(member={dn})`, serves both);
//! - a service account `cn=nfsprov,ou=services` that may search people and groups;
//!   anonymous clients may only bind;
//! - a disabled account: the `ppolicy` overlay with a default policy of `pwdLockout: TRUE`,
//!   and `pwdAccountLockedTime: 000001010000Z` (locked for good) on the user. slapd then
//!   refuses its bind with `invalidCredentials`, whatever the password, as AD refuses a
//!   disabled account.
//!
//! [`Slapd::stop`] kills it (the directory is down: connections are refused) and
//! [`Slapd::restart`] starts it again on the same ports with the same data.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub const BASE_DN: &str = "dc=nfsprov,dc=test";
pub const PEOPLE_DN: &str = "ou=people,dc=nfsprov,dc=test";
pub const GROUPS_DN: &str = "ou=groups,dc=nfsprov,dc=test";
/// The service account nfsprov searches with, and its password.
pub const SERVICE_DN: &str = "cn=nfsprov,ou=services,dc=nfsprov,dc=test";
pub const SERVICE_PASSWORD: &str = "service-pass-1";

/// A person in the directory.
pub struct DirUser {
    pub uid: &'static str,
    pub password: &'static str,
    /// Locked by ppolicy: every bind as it fails.
    pub disabled: bool,
}

/// dora: admins; erin, dave: users; fred: auditors; gus: no group; dave: disabled; alice: the
/// directory's alice, an admin there, whom a local `alice` shadows.
pub const USERS: &[DirUser] = &[
    DirUser {
        uid: "dora",
        password: "dora-dir-pass-1",
        disabled: false,
    },
    DirUser {
        uid: "erin",
        password: "erin-dir-pass-1",
        disabled: false,
    },
    DirUser {
        uid: "fred",
        password: "fred-dir-pass-1",
        disabled: false,
    },
    DirUser {
        uid: "gus",
        password: "gus-dir-pass-1",
        disabled: false,
    },
    DirUser {
        uid: "dave",
        password: "dave-dir-pass-1",
        disabled: true,
    },
    DirUser {
        uid: "alice",
        password: "alice-dir-pass-1",
        disabled: false,
    },
];

/// Groups (`cn` under `ou=groups`) and their members' uids.
pub const GROUPS: &[(&str, &[&str])] = &[
    ("nfs-admins", &["dora", "alice"]),
    ("nfs-users", &["erin", "dave"]),
    ("nfs-auditors", &["fred"]),
    ("other", &["gus"]),
];

pub fn user_dn(uid: &str) -> String {
    format!("uid={uid},{PEOPLE_DN}")
}

pub fn group_dn(cn: &str) -> String {
    format!("cn={cn},{GROUPS_DN}")
}

/// The password of directory user `uid`.
pub fn password(uid: &str) -> &'static str {
    USERS
        .iter()
        .find(|u| u.uid == uid)
        .unwrap_or_else(|| panic!("no directory user {uid}"))
        .password
}

pub struct Slapd {
    dir: PathBuf,
    pub ldap_port: u16,
    pub ldaps_port: u16,
    child: Option<Child>,
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Install slapd and ldap-utils if missing (with services kept from starting).
pub fn ensure_packages() -> Result<()> {
    if Path::new("/usr/sbin/slapd").exists() && Path::new("/usr/sbin/slaptest").exists() {
        return Ok(());
    }
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let made_policy = !policy.exists();
    if made_policy {
        fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        run(Command::new("chmod").args(["755", "/usr/sbin/policy-rc.d"]))?;
    }
    let res = run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "slapd", "ldap-utils", "openssl"])
        .env("DEBIAN_FRONTEND", "noninteractive"));
    if made_policy {
        let _ = fs::remove_file(policy);
    }
    res
}

impl Slapd {
    /// Make the CA, certificates, configuration and directory under `dir` and start slapd.
    pub fn start(dir: &Path) -> Result<Slapd> {
        ensure_packages()?;
        fs::create_dir_all(dir)?;
        let dir = fs::canonicalize(dir)?;
        make_certificates(&dir)?;
        let conf = dir.join("slapd.conf");
        fs::write(&conf, slapd_conf(&dir)?)?;
        let config_dir = dir.join("slapd.d");
        fs::create_dir_all(&config_dir)?;
        fs::create_dir_all(dir.join("db"))?;
        // The data first (slapadd creates the database slaptest then opens read-only), then the
        // configuration converted into a cn=config tree, which slapd runs from.
        let ldif = dir.join("data.ldif");
        fs::write(&ldif, data_ldif())?;
        run(Command::new("slapadd")
            .arg("-f")
            .arg(&conf)
            .args(["-b", BASE_DN, "-l"])
            .arg(&ldif))?;
        run(Command::new("slaptest")
            .arg("-f")
            .arg(&conf)
            .arg("-F")
            .arg(&config_dir))?;
        let mut slapd = Slapd {
            dir,
            ldap_port: free_port()?,
            ldaps_port: free_port()?,
            child: None,
        };
        slapd.restart()?;
        Ok(slapd)
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A CA that did not sign the server's certificate.
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.join("other-ca.pem")
    }

    /// Plain LDAP on loopback (StartTLS offered).
    pub fn ldap_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("slapd.log")
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Start slapd (again) on its ports, and wait until both accept connections.
    pub fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new("slapd")
            // `stats`: a line per connection and operation (BIND, SRCH, RESULT ...) in the log.
            .args(["-d", "256", "-F"])
            .arg(self.dir.join("slapd.d"))
            .arg("-h")
            .arg(format!("{}/ {}/", self.ldap_url(), self.ldaps_url()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting slapd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(crate::port_accepts(self.ldap_port) && crate::port_accepts(self.ldaps_port)) {
            if !self.is_running() {
                bail!(
                    "slapd exited at start: {}",
                    fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("slapd did not listen on its ports within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Kill slapd: the directory is down and its ports refuse connections.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    run(Command::new("openssl").current_dir(dir).args(args))
}

/// A CA, a server certificate it signed for 127.0.0.1 and localhost, and another CA, in `dir`:
/// `ca.pem`, `server.pem`, `server.key` and `other-ca.pem` (also [`crate::postgres`]'s).
pub(crate) fn make_certificates(dir: &Path) -> Result<()> {
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "7",
                "-subj",
                &format!("/CN=nfsprov test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ],
        )?;
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    )?;
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "7",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    )?;
    // slapd may run as another user on some systems; the key stays readable only by root here.
    Ok(())
}

fn slapd_conf(dir: &Path) -> Result<String> {
    let d = dir.display();
    Ok(format!(
        "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload ppolicy
pidfile {d}/slapd.pid
TLSCACertificateFile {d}/ca.pem
TLSCertificateFile {d}/server.pem
TLSCertificateKeyFile {d}/server.key

database config
rootdn \"cn=admin,cn=config\"

database mdb
suffix \"{BASE_DN}\"
rootdn \"cn=admin,{BASE_DN}\"
directory {d}/db
overlay ppolicy
ppolicy_default \"cn=default,ou=policies,{BASE_DN}\"
access to attrs=userPassword
    by anonymous auth
    by * none
access to dn.subtree=\"{PEOPLE_DN}\"
    by dn.exact=\"{SERVICE_DN}\" read
    by self read
    by * none
access to dn.subtree=\"{GROUPS_DN}\"
    by dn.exact=\"{SERVICE_DN}\" read
    by users read
    by * none
access to *
    by users read
    by * none
"
    ))
}

fn data_ldif() -> String {
    let mut out = format!(
        "dn: {BASE_DN}
objectClass: dcObject
objectClass: organization
o: nfsprov test
dc: nfsprov

dn: {PEOPLE_DN}
objectClass: organizationalUnit
ou: people

dn: {GROUPS_DN}
objectClass: organizationalUnit
ou: groups

dn: ou=services,{BASE_DN}
objectClass: organizationalUnit
ou: services

dn: ou=policies,{BASE_DN}
objectClass: organizationalUnit
ou: policies

dn: cn=default,ou=policies,{BASE_DN}
objectClass: pwdPolicy
objectClass: device
cn: default
pwdAttribute: userPassword
pwdLockout: TRUE

dn: {SERVICE_DN}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: nfsprov
userPassword: {SERVICE_PASSWORD}
"
    );
    for u in USERS {
        out.push_str(&format!(
            "\ndn: {}\nobjectClass: inetOrgPerson\nuid: {}\ncn: {}\nsn: {}\nuserPassword: {}\n",
            user_dn(u.uid),
            u.uid,
            u.uid,
            u.uid,
            u.password
        ));
        if u.disabled {
            out.push_str("pwdAccountLockedTime: 000001010000Z\n");
        }
    }
    for (cn, members) in GROUPS {
        out.push_str(&format!(
            "\ndn: {}\nobjectClass: groupOfNames\ncn: {cn}\n",
            group_dn(cn)
        ));
        for m in *members {
            out.push_str(&format!("member: {}\n", user_dn(m)));
        }
    }
    out
}

#[cfg(all(test, feature = "e2e"))]
mod tests {
    use super::*;

    fn whoami(s: &Slapd, url: &str, starttls: bool, uid: &str, pw: &str) -> bool {
        let mut cmd = Command::new("ldapwhoami");
        cmd.env("LDAPTLS_CACERT", s.ca_file()).args([
            "-x",
            "-H",
            url,
            "-D",
            &user_dn(uid),
            "-w",
            pw,
        ]);
        if starttls {
            cmd.arg("-ZZ");
        }
        cmd.output().unwrap().status.success()
    }

    #[test]
    fn the_directory_binds_its_users_refuses_the_disabled_one_and_stops() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Slapd::start(tmp.path()).unwrap();
        assert!(whoami(&s, &s.ldaps_url(), false, "dora", password("dora")));
        assert!(whoami(&s, &s.ldap_url(), true, "erin", password("erin")));
        assert!(!whoami(&s, &s.ldaps_url(), false, "erin", "wrong"));
        assert!(!whoami(&s, &s.ldaps_url(), false, "dave", password("dave")));
        s.stop();
        assert!(!crate::port_accepts(s.ldaps_port));
        s.restart().unwrap();
        assert!(whoami(&s, &s.ldaps_url(), false, "dora", password("dora")));
    }
}

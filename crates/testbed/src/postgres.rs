//! A real PostgreSQL server in a temporary directory, for nfsprov's tests on PostgreSQL.
//!
//! [`Postgres::start`] makes a directory in `/tmp` owned by the `postgres` user (`initdb` refuses
//! to run as root), runs `initdb` there (local socket: trust; TCP: `scram-sha-256`), starts the
//! server on a free `127.0.0.1` port with its socket in the same directory, and
//! creates the role [`USER`] (password [`PASSWORD`]; it may create databases, as tests that
//! want a fresh one do) and the database [`DATABASE`] it owns.
//! nfsprov connects with [`Postgres::url`] over TCP with that password, as it would in
//! production. The Debian package's own cluster and service are never used.
//!
//! The postmaster runs as a child of the test (`postgres -D`, as the `postgres` user, its
//! output in [`Postgres::log_path`]) rather than daemonized by `pg_ctl`: the test reaps it, so
//! after a kill its pid is gone at once and the next start does not take the dead
//! postmaster's zombie for a live one (this machine's pid 1 reaps orphans late).
//!
//! [`Postgres::start_tls`] starts it with `ssl = on`, a server certificate for `127.0.0.1` and
//! `localhost` signed by a test CA ([`Postgres::ca_file`]; [`Postgres::other_ca_file`] did not
//! sign it), and a `pg_hba.conf` that rejects every TCP connection without TLS
//! (`hostnossl ... reject`): a client that gets in spoke TLS. Its [`Postgres::url`] asks for
//! `sslmode=verify-full` with that CA as `sslrootcert`.
//!
//! `fsync=off`: a crash of the server's processes ([`Postgres::kill9`]) loses nothing (the
//! data is in the page cache); only a crash of the machine would, which no test makes.
//!
//! [`Postgres::stop`], [`Postgres::start_again`], [`Postgres::restart`] (same directory, same
//! port) and [`Postgres::kill9`] (the postmaster and its children SIGKILLed: a crash; the next
//! start recovers from the WAL). Dropping it stops the server and removes the directory, also
//! when a test panics.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The role nfsprov connects as.
pub const USER: &str = "nfsprov";
/// Its password (TCP connections must give it: `scram-sha-256`).
pub const PASSWORD: &str = "nfsprov-pg-pass-1";
/// The database nfsprov's tables live in.
pub const DATABASE: &str = "nfsprov";

const START_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// The postmaster, while it runs.
    child: Option<Child>,
    /// The `postgres` user's uid and gid.
    owner: (u32, u32),
    /// TLS only ([`Postgres::start_tls`]).
    tls: bool,
}

/// The directory of PostgreSQL's server programs: the newest `/usr/lib/postgresql/<n>/bin`
/// holding `initdb` and `pg_ctl`.
pub fn bin_dir() -> Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: install postgresql (scripts/setup.sh)")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .context("no /usr/lib/postgresql/<version>/bin with initdb and pg_ctl: install postgresql (scripts/setup.sh)")
}

fn check(what: &str, out: std::io::Result<Output>) -> Result<Output> {
    let out = out.with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

impl Postgres {
    /// `initdb` in a new directory and start the server on a free loopback port, with the
    /// role and database nfsprov uses.
    pub fn start() -> Result<Postgres> {
        Postgres::start_with(false)
    }

    /// As [`Postgres::start`], TCP only with TLS (see the module's documentation).
    pub fn start_tls() -> Result<Postgres> {
        Postgres::start_with(true)
    }

    fn start_with(tls: bool) -> Result<Postgres> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("nfsprov-pg-")
            .tempdir_in("/tmp")
            .context("making the PostgreSQL directory")?;
        check(
            "chown postgres",
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .output(),
        )?;
        let mut pg = Postgres {
            dir,
            bin,
            port: crate::free_port()?,
            child: None,
            owner: (id("-u")?, id("-g")?),
            tls,
        };
        check(
            "initdb",
            pg.as_postgres("initdb")
                .arg("-D")
                .arg(pg.data_dir())
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                .args([
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ])
                .output(),
        )?;
        if tls {
            pg.set_up_tls()?;
        }
        pg.start_again()?;
        // Two commands: CREATE DATABASE cannot share a transaction.
        pg.psql_admin(
            "postgres",
            &format!("CREATE ROLE {USER} LOGIN CREATEDB PASSWORD '{PASSWORD}';"),
        )?;
        pg.create_database(DATABASE)?;
        Ok(pg)
    }

    /// The certificates (`tls/`), `ssl = on` and a `pg_hba.conf` that takes TCP with TLS only.
    fn set_up_tls(&self) -> Result<()> {
        let tls = self.tls_dir();
        fs::create_dir(&tls).context("making the TLS directory")?;
        crate::slapd::make_certificates(&tls)?;
        // PostgreSQL refuses a key file that others may read, or that it does not own.
        check(
            "chown postgres",
            Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&tls)
                .output(),
        )?;
        check(
            "chmod",
            Command::new("chmod")
                .arg("600")
                .arg(tls.join("server.key"))
                .output(),
        )?;
        let conf = self.data_dir().join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).context("reading postgresql.conf")?;
        text.push_str(&format!(
            "\n# nfsprov-testbed: TLS only\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            tls.join("server.pem").display(),
            tls.join("server.key").display()
        ));
        fs::write(&conf, text).context("writing postgresql.conf")?;
        // First match wins: a TCP connection without TLS is rejected before any password.
        fs::write(
            self.data_dir().join("pg_hba.conf"),
            "local all all trust\n\
             hostnossl all all 0.0.0.0/0 reject\n\
             hostnossl all all ::/0 reject\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostssl all all ::1/128 scram-sha-256\n",
        )
        .context("writing pg_hba.conf")?;
        Ok(())
    }

    fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    /// The CA that signed the server's certificate (PEM), on [`Postgres::start_tls`].
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.tls_dir().join("ca.pem"))
    }

    /// A CA that signed nothing of this server's (PEM), on [`Postgres::start_tls`].
    pub fn other_ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.tls_dir().join("other-ca.pem"))
    }

    /// A server program run as the `postgres` user.
    fn as_postgres(&self, program: &str) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(self.bin.join(program));
        cmd
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory of everything: data, socket, log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log (`pg_ctl -l`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `postgres://nfsprov:<password>@127.0.0.1:<port>/nfsprov`: what nfsprov is given; on
    /// [`Postgres::start_tls`] followed by `?sslmode=verify-full&sslrootcert=<ca file>`.
    pub fn url(&self) -> String {
        self.url_for(DATABASE)
    }

    /// The URL of another database on this server (see [`Postgres::create_database`]).
    pub fn url_for(&self, database: &str) -> String {
        let url = format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        );
        match self.ca_file() {
            // The temporary directory's name is letters and digits: nothing to escape.
            Some(ca) => format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display()),
            None => url,
        }
    }

    /// A new empty database owned by [`USER`] (a `migrate-to` target, say); its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            bail!("database name {name:?}: use a-z, 0-9 and _");
        }
        self.psql_admin("postgres", &format!("CREATE DATABASE {name} OWNER {USER};"))?;
        Ok(self.url_for(name))
    }

    /// Run `sql` as the superuser over the local socket in `database`; `psql -At` output
    /// (one row a line, columns joined by `|`).
    pub fn psql_admin(&self, database: &str, sql: &str) -> Result<String> {
        let out = check(
            "psql",
            Command::new(self.bin.join("psql"))
                .arg("-h")
                .arg(self.dir.path())
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    database,
                ])
                .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
                .output(),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run `sql` in nfsprov's database as the superuser (checks of what nfsprov stored).
    pub fn query(&self, sql: &str) -> Result<String> {
        self.psql_admin(DATABASE, sql)
    }

    /// End every session of [`USER`] (the server stays up): each client sees its
    /// connections closed at once.
    pub fn terminate_connections(&self) -> Result<usize> {
        let out = self.psql_admin(
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{USER}';"
            ),
        )?;
        Ok(out.lines().filter(|l| *l == "t").count())
    }

    /// Start the server (again) on the same port with the same data; returns once it accepts
    /// connections. After [`Postgres::kill9`] this is crash recovery.
    pub fn start_again(&mut self) -> Result<()> {
        use std::os::unix::process::CommandExt as _;
        if self.child.is_some() {
            bail!("PostgreSQL is already running");
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(self.bin.join("postgres"))
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "max_connections=300"])
            .current_dir(self.dir.path())
            .uid(self.owner.0)
            .gid(self.owner.1)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!("postgres exited ({status}) while starting:\n{}", self.log());
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-d",
                    DATABASE,
                ])
                .args(["-U", USER, "-t", "2"])
                .output()
                .context("running pg_isready")?;
            if ready.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "PostgreSQL on port {} not ready after {START_TIMEOUT:?}: {}\nserver log:\n{}",
                    self.port,
                    String::from_utf8_lossy(&ready.stdout),
                    self.log()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// A clean shutdown (SIGINT, PostgreSQL's "fast" mode: sessions are ended, a checkpoint
    /// is written, the server exits).
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal("INT", child.id());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                signal("KILL", child.id());
                let _ = child.wait();
                bail!("postgres did not stop within {START_TIMEOUT:?} of SIGINT: killed");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stop and start again: same data, same port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// The postmaster's pid.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A crash: SIGKILL to the postmaster and every process it started (backends, WAL
    /// writer, ...), and wait until all are gone. Nothing is cleaned up: the next
    /// [`Postgres::start_again`] finds a stale `postmaster.pid` and replays the WAL.
    pub fn kill9(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("PostgreSQL is not running");
        };
        let postmaster = child.id();
        // Listed before the kill: then they are still the postmaster's. The postmaster is
        // killed first, so it cannot start replacements for the children killed next.
        let children = children_of(postmaster);
        signal("KILL", postmaster);
        for pid in &children {
            signal("KILL", *pid);
        }
        child.wait().context("reaping the postmaster")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while children.iter().any(|p| crate::pid_alive(*p)) {
            if Instant::now() > deadline {
                bail!("PostgreSQL processes {children:?} still alive 10 s after SIGKILL");
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// Whether the server was started and not stopped or killed since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// `kill -<sig> <pid>`; a process already gone is no error.
fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .output();
}

/// `id <flag> postgres`: the postgres user's uid (`-u`) or gid (`-g`).
fn id(flag: &str) -> Result<u32> {
    let out = check(
        "id postgres",
        Command::new("id").args([flag, "postgres"]).output(),
    )?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("parsing the output of id")
}

/// Field `n` after the `(comm)` of a `/proc/<pid>/stat` line (1: the parent's pid).
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    stat.rsplit_once(')')?.1.split_whitespace().nth(n)
}

/// The direct children of `pid` (a postmaster's processes are all its direct children).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| stat_field(&s, 1).and_then(|pp| pp.parse::<u32>().ok()))
                == Some(pid)
        })
        .collect()
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Killed, not stopped: the directory is removed next anyway (when the TempDir drops).
        let _ = self.kill9();
    }
}

#[cfg(all(test, feature = "e2e"))]
mod tests {
    use super::*;

    /// `psql` as nfsprov over TCP with the URL nfsprov gets: its stdout, or the error.
    fn psql_url(url: &str, sql: &str) -> Result<String> {
        let out = check(
            "psql",
            Command::new(bin_dir()?.join("psql"))
                .args(["-v", "ON_ERROR_STOP=1", "-At", "-d", url, "-c", sql])
                .output(),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    #[test]
    fn a_server_that_keeps_its_data_across_restart_and_crash_and_goes_away_when_dropped() {
        let mut pg = Postgres::start().unwrap();
        let url = pg.url();
        assert!(url.starts_with("postgres://nfsprov:"), "{url}");
        // The role, its password over TCP (scram), and a database it may write.
        assert_eq!(psql_url(&url, "SELECT current_user").unwrap(), USER);
        let wrong = url.replace(PASSWORD, "wrong-password");
        let err = psql_url(&wrong, "SELECT 1").unwrap_err().to_string();
        assert!(err.contains("password authentication failed"), "{err}");
        psql_url(
            &url,
            "CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('before restart')",
        )
        .unwrap();

        pg.restart().unwrap();
        assert_eq!(psql_url(&url, "SELECT v FROM t").unwrap(), "before restart");

        pg.stop().unwrap();
        assert!(!crate::port_accepts(pg.port));
        assert!(psql_url(&url, "SELECT 1").is_err());
        pg.start_again().unwrap();

        // A committed row survives a crash of every server process; the next start recovers.
        psql_url(&url, "INSERT INTO t VALUES ('before crash')").unwrap();
        let postmaster = pg.postmaster_pid().unwrap();
        pg.kill9().unwrap();
        assert!(!crate::pid_alive(postmaster));
        assert!(!crate::port_accepts(pg.port));
        pg.start_again().unwrap();
        assert_eq!(
            psql_url(&url, "SELECT v FROM t ORDER BY v").unwrap(),
            "before crash\nbefore restart"
        );
        assert!(
            pg.log().contains("database system was interrupted"),
            "{}",
            pg.log()
        );

        // nfsprov's role may make a fresh database itself (the datastore tests do, over TCP).
        psql_url(&url, "CREATE DATABASE made_by_nfsprov").unwrap();
        let other = pg.create_database("target_db").unwrap();
        assert_eq!(
            psql_url(
                &other,
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            )
            .unwrap(),
            "0"
        );

        let dir = pg.dir().to_path_buf();
        let port = pg.port;
        drop(pg);
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(!crate::port_accepts(port));
    }

    #[test]
    fn a_tls_server_takes_tls_connections_with_its_ca_only() {
        let pg = Postgres::start_tls().unwrap();
        let url = pg.url();
        let ca = pg.ca_file().unwrap();
        assert!(
            url.ends_with(&format!(
                "?sslmode=verify-full&sslrootcert={}",
                ca.display()
            )),
            "{url}"
        );
        // libpq checks the certificate against the CA and the name 127.0.0.1.
        assert_eq!(
            psql_url(
                &url,
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            )
            .unwrap(),
            "t"
        );
        let plain = url.replace("sslmode=verify-full", "sslmode=disable");
        let err = psql_url(&plain, "SELECT 1").unwrap_err().to_string();
        assert!(
            err.contains("pg_hba.conf rejects connection") && err.contains("no encryption"),
            "{err}"
        );
        let other = url.replace(
            &ca.display().to_string(),
            &pg.other_ca_file().unwrap().display().to_string(),
        );
        let err = psql_url(&other, "SELECT 1").unwrap_err().to_string();
        assert!(err.contains("certificate verify failed"), "{err}");
        // The superuser's local socket (the test bed's own checks) needs no TLS.
        assert_eq!(pg.query("SELECT 1").unwrap().trim(), "1");
    }

    #[test]
    fn terminating_sessions_keeps_the_server_up() {
        let pg = Postgres::start().unwrap();
        let child = Command::new(bin_dir().unwrap().join("psql"))
            .args(["-d", &pg.url(), "-c", "SELECT pg_sleep(60)"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut ended = 0;
        while ended == 0 {
            assert!(Instant::now() < deadline, "the session never showed up");
            ended = pg.terminate_connections().unwrap();
            std::thread::sleep(POLL);
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("terminating connection"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(psql_url(&pg.url(), "SELECT 1").unwrap(), "1");
    }
}

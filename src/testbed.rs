//! Test bed: a simulated fleet of NFS servers on this one machine.
//!
//! Each simulated server is a real OpenSSH `sshd` listening on `127.0.0.1:<port>` with its own
//! host key, running inside its own private mount namespace (`unshare -m --propagation private`).
//! Inside that namespace the following paths are bind mounts of per-server host-side files:
//!
//! | inside the server        | host side                 |
//! |--------------------------|---------------------------|
//! | `/etc/exports`           | `<dir>/etc_exports`       |
//! | `/etc/exports.d/`        | `<dir>/exports.d/`        |
//! | `/var/lib/nfs/`          | `<dir>/nfs/` (etab, rmtab)|
//! | `/srv/nfsprov/`          | `<dir>/data/`             |
//! | `/etc/resolv.conf`       | `<dir>/resolv.conf`       |
//! | `/etc/hosts`             | `<dir>/hosts`             |
//!
//! `resolv.conf` points at `127.0.0.1` only and `/etc/hosts` knows `localhost`,
//! `client1.test` (127.0.0.11) and `client2.test` (127.0.0.12), so nothing inside a server ever
//! sends DNS to a non-loopback address. `exportfs` (nfs-kernel-server userland) works in the
//! namespace: `exportfs -ra` reads `/etc/exports` + `/etc/exports.d/*.exports` and writes
//! `/var/lib/nfs/etab` (no kernel nfsd needed).
//!
//! Every server's `/etc/exports` is seeded with a "foreign" line exporting
//! `/srv/nfsprov/foreign` that nfsprov must never touch; `/srv/nfsprov/pool1` and
//! `/srv/nfsprov/pool2` exist as ready root paths. Each (re)start of a server runs
//! `exportfs -ra` inside before `sshd` is exec'd (like an NFS server boot), so etab always
//! reflects the config files right after `start()`.
//!
//! Processes: the server's pid (`<dir>/sshd.pid`) is the `sshd -D` listener itself (the
//! `unshare`d shell execs it), started in its own session via `setsid -f`. Its mount namespace id
//! is recorded in `<dir>/sshd.ns`; `stop()` kills the listener and every process that lives in
//! that namespace (ssh sessions, `run_inside` children).

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Where each server's data dir appears inside its namespace.
pub const DATA_MOUNT: &str = "/srv/nfsprov";

/// Name of the testbed description file inside the testbed dir.
pub const TESTBED_JSON: &str = "testbed.json";

const SSHD: &str = "/usr/sbin/sshd";
const EXPORTFS: &str = "/usr/sbin/exportfs";
const START_TIMEOUT: Duration = Duration::from_secs(5);
const STOP_TERM_TIMEOUT: Duration = Duration::from_secs(3);
const STOP_KILL_TIMEOUT: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(25);
const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `/etc/hosts` every server sees.
pub const SERVER_HOSTS: &str = "127.0.0.1\tlocalhost\n\
                                127.0.0.11\tclient1.test\n\
                                127.0.0.12\tclient2.test\n";

/// The "foreign" export seeded into every server's `/etc/exports`.
pub const FOREIGN_EXPORT_LINE: &str = "/srv/nfsprov/foreign 127.0.0.1(ro,sync,no_subtree_check)";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestbedServer {
    /// "srv1", "srv2", ...
    pub name: String,
    /// Always "127.0.0.1".
    pub ssh_host: String,
    pub ssh_port: u16,
    /// Always "root".
    pub ssh_user: String,
    /// Public host key line "ssh-ed25519 AAAA..." (no comment).
    pub host_key: String,
    /// `<testbed dir>/<name>`
    pub dir: PathBuf,
    /// `<dir>/data`, appears as [`DATA_MOUNT`] inside.
    pub data_dir: PathBuf,
}

impl TestbedServer {
    fn new(testbed_dir: &Path, name: &str, port: u16) -> TestbedServer {
        let dir = testbed_dir.join(name);
        TestbedServer {
            name: name.to_string(),
            ssh_host: "127.0.0.1".to_string(),
            ssh_port: port,
            ssh_user: "root".to_string(),
            host_key: String::new(),
            data_dir: dir.join("data"),
            dir,
        }
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("sshd.pid")
    }
    fn ns_file(&self) -> PathBuf {
        self.dir.join("sshd.ns")
    }
    fn sshd_config(&self) -> PathBuf {
        self.dir.join("sshd_config")
    }
    fn host_key_file(&self) -> PathBuf {
        self.dir.join("ssh_host_ed25519_key")
    }
    fn authorized_keys(&self) -> PathBuf {
        self.dir.join("authorized_keys")
    }
    fn nfs_dir(&self) -> PathBuf {
        self.dir.join("nfs")
    }
    fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }
    fn hosts_file(&self) -> PathBuf {
        self.dir.join("hosts")
    }

    /// Host-side path of the server's `/etc/exports.d`.
    pub fn exports_d(&self) -> PathBuf {
        self.dir.join("exports.d")
    }

    /// Host-side path of the server's `/etc/exports`.
    pub fn etc_exports(&self) -> PathBuf {
        self.dir.join("etc_exports")
    }

    /// Log file receiving sshd's stdout/stderr (`sshd -D -e`), appended across restarts.
    pub fn sshd_log(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }

    /// A known_hosts line for this server: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        format!("[{}]:{} {}", self.ssh_host, self.ssh_port, self.host_key)
    }

    /// Contents of the server's `/var/lib/nfs/etab` (read host-side).
    pub fn etab(&self) -> Result<String> {
        let p = self.nfs_dir().join("etab");
        fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// Map a path as seen inside the server to the host-side path.
    ///
    /// Paths under [`DATA_MOUNT`] map under `data_dir`; `/etc/exports`, `/etc/exports.d/...`,
    /// `/var/lib/nfs/...`, `/etc/hosts` and `/etc/resolv.conf` map to their bind sources too.
    ///
    /// # Panics
    /// If `inside` is not one of the bind-mounted paths (a bug in the calling test).
    pub fn host_path(&self, inside: &str) -> PathBuf {
        let inside = inside.trim_end_matches('/');
        let map = |prefix: &str, base: PathBuf| -> Option<PathBuf> {
            if inside == prefix {
                Some(base)
            } else {
                inside
                    .strip_prefix(prefix)
                    .and_then(|r| r.strip_prefix('/'))
                    .map(|rest| base.join(rest))
            }
        };
        if inside == "/etc/exports" {
            return self.etc_exports();
        }
        if inside == "/etc/hosts" {
            return self.hosts_file();
        }
        if inside == "/etc/resolv.conf" {
            return self.resolv_conf();
        }
        map(DATA_MOUNT, self.data_dir.clone())
            .or_else(|| map("/etc/exports.d", self.exports_d()))
            .or_else(|| map("/var/lib/nfs", self.nfs_dir()))
            .unwrap_or_else(|| {
                panic!(
                    "testbed: {inside:?} is not under {DATA_MOUNT} or another bind-mounted path of server {}",
                    self.name
                )
            })
    }

    fn read_pid(&self) -> Option<u32> {
        fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The pid of this server's sshd listener if it is alive (and really ours).
    fn live_pid(&self) -> Option<u32> {
        let pid = self.read_pid()?;
        if !pid_alive(pid) {
            return None;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        let cfg = self.sshd_config();
        if cmdline.contains(&*cfg.to_string_lossy()) {
            Some(pid)
        } else {
            None
        }
    }

    /// Whether this server's sshd process is alive.
    pub fn is_running(&self) -> bool {
        self.live_pid().is_some()
    }

    fn write_sshd_config(&self) -> Result<()> {
        let cfg = format!(
            "# generated by nfsprov testbed for {name}\n\
             ListenAddress 127.0.0.1\n\
             Port {port}\n\
             HostKey {hostkey}\n\
             PidFile none\n\
             PermitRootLogin prohibit-password\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             AuthorizedKeysFile {authkeys}\n\
             StrictModes no\n\
             UsePAM no\n\
             UseDNS no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             MaxSessions 50\n\
             MaxStartups 100:30:200\n\
             LogLevel INFO\n",
            name = self.name,
            port = self.ssh_port,
            hostkey = self.host_key_file().display(),
            authkeys = self.authorized_keys().display(),
        );
        write_file(&self.sshd_config(), &cfg)
    }

    /// Create the server's host-side files (idempotent; never overwrites existing content
    /// except sshd_config, resolv.conf and hosts).
    fn prepare_files(&self) -> Result<()> {
        for d in [
            self.dir.clone(),
            self.exports_d(),
            self.nfs_dir(),
            self.data_dir.join("foreign"),
            self.data_dir.join("pool1"),
            self.data_dir.join("pool2"),
        ] {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        for f in [self.nfs_dir().join("etab"), self.nfs_dir().join("rmtab")] {
            if !f.exists() {
                write_file(&f, "")?;
            }
        }
        if !self.etc_exports().exists() {
            write_file(
                &self.etc_exports(),
                &format!(
                    "# /etc/exports of testbed server {} -- foreign entries, nfsprov must not touch\n{}\n",
                    self.name, FOREIGN_EXPORT_LINE
                ),
            )?;
        }
        write_file(
            &self.resolv_conf(),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )?;
        write_file(&self.hosts_file(), SERVER_HOSTS)?;
        if !self.host_key_file().exists() {
            ssh_keygen(&self.host_key_file(), &format!("testbed-{}", self.name))?;
        }
        Ok(())
    }

    fn load_host_key(&mut self) -> Result<()> {
        self.host_key = read_pub_key(&self.host_key_file())?;
        Ok(())
    }

    fn port_accepts(&self) -> bool {
        port_accepts(self.ssh_port)
    }

    /// (Re)start this server's sshd; idempotent. Waits (at most 5 s) until the port accepts TCP.
    pub fn start(&self) -> Result<()> {
        if self.live_pid().is_some() {
            let deadline = Instant::now() + START_TIMEOUT;
            while Instant::now() < deadline {
                if self.port_accepts() {
                    return Ok(());
                }
                if self.live_pid().is_none() {
                    break;
                }
                sleep(POLL);
            }
            tracing::warn!(server = %self.name, "sshd alive but port not accepting; restarting");
        }
        // Clean up anything left over (dead listener with live sessions, half-started server).
        self.stop()?;
        if self.port_accepts() {
            bail!(
                "testbed server {}: port 127.0.0.1:{} is already in use by another process",
                self.name,
                self.ssh_port
            );
        }
        self.prepare_files()?;
        self.write_sshd_config()?;
        for d in ["/run/sshd", "/etc/exports.d", DATA_MOUNT] {
            fs::create_dir_all(d).with_context(|| format!("creating host dir {d}"))?;
        }
        if !Path::new("/etc/exports").exists() {
            write_file(Path::new("/etc/exports"), "")?;
        }

        let log_path = self.sshd_log();
        let log_start = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let _ = fs::remove_file(self.pid_file());
        let _ = fs::remove_file(self.ns_file());

        let q = |p: PathBuf| sh_quote(&p.to_string_lossy());
        let script = format!(
            "fail() {{ echo \"testbed: setup failed: $*\" >&2; exit 1; }}\n\
             readlink /proc/$$/ns/mnt > {ns} || fail readlink ns\n\
             mount --bind {etc_exports} /etc/exports || fail mount /etc/exports\n\
             mount --bind {exports_d} /etc/exports.d || fail mount /etc/exports.d\n\
             mount --bind {nfs} /var/lib/nfs || fail mount /var/lib/nfs\n\
             mount --bind {data} {data_mount} || fail mount {data_mount}\n\
             mount --bind {resolv} /etc/resolv.conf || fail mount /etc/resolv.conf\n\
             mount --bind {hosts} /etc/hosts || fail mount /etc/hosts\n\
             echo \"testbed: starting {name}: exportfs -ra\"\n\
             {exportfs} -ra || echo \"testbed: exportfs -ra exited $?\"\n\
             echo $$ > {pid}.tmp && mv {pid}.tmp {pid} || fail write pid\n\
             exec {sshd} -D -e -f {cfg}\n",
            ns = q(self.ns_file()),
            etc_exports = q(self.etc_exports()),
            exports_d = q(self.exports_d()),
            nfs = q(self.nfs_dir()),
            data = q(self.data_dir.clone()),
            data_mount = DATA_MOUNT,
            resolv = q(self.resolv_conf()),
            hosts = q(self.hosts_file()),
            name = self.name,
            exportfs = EXPORTFS,
            pid = q(self.pid_file()),
            sshd = SSHD,
            cfg = q(self.sshd_config()),
        );
        tracing::debug!(server = %self.name, port = self.ssh_port, "starting testbed sshd");
        // setsid -f: the listener gets its own session and is reparented away from us, so we
        // never hold it as an unreaped zombie; `unshare` (no --fork) and `exec` keep the pid.
        let status = Command::new("setsid")
            .arg("-f")
            .args([
                "unshare",
                "-m",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
            ])
            .arg(&script)
            .env_clear()
            .env("PATH", PATH_ENV)
            .env("LANG", "C")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("spawning setsid/unshare/sshd")?;
        if !status.success() {
            bail!("testbed server {}: setsid -f failed: {status}", self.name);
        }

        let listening = format!("Server listening on 127.0.0.1 port {}", self.ssh_port);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let pid = self.read_pid();
            let new_log = read_from(&log_path, log_start);
            if let Some(pid) = pid {
                if !pid_alive(pid) {
                    bail!(
                        "testbed server {}: sshd (pid {pid}) exited during startup; log:\n{new_log}",
                        self.name
                    );
                }
                if new_log.contains(&listening) && self.port_accepts() {
                    tracing::info!(server = %self.name, port = self.ssh_port, pid, "testbed sshd up");
                    return Ok(());
                }
            } else if new_log.contains("testbed: setup failed") {
                bail!(
                    "testbed server {}: namespace setup failed; log:\n{new_log}",
                    self.name
                );
            }
            if Instant::now() >= deadline {
                let _ = self.stop();
                bail!(
                    "testbed server {}: sshd did not accept on 127.0.0.1:{} within {:?}; log:\n{}",
                    self.name,
                    self.ssh_port,
                    START_TIMEOUT,
                    read_from(&log_path, log_start)
                );
            }
            sleep(POLL);
        }
    }

    /// All live processes belonging to this server: the listener plus everything in its
    /// recorded mount namespace (never processes in our own namespace).
    fn server_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.live_pid().into_iter().collect();
        let ns = fs::read_to_string(self.ns_file())
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let own_ns = fs::read_link("/proc/self/ns/mnt")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(ns) = ns.filter(|ns| *ns != own_ns) {
            let me = std::process::id();
            if let Ok(rd) = fs::read_dir("/proc") {
                for e in rd.flatten() {
                    let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    if pid == me || pids.contains(&pid) {
                        continue;
                    }
                    let link = fs::read_link(format!("/proc/{pid}/ns/mnt"));
                    if let Ok(link) = link
                        && link.to_string_lossy() == ns
                        && pid_alive(pid)
                    {
                        pids.push(pid);
                    }
                }
            }
        }
        pids
    }

    /// Kill this server's sshd and every process in its namespace; wait (bounded) until they are
    /// gone and the port is closed. Idempotent.
    pub fn stop(&self) -> Result<()> {
        let pids = self.server_pids();
        if !pids.is_empty() {
            tracing::debug!(server = %self.name, ?pids, "stopping testbed sshd");
            kill(&pids, "TERM");
            let deadline = Instant::now() + STOP_TERM_TIMEOUT;
            while Instant::now() < deadline && pids.iter().any(|&p| pid_alive(p)) {
                sleep(POLL);
            }
            // Anything that survived, plus anything spawned meanwhile in the namespace.
            let mut left: Vec<u32> = pids.iter().copied().filter(|&p| pid_alive(p)).collect();
            for p in self.server_pids() {
                if !left.contains(&p) {
                    left.push(p);
                }
            }
            if !left.is_empty() {
                kill(&left, "KILL");
                let deadline = Instant::now() + STOP_KILL_TIMEOUT;
                while Instant::now() < deadline && left.iter().any(|&p| pid_alive(p)) {
                    sleep(POLL);
                }
                let still: Vec<u32> = left.into_iter().filter(|&p| pid_alive(p)).collect();
                if !still.is_empty() {
                    bail!(
                        "testbed server {}: processes {still:?} survived SIGKILL",
                        self.name
                    );
                }
            }
        }
        let _ = fs::remove_file(self.pid_file());
        let deadline = Instant::now() + STOP_KILL_TIMEOUT;
        while self.port_accepts() {
            if Instant::now() >= deadline {
                bail!(
                    "testbed server {}: port 127.0.0.1:{} still accepts after stop",
                    self.name,
                    self.ssh_port
                );
            }
            sleep(POLL);
        }
        Ok(())
    }

    /// Generate a new host key and (if the server was running) restart sshd so it serves the
    /// new key; `self.host_key` is updated. Call [`Testbed::save`] to persist it.
    pub fn rotate_host_key(&mut self) -> Result<()> {
        let was_running = self.is_running();
        let key = self.host_key_file();
        let _ = fs::remove_file(&key);
        let _ = fs::remove_file(key.with_extension("pub"));
        let _ = fs::remove_file(PathBuf::from(format!("{}.pub", key.display())));
        ssh_keygen(&key, &format!("testbed-{}", self.name))?;
        let old = std::mem::take(&mut self.host_key);
        self.load_host_key()?;
        if self.host_key == old {
            bail!(
                "testbed server {}: rotated host key is unchanged",
                self.name
            );
        }
        if was_running {
            self.stop()?;
            self.start()?;
        }
        Ok(())
    }

    /// Run `sh -c script` inside the server's mount namespace (`nsenter -t <pid> -m`).
    /// The server must be running.
    pub fn run_inside(&self, script: &str) -> Result<Output> {
        let pid = self
            .live_pid()
            .ok_or_else(|| anyhow!("testbed server {} is not running", self.name))?;
        Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "--", "sh", "-c", script])
            .env("PATH", PATH_ENV)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("nsenter into testbed server {}", self.name))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Testbed {
    pub dir: PathBuf,
    /// Private key (ed25519, no passphrase) nfsprov uses to log in; authorized on every server.
    pub client_key: PathBuf,
    pub servers: Vec<TestbedServer>,
}

impl Testbed {
    /// Install missing packages (openssh-server, nfs-kernel-server) via apt-get, with a
    /// policy-rc.d that prevents starting services, only if `/usr/sbin/sshd` or
    /// `/usr/sbin/exportfs` is missing.
    pub fn ensure_packages() -> Result<()> {
        fs::create_dir_all("/etc/exports.d").context("creating /etc/exports.d")?;
        if Path::new(SSHD).exists() && Path::new(EXPORTFS).exists() {
            return Ok(());
        }
        let policy = Path::new("/usr/sbin/policy-rc.d");
        let created_policy = if policy.exists() {
            false
        } else {
            write_file(policy, "#!/bin/sh\nexit 101\n")?;
            run_ok(Command::new("chmod").args(["755", "/usr/sbin/policy-rc.d"]))?;
            true
        };
        let res = (|| -> Result<()> {
            run_ok(
                Command::new("apt-get")
                    .arg("update")
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
            run_ok(
                Command::new("apt-get")
                    .args([
                        "install",
                        "-y",
                        "--no-install-recommends",
                        "openssh-server",
                        "openssh-client",
                        "nfs-kernel-server",
                    ])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
            Ok(())
        })();
        if created_policy {
            let _ = fs::remove_file(policy);
        }
        res?;
        fs::create_dir_all("/etc/exports.d")?;
        if !(Path::new(SSHD).exists() && Path::new(EXPORTFS).exists()) {
            bail!("{SSHD} or {EXPORTFS} still missing after apt-get install");
        }
        Ok(())
    }

    /// Create `dir`, a client key and `n` servers (srv1..srvN), start them all and write
    /// `<dir>/testbed.json`. Fails if `dir` already holds a testbed.json.
    pub fn up(dir: &Path, n: usize) -> Result<Testbed> {
        Self::ensure_packages()?;
        let dir = std::path::absolute(dir).context("absolute testbed dir")?;
        if dir.join(TESTBED_JSON).exists() {
            bail!(
                "a testbed already exists in {} (use Testbed::load, or down(true) first)",
                dir.display()
            );
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let client_key = dir.join("client_key");
        if !client_key.exists() {
            ssh_keygen(&client_key, "nfsprov-testbed-client")?;
        }
        let client_pub = read_pub_key(&client_key)?;
        let mut tb = Testbed {
            dir: dir.clone(),
            client_key,
            servers: Vec::new(),
        };
        let res = (|| -> Result<()> {
            for i in 1..=n {
                let name = format!("srv{i}");
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let mut srv = TestbedServer::new(&dir, &name, free_port()?);
                    srv.prepare_files()?;
                    srv.load_host_key()?;
                    write_file(&srv.authorized_keys(), &format!("{client_pub}\n"))?;
                    match srv.start() {
                        Ok(()) => {
                            tb.servers.push(srv);
                            break;
                        }
                        // The free port may have been grabbed by someone else meanwhile.
                        Err(e) if attempt < 3 => {
                            tracing::warn!(server = %name, error = %e, "start failed; retrying on another port");
                            let _ = srv.stop();
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            tb.save()
        })();
        if let Err(e) = res {
            let _ = tb.down(false);
            return Err(e.context(format!("bringing up testbed in {}", dir.display())));
        }
        Ok(tb)
    }

    /// Read `<dir>/testbed.json`.
    pub fn load(dir: &Path) -> Result<Testbed> {
        let p = dir.join(TESTBED_JSON);
        let s = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_str(&s).with_context(|| format!("parsing {}", p.display()))
    }

    /// Write `<dir>/testbed.json` (atomically).
    pub fn save(&self) -> Result<()> {
        let p = self.dir.join(TESTBED_JSON);
        let tmp = self.dir.join(format!("{TESTBED_JSON}.tmp"));
        write_file(&tmp, &serde_json::to_string_pretty(self)?)?;
        fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))
    }

    /// Stop every server (namespaces die with their processes); remove the testbed dir if
    /// `remove_files`. Tries every server even if one fails; returns the first error.
    pub fn down(&self, remove_files: bool) -> Result<()> {
        let mut first_err = None;
        for s in &self.servers {
            if let Err(e) = s.stop() {
                tracing::warn!(server = %s.name, error = %e, "stopping testbed server failed");
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if remove_files && self.dir.exists() {
            fs::remove_dir_all(&self.dir)
                .with_context(|| format!("removing {}", self.dir.display()))?;
        }
        Ok(())
    }

    pub fn server(&self, name: &str) -> Option<&TestbedServer> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// Mutable access to a server (e.g. for [`TestbedServer::rotate_host_key`]).
    pub fn server_mut(&mut self, name: &str) -> Option<&mut TestbedServer> {
        self.servers.iter_mut().find(|s| s.name == name)
    }

    /// known_hosts content (one line per server) trusting every server's current host key.
    pub fn known_hosts(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("{}\n", s.known_hosts_line()))
            .collect()
    }
}

/// For tests: a [`Testbed`] that is torn down (`down(true)`) on drop.
pub struct TestbedGuard(pub Testbed);

impl Drop for TestbedGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.down(true) {
            tracing::warn!(error = %e, dir = %self.0.dir.display(), "testbed teardown failed");
            eprintln!("testbed teardown of {} failed: {e:#}", self.0.dir.display());
        }
    }
}

impl Deref for TestbedGuard {
    type Target = Testbed;
    fn deref(&self) -> &Testbed {
        &self.0
    }
}

impl DerefMut for TestbedGuard {
    fn deref_mut(&mut self) -> &mut Testbed {
        &mut self.0
    }
}

// ---------------------------------------------------------------------------------------------
// helpers

fn write_file(p: &Path, content: &str) -> Result<()> {
    fs::write(p, content).with_context(|| format!("writing {}", p.display()))
}

fn run_ok(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn ssh_keygen(path: &Path, comment: &str) -> Result<()> {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
    )?;
    Ok(())
}

/// "ssh-ed25519 AAAA..." from `<key>.pub`, without comment.
fn read_pub_key(private_key: &Path) -> Result<String> {
    let p = PathBuf::from(format!("{}.pub", private_key.display()));
    let s = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let mut it = s.split_whitespace();
    match (it.next(), it.next()) {
        (Some(t), Some(k)) => Ok(format!("{t} {k}")),
        _ => bail!("malformed public key in {}", p.display()),
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Pick a free TCP port on 127.0.0.1 (bind port 0, read, close).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Alive = exists and is not a zombie (our pid 1 may not reap promptly).
fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

fn kill(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-s")
        .arg(signal)
        .args(pids.iter().map(|p| p.to_string()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn read_from(p: &Path, offset: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(p)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        s = String::from_utf8_lossy(&buf).into_owned();
    }
    s
}

// ---------------------------------------------------------------------------------------------
// tests (they really start sshd servers; need root, sshd, exportfs, unshare, nsenter)

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    fn test_dir(tag: &str) -> PathBuf {
        let d = PathBuf::from(format!("/tmp/nfsprov-testbed-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    /// ssh exactly like nfsprov would: strict host key checking against `known_hosts`.
    fn ssh(tb: &Testbed, srv: &TestbedServer, known_hosts: &str, script: &str) -> Output {
        let kh = tb
            .dir
            .join(format!("known_hosts.{}.{}", srv.name, rand_suffix()));
        fs::write(&kh, known_hosts).unwrap();
        let out = Command::new("ssh")
            .args(["-F", "/dev/null", "-i"])
            .arg(&tb.client_key)
            .args(["-p", &srv.ssh_port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                &format!("UserKnownHostsFile={}", kh.display()),
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "ConnectTimeout=5",
            ])
            .arg(format!("{}@{}", srv.ssh_user, srv.ssh_host))
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let _ = fs::remove_file(&kh);
        out
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    fn sshd_procs_mentioning(dir: &Path) -> Vec<u32> {
        let needle = dir.to_string_lossy().into_owned();
        let mut v = Vec::new();
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(c) = fs::read(format!("/proc/{pid}/cmdline"))
                && text(&c).contains(&needle)
                && pid_alive(pid)
            {
                v.push(pid);
            }
        }
        v
    }

    #[test]
    fn two_servers_are_isolated() {
        let dir = test_dir("iso");
        let tb = TestbedGuard(Testbed::up(&dir, 2).expect("testbed up"));
        assert_eq!(tb.servers.len(), 2);
        let (s1, s2) = (tb.server("srv1").unwrap(), tb.server("srv2").unwrap());
        assert_ne!(s1.ssh_port, s2.ssh_port);
        assert_ne!(s1.host_key, s2.host_key);
        assert!(s1.host_key.starts_with("ssh-ed25519 AAAA"));
        assert_eq!(s1.host_key.split_whitespace().count(), 2);
        for s in [s1, s2] {
            assert!(s.is_running());
            assert!(port_accepts(s.ssh_port));
            assert!(
                s.etab()
                    .unwrap()
                    .contains("/srv/nfsprov/foreign\t127.0.0.1(ro,")
            );
        }

        // testbed.json round trip
        let loaded = Testbed::load(&dir).unwrap();
        assert_eq!(loaded.servers.len(), 2);
        assert_eq!(loaded.servers[1].ssh_port, s2.ssh_port);
        assert_eq!(loaded.servers[1].host_key, s2.host_key);

        let kh = tb.known_hosts();
        let script = "cat /etc/exports; echo ---; ls /srv/nfsprov; echo ---; getent hosts client1.test; cat /etc/resolv.conf";
        let o1 = ssh(&tb, s1, &kh, script);
        let o2 = ssh(&tb, s2, &kh, script);
        assert!(o1.status.success(), "srv1 ssh failed: {}", text(&o1.stderr));
        assert!(o2.status.success(), "srv2 ssh failed: {}", text(&o2.stderr));
        let (t1, t2) = (text(&o1.stdout), text(&o2.stdout));
        assert!(t1.contains("testbed server srv1"), "{t1}");
        assert!(t2.contains("testbed server srv2"), "{t2}");
        assert_ne!(t1, t2);
        for t in [&t1, &t2] {
            assert!(t.contains(FOREIGN_EXPORT_LINE));
            assert!(t.contains("foreign\npool1\npool2\n"), "{t}");
            assert!(t.contains("127.0.0.11      client1.test"), "{t}");
            assert!(t.contains("nameserver 127.0.0.1\n"), "{t}");
        }

        // a file created host-side in srv2's data dir is visible only on srv2
        fs::write(s2.host_path("/srv/nfsprov/pool1/marker"), "x").unwrap();
        let o = ssh(&tb, s2, &kh, "ls /srv/nfsprov/pool1");
        assert_eq!(text(&o.stdout), "marker\n");
        let o = ssh(&tb, s1, &kh, "ls /srv/nfsprov/pool1");
        assert_eq!(text(&o.stdout), "");

        // exportfs -ra over ssh writes only that server's etab
        fs::write(
            s1.exports_d().join("nfsprov.exports"),
            "/srv/nfsprov/pool1 client1.test(rw,sync,no_subtree_check)\n",
        )
        .unwrap();
        let o = ssh(&tb, s1, &kh, "exportfs -ra");
        assert!(o.status.success(), "{}", text(&o.stderr));
        let e1 = s1.etab().unwrap();
        assert!(e1.contains("/srv/nfsprov/pool1\tclient1.test(rw,"), "{e1}");
        assert!(e1.contains("/srv/nfsprov/foreign\t127.0.0.1(ro,"), "{e1}");
        assert!(!s2.etab().unwrap().contains("pool1"));

        // run_inside sees the same namespace
        let o = s1.run_inside("cat /etc/exports.d/nfsprov.exports").unwrap();
        assert!(text(&o.stdout).contains("client1.test"));
        let o = s2.run_inside("ls /etc/exports.d").unwrap();
        assert_eq!(text(&o.stdout), "");
        // ... and the host is untouched
        assert!(!Path::new("/etc/exports.d/nfsprov.exports").exists());
    }

    #[test]
    fn rotate_stop_start_down() {
        let dir = test_dir("life");
        let mut tb = TestbedGuard(Testbed::up(&dir, 1).expect("testbed up"));
        let old_kh = tb.known_hosts();
        let s = tb.server("srv1").unwrap().clone();
        let o = ssh(&tb, &s, &old_kh, "echo hello");
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert_eq!(text(&o.stdout), "hello\n");

        // start() is idempotent while running
        let pid = s.live_pid().unwrap();
        s.start().unwrap();
        assert_eq!(s.live_pid(), Some(pid));

        // rotate host key: old known_hosts must fail
        let old_key = s.host_key.clone();
        tb.server_mut("srv1").unwrap().rotate_host_key().unwrap();
        tb.save().unwrap();
        let s = tb.server("srv1").unwrap().clone();
        assert_ne!(s.host_key, old_key);
        assert_eq!(Testbed::load(&dir).unwrap().servers[0].host_key, s.host_key);
        let o = ssh(&tb, &s, &old_kh, "echo hello");
        assert_eq!(o.status.code(), Some(255));
        assert!(
            text(&o.stderr).contains("Host key verification failed"),
            "{}",
            text(&o.stderr)
        );
        let o = ssh(&tb, &s, &tb.known_hosts(), "echo hello");
        assert!(o.status.success(), "{}", text(&o.stderr));

        // stop: connection refused
        s.stop().unwrap();
        assert!(!s.is_running());
        let err = TcpStream::connect(("127.0.0.1", s.ssh_port)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
        s.stop().unwrap(); // idempotent
        assert!(s.run_inside("true").is_err());

        // start again works
        s.start().unwrap();
        assert!(s.is_running());
        let o = ssh(&tb, &s, &tb.known_hosts(), "echo again");
        assert_eq!(text(&o.stdout), "again\n");

        // stop also kills long-running sessions inside the namespace
        let mut child = Command::new("ssh")
            .args(["-F", "/dev/null", "-i"])
            .arg(&tb.client_key)
            .args(["-p", &s.ssh_port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "BatchMode=yes", "root@127.0.0.1", "sleep 300"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.server_pids().len() < 2 && Instant::now() < deadline {
            sleep(POLL);
        }
        assert!(s.server_pids().len() >= 2, "session did not show up");

        tb.down(true).unwrap();
        let _ = child.wait();
        assert!(!dir.exists());
        assert!(sshd_procs_mentioning(&dir).is_empty());
        assert!(s.server_pids().is_empty());
    }

    #[test]
    fn exportfs_behaviours() {
        let dir = test_dir("exp");
        let tb = TestbedGuard(Testbed::up(&dir, 1).expect("testbed up"));
        let s = tb.server("srv1").unwrap();
        let run = |exports: &str| {
            fs::write(s.exports_d().join("nfsprov.exports"), exports).unwrap();
            let o = s.run_inside("exportfs -ra").unwrap();
            (o.status.code(), text(&o.stderr), s.etab().unwrap())
        };
        // unknown keyword: exit 1, that line dropped, other lines applied
        let (rc, err, etab) = run("/srv/nfsprov/pool1 127.0.0.1(rw,sync,no_subtree_check)\n\
             /srv/nfsprov/pool2 client2.test(rw,foo)\n");
        assert_eq!(rc, Some(1));
        assert!(
            err.contains("exportfs: /etc/exports.d/nfsprov.exports:2: unknown keyword \"foo\""),
            "{err}"
        );
        assert!(etab.contains("/srv/nfsprov/pool1\t127.0.0.1(rw,"));
        assert!(!etab.contains("pool2"));
        assert!(etab.contains("/srv/nfsprov/foreign"));

        // unresolvable client: exit 0 (!), entry silently dropped, message on stderr
        let (rc, err, etab) = run("/srv/nfsprov/pool1 1.2.3.999(rw,sync,no_subtree_check)\n");
        assert_eq!(rc, Some(0));
        assert!(
            err.contains("exportfs: Failed to resolve 1.2.3.999"),
            "{err}"
        );
        assert!(!etab.contains("pool1"));

        // nonexistent directory: exit 1, but the entry still lands in etab
        let (rc, err, etab) = run("/srv/nfsprov/nonexist 127.0.0.1(rw,sync,no_subtree_check)\n");
        assert_eq!(rc, Some(1));
        assert!(
            err.contains(
                "exportfs: Failed to stat /srv/nfsprov/nonexist: No such file or directory"
            ),
            "{err}"
        );
        assert!(etab.contains("/srv/nfsprov/nonexist\t127.0.0.1("));

        // hostname from the bound /etc/hosts: kept as the name in etab
        let (rc, err, etab) = run("/srv/nfsprov/pool1 client2.test(rw,sync,no_subtree_check)\n");
        assert_eq!(rc, Some(0), "{err}");
        assert!(
            etab.contains("/srv/nfsprov/pool1\tclient2.test(rw,"),
            "{etab}"
        );

        // missing (no_)subtree_check: warning only, exit 0
        let (rc, err, etab) = run("/srv/nfsprov/pool2 10.0.0.0/24(ro)\n");
        assert_eq!(rc, Some(0), "{err}");
        assert!(err.contains("Neither 'subtree_check' or 'no_subtree_check' specified"));
        assert!(
            etab.contains("/srv/nfsprov/pool2\t10.0.0.0/24(ro,"),
            "{etab}"
        );
    }

    #[test]
    fn host_path_mapping() {
        let s = TestbedServer::new(Path::new("/tb"), "srv1", 1);
        assert_eq!(s.host_path("/srv/nfsprov"), PathBuf::from("/tb/srv1/data"));
        assert_eq!(
            s.host_path("/srv/nfsprov/pool1/v1"),
            PathBuf::from("/tb/srv1/data/pool1/v1")
        );
        assert_eq!(s.host_path("/etc/exports"), s.etc_exports());
        assert_eq!(
            s.host_path("/etc/exports.d/nfsprov.exports"),
            PathBuf::from("/tb/srv1/exports.d/nfsprov.exports")
        );
        assert_eq!(
            s.host_path("/var/lib/nfs/etab"),
            PathBuf::from("/tb/srv1/nfs/etab")
        );
        assert!(std::panic::catch_unwind(|| s.host_path("/srv/nfsprovX")).is_err());
    }

    #[test]
    fn guard_drop_tears_down() {
        let dir = test_dir("guard");
        let port;
        {
            let tb = TestbedGuard(Testbed::up(&dir, 1).expect("testbed up"));
            port = tb.servers[0].ssh_port;
            assert!(port_accepts(port));
            assert!(
                Testbed::up(&dir, 1).is_err(),
                "second up on same dir must fail"
            );
        }
        assert!(!dir.exists());
        assert!(!port_accepts(port));
        assert!(sshd_procs_mentioning(&dir).is_empty());
    }
}

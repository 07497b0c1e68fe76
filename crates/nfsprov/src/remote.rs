//! The one way nfsprov runs commands on a server: a [`Script`] whose dynamic parts are quoted by
//! construction, sent over a long-lived OpenSSH session ([`Session`]) to one `sh` process.
//!
//! A session is one SSH connection and one channel, kept open between batches: a new
//! connection costs ~290 ms and a new channel ~100 ms, a batch on an open channel only what its
//! commands cost. Host keys are pinned: ssh runs with `StrictHostKeyChecking=yes` against a
//! known_hosts file holding only the key registered for the server, so an unknown or changed key
//! ends the connection before any command is sent.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Quote one word for POSIX sh: the result is always a single literal word.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// One piece of a script line: fixed program text, or a value that is quoted.
pub enum Word<'a> {
    /// Program text. `&'static str` so that no runtime (user) value can become program text.
    Lit(&'static str),
    /// A value, always quoted.
    Arg(&'a str),
}
pub use Word::{Arg, Lit};

/// A POSIX sh script built from [`Word`]s. Output sections are framed by markers that carry a
/// random nonce, so nothing a server prints (file contents, etab) can forge one.
pub struct Script {
    body: String,
    nonce: String,
}

impl Default for Script {
    fn default() -> Self {
        Self::new()
    }
}

impl Script {
    pub fn new() -> Self {
        Script {
            body: String::new(),
            nonce: new_nonce(),
        }
    }

    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// The commands, unframed (for tests that run them in a local shell).
    #[cfg(test)]
    pub(crate) fn body(&self) -> &str {
        &self.body
    }

    /// Append one line made of `words`, separated by spaces.
    pub fn line(&mut self, words: &[Word<'_>]) -> &mut Self {
        for (i, w) in words.iter().enumerate() {
            if i > 0 {
                self.body.push(' ');
            }
            match w {
                Lit(s) => self.body.push_str(s),
                Arg(s) => self.body.push_str(&quote(s)),
            }
        }
        self.body.push('\n');
        self
    }

    /// Print a marker line `@@<nonce> <tag> <arg>`.
    pub fn marker(&mut self, tag: &'static str, arg: &str) -> &mut Self {
        let text = format!("@@{} {} {}", self.nonce, tag, arg);
        self.line(&[Lit("printf '%s\\n'"), Arg(&text)])
    }

    /// Print a marker line `@@<nonce> <tag> <arg> <exit status of the previous command>`.
    pub fn marker_rc(&mut self, tag: &'static str, arg: &str) -> &mut Self {
        let text = format!("@@{} {} {}", self.nonce, tag, arg);
        self.line(&[Lit("printf '%s %s\\n'"), Arg(&text), Lit("\"$?\"")])
    }

    /// The script as sent. The body is written to a private temporary directory on the server
    /// and run there by `sh` under `timeout -k`: its own process group, with stdin from
    /// /dev/null (no command can swallow the rest of the stream), its output (stderr merged)
    /// into a file that is printed when it is done. When `limit` passes, the whole group (a
    /// hung `exportfs`, `getent`, ...) is killed on the server. Nothing the body runs writes to
    /// the connection, so a connection that goes away mid-pass cannot kill the body's shell by
    /// SIGPIPE and leave its children outside `timeout`'s reach. An end marker carries the
    /// body's exit status (124 or 137 when it was stopped).
    pub(crate) fn framed(&self, limit: Duration) -> String {
        let mut s = String::with_capacity(self.body.len() + 512);
        s.push_str("if nfsprov_s=$(mktemp -d /tmp/.nfsprov-pass.XXXXXXXX); then cat > \"$nfsprov_s/pass\" <<'@@");
        s.push_str(&self.nonce);
        s.push_str("'\n{\n");
        s.push_str(&self.body);
        s.push_str("true\n}\n@@");
        s.push_str(&self.nonce);
        s.push('\n');
        let _ = writeln!(
            s,
            "timeout -k {KILL_GRACE_SECS} {} sh \"$nfsprov_s/pass\" </dev/null >\"$nfsprov_s/out\" 2>&1; nfsprov_rc=$?",
            limit.as_secs_f64().ceil().max(1.0) as u64
        );
        s.push_str("cat \"$nfsprov_s/out\"; rm -rf \"$nfsprov_s\"\n");
        s.push_str("else nfsprov_rc=125; echo 'nfsprov: cannot create a temporary directory in /tmp'; fi\n");
        let _ = writeln!(
            s,
            "printf '%s %s\\n' '@@{} end' \"$nfsprov_rc\"",
            self.nonce
        );
        s
    }
}

/// Seconds between `timeout`'s TERM and its KILL of a pass that ran out of time.
const KILL_GRACE_SECS: u64 = 3;

/// How long nfsprov waits for a pass beyond its limit on the server (the kill grace, the
/// round trip) before it gives up on the connection.
const LOCAL_GRACE: Duration = Duration::from_secs(KILL_GRACE_SECS + 7);

fn new_nonce() -> String {
    let bytes: [u8; 12] = rand::random();
    hex::encode(bytes)
}

/// Output of one script, split at its markers.
#[derive(Debug, Default)]
pub struct Output {
    /// (tag, arg, text printed since the previous marker)
    pub sections: Vec<Section>,
    /// Exit status of the whole body (124 or 137: stopped on the server at its time limit).
    pub status: Option<i32>,
    /// Text printed after the last marker.
    pub rest: String,
}

impl Output {
    /// The body ran out of time on the server and `timeout` killed it.
    pub fn timed_out(&self) -> bool {
        matches!(self.status, Some(124 | 137))
    }
}

#[derive(Debug)]
pub struct Section {
    pub tag: String,
    pub arg: String,
    /// Lines printed between the previous marker and this one.
    pub before: String,
}

impl Output {
    /// Split `text`, a script's output without its end marker, at the markers carrying
    /// `nonce`. Public for the table tests that judge captured real outputs
    /// (`tests/judge.rs`).
    pub fn parse(nonce: &str, text: &str) -> Output {
        let prefix = format!("@@{nonce} ");
        let mut sections = Vec::new();
        let mut before = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(&prefix) {
                let (tag, arg) = rest.split_once(' ').unwrap_or((rest, ""));
                sections.push(Section {
                    tag: tag.to_string(),
                    arg: arg.to_string(),
                    before: std::mem::take(&mut before),
                });
            } else {
                before.push_str(line);
                before.push('\n');
            }
        }
        Output {
            sections,
            status: None,
            rest: before,
        }
    }

    /// The sections with this tag, by the first word of their argument (one lookup each
    /// instead of a scan per volume).
    pub fn by_first_arg(&self, tag: &str) -> std::collections::HashMap<&str, &Section> {
        let mut m = std::collections::HashMap::new();
        for s in self.sections.iter().filter(|s| s.tag == tag) {
            m.entry(s.arg.split(' ').next().unwrap_or_default())
                .or_insert(s);
        }
        m
    }

    /// The first section with this tag and argument prefix.
    pub fn find(&self, tag: &str, arg: &str) -> Option<&Section> {
        self.sections.iter().find(|s| {
            s.tag == tag
                && s.arg
                    .strip_prefix(arg)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
        })
    }
}

impl Section {
    /// The exit status carried by a `marker_rc` marker.
    pub fn rc(&self) -> Option<i32> {
        self.arg.rsplit(' ').next()?.parse().ok()
    }
}

/// Why a server could not be driven.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "host key verification failed: the server did not present the pinned host key, so no command was sent ({0})"
    )]
    HostKey(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("no answer within {0:?}; the connection was closed")]
    Timeout(Duration),
}

/// Where and how to reach one server.
#[derive(Debug, Clone)]
pub struct Target {
    /// Stable name used as the known_hosts alias.
    pub alias: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub key: PathBuf,
    /// The pinned public host key, "type base64".
    pub host_key: String,
}

/// Make `path` hold `content`, atomically: ssh started by another connection (or by another
/// node sharing the data directory) reads either the old file or the new one, never a
/// truncated one. Left alone when it already holds `content`.
fn replace_file(path: &Path, content: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(
        ".{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let tmp = PathBuf::from(tmp);
    let written = std::fs::write(&tmp, content).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// One open SSH connection running `sh`, reused for every batch.
pub struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<String>>,
}

/// Time limit of the greeting on a new connection on the server (nfsprov waits
/// `LOCAL_GRACE` longer: ssh's own `ConnectTimeout` is 10 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Session {
    /// Connect and wait until the remote shell answers. `state_dir` holds the known_hosts file.
    pub async fn connect(target: &Target, state_dir: &Path) -> Result<Session, RemoteError> {
        let known_hosts = state_dir.join(format!("known_hosts.{}", target.alias));
        let line = format!("{} {}\n", target.alias, target.host_key.trim());
        replace_file(&known_hosts, line.as_bytes())
            .map_err(|e| RemoteError::Connect(format!("writing {}: {e}", known_hosts.display())))?;
        let mut cmd = Command::new("ssh");
        cmd.arg("-F")
            .arg("/dev/null")
            .arg("-T")
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .arg("-o")
            .arg(format!("HostKeyAlias={}", target.alias))
            .args(["-o", "CheckHostIP=no"])
            .args(["-o", "UpdateHostKeys=no"])
            .args(["-o", "ConnectTimeout=10"])
            .args(["-o", "ServerAliveInterval=15"])
            .args(["-o", "ServerAliveCountMax=3"])
            .args(["-o", "IdentitiesOnly=yes"])
            .args(["-o", "ControlMaster=no"])
            .args(["-o", "ControlPath=none"])
            .args(["-o", "LogLevel=ERROR"])
            .arg("-i")
            .arg(&target.key)
            .arg("-p")
            .arg(target.port.to_string())
            .arg("-l")
            .arg(&target.user)
            .arg(&target.host)
            .arg("--")
            .arg("exec /bin/sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| RemoteError::Connect(format!("cannot run ssh: {e}")))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().expect("stderr lock");
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
                if s.len() > 16384 {
                    let cut = s.len() - 8192;
                    let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                    s.drain(..cut);
                }
            }
        });
        let mut session = Session {
            child,
            stdin,
            stdout,
            stderr,
        };
        let mut hello = Script::new();
        hello.marker("hello", "");
        match session.run_inner(&hello, CONNECT_TIMEOUT).await {
            Ok(_) => Ok(session),
            Err(e) => Err(session.classify(e).await),
        }
    }

    /// Run one script and return its output. Any error leaves the session unusable; drop it
    /// and connect again.
    pub async fn run(&mut self, script: &Script, timeout: Duration) -> Result<Output, RemoteError> {
        match self.run_inner(script, timeout).await {
            Ok(o) => Ok(o),
            Err(e) => Err(self.classify(e).await),
        }
    }

    async fn run_inner(
        &mut self,
        script: &Script,
        timeout: Duration,
    ) -> Result<Output, RemoteError> {
        let text = script.framed(timeout);
        let end = format!("@@{} end ", script.nonce());
        let work = async {
            self.stdin
                .write_all(text.as_bytes())
                .await
                .map_err(|e| RemoteError::Lost(format!("sending commands: {e}")))?;
            self.stdin
                .flush()
                .await
                .map_err(|e| RemoteError::Lost(format!("sending commands: {e}")))?;
            let mut out = String::new();
            let mut line = String::new();
            loop {
                line.clear();
                let n = self
                    .stdout
                    .read_line(&mut line)
                    .await
                    .map_err(|e| RemoteError::Lost(format!("reading output: {e}")))?;
                if n == 0 {
                    return Err(RemoteError::Lost("the remote shell closed".into()));
                }
                if let Some(status) = line.strip_prefix(&end) {
                    let mut o = Output::parse(script.nonce(), &out);
                    o.status = status.trim().parse().ok();
                    return Ok(o);
                }
                out.push_str(&line);
            }
        };
        // The server stops the body at `timeout`; waiting longer than that plus a grace means
        // the server or the connection hangs. The session is then dropped half-read (ssh is
        // killed), so no later pass can read this pass's output.
        match tokio::time::timeout(timeout + LOCAL_GRACE, work).await {
            Ok(r) => r,
            Err(_) => Err(RemoteError::Timeout(timeout + LOCAL_GRACE)),
        }
    }

    /// Turn a transport error into the most specific error ssh's own messages allow.
    async fn classify(&mut self, e: RemoteError) -> RemoteError {
        if matches!(e, RemoteError::Timeout(_)) {
            let _ = self.child.start_kill();
            return e;
        }
        // Give ssh a moment to exit and flush its diagnostics.
        let _ = tokio::time::timeout(Duration::from_secs(3), self.child.wait()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stderr = self.stderr.lock().expect("stderr lock").trim().to_string();
        let detail = if stderr.is_empty() {
            e.to_string()
        } else {
            stderr.lines().last().unwrap_or_default().to_string()
        };
        if stderr.contains("Host key verification failed")
            || stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || stderr.contains("host key is known")
        {
            RemoteError::HostKey(detail)
        } else if matches!(e, RemoteError::Lost(_)) && !stderr.is_empty() {
            RemoteError::Connect(detail)
        } else {
            e
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two writers replacing a known_hosts file (two connections, or two nodes sharing a data
    /// directory) while ssh reads it: a reader sees one whole version or the other, never an
    /// empty or torn file, and no temporary file is left behind.
    #[test]
    fn known_hosts_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts.srv");
        let a = b"srv ssh-ed25519 AAAAshort\n".to_vec();
        let b = format!("srv ssh-rsa {}\n", "B".repeat(4000)).into_bytes();
        replace_file(&path, &a).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for (first, second) in [(&a, &b), (&b, &a)] {
                let (path, stop) = (&path, &stop);
                s.spawn(move || {
                    for _ in 0..500 {
                        // Not the same content each time, so every call writes.
                        replace_file(path, first).unwrap();
                        replace_file(path, second).unwrap();
                    }
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                });
            }
            loop {
                let got = std::fs::read(&path).unwrap();
                assert!(got == a || got == b, "a torn read of {} bytes", got.len());
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
            }
        });
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("known_hosts.srv")]);
    }

    #[test]
    fn quote_makes_one_literal_word() {
        assert_eq!(quote("abc"), "'abc'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a'b"), "'a'\\''b'");
        assert_eq!(quote("$(rm -rf /); `x` \"y\""), "'$(rm -rf /); `x` \"y\"'");
    }

    #[test]
    fn quoted_words_survive_a_real_shell() {
        let nasty = [
            "a b",
            "$(echo pwned)",
            "'; echo pwned; '",
            "`id`",
            "a\nb",
            "*",
            "-rf",
        ];
        for n in nasty {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {}", quote(n)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), n);
        }
    }

    #[test]
    fn a_body_past_its_limit_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let mut s = Script::new();
        s.line(&[Lit("sleep 60 & echo $! >"), Arg(pid_file.to_str().unwrap())]);
        s.line(&[Lit("wait")]);
        let started = std::time::Instant::now();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(s.framed(Duration::from_secs(1)))
            .output()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(20));
        let text = String::from_utf8_lossy(&out.stdout);
        let end = format!("@@{} end 124", s.nonce());
        assert!(text.lines().any(|l| l == end), "{text}");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background sleep was in the body's process group: gone (or a zombie being reaped).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie_or_gone = state.is_empty() || state.contains(") Z ");
            if zombie_or_gone {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sleep {pid} survived: {state}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn output_is_split_at_markers_with_the_nonce_only() {
        let text = "hello\n@@abc step 1 0\nforged\n@@xyz end 0\nmore\n@@abc etab \n";
        let out = Output::parse("abc", text);
        assert_eq!(out.sections.len(), 2);
        assert_eq!(out.sections[0].tag, "step");
        assert_eq!(out.sections[0].rc(), Some(0));
        assert_eq!(out.sections[0].before, "hello\n");
        assert_eq!(out.sections[1].tag, "etab");
        assert_eq!(out.sections[1].before, "forged\n@@xyz end 0\nmore\n");
        assert!(out.find("step", "1").is_some());
        assert!(out.find("step", "2").is_none());
    }
}

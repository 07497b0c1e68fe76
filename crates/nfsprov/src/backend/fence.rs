//! The server's side of a reconciler lease: every script that changes a server starts by taking
//! an exclusive `flock` on a lock file next to the managed file and comparing the fencing token
//! it carries with the one the server stored last (a fence file beside the managed file,
//! replaced atomically). A script carrying a smaller token is refused before it changes
//! anything (marker `fenced <stored>`, exit status [`FENCED_EXIT`]); otherwise its token is
//! stored. The lock is held by the script's shell (file descriptor 9) until it ends, so two
//! nodes' scripts never interleave and a script admitted under token N has finished before
//! one under N+1 starts. A node paused past its lease that wakes up and sends its script is
//! thus refused by the server itself, whatever it believed.
//!
//! Tokens are numbers from the database (`datastore::leases`), never user text.

use crate::remote::{Arg, Lit, Output, Script};

/// Exit status of a script the server refused for its token.
pub const FENCED_EXIT: i32 = 75;

/// Exit status of a script that could not take the lock or store its token.
pub const FENCE_FAILED_EXIT: i32 = 76;

/// The lease a script runs under: its token and the directory of the server's managed file
/// (the lock file `.nfsprov.lock` and the fence file `.nfsprov.fence` live there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub dir: &'static str,
    pub token: i64,
}

/// Lock file and fence file names in the managed file's directory (dot files: neither
/// exportfs, which reads `*.exports`, nor ganesha, which reads its `%include`, looks at them).
pub const LOCK_FILE: &str = ".nfsprov.lock";
pub const FENCE_FILE: &str = ".nfsprov.fence";

/// Append the fence step to `s`: it must be the script's first step.
pub fn lines(s: &mut Script, fence: &Fence) {
    let token = fence.token.to_string();
    let fenced = format!("@@{} fenced", s.nonce());
    let failed = format!("@@{} fencefail", s.nonce());
    s.line(&[Lit("nfsprov_fd=$(printf '%s'"), Arg(fence.dir), Lit(")")]);
    // `command exec`: a redirection that fails must not end the shell before it says why.
    s.line(&[
        Lit("if { [ -d \"$nfsprov_fd\" ] || mkdir -p \"$nfsprov_fd\"; } && command exec 9>>\"$nfsprov_fd/.nfsprov.lock\" && flock 9; then :; else printf '%s %s\\n'"),
        Arg(&failed),
        Lit("\"cannot lock $nfsprov_fd/.nfsprov.lock\"; exit 76; fi"),
    ]);
    s.line(&[Lit(
        "nfsprov_fs=$(cat \"$nfsprov_fd/.nfsprov.fence\" 2>/dev/null); case $nfsprov_fs in ''|*[!0-9]*) nfsprov_fs=0;; esac",
    )]);
    s.line(&[
        Lit("if [ \"$nfsprov_fs\" -gt"),
        Arg(&token),
        Lit("]; then printf '%s %s\\n'"),
        Arg(&fenced),
        Lit("\"$nfsprov_fs\"; exit 75; fi"),
    ]);
    s.line(&[
        Lit("if [ \"$nfsprov_fs\" != "),
        Arg(&token),
        Lit("]; then { printf '%s\\n'"),
        Arg(&token),
        Lit("> \"$nfsprov_fd/.nfsprov.fence.tmp\" && mv -fT \"$nfsprov_fd/.nfsprov.fence.tmp\" \"$nfsprov_fd/.nfsprov.fence\"; } 2>&1 || { printf '%s %s\\n'"),
        Arg(&failed),
        Lit("\"cannot store the fencing token in $nfsprov_fd/.nfsprov.fence\"; exit 76; }; fi"),
    ]);
}

/// The server refused the script: the token it holds (greater than the script's).
pub fn refused(out: &Output) -> Option<i64> {
    out.sections
        .iter()
        .find(|s| s.tag == "fenced")
        .map(|s| s.arg.trim().parse().unwrap_or(i64::MAX))
}

/// The fence step itself failed (lock or fence file not writable): the server's words.
pub fn failed(out: &Output) -> Option<String> {
    out.sections.iter().find(|s| s.tag == "fencefail").map(|s| {
        format!("{} {}", s.before.trim(), s.arg.trim())
            .trim()
            .to_string()
    })
}

/// How a refusal reads to a user.
pub fn refusal_message(stored: i64, ours: i64) -> String {
    format!(
        "fenced: server taken over by a newer lease holder, token {stored} > {ours}; this node changed nothing there"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `body` framed as a session would, in a local `sh`, and parse it.
    fn run(s: &Script) -> Output {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(s.framed(std::time::Duration::from_secs(20)))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let end = format!("@@{} end ", s.nonce());
        let (body, status) = text.split_once(&end).expect("end marker");
        let mut o = Output::parse(s.nonce(), body);
        o.status = status.trim().parse().ok();
        o
    }

    /// A script under `token` in `dir` that records that it ran (a line in `ran`).
    fn script(dir: &'static str, token: i64) -> Script {
        let mut s = Script::new();
        lines(&mut s, &Fence { dir, token });
        s.line(&[
            Lit("echo"),
            Arg(&token.to_string()),
            Lit(">>\"$nfsprov_fd/ran\""),
        ]);
        s.marker("done", "");
        s
    }

    fn leak(p: &std::path::Path) -> &'static str {
        Box::leak(p.to_str().unwrap().to_string().into_boxed_str())
    }

    #[test]
    fn a_smaller_token_is_refused_before_it_changes_anything() {
        let tmp = tempfile::tempdir().unwrap();
        // A directory that does not exist yet is made.
        let dir = leak(&tmp.path().join("exports.d"));
        let out = run(&script(dir, 2));
        assert_eq!(out.status, Some(0), "{out:?}");
        assert_eq!(refused(&out), None);
        let fence = |n: &str| std::fs::read_to_string(format!("{dir}/{n}")).unwrap();
        assert_eq!(fence(FENCE_FILE), "2\n");
        // The same token again, then a greater one: admitted, stored.
        assert_eq!(run(&script(dir, 2)).status, Some(0));
        assert_eq!(run(&script(dir, 5)).status, Some(0));
        assert_eq!(fence(FENCE_FILE), "5\n");
        // A smaller one: refused, nothing after the fence step ran, the fence stays.
        let out = run(&script(dir, 4));
        assert_eq!(out.status, Some(FENCED_EXIT), "{out:?}");
        assert_eq!(refused(&out), Some(5));
        assert!(out.find("done", "").is_none());
        assert_eq!(fence("ran"), "2\n2\n5\n");
        assert_eq!(fence(FENCE_FILE), "5\n");
        assert_eq!(
            refusal_message(5, 4),
            "fenced: server taken over by a newer lease holder, token 5 > 4; this node changed nothing there"
        );
    }

    #[test]
    fn a_script_waits_for_the_lock_held_by_another() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = leak(tmp.path());
        // Someone (an older holder's script still running) holds the lock.
        let mut holder = std::process::Command::new("flock")
            .arg(tmp.path().join(LOCK_FILE))
            .args(["sleep", "1.5"])
            .spawn()
            .unwrap();
        // Wait until the holder has it (flock -n fails while held), bounded.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::process::Command::new("flock")
            .args(["-n"])
            .arg(tmp.path().join(LOCK_FILE))
            .arg("true")
            .status()
            .unwrap()
            .success()
        {
            assert!(std::time::Instant::now() < deadline, "holder never locked");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let began = std::time::Instant::now();
        let out = run(&script(dir, 1));
        assert_eq!(out.status, Some(0), "{out:?}");
        assert!(
            holder.try_wait().unwrap().is_some(),
            "ran while the lock was held"
        );
        assert!(began.elapsed() >= std::time::Duration::from_millis(200));
        holder.wait().unwrap();
    }

    #[test]
    fn a_fence_file_that_cannot_be_written_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        // The fence file's place is taken by a directory with something in it.
        std::fs::create_dir_all(tmp.path().join(FENCE_FILE).join("x")).unwrap();
        let out = run(&script(leak(tmp.path()), 3));
        assert_eq!(out.status, Some(FENCE_FAILED_EXIT), "{out:?}");
        let why = failed(&out).unwrap();
        assert!(why.contains("cannot store the fencing token"), "{why}");
        assert!(out.find("done", "").is_none());
    }
}

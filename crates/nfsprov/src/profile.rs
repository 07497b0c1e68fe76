//! Where a reconcile of one server spends its time, phase by phase: one `debug` line per
//! reconcile under the target [`TARGET`] (`NFSPROV_LOG=info,nfsprov::profile=debug`), read back
//! by the benchmark's per-pass profile. Off (the default filter), a reconcile pays one cached
//! `enabled!` check and nothing else: no clock is read.

use std::time::{Duration, Instant};

/// The tracing target of the profile lines.
pub const TARGET: &str = "nfsprov::profile";

/// The word that starts every profile line's message.
const TAG: &str = "pass-profile";

/// The phases of a reconcile, in the order a pass runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the server and its volumes from the database.
    DbRead,
    /// Planning: the wanted state, what to check first, the script.
    Plan,
    /// Opening the SSH session (only when there is none).
    Connect,
    /// The precheck round trip (host name lookups, missing directories).
    Precheck,
    /// The apply script: directories, the managed file, reload, read-back (one round trip).
    Apply,
    /// Judging the output per volume.
    Judge,
    /// Recording outcomes and the server's status.
    Record,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::DbRead,
        Phase::Plan,
        Phase::Connect,
        Phase::Precheck,
        Phase::Apply,
        Phase::Judge,
        Phase::Record,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::DbRead => "db",
            Phase::Plan => "plan",
            Phase::Connect => "connect",
            Phase::Precheck => "precheck",
            Phase::Apply => "apply",
            Phase::Judge => "judge",
            Phase::Record => "record",
        }
    }
}

/// The clock of one reconcile; logs its line when dropped (so every early return counts).
pub struct PassProfile {
    /// `None` when the profile target is off: nothing is measured.
    on: Option<Running>,
}

struct Running {
    server: String,
    began: Instant,
    last: Instant,
    spent: [Duration; 7],
    /// Passes run by this reconcile (quick re-runs included) and volumes in the last one.
    passes: usize,
    volumes: usize,
}

impl PassProfile {
    pub fn start() -> PassProfile {
        let on = tracing::enabled!(target: TARGET, tracing::Level::DEBUG).then(|| {
            let now = Instant::now();
            Running {
                server: String::new(),
                began: now,
                last: now,
                spent: [Duration::ZERO; 7],
                passes: 0,
                volumes: 0,
            }
        });
        PassProfile { on }
    }

    /// The time since the last lap (or the start) was spent in `phase`.
    pub fn lap(&mut self, phase: Phase) {
        if let Some(r) = &mut self.on {
            let now = Instant::now();
            r.spent[phase as usize] += now - r.last;
            r.last = now;
        }
    }

    /// A new pass over `volumes` volumes of server `server` begins.
    pub fn pass(&mut self, server: &str, volumes: usize) {
        if let Some(r) = &mut self.on {
            if r.server.is_empty() {
                r.server = server.to_string();
            }
            r.passes += 1;
            r.volumes = volumes;
        }
    }
}

impl Drop for PassProfile {
    fn drop(&mut self) {
        if let Some(r) = &self.on {
            let mut line = format!(
                "{TAG} server={} passes={} volumes={} total_us={}",
                r.server,
                r.passes,
                r.volumes,
                r.began.elapsed().as_micros()
            );
            for p in Phase::ALL {
                line.push_str(&format!(
                    " {}_us={}",
                    p.name(),
                    r.spent[p as usize].as_micros()
                ));
            }
            tracing::debug!(target: TARGET, "{line}");
        }
    }
}

/// One profile line read back from a log.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub server: String,
    pub passes: usize,
    pub volumes: usize,
    pub total: Duration,
    /// By phase, in the order of [`Phase::ALL`].
    pub spent: [Duration; 7],
}

/// The profile line in a log line, if it holds one.
pub fn parse(log_line: &str) -> Option<Line> {
    let rest = &log_line[log_line.find(TAG)? + TAG.len()..];
    let mut line = Line {
        server: String::new(),
        passes: 0,
        volumes: 0,
        total: Duration::ZERO,
        spent: [Duration::ZERO; 7],
    };
    let us = |v: &str| v.parse().ok().map(Duration::from_micros);
    for word in rest.split_whitespace() {
        let (k, v) = word.split_once('=')?;
        match k {
            "server" => line.server = v.to_string(),
            "passes" => line.passes = v.parse().ok()?,
            "volumes" => line.volumes = v.parse().ok()?,
            "total_us" => line.total = us(v)?,
            k => {
                let name = k.strip_suffix("_us")?;
                let p = Phase::ALL.iter().position(|p| p.name() == name)?;
                line.spent[p] = us(v)?;
            }
        }
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_line_reads_back_from_the_log_format() {
        let log = "2026-11-25T23:00:00.1Z DEBUG nfsprov::profile: pass-profile server=srv1 passes=2 \
                   volumes=30 total_us=5000 db_us=1 plan_us=2 connect_us=0 precheck_us=3 \
                   apply_us=4 judge_us=5 record_us=6";
        let l = parse(log).unwrap();
        assert_eq!(l.server, "srv1");
        assert_eq!((l.passes, l.volumes), (2, 30));
        assert_eq!(l.total, Duration::from_micros(5000));
        assert_eq!(l.spent[Phase::Apply as usize], Duration::from_micros(4));
        assert_eq!(l.spent[Phase::Record as usize], Duration::from_micros(6));
        assert!(parse("INFO nfsprov: listening").is_none());
    }

    /// Written through the formatter `nfsprov serve` uses (colours on, as in its log file)
    /// and read back; and nothing at all when the target is off.
    #[test]
    fn the_formatted_log_line_reads_back_and_nothing_is_logged_when_off() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let run = |filter: &str| {
            let buf = Buf::default();
            let writer = buf.clone();
            let sub = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_ansi(true)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::with_default(sub, || {
                let mut p = PassProfile::start();
                p.pass("srv-1", 7);
                p.lap(Phase::DbRead);
                p.lap(Phase::Apply);
                p.pass("srv-1", 9);
                p.lap(Phase::Record);
            });
            String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
        };
        let on = run("info,nfsprov::profile=debug");
        let lines: Vec<Line> = on.lines().filter_map(parse).collect();
        assert_eq!(lines.len(), 1, "{on}");
        assert_eq!(lines[0].server, "srv-1");
        assert_eq!((lines[0].passes, lines[0].volumes), (2, 9));
        assert!(lines[0].total >= lines[0].spent.iter().sum::<Duration>());
        let off = run("info");
        assert!(off.is_empty(), "{off}");
    }
}

//! Parsed user- and admin-supplied values that end up in paths and exports files.
//!
//! Every type here is a "parse, don't validate" newtype: the only way to get one is
//! through its `parse` function, so a value that exists is known to be safe to put
//! into a shell command, a directory path or an `/etc/exports` line.

mod client;
pub mod ganesha;
mod limits;
mod options;
mod path;
pub mod policy;
mod snapshot;

pub use client::{ClientForm, ClientSpec};
pub use limits::{
    DEFAULT_MAX_CLIENTS, DEFAULT_MAX_VOLUME_GB, MAX_CLIENTS_CEILING, install as install_limits,
};
pub use limits::{DEFAULT_MAX_SNAPSHOTS, MAX_SNAPSHOTS_CEILING};
pub use limits::{Limits, MAX_GB, client_count, gb_amount, limits, owner_id, volume_size};
pub use options::{ExportOption, ExportOptions, SecFlavor, SecFlavors};
pub use path::{DirMode, RootDir, SubPath};
pub use policy::{ExportPolicy, ExportPolicyDoc};
pub use snapshot::{MAX_SNAPSHOT_NAME, SnapshotName};

/// Why a user-supplied value was refused.
///
/// The message is a full sentence the user can act on. It does not name the field;
/// the API layer adds that.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

impl SpecError {
    /// Builds an error from anything string-like.
    pub(crate) fn new(msg: impl Into<String>) -> SpecError {
        SpecError(msg.into())
    }
}

/// Returns `Err(SpecError)` with a `format!`-style message from the enclosing function.
/// Callers import `SpecError`, so this works wherever the module is mounted.
macro_rules! refuse {
    ($($arg:tt)*) => {
        return Err(SpecError::new(format!($($arg)*)))
    };
}
pub(crate) use refuse;

/// Describes a character for an error message: `' '`, `';'`, `a control character (0x00)`.
///
/// Control and non-ASCII characters are spelled out because quoting them would
/// print something invisible or confusing.
pub(crate) fn describe_char(c: char) -> String {
    if c.is_ascii_control() {
        format!("a control character (0x{:02x})", c as u32)
    } else if !c.is_ascii() && c.is_whitespace() {
        format!("whitespace (U+{:04X})", c as u32)
    } else if c.is_control() {
        // C1 controls (U+0080-U+009F) are as invisible as ASCII ones (found by fuzzing).
        format!("a control character (U+{:04X})", c as u32)
    } else if !c.is_ascii() {
        format!("the non-ASCII character '{c}'")
    } else if c == '\'' {
        "\"'\"".to_string()
    } else {
        format!("'{c}'")
    }
}

/// Parse hootie's `allowed_hosts` string: one or more clients separated by commas
/// and/or whitespace.
///
/// Runs of separators are tolerated (`"a, b"`). A blank string is an error, and so
/// is the same client listed twice (compared in canonical form, so `HOST` and `host`
/// are duplicates). Order is kept. More clients than the limit (see `limits`) are refused
/// before any is parsed; the whole parse is linear in the length of `s`.
pub fn parse_client_list(s: &str) -> Result<Vec<ClientSpec>, SpecError> {
    parse_client_list_within(s, limits().max_clients)
}

fn parse_client_list_within(s: &str, max: usize) -> Result<Vec<ClientSpec>, SpecError> {
    // Room for `max` clients of the longest form, each with a separator or two.
    let max_len = max.saturating_mul(client::MAX_LEN + 2);
    if s.len() > max_len {
        refuse!(
            "The client list is {} characters long; the limit is {max_len} (at most {max} clients).",
            s.len()
        );
    }
    let items = s
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty());
    let count = items.clone().take(max + 1).count();
    limits::client_count_within(count, max)?;
    let mut out: Vec<ClientSpec> = Vec::with_capacity(count);
    let mut seen = std::collections::HashSet::with_capacity(count);
    for item in items {
        let client = ClientSpec::parse(item)?;
        if !seen.insert(client.clone()) {
            refuse!("'{client}' is listed more than once; list each client only once.");
        }
        out.push(client);
    }
    if out.is_empty() {
        refuse!("At least one client is required, for example 10.0.0.0/24 or host.example.com.");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_list_accepts_commas_and_whitespace() {
        let list = parse_client_list(" 10.0.0.1,  HOST.example.com\t@ng ,\n*.lab ").unwrap();
        let shown: Vec<String> = list.iter().map(|c| c.to_string()).collect();
        assert_eq!(shown, ["10.0.0.1", "host.example.com", "@ng", "*.lab"]);
        let again = parse_client_list(&shown.join(",")).unwrap();
        assert_eq!(again, list);
    }

    #[test]
    fn client_list_single() {
        let list = parse_client_list("*").unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].kind(), "anyone");
    }

    #[test]
    fn client_list_errors() {
        let cases: &[(&str, &str)] = &[
            ("", "At least one client is required"),
            ("   ", "At least one client is required"),
            (" , ,, ", "At least one client is required"),
            (
                "a.example,a.example",
                "'a.example' is listed more than once",
            ),
            ("A.example b.EXAMPLE a.EXAMPLE", "listed more than once"),
            ("10.0.0.1 10.0.0.1", "listed more than once"),
            (
                "2001:db8::1, 2001:DB8:0::1",
                "'2001:db8::1' is listed more than once",
            ),
            (
                "10.0.0.0/24 10.0.0.0/255.255.255.0",
                "listed more than once",
            ),
            ("good.example;rm", "';'"),
            ("10.0.0.1 1.2.3.256", "not a valid IPv4 address"),
            ("host(rw)", "'('"),
            ("a\0b", "control character"),
        ];
        for (input, fragment) in cases {
            let err = parse_client_list(input).expect_err(input);
            assert!(
                err.0.contains(fragment),
                "{input:?}: {:?} lacks {fragment:?}",
                err.0
            );
        }
    }

    #[test]
    fn client_lists_are_bounded_and_parsed_in_linear_time() {
        let hosts = |n: usize| {
            (0..n)
                .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(parse_client_list_within(&hosts(64), 64).unwrap().len(), 64);
        let e = parse_client_list_within(&hosts(65), 64).unwrap_err();
        assert!(e.0.contains("at most 64"), "{e}");
        // 150,000 clients: refused at once, not after a quadratic duplicate check.
        let huge = hosts(150_000);
        // CPU time of this thread, not the wall clock: a busy machine (CI's two cores running
        // other tests) delays the thread without making the parse any slower.
        let cpu = || {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid, writable timespec for the call.
            let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
            std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        };
        let t = cpu();
        let e = parse_client_list_within(&huge, 64).unwrap_err();
        assert!(e.0.contains("limit"), "{e}");
        let e = parse_client_list_within(&" ".repeat(1 << 20), 64).unwrap_err();
        assert!(e.0.contains("characters long"), "{e}");
        // A large allowed limit still parses in linear time (a quadratic check took seconds).
        assert_eq!(
            parse_client_list_within(&huge, 150_000).unwrap().len(),
            150_000
        );
        // Linear: well under a second of CPU even in a debug build; the quadratic duplicate
        // check this guards against took tens of seconds.
        let spent = cpu() - t;
        assert!(
            spent < std::time::Duration::from_secs(5),
            "{spent:?} of CPU"
        );
        let e = parse_client_list_within("a.example 10.0.0.1 A.EXAMPLE", 64).unwrap_err();
        assert!(e.0.contains("'a.example' is listed more than once"), "{e}");
    }

    #[test]
    fn describe_char_forms() {
        assert_eq!(describe_char(' '), "' '");
        assert_eq!(describe_char('\0'), "a control character (0x00)");
        assert_eq!(describe_char('\x7f'), "a control character (0x7f)");
        assert_eq!(describe_char('\u{a0}'), "whitespace (U+00A0)");
        assert_eq!(describe_char('é'), "the non-ASCII character 'é'");
        assert_eq!(describe_char('\''), "\"'\"");
        assert_eq!(describe_char(';'), "';'");
        assert_eq!(describe_char('\u{98}'), "a control character (U+0098)");
    }

    /// Found by `fuzz/` (sub_path, client_spec, export_options): a C1 control character was
    /// quoted raw into the refusal, where it prints as nothing.
    #[test]
    fn refusals_spell_out_c1_controls() {
        let messages = [
            SubPath::parse("\u{98}").unwrap_err(),
            ClientSpec::parse("ba\u{93}").unwrap_err(),
            parse_client_list("ba \u{93},aA").unwrap_err(),
            ExportOptions::parse("ro\u{9c}<3").unwrap_err(),
        ];
        for e in messages {
            assert!(!e.0.chars().any(char::is_control), "{:?}", e.0);
            assert!(e.0.contains("a control character (U+00"), "{:?}", e.0);
        }
    }

    #[test]
    fn spec_error_displays_message() {
        assert_eq!(SpecError::new("Nope.").to_string(), "Nope.");
    }
}

//! Parsed user- and admin-supplied values that end up in paths and exports files.
//!
//! Every type here is a "parse, don't validate" newtype: the only way to get one is
//! through its `parse` function, so a value that exists is known to be safe to put
//! into a shell command, a directory path or an `/etc/exports` line.

mod client;
mod options;
mod path;

pub use client::{ClientForm, ClientSpec};
pub use options::{ExportOption, ExportOptions, SecFlavor, SecFlavors};
pub use path::{DirMode, RootDir, SubPath};

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
/// are duplicates). Order is kept.
pub fn parse_client_list(s: &str) -> Result<Vec<ClientSpec>, SpecError> {
    let mut out: Vec<ClientSpec> = Vec::new();
    for item in s
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
    {
        let client = ClientSpec::parse(item)?;
        if out.contains(&client) {
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
    fn describe_char_forms() {
        assert_eq!(describe_char(' '), "' '");
        assert_eq!(describe_char('\0'), "a control character (0x00)");
        assert_eq!(describe_char('\x7f'), "a control character (0x7f)");
        assert_eq!(describe_char('\u{a0}'), "whitespace (U+00A0)");
        assert_eq!(describe_char('é'), "the non-ASCII character 'é'");
        assert_eq!(describe_char('\''), "\"'\"");
        assert_eq!(describe_char(';'), "';'");
    }

    #[test]
    fn spec_error_displays_message() {
        assert_eq!(SpecError::new("Nope.").to_string(), "Nope.");
    }
}

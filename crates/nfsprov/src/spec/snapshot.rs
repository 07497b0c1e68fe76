//! A snapshot's name: the last component of its path on the server
//! (`<root>/.nfsprov-snapshots/<volume id>/<name>`), so it is kept to a small, safe alphabet.

use super::{SpecError, describe_char, refuse};

/// Longest snapshot name.
pub const MAX_SNAPSHOT_NAME: usize = 64;

/// A valid snapshot name: 1 to [`MAX_SNAPSHOT_NAME`] ASCII letters, digits, `.`, `_`, `-`,
/// not starting with `.` or `-` (no `/`, so it is one path component, never `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotName(String);

impl SnapshotName {
    pub fn parse(s: &str) -> Result<SnapshotName, SpecError> {
        if s.is_empty() {
            refuse!("A snapshot name must not be empty.");
        }
        if s.len() > MAX_SNAPSHOT_NAME {
            refuse!(
                "The snapshot name is {} characters long; at most {MAX_SNAPSHOT_NAME} are allowed.",
                s.len()
            );
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            refuse!(
                "The snapshot name contains {}; use letters, digits, '.', '_' and '-'.",
                describe_char(c)
            );
        }
        if s.starts_with(['.', '-']) {
            refuse!("A snapshot name must not start with '.' or '-'.");
        }
        Ok(SnapshotName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "daily-2026.11.26",
            "A_1",
            &"x".repeat(MAX_SNAPSHOT_NAME),
        ] {
            assert_eq!(SnapshotName::parse(ok).unwrap().as_str(), ok);
        }
        for (bad, why) in [
            ("", "empty"),
            ("a/b", "'/'"),
            ("..", "start with"),
            (".hidden", "start with"),
            ("-rf", "start with"),
            ("a b", "' '"),
            ("a\nb", "control character"),
            ("é", "non-ASCII"),
            (&"x".repeat(MAX_SNAPSHOT_NAME + 1), "at most 64"),
        ] {
            let e = SnapshotName::parse(bad).unwrap_err().0;
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}

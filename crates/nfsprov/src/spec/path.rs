//! Directory names: where volumes live on a server and what they are called.

use std::fmt;
use std::str::FromStr;

use super::{SpecError, describe_char, refuse};

/// Longest path, in bytes, accepted for a [`SubPath`] or a [`RootDir`].
const MAX_PATH_LEN: usize = 200;
/// Longest single path component, in bytes.
const MAX_COMPONENT_LEN: usize = 64;
/// Most components a [`SubPath`] may have.
const MAX_SUB_COMPONENTS: usize = 8;

/// Top-level directories that hold the operating system; a volume root under any of
/// them could expose or clobber system files.
const SYSTEM_DIRS: &[&str] = &[
    "proc", "sys", "dev", "etc", "boot", "run", "bin", "sbin", "lib", "lib32", "lib64", "usr",
];

/// Refuses any character outside `[A-Za-z0-9_.-/]`, naming the first offender.
fn check_chars(s: &str, what: &str) -> Result<(), SpecError> {
    if let Some(c) = s
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')))
    {
        refuse!(
            "{what} contains {} which is not allowed; use letters, digits, '_', '-' and '.'.",
            describe_char(c)
        );
    }
    Ok(())
}

/// Refuses lengths over [`MAX_PATH_LEN`].
fn check_len(s: &str, what: &str) -> Result<(), SpecError> {
    if s.len() > MAX_PATH_LEN {
        refuse!(
            "{what} is {} characters long; the limit is {MAX_PATH_LEN}.",
            s.len()
        );
    }
    Ok(())
}

/// Checks one `/`-separated component (characters were already checked).
fn check_component(comp: &str, what: &str) -> Result<(), SpecError> {
    if comp.is_empty() {
        refuse!("{what} contains an empty component ('//'); remove the doubled '/'.");
    }
    if comp == "." || comp == ".." {
        refuse!("{what} must not contain '{comp}' components; give the path directly.");
    }
    if comp.starts_with('.') {
        refuse!(
            "{what} has a component '{comp}' that starts with '.'; hidden names are not allowed."
        );
    }
    if comp.starts_with('-') {
        refuse!(
            "{what} has a component '{comp}' that starts with '-', which commands would mistake for an option."
        );
    }
    if comp.len() > MAX_COMPONENT_LEN {
        refuse!(
            "{what} has a component of {} characters; the limit is {MAX_COMPONENT_LEN}.",
            comp.len()
        );
    }
    Ok(())
}

/// True if `a` and `b` are the same normalised path or one is an ancestor of the other.
fn paths_overlap(a: &str, b: &str) -> bool {
    fn is_ancestor(parent: &str, child: &str) -> bool {
        child
            .strip_prefix(parent)
            .is_some_and(|rest| rest.starts_with('/'))
    }
    a == b || is_ancestor(a, b) || is_ancestor(b, a)
}

/// Relative path of a volume under its server's root directory, e.g. `team-a/proj.1`.
///
/// Normalised: no leading `/`, no trailing `/`, no empty, `.`, `..` or hidden
/// components, only `[A-Za-z0-9_.-]`, at most 8 components and 200 bytes. This makes it
/// safe to join onto a [`RootDir`] and pass to shell commands unquoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubPath(String);

impl SubPath {
    /// Parses a user-supplied relative path; one trailing `/` is stripped.
    pub fn parse(s: &str) -> Result<SubPath, SpecError> {
        const WHAT: &str = "The path";
        if s.is_empty() {
            refuse!("The path must not be empty.");
        }
        check_chars(s, WHAT)?;
        if s.starts_with('/') {
            refuse!(
                "The path must be relative, so it must not start with '/'; for example team-a/project."
            );
        }
        let body = s.strip_suffix('/').unwrap_or(s);
        check_len(body, WHAT)?;
        let count = body.split('/').count();
        if count > MAX_SUB_COMPONENTS {
            refuse!("The path has {count} components; the limit is {MAX_SUB_COMPONENTS}.");
        }
        for comp in body.split('/') {
            check_component(comp, WHAT)?;
        }
        Ok(SubPath(body.to_string()))
    }

    /// The normalised path, e.g. `team-a/proj.1`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated components, in order.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// True if the two paths are equal or one contains the other (by whole components:
    /// `a` overlaps `a/b` but not `ab`). Two volumes must never overlap.
    pub fn overlaps(&self, other: &SubPath) -> bool {
        paths_overlap(&self.0, &other.0)
    }
}

impl fmt::Display for SubPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SubPath {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SubPath::parse(s)
    }
}

impl AsRef<str> for SubPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Absolute directory on a server under which volumes are created, e.g. `/srv/nfs`.
///
/// Admin-supplied. Normalised like [`SubPath`] (same characters and component rules,
/// trailing `/` stripped, at most 200 bytes), must not be `/`, and must not be in or
/// under a system directory such as `/etc` or `/usr`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RootDir(String);

impl RootDir {
    /// Parses an admin-supplied absolute directory; one trailing `/` is stripped.
    pub fn parse(s: &str) -> Result<RootDir, SpecError> {
        const WHAT: &str = "The root directory";
        if s.is_empty() {
            refuse!("The root directory must not be empty.");
        }
        check_chars(s, WHAT)?;
        let Some(rest) = s.strip_prefix('/') else {
            refuse!(
                "The root directory must be an absolute path starting with '/', for example /srv/nfs."
            );
        };
        if rest.is_empty() {
            refuse!(
                "The root directory must not be '/' itself; use a dedicated directory such as /srv/nfs."
            );
        }
        let body = s.strip_suffix('/').unwrap_or(s);
        check_len(body, WHAT)?;
        let relative = &body[1..];
        for comp in relative.split('/') {
            check_component(comp, WHAT)?;
        }
        let top = relative.split('/').next().unwrap_or_default();
        if SYSTEM_DIRS.contains(&top) {
            refuse!(
                "The root directory must not be in /{top}, which belongs to the operating system; use a dedicated directory such as /srv/nfs."
            );
        }
        Ok(RootDir(body.to_string()))
    }

    /// The normalised absolute path, e.g. `/srv/nfs`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The full path of a volume: this root, `/`, then `sub`.
    pub fn join(&self, sub: &SubPath) -> String {
        format!("{}/{}", self.0, sub.0)
    }

    /// True if the two roots are equal or one contains the other (by whole components).
    pub fn overlaps(&self, other: &RootDir) -> bool {
        paths_overlap(&self.0, &other.0)
    }
}

impl fmt::Display for RootDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RootDir {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RootDir::parse(s)
    }
}

impl AsRef<str> for RootDir {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Permission bits of a volume directory, e.g. `0755` or `2775`.
///
/// Only `rwx` bits for user, group and other plus setgid (so files inherit the group)
/// are allowed; setuid and sticky make no sense on a volume and are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DirMode(u32);

impl DirMode {
    /// Bits a volume directory may carry: `0777` plus setgid.
    const ALLOWED: u32 = 0o2777;

    /// Parses an octal mode: `755`, `0755`, `2775`, `02775` or `0o750`.
    pub fn parse(s: &str) -> Result<DirMode, SpecError> {
        if s.is_empty() {
            refuse!("The mode must not be empty; give octal digits such as 0755.");
        }
        let digits = s
            .strip_prefix("0o")
            .or_else(|| s.strip_prefix("0O"))
            .unwrap_or(s);
        if let Some(c) = digits.chars().find(|c| !matches!(c, '0'..='7')) {
            refuse!(
                "The mode contains {} which is not an octal digit; give a mode such as 0755 or 2775.",
                describe_char(c)
            );
        }
        // `02775` is a common spelling; beyond that, extra digits are a mistake.
        let digits = if digits.len() == 5 {
            digits.strip_prefix('0').unwrap_or(digits)
        } else {
            digits
        };
        if !(3..=4).contains(&digits.len()) {
            refuse!("The mode must have 3 or 4 octal digits, such as 755 or 2775.");
        }
        let Ok(bits) = u32::from_str_radix(digits, 8) else {
            refuse!("The mode must have 3 or 4 octal digits, such as 755 or 2775.");
        };
        DirMode::from_bits(bits)
    }

    /// Checks raw permission bits, e.g. when reading a stored mode back.
    pub fn from_bits(bits: u32) -> Result<DirMode, SpecError> {
        if bits & 0o4000 != 0 {
            refuse!("The setuid bit (4000) is not allowed on a volume directory.");
        }
        if bits & 0o1000 != 0 {
            refuse!("The sticky bit (1000) is not allowed on a volume directory.");
        }
        if bits & !DirMode::ALLOWED != 0 {
            refuse!("The mode {bits:o} is not a permission mode; give one such as 0755 or 2775.");
        }
        Ok(DirMode(bits))
    }

    /// The raw permission bits, e.g. `0o755`.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Four octal digits as `chmod` takes them, e.g. `0755`.
    pub fn as_octal_string(self) -> String {
        format!("{:04o}", self.0)
    }
}

impl Default for DirMode {
    /// `0755`: owner writes, everyone reads.
    fn default() -> Self {
        DirMode(0o755)
    }
}

impl fmt::Display for DirMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl FromStr for DirMode {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DirMode::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_err<T: fmt::Debug>(input: &str, res: Result<T, SpecError>, fragment: &str) {
        match res {
            Ok(v) => panic!("{input:?} was accepted as {v:?}; expected error with {fragment:?}"),
            Err(e) => assert!(
                e.0.contains(fragment),
                "{input:?}: message {:?} lacks {fragment:?}",
                e.0
            ),
        }
    }

    // ---- SubPath ----

    const SUB_VALID: &[(&str, &str)] = &[
        ("_my_home_directory", "_my_home_directory"),
        ("team-a/proj.1", "team-a/proj.1"),
        ("a", "a"),
        ("a/", "a"),
        ("A/b/C", "A/b/C"),
        ("a/b/c/d/e/f/g/h", "a/b/c/d/e/f/g/h"),
        ("a/b/c/d/e/f/g/h/", "a/b/c/d/e/f/g/h"),
        ("x.y.z", "x.y.z"),
        ("a-", "a-"),
        ("a.", "a."),
        ("a..b", "a..b"),
        ("_", "_"),
        ("0", "0"),
        ("9-to-5", "9-to-5"),
    ];

    #[test]
    fn subpath_valid() {
        for (input, canon) in SUB_VALID {
            let p = SubPath::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            let shown = p.to_string();
            assert_eq!(shown, *canon, "{input:?}");
            assert_eq!(p.as_str(), *canon);
            assert_eq!(p.as_ref(), *canon);
            assert_eq!(SubPath::parse(&shown).unwrap(), p, "round trip {input:?}");
            assert_eq!(input.parse::<SubPath>().unwrap(), p);
        }
    }

    #[test]
    fn subpath_length_limits() {
        let c64 = "c".repeat(64);
        assert!(SubPath::parse(&c64).is_ok());
        // 3 * 64 + 2 separators + 6 = 200 bytes exactly.
        let exact = format!("{c64}/{c64}/{c64}/{}", "d".repeat(5));
        assert_eq!(exact.len(), 200);
        assert!(SubPath::parse(&exact).is_ok());
        assert!(SubPath::parse(&format!("{exact}/")).is_ok());
        assert_err(
            "201 bytes",
            SubPath::parse(&format!("{exact}d")),
            "201 characters long; the limit is 200",
        );
    }

    #[test]
    fn subpath_invalid() {
        let c65 = "c".repeat(65);
        let nine = "a/b/c/d/e/f/g/h/i";
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "must not be empty"),
            ("/".into(), "must be relative"),
            ("/abs".into(), "must be relative"),
            ("/abs/".into(), "must be relative"),
            ("../etc".into(), "'..' components"),
            ("a/../b".into(), "'..' components"),
            ("..".into(), "'..' components"),
            (".".into(), "'.' components"),
            ("./a".into(), "'.' components"),
            ("a/./b".into(), "'.' components"),
            (".hidden".into(), "'.hidden' that starts with '.'"),
            ("a/.git".into(), "'.git' that starts with '.'"),
            ("-rf".into(), "'-rf' that starts with '-'"),
            ("a/-x".into(), "'-x' that starts with '-'"),
            ("a//b".into(), "empty component"),
            ("a//".into(), "empty component"),
            (
                "a b".into(),
                "contains ' ' which is not allowed; use letters, digits, '_', '-' and '.'",
            ),
            ("a;rm".into(), "contains ';' which is not allowed"),
            ("$(reboot)".into(), "contains '$' which is not allowed"),
            ("a`b`".into(), "contains '`'"),
            ("a\\b".into(), "contains '\\'"),
            ("a*".into(), "contains '*'"),
            ("~user".into(), "contains '~'"),
            ("a\0b".into(), "a control character (0x00)"),
            ("a\nb".into(), "a control character (0x0a)"),
            ("a\tb".into(), "a control character (0x09)"),
            ("caf\u{e9}".into(), "the non-ASCII character '\u{e9}'"),
            ("\u{441}\u{43e}".into(), "non-ASCII"),
            ("a\u{a0}b".into(), "whitespace (U+00A0)"),
            (c65.clone(), "component of 65 characters; the limit is 64"),
            (format!("a/{c65}/b"), "component of 65 characters"),
            (nine.into(), "9 components; the limit is 8"),
            (format!("{nine}/"), "9 components"),
        ];
        for (input, fragment) in &cases {
            assert_err(input, SubPath::parse(input), fragment);
        }
    }

    #[test]
    fn subpath_components() {
        let p = SubPath::parse("team-a/proj.1/x/").unwrap();
        assert_eq!(
            p.components().collect::<Vec<_>>(),
            ["team-a", "proj.1", "x"]
        );
        let single = SubPath::parse("solo").unwrap();
        assert_eq!(single.components().collect::<Vec<_>>(), ["solo"]);
    }

    #[test]
    fn subpath_overlaps() {
        let cases: &[(&str, &str, bool)] = &[
            ("a", "a", true),
            ("a", "a/b", true),
            ("a/b", "a", true),
            ("a/b", "a/b/c/d", true),
            ("a", "ab", false),
            ("ab", "a", false),
            ("a/b", "a/bc", false),
            ("a/b", "a/c", false),
            ("a", "b", false),
            ("a.b", "a", false),
            ("a-b/c", "a", false),
        ];
        for (x, y, want) in cases {
            let (x, y) = (SubPath::parse(x).unwrap(), SubPath::parse(y).unwrap());
            assert_eq!(x.overlaps(&y), *want, "{x} vs {y}");
            assert_eq!(y.overlaps(&x), *want, "{y} vs {x}");
        }
    }

    // ---- RootDir ----

    const ROOT_VALID: &[(&str, &str)] = &[
        ("/srv/nfs", "/srv/nfs"),
        ("/srv/nfs/", "/srv/nfs"),
        ("/srv", "/srv"),
        ("/export", "/export"),
        ("/data/vol_1/nfs-home", "/data/vol_1/nfs-home"),
        ("/usrdata", "/usrdata"),
        ("/etcetera/x", "/etcetera/x"),
        ("/srv/etc", "/srv/etc"),
        ("/home/nfs", "/home/nfs"),
        ("/var/lib/nfsprov", "/var/lib/nfsprov"),
    ];

    #[test]
    fn rootdir_valid() {
        for (input, canon) in ROOT_VALID {
            let r = RootDir::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            let shown = r.to_string();
            assert_eq!(shown, *canon);
            assert_eq!(r.as_str(), *canon);
            assert_eq!(r.as_ref(), *canon);
            assert_eq!(RootDir::parse(&shown).unwrap(), r, "round trip {input:?}");
            assert_eq!(input.parse::<RootDir>().unwrap(), r);
        }
    }

    #[test]
    fn rootdir_invalid() {
        let long = format!("/{}", vec!["d".repeat(60); 4].join("/"));
        assert!(long.len() > 200);
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "must not be empty"),
            ("/".into(), "must not be '/' itself"),
            ("//".into(), "empty component"),
            ("srv/nfs".into(), "absolute path starting with '/'"),
            ("./srv".into(), "absolute path"),
            ("/srv//nfs".into(), "empty component"),
            ("/srv/./nfs".into(), "'.' components"),
            ("/srv/../etc".into(), "'..' components"),
            ("/..".into(), "'..' components"),
            ("/srv/.snap".into(), "starts with '.'"),
            ("/srv/-x".into(), "starts with '-'"),
            ("/srv/nfs data".into(), "contains ' ' which is not allowed"),
            ("/srv/$HOME".into(), "contains '$'"),
            ("/srv/\u{e9}".into(), "non-ASCII"),
            ("/srv/a\0".into(), "control character (0x00)"),
            (
                format!("/srv/{}", "x".repeat(65)),
                "component of 65 characters",
            ),
            (long, "characters long; the limit is 200"),
            (
                "/etc".into(),
                "must not be in /etc, which belongs to the operating system",
            ),
            ("/etc/".into(), "must not be in /etc"),
            ("/etc/exports.d".into(), "must not be in /etc"),
            ("/proc/1".into(), "must not be in /proc"),
            ("/sys".into(), "must not be in /sys"),
            ("/dev/shm".into(), "must not be in /dev"),
            ("/boot".into(), "must not be in /boot"),
            ("/run/nfs".into(), "must not be in /run"),
            ("/bin".into(), "must not be in /bin"),
            ("/sbin".into(), "must not be in /sbin"),
            ("/lib/x".into(), "must not be in /lib"),
            ("/lib64".into(), "must not be in /lib64"),
            ("/usr/local/nfs".into(), "must not be in /usr"),
        ];
        for (input, fragment) in &cases {
            assert_err(input, RootDir::parse(input), fragment);
        }
    }

    #[test]
    fn rootdir_join_and_overlaps() {
        let root = RootDir::parse("/srv/nfs/").unwrap();
        let sub = SubPath::parse("team-a/proj.1/").unwrap();
        assert_eq!(root.join(&sub), "/srv/nfs/team-a/proj.1");

        let cases: &[(&str, &str, bool)] = &[
            ("/srv", "/srv", true),
            ("/srv", "/srv/nfs", true),
            ("/srv/nfs/a", "/srv", true),
            ("/srv", "/srvx", false),
            ("/srv/nfs", "/srv/nfs2", false),
            ("/srv/a", "/srv/b", false),
            ("/export", "/srv", false),
        ];
        for (x, y, want) in cases {
            let (x, y) = (RootDir::parse(x).unwrap(), RootDir::parse(y).unwrap());
            assert_eq!(x.overlaps(&y), *want, "{x} vs {y}");
            assert_eq!(y.overlaps(&x), *want, "{y} vs {x}");
        }
    }

    // ---- DirMode ----

    #[test]
    fn dirmode_valid() {
        let cases: &[(&str, u32, &str)] = &[
            ("0755", 0o755, "0755"),
            ("755", 0o755, "0755"),
            ("2775", 0o2775, "2775"),
            ("02775", 0o2775, "2775"),
            ("0o750", 0o750, "0750"),
            ("0O750", 0o750, "0750"),
            ("0o2770", 0o2770, "2770"),
            ("700", 0o700, "0700"),
            ("000", 0, "0000"),
            ("0777", 0o777, "0777"),
            ("2000", 0o2000, "2000"),
        ];
        for (input, bits, canon) in cases {
            let m = DirMode::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(m.bits(), *bits, "{input:?}");
            assert_eq!(m.as_octal_string(), *canon);
            assert_eq!(m.to_string(), *canon);
            assert_eq!(
                DirMode::parse(&m.to_string()).unwrap(),
                m,
                "round trip {input:?}"
            );
            assert_eq!(DirMode::from_bits(*bits).unwrap(), m);
            assert_eq!(input.parse::<DirMode>().unwrap(), m);
        }
    }

    #[test]
    fn dirmode_default() {
        assert_eq!(DirMode::default().bits(), 0o755);
        assert_eq!(DirMode::default().as_octal_string(), "0755");
    }

    #[test]
    fn dirmode_invalid() {
        let cases: &[(&str, &str)] = &[
            ("", "must not be empty"),
            ("0o", "3 or 4 octal digits"),
            ("75", "3 or 4 octal digits"),
            ("7", "3 or 4 octal digits"),
            ("12755", "3 or 4 octal digits"),
            ("002775", "3 or 4 octal digits"),
            ("0758", "'8' which is not an octal digit"),
            ("0x1ed", "'x' which is not an octal digit"),
            ("rwxr-xr-x", "'r' which is not an octal digit"),
            (" 755", "' ' which is not an octal digit"),
            ("755\n", "control character (0x0a)"),
            ("-755", "'-'"),
            ("+755", "'+'"),
            ("\u{667}55", "non-ASCII"),
            ("4755", "setuid bit (4000) is not allowed"),
            ("6775", "setuid bit"),
            ("1777", "sticky bit (1000) is not allowed"),
            ("3775", "sticky bit"),
            ("7777", "setuid bit"),
        ];
        for (input, fragment) in cases {
            assert_err(input, DirMode::parse(input), fragment);
        }
        assert_err(
            "0o10000",
            DirMode::from_bits(0o10000),
            "is not a permission mode",
        );
        assert_err("0o4755", DirMode::from_bits(0o4755), "setuid");
    }
}

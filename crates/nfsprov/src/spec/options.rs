//! Per-client export options of Linux nfs-utils (`exportfs`, exports(5)).

use std::fmt;
use std::mem::discriminant;
use std::str::FromStr;

use super::{SpecError, describe_char, refuse};

/// Most options one client may carry.
const MAX_OPTIONS: usize = 32;
/// Longest option string accepted, in bytes (32 generous options fit easily).
const MAX_LEN: usize = 1024;
/// Largest anonymous uid/gid; 4294967295 is `(uid_t)-1`, which means "no id".
const MAX_ANON_ID: u32 = 4_294_967_294;

/// Options nfsprov sets itself, or that could point an export somewhere else.
const MANAGED: &[&str] = &["fsid", "refer", "replicas", "mountpoint", "mp"];
/// Real nfs-utils options that nfsprov deliberately does not offer.
const UNSUPPORTED: &[&str] = &[
    "xprtsec",
    "reexport",
    "priority",
    "squash_uids",
    "squash_gids",
];

/// A security flavor usable in `sec=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecFlavor {
    /// AUTH_SYS: trust the client's uid/gid.
    Sys,
    /// Kerberos authentication.
    Krb5,
    /// Kerberos with integrity protection.
    Krb5i,
    /// Kerberos with privacy (encryption).
    Krb5p,
}

impl SecFlavor {
    /// Every flavor, in declaration order (tests check that a new one has a row everywhere).
    pub const ALL: [SecFlavor; 4] = [
        SecFlavor::Sys,
        SecFlavor::Krb5,
        SecFlavor::Krb5i,
        SecFlavor::Krb5p,
    ];

    /// The name exports(5) uses.
    pub fn as_str(self) -> &'static str {
        match self {
            SecFlavor::Sys => "sys",
            SecFlavor::Krb5 => "krb5",
            SecFlavor::Krb5i => "krb5i",
            SecFlavor::Krb5p => "krb5p",
        }
    }

    fn from_name(name: &str) -> Option<SecFlavor> {
        Some(match name {
            "sys" => SecFlavor::Sys,
            "krb5" => SecFlavor::Krb5,
            "krb5i" => SecFlavor::Krb5i,
            "krb5p" => SecFlavor::Krb5p,
            _ => return None,
        })
    }
}

impl fmt::Display for SecFlavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value of `sec=`: one or more distinct flavors in preference order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecFlavors(Vec<SecFlavor>);

impl SecFlavors {
    /// Parses a colon-separated flavor list such as `krb5p:krb5i`.
    pub fn parse(s: &str) -> Result<SecFlavors, SpecError> {
        if s.is_empty() {
            refuse!("'sec' needs a list of security flavors, such as sec=sys or sec=krb5:krb5i.");
        }
        let mut flavors = Vec::new();
        for name in s.split(':') {
            if name.is_empty() {
                refuse!("'sec={s}' has an empty flavor; separate flavors with a single ':'.");
            }
            let Some(flavor) = SecFlavor::from_name(name) else {
                refuse!(
                    "'sec={s}' has unknown security flavor '{name}'; use sys, krb5, krb5i or krb5p."
                );
            };
            if flavors.contains(&flavor) {
                refuse!("'sec={s}' lists '{name}' more than once.");
            }
            flavors.push(flavor);
        }
        Ok(SecFlavors(flavors))
    }

    /// The flavors, in the order given.
    pub fn flavors(&self) -> &[SecFlavor] {
        &self.0
    }
}

impl fmt::Display for SecFlavors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, flavor) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            f.write_str(flavor.as_str())?;
        }
        Ok(())
    }
}

/// One exports(5) option.
///
/// Variants are declared in canonical order; [`ExportOptions`] sorts by it. Aliases
/// (`auth_nlm`, `no_auth_nlm`) parse to their canonical variants. Only
/// [`ExportOption::parse`] checks values, so build values by hand only to query a set
/// (`AnonUid(u32::MAX)` is not a valid option).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExportOption {
    Secure,
    Insecure,
    Rw,
    Ro,
    Async,
    Sync,
    Wdelay,
    NoWdelay,
    Hide,
    NoHide,
    CrossMnt,
    NoCrossMnt,
    SubtreeCheck,
    NoSubtreeCheck,
    /// `secure_locks`, alias `auth_nlm`.
    SecureLocks,
    /// `insecure_locks`, alias `no_auth_nlm`.
    InsecureLocks,
    RootSquash,
    NoRootSquash,
    AllSquash,
    NoAllSquash,
    /// `anonuid=N`, N in 0..=4294967294.
    AnonUid(u32),
    /// `anongid=N`, N in 0..=4294967294.
    AnonGid(u32),
    /// `sec=flavor[:flavor...]`. Placed after `ro`/`rw` and the squash options so
    /// those apply to every flavor (exportfs applies options after `sec=` to it alone).
    Sec(SecFlavors),
    NoRdirPlus,
    Pnfs,
    NoPnfs,
    SecurityLabel,
    Acl,
    NoAcl,
}

/// Pairs that cannot both be in one set.
const CONTRADICTIONS: &[(ExportOption, ExportOption)] = &[
    (ExportOption::Secure, ExportOption::Insecure),
    (ExportOption::Rw, ExportOption::Ro),
    (ExportOption::Async, ExportOption::Sync),
    (ExportOption::Wdelay, ExportOption::NoWdelay),
    (ExportOption::Hide, ExportOption::NoHide),
    (ExportOption::CrossMnt, ExportOption::NoCrossMnt),
    (ExportOption::SubtreeCheck, ExportOption::NoSubtreeCheck),
    (ExportOption::SecureLocks, ExportOption::InsecureLocks),
    (ExportOption::RootSquash, ExportOption::NoRootSquash),
    (ExportOption::AllSquash, ExportOption::NoAllSquash),
    (ExportOption::Pnfs, ExportOption::NoPnfs),
    (ExportOption::Acl, ExportOption::NoAcl),
];

impl ExportOption {
    /// Every option's [`keyword`](Self::keyword), in declaration (canonical) order, one per
    /// variant; aliases are not listed. For tests that must cover every option (the backend
    /// matrix); `keywords_list_every_variant` below keeps it complete.
    pub const KEYWORDS: [&'static str; 29] = [
        "secure",
        "insecure",
        "rw",
        "ro",
        "async",
        "sync",
        "wdelay",
        "no_wdelay",
        "hide",
        "nohide",
        "crossmnt",
        "nocrossmnt",
        "subtree_check",
        "no_subtree_check",
        "secure_locks",
        "insecure_locks",
        "root_squash",
        "no_root_squash",
        "all_squash",
        "no_all_squash",
        "anonuid",
        "anongid",
        "sec",
        "nordirplus",
        "pnfs",
        "no_pnfs",
        "security_label",
        "acl",
        "no_acl",
    ];

    /// Parses one option such as `ro`, `anonuid=65534` or `sec=krb5p:krb5i`.
    pub fn parse(s: &str) -> Result<ExportOption, SpecError> {
        if s.is_empty() {
            refuse!("An export option must not be empty.");
        }
        if let Some(c) = s.chars().find(|c| c.is_whitespace()) {
            refuse!(
                "Export options must not contain whitespace ({}); separate them with commas only, like rw,sync.",
                describe_char(c)
            );
        }
        if let Some(c) = s.chars().find(|c| c.is_control() || !c.is_ascii()) {
            refuse!("Export options must not contain {}.", describe_char(c));
        }
        if s.contains(',') {
            refuse!("'{s}' contains ','; give one export option per entry.");
        }
        let (key, value) = match s.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (s, None),
        };
        if MANAGED.contains(&key) {
            refuse!("'{key}' is managed by nfsprov and cannot be set.");
        }
        if UNSUPPORTED.contains(&key) {
            refuse!("'{key}' is not supported by nfsprov.");
        }
        if let Some(flag) = ExportOption::flag(key) {
            if value.is_some() {
                refuse!("'{key}' does not take a value; write just '{key}'.");
            }
            return Ok(flag);
        }
        match key {
            "anonuid" => Ok(ExportOption::AnonUid(parse_id(key, value)?)),
            "anongid" => Ok(ExportOption::AnonGid(parse_id(key, value)?)),
            "sec" => Ok(ExportOption::Sec(SecFlavors::parse(value.unwrap_or(""))?)),
            _ => refuse!("There is an unknown export option '{key}'; see exports(5)."),
        }
    }

    /// The option's keyword without any value, e.g. `anonuid` for `anonuid=0`.
    pub fn keyword(&self) -> &'static str {
        use ExportOption as O;
        match self {
            O::Secure => "secure",
            O::Insecure => "insecure",
            O::Rw => "rw",
            O::Ro => "ro",
            O::Async => "async",
            O::Sync => "sync",
            O::Wdelay => "wdelay",
            O::NoWdelay => "no_wdelay",
            O::Hide => "hide",
            O::NoHide => "nohide",
            O::CrossMnt => "crossmnt",
            O::NoCrossMnt => "nocrossmnt",
            O::SubtreeCheck => "subtree_check",
            O::NoSubtreeCheck => "no_subtree_check",
            O::SecureLocks => "secure_locks",
            O::InsecureLocks => "insecure_locks",
            O::RootSquash => "root_squash",
            O::NoRootSquash => "no_root_squash",
            O::AllSquash => "all_squash",
            O::NoAllSquash => "no_all_squash",
            O::AnonUid(_) => "anonuid",
            O::AnonGid(_) => "anongid",
            O::Sec(_) => "sec",
            O::NoRdirPlus => "nordirplus",
            O::Pnfs => "pnfs",
            O::NoPnfs => "no_pnfs",
            O::SecurityLabel => "security_label",
            O::Acl => "acl",
            O::NoAcl => "no_acl",
        }
    }

    /// The valueless option named `key`, including aliases.
    fn flag(key: &str) -> Option<ExportOption> {
        use ExportOption as O;
        Some(match key {
            "secure" => O::Secure,
            "insecure" => O::Insecure,
            "rw" => O::Rw,
            "ro" => O::Ro,
            "async" => O::Async,
            "sync" => O::Sync,
            "wdelay" => O::Wdelay,
            "no_wdelay" => O::NoWdelay,
            "hide" => O::Hide,
            "nohide" => O::NoHide,
            "crossmnt" => O::CrossMnt,
            "nocrossmnt" => O::NoCrossMnt,
            "subtree_check" => O::SubtreeCheck,
            "no_subtree_check" => O::NoSubtreeCheck,
            "secure_locks" | "auth_nlm" => O::SecureLocks,
            "insecure_locks" | "no_auth_nlm" => O::InsecureLocks,
            "root_squash" => O::RootSquash,
            "no_root_squash" => O::NoRootSquash,
            "all_squash" => O::AllSquash,
            "no_all_squash" => O::NoAllSquash,
            "nordirplus" => O::NoRdirPlus,
            "pnfs" => O::Pnfs,
            "no_pnfs" => O::NoPnfs,
            "security_label" => O::SecurityLabel,
            "acl" => O::Acl,
            "no_acl" => O::NoAcl,
            _ => return None,
        })
    }

    /// The token exportfs writes for this option in /var/lib/nfs/etab.
    ///
    /// Same as [`Display`](fmt::Display) except that exportfs prints anonuid/anongid
    /// with `%d`, so ids above 2147483647 appear negative (4294967294 as -2).
    pub fn etab_token(&self) -> String {
        match self {
            ExportOption::AnonUid(id) => format!("anonuid={}", id.cast_signed()),
            ExportOption::AnonGid(id) => format!("anongid={}", id.cast_signed()),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for ExportOption {
    /// The canonical exports(5) text, e.g. `secure_locks` (never an alias).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportOption::AnonUid(id) | ExportOption::AnonGid(id) => {
                write!(f, "{}={id}", self.keyword())
            }
            ExportOption::Sec(flavors) => write!(f, "sec={flavors}"),
            _ => f.write_str(self.keyword()),
        }
    }
}

impl FromStr for ExportOption {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExportOption::parse(s)
    }
}

/// Parses the decimal value of `anonuid=`/`anongid=`.
fn parse_id(key: &str, value: Option<&str>) -> Result<u32, SpecError> {
    let v = value.unwrap_or("");
    if v.is_empty() {
        refuse!("'{key}' needs a value, such as {key}=65534.");
    }
    match v.parse::<u32>() {
        Ok(id) if v.bytes().all(|b| b.is_ascii_digit()) && id <= MAX_ANON_ID => Ok(id),
        _ => refuse!("'{key}={v}' must be a number from 0 to {MAX_ANON_ID}."),
    }
}

/// A validated, deduplicated set of export options for one client, in canonical order.
///
/// Never holds contradicting options (`rw` with `ro`), two different values of one
/// option, or options nfsprov manages (`fsid=`). Empty means "exportfs defaults";
/// see [`ExportOptions::with_defaults`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ExportOptions(Vec<ExportOption>);

impl ExportOptions {
    /// Parses a comma-separated option string such as `ro,sync`; `""` is the empty set.
    pub fn parse(s: &str) -> Result<ExportOptions, SpecError> {
        if s.is_empty() {
            return Ok(ExportOptions::default());
        }
        if s.len() > MAX_LEN {
            refuse!(
                "The export options are {} characters long; the limit is {MAX_LEN}.",
                s.len()
            );
        }
        if s.split(',').any(str::is_empty) {
            refuse!(
                "The export options contain an empty entry; check for doubled, leading or trailing commas."
            );
        }
        ExportOptions::build(s.split(','))
    }

    /// Builds a set from a list with one option per entry, e.g. from a JSON array.
    pub fn from_list(items: &[String]) -> Result<ExportOptions, SpecError> {
        let len: usize = items.iter().map(|i| i.len() + 1).sum();
        if len > MAX_LEN {
            refuse!("The export options are {len} characters long; the limit is {MAX_LEN}.");
        }
        ExportOptions::build(items.iter().map(String::as_str))
    }

    fn build<'a>(items: impl Iterator<Item = &'a str>) -> Result<ExportOptions, SpecError> {
        let mut opts = Vec::new();
        for item in items {
            if opts.len() == MAX_OPTIONS {
                refuse!(
                    "There are more than {MAX_OPTIONS} export options; the limit is {MAX_OPTIONS}."
                );
            }
            opts.push(ExportOption::parse(item)?);
        }
        opts.sort();
        opts.dedup();
        for pair in opts.windows(2) {
            if discriminant(&pair[0]) == discriminant(&pair[1]) {
                refuse!(
                    "'{}' is given more than once with different values ('{}' and '{}'); keep only one.",
                    pair[0].keyword(),
                    pair[0],
                    pair[1]
                );
            }
        }
        for (a, b) in CONTRADICTIONS {
            if opts.contains(a) && opts.contains(b) {
                refuse!("'{a}' and '{b}' contradict each other; keep only one.");
            }
        }
        Ok(ExportOptions(opts))
    }

    /// True if no options were given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many distinct options there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if exactly this option (with this value) is in the set.
    pub fn contains(&self, option: &ExportOption) -> bool {
        self.0.contains(option)
    }

    /// The options in canonical order.
    pub fn iter(&self) -> std::slice::Iter<'_, ExportOption> {
        self.0.iter()
    }

    /// This set plus `no_subtree_check` and `sync` where neither member of those pairs
    /// was given, which silences exportfs's "neither ... specified" warnings. Other
    /// options are left to exportfs's own defaults.
    pub fn with_defaults(&self) -> ExportOptions {
        let mut opts = self.0.clone();
        let defaults = [
            (ExportOption::SubtreeCheck, ExportOption::NoSubtreeCheck),
            (ExportOption::Async, ExportOption::Sync),
        ];
        for (other, default) in defaults {
            if !opts.contains(&other) && !opts.contains(&default) {
                opts.push(default);
            }
        }
        opts.sort();
        ExportOptions(opts)
    }

    /// Tokens that must all appear among a client's options in /var/lib/nfs/etab once
    /// exportfs has applied this set; used to verify an export.
    ///
    /// Each is the canonical text ([`ExportOption::etab_token`]). `sec=` is returned
    /// whole (`sec=krb5p:krb5i`): exportfs writes flavors with equal flags as one
    /// colon-joined token, and the canonical order puts `sec=` after every per-flavor
    /// option, so all flavors share flags. etab lists every flag, so it has more
    /// tokens than this; defaults are not included unless [`with_defaults`](Self::with_defaults) was used.
    pub fn etab_tokens(&self) -> Vec<String> {
        self.0.iter().map(ExportOption::etab_token).collect()
    }
}

impl fmt::Display for ExportOptions {
    /// Canonical comma-joined form, e.g. `rw,sync,no_subtree_check`; empty for no options.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, opt) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{opt}")?;
        }
        Ok(())
    }
}

impl FromStr for ExportOptions {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExportOptions::parse(s)
    }
}

impl<'a> IntoIterator for &'a ExportOptions {
    type Item = &'a ExportOption;
    type IntoIter = std::slice::Iter<'a, ExportOption>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, canonical Display)
    const VALID: &[(&str, &str)] = &[
        ("", ""),
        ("ro", "ro"),
        ("rw,sync", "rw,sync"),
        ("sync,rw", "rw,sync"),
        ("no_subtree_check,rw,sync", "rw,sync,no_subtree_check"),
        ("rw,rw,rw", "rw"),
        ("auth_nlm", "secure_locks"),
        ("no_auth_nlm", "insecure_locks"),
        ("auth_nlm,secure_locks", "secure_locks"),
        ("anonuid=65534,anongid=65534", "anonuid=65534,anongid=65534"),
        ("anongid=0,anonuid=0", "anonuid=0,anongid=0"),
        ("anonuid=4294967294", "anonuid=4294967294"),
        ("anonuid=007", "anonuid=7"),
        ("anonuid=1000,anonuid=1000", "anonuid=1000"),
        ("sec=sys", "sec=sys"),
        ("sec=krb5p:krb5i:krb5:sys", "sec=krb5p:krb5i:krb5:sys"),
        ("sec=krb5,sec=krb5", "sec=krb5"),
        ("sec=krb5p,ro,root_squash", "ro,root_squash,sec=krb5p"),
        (
            "no_acl,security_label,no_pnfs,nordirplus,sec=sys,anongid=1,anonuid=2,no_all_squash,no_root_squash,insecure_locks,no_subtree_check,nocrossmnt,nohide,no_wdelay,async,ro,insecure",
            "insecure,ro,async,no_wdelay,nohide,nocrossmnt,no_subtree_check,insecure_locks,no_root_squash,no_all_squash,anonuid=2,anongid=1,sec=sys,nordirplus,no_pnfs,security_label,no_acl",
        ),
        (
            "acl,pnfs,all_squash,root_squash,secure_locks,subtree_check,crossmnt,hide,wdelay,sync,rw,secure",
            "secure,rw,sync,wdelay,hide,crossmnt,subtree_check,secure_locks,root_squash,all_squash,pnfs,acl",
        ),
    ];

    #[test]
    fn valid_options_have_canonical_display() {
        for (input, canon) in VALID {
            let o = ExportOptions::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(o.to_string(), *canon, "{input:?}");
            assert_eq!(input.parse::<ExportOptions>().unwrap(), o);
        }
    }

    #[test]
    fn round_trip() {
        for (input, _) in VALID {
            let o = ExportOptions::parse(input).unwrap();
            assert_eq!(
                ExportOptions::parse(&o.to_string()).unwrap(),
                o,
                "{input:?}"
            );
            let list: Vec<String> = o.iter().map(|x| x.to_string()).collect();
            assert_eq!(ExportOptions::from_list(&list).unwrap(), o, "{input:?}");
            for opt in &o {
                assert_eq!(ExportOption::parse(&opt.to_string()).unwrap(), *opt);
            }
        }
    }

    /// `KEYWORDS` has one entry per variant, in declaration order. A new variant breaks the
    /// match below: give it the next position and add its keyword to `KEYWORDS` at that place.
    #[test]
    fn keywords_list_every_variant() {
        fn position(o: &ExportOption) -> usize {
            use ExportOption as O;
            match o {
                O::Secure => 0,
                O::Insecure => 1,
                O::Rw => 2,
                O::Ro => 3,
                O::Async => 4,
                O::Sync => 5,
                O::Wdelay => 6,
                O::NoWdelay => 7,
                O::Hide => 8,
                O::NoHide => 9,
                O::CrossMnt => 10,
                O::NoCrossMnt => 11,
                O::SubtreeCheck => 12,
                O::NoSubtreeCheck => 13,
                O::SecureLocks => 14,
                O::InsecureLocks => 15,
                O::RootSquash => 16,
                O::NoRootSquash => 17,
                O::AllSquash => 18,
                O::NoAllSquash => 19,
                O::AnonUid(_) => 20,
                O::AnonGid(_) => 21,
                O::Sec(_) => 22,
                O::NoRdirPlus => 23,
                O::Pnfs => 24,
                O::NoPnfs => 25,
                O::SecurityLabel => 26,
                O::Acl => 27,
                O::NoAcl => 28,
            }
        }
        let last = position(&ExportOption::NoAcl);
        assert_eq!(ExportOption::KEYWORDS.len(), last + 1);
        let mut previous: Option<ExportOption> = None;
        for (i, kw) in ExportOption::KEYWORDS.iter().enumerate() {
            let sample = match *kw {
                "anonuid" | "anongid" => format!("{kw}=1"),
                "sec" => "sec=sys".to_string(),
                _ => kw.to_string(),
            };
            let o = ExportOption::parse(&sample).unwrap_or_else(|e| panic!("{kw}: {e}"));
            assert_eq!(o.keyword(), *kw);
            assert_eq!(position(&o), i, "{kw} is out of place in KEYWORDS");
            assert!(
                previous.is_none_or(|p| p < o),
                "{kw}: not in canonical order"
            );
            previous = Some(o);
        }
    }

    #[test]
    fn sec_flavors_all_lists_every_flavor() {
        for (i, f) in SecFlavor::ALL.iter().enumerate() {
            // A new flavor breaks this match: add it to ALL.
            let position = match f {
                SecFlavor::Sys => 0,
                SecFlavor::Krb5 => 1,
                SecFlavor::Krb5i => 2,
                SecFlavor::Krb5p => 3,
            };
            assert_eq!(position, i);
            assert_eq!(SecFlavor::from_name(f.as_str()), Some(*f));
        }
    }

    #[test]
    fn every_keyword_round_trips() {
        let all = "secure,insecure,rw,ro,async,sync,wdelay,no_wdelay,hide,nohide,crossmnt,nocrossmnt,subtree_check,no_subtree_check,secure_locks,insecure_locks,root_squash,no_root_squash,all_squash,no_all_squash,anonuid=1,anongid=2,sec=krb5,nordirplus,pnfs,no_pnfs,security_label,acl,no_acl";
        for item in all.split(',') {
            let opt = ExportOption::parse(item).unwrap_or_else(|e| panic!("{item}: {e}"));
            assert_eq!(opt.to_string(), item);
            assert_eq!(item.parse::<ExportOption>().unwrap(), opt);
            assert!(item.starts_with(opt.keyword()));
        }
    }

    #[test]
    fn invalid_options() {
        let too_many = vec!["rw"; 33].join(",");
        let too_long = format!("sec={}", "sys:".repeat(300));
        let cases: Vec<(String, &str)> = vec![
            ("rw,ro".into(), "'rw' and 'ro' contradict each other"),
            ("ro,rw".into(), "'rw' and 'ro' contradict each other"),
            (
                "sync,async".into(),
                "'async' and 'sync' contradict each other",
            ),
            (
                "root_squash,no_root_squash".into(),
                "'root_squash' and 'no_root_squash' contradict",
            ),
            (
                "all_squash,no_all_squash".into(),
                "'all_squash' and 'no_all_squash' contradict",
            ),
            (
                "secure,insecure".into(),
                "'secure' and 'insecure' contradict",
            ),
            (
                "wdelay,no_wdelay".into(),
                "'wdelay' and 'no_wdelay' contradict",
            ),
            ("hide,nohide".into(), "'hide' and 'nohide' contradict"),
            (
                "crossmnt,nocrossmnt".into(),
                "'crossmnt' and 'nocrossmnt' contradict",
            ),
            (
                "subtree_check,no_subtree_check".into(),
                "'subtree_check' and 'no_subtree_check' contradict",
            ),
            (
                "secure_locks,insecure_locks".into(),
                "'secure_locks' and 'insecure_locks' contradict",
            ),
            (
                "auth_nlm,no_auth_nlm".into(),
                "'secure_locks' and 'insecure_locks' contradict",
            ),
            ("pnfs,no_pnfs".into(), "'pnfs' and 'no_pnfs' contradict"),
            ("acl,no_acl".into(), "'acl' and 'no_acl' contradict"),
            ("foo".into(), "unknown export option 'foo'; see exports(5)"),
            ("rw,foo".into(), "unknown export option 'foo'"),
            ("RW".into(), "unknown export option 'RW'"),
            ("rw;reboot".into(), "unknown export option 'rw;reboot'"),
            ("foo=1".into(), "unknown export option 'foo'"),
            (
                "fsid=0".into(),
                "'fsid' is managed by nfsprov and cannot be set",
            ),
            ("fsid=root".into(), "'fsid' is managed by nfsprov"),
            ("fsid".into(), "'fsid' is managed by nfsprov"),
            ("rw,refer=/a@host".into(), "'refer' is managed by nfsprov"),
            ("replicas=/a@h".into(), "'replicas' is managed by nfsprov"),
            ("mountpoint".into(), "'mountpoint' is managed by nfsprov"),
            ("mountpoint=/x".into(), "'mountpoint' is managed by nfsprov"),
            ("mp".into(), "'mp' is managed by nfsprov"),
            ("mp=/x".into(), "'mp' is managed by nfsprov"),
            ("xprtsec=tls".into(), "'xprtsec' is not supported"),
            ("squash_uids=0-10".into(), "'squash_uids' is not supported"),
            (
                "anonuid=x".into(),
                "'anonuid=x' must be a number from 0 to 4294967294",
            ),
            ("anonuid=".into(), "'anonuid' needs a value"),
            ("anonuid".into(), "'anonuid' needs a value"),
            ("anonuid=-1".into(), "'anonuid=-1' must be a number"),
            ("anonuid=+1".into(), "'anonuid=+1' must be a number"),
            (
                "anonuid=4294967295".into(),
                "must be a number from 0 to 4294967294",
            ),
            ("anonuid=99999999999".into(), "must be a number"),
            ("anonuid=0x10".into(), "must be a number"),
            ("anongid=abc".into(), "'anongid=abc' must be a number"),
            ("anongid=".into(), "'anongid' needs a value"),
            (
                "anonuid=1,anonuid=2".into(),
                "'anonuid' is given more than once with different values",
            ),
            ("sec=foo".into(), "unknown security flavor 'foo'"),
            ("sec=".into(), "'sec' needs a list of security flavors"),
            ("sec".into(), "'sec' needs a list of security flavors"),
            ("sec=krb5::sys".into(), "empty flavor"),
            ("sec=krb5:".into(), "empty flavor"),
            ("sec=sys:sys".into(), "lists 'sys' more than once"),
            ("sec=none".into(), "unknown security flavor 'none'"),
            ("sec=SYS".into(), "unknown security flavor 'SYS'"),
            ("sec=sys,sec=krb5".into(), "'sec' is given more than once"),
            ("rw=1".into(), "'rw' does not take a value"),
            ("sync=".into(), "'sync' does not take a value"),
            ("rw,,sync".into(), "empty entry"),
            (",rw".into(), "empty entry"),
            ("rw,".into(), "empty entry"),
            (",".into(), "empty entry"),
            ("rw, sync".into(), "must not contain whitespace"),
            ("rw sync".into(), "must not contain whitespace"),
            ("rw\t".into(), "must not contain whitespace"),
            (" ".into(), "must not contain whitespace"),
            ("rw\0".into(), "control character (0x00)"),
            ("r\u{f6}".into(), "non-ASCII character '\u{f6}'"),
            ("rw,\u{441}ync".into(), "non-ASCII"),
            (too_many, "more than 32 export options"),
            (too_long, "the limit is 1024"),
        ];
        for (input, fragment) in &cases {
            match ExportOptions::parse(input) {
                Ok(o) => panic!("{input:?} was accepted as {o:?}"),
                Err(e) => assert!(
                    e.0.contains(fragment),
                    "{input:?}: message {:?} lacks {fragment:?}",
                    e.0
                ),
            }
        }
    }

    #[test]
    fn from_list_rules() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(ExportOptions::from_list(&[]).unwrap().is_empty());
        let o = ExportOptions::from_list(&list(&["sync", "no_auth_nlm", "ro"])).unwrap();
        assert_eq!(o.to_string(), "ro,sync,insecure_locks");
        let cases: &[(&[&str], &str)] = &[
            (
                &["rw,sync"],
                "contains ','; give one export option per entry",
            ),
            (&[""], "must not be empty"),
            (&["rw", "ro"], "'rw' and 'ro' contradict"),
            (&[" rw"], "whitespace"),
            (&["fsid=1"], "managed by nfsprov"),
        ];
        for (items, fragment) in cases {
            let err = ExportOptions::from_list(&list(items)).unwrap_err();
            assert!(err.0.contains(fragment), "{items:?}: {err}");
        }
        let too_many = list(&["ro"; 33]);
        assert!(
            ExportOptions::from_list(&too_many)
                .unwrap_err()
                .0
                .contains("more than 32")
        );
        assert!(ExportOptions::from_list(&list(&["ro"; 32])).is_ok());
    }

    #[test]
    fn accessors() {
        let o = ExportOptions::parse("sync,rw,sync,anonuid=5").unwrap();
        assert!(!o.is_empty());
        assert_eq!(o.len(), 3);
        assert!(o.contains(&ExportOption::Rw));
        assert!(o.contains(&ExportOption::AnonUid(5)));
        assert!(!o.contains(&ExportOption::AnonUid(6)));
        assert!(!o.contains(&ExportOption::Ro));
        let items: Vec<_> = o.iter().cloned().collect();
        assert_eq!(
            items,
            [
                ExportOption::Rw,
                ExportOption::Sync,
                ExportOption::AnonUid(5)
            ]
        );
        assert!(ExportOptions::default().is_empty());
        assert_eq!(ExportOptions::default().to_string(), "");
        let sec = ExportOptions::parse("sec=krb5i:krb5").unwrap();
        let Some(ExportOption::Sec(flavors)) = sec.iter().next() else {
            panic!("no sec");
        };
        assert_eq!(flavors.flavors(), [SecFlavor::Krb5i, SecFlavor::Krb5]);
    }

    #[test]
    fn with_defaults_adds_only_missing_pairs() {
        let cases: &[(&str, &str)] = &[
            ("", "sync,no_subtree_check"),
            ("ro", "ro,sync,no_subtree_check"),
            ("async", "async,no_subtree_check"),
            ("subtree_check", "sync,subtree_check"),
            ("rw,async,subtree_check", "rw,async,subtree_check"),
            ("sync,no_subtree_check", "sync,no_subtree_check"),
        ];
        for (input, want) in cases {
            let o = ExportOptions::parse(input).unwrap().with_defaults();
            assert_eq!(o.to_string(), *want, "{input:?}");
            assert_eq!(o.with_defaults(), o, "idempotent for {input:?}");
        }
    }

    /// An etab line as exportfs writes it, split into its option tokens.
    fn etab_options(line: &str) -> Vec<&str> {
        let open = line.find('(').unwrap();
        line[open + 1..line.len() - 1].split(',').collect()
    }

    #[test]
    fn etab_tokens_match_exportfs_output() {
        let etab = "/srv/a\t10.0.0.1(rw,sync,wdelay,hide,nocrossmnt,secure,root_squash,no_all_squash,no_subtree_check,secure_locks,acl,no_pnfs,anonuid=65534,anongid=65534,sec=sys,rw,root_squash,no_all_squash)";
        let present = etab_options(etab);
        let o = ExportOptions::parse("rw,auth_nlm,sec=sys,anonuid=65534")
            .unwrap()
            .with_defaults();
        let tokens = o.etab_tokens();
        assert_eq!(
            tokens,
            [
                "rw",
                "sync",
                "no_subtree_check",
                "secure_locks",
                "anonuid=65534",
                "sec=sys"
            ]
        );
        for t in &tokens {
            assert!(present.contains(&t.as_str()), "{t} not in etab");
        }
        // A different setting must be detected as missing.
        let ro = ExportOptions::parse("ro").unwrap().etab_tokens();
        assert!(!present.contains(&ro[0].as_str()));
    }

    #[test]
    fn etab_tokens_special_forms() {
        let o = ExportOptions::parse(
            "no_auth_nlm,anonuid=4294967294,anongid=2147483648,sec=krb5p:krb5i",
        )
        .unwrap();
        assert_eq!(
            o.etab_tokens(),
            [
                "insecure_locks",
                "anonuid=-2",
                "anongid=-2147483648",
                "sec=krb5p:krb5i"
            ]
        );
        assert_eq!(
            ExportOption::AnonUid(2_147_483_647).etab_token(),
            "anonuid=2147483647"
        );
        assert!(ExportOptions::default().etab_tokens().is_empty());
    }
}

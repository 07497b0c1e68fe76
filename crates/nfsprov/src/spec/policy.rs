//! The export policy of a root path: what an ordinary user may ask for there (admins are not
//! bound by it).
//!
//! With no policy set (`ExportPolicy::default()`), the safe defaults hold: root squash stays
//! on (`no_root_squash`, `anonuid=0`, `anongid=0` refused), secure ports only (`insecure`
//! refused), no `crossmnt`, `nohide` or `insecure_locks`, and no world-wide client with write
//! access (see [`is_world_wide`]). An admin lists per root path which of those risky options
//! are allowed there, whether world-wide write access is, which clients may be named at all, the
//! largest volume, and whether `subtree_check` is forced.
//!
//! Pure: the datastore reads the policy in the same transaction that records the request and
//! calls [`ExportPolicy::check`].

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::{ClientForm, ClientSpec, ExportOption, ExportOptions, SpecError, gb_amount};

/// Shortest IPv4 prefix that is not world-wide: `/8` is the largest block ever allocated to
/// one organisation; anything shorter spans many.
pub const MIN_IPV4_PREFIX: u8 = 8;
/// Shortest IPv6 prefix that is not world-wide: `/32` is a regional registry's usual
/// allocation to one provider.
pub const MIN_IPV6_PREFIX: u8 = 32;

/// An option an ordinary user may give only where the root path's policy allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RiskyOption {
    /// `no_root_squash`: the client's root is root on the server.
    NoRootSquash,
    /// `insecure`: requests from unprivileged ports (any local user of a client).
    Insecure,
    /// `anonuid=0`: squashed users become root.
    AnonUidRoot,
    /// `anongid=0`: squashed users get group root.
    AnonGidRoot,
    /// `crossmnt`: file systems mounted below the export are exported too.
    CrossMnt,
    /// `nohide`: same, for file systems exported on their own.
    NoHide,
    /// `insecure_locks`: lock requests without credentials checks.
    InsecureLocks,
}

impl RiskyOption {
    /// Every risky option, in the order they are checked.
    pub const ALL: [RiskyOption; 7] = [
        RiskyOption::NoRootSquash,
        RiskyOption::Insecure,
        RiskyOption::AnonUidRoot,
        RiskyOption::AnonGidRoot,
        RiskyOption::CrossMnt,
        RiskyOption::NoHide,
        RiskyOption::InsecureLocks,
    ];

    /// The exports(5) text, as listed in a policy's `allowed_options`.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskyOption::NoRootSquash => "no_root_squash",
            RiskyOption::Insecure => "insecure",
            RiskyOption::AnonUidRoot => "anonuid=0",
            RiskyOption::AnonGidRoot => "anongid=0",
            RiskyOption::CrossMnt => "crossmnt",
            RiskyOption::NoHide => "nohide",
            RiskyOption::InsecureLocks => "insecure_locks",
        }
    }

    fn parse(s: &str) -> Option<RiskyOption> {
        RiskyOption::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The option in a set that this is, if any.
    fn matches(self, option: &ExportOption) -> bool {
        use ExportOption as O;
        matches!(
            (self, option),
            (RiskyOption::NoRootSquash, O::NoRootSquash)
                | (RiskyOption::Insecure, O::Insecure)
                | (RiskyOption::AnonUidRoot, O::AnonUid(0))
                | (RiskyOption::AnonGidRoot, O::AnonGid(0))
                | (RiskyOption::CrossMnt, O::CrossMnt)
                | (RiskyOption::NoHide, O::NoHide)
                | (RiskyOption::InsecureLocks, O::InsecureLocks)
        )
    }
}

/// The stored and API form of a policy (JSON). Every field may be left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportPolicyDoc {
    /// Clients users may name; empty: any client (the world-wide rule still applies).
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    /// Risky options allowed here (`no_root_squash`, `insecure`, `anonuid=0`, ...).
    #[serde(default)]
    pub allowed_options: Vec<String>,
    /// Allow `*` and world-wide networks with write access.
    #[serde(default)]
    pub world_writable: bool,
    /// Largest volume a user may create here.
    #[serde(default)]
    pub max_volume_gb: Option<i64>,
    /// Export every volume with `subtree_check` (users may not give `no_subtree_check`).
    #[serde(default)]
    pub subtree_check: bool,
}

/// A policy field that is wrong: its name within the policy (`allowed_clients[1]`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFieldError {
    pub field: String,
    pub message: String,
}

/// What part of a request breaks the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Culprit {
    /// Client `index`'s host.
    ClientHost(usize),
    /// Client `index`'s options.
    ClientOptions(usize),
    /// The volume's size.
    Size,
}

/// Why a request breaks the policy: a sentence naming the option or client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub culprit: Culprit,
    pub message: String,
}

/// A validated export policy (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportPolicy {
    allowed_clients: Vec<ClientSpec>,
    allowed_options: Vec<RiskyOption>,
    world_writable: bool,
    max_volume_gb: Option<i64>,
    subtree_check: bool,
}

impl ExportPolicy {
    /// Everything allowed: every risky option and world-wide write access (for root paths
    /// that serve trusted hosts only, and for tests of other things).
    pub fn permissive() -> ExportPolicy {
        ExportPolicy {
            allowed_options: RiskyOption::ALL.to_vec(),
            world_writable: true,
            ..ExportPolicy::default()
        }
    }

    /// Validates a policy document.
    pub fn from_doc(doc: &ExportPolicyDoc) -> Result<ExportPolicy, PolicyFieldError> {
        let err = |field: String, message: String| PolicyFieldError { field, message };
        if doc.allowed_clients.len() > super::limits().max_clients {
            return Err(err(
                "allowed_clients".into(),
                format!("list at most {} clients", super::limits().max_clients),
            ));
        }
        let mut allowed_clients = Vec::with_capacity(doc.allowed_clients.len());
        for (i, c) in doc.allowed_clients.iter().enumerate() {
            let spec =
                ClientSpec::parse(c).map_err(|e| err(format!("allowed_clients[{i}]"), e.0))?;
            if !allowed_clients.contains(&spec) {
                allowed_clients.push(spec);
            }
        }
        let mut allowed_options = Vec::new();
        for (i, o) in doc.allowed_options.iter().enumerate() {
            let Some(r) = RiskyOption::parse(o) else {
                let names: Vec<&str> = RiskyOption::ALL.iter().map(|r| r.as_str()).collect();
                return Err(err(
                    format!("allowed_options[{i}]"),
                    format!(
                        "'{o}' is not a risky option; list any of {} (other options are always allowed)",
                        names.join(", ")
                    ),
                ));
            };
            allowed_options.push(r);
        }
        allowed_options.sort();
        allowed_options.dedup();
        if let Some(max) = doc.max_volume_gb {
            gb_amount(max, 1).map_err(|SpecError(m)| err("max_volume_gb".into(), m))?;
        }
        Ok(ExportPolicy {
            allowed_clients,
            allowed_options,
            world_writable: doc.world_writable,
            max_volume_gb: doc.max_volume_gb,
            subtree_check: doc.subtree_check,
        })
    }

    /// The document form (canonical: clients as exports(5) writes them, options sorted).
    pub fn to_doc(&self) -> ExportPolicyDoc {
        ExportPolicyDoc {
            allowed_clients: self.allowed_clients.iter().map(|c| c.to_string()).collect(),
            allowed_options: self
                .allowed_options
                .iter()
                .map(|r| r.as_str().to_string())
                .collect(),
            world_writable: self.world_writable,
            max_volume_gb: self.max_volume_gb,
            subtree_check: self.subtree_check,
        }
    }

    /// Parses the stored JSON (written by [`to_json`](Self::to_json)).
    pub fn from_json(s: &str) -> Result<ExportPolicy, String> {
        let doc: ExportPolicyDoc = serde_json::from_str(s).map_err(|e| e.to_string())?;
        ExportPolicy::from_doc(&doc).map_err(|e| format!("{}: {}", e.field, e.message))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.to_doc()).expect("a policy serialises")
    }

    /// Whether every export of the root path gets `subtree_check`.
    pub fn subtree_check(&self) -> bool {
        self.subtree_check
    }

    /// Checks an ordinary user's request: `clients` as (host, options) and the size, when the
    /// request sets one. The first violation found, in request order, is returned.
    pub fn check<'a>(
        &self,
        clients: impl IntoIterator<Item = (&'a ClientSpec, &'a ExportOptions)>,
        size_gb: Option<i64>,
    ) -> Result<(), Violation> {
        for (i, (host, options)) in clients.into_iter().enumerate() {
            self.check_client(i, host, options)?;
        }
        if let (Some(max), Some(size)) = (self.max_volume_gb, size_gb)
            && size > max
        {
            return Err(Violation {
                culprit: Culprit::Size,
                message: format!(
                    "size_gb {size} is over this root path's limit of {max} GB per volume (ask an administrator)"
                ),
            });
        }
        Ok(())
    }

    fn check_client(
        &self,
        i: usize,
        host: &ClientSpec,
        options: &ExportOptions,
    ) -> Result<(), Violation> {
        if !self.allowed_clients.is_empty() && !self.allowed_clients.iter().any(|a| covers(a, host))
        {
            let list: Vec<String> = self.allowed_clients.iter().map(|c| c.to_string()).collect();
            return Err(Violation {
                culprit: Culprit::ClientHost(i),
                message: format!(
                    "client {host} is not allowed on this root path; its policy allows only {}",
                    list.join(", ")
                ),
            });
        }
        for risky in RiskyOption::ALL {
            if !self.allowed_options.contains(&risky) && options.iter().any(|o| risky.matches(o)) {
                return Err(Violation {
                    culprit: Culprit::ClientOptions(i),
                    message: format!(
                        "option {} is not allowed on this root path (for client {host}); ask an administrator to allow it in the root path's export policy",
                        risky.as_str()
                    ),
                });
            }
        }
        if self.subtree_check && options.contains(&ExportOption::NoSubtreeCheck) {
            return Err(Violation {
                culprit: Culprit::ClientOptions(i),
                message: format!(
                    "option no_subtree_check is not allowed on this root path (for client {host}): its policy forces subtree_check"
                ),
            });
        }
        if !self.world_writable && options.contains(&ExportOption::Rw) && is_world_wide(host) {
            return Err(Violation {
                culprit: Culprit::ClientHost(i),
                message: format!(
                    "client {host} is world-wide and may not have write access (rw) on this root path; name your clients' network (IPv4 /{MIN_IPV4_PREFIX} or longer, IPv6 /{MIN_IPV6_PREFIX} or longer), or export it ro"
                ),
            });
        }
        Ok(())
    }

    /// `options` as the root path exports them: with `subtree_check` added when the policy
    /// forces it and neither it nor `no_subtree_check` (an admin's choice) was given.
    pub fn apply(&self, options: &ExportOptions) -> ExportOptions {
        if !self.subtree_check
            || options.contains(&ExportOption::SubtreeCheck)
            || options.contains(&ExportOption::NoSubtreeCheck)
        {
            return options.clone();
        }
        let mut items: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        items.push(ExportOption::SubtreeCheck.to_string());
        ExportOptions::from_list(&items).expect("adding subtree_check to a valid set is valid")
    }
}

/// True for a client that stands for (nearly) everyone: `*`, a name pattern of wildcards only
/// (`*.*`, `?*`), an IPv4 network shorter than /8, an IPv6 network shorter than /32, or an
/// IPv6 network that holds every IPv4-mapped address of an IPv4 network shorter than /8.
pub fn is_world_wide(client: &ClientSpec) -> bool {
    match client.form() {
        ClientForm::Anyone => true,
        ClientForm::Wildcard(w) => w.chars().all(|c| matches!(c, '*' | '?' | '.')),
        ClientForm::Ipv4Net(_, p) => p < MIN_IPV4_PREFIX,
        ClientForm::Ipv6Net(a, p) => {
            if p < MIN_IPV6_PREFIX {
                return true;
            }
            // ::ffff:0:0/96 holds the IPv4-mapped addresses.
            let mapped = Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0);
            let outer = p.min(96);
            mask6(a, outer) == mask6(mapped, outer) && p.saturating_sub(96) < MIN_IPV4_PREFIX
        }
        ClientForm::Host(_)
        | ClientForm::Ipv4(_)
        | ClientForm::Ipv6(_)
        | ClientForm::Netgroup(_) => false,
    }
}

fn mask4(a: Ipv4Addr, p: u8) -> u32 {
    let bits = u32::from(a);
    if p == 0 {
        0
    } else {
        bits & (u32::MAX << (32 - u32::from(p)))
    }
}

fn mask6(a: Ipv6Addr, p: u8) -> u128 {
    let bits = u128::from(a);
    if p == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(p)))
    }
}

/// True if the allowed entry `allowed` takes in every host of `client`: an address or
/// network inside an allowed network or equal to an allowed address; `*` takes in anything;
/// names, patterns and netgroups only themselves.
fn covers(allowed: &ClientSpec, client: &ClientSpec) -> bool {
    let v4 = |f: ClientForm<'_>| match f {
        ClientForm::Ipv4(a) => Some((a, 32)),
        ClientForm::Ipv4Net(a, p) => Some((a, p)),
        _ => None,
    };
    let v6 = |f: ClientForm<'_>| match f {
        ClientForm::Ipv6(a) => Some((a, 128)),
        ClientForm::Ipv6Net(a, p) => Some((a, p)),
        _ => None,
    };
    if allowed.form() == ClientForm::Anyone {
        return true;
    }
    if let (Some((na, pa)), Some((nc, pc))) = (v4(allowed.form()), v4(client.form())) {
        return pc >= pa && mask4(nc, pa) == mask4(na, pa);
    }
    if let (Some((na, pa)), Some((nc, pc))) = (v6(allowed.form()), v6(client.form())) {
        return pc >= pa && mask6(nc, pa) == mask6(na, pa);
    }
    allowed == client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(host: &str, options: &str) -> (ClientSpec, ExportOptions) {
        (
            ClientSpec::parse(host).unwrap(),
            ExportOptions::parse(options).unwrap(),
        )
    }

    fn check(
        policy: &ExportPolicy,
        rules: &[(&str, &str)],
        size: Option<i64>,
    ) -> Result<(), Violation> {
        let parsed: Vec<_> = rules.iter().map(|(h, o)| client(h, o)).collect();
        policy.check(parsed.iter().map(|(h, o)| (h, o)), size)
    }

    fn policy(json: &str) -> ExportPolicy {
        ExportPolicy::from_json(json).unwrap()
    }

    /// The defaults: each row is refused, naming the culprit and the word a user must see.
    #[test]
    fn defaults_refuse_each_risky_request() {
        let p = ExportPolicy::default();
        let cases: &[(&str, &str, Culprit, &str)] = &[
            (
                "10.0.0.0/24",
                "rw,no_root_squash",
                Culprit::ClientOptions(0),
                "no_root_squash",
            ),
            (
                "10.0.0.1",
                "ro,insecure",
                Culprit::ClientOptions(0),
                "insecure",
            ),
            (
                "10.0.0.1",
                "rw,anonuid=0",
                Culprit::ClientOptions(0),
                "anonuid=0",
            ),
            (
                "10.0.0.1",
                "rw,anongid=0",
                Culprit::ClientOptions(0),
                "anongid=0",
            ),
            (
                "10.0.0.1",
                "rw,crossmnt",
                Culprit::ClientOptions(0),
                "crossmnt",
            ),
            ("10.0.0.1", "rw,nohide", Culprit::ClientOptions(0), "nohide"),
            (
                "10.0.0.1",
                "rw,insecure_locks",
                Culprit::ClientOptions(0),
                "insecure_locks",
            ),
            ("*", "rw", Culprit::ClientHost(0), "client * is world-wide"),
            ("*.*", "rw,sync", Culprit::ClientHost(0), "world-wide"),
            ("0.0.0.0/0", "rw", Culprit::ClientHost(0), "world-wide"),
            ("0.0.0.0/1", "rw", Culprit::ClientHost(0), "world-wide"),
            ("10.0.0.0/7", "rw", Culprit::ClientHost(0), "world-wide"),
            ("::/0", "rw", Culprit::ClientHost(0), "world-wide"),
            ("2000::/3", "rw", Culprit::ClientHost(0), "world-wide"),
            ("2001:db8::/31", "rw", Culprit::ClientHost(0), "world-wide"),
            ("::ffff:0:0/96", "rw", Culprit::ClientHost(0), "world-wide"),
            (
                "::ffff:0.0.0.0/100",
                "rw",
                Culprit::ClientHost(0),
                "world-wide",
            ),
            ("::/64", "rw", Culprit::ClientHost(0), "world-wide"),
        ];
        for (host, options, culprit, word) in cases {
            let v = check(&p, &[(host, options)], None).expect_err(host);
            assert_eq!(v.culprit, *culprit, "{host} {options}");
            assert!(v.message.contains(word), "{host} {options}: {}", v.message);
        }
        // The second client is named by its index.
        let v = check(
            &p,
            &[("10.0.0.1", "rw"), ("10.0.0.2", "rw,no_root_squash")],
            None,
        )
        .unwrap_err();
        assert_eq!(v.culprit, Culprit::ClientOptions(1));
    }

    #[test]
    fn defaults_accept_ordinary_requests() {
        let p = ExportPolicy::default();
        for (host, options) in [
            ("10.0.0.0/8", "rw,sync"),
            ("10.0.0.1", "rw,root_squash,secure"),
            ("*", "ro"),
            ("0.0.0.0/0", "ro,sync"),
            ("2001:db8::/32", "rw"),
            ("::ffff:10.0.0.0/104", "rw"),
            ("*.example.com", "rw,all_squash,anonuid=65534"),
            ("host.example", "rw,anonuid=1000,anongid=1000"),
            (
                "@trusted",
                "rw,no_subtree_check,nocrossmnt,hide,secure_locks",
            ),
            ("fd00::1", "rw,sec=krb5p"),
        ] {
            assert_eq!(
                check(&p, &[(host, options)], Some(1 << 20)),
                Ok(()),
                "{host} {options}"
            );
        }
    }

    #[test]
    fn allowed_options_and_world_writable_lift_the_defaults_one_by_one() {
        let p = policy(r#"{"allowed_options": ["no_root_squash", "anonuid=0"]}"#);
        assert_eq!(
            check(&p, &[("10.0.0.1", "rw,no_root_squash,anonuid=0")], None),
            Ok(())
        );
        let v = check(&p, &[("10.0.0.1", "rw,no_root_squash,insecure")], None).unwrap_err();
        assert!(v.message.contains("option insecure"), "{}", v.message);
        let v = check(&p, &[("*", "rw")], None).unwrap_err();
        assert_eq!(v.culprit, Culprit::ClientHost(0));
        let p = policy(r#"{"world_writable": true}"#);
        assert_eq!(check(&p, &[("*", "rw"), ("0.0.0.0/0", "rw")], None), Ok(()));
        let p = ExportPolicy::permissive();
        assert_eq!(
            check(
                &p,
                &[(
                    "*",
                    "rw,no_root_squash,insecure,anonuid=0,anongid=0,crossmnt,insecure_locks"
                )],
                None
            ),
            Ok(())
        );
        assert_eq!(check(&p, &[("::/0", "rw,nohide")], None), Ok(()));
    }

    #[test]
    fn allowed_clients_take_in_addresses_and_networks_inside_and_names_equal() {
        let p = policy(
            r#"{"allowed_clients": ["10.1.0.0/16", "fd00:1::/48", "@lab", "nfs.example", "*.lab.example"]}"#,
        );
        for ok in [
            "10.1.0.0/16",
            "10.1.2.0/24",
            "10.1.2.3",
            "10.1.255.255/32",
            "fd00:1::5",
            "fd00:1:0:1::/64",
            "@lab",
            "NFS.example",
            "*.lab.example",
        ] {
            assert_eq!(check(&p, &[(ok, "rw")], None), Ok(()), "{ok}");
        }
        for bad in [
            "10.0.0.0/8",
            "10.2.0.1",
            "10.1.0.0/15",
            "fd00:2::1",
            "fd00::/16",
            "@other",
            "a.lab.example",
            "*",
            "other.example",
        ] {
            let v = check(&p, &[(bad, "ro")], None).expect_err(bad);
            assert_eq!(v.culprit, Culprit::ClientHost(0), "{bad}");
            assert!(
                v.message.contains("is not allowed on this root path"),
                "{}",
                v.message
            );
        }
        // `*` among the allowed clients takes in anyone (the world-wide rule still applies).
        let p = policy(r#"{"allowed_clients": ["*"]}"#);
        assert_eq!(check(&p, &[("@x", "rw"), ("*", "ro")], None), Ok(()));
        assert!(check(&p, &[("*", "rw")], None).is_err());
    }

    #[test]
    fn max_volume_size_and_forced_subtree_check() {
        let p = policy(r#"{"max_volume_gb": 10, "subtree_check": true}"#);
        assert_eq!(check(&p, &[("10.0.0.1", "rw")], Some(10)), Ok(()));
        assert_eq!(check(&p, &[("10.0.0.1", "rw")], None), Ok(()));
        let v = check(&p, &[("10.0.0.1", "rw")], Some(11)).unwrap_err();
        assert_eq!(v.culprit, Culprit::Size);
        assert!(v.message.contains("10 GB"), "{}", v.message);
        let v = check(&p, &[("10.0.0.1", "rw,no_subtree_check")], None).unwrap_err();
        assert_eq!(v.culprit, Culprit::ClientOptions(0));
        assert!(v.message.contains("no_subtree_check"), "{}", v.message);
        let opts = |s: &str| ExportOptions::parse(s).unwrap();
        assert_eq!(p.apply(&opts("rw")).to_string(), "rw,subtree_check");
        assert_eq!(
            p.apply(&opts("rw,no_subtree_check")).to_string(),
            "rw,no_subtree_check"
        );
        assert_eq!(ExportPolicy::default().apply(&opts("rw")).to_string(), "rw");
    }

    #[test]
    fn documents_are_validated_and_round_trip() {
        let p = policy(
            r#"{"allowed_clients": ["10.1.0.0/16", "HOST.example"], "allowed_options": ["insecure", "no_root_squash", "insecure"], "world_writable": true, "max_volume_gb": 5, "subtree_check": true}"#,
        );
        assert_eq!(ExportPolicy::from_json(&p.to_json()).unwrap(), p);
        assert_eq!(p.to_doc().allowed_options, ["no_root_squash", "insecure"]);
        assert_eq!(p.to_doc().allowed_clients, ["10.1.0.0/16", "host.example"]);
        assert_eq!(
            ExportPolicy::from_json("{}").unwrap(),
            ExportPolicy::default()
        );
        let bad = |json: &str, field: &str| {
            let doc: ExportPolicyDoc = serde_json::from_str(json).unwrap();
            let e = ExportPolicy::from_doc(&doc).unwrap_err();
            assert_eq!(e.field, field, "{json}: {}", e.message);
        };
        bad(
            r#"{"allowed_clients": ["10.0.0.1", "a b"]}"#,
            "allowed_clients[1]",
        );
        bad(r#"{"allowed_options": ["rw"]}"#, "allowed_options[0]");
        bad(
            r#"{"allowed_options": ["anonuid=1"]}"#,
            "allowed_options[0]",
        );
        bad(r#"{"max_volume_gb": 0}"#, "max_volume_gb");
        bad(r#"{"max_volume_gb": -3}"#, "max_volume_gb");
        assert!(serde_json::from_str::<ExportPolicyDoc>(r#"{"subtree": true}"#).is_err());
    }
}

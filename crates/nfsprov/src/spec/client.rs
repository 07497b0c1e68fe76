//! One NFS client in exports(5) "machine name formats".

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::{SpecError, describe_char, refuse};

/// Longest client string accepted, in bytes.
pub(super) const MAX_LEN: usize = 255;
/// Longest host name (RFC 1123), in bytes.
const MAX_HOST_LEN: usize = 253;
/// Longest host name label, in bytes.
const MAX_LABEL_LEN: usize = 63;
/// Longest netgroup name (without the `@`), in bytes.
const MAX_NETGROUP_LEN: usize = 64;

/// One client of an export, as it appears before `(options)` in an exports file.
///
/// Built only by [`ClientSpec::parse`], so it never contains whitespace, quotes,
/// parentheses or other characters that could break an exports line or a shell
/// command. [`Display`](fmt::Display) writes the canonical exports(5) form and
/// [`kind`](ClientSpec::kind) tells which format it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientSpec(Kind);

/// The exports(5) machine name formats. Private so every value goes through `parse`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    /// `*`: any host.
    Anyone,
    /// A single host name, lowercased.
    Host(String),
    /// A host name pattern with `*` or `?`, lowercased.
    Wildcard(String),
    /// A single IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv4 network: address as given and prefix length.
    Ipv4Net(Ipv4Addr, u8),
    /// A single IPv6 address.
    Ipv6(Ipv6Addr),
    /// An IPv6 network: address as given and prefix length.
    Ipv6Net(Ipv6Addr, u8),
    /// An NIS netgroup name, without the leading `@`.
    Netgroup(String),
}

impl ClientSpec {
    /// Parses one client: `*`, a host name, a wildcard pattern, an IPv4 or IPv6 address
    /// or network, or `@netgroup`.
    pub fn parse(s: &str) -> Result<ClientSpec, SpecError> {
        if s.is_empty() {
            refuse!(
                "A client must not be empty; give a host name, an IP address, a network such as 10.0.0.0/24, @netgroup or *."
            );
        }
        if s.len() > MAX_LEN {
            refuse!(
                "The client is {} characters long; the limit is {MAX_LEN}.",
                s.len()
            );
        }
        check_chars(s)?;
        let kind = if s == "*" {
            Kind::Anyone
        } else if let Some(name) = s.strip_prefix('@') {
            Kind::Netgroup(parse_netgroup(name)?)
        } else if s.contains(':') {
            parse_ipv6(s)?
        } else if s.contains('/') {
            parse_ipv4_net(s)?
        } else if s.contains(['*', '?']) {
            Kind::Wildcard(parse_wildcard(s)?)
        } else if s
            .rsplit('.')
            .next()
            .is_some_and(|last| !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
        {
            // A name ending in a numeric label is meant as an address (RFC 1123 2.1).
            Kind::Ipv4(parse_ipv4(s)?)
        } else {
            check_host(s, false)?;
            Kind::Host(s.to_ascii_lowercase())
        };
        Ok(ClientSpec(kind))
    }

    /// Which exports(5) format this is: "anyone", "host", "wildcard", "ipv4",
    /// "ipv4-net", "ipv6", "ipv6-net" or "netgroup".
    pub fn kind(&self) -> &'static str {
        match self.0 {
            Kind::Anyone => "anyone",
            Kind::Host(_) => "host",
            Kind::Wildcard(_) => "wildcard",
            Kind::Ipv4(_) => "ipv4",
            Kind::Ipv4Net(..) => "ipv4-net",
            Kind::Ipv6(_) => "ipv6",
            Kind::Ipv6Net(..) => "ipv6-net",
            Kind::Netgroup(_) => "netgroup",
        }
    }
}

/// A read-only view of a [`ClientSpec`]'s format and parts, for backends that must write a
/// client in another syntax (nfs-ganesha's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientForm<'a> {
    Anyone,
    Host(&'a str),
    Wildcard(&'a str),
    Ipv4(Ipv4Addr),
    Ipv4Net(Ipv4Addr, u8),
    Ipv6(Ipv6Addr),
    Ipv6Net(Ipv6Addr, u8),
    /// The name without the leading `@`.
    Netgroup(&'a str),
}

impl ClientSpec {
    /// The format and its parts (lowercased names, addresses as given).
    pub fn form(&self) -> ClientForm<'_> {
        match &self.0 {
            Kind::Anyone => ClientForm::Anyone,
            Kind::Host(h) => ClientForm::Host(h),
            Kind::Wildcard(w) => ClientForm::Wildcard(w),
            Kind::Ipv4(a) => ClientForm::Ipv4(*a),
            Kind::Ipv4Net(a, p) => ClientForm::Ipv4Net(*a, *p),
            Kind::Ipv6(a) => ClientForm::Ipv6(*a),
            Kind::Ipv6Net(a, p) => ClientForm::Ipv6Net(*a, *p),
            Kind::Netgroup(n) => ClientForm::Netgroup(n),
        }
    }
}

impl fmt::Display for ClientSpec {
    /// The exact text that goes into an exports file before `(options)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Anyone => f.write_str("*"),
            Kind::Host(name) | Kind::Wildcard(name) => f.write_str(name),
            Kind::Ipv4(addr) => write!(f, "{addr}"),
            Kind::Ipv4Net(addr, prefix) => write!(f, "{addr}/{prefix}"),
            // std writes RFC 5952 form: compressed, lowercase.
            Kind::Ipv6(addr) => write!(f, "{addr}"),
            Kind::Ipv6Net(addr, prefix) => write!(f, "{addr}/{prefix}"),
            Kind::Netgroup(name) => write!(f, "@{name}"),
        }
    }
}

impl FromStr for ClientSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ClientSpec::parse(s)
    }
}

/// Refuses any character that no client format uses, with a hint for the likely mistake.
fn check_chars(s: &str) -> Result<(), SpecError> {
    for c in s.chars() {
        match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '-' | '_' | ':' | '*' | '?' | '@' | '/' => {}
            '(' | ')' => refuse!(
                "The client contains '{c}'; export options are set separately, not as part of the client."
            ),
            ',' => refuse!("The client contains ','; give one client at a time."),
            '%' => {
                refuse!("The client contains '%'; IPv6 zone ids such as %eth0 are not supported.")
            }
            ' ' => refuse!(
                "The client contains ' ' which is not allowed; give one client at a time, without spaces."
            ),
            _ => refuse!(
                "The client contains {} which is not allowed in a host name, address or netgroup.",
                describe_char(c)
            ),
        }
    }
    Ok(())
}

/// Parses a dotted-quad IPv4 address, refusing leading zeros (`01.2.3.4`) because some
/// resolvers read them as octal.
fn parse_ipv4(s: &str) -> Result<Ipv4Addr, SpecError> {
    if let Some(octet) = s
        .split('.')
        .find(|o| o.len() > 1 && o.starts_with('0') && o.bytes().all(|b| b.is_ascii_digit()))
    {
        refuse!(
            "'{s}' is not a valid IPv4 address: '{octet}' has a leading zero, which some tools read as octal."
        );
    }
    match s.parse::<Ipv4Addr>() {
        Ok(addr) => Ok(addr),
        Err(_) => refuse!("'{s}' is not a valid IPv4 address."),
    }
}

/// Parses a prefix length `0..=max` written in plain decimal.
fn parse_prefix(p: &str, max: u8) -> Result<u8, SpecError> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        refuse!("'/{p}' is not a prefix length; give a number from 0 to {max}.");
    }
    if p.len() > 1 && p.starts_with('0') {
        refuse!(
            "The prefix length '{p}' has a leading zero; write it as a plain number from 0 to {max}."
        );
    }
    match p.parse::<u8>() {
        Ok(n) if n <= max => Ok(n),
        _ => refuse!("The prefix length {p} is out of range 0-{max}."),
    }
}

/// Parses `addr/prefix` or `addr/dotted-netmask` (contiguous masks only).
fn parse_ipv4_net(s: &str) -> Result<Kind, SpecError> {
    let (addr, mask) = s.split_once('/').unwrap_or((s, ""));
    if addr.is_empty() {
        refuse!("A network needs an address before '/', such as 10.0.0.0/24.");
    }
    let addr = parse_ipv4(addr)?;
    let prefix = if mask.contains('.') {
        let bits = u32::from(parse_ipv4(mask)?);
        if bits.leading_ones() + bits.trailing_zeros() != 32 {
            refuse!(
                "The netmask {mask} is not contiguous; use a prefix length such as /24 instead."
            );
        }
        // At most 32, so the cast is lossless.
        bits.leading_ones() as u8
    } else {
        parse_prefix(mask, 32)?
    };
    Ok(Kind::Ipv4Net(addr, prefix))
}

/// Parses an IPv6 address, optionally with `/prefix`.
fn parse_ipv6(s: &str) -> Result<Kind, SpecError> {
    let (addr_str, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let Ok(addr) = addr_str.parse::<Ipv6Addr>() else {
        refuse!("'{addr_str}' is not a valid IPv6 address.");
    };
    Ok(match prefix {
        Some(p) => Kind::Ipv6Net(addr, parse_prefix(p, 128)?),
        None => Kind::Ipv6(addr),
    })
}

/// Checks RFC 1123 host name syntax; with `wildcard`, labels may also hold `*` and `?`.
fn check_host(s: &str, wildcard: bool) -> Result<(), SpecError> {
    if s.len() > MAX_HOST_LEN {
        refuse!(
            "The host name is {} characters long; the limit is {MAX_HOST_LEN}.",
            s.len()
        );
    }
    for label in s.split('.') {
        if label.is_empty() {
            refuse!(
                "The host name '{s}' has an empty label; check for doubled, leading or trailing dots."
            );
        }
        if let Some(c) = label.chars().find(|&c| {
            !(c.is_ascii_alphanumeric() || c == '-' || (wildcard && matches!(c, '*' | '?')))
        }) {
            refuse!(
                "The host name '{s}' contains {} which is not allowed; use letters, digits, '-' and '.'.",
                describe_char(c)
            );
        }
        if label.len() > MAX_LABEL_LEN {
            refuse!(
                "The host name '{s}' has a label of {} characters; the limit is {MAX_LABEL_LEN}.",
                label.len()
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            refuse!("The host name '{s}' has a label '{label}' that starts or ends with '-'.");
        }
    }
    Ok(())
}

/// Parses a host name pattern such as `*.example.com` or `node?.lab`, lowercased.
fn parse_wildcard(s: &str) -> Result<String, SpecError> {
    check_host(s, true)?;
    let address_like = s.split('.').all(|l| {
        l.bytes()
            .all(|b| b.is_ascii_digit() || b == b'*' || b == b'?')
    });
    if address_like && s.bytes().any(|b| b.is_ascii_digit()) {
        refuse!(
            "Wildcards do not work on IP addresses ('{s}'); use a network such as 10.0.0.0/24 instead."
        );
    }
    Ok(s.to_ascii_lowercase())
}

/// Parses a netgroup name (after the `@`); kept as given since netgroups are case-sensitive.
fn parse_netgroup(name: &str) -> Result<String, SpecError> {
    if name.is_empty() {
        refuse!("A netgroup needs a name after '@', such as @trusted-hosts.");
    }
    if name.len() > MAX_NETGROUP_LEN {
        refuse!(
            "The netgroup name is {} characters long; the limit is {MAX_NETGROUP_LEN}.",
            name.len()
        );
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        refuse!(
            "The netgroup name contains {} which is not allowed; use letters, digits, '_', '-' and '.'.",
            describe_char(c)
        );
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        refuse!("The netgroup name must start with a letter or digit.");
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, canonical Display, kind)
    const VALID: &[(&str, &str, &str)] = &[
        ("*", "*", "anyone"),
        ("localhost", "localhost", "host"),
        ("host.example.com", "host.example.com", "host"),
        ("HOST.Example.COM", "host.example.com", "host"),
        ("a-b.c-d", "a-b.c-d", "host"),
        ("1host.example", "1host.example", "host"),
        ("host1", "host1", "host"),
        ("x", "x", "host"),
        ("123abc", "123abc", "host"),
        ("a.b2", "a.b2", "host"),
        ("*.example.com", "*.example.com", "wildcard"),
        ("*.EXAMPLE.com", "*.example.com", "wildcard"),
        ("node?.lab", "node?.lab", "wildcard"),
        ("node*", "node*", "wildcard"),
        ("web-*.prod.example", "web-*.prod.example", "wildcard"),
        ("*.*", "*.*", "wildcard"),
        ("**", "**", "wildcard"),
        ("?", "?", "wildcard"),
        ("10.0.0.1", "10.0.0.1", "ipv4"),
        ("0.0.0.0", "0.0.0.0", "ipv4"),
        ("255.255.255.255", "255.255.255.255", "ipv4"),
        ("192.168.0.10", "192.168.0.10", "ipv4"),
        ("10.0.0.0/24", "10.0.0.0/24", "ipv4-net"),
        ("10.0.0.5/24", "10.0.0.5/24", "ipv4-net"),
        ("0.0.0.0/0", "0.0.0.0/0", "ipv4-net"),
        ("10.1.2.3/32", "10.1.2.3/32", "ipv4-net"),
        ("10.0.0.0/255.255.255.0", "10.0.0.0/24", "ipv4-net"),
        ("10.0.0.0/255.255.252.0", "10.0.0.0/22", "ipv4-net"),
        ("10.0.0.0/255.255.255.255", "10.0.0.0/32", "ipv4-net"),
        ("0.0.0.0/0.0.0.0", "0.0.0.0/0", "ipv4-net"),
        ("172.16.0.0/255.240.0.0", "172.16.0.0/12", "ipv4-net"),
        ("::1", "::1", "ipv6"),
        ("2001:DB8::1", "2001:db8::1", "ipv6"),
        (
            "2001:0db8:0000:0000:0000:0000:0000:0001",
            "2001:db8::1",
            "ipv6",
        ),
        ("fe80::1:2", "fe80::1:2", "ipv6"),
        ("::ffff:10.0.0.1", "::ffff:10.0.0.1", "ipv6"),
        ("2001:db8::/32", "2001:db8::/32", "ipv6-net"),
        ("2001:DB8:0:0::/48", "2001:db8::/48", "ipv6-net"),
        ("::/0", "::/0", "ipv6-net"),
        ("fd00::/128", "fd00::/128", "ipv6-net"),
        ("@trusted", "@trusted", "netgroup"),
        ("@Trusted_Hosts.v2-a", "@Trusted_Hosts.v2-a", "netgroup"),
        ("@0group", "@0group", "netgroup"),
    ];

    #[test]
    fn valid_clients_have_canonical_display_and_kind() {
        for (input, canon, kind) in VALID {
            let c = ClientSpec::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(c.to_string(), *canon, "{input:?}");
            assert_eq!(c.kind(), *kind, "{input:?}");
            assert_eq!(input.parse::<ClientSpec>().unwrap(), c);
        }
    }

    #[test]
    fn forms_expose_the_parts_backends_write() {
        use std::net::{Ipv4Addr, Ipv6Addr};
        let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let table: &[(&str, ClientForm<'_>)] = &[
            ("*", ClientForm::Anyone),
            ("Host1.Example.COM", ClientForm::Host("host1.example.com")),
            ("*.EXAMPLE.com", ClientForm::Wildcard("*.example.com")),
            ("node?.lab", ClientForm::Wildcard("node?.lab")),
            ("10.0.0.1", ClientForm::Ipv4(v4("10.0.0.1"))),
            ("10.0.0.5/24", ClientForm::Ipv4Net(v4("10.0.0.5"), 24)),
            (
                "172.16.0.0/255.240.0.0",
                ClientForm::Ipv4Net(v4("172.16.0.0"), 12),
            ),
            ("2001:DB8::1", ClientForm::Ipv6(v6("2001:db8::1"))),
            ("2001:db8::/32", ClientForm::Ipv6Net(v6("2001:db8::"), 32)),
            ("@trusted", ClientForm::Netgroup("trusted")),
        ];
        for (input, form) in table {
            let c = ClientSpec::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(c.form(), *form, "{input:?}");
        }
    }

    #[test]
    fn round_trip() {
        for (input, _, _) in VALID {
            let c = ClientSpec::parse(input).unwrap();
            let again = ClientSpec::parse(&c.to_string()).unwrap();
            assert_eq!(again, c, "{input:?}");
            assert_eq!(again.to_string(), c.to_string());
        }
    }

    #[test]
    fn length_limits() {
        let label63 = "a".repeat(63);
        // 63*4 + 3 dots = 255 > 253; 63*3 + 3 dots + 61 = 253.
        let host253 = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
        assert_eq!(host253.len(), 253);
        assert_eq!(ClientSpec::parse(&host253).unwrap().kind(), "host");
        let host254 = format!("{host253}b");
        let err = ClientSpec::parse(&host254).unwrap_err();
        assert!(
            err.0.contains("254 characters long; the limit is 253"),
            "{err}"
        );
        let ng64 = format!("@{}", "n".repeat(64));
        assert_eq!(ClientSpec::parse(&ng64).unwrap().kind(), "netgroup");
    }

    #[test]
    fn invalid_clients() {
        let long = "a".repeat(256);
        let label64 = format!("{}.example", "a".repeat(64));
        let host255 = format!("{}.{}", "a".repeat(63), vec!["b".repeat(63); 3].join(".")); // 255 bytes
        let ng65 = format!("@{}", "n".repeat(65));
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "must not be empty"),
            ("a b".into(), "contains ' ' which is not allowed"),
            (" host".into(), "contains ' '"),
            ("host\t".into(), "control character (0x09)"),
            ("host\n".into(), "control character (0x0a)"),
            ("a\0b".into(), "control character (0x00)"),
            (";rm".into(), "contains ';' which is not allowed"),
            ("host;rm -rf /".into(), "';'"),
            ("$(reboot)".into(), "'$'"),
            ("`id`".into(), "'`'"),
            ("a|b".into(), "'|'"),
            ("a&b".into(), "'&'"),
            ("'host'".into(), "contains \"'\" which"),
            ("\"host\"".into(), "'\"'"),
            ("host(rw)".into(), "export options are set separately"),
            ("host)".into(), "contains ')'"),
            ("a,b".into(), "give one client at a time"),
            ("a>b".into(), "'>'"),
            ("a\\b".into(), "'\\'"),
            ("[::1]".into(), "'['"),
            ("h\u{f6}st.example".into(), "non-ASCII character '\u{f6}'"),
            ("\u{445}.example".into(), "non-ASCII"),
            (long, "256 characters long; the limit is 255"),
            ("1.2.3.256".into(), "not a valid IPv4 address"),
            ("1.2.3".into(), "not a valid IPv4 address"),
            ("1.2.3.4.5".into(), "not a valid IPv4 address"),
            ("host.123".into(), "not a valid IPv4 address"),
            ("256".into(), "not a valid IPv4 address"),
            ("01.2.3.4".into(), "leading zero"),
            ("10.0.0.010".into(), "leading zero"),
            ("1.2.3.4/33".into(), "prefix length 33 is out of range 0-32"),
            (
                "1.2.3.4/999".into(),
                "prefix length 999 is out of range 0-32",
            ),
            ("1.2.3.4/".into(), "is not a prefix length"),
            ("1.2.3.4/x".into(), "is not a prefix length"),
            ("1.2.3.4/-1".into(), "is not a prefix length"),
            ("1.2.3.4/024".into(), "leading zero"),
            ("1.2.3.4/24/8".into(), "is not a prefix length"),
            ("1.2.3.256/24".into(), "not a valid IPv4 address"),
            ("host/24".into(), "'host' is not a valid IPv4 address"),
            ("10.0.0.0/255.0.255.0".into(), "not contiguous"),
            ("10.0.0.0/255.255.255.1".into(), "not contiguous"),
            ("10.0.0.0/255.255.256.0".into(), "not a valid IPv4 address"),
            ("10.0.0.*".into(), "Wildcards do not work on IP addresses"),
            (
                "192.168.?.1".into(),
                "Wildcards do not work on IP addresses",
            ),
            (
                "2001:db8::1/129".into(),
                "prefix length 129 is out of range 0-128",
            ),
            ("2001:db8::/".into(), "is not a prefix length"),
            ("fe80::1%eth0".into(), "zone ids"),
            ("2001:db8:::1".into(), "not a valid IPv6 address"),
            ("2001:db8::g".into(), "not a valid IPv6 address"),
            ("1:2:3:4:5:6:7:8:9".into(), "not a valid IPv6 address"),
            ("host:80".into(), "not a valid IPv6 address"),
            ("*:1".into(), "not a valid IPv6 address"),
            ("-host.example".into(), "starts or ends with '-'"),
            ("-rf".into(), "starts or ends with '-'"),
            ("../etc".into(), "'..' is not a valid IPv4 address"),
            ("/abs".into(), "needs an address before '/'"),
            ("host-.example".into(), "starts or ends with '-'"),
            ("-*.example".into(), "starts or ends with '-'"),
            ("host..example".into(), "empty label"),
            (".example.com".into(), "empty label"),
            ("example.com.".into(), "empty label"),
            ("*.example..com".into(), "empty label"),
            ("my_host.example".into(), "'_' which is not allowed"),
            ("user@host".into(), "'@' which is not allowed"),
            ("*.ex_ample.com".into(), "'_'"),
            (label64, "label of 64 characters; the limit is 63"),
            (host255, "255 characters long; the limit is 253"),
            ("@".into(), "needs a name after '@'"),
            ("@-group".into(), "must start with a letter or digit"),
            ("@_group".into(), "must start with a letter or digit"),
            ("@.group".into(), "must start with a letter or digit"),
            ("@grp/x".into(), "'/' which is not allowed"),
            ("@grp:x".into(), "':' which is not allowed"),
            ("@@grp".into(), "'@' which is not allowed"),
            (ng65, "65 characters long; the limit is 64"),
        ];
        for (input, fragment) in &cases {
            match ClientSpec::parse(input) {
                Ok(c) => panic!("{input:?} was accepted as {c:?}"),
                Err(e) => assert!(
                    e.0.contains(fragment),
                    "{input:?}: message {:?} lacks {fragment:?}",
                    e.0
                ),
            }
        }
    }

    #[test]
    fn ordering_and_equality_use_canonical_form() {
        let a = ClientSpec::parse("HOST.example").unwrap();
        let b = ClientSpec::parse("host.EXAMPLE").unwrap();
        assert_eq!(a, b);
        let mut v = [
            ClientSpec::parse("@ng").unwrap(),
            ClientSpec::parse("10.0.0.1").unwrap(),
            ClientSpec::parse("*").unwrap(),
        ];
        v.sort();
        assert_eq!(v[0].kind(), "anyone");
        assert_eq!(v[2].kind(), "netgroup");
    }
}

//! What an nfs-ganesha server can hold as exports(5) means it: the client forms and export
//! options that nfsprov refuses at create/patch for a ganesha server (see the tables in
//! `backend::ganesha`). Pure checks on `spec` values, so the datastore can refuse a request
//! without knowing any backend.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{ClientForm, ClientSpec, ExportOption, ExportOptions};

/// Refuse options that ganesha cannot honour as exports(5) defines them.
pub fn check_options(options: &ExportOptions) -> Result<(), String> {
    for o in options.iter() {
        let ok = matches!(
            o,
            ExportOption::Rw
                | ExportOption::Ro
                | ExportOption::RootSquash
                | ExportOption::NoRootSquash
                | ExportOption::AllSquash
                | ExportOption::NoAllSquash
                | ExportOption::AnonUid(_)
                | ExportOption::AnonGid(_)
                | ExportOption::Secure
                | ExportOption::Insecure
                | ExportOption::Sec(_)
                | ExportOption::Sync
                | ExportOption::NoSubtreeCheck
                | ExportOption::NoWdelay
                | ExportOption::Hide
                | ExportOption::NoCrossMnt
        );
        if !ok {
            return Err(format!(
                "'{}' has no faithful equivalent on an nfs-ganesha server; see the option table in the README",
                o.keyword()
            ));
        }
    }
    Ok(())
}

/// How ganesha holds one client after reading it: what its export manager shows back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// MATCH_ANY_CLIENT, shown as `*`.
    Anyone,
    /// NETWORK_CLIENT: network address (host bits clear) and prefix length, shown as
    /// `addr/prefix` in ganesha's own spelling.
    Net(IpAddr, u8),
    /// WILDCARDHOST_CLIENT, shown as written.
    Wildcard(String),
    /// NETGROUP_CLIENT, shown without the `@`.
    Netgroup(String),
    /// A host name: ganesha resolves it while reading the file and holds one NETWORK_CLIENT per
    /// address.
    Host(String),
}

/// Refuse a client that ganesha 4.3 cannot hold as exports(5) means it (see the module's
/// client table).
pub fn check_client(c: &ClientSpec) -> Result<(), String> {
    held(c)
        .map(|_| ())
        .map_err(|why| format!("'{c}' cannot be used on an nfs-ganesha server: {why}"))
}

pub fn held(c: &ClientSpec) -> Result<Held, String> {
    Ok(match c.form() {
        ClientForm::Anyone => Held::Anyone,
        ClientForm::Host(h) => {
            if h.starts_with(|c: char| c.is_ascii_digit()) {
                return Err("ganesha's config parser reads a name starting with a digit as a number; give the host's address".into());
            }
            if ["yes", "no", "true", "false", "on", "off"].contains(&h) {
                return Err(format!(
                    "ganesha's config parser reads '{h}' as a boolean; give the host's address or full name"
                ));
            }
            Held::Host(h.to_string())
        }
        ClientForm::Wildcard(w) => {
            if w.starts_with('?') && !w[1..].contains(['*', '?']) {
                return Err("ganesha's config parser reads a pattern that starts with '?' and has no other '*' or '?' as a host name".into());
            }
            if could_match_address_text(w) {
                return Err("ganesha matches a pattern against the client's address text too, and this one could match addresses (exports(5) matches names only); make it end in a domain, such as *.example.com".into());
            }
            Held::Wildcard(w.to_string())
        }
        ClientForm::Ipv4(a) => Held::Net(IpAddr::V4(a), 32),
        ClientForm::Ipv4Net(_, 0) => {
            return Err("ganesha 4.3's config parser has no /0 network; give 0.0.0.0/1 and 128.0.0.0/1 as two clients".into());
        }
        ClientForm::Ipv4Net(a, p) => {
            let mask = u32::MAX << (32 - u32::from(p));
            Held::Net(IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)), p)
        }
        ClientForm::Ipv6(a) => v6_net(a, 128)?,
        ClientForm::Ipv6Net(a, p) => {
            if p == 0 || (100..128).contains(&p) {
                return Err("ganesha 4.3's config parser reads IPv6 prefix lengths 1 to 99 only (and single addresses)".into());
            }
            v6_net(a, p)?
        }
        ClientForm::Netgroup(n) => {
            if !n.starts_with(|c: char| c.is_ascii_alphabetic()) {
                return Err(
                    "ganesha's config parser takes netgroup names starting with a letter only"
                        .into(),
                );
            }
            if n.len() > 63 {
                return Err("ganesha takes netgroup names of at most 63 characters".into());
            }
            Held::Netgroup(n.to_string())
        }
    })
}

fn v6_net(a: Ipv6Addr, p: u8) -> Result<Held, String> {
    let mask = if p == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(p))
    };
    let net = Ipv6Addr::from(u128::from(a) & mask);
    if p >= 96 && net.to_ipv4_mapped().is_some() {
        return Err("ganesha compares IPv4 clients as IPv4, so an IPv4-mapped IPv6 address never matches; give the IPv4 address".into());
    }
    Ok(Held::Net(IpAddr::V6(net), p))
}

/// Whether a pattern could match the text of some IPv4 or IPv6 address (ganesha tries the
/// address text before the name). Address text holds only digits, `a-f`, `.` and `:`, and
/// text with a `.` (IPv4, IPv4-embedded IPv6) has digits on both sides of every `.`; so a
/// pattern with another letter, or with a letter next to a `.`, cannot match one.
fn could_match_address_text(pattern: &str) -> bool {
    let b = pattern.as_bytes();
    b.iter()
        .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f' | b'.' | b'*' | b'?'))
        && !b.windows(2).any(|p| {
            (p[0] == b'.' && p[1].is_ascii_alphabetic())
                || (p[1] == b'.' && p[0].is_ascii_alphabetic())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfaithful_options_are_refused() {
        for bad in [
            "async",
            "subtree_check",
            "nohide",
            "crossmnt",
            "insecure_locks",
            "acl",
            "pnfs",
        ] {
            let o = ExportOptions::parse(bad).unwrap();
            let e = check_options(&o).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        for good in [
            "rw,sync,no_subtree_check",
            "ro,all_squash,anonuid=1",
            "insecure,sec=sys",
        ] {
            assert!(
                check_options(&ExportOptions::parse(good).unwrap()).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn clients_ganesha_cannot_hold_are_refused() {
        for (client, why) in [
            ("0.0.0.0/0", "no /0 network"),
            ("10.0.0.0/0", "no /0 network"),
            ("::/0", "prefix lengths 1 to 99"),
            ("2001:db8::/100", "prefix lengths 1 to 99"),
            ("2001:db8::/127", "prefix lengths 1 to 99"),
            ("::ffff:10.0.0.1", "IPv4-mapped"),
            ("::ffff:10.0.0.0/96", "IPv4-mapped"),
            ("1host.example", "starting with a digit"),
            ("on", "as a boolean"),
            ("no", "as a boolean"),
            ("?", "as a host name"),
            ("?.lab", "as a host name"),
            ("*.*", "could match addresses"),
            ("**", "could match addresses"),
            ("a*", "could match addresses"),
            ("*e", "could match addresses"),
            ("@0group", "starting with a letter"),
        ] {
            let c = ClientSpec::parse(client).unwrap();
            let e = check_client(&c).unwrap_err();
            assert!(
                e.contains(&format!("'{c}'")) && e.contains(why),
                "{client}: {e}"
            );
        }
        let long = ClientSpec::parse(&format!("@{}", "n".repeat(64))).unwrap();
        assert!(check_client(&long).unwrap_err().contains("at most 63"));
        for fine in [
            "*.de",
            "cafe.example",
            "?x*",
            "node*",
            "2001:db8::/99",
            "::/1",
        ] {
            let c = ClientSpec::parse(fine).unwrap();
            assert_eq!(check_client(&c), Ok(()), "{fine}");
        }
    }
}

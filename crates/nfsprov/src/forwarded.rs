//! The client's address behind trusted proxies (`NFSPROV_TRUSTED_PROXIES`): which peers may
//! say, in `X-Forwarded-For`, whom they forward for, and the address such a header names.
//!
//! The rule is nginx's `real_ip_recursive on`: only a trusted peer's header counts; its entries
//! are walked from the right (the entry its own proxy appended last), skipping trusted
//! addresses, and the first untrusted one is the client (the left-most if all are trusted). The
//! entries left of it were written by the client itself and are never believed. A header that
//! is not a short list of addresses is ignored: the client is then the peer.
//!
//! Pure: no I/O. `serve` calls [`TrustedProxies::client_of`] once per request, at the accept
//! path, and hands the result on as the request's `ConnectInfo`.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Most entries in `NFSPROV_TRUSTED_PROXIES`: a deployment has a few balancers, and each
/// request's header is checked against every entry.
pub const MAX_TRUSTED: usize = 64;

/// Most addresses a request's `X-Forwarded-For` lines may hold together; a longer chain is
/// ignored (no real chain of proxies is that long).
pub const MAX_FORWARDED_ENTRIES: usize = 32;

/// Most bytes of a request's `X-Forwarded-For` lines together: 32 IPv6 addresses with ports
/// and separators fit.
pub const MAX_FORWARDED_BYTES: usize = 2048;

/// The addresses and networks whose `X-Forwarded-For` is believed. Empty (the default): none,
/// every request's client is its TCP peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is one of the trusted proxies (an IPv4 address mapped into IPv6, as a
    /// dual-stack listener sees IPv4 peers, is matched as the IPv4 address).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that came from `peer` with `headers`: `peer` unless it is a
    /// trusted proxy that sent a well-formed `X-Forwarded-For`, then the address that header
    /// names (see the module's rule). Linear in the header's length, which is bounded.
    pub fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.is_empty() || !self.trusts(peer) {
            return peer;
        }
        match forwarded_for(headers) {
            Ok(chain) => self.walk(&chain).unwrap_or(peer),
            Err(why) => {
                tracing::debug!("ignoring X-Forwarded-For from proxy {peer}: {why}");
                peer
            }
        }
    }

    /// The right-most untrusted address of `chain`, or its first if all are trusted; `None` if
    /// it is empty.
    fn walk(&self, chain: &[IpAddr]) -> Option<IpAddr> {
        chain
            .iter()
            .rev()
            .find(|ip| !self.trusts(**ip))
            .or(chain.first())
            .copied()
    }
}

/// A comma-separated list of addresses (`10.0.0.5`, `2001:db8::7`) and networks
/// (`10.0.0.0/8`, `fd00::/8`); blanks around entries are ignored, an empty list trusts no one.
impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in text.split(',').map(str::trim) {
            if entry.is_empty() {
                if text.trim().is_empty() {
                    break;
                }
                return Err("an entry is empty (two commas in a row, or one at an end)".into());
            }
            if nets.len() == MAX_TRUSTED {
                return Err(format!("more than {MAX_TRUSTED} entries"));
            }
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => match entry.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => {
                        return Err(format!(
                            "{entry:?} is not an IP address or network (such as 10.0.0.5, \
                             10.0.0.0/8, 2001:db8::7 or fd00::/8)"
                        ));
                    }
                },
            };
            nets.push(canonical(net));
        }
        Ok(TrustedProxies(nets.into()))
    }
}

/// An IPv4 network written mapped into IPv6 (`::ffff:10.0.0.0/104`) as the IPv4 one, which is
/// how `trusts` compares addresses.
fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) if v6.prefix_len() >= 96 => {
                IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net)
            }
            _ => net,
        },
        IpNet::V4(_) => net,
    }
}

/// The addresses of all `X-Forwarded-For` lines, in order (several lines are one list, as
/// RFC 9110 joins repeated fields), or why they are not a list of addresses.
fn forwarded_for(headers: &HeaderMap) -> Result<Vec<IpAddr>, String> {
    let mut chain = Vec::new();
    let mut bytes = 0;
    for line in headers.get_all("x-forwarded-for") {
        bytes += line.len();
        if bytes > MAX_FORWARDED_BYTES {
            return Err(format!("longer than {MAX_FORWARDED_BYTES} bytes"));
        }
        let line = line
            .to_str()
            .map_err(|_| "not printable ASCII".to_string())?;
        for entry in line.split(',').map(|e| e.trim_matches([' ', '\t'])) {
            if chain.len() == MAX_FORWARDED_ENTRIES {
                return Err(format!("more than {MAX_FORWARDED_ENTRIES} addresses"));
            }
            chain.push(
                forwarded_address(entry)
                    .ok_or_else(|| format!("{entry:?} is not an IP address"))?,
            );
        }
    }
    Ok(chain)
}

/// One entry: an address, or an address with a port (`203.0.113.7:5000`, `[2001:db8::7]:5000`),
/// as some balancers write it.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn trusted(text: &str) -> TrustedProxies {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(lines: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append(
                "x-forwarded-for",
                HeaderValue::from_bytes(line).expect("a header value"),
            );
        }
        h
    }

    #[test]
    fn the_list_takes_addresses_and_networks_of_both_families() {
        let t = trusted(" 127.0.0.1 , 10.0.0.0/8,2001:db8::7, fd00::/8,::ffff:192.0.2.0/120");
        for yes in [
            "127.0.0.1",
            "10.200.3.4",
            "2001:db8::7",
            "fd12::1",
            "::ffff:10.0.0.1",
            "192.0.2.9",
            "::ffff:192.0.2.9",
        ] {
            assert!(t.trusts(ip(yes)), "{yes}");
        }
        for no in [
            "127.0.0.2",
            "11.0.0.1",
            "2001:db8::8",
            "fe80::1",
            "192.0.3.1",
        ] {
            assert!(!t.trusts(ip(no)), "{no}");
        }
        assert!(trusted("").is_empty());
        assert!(trusted("  ").is_empty());
    }

    #[test]
    fn bad_lists_are_refused_naming_the_entry() {
        for (text, names) in [
            ("10.0.0.1,proxy.example", "\"proxy.example\""),
            ("10.0.0.0/33", "\"10.0.0.0/33\""),
            ("10.0.0.1,,10.0.0.2", "empty"),
            ("10.0.0.1,", "empty"),
            ("fd00::/129", "\"fd00::/129\""),
            ("10.0.0.1:80", "\"10.0.0.1:80\""),
        ] {
            let e = text.parse::<TrustedProxies>().expect_err(text);
            assert!(e.contains(names), "{text}: {e}");
        }
        let many = (0..=MAX_TRUSTED)
            .map(|i| format!("10.0.{i}.1"))
            .collect::<Vec<_>>();
        assert!(
            many[..MAX_TRUSTED]
                .join(",")
                .parse::<TrustedProxies>()
                .is_ok()
        );
        let e = many.join(",").parse::<TrustedProxies>().unwrap_err();
        assert!(e.contains("more than 64"), "{e}");
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_entry() {
        let t = trusted("127.0.0.1, 10.0.0.0/8, fd00::/8");
        let proxy = ip("127.0.0.1");
        for (lines, client) in [
            (&[&b"203.0.113.9"[..]][..], "203.0.113.9"),
            (&[b"198.51.100.66, 203.0.113.9, 10.1.2.3"], "203.0.113.9"),
            // Lines are one list, in order.
            (&[b"198.51.100.66", b"203.0.113.9,10.1.2.3"], "203.0.113.9"),
            (
                &[b"198.51.100.66", b"203.0.113.9", b"10.1.2.3"],
                "203.0.113.9",
            ),
            // All trusted: the left-most.
            (&[b"10.0.0.1, 10.0.0.2,fd00::3"], "10.0.0.1"),
            (&[b"2001:db8::5, fd00::1"], "2001:db8::5"),
            (&[b"[2001:db8::5]:4711,10.0.0.1:80"], "2001:db8::5"),
            (&[b"203.0.113.9:5000"], "203.0.113.9"),
            (&[b"::ffff:203.0.113.9"], "203.0.113.9"),
            (&[b"\t203.0.113.9 "], "203.0.113.9"),
        ] {
            assert_eq!(t.client_of(proxy, &headers(lines)), ip(client), "{lines:?}");
        }
        // A dual-stack listener's view of the same proxy.
        let mapped = ip("::ffff:127.0.0.1");
        assert_eq!(
            t.client_of(mapped, &headers(&[b"203.0.113.9"])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn untrusted_peers_and_bad_headers_leave_the_peer() {
        let t = trusted("127.0.0.1");
        let (proxy, other) = (ip("127.0.0.1"), ip("127.0.0.2"));
        let good = headers(&[b"203.0.113.9"]);
        assert_eq!(t.client_of(other, &good), other);
        assert_eq!(TrustedProxies::default().client_of(proxy, &good), proxy);
        assert_eq!(t.client_of(proxy, &HeaderMap::new()), proxy);
        let long_entry = "1".repeat(MAX_FORWARDED_BYTES + 1);
        let too_many = vec!["203.0.113.9"; MAX_FORWARDED_ENTRIES + 1].join(",");
        let just_enough = vec!["203.0.113.9"; MAX_FORWARDED_ENTRIES].join(",");
        assert_eq!(
            t.client_of(proxy, &headers(&[just_enough.as_bytes()])),
            ip("203.0.113.9")
        );
        for bad in [
            &b""[..],
            b"unknown",
            b"203.0.113.9, unknown",
            b"203.0.113.9,,10.0.0.1",
            b"203.0.113.9,",
            b"203.0.113.9/32",
            b"203.0.113.9 198.51.100.1",
            b"\xff203.0.113.9",
            long_entry.as_bytes(),
            too_many.as_bytes(),
        ] {
            assert_eq!(
                t.client_of(proxy, &headers(&[bad])),
                proxy,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Many lines count together.
        let lines = vec![&b"203.0.113.9"[..]; MAX_FORWARDED_ENTRIES + 1];
        assert_eq!(t.client_of(proxy, &headers(&lines)), proxy);
    }
}

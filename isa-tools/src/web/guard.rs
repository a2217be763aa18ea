//! The SSRF guard shared by `web_fetch` and the browser: outbound requests may only reach
//! public addresses unless configuration allows more.
//!
//! Addresses are checked after DNS resolution (a public name that resolves to 127.0.0.1 is
//! refused), the checked addresses are the ones connected to (no second lookup an attacker's
//! DNS could answer differently), and every redirect hop is checked again.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use isa_core::{Error, Result};
use reqwest::Url;

/// A network range in CIDR notation (`10.0.0.0/8`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "{s:?} is not an address range like 10.0.0.0/8 or ::1/128"
            ))
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { network, prefix })
    }
}

impl Cidr {
    /// Whether `ip` lies in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
    Cidr {
        network: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        prefix,
    }
}

const fn v6(first: u16, second: u16, third: u16, prefix: u8) -> Cidr {
    Cidr {
        network: IpAddr::V6(Ipv6Addr::new(first, second, third, 0, 0, 0, 0, 0)),
        prefix,
    }
}

/// The address policy: every range refused by default, and why (IANA's special-purpose
/// registries). IPv6 addresses that carry an IPv4 address (IPv4-mapped, IPv4-compatible,
/// NAT64 `64:ff9b::/96`, 6to4 `2002::/16`, Teredo `2001::/32`) are also unwrapped, and refused
/// when the IPv4 address inside is.
pub const REFUSED_RANGES: &[(Cidr, &str)] = &[
    (v4(0, 0, 0, 0, 8), "unspecified (this network)"),
    (v4(10, 0, 0, 0, 8), "private"),
    (
        v4(100, 64, 0, 0, 10),
        "shared address space (carrier-grade NAT)",
    ),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (
        v4(169, 254, 0, 0, 16),
        "link-local (cloud metadata lives here)",
    ),
    (v4(172, 16, 0, 0, 12), "private"),
    (v4(192, 0, 0, 0, 24), "IETF protocol assignment"),
    (v4(192, 0, 2, 0, 24), "documentation"),
    (v4(192, 88, 99, 0, 24), "6to4 relay anycast"),
    (v4(192, 168, 0, 0, 16), "private"),
    (v4(198, 18, 0, 0, 15), "benchmarking"),
    (v4(198, 51, 100, 0, 24), "documentation"),
    (v4(203, 0, 113, 0, 24), "documentation"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(240, 0, 0, 0, 4), "reserved or broadcast"),
    (v6(0, 0, 0, 128), "unspecified"),
    (
        Cidr {
            network: IpAddr::V6(Ipv6Addr::LOCALHOST),
            prefix: 128,
        },
        "loopback",
    ),
    (v6(0x64, 0xff9b, 1, 48), "local-use NAT64"),
    (v6(0x100, 0, 0, 64), "discard-only"),
    (v6(0x2001, 0xdb8, 0, 32), "documentation"),
    (v6(0xfc00, 0, 0, 7), "unique-local"),
    (v6(0xfe80, 0, 0, 10), "link-local"),
    (v6(0xfec0, 0, 0, 10), "site-local"),
    (v6(0xff00, 0, 0, 8), "multicast"),
];

/// Why an address is refused by default, or `None` for a public address.
pub fn refused_class(ip: IpAddr) -> Option<&'static str> {
    let listed = REFUSED_RANGES
        .iter()
        .find(|(range, _)| range.contains(ip))
        .map(|(_, why)| *why);
    match ip {
        IpAddr::V4(_) => listed,
        IpAddr::V6(v6) => listed.or_else(|| {
            embedded_ipv4(v6)
                .into_iter()
                .flatten()
                .find_map(|inner| refused_class(IpAddr::V4(inner)))
        }),
    }
}

/// The IPv4 addresses an IPv6 address carries, by the transition mechanism its prefix names.
fn embedded_ipv4(ip: Ipv6Addr) -> [Option<Ipv4Addr>; 2] {
    let s = ip.segments();
    let v4 = |high: u16, low: u16| Some(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)));
    match s {
        // IPv4-mapped ::ffff:a.b.c.d and IPv4-compatible ::a.b.c.d.
        [0, 0, 0, 0, 0, 0xffff | 0, high, low] => [v4(high, low), None],
        // NAT64, the well-known prefix.
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => [v4(high, low), None],
        // 6to4: 2002:AABB:CCDD::/48.
        [0x2002, high, low, ..] => [v4(high, low), None],
        // Teredo: the server's address, and the client's, bits inverted.
        [
            0x2001,
            0,
            server_high,
            server_low,
            _,
            _,
            client_high,
            client_low,
        ] => [v4(server_high, server_low), v4(!client_high, !client_low)],
        _ => [None, None],
    }
}

/// Decides which destinations outbound requests may reach.
#[derive(Debug, Clone, Default)]
pub struct SsrfGuard {
    allowed: Arc<Vec<Cidr>>,
}

impl SsrfGuard {
    /// Refuses every non-public address.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also allows these ranges (tests allow `127.0.0.1/32`; an intranet deployment might allow
    /// `10.0.0.0/8`).
    pub fn allowing(ranges: impl IntoIterator<Item = Cidr>) -> Self {
        SsrfGuard {
            allowed: Arc::new(ranges.into_iter().collect()),
        }
    }

    /// `Ok` when `ip` may be reached.
    pub fn check_ip(&self, ip: IpAddr) -> Result<()> {
        match refused_class(ip) {
            Some(class) if !self.allowed.iter().any(|c| c.contains(ip)) => Err(Error::Forbidden(
                format!("{ip} is a {class} address; requests there are refused"),
            )),
            _ => Ok(()),
        }
    }

    /// Checks the scheme of a URL and, when its host is an IP literal, the address. Host names
    /// are checked when they are resolved ([`SsrfGuard::resolve`]).
    pub fn check_url(&self, url: &Url) -> Result<()> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid(format!(
                "only http and https URLs can be fetched, not {}",
                url.scheme()
            )));
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
            None => Err(Error::invalid("the URL has no host")),
        }
    }

    /// Resolves a host name and keeps its addresses only if every one of them may be reached
    /// (a name with one public and one private address is refused: which one a client connects
    /// to is not ours to choose).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Error::invalid(format!("cannot resolve {host}: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(Error::invalid(format!("{host} has no addresses")));
        }
        for addr in &addrs {
            self.check_ip(addr.ip())
                .map_err(|e| Error::Forbidden(format!("{host} resolves to {}: {e}", addr.ip())))?;
        }
        Ok(addrs)
    }

    /// An HTTP client whose every connection, redirects included, goes through this guard.
    pub fn http_client(
        &self,
        builder: reqwest::ClientBuilder,
        max_redirects: usize,
    ) -> Result<reqwest::Client> {
        let for_redirects = self.clone();
        // No proxy from the environment: a proxy would resolve the destination itself, and
        // the guard would never see the address.
        builder
            .no_proxy()
            .dns_resolver(Arc::new(self.clone()))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= max_redirects {
                    attempt.error(format!("more than {max_redirects} redirects"))
                } else if let Err(e) = for_redirects.check_url(attempt.url()) {
                    attempt.error(e.to_string())
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))
    }
}

impl reqwest::dns::Resolve for SsrfGuard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.clone();
        Box::pin(async move {
            let addrs = guard.resolve(name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One address inside each row of the policy, refused for that row's reason, and the
    /// address just outside it allowed.
    #[test]
    fn every_row_of_the_policy_is_refused_for_its_reason() {
        let inside_and_outside: &[(&str, &str)] = &[
            ("0.1.2.3", "1.0.0.1"),
            ("10.255.0.1", "11.0.0.1"),
            ("100.127.255.254", "100.128.0.1"),
            ("127.0.0.2", "128.0.0.1"),
            ("169.254.169.254", "169.255.0.1"),
            ("172.31.255.254", "172.32.0.1"),
            ("192.0.0.170", "192.0.1.1"),
            ("192.0.2.1", "192.0.3.1"),
            ("192.88.99.1", "192.88.100.1"),
            ("192.168.1.1", "192.169.0.1"),
            ("198.19.255.254", "198.20.0.1"),
            ("198.51.100.7", "198.51.101.1"),
            ("203.0.113.9", "203.0.114.1"),
            ("239.255.255.250", "223.255.255.1"),
            ("255.255.255.255", "223.1.1.1"),
            ("::", "2606:4700:4700::1111"),
            ("::1", "2606:4700:4700::1001"),
            ("64:ff9b:1::a00:1", "64:ff9b:2::1"),
            ("100::1", "100:0:0:1::1"),
            ("2001:db8::1", "2001:db9::1"),
            ("fd12::1", "fe00::1"),
            ("fe80::1", "2600::1"),
            ("fec0::1", "2a00::1"),
            ("ff02::1", "2a01::1"),
        ];
        assert_eq!(inside_and_outside.len(), REFUSED_RANGES.len());
        let guard = SsrfGuard::new();
        for ((range, why), (inside, outside)) in REFUSED_RANGES.iter().zip(inside_and_outside) {
            let inside: IpAddr = inside.parse().unwrap();
            assert!(range.contains(inside), "{inside} is not in {range:?}");
            assert_eq!(refused_class(inside), Some(*why), "{inside}");
            assert!(guard.check_ip(inside).is_err(), "{inside}");
            let outside: IpAddr = outside.parse().unwrap();
            assert!(!range.contains(outside), "{outside} is in {range:?}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(guard.check_ip(public.parse().unwrap()).is_ok(), "{public}");
        }
    }

    /// The IPv4 address inside every IPv6 transition form is checked like the address itself.
    #[test]
    fn ipv4_inside_ipv6_is_unwrapped_and_checked() {
        let guard = SsrfGuard::new();
        for (refused, why) in [
            ("::ffff:127.0.0.1", "loopback"),
            (
                "::ffff:169.254.169.254",
                "link-local (cloud metadata lives here)",
            ),
            ("::10.0.0.1", "private"),
            (
                "64:ff9b::a9fe:a9fe",
                "link-local (cloud metadata lives here)",
            ),
            ("2002:7f00:1::1", "loopback"),
            ("2002:c0a8:101::", "private"),
            ("2001:0:a00:1::", "private"),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),
        ] {
            let ip: IpAddr = refused.parse().unwrap();
            assert_eq!(refused_class(ip), Some(why), "{refused}");
            assert!(guard.check_ip(ip).is_err(), "{refused}");
        }
        for public in [
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
            "2002:101:101::1",
            "2001:0:4136:e378:8000:63bf:fefe:fefe",
        ] {
            assert_eq!(refused_class(public.parse().unwrap()), None, "{public}");
        }
    }

    #[test]
    fn an_allowlist_opens_exactly_its_ranges() {
        let guard = SsrfGuard::allowing(["127.0.0.1/32".parse().unwrap()]);
        assert!(guard.check_ip("127.0.0.1".parse().unwrap()).is_ok());
        assert!(guard.check_ip("127.0.0.2".parse().unwrap()).is_err());
        assert!(guard.check_ip("169.254.169.254".parse().unwrap()).is_err());
    }

    #[test]
    fn cidr_parsing_rejects_nonsense() {
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("ten/8".parse::<Cidr>().is_err());
        assert!(
            "fc00::/7"
                .parse::<Cidr>()
                .unwrap()
                .contains("fdab::1".parse().unwrap())
        );
    }

    #[test]
    fn only_http_urls_pass() {
        let guard = SsrfGuard::new();
        assert!(
            guard
                .check_url(&"file:///etc/passwd".parse().unwrap())
                .is_err()
        );
        assert!(guard.check_url(&"http://[::1]/".parse().unwrap()).is_err());
        assert!(
            guard
                .check_url(&"https://example.com/".parse().unwrap())
                .is_ok()
        );
    }
}

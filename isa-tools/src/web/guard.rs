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

/// Why an address is refused by default, or `None` for a public address.
pub fn refused_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => refused_v4(v4),
            None => refused_v6(v6),
        },
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata lives here)")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared address space (carrier-grade NAT)")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("broadcast, multicast or reserved")
    } else {
        None
    }
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if first & 0xfe00 == 0xfc00 {
        Some("unique-local")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
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
        builder
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

    #[test]
    fn refuses_every_non_public_class_and_allows_public_addresses() {
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(
                SsrfGuard::new().check_ip(ip).is_err(),
                "{refused} must be refused"
            );
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(
                SsrfGuard::new().check_ip(public.parse().unwrap()).is_ok(),
                "{public}"
            );
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

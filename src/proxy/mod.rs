//! Who a connection is really from when a reverse proxy or load balancer stands in front.
//!
//! `trusted_proxies` lists the addresses and CIDR ranges whose word is taken; from those peers
//! only, the client's address comes from the request's `Forwarded`, `X-Forwarded-For` or
//! `X-Real-IP` header (`forwarded.rs`, pure), or from a PROXY protocol header before anything
//! else on the connection (`protocol.rs`). `server/` asks here and then uses the client's
//! address for every limit, log line and listing.

pub mod forwarded;
pub mod protocol;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::http::Request;

pub use forwarded::{client_address, Via};
pub use protocol::{read_header, ProxyError, ProxyHeader};

/// Most entries `trusted_proxies` may have: a proxy tier is a few ranges, not a block list.
pub const MAX_TRUSTED_PROXIES: usize = 256;

/// An address or a CIDR range: `10.0.0.0/8`, `2001:db8::/32`, `127.0.0.1` (a /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a `trusted_proxies` entry is not a range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpNetError {
    /// Neither an address nor `address/prefix`.
    #[error("`{0}` is not an IP address or CIDR range (e.g. 10.0.0.0/8)")]
    Syntax(String),
    /// A prefix longer than the address.
    #[error("`{0}`: the prefix must be 0-32 for IPv4, 0-128 for IPv6")]
    Prefix(String),
    /// Bits set past the prefix: most likely a typo.
    #[error("`{given}` has bits set past its prefix: did you mean {meant}?")]
    HostBits {
        /// As written.
        given: String,
        /// The network it lies in.
        meant: IpNet,
    },
}

impl IpNet {
    /// Whether `ip` lies in this range (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_v4(ip, self.prefix) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask_v6(ip, self.prefix) == u128::from(net),
            _ => false,
        }
    }
}

fn mask_v4(ip: Ipv4Addr, prefix: u8) -> u32 {
    u32::from(ip) & u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0)
}

fn mask_v6(ip: Ipv6Addr, prefix: u8) -> u128 {
    u128::from(ip) & u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0)
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| IpNetError::Syntax(text.to_owned()))?;
        // A mapped address is written for its IPv4 peer: trust that peer as such.
        let addr = addr.to_canonical();
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 3 => {
                return Err(IpNetError::Syntax(text.to_owned()));
            }
            Some(p) => p.parse::<u8>().map_err(|_| IpNetError::Prefix(text.to_owned()))?,
        };
        if prefix > bits {
            return Err(IpNetError::Prefix(text.to_owned()));
        }
        let network = match addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(mask_v4(v4, prefix))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(mask_v6(v6, prefix))),
        };
        let net = IpNet { addr: network, prefix };
        if network != addr {
            return Err(IpNetError::HostBits { given: text.to_owned(), meant: net });
        }
        Ok(net)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The proxies whose headers are believed (`trusted_proxies`); empty: nobody's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// These ranges.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// Whether `ip` is one of them.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// Whether the list is empty (the default: headers are ignored from everyone).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ranges, as configured.
    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }

    /// The client behind `peer`: from the request's headers when `peer` is trusted, else
    /// `peer` itself (and `None` for how it was learnt).
    pub fn client(&self, peer: SocketAddr, request: &Request) -> (SocketAddr, Option<Via>) {
        if !self.contains(peer.ip()) {
            return (peer, None);
        }
        match client_address(request, |ip| self.contains(ip)) {
            Some((client, via)) => (client, Some(via)),
            None => (peer, None),
        }
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_parse_and_contain_what_they_should() {
        let ten = net("10.0.0.0/8");
        assert!(ten.contains(ip("10.255.1.2")) && !ten.contains(ip("11.0.0.1")));
        assert!(ten.contains(ip("::ffff:10.1.2.3")), "a mapped IPv4 peer is that peer");
        assert!(!ten.contains(ip("::a00:1")), "an IPv6 address is not in an IPv4 range");
        let one = net("127.0.0.1");
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = net("2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(net("::/0").contains(ip("2001::1")) && net("0.0.0.0/0").contains(ip("1.2.3.4")));
        assert_eq!(net("::ffff:192.0.2.1").to_string(), "192.0.2.1/32");
        assert!(net("::1").contains(ip("::1")));
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        for bad in ["", "10.0.0.0/", "10.0.0/8", "10.0.0.0/33", "::/129", "x/8", "1.2.3.4/+8"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?}");
        }
        let err = "10.1.0.0/8".parse::<IpNet>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`10.1.0.0/8` has bits set past its prefix: did you mean 10.0.0.0/8?"
        );
        assert!(matches!("1.2.3.4/99".parse::<IpNet>(), Err(IpNetError::Prefix(_))));
    }

    #[test]
    fn headers_count_only_from_trusted_peers() {
        let trusted = TrustedProxies::new(vec![net("127.0.0.1/32"), net("10.0.0.0/8")]);
        let request = Request {
            method: "GET".into(),
            path: "/".into(),
            query: None,
            headers: vec![("X-Forwarded-For".into(), "198.51.100.7".into())],
            version: 1,
        };
        let proxy: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let (client, via) = trusted.client(proxy, &request);
        assert_eq!(
            (client.to_string(), via),
            ("198.51.100.7:0".to_owned(), Some(Via::XForwardedFor))
        );
        let stranger: SocketAddr = "192.0.2.9:5000".parse().unwrap();
        assert_eq!(trusted.client(stranger, &request), (stranger, None));
        assert_eq!(TrustedProxies::default().client(proxy, &request), (proxy, None));
        let bare = Request { headers: Vec::new(), ..request };
        assert_eq!(trusted.client(proxy, &bare), (proxy, None), "no header: the proxy itself");
    }
}

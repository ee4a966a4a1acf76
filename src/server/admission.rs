//! The node's connection limits: `max_connections` in all, `max_connections_per_ip` from one
//! address (loopback and `ip_limit_exempt` are not counted). An IPv6 peer is counted by its
//! network (`ip_limit_ipv6_prefix`, a /64 by default: one host usually holds a whole /64), an
//! IPv4-mapped IPv6 peer (`::ffff:a.b.c.d`, how a dual-stack socket sees IPv4) as its IPv4
//! address.
//!
//! A connection that is let in holds an [`Admission`] for as long as it lives, whatever it
//! becomes (a source, an HTTP answer, a listener handed to a driver); dropping it gives the
//! places back. One guard for both kinds of place, so no path can forget one of them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{address_key, Config};
use crate::error::Refusal;

/// The places a node has for connections.
#[derive(Debug)]
pub struct Limits {
    connections: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    ipv6_prefix: u8,
    exempt: Vec<IpAddr>,
    /// `onair_connections`: open connections of every kind.
    open: Gauge,
}

impl Limits {
    /// The limits of `config`; `open` counts the connections let in.
    pub fn new(config: &Config, open: Gauge) -> Arc<Self> {
        Arc::new(Self {
            connections: Arc::new(Semaphore::new(config.max_connections)),
            per_ip: Mutex::default(),
            max_per_ip: config.max_connections_per_ip,
            ipv6_prefix: config.ip_limit_ipv6_prefix,
            exempt: config.ip_limit_exempt.iter().map(IpAddr::to_canonical).collect(),
            open,
        })
    }

    /// Lets a connection from `ip` in: a place among `max_connections` and one among its
    /// address's.
    ///
    /// # Errors
    /// `ConnectionLimit` or `AddressLimit`.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Refusal> {
        let permit = Arc::clone(&self.connections)
            .try_acquire_owned()
            .map_err(|_| Refusal::ConnectionLimit)?;
        let mut admission = self.admit_address(ip)?;
        admission.permit = Some(permit);
        self.open.inc();
        Ok(admission)
    }

    /// Counts a connection against its address only (a TLS connection, which reaches the
    /// node's plain port again over loopback and is let in there).
    ///
    /// # Errors
    /// `AddressLimit`.
    pub fn admit_address(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Refusal> {
        let ip = ip.to_canonical();
        let counted = !self.exempt.contains(&ip);
        let ip = address_key(ip, self.ipv6_prefix);
        if counted {
            let mut per_ip = self.per_ip.lock().expect("per-address lock poisoned");
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= self.max_per_ip {
                if *count == 0 {
                    per_ip.remove(&ip);
                }
                return Err(Refusal::AddressLimit);
            }
            *count += 1;
        }
        Ok(Admission { limits: Arc::clone(self), ip: counted.then_some(ip), permit: None })
    }

    /// Connections counted from `ip` now (from its network, for IPv6).
    pub fn count(&self, ip: IpAddr) -> usize {
        let key = address_key(ip.to_canonical(), self.ipv6_prefix);
        self.per_ip.lock().expect("per-address lock poisoned").get(&key).copied().unwrap_or(0)
    }
}

/// A connection's places; given back when dropped.
#[derive(Debug)]
pub struct Admission {
    limits: Arc<Limits>,
    ip: Option<IpAddr>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.permit.take().is_some() {
            self.limits.open.dec();
        }
        let Some(ip) = self.ip else { return };
        let mut per_ip = self.limits.per_ip.lock().expect("per-address lock poisoned");
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            // The map never keeps addresses with no connection.
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, max_per_ip: usize) -> Arc<Limits> {
        let config = Config {
            max_connections,
            max_connections_per_ip: max_per_ip,
            ip_limit_exempt: vec!["127.0.0.1".parse().unwrap()],
            ..Config::default()
        };
        Limits::new(&config, Gauge::default())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// One IPv6 host holds a whole /64: counting each address let it open
    /// `max_connections_per_ip` connections from each of 2^64 addresses.
    #[test]
    fn ipv6_peers_are_counted_per_64() {
        let limits = limits(100, 2);
        let _a = limits.admit(ip("2001:db8:1:2::1")).unwrap();
        let _b = limits.admit(ip("2001:db8:1:2:ffff:ffff:ffff:fffe")).unwrap();
        assert_eq!(
            limits.admit(ip("2001:db8:1:2:1234::9")).unwrap_err(),
            Refusal::AddressLimit,
            "a third address of the same /64"
        );
        assert_eq!(limits.count(ip("2001:db8:1:2::77")), 2);
        let _other = limits.admit(ip("2001:db8:1:3::1")).expect("the next /64 is another peer");
        let config = Config {
            max_connections_per_ip: 1,
            ip_limit_ipv6_prefix: 128,
            ip_limit_exempt: Vec::new(),
            ..Config::default()
        };
        let exact = Limits::new(&config, Gauge::default());
        let _c = exact.admit(ip("2001:db8::1")).unwrap();
        let _d = exact.admit(ip("2001:db8::2")).expect("a /128 prefix counts each address");
        assert_eq!(address_key(ip("2001:db8::1"), 0), ip("::"), "a /0 is one network");
    }

    /// A dual-stack socket sees IPv4 peers as `::ffff:a.b.c.d`: they missed the exemption of
    /// their IPv4 address, and a /64 rule would have put all of them in one network.
    #[test]
    fn ipv4_mapped_peers_count_as_their_ipv4_address() {
        let limits = limits(100, 1);
        let _loopback: Vec<_> =
            (0..3).map(|_| limits.admit(ip("::ffff:127.0.0.1")).unwrap()).collect();
        assert_eq!(limits.count(ip("127.0.0.1")), 0, "exempt as 127.0.0.1 is");
        let _a = limits.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(
            limits.admit(ip("192.0.2.1")).unwrap_err(),
            Refusal::AddressLimit,
            "the same peer"
        );
        let _b =
            limits.admit(ip("::ffff:192.0.2.2")).expect("another IPv4 peer is not the same /64");
    }

    #[test]
    fn places_are_given_back_when_a_connection_ends() {
        let limits = limits(3, 2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = limits.admit(ip).unwrap();
        let b = limits.admit(ip).unwrap();
        assert_eq!(limits.admit(ip).unwrap_err(), Refusal::AddressLimit);
        assert_eq!(limits.open.get(), 2);
        let other = limits.admit("192.0.2.2".parse().unwrap()).unwrap();
        assert_eq!(
            limits.admit("192.0.2.3".parse().unwrap()).unwrap_err(),
            Refusal::ConnectionLimit
        );
        drop((a, other));
        assert_eq!((limits.count(ip), limits.open.get()), (1, 1));
        drop(b);
        assert!(limits.per_ip.lock().unwrap().is_empty(), "no empty entries are kept");
    }

    #[test]
    fn exempt_addresses_take_no_per_address_place() {
        let limits = limits(10, 1);
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..5).map(|_| limits.admit(loopback).unwrap()).collect();
        assert_eq!(limits.count(loopback), 0);
        assert_eq!(limits.open.get(), 5);
        drop(held);
        assert_eq!(limits.open.get(), 0);
    }
}

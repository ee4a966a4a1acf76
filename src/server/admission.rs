//! The node's connection limits: `max_connections` in all, `max_connections_per_ip` from one
//! address (loopback and `ip_limit_exempt` are not counted).
//!
//! A connection that is let in holds an [`Admission`] for as long as it lives, whatever it
//! becomes (a source, an HTTP answer, a listener handed to a driver); dropping it gives the
//! places back. One guard for both kinds of place, so no path can forget one of them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::error::Refusal;

/// The places a node has for connections.
#[derive(Debug)]
pub struct Limits {
    connections: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
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
            exempt: config.ip_limit_exempt.clone(),
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
        let counted = !self.exempt.contains(&ip);
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

    /// Connections counted from `ip` now.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.per_ip.lock().expect("per-address lock poisoned").get(&ip).copied().unwrap_or(0)
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

//! Per-client fairness, with no IO: who a client is (an address, IPv6 grouped by prefix),
//! how many connections one client may hold across every core, how fast it may send
//! requests, and which networks are let in at all.
//!
//! Both tables are fixed-size arrays of atomics shared by the cores, so memory stays bounded
//! however many distinct addresses arrive (millions of spoofed-looking IPv6 clients included):
//!
//! - [`ClientConnections`]: a counter per slot, touched at accept and close only.
//! - [`ClientRates`]: GCRA (the generic cell rate algorithm, a token bucket written as one
//!   "theoretical arrival time") per slot, one compare-and-swap per request; cores contend
//!   only when one client's connections are being served on several cores at once.
//!
//! A slot is chosen by hashing the client key. Two clients that land in the same slot share
//! its budget: with 65,536 slots that is rare, and it errs towards limiting (a collision can
//! only make a limit bite earlier for those two clients, never let anyone past it). Rates are
//! exact otherwise: all cores draw from the same bucket.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Slots of each shared table (a power of two).
pub const CLIENT_SLOTS: usize = 1 << 16;

/// A client as the limits count it: an IPv4 address, or an IPv6 address cut to its first
/// `prefix` bits (one household or host usually owns a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(u128);

impl ClientKey {
    /// The key of `ip`, grouping IPv6 by its first `ipv6_prefix` bits (an IPv4-mapped IPv6
    /// address is its IPv4 address).
    pub fn new(ip: IpAddr, ipv6_prefix: u8) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(u128::from(u32::from(v4))),
                None => {
                    let bits = u32::from(ipv6_prefix.min(128));
                    let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
                    // The top bit marks IPv6, so no IPv6 prefix equals an IPv4 address.
                    ClientKey((u128::from(v6) & mask) | 1)
                }
            },
        }
    }

    fn slot(self) -> usize {
        // Every core must map a key to the same slot, so the hash can hold no secret (the
        // SipHash this replaced ran with fixed keys too). A multiply that folds all 128 bits
        // into the top ones (Fibonacci hashing) spreads neighbouring addresses over the
        // table for a tenth of SipHash's cost, which every request under a rate limit pays.
        let folded = (self.0 as u64) ^ ((self.0 >> 64) as u64);
        let mixed = folded.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> (64 - CLIENT_SLOTS.trailing_zeros())) as usize
    }
}

/// Concurrent connections per client, across every core.
#[derive(Debug)]
pub struct ClientConnections {
    max: u32,
    slots: Box<[AtomicU32]>,
}

/// One client connection counted until dropped.
#[derive(Debug)]
pub struct ClientPermit {
    table: Arc<ClientConnections>,
    slot: usize,
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        self.table.slots[self.slot].fetch_sub(1, Ordering::AcqRel);
    }
}

impl ClientConnections {
    /// At most `max` connections per client.
    pub fn new(max: u32) -> Arc<ClientConnections> {
        let slots = (0..CLIENT_SLOTS).map(|_| AtomicU32::new(0)).collect();
        Arc::new(ClientConnections { max, slots })
    }

    /// Counts a connection from `key`, or `None` when the client already holds `max`.
    pub fn try_acquire(self: &Arc<Self>, key: ClientKey) -> Option<ClientPermit> {
        let slot = key.slot();
        self.slots[slot]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| ClientPermit { table: Arc::clone(self), slot })
    }

    /// Connections counted now (for metrics: the sum over the slots).
    pub fn counted(&self) -> u64 {
        self.slots.iter().map(|s| u64::from(s.load(Ordering::Relaxed))).sum()
    }

    /// Clients holding connections now (slots in use: clients sharing a slot count once).
    pub fn addresses(&self) -> u64 {
        self.slots.iter().filter(|s| s.load(Ordering::Relaxed) > 0).count() as u64
    }
}

/// A request rate: `requests_per_second` on average, with bursts of up to `burst` requests
/// above it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub requests_per_second: f64,
    /// Requests a client may send at once above the sustained rate (default 0: none).
    #[serde(default)]
    pub burst: u32,
    /// Requests past the burst that wait for their turn instead of getting `429` (nginx's
    /// `burst` without `nodelay`); default 0: none wait.
    #[serde(default)]
    pub delayed: u32,
}

impl RateLimit {
    /// Checks the values, naming the key.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            return Err(format!("{key}.requests_per_second must be a positive number"));
        }
        Ok(())
    }
}

/// What the rate says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    /// Within the rate or the burst: serve it now.
    Now,
    /// Among the `delayed`: serve it after this wait.
    After(Duration),
    /// Over: refuse it; the client may try again after this wait.
    Refused(Duration),
}

/// Request rates per client, shared by the cores (GCRA per slot).
#[derive(Debug)]
pub struct ClientRates {
    /// Nanoseconds between requests at the sustained rate.
    interval: u64,
    /// How far ahead of now a client's theoretical arrival time may run: the burst.
    tolerance: u64,
    /// How much further it may run for requests that wait: the delayed ones.
    waiting: u64,
    epoch: Instant,
    /// Theoretical arrival time per slot, in nanoseconds since `epoch`.
    slots: Box<[AtomicU64]>,
}

impl ClientRates {
    /// Rates limited to `limit`, with `epoch` as the clock's origin (any instant before the
    /// first request).
    pub fn new(limit: RateLimit, epoch: Instant) -> Arc<ClientRates> {
        let interval = (1e9 / limit.requests_per_second).max(1.0) as u64;
        let slots = (0..CLIENT_SLOTS).map(|_| AtomicU64::new(0)).collect();
        Arc::new(ClientRates {
            interval,
            tolerance: interval * u64::from(limit.burst),
            waiting: interval * u64::from(limit.delayed),
            epoch,
            slots,
        })
    }

    /// Admits one request from `key` at `now`: now, after a wait (a delayed one), or not,
    /// with how long until one would be.
    pub fn check(&self, key: ClientKey, now: Instant) -> RateVerdict {
        let now = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let slot = &self.slots[key.slot()];
        let mut tat = slot.load(Ordering::Acquire);
        loop {
            let start = tat.max(now);
            let ahead = start - now;
            if ahead > self.tolerance + self.waiting {
                return RateVerdict::Refused(Duration::from_nanos(
                    ahead - self.tolerance - self.waiting,
                ));
            }
            let next = start + self.interval;
            match slot.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if ahead > self.tolerance => {
                    return RateVerdict::After(Duration::from_nanos(ahead - self.tolerance))
                }
                Ok(_) => return RateVerdict::Now,
                Err(seen) => tat = seen,
            }
        }
    }
}

/// Per-client limits of one listener, replacing the server's (`[limits]`) there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientLimits {
    /// As `Limits::max_connections_per_ip`, for this listener's connections.
    pub max_connections_per_ip: Option<u32>,
    /// As `Limits::rate_limit`, for this listener's requests.
    pub rate_limit: Option<RateLimit>,
}

/// Which client networks are let in: `deny` wins; with a non-empty `allow`, only those.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    allow: Vec<ipnet::IpNet>,
    deny: Vec<ipnet::IpNet>,
}

impl AccessList {
    /// A list from its two halves.
    pub fn new(allow: Vec<ipnet::IpNet>, deny: Vec<ipnet::IpNet>) -> AccessList {
        AccessList { allow, deny }
    }

    /// Whether the list lets everyone in (nothing to check).
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether `ip` may come in.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ClientKey {
        ClientKey::new(s.parse().unwrap(), 64)
    }

    #[test]
    fn ipv6_groups_by_prefix_and_ipv4_stands_alone() {
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        assert_ne!(key("10.0.0.1"), key("10.0.0.2"));
        assert_eq!(
            ClientKey::new("2001:db8::1".parse().unwrap(), 128),
            ClientKey::new("2001:db8::1".parse().unwrap(), 128)
        );
        assert_ne!(
            ClientKey::new("2001:db8::1".parse().unwrap(), 128),
            ClientKey::new("2001:db8::2".parse().unwrap(), 128)
        );
    }

    #[test]
    fn neighbouring_clients_land_in_different_slots() {
        use std::collections::HashSet;
        let v4: HashSet<usize> = (0..4096u32)
            .map(|i| key(&std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string()).slot())
            .collect();
        let v6: HashSet<usize> = (0..4096u64)
            .map(|i| {
                key(&std::net::Ipv6Addr::from(u128::from(0x2001_0db8_0000_0000 + i) << 64)
                    .to_string())
                .slot()
            })
            .collect();
        assert!(v4.len() > 4000 && v6.len() > 4000, "{} and {} of 4096", v4.len(), v6.len());
    }

    #[test]
    fn connections_are_capped_per_client_and_released() {
        let table = ClientConnections::new(2);
        let a = [table.try_acquire(key("10.0.0.1")), table.try_acquire(key("10.0.0.1"))];
        assert!(a.iter().all(Option::is_some));
        assert!(table.try_acquire(key("10.0.0.1")).is_none(), "third from one client");
        let other = table.try_acquire(key("10.0.0.2"));
        assert!(other.is_some(), "another client is not affected");
        drop(a);
        assert!(table.try_acquire(key("10.0.0.1")).is_some());
        assert_eq!(table.addresses(), 1, "only 10.0.0.2 holds one now");
        drop(other);
        assert_eq!(table.counted(), 0, "every permit given back");
        assert_eq!(table.addresses(), 0);
    }

    #[test]
    fn rates_allow_the_burst_then_the_sustained_rate() {
        let t0 = Instant::now();
        let limit = RateLimit { requests_per_second: 10.0, burst: 3, delayed: 0 };
        let rates = ClientRates::new(limit, t0);
        let k = key("10.0.0.1");
        // The burst and the one request the rate allows now.
        for i in 0..4 {
            assert_eq!(rates.check(k, t0), RateVerdict::Now, "request {i}");
        }
        let RateVerdict::Refused(wait) = rates.check(k, t0) else { panic!("not refused") };
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        assert_eq!(rates.check(key("10.0.0.2"), t0), RateVerdict::Now, "another client's own");
        // After waiting as told, one more.
        assert_eq!(rates.check(k, t0 + wait), RateVerdict::Now);
        assert!(matches!(rates.check(k, t0 + wait), RateVerdict::Refused(_)));
        // A second later the burst is back.
        let later = t0 + Duration::from_secs(2);
        for _ in 0..4 {
            assert_eq!(rates.check(k, later), RateVerdict::Now);
        }
    }

    #[test]
    fn delayed_requests_wait_their_turn_then_the_rest_are_refused() {
        let t0 = Instant::now();
        let limit = RateLimit { requests_per_second: 10.0, burst: 1, delayed: 2 };
        let rates = ClientRates::new(limit, t0);
        let k = key("10.0.0.1");
        assert_eq!(rates.check(k, t0), RateVerdict::Now);
        assert_eq!(rates.check(k, t0), RateVerdict::Now, "the burst");
        assert_eq!(rates.check(k, t0), RateVerdict::After(Duration::from_millis(100)));
        assert_eq!(rates.check(k, t0), RateVerdict::After(Duration::from_millis(200)));
        assert!(matches!(rates.check(k, t0), RateVerdict::Refused(_)), "past the delayed ones");
    }

    #[test]
    fn deny_wins_and_allow_narrows() {
        let nets = |v: &[&str]| v.iter().map(|n| n.parse().unwrap()).collect();
        let list = AccessList::new(nets(&["10.0.0.0/8"]), nets(&["10.6.6.0/24"]));
        assert!(list.permits("10.1.2.3".parse().unwrap()));
        assert!(!list.permits("10.6.6.6".parse().unwrap()));
        assert!(!list.permits("192.168.1.1".parse().unwrap()));
        assert!(list.permits("::ffff:10.1.2.3".parse().unwrap()));
        let deny_only = AccessList::new(Vec::new(), nets(&["203.0.113.0/24"]));
        assert!(deny_only.permits("8.8.8.8".parse().unwrap()));
        assert!(!deny_only.permits("203.0.113.9".parse().unwrap()));
        assert!(AccessList::default().is_open());
    }
}

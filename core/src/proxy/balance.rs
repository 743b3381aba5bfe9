//! Choosing the upstream server for a request, on one core: the balancing method, passive
//! health (nginx's `max_fails` / `fail_timeout`), backups, and what an active health check
//! (`watch.rs`) says.
//!
//! - **Round robin** (default): nginx's smooth weighted round robin. Each eligible server
//!   gains its weight, the one with the most is picked and pays the total back, so weights
//!   2:1 give A A B interleaved as A B A rather than bursts.
//! - **Least requests**: the eligible server with the fewest requests in flight from this
//!   core, relative to its weight (ties: the first).
//! - **Hash** (of the client address, or of a request header): weighted rendezvous hashing:
//!   each eligible server scores `-weight / ln(h)` for a hash `h` of (key, server) in (0, 1),
//!   the highest wins. A key keeps its server while that server is eligible, and only the
//!   keys of a server that leaves move.
//!
//! Eligible: not a backup (backups only when no other server is left), not tried already for
//! this request, not skipped after failing, and not marked down by an active check.

use std::cell::Cell;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderName;

use super::{ProxyConfig, UpstreamServer};

/// How a group spreads its requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Balance {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Fewest requests in flight (per core), relative to weight.
    LeastRequests,
    /// The same client address to the same server.
    ClientIp,
    /// The same value of this request header to the same server (absent: round robin).
    Header(HeaderName),
}

/// One server's state on this core.
#[derive(Default)]
struct Server {
    fails: Cell<u32>,
    skip_until: Cell<Option<Instant>>,
    current_weight: Cell<i64>,
    in_flight: Cell<u32>,
}

/// One core's balancer for one group.
pub(crate) struct Balancer {
    config: Arc<ProxyConfig>,
    servers: Vec<Server>,
    /// Up/down per server from the active health check (all up without one).
    healthy: Arc<[AtomicBool]>,
}

impl Balancer {
    /// A balancer over `config`'s servers, reading its shared health board.
    pub(crate) fn new(config: Arc<ProxyConfig>) -> Balancer {
        let servers = (0..config.servers.len()).map(|_| Server::default()).collect();
        let healthy = Arc::clone(config.health_board());
        Balancer { config, servers, healthy }
    }

    /// The server for a request whose hash key (client address or header, per the method)
    /// is `key`, skipping `tried`; `None` when no server is left.
    pub(crate) fn pick(&self, now: Instant, tried: &[usize], key: Option<&[u8]>) -> Option<usize> {
        let all = &self.config.servers;
        // The eligible servers' indices, on the stack for any group of a usual size: this
        // runs for every proxied request, and a `Vec` cost an allocation each time.
        let mut stack = [0usize; 32];
        let mut heap = Vec::new();
        for backup in [false, true] {
            let candidates =
                (0..all.len()).filter(|&i| self.eligible(i, &all[i], backup, now, tried));
            let eligible: &[usize] = if all.len() <= stack.len() {
                let mut n = 0;
                for i in candidates {
                    stack[n] = i;
                    n += 1;
                }
                &stack[..n]
            } else {
                heap.clear();
                heap.extend(candidates);
                &heap
            };
            if eligible.is_empty() {
                continue;
            }
            return Some(match (&self.config.balance, key) {
                (Balance::LeastRequests, _) => self.least_requests(eligible),
                (Balance::ClientIp | Balance::Header(_), Some(key)) => {
                    rendezvous(all, eligible, key)
                }
                _ => self.round_robin(eligible),
            });
        }
        None
    }

    fn eligible(
        &self,
        i: usize,
        s: &UpstreamServer,
        backup: bool,
        now: Instant,
        tried: &[usize],
    ) -> bool {
        s.backup == backup
            && !tried.contains(&i)
            && self.servers[i].skip_until.get().is_none_or(|t| now >= t)
            && self.healthy[i].load(Ordering::Relaxed)
    }

    fn round_robin(&self, eligible: &[usize]) -> usize {
        let mut total: i64 = 0;
        let mut best = eligible[0];
        for &i in eligible {
            let s = &self.servers[i];
            let weight = i64::from(self.config.servers[i].weight);
            s.current_weight.set(s.current_weight.get() + weight);
            total += weight;
            if s.current_weight.get() > self.servers[best].current_weight.get() {
                best = i;
            }
        }
        let s = &self.servers[best];
        s.current_weight.set(s.current_weight.get() - total);
        best
    }

    fn least_requests(&self, eligible: &[usize]) -> usize {
        let load = |i: usize| {
            f64::from(self.servers[i].in_flight.get()) / f64::from(self.config.servers[i].weight)
        };
        let mut best = eligible[0];
        for &i in &eligible[1..] {
            if load(i) < load(best) {
                best = i;
            }
        }
        best
    }

    /// Counts a request in flight on `server` (for least requests), until [`done`](Self::done).
    pub(crate) fn started(&self, server: usize) {
        let s = &self.servers[server].in_flight;
        s.set(s.get() + 1);
    }

    /// A request counted by [`started`](Self::started) has ended.
    pub(crate) fn done(&self, server: usize) {
        let s = &self.servers[server].in_flight;
        s.set(s.get().saturating_sub(1));
    }

    /// A failed attempt: past `max_fails` in a row the server is skipped for
    /// `fail_timeout`. A lone server is never skipped (as in nginx): there is nowhere else
    /// to go, and a 503 for `fail_timeout` would outlast a quick restart of the app.
    pub(crate) fn failed(&self, server: usize, now: Instant) {
        if self.servers.len() == 1 {
            return;
        }
        let s = &self.servers[server];
        s.fails.set(s.fails.get() + 1);
        if s.fails.get() >= self.config.max_fails.max(1) {
            s.skip_until.set(Some(now + self.config.fail_timeout));
            s.fails.set(0);
        }
    }

    /// A successful attempt clears the failure count.
    pub(crate) fn succeeded(&self, server: usize) {
        self.servers[server].fails.set(0);
    }
}

/// Weighted rendezvous hashing: the eligible server scoring highest for `key`.
fn rendezvous(all: &[UpstreamServer], eligible: &[usize], key: &[u8]) -> usize {
    // A fixed hasher: the same key picks the same server on every core and every run.
    let hasher =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
    let mut best = (eligible[0], f64::NEG_INFINITY);
    for &i in eligible {
        let h = hasher.hash_one((key, all[i].name.as_str()));
        // Into (0, 1): the top 53 bits, never 0 or 1.
        let unit = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = -f64::from(all[i].weight) / unit.ln();
        if score > best.1 {
            best = (i, score);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(weights: &[u32], balance: Balance) -> Balancer {
        let servers = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let mut s = UpstreamServer::parse(&format!("127.0.0.1:{}", 1000 + i)).unwrap();
                s.weight = w;
                s
            })
            .collect();
        let mut config = ProxyConfig::new(servers);
        config.balance = balance;
        Balancer::new(Arc::new(config))
    }

    #[test]
    fn round_robin_interleaves_by_weight() {
        let b = group(&[2, 1], Balance::RoundRobin);
        let now = Instant::now();
        let picks: Vec<usize> = (0..6).map(|_| b.pick(now, &[], None).unwrap()).collect();
        assert_eq!(picks, [0, 1, 0, 0, 1, 0]);
    }

    #[test]
    fn groups_past_the_stack_s_room_are_balanced_the_same() {
        // 32 servers fit the stack's index array; 40 take the heap: each server gets its
        // turn, and the ones tried are skipped.
        for n in [32, 40] {
            let b = group(&vec![1; n], Balance::RoundRobin);
            let now = Instant::now();
            let mut picks: Vec<usize> = (0..n).map(|_| b.pick(now, &[], None).unwrap()).collect();
            picks.sort_unstable();
            assert_eq!(picks, (0..n).collect::<Vec<_>>(), "{n} servers");
            let tried: Vec<usize> = (0..n - 1).collect();
            assert_eq!(b.pick(now, &tried, None), Some(n - 1), "{n} servers");
        }
    }

    #[test]
    fn least_requests_prefers_the_idlest_server() {
        let b = group(&[1, 1, 1], Balance::LeastRequests);
        let now = Instant::now();
        let first = b.pick(now, &[], None).unwrap();
        b.started(first);
        let second = b.pick(now, &[], None).unwrap();
        b.started(second);
        assert_eq!(b.pick(now, &[], None), Some(2), "0 and 1 are busy");
        b.done(first);
        assert_eq!(b.pick(now, &[], None), Some(first));
    }

    #[test]
    fn a_hash_key_sticks_to_its_server_and_only_a_leaver_s_keys_move() {
        let b = group(&[1, 1, 1, 1], Balance::ClientIp);
        let now = Instant::now();
        let keys: Vec<String> = (0..200).map(|i| format!("10.0.{}.{}", i / 250, i % 250)).collect();
        let before: Vec<usize> =
            keys.iter().map(|k| b.pick(now, &[], Some(k.as_bytes())).unwrap()).collect();
        let again: Vec<usize> =
            keys.iter().map(|k| b.pick(now, &[], Some(k.as_bytes())).unwrap()).collect();
        assert_eq!(before, again, "stable");
        for s in 0..4 {
            assert!(before.iter().filter(|&&p| p == s).count() > 20, "spread: {before:?}");
        }
        b.healthy[2].store(false, Ordering::Relaxed);
        for (k, &was) in keys.iter().zip(&before) {
            let now_on = b.pick(now, &[], Some(k.as_bytes())).unwrap();
            if was != 2 {
                assert_eq!(now_on, was, "a key of a server that stayed moved");
            } else {
                assert_ne!(now_on, 2);
            }
        }
    }

    #[test]
    fn backups_only_when_no_other_is_left() {
        let mut servers = vec![UpstreamServer::parse("127.0.0.1:1").unwrap()];
        let mut backup = UpstreamServer::parse("127.0.0.1:2").unwrap();
        backup.backup = true;
        servers.push(backup);
        let b = Balancer::new(Arc::new(ProxyConfig::new(servers)));
        let now = Instant::now();
        assert_eq!(b.pick(now, &[], None), Some(0));
        assert_eq!(b.pick(now, &[], None), Some(0));
        assert_eq!(b.pick(now, &[0], None), Some(1));
        b.healthy[0].store(false, Ordering::Relaxed);
        assert_eq!(b.pick(now, &[], None), Some(1));
    }
}

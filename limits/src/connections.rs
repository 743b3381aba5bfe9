//! The process-wide connection cap.
//!
//! One atomic counter shared by all cores. It is touched when a connection is accepted and
//! when it closes, never per request, so it stays off the request path; a per-core split of
//! the cap would refuse connections on a busy core while another core sits under its share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counts open connections against `max_connections`.
#[derive(Debug)]
pub struct ConnectionLimiter {
    /// Changed only by a reload ([`set_max`](Self::set_max)).
    max: AtomicU64,
    open: AtomicU64,
}

impl ConnectionLimiter {
    /// A limiter allowing `max` simultaneous connections.
    pub fn new(max: u64) -> Arc<Self> {
        Arc::new(ConnectionLimiter { max: AtomicU64::new(max), open: AtomicU64::new(0) })
    }

    /// Takes a slot for a new connection, or `None` when the cap is reached. The slot is
    /// returned when the permit is dropped.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnectionPermit> {
        let max = self.max.load(Ordering::Relaxed);
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= max {
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(ConnectionPermit { limiter: Arc::clone(self) }),
                Err(actual) => open = actual,
            }
        }
    }

    /// Takes a slot even past the cap: for a connection admitted in place of an idle one
    /// being closed to make room (the count is over the cap only until that one closes).
    pub fn acquire_over(self: &Arc<Self>) -> ConnectionPermit {
        self.open.fetch_add(1, Ordering::AcqRel);
        ConnectionPermit { limiter: Arc::clone(self) }
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// The cap.
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// Changes the cap (a config reload). Connections already open above a lowered cap
    /// stay; new ones wait until the count is under it.
    pub fn set_max(&self, max: u64) {
        self.max.store(max, Ordering::Relaxed);
    }
}

/// One open connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    limiter: Arc<ConnectionLimiter>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limiter.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_is_enforced_and_slots_come_back() {
        let limiter = ConnectionLimiter::new(2);
        let a = limiter.try_acquire().unwrap();
        let _b = limiter.try_acquire().unwrap();
        assert!(limiter.try_acquire().is_none());
        drop(a);
        assert_eq!(limiter.open(), 1);
        assert!(limiter.try_acquire().is_some());
        let _c = limiter.try_acquire().unwrap();
        assert!(limiter.try_acquire().is_none());
        let over = limiter.acquire_over();
        assert_eq!(limiter.open(), 3, "past the cap, by one");
        drop(over);
        assert_eq!(limiter.open(), 2);
    }
}

//! Minimum data rate with a grace period.
//!
//! Kestrel samples throughput once a second; here the meter instead answers one question the
//! connection loop can turn into a timer: *by when must the next bytes have arrived?* The
//! clock only runs while the server is actually waiting on the peer (not while the handler
//! holds the body unread), so a slow handler never counts against a fast client.

use std::time::{Duration, Instant};

use crate::MinDataRate;

/// Tracks bytes moved against time spent waiting for the peer.
#[derive(Debug, Clone)]
pub struct DataRate {
    min: MinDataRate,
    bytes: u64,
    waited: Duration,
    waiting_since: Option<Instant>,
}

impl DataRate {
    /// A meter enforcing `min`.
    pub fn new(min: MinDataRate) -> Self {
        DataRate { min, bytes: 0, waited: Duration::ZERO, waiting_since: None }
    }

    /// The server starts waiting for the peer at `now`. Returns the deadline by which the
    /// peer must have moved more bytes, or the rate is violated.
    pub fn start_wait(&mut self, now: Instant) -> Instant {
        self.waiting_since = Some(now);
        now + self.allowance()
    }

    /// The wait that began with [`start_wait`](Self::start_wait) ended at `now` with `bytes`
    /// moved.
    pub fn end_wait(&mut self, now: Instant, bytes: u64) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += now.saturating_duration_since(since);
        }
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// Bytes moved so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// How much more waiting is allowed before the rate is violated: the grace period plus
    /// the time the bytes so far have earned at the minimum rate, minus the time already
    /// waited.
    fn allowance(&self) -> Duration {
        let earned = Duration::from_secs_f64(self.bytes as f64 / self.min.bytes_per_second);
        (self.min.grace_period + earned).saturating_sub(self.waited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter() -> DataRate {
        DataRate::new(MinDataRate { bytes_per_second: 100.0, grace_period: Duration::from_secs(5) })
    }

    #[test]
    fn grace_period_comes_first() {
        let t0 = Instant::now();
        let mut m = meter();
        assert_eq!(m.start_wait(t0), t0 + Duration::from_secs(5));
    }

    #[test]
    fn bytes_earn_time_at_the_minimum_rate() {
        let t0 = Instant::now();
        let mut m = meter();
        m.start_wait(t0);
        // 4 s waited for 200 bytes: 5 s grace + 2 s earned - 4 s waited = 3 s left.
        m.end_wait(t0 + Duration::from_secs(4), 200);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(m.start_wait(t1), t1 + Duration::from_secs(3));
    }

    #[test]
    fn time_not_spent_waiting_does_not_count() {
        let t0 = Instant::now();
        let mut m = meter();
        m.start_wait(t0);
        m.end_wait(t0 + Duration::from_secs(1), 0);
        // An hour passes with the handler holding the body unread: still 4 s of grace left.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(m.start_wait(later), later + Duration::from_secs(4));
    }

    #[test]
    fn a_trickle_runs_out_of_allowance() {
        let t0 = Instant::now();
        let mut m = meter();
        let mut now = t0;
        // One byte a second never keeps up with 100 B/s: the allowance shrinks to zero.
        for _ in 0..20 {
            m.start_wait(now);
            now += Duration::from_secs(1);
            m.end_wait(now, 1);
        }
        assert_eq!(m.start_wait(now), now);
    }
}

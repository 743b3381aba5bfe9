//! Giving freed memory back to the OS once a core goes quiet.
//!
//! An allocator keeps the pages of freed blocks for reuse; mimalloc gives them back only when
//! later allocations pass by them. A core that served a burst of requests and then holds
//! thousands of idle connections would keep the burst's pages for as long as it stays idle,
//! and they would count in its RSS as if the idle connections held them. So, after a quiet
//! spell that follows some activity, the reactor calls the release hook the binary installs
//! (`ServerConfig::release_memory`). Under steady load a core is never quiet for that long,
//! and freed pages are reused as they should be.

use std::time::{Duration, Instant};

/// How long a core must see no IO and run no task before it gives memory back.
pub(crate) const QUIET_TIME: Duration = Duration::from_millis(250);

/// One core's quiet-time release.
pub(crate) struct QuietRelease {
    release: Option<fn()>,
    /// When to release, if the core stays quiet until then; `None`: nothing to give back.
    due: Option<Instant>,
}

impl QuietRelease {
    /// A release that calls `release` (nothing when `None`).
    pub(crate) fn new(release: Option<fn()>) -> QuietRelease {
        QuietRelease { release, due: None }
    }

    /// When the reactor must wake to release, if nothing happens before.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.due
    }

    /// After a reactor turn: `busy` when it ran tasks or received completions.
    pub(crate) fn after_turn(&mut self, busy: bool, now: Instant) {
        let Some(release) = self.release else { return };
        if busy {
            self.due = Some(now + QUIET_TIME);
        } else if self.due.is_some_and(|due| now >= due) {
            self.due = None;
            release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local!(static CALLS: Cell<u32> = const { Cell::new(0) });

    fn count() {
        CALLS.with(|c| c.set(c.get() + 1));
    }

    #[test]
    fn releases_once_after_a_quiet_spell_that_follows_work() {
        let mut q = QuietRelease::new(Some(count));
        let t = Instant::now();
        q.after_turn(false, t);
        assert_eq!(q.deadline(), None, "nothing happened: nothing to give back");
        q.after_turn(true, t);
        q.after_turn(false, t + QUIET_TIME / 2);
        q.after_turn(true, t + QUIET_TIME / 2);
        q.after_turn(false, t + QUIET_TIME);
        assert_eq!(CALLS.with(Cell::get), 0, "work keeps pushing the release out");
        q.after_turn(false, t + QUIET_TIME * 2);
        assert_eq!(CALLS.with(Cell::get), 1);
        q.after_turn(false, t + QUIET_TIME * 10);
        assert_eq!(CALLS.with(Cell::get), 1, "one release per quiet spell");
        assert_eq!(q.deadline(), None);
    }
}

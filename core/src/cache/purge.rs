//! Purges from the admin listener, to every core's stores: a shared, bounded log with a
//! generation number. A core compares the generation with the one it last applied (one
//! atomic load per cached request) and applies what it has not seen; a core so far behind
//! that the log has dropped its part clears its stores instead.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// Every entry of every cache.
    All,
    /// One key: the host (without port) and the path with its query, every variant.
    Key {
        /// The request's host.
        host: String,
        /// Path and query, as requested (`/a?b=1`).
        path: String,
    },
}

/// Purges kept for cores that have not applied them yet.
const LOG_MAX: usize = 1024;

struct Log {
    /// The generation of `items[0]`.
    base: u64,
    items: VecDeque<Purge>,
}

static LOG: Mutex<Log> = Mutex::new(Log { base: 0, items: VecDeque::new() });
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Purges from every core's caches (each applies it before its next cached request).
pub fn purge(p: Purge) {
    let mut log = LOG.lock().unwrap_or_else(|e| e.into_inner());
    log.items.push_back(p);
    if log.items.len() > LOG_MAX {
        log.items.pop_front();
        log.base += 1;
    }
    GENERATION.store(log.base + log.items.len() as u64, Ordering::Release);
}

/// The number of purges made so far.
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Applies (through `apply`) the purges after the first `seen`; returns the generation now.
pub(crate) fn since(seen: u64, mut apply: impl FnMut(&Purge)) -> u64 {
    let log = LOG.lock().unwrap_or_else(|e| e.into_inner());
    if seen < log.base {
        apply(&Purge::All);
    }
    let skip = seen.saturating_sub(log.base) as usize;
    for p in log.items.iter().skip(skip) {
        apply(p);
    }
    log.base + log.items.len() as u64
}

//! One core's cached responses: an LRU of keys (`host` + path and query), each with the
//! variants its responses' `Vary` named, bounded in entries and in bytes.

use std::num::NonZeroUsize;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use lru::LruCache;

/// A stored response.
pub(crate) struct Stored {
    pub(crate) status: StatusCode,
    /// The response's fields, without hop-by-hop ones and without `Age`.
    pub(crate) headers: HeaderMap,
    /// The same with the cache's status header saying HIT and an `Age`, ready for hits (the
    /// age is brought up to date once a second, not formatted per hit).
    pub(crate) hit_headers: std::cell::RefCell<(HeaderMap, u64)>,
    pub(crate) body: Bytes,
    pub(crate) stored_at: Instant,
    /// Its age when it arrived.
    pub(crate) initial_age: Duration,
    pub(crate) lifetime: Duration,
    /// The request fields its `Vary` names, with the values they had.
    pub(crate) vary: Vec<(HeaderName, Option<HeaderValue>)>,
}

impl Stored {
    /// Its current age (§4.2.3, with the cache's own clock).
    pub(crate) fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored_at)
    }

    pub(crate) fn is_fresh(&self, now: Instant) -> bool {
        self.age(now) < self.lifetime
    }

    /// Whether a request with `headers` selects this variant.
    fn selected_by(&self, headers: &HeaderMap) -> bool {
        self.vary.iter().all(|(name, value)| headers.get(name) == value.as_ref())
    }

    fn size(&self) -> usize {
        self.body.len()
            + 2 * self.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum::<usize>()
            + 256
    }
}

/// See the module doc.
pub(crate) struct Store {
    entries: LruCache<String, Vec<Rc<Stored>>>,
    bytes: usize,
    max_bytes: usize,
}

/// What a lookup found.
pub(crate) enum Found {
    Fresh(Rc<Stored>),
    /// An entry whose lifetime is over (removed).
    Expired,
    Missing,
}

impl Store {
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Store {
        let cap = NonZeroUsize::new(max_entries.max(1)).expect("at least one");
        Store { entries: LruCache::new(cap), bytes: 0, max_bytes }
    }

    /// The variant of `key` a request with `headers` selects.
    pub(crate) fn get(&mut self, key: &str, headers: &HeaderMap, now: Instant) -> Found {
        let Some(variants) = self.entries.get_mut(key) else { return Found::Missing };
        let Some(i) = variants.iter().position(|v| v.selected_by(headers)) else {
            return Found::Missing;
        };
        if variants[i].is_fresh(now) {
            return Found::Fresh(Rc::clone(&variants[i]));
        }
        let old = variants.swap_remove(i);
        self.bytes -= old.size();
        if variants.is_empty() {
            self.entries.pop(key);
        }
        Found::Expired
    }

    /// Stores `stored` as a variant of `key` (replacing the one it selects the same way).
    pub(crate) fn put(&mut self, key: &str, stored: Stored) {
        let size = stored.size();
        if size > self.max_bytes {
            return;
        }
        if let Some(variants) = self.entries.get_mut(key) {
            if let Some(i) = variants.iter().position(|v| v.vary == stored.vary) {
                let old = variants.swap_remove(i);
                self.bytes -= old.size();
            }
        }
        while self.bytes + size > self.max_bytes {
            let Some((_, evicted)) = self.entries.pop_lru() else { break };
            self.bytes -= evicted.iter().map(|v| v.size()).sum::<usize>();
        }
        self.bytes += size;
        match self.entries.get_mut(key) {
            Some(variants) => variants.push(Rc::new(stored)),
            None => {
                if let Some((_, evicted)) =
                    self.entries.push(key.to_string(), vec![Rc::new(stored)])
                {
                    self.bytes -= evicted.iter().map(|v| v.size()).sum::<usize>();
                }
            }
        }
    }

    /// Removes `key` (every variant); whether there was one.
    pub(crate) fn remove(&mut self, key: &str) -> bool {
        match self.entries.pop(key) {
            Some(variants) => {
                self.bytes -= variants.iter().map(|v| v.size()).sum::<usize>();
                true
            }
            None => false,
        }
    }

    /// Removes every entry.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Entries and bytes held.
    pub(crate) fn usage(&self) -> (usize, usize) {
        (self.entries.len(), self.bytes)
    }
}

//! One core's cached responses: an LRU of keys (`host` + path and query), each with the
//! variants its responses' `Vary` named, bounded in entries and in bytes.

use std::cell::RefCell;
use std::num::NonZeroUsize;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use lru::LruCache;

use peregrine_protocols::h2::ResponseStart;

use crate::answer_start::H1Start;
use crate::handler::Head;

/// A stored response.
pub(crate) struct Stored {
    pub(crate) status: StatusCode,
    /// The response's fields, without hop-by-hop ones and without `Age`.
    pub(crate) headers: HeaderMap,
    /// The same with the cache's status header saying HIT and an `Age`, ready for hits (see
    /// [`HitFields`]).
    hit: RefCell<HitFields>,
    pub(crate) body: Bytes,
    stored_at: Instant,
    /// Its age when it arrived.
    initial_age: Duration,
    /// When its freshness lifetime is over (§4.2: its age then reaches the lifetime).
    fresh_until: Instant,
    /// The request fields its `Vary` names, with the values they had.
    pub(crate) vary: Vec<(HeaderName, Option<HeaderValue>)>,
}

/// A stored response's fields as hits give them, brought up to date once a second (so a hit
/// neither formats `Age` nor does clock arithmetic), and their encodings as each protocol
/// writes the start of a head, made at the first hit that needs one and dropped when `Age`
/// moves on. The fields are shared with the hits answered from them
/// ([`CacheHit`](crate::CacheHit)), which copy none of it.
struct HitFields {
    fields: Rc<HeaderMap>,
    /// Until when `Age` is right.
    until: Instant,
    h1: Option<Rc<H1Start>>,
    h2: Option<ResponseStart>,
}

/// How old a response was when it arrived, and until what age it is fresh.
pub(crate) struct Freshness {
    pub(crate) initial_age: Duration,
    pub(crate) lifetime: Duration,
}

impl Stored {
    /// A response stored at `now`. `hit_headers` are its fields as a hit gives them, but for
    /// `Age`.
    pub(crate) fn new(
        status: StatusCode,
        headers: HeaderMap,
        hit_headers: HeaderMap,
        body: Bytes,
        now: Instant,
        Freshness { initial_age, lifetime }: Freshness,
        vary: Vec<(HeaderName, Option<HeaderValue>)>,
    ) -> Stored {
        let stored = Stored {
            status,
            headers,
            hit: RefCell::new(HitFields {
                fields: Rc::new(hit_headers),
                until: now,
                h1: None,
                h2: None,
            }),
            body,
            stored_at: now,
            initial_age,
            // Both are at most `policy::MAX_DELTA` (68 years): this cannot overflow.
            fresh_until: now + lifetime.saturating_sub(initial_age).min(super::policy::MAX_DELTA),
            vary,
        };
        stored.refresh_age(&mut stored.hit.borrow_mut(), now);
        stored
    }

    /// Its current age (§4.2.3, with the cache's own clock).
    pub(crate) fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored_at)
    }

    pub(crate) fn is_fresh(&self, now: Instant) -> bool {
        now < self.fresh_until
    }

    /// The fields of a hit at `now`.
    pub(crate) fn hit_headers(&self, now: Instant) -> Rc<HeaderMap> {
        let mut hit = self.hit.borrow_mut();
        if now >= hit.until {
            self.refresh_age(&mut hit, now);
        }
        Rc::clone(&hit.fields)
    }

    /// The start of an HTTP/1 head for a hit with `fields` (as [`hit_headers`]
    /// (Self::hit_headers) gave them), made by `make` at the first hit that asks; `None`
    /// once `Age` has moved on from those fields (the caller makes its own).
    pub(crate) fn h1_start(
        &self,
        fields: &Rc<HeaderMap>,
        make: impl FnOnce() -> H1Start,
    ) -> Option<Rc<H1Start>> {
        let mut hit = self.hit.borrow_mut();
        // The caller holds `fields`: their allocation cannot have been reused.
        if !Rc::ptr_eq(&hit.fields, fields) {
            return None;
        }
        Some(Rc::clone(hit.h1.get_or_insert_with(|| Rc::new(make()))))
    }

    /// [`h1_start`](Self::h1_start) for HTTP/2: the start of a header block.
    pub(crate) fn h2_start(
        &self,
        fields: &Rc<HeaderMap>,
        make: impl FnOnce() -> ResponseStart,
    ) -> Option<ResponseStart> {
        let mut hit = self.hit.borrow_mut();
        if !Rc::ptr_eq(&hit.fields, fields) {
            return None;
        }
        Some(hit.h2.get_or_insert_with(make).clone())
    }

    /// Sets `Age` to the age at `now` (whole seconds), and when it next changes; the
    /// encodings of the old fields go. (A hit still holding the fields keeps its own copy.)
    fn refresh_age(&self, hit: &mut HitFields, now: Instant) {
        let age = self.age(now);
        let seconds = age.as_secs();
        Rc::make_mut(&mut hit.fields).insert(http::header::AGE, HeaderValue::from(seconds));
        hit.until = now + (Duration::from_secs(seconds.saturating_add(1)) - age);
        (hit.h1, hit.h2) = (None, None);
    }

    /// Whether `request` selects this variant.
    fn selected_by(&self, request: &Head<'_>) -> bool {
        self.vary.iter().all(|(name, value)| {
            request.header(name.as_str()) == value.as_ref().map(|v| v.as_bytes())
        })
    }

    fn size(&self) -> usize {
        self.body.len()
            + 2 * self.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum::<usize>()
            + 256
    }
}

/// See the module doc.
pub(crate) struct Store {
    entries: LruCache<Vec<u8>, Vec<Rc<Stored>>>,
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
    pub(crate) fn get(
        &mut self,
        key: &[u8],
        request: &Head<'_>,
        now: Instant,
        evict: bool,
    ) -> Found {
        let Some(variants) = self.entries.get_mut(key) else { return Found::Missing };
        let Some(i) = variants.iter().position(|v| v.selected_by(request)) else {
            return Found::Missing;
        };
        if variants[i].is_fresh(now) {
            return Found::Fresh(Rc::clone(&variants[i]));
        }
        if !evict {
            return Found::Expired;
        }
        let old = variants.swap_remove(i);
        self.bytes -= old.size();
        if variants.is_empty() {
            self.entries.pop(key);
        }
        Found::Expired
    }

    /// Stores `stored` as a variant of `key` (replacing the one it selects the same way).
    pub(crate) fn put(&mut self, key: &[u8], stored: Stored) {
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
                if let Some((_, evicted)) = self.entries.push(key.to_vec(), vec![Rc::new(stored)]) {
                    self.bytes -= evicted.iter().map(|v| v.size()).sum::<usize>();
                }
            }
        }
    }

    /// Removes `key` (every variant); whether there was one.
    pub(crate) fn remove(&mut self, key: &[u8]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(now: Instant, initial_age: Duration, lifetime: Duration) -> Stored {
        let (headers, hit) = (HeaderMap::new(), HeaderMap::new());
        let freshness = Freshness { initial_age, lifetime };
        Stored::new(StatusCode::OK, headers, hit, Bytes::new(), now, freshness, vec![])
    }

    fn age(s: &Stored, now: Instant) -> String {
        s.hit_headers(now)[http::header::AGE].to_str().unwrap().to_string()
    }

    #[test]
    fn age_counts_whole_seconds_from_the_age_it_arrived_with() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let s = stored(t0, ms(2_500), Duration::from_secs(10));
        assert_eq!(age(&s, t0), "2");
        assert_eq!(age(&s, t0 + ms(499)), "2");
        assert_eq!(age(&s, t0 + ms(500)), "3");
        assert_eq!(age(&s, t0 + ms(1_499)), "3");
        assert_eq!(age(&s, t0 + ms(61_600)), "64");
    }

    #[test]
    fn fresh_until_its_age_reaches_the_lifetime() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let s = stored(t0, ms(2_500), Duration::from_secs(10));
        assert!(s.is_fresh(t0 + ms(7_499)));
        assert!(!s.is_fresh(t0 + ms(7_500)));
        // Older on arrival than its lifetime: never fresh.
        assert!(!stored(t0, Duration::from_secs(11), Duration::from_secs(10)).is_fresh(t0));
    }

    #[test]
    fn the_largest_ages_and_lifetimes_do_not_overflow() {
        let t0 = Instant::now();
        let max = super::super::policy::MAX_DELTA;
        let s = stored(t0, Duration::ZERO, max);
        assert!(s.is_fresh(t0 + Duration::from_secs(3600)));
        let s = stored(t0, max, max);
        assert_eq!(age(&s, t0), (1u64 << 31).to_string());
        assert!(!s.is_fresh(t0));
    }
}

//! The response cache: HTTP.sys's kernel response cache and nginx's `proxy_cache`, in
//! memory, for the responses of the proxy and hosted apps (routes with `cache = true`, or
//! `--cache` with `--proxy`/`--app`).
//!
//! ```text
//!   request ─► policy: bypass? ──────────────────────────────► upstream (x-cache: BYPASS)
//!           ─► store: fresh variant? ─► 200 from memory, Age (HIT), or 304 when the
//!                                       client's validators match
//!           ─► a miss already in flight for this key on this core? wait (lock_timeout),
//!                                       then look again (nginx's proxy_cache_lock)
//!           ─► upstream (HEAD asked as GET) ─► storable? body read (max_entry_size) and
//!                                       stored ─► the client (MISS / EXPIRED)
//! ```
//!
//! Per core, like everything on the request path: each core's store is its own (no lock, no
//! shared cache line on a hit), so memory is bounded per core (`max_size` × cores) and a
//! response is fetched once per core that is asked for it, not once per server. Purges
//! from the admin listener reach every core through a shared log each core reads when its
//! generation changes (one atomic load per cached request).

mod metrics;
mod policy;
mod purge;
mod store;

pub(crate) use metrics::render;
pub use purge::{purge, Purge};

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use serde::Deserialize;

use crate::handler::{Answer, CacheHit, Head};
use crate::{rt, Body, BodyChunk};
use policy::{Lookup, Rules};
pub(crate) use store::Stored;
use store::{Found, Freshness, Store};

/// `[cache]`: the response cache's settings (per core: each core has its own store).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// Bytes of responses each core's store of a route holds at most.
    pub max_size: u64,
    /// Responses each core's store of a route holds at most.
    pub max_entries: usize,
    /// A response larger than this is passed through, not stored.
    pub max_entry_size: u64,
    /// Statuses that may be stored (with freshness from the response's fields).
    pub statuses: Vec<u16>,
    /// Freshness for a storable response that gives none (`Cache-Control: max-age`,
    /// `s-maxage` or `Expires`); absent: such responses are not stored.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Option<Duration>,
    /// How long a request waits for another request's fetch of the same key before it
    /// goes upstream itself.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// The response field that says HIT, MISS, EXPIRED or BYPASS (empty: none).
    pub status_header: String,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            max_size: 64 * 1024 * 1024,
            max_entries: 10_000,
            max_entry_size: 1024 * 1024,
            statuses: vec![200, 203, 204, 300, 301, 308, 404, 410],
            default_ttl: None,
            lock_timeout: Duration::from_secs(5),
            status_header: "x-cache".into(),
        }
    }
}

impl CacheSection {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_entries == 0 || self.max_size == 0 {
            return Err("max_entries and max_size: at least 1".into());
        }
        if let Some(s) = self.statuses.iter().find(|s| !(100..=999).contains(*s)) {
            return Err(format!("statuses: {s} is not a status code"));
        }
        if !self.status_header.is_empty() && HeaderName::try_from(&self.status_header).is_err() {
            return Err("status_header: not a header name".into());
        }
        Ok(())
    }
}

/// What the cache did with a request (the status header's value and the metrics' label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Hit,
    Miss,
    Expired,
    Bypass,
}

impl Outcome {
    fn token(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Expired => "EXPIRED",
            Outcome::Bypass => "BYPASS",
        }
    }
}

/// Why [`ResponseCache::hit`] found no answer: what [`ResponseCache::fetch`] needs.
#[derive(Debug)]
pub struct Miss {
    /// The key to store under (`None`: the request bypasses the cache).
    key: Option<Vec<u8>>,
    outcome: Outcome,
}

/// A fetch in flight for one key on this core, that others wait on.
#[derive(Default)]
struct Flight {
    done: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

/// One core's cache for one route (see the module doc).
pub struct ResponseCache {
    section: Arc<CacheSection>,
    status_header: Option<HeaderName>,
    store: RefCell<Store>,
    flights: RefCell<HashMap<Vec<u8>, Rc<Flight>>>,
    /// Where each request's key is built.
    key: RefCell<Vec<u8>>,
    metrics: Arc<metrics::CacheMetrics>,
    purges_seen: Cell<u64>,
}

impl ResponseCache {
    /// This core's cache for the route labelled `name` (the metrics' `cache` label).
    pub fn new(name: &str, section: Arc<CacheSection>) -> ResponseCache {
        let store = Store::new(section.max_entries, section.max_size as usize);
        ResponseCache {
            // The default name is a static one: cloning it into every hit's fields is free.
            status_header: match section.status_header.as_str() {
                "x-cache" => Some(HeaderName::from_static("x-cache")),
                name => HeaderName::try_from(name).ok(),
            },
            store: RefCell::new(store),
            flights: RefCell::default(),
            key: RefCell::default(),
            metrics: metrics::register(name),
            purges_seen: Cell::new(purge::generation()),
            section,
        }
    }

    /// Answers `request` from the store, or through `fetch` (storing what may be stored).
    pub async fn serve<F, Fut>(&self, request: Request<Body>, fetch: F) -> Response<Body>
    where
        F: FnOnce(Request<Body>) -> Fut,
        Fut: Future<Output = Response<Body>>,
    {
        match self.hit(&request) {
            Ok(hit) => hit,
            Err(miss) => self.fetch(request, miss, fetch).await,
        }
    }

    /// The stored answer to `request`, without awaiting anything (a caller can try it
    /// before building [`fetch`](Self::fetch)'s future), or what the fetch needs to know.
    pub fn hit(&self, request: &Request<Body>) -> Result<Response<Body>, Miss> {
        let head = Head::of(request);
        self.find(&head, true).map(|hit| self.respond(hit, &head))
    }

    /// A fresh hit for a request's head alone, before any `Request` is built (what a
    /// handler's [`answer`](crate::Handler::answer) asks). Nothing else changes: an expired
    /// entry stays for [`hit`](Self::hit) to report and the fetch to replace.
    pub(crate) fn fresh_hit(&self, head: &Head<'_>) -> Option<Answer> {
        let hit = self.find(head, false).ok()?;
        if hit.conditional && not_modified(head, &hit.stored.headers) {
            return Some(Answer::Response(self.respond(hit, head)));
        }
        // The fields are the entry's, shared: nothing is copied into a map.
        let Hit { stored, now, .. } = hit;
        let fields = stored.hit_headers(now);
        let (status, body) = (stored.status, stored.body.clone());
        Some(Answer::CacheHit(CacheHit { status, fields, body, entry: stored }))
    }

    /// [`hit`](Self::hit); `evict`: an expired entry found is dropped (and reported).
    fn find(&self, head: &Head<'_>, evict: bool) -> Result<Hit, Miss> {
        self.apply_purges();
        let (refresh, conditional) = match policy::request(head) {
            Lookup::Bypass => return Err(Miss { key: None, outcome: Outcome::Bypass }),
            Lookup::Cache { refresh, conditional } => (refresh, conditional),
        };
        // The key is built in a buffer this cache keeps: a hit allocates none.
        let mut key = self.key.borrow_mut();
        key_of(head, &mut key);
        if refresh {
            return Err(Miss { key: Some(key.clone()), outcome: Outcome::Miss });
        }
        match self.lookup(&key, head, conditional, evict) {
            Ok(hit) => Ok(hit),
            Err(outcome) => Err(Miss { key: Some(key.clone()), outcome }),
        }
    }

    /// Answers a request [`hit`](Self::hit) could not: waits for a fetch of the same key in
    /// flight, else asks `fetch` and stores what may be stored.
    pub async fn fetch<F, Fut>(
        &self,
        mut request: Request<Body>,
        miss: Miss,
        fetch: F,
    ) -> Response<Body>
    where
        F: FnOnce(Request<Body>) -> Fut,
        Fut: Future<Output = Response<Body>>,
    {
        let Miss { key, outcome } = miss;
        let Some(key) = key else {
            self.metrics.count(Outcome::Bypass);
            let response = fetch(request).await;
            return self.mark(response, Outcome::Bypass);
        };
        let flight = self.flights.borrow().get(&key).cloned();
        if let Some(flight) = flight {
            let deadline = rt::now() + self.section.lock_timeout;
            rt::timer::timeout(deadline, wait(&flight)).await;
            let head = Head::of(&request);
            if let Ok(hit) = self.lookup(&key, &head, true, true) {
                return self.respond(hit, &head);
            }
        }
        let _flight = FlightGuard::start(self, &key);
        let authorized = request.headers().contains_key(header::AUTHORIZATION);
        let request_headers = request.headers().clone();
        let (asked_uri, asked_version) = (request.uri().clone(), request.version());
        // HEAD is asked as GET, so the answer can serve both (nginx's proxy_cache_convert_head).
        *request.method_mut() = Method::GET;
        let response = fetch(request).await;
        self.metrics.count(outcome);
        let rules = Rules {
            statuses: &self.section.statuses,
            default_ttl: self.section.default_ttl,
            authorized,
        };
        let lifetime = policy::freshness(
            response.status(),
            response.headers(),
            &rules,
            std::time::SystemTime::now(),
        );
        let fits = response.body().exact_len().is_none_or(|n| n <= self.section.max_entry_size);
        // One that arrives as old as its lifetime (its `Age`) would never be served: not kept.
        let initial_age = policy::initial_age(response.headers());
        let (Some(lifetime), true) = (lifetime.filter(|l| *l > initial_age), fits) else {
            return self.mark(response, outcome);
        };
        let (parts, body) = response.into_parts();
        let declared = body.exact_len();
        let body = match collect_bounded(body, self.section.max_entry_size as usize).await {
            Ok(b) => b,
            Err(Unstorable::TooLarge(prefix, rest)) => {
                let response = Response::from_parts(parts, chain(prefix, rest, declared));
                return self.mark(response, outcome);
            }
            Err(Unstorable::Failed(e)) => {
                tracing::debug!(error = %e, "upstream body failed while caching");
                return crate::handler::respond(
                    StatusCode::BAD_GATEWAY,
                    crate::handler::content_type::TEXT,
                    "Bad Gateway\n",
                );
            }
        };
        let vary = vary_of(&parts.headers, &request_headers);
        let mut headers = parts.headers;
        headers.remove(header::AGE);
        if let Some(name) = &self.status_header {
            headers.remove(name);
        }
        let mut hit_headers = headers.clone();
        // Both protocols frame a response from its body and skip the map's length, so a
        // hit does not carry it. Fields of one connection are not for the next ones (RFC
        // 9111 §3.1 lets a cache drop them before storing): a hit asks no close.
        hit_headers.remove(header::CONTENT_LENGTH);
        crate::proxy::forward::remove_hop_by_hop(&mut hit_headers);
        if let Some(name) = &self.status_header {
            hit_headers.insert(name.clone(), HeaderValue::from_static(Outcome::Hit.token()));
        }
        let stored = Stored::new(
            parts.status,
            headers,
            hit_headers,
            body,
            rt::now(),
            Freshness { initial_age, lifetime },
            vary,
        );
        let fields = crate::handler::Fields::Map(&request_headers);
        let asked = Head::new(&Method::GET, &asked_uri, asked_version, fields);
        let fresh = not_modified(&asked, &stored.headers);
        let response = self.mark(stored_response(&stored, fresh, stored.headers.clone()), outcome);
        self.metrics.stored();
        let mut store = self.store.borrow_mut();
        store.put(&key, stored);
        self.metrics.usage(store.usage());
        response
    }

    /// A fresh stored answer to `request`, or why there is none.
    /// (`conditional`: the request may carry validators; false skips looking for them.)
    fn lookup(
        &self,
        key: &[u8],
        request: &Head<'_>,
        conditional: bool,
        evict: bool,
    ) -> Result<Hit, Outcome> {
        let now = rt::now();
        let found = self.store.borrow_mut().get(key, request, now, evict);
        match found {
            Found::Fresh(stored) => {
                self.metrics.count(Outcome::Hit);
                Ok(Hit { stored, conditional, now })
            }
            Found::Expired => Err(Outcome::Expired),
            Found::Missing => Err(Outcome::Miss),
        }
    }

    /// The response for a hit on `request`: `304` when the request's validators match the
    /// entry (and it may carry validators).
    fn respond(&self, hit: Hit, request: &Head<'_>) -> Response<Body> {
        let Hit { stored, conditional, now } = hit;
        let not_modified = conditional && not_modified(request, &stored.headers);
        // The hit's fields were prepared when it was stored (with the status header).
        let fields = HeaderMap::clone(&stored.hit_headers(now));
        stored_response(&stored, not_modified, fields)
    }

    fn mark(&self, mut response: Response<Body>, outcome: Outcome) -> Response<Body> {
        if let Some(name) = &self.status_header {
            response.headers_mut().insert(name.clone(), HeaderValue::from_static(outcome.token()));
        }
        response
    }

    /// Applies purges made since this core last looked.
    fn apply_purges(&self) {
        let seen = self.purges_seen.get();
        if purge::generation() == seen {
            return;
        }
        let mut store = self.store.borrow_mut();
        let now = purge::since(seen, |p| match p {
            Purge::All => store.clear(),
            Purge::Key { host, path } => {
                store.remove(format!("{}\n{path}", host.to_ascii_lowercase()).as_bytes());
            }
        });
        self.purges_seen.set(now);
        self.metrics.usage(store.usage());
    }
}

/// A response from entry `s` with `fields`: a `304` without a body when `not_modified`.
fn stored_response(s: &Stored, not_modified: bool, fields: HeaderMap) -> Response<Body> {
    // HEAD gets the body too: the protocol writes its length and never its bytes.
    let body = if not_modified { Body::empty() } else { Body::from(s.body.clone()) };
    let mut r = Response::new(body);
    *r.status_mut() = if not_modified { StatusCode::NOT_MODIFIED } else { s.status };
    *r.headers_mut() = fields;
    r
}

/// A fresh entry found for a request.
struct Hit {
    stored: Rc<Stored>,
    /// The request may carry validators (a `304` may be the answer).
    conditional: bool,
    now: std::time::Instant,
}

/// The cache key into `key`: the host (lowercase, without port) and the path with its
/// query.
fn key_of(request: &Head<'_>, key: &mut Vec<u8>) {
    let host = request.host_bytes().unwrap_or_default();
    let path = request.path_and_query_bytes();
    key.clear();
    key.extend_from_slice(host);
    key.make_ascii_lowercase();
    key.push(b'\n');
    key.extend_from_slice(path);
}

/// The request fields a response's `Vary` names, with the request's values.
fn vary_of(response: &HeaderMap, request: &HeaderMap) -> Vec<(HeaderName, Option<HeaderValue>)> {
    let mut out: Vec<(HeaderName, Option<HeaderValue>)> = Vec::new();
    for value in response.get_all(header::VARY) {
        let Ok(value) = value.to_str() else { continue };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if let Ok(name) = HeaderName::try_from(name) {
                if !out.iter().any(|(n, _)| *n == name) {
                    let v = request.get(&name).cloned();
                    out.push((name, v));
                }
            }
        }
    }
    out
}

/// Whether the request's `If-None-Match` (else `If-Modified-Since`) matches the stored
/// response's validators.
fn not_modified(request: &Head<'_>, stored: &HeaderMap) -> bool {
    let text =
        |m: &HeaderMap, n: HeaderName| m.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let asked = |name: &str| request.header(name).and_then(|v| std::str::from_utf8(v).ok());
    if let Some(list) = asked("if-none-match") {
        return text(stored, header::ETAG)
            .is_some_and(|etag| crate::files::weak_match(list, &etag));
    }
    let since = asked("if-modified-since").and_then(|d| httpdate::parse_http_date(d).ok());
    let modified =
        text(stored, header::LAST_MODIFIED).and_then(|d| httpdate::parse_http_date(&d).ok());
    matches!((since, modified), (Some(s), Some(m)) if m <= s)
}

/// Waits until `flight` is done.
async fn wait(flight: &Flight) {
    poll_fn(|cx| {
        if flight.done.get() {
            return Poll::Ready(());
        }
        flight.waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    })
    .await
}

/// Marks a key's fetch as in flight, and done (waking its waiters) when dropped: also when
/// the fetching request is abandoned half-way.
struct FlightGuard<'a> {
    cache: &'a ResponseCache,
    key: &'a [u8],
    flight: Rc<Flight>,
}

impl<'a> FlightGuard<'a> {
    fn start(cache: &'a ResponseCache, key: &'a [u8]) -> FlightGuard<'a> {
        let flight = Rc::new(Flight::default());
        cache.flights.borrow_mut().insert(key.to_vec(), Rc::clone(&flight));
        FlightGuard { cache, key, flight }
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut flights = self.cache.flights.borrow_mut();
        if flights.get(self.key).is_some_and(|f| Rc::ptr_eq(f, &self.flight)) {
            flights.remove(self.key);
        }
        self.flight.done.set(true);
        for w in self.flight.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// Why a response body was not stored.
enum Unstorable {
    /// Larger than the limit: what was read, and the rest.
    TooLarge(Bytes, Body),
    Failed(crate::BodyError),
}

/// Reads `body` whole if it stays within `limit`.
async fn collect_bounded(mut body: Body, limit: usize) -> Result<Bytes, Unstorable> {
    let mut out = BytesMut::new();
    while let Some(chunk) = body.chunk().await {
        let chunk = chunk.map_err(Unstorable::Failed)?;
        out.extend_from_slice(&chunk);
        if out.len() > limit {
            return Err(Unstorable::TooLarge(out.freeze(), body));
        }
    }
    Ok(out.freeze())
}

/// `first`, then the rest of `rest` (`len` in all, when known).
fn chain(first: Bytes, rest: Body, len: Option<u64>) -> Body {
    Body::from_stream(Chain { first: Some(first), rest }, len)
}

struct Chain {
    first: Option<Bytes>,
    rest: Body,
}

impl Stream for Chain {
    type Item = BodyChunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BodyChunk>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        self.rest.poll_chunk(cx)
    }
}

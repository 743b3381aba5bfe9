//! Cache series on `/metrics` (label `cache`, the route's upstream or app): lookups by
//! outcome (hit, miss, expired, bypass), responses stored, and entries and bytes held. Each
//! core's cache registers its own counters and is their only writer; a scrape sums them.

use std::sync::{Arc, Mutex};

use super::Outcome;
use crate::metrics::{metric_owned, Counter};

/// One core's counters for one cache.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CacheMetrics {
    outcomes: [Counter; 4],
    stored: Counter,
    entries: Counter,
    bytes: Counter,
}

/// In the order of `Outcome`'s variants (its discriminant indexes the counters).
const OUTCOMES: [(Outcome, &str); 4] = [
    (Outcome::Hit, "hit"),
    (Outcome::Miss, "miss"),
    (Outcome::Expired, "expired"),
    (Outcome::Bypass, "bypass"),
];

impl CacheMetrics {
    pub(crate) fn count(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].add(1);
    }

    pub(crate) fn stored(&self) {
        self.stored.add(1);
    }

    pub(crate) fn usage(&self, (entries, bytes): (usize, usize)) {
        self.entries.set(entries as u64);
        self.bytes.set(bytes as u64);
    }
}

static REGISTRY: Mutex<Vec<(String, Arc<CacheMetrics>)>> = Mutex::new(Vec::new());

/// Registers one core's counters of the cache `name`.
pub(crate) fn register(name: &str) -> Arc<CacheMetrics> {
    let m = Arc::new(CacheMetrics::default());
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).push((name.to_string(), Arc::clone(&m)));
    m
}

/// Writes the cache series (nothing when no route caches).
pub(crate) fn render(out: &mut String) {
    let registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    if registry.is_empty() {
        return;
    }
    let mut names: Vec<&str> = registry.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let label = |n: &str| format!("cache=\"{}\"", n.replace('\\', "\\\\").replace('"', "\\\""));
    let sum = |name: &str, f: &dyn Fn(&CacheMetrics) -> u64| -> u64 {
        registry.iter().filter(|(n, _)| n == name).map(|(_, m)| f(m)).sum()
    };
    let mut lookups = Vec::new();
    for n in &names {
        for (i, (_, outcome)) in OUTCOMES.iter().enumerate() {
            let v = sum(n, &|m| m.outcomes[i].get());
            lookups.push((format!("{},outcome=\"{outcome}\"", label(n)), v));
        }
    }
    metric_owned(
        out,
        "peregrine_cache_requests_total",
        "counter",
        "Requests through the response cache, by outcome.",
        &lookups,
    );
    let series = |f: &dyn Fn(&CacheMetrics) -> u64| -> Vec<(String, u64)> {
        names.iter().map(|n| (label(n), sum(n, f))).collect()
    };
    metric_owned(
        out,
        "peregrine_cache_stored_total",
        "counter",
        "Responses stored.",
        &series(&|m| m.stored.get()),
    );
    metric_owned(
        out,
        "peregrine_cache_entries",
        "gauge",
        "Keys held (all cores).",
        &series(&|m| m.entries.get()),
    );
    metric_owned(
        out,
        "peregrine_cache_bytes",
        "gauge",
        "Bytes held (all cores).",
        &series(&|m| m.bytes.get()),
    );
}

//! Per-upstream-server metrics: each core's proxy registers one [`ServerMetrics`] per server
//! and is its only writer (the counters of `crate::metrics`, a plain load and store each);
//! a scrape sums them by server.
//!
//! Series (label `upstream`, the server as configured): requests (attempts), responses by
//! status class, failures by kind, retries, connections opened and open, idle pooled
//! connections, and connect and response-head latency histograms.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use crate::metrics::{metric_owned, Counter, Histogram};

/// What went wrong with an attempt, as the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Connect,
    Timeout,
    Send,
    Recv,
    Closed,
    BadResponse,
}

impl Failure {
    const ALL: [Failure; 6] = [
        Failure::Connect,
        Failure::Timeout,
        Failure::Send,
        Failure::Recv,
        Failure::Closed,
        Failure::BadResponse,
    ];

    fn label(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Send => "send",
            Failure::Recv => "recv",
            Failure::Closed => "closed",
            Failure::BadResponse => "bad_response",
        }
    }
}

/// One server's counters on one core.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct ServerMetrics {
    requests: Counter,
    responses: [Counter; 5],
    failures: [Counter; 6],
    retries: Counter,
    opened: Counter,
    closed: Counter,
    idle: Counter,
    connect: Histogram,
    head: Histogram,
}

impl ServerMetrics {
    pub(crate) fn request(&self) {
        self.requests.add(1);
    }

    /// A response head arrived `head_us` after the request was sent.
    pub(crate) fn response(&self, status: http::StatusCode, head_us: u64) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.responses[class].add(1);
        self.head.observe(head_us);
    }

    pub(crate) fn failed(&self, why: Failure) {
        let i = Failure::ALL.iter().position(|f| *f == why).unwrap_or(0);
        self.failures[i].add(1);
    }

    pub(crate) fn retried(&self) {
        self.retries.add(1);
    }

    /// A connection was made in `us`.
    pub(crate) fn connected(&self, us: u64) {
        self.opened.add(1);
        self.connect.observe(us);
    }

    pub(crate) fn conn_closed(&self) {
        self.closed.add(1);
    }

    /// The HTTP/1.1 pool's idle connections to this server on this core.
    pub(crate) fn set_idle(&self, n: usize) {
        self.idle.set(n as u64);
    }

    /// An HTTP/2 connection to this server became idle (no stream open), or stopped being
    /// idle. (A server is spoken to in one version, so the pool never sets this gauge for
    /// a server whose connections move it here.)
    pub(crate) fn h2_idle(&self, idle: bool) {
        self.idle.add(if idle { 1 } else { u64::MAX }); // wrapping: -1
    }
}

/// Every core's metrics of every server, by server name.
static REGISTRY: Mutex<Vec<(String, Arc<ServerMetrics>)>> = Mutex::new(Vec::new());

/// Registers one core's metrics of the server `name`.
pub(crate) fn register(name: &str) -> Arc<ServerMetrics> {
    let m = Arc::new(ServerMetrics::default());
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    registry.push((name.to_string(), Arc::clone(&m)));
    m
}

/// Writes the upstream series (nothing when no proxy is configured).
pub(crate) fn render(out: &mut String) {
    let registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    if registry.is_empty() {
        return;
    }
    let mut names: Vec<&str> = registry.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let of = |name: &str| -> Vec<&ServerMetrics> {
        registry.iter().filter(|(n, _)| n == name).map(|(_, m)| &**m).collect()
    };
    let label =
        |name: &str| format!("upstream=\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""));
    let series = |f: &dyn Fn(&ServerMetrics) -> u64| -> Vec<(String, u64)> {
        names.iter().map(|n| (label(n), of(n).iter().map(|m| f(m)).sum())).collect()
    };
    metric_owned(
        out,
        "peregrine_upstream_requests_total",
        "counter",
        "Requests sent (attempted) to each upstream server.",
        &series(&|m| m.requests.get()),
    );
    let mut responses = Vec::new();
    for n in &names {
        for class in 0..5 {
            let v = of(n).iter().map(|m| m.responses[class].get()).sum();
            responses.push((format!("{},code=\"{}xx\"", label(n), class + 1), v));
        }
    }
    metric_owned(
        out,
        "peregrine_upstream_responses_total",
        "counter",
        "Response heads received from each upstream server, by status class.",
        &responses,
    );
    let mut failures = Vec::new();
    for n in &names {
        for (i, f) in Failure::ALL.iter().enumerate() {
            let v = of(n).iter().map(|m| m.failures[i].get()).sum();
            failures.push((format!("{},kind=\"{}\"", label(n), f.label()), v));
        }
    }
    metric_owned(
        out,
        "peregrine_upstream_failures_total",
        "counter",
        "Failed attempts, by upstream server and kind.",
        &failures,
    );
    metric_owned(
        out,
        "peregrine_upstream_retries_total",
        "counter",
        "Requests sent again (another server, or a fresh connection).",
        &series(&|m| m.retries.get()),
    );
    metric_owned(
        out,
        "peregrine_upstream_connections_opened_total",
        "counter",
        "Connections made to each upstream server.",
        &series(&|m| m.opened.get()),
    );
    metric_owned(
        out,
        "peregrine_upstream_connections_open",
        "gauge",
        "Connections to each upstream server open now (in use or idle).",
        &series(&|m| m.opened.get().saturating_sub(m.closed.get())),
    );
    metric_owned(
        out,
        "peregrine_upstream_connections_idle",
        "gauge",
        "Idle connections to each upstream server (pooled HTTP/1.1, or HTTP/2 with no stream).",
        &series(&|m| m.idle.get()),
    );
    for (name, help, pick) in [
        (
            "peregrine_upstream_connect_duration_seconds",
            "Time to connect to an upstream server.",
            (|m: &ServerMetrics| &m.connect) as fn(&ServerMetrics) -> &Histogram,
        ),
        (
            "peregrine_upstream_response_head_duration_seconds",
            "Time from a request sent to its response head received.",
            |m: &ServerMetrics| &m.head,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for n in &names {
            let parts: Vec<&Histogram> = of(n).into_iter().map(pick).collect();
            Histogram::render(out, name, &label(n), &parts);
        }
    }
}

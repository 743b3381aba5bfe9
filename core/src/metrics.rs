//! Server metrics: per-core counters, merged when scraped.
//!
//! Each core owns one [`CoreMetrics`] and is its only writer; the admin thread only reads.
//! A single-writer counter needs no read-modify-write instruction: a relaxed load and store
//! (a plain `mov` on x86) is enough, and the struct is cache-line aligned so cores never
//! share a line. So the request path touches no contended atomic, and a scrape sees every
//! core's counts as of a moment ago, which is what Prometheus expects.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use peregrine_limits::Limit;
use peregrine_protocols::h1::{BodyError, ParseError};

/// Why a request or connection was refused or cut short: a value from the moment it is
/// decided (the codec's error, the connection loop's deadline) to the metrics label and the
/// log line, never a string matched back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// A configured limit was crossed.
    Limit(Limit),
    /// A strictness rule of RFC 9112 (400/501/505).
    ProtocolError,
    /// The handler, or its response body, panicked.
    HandlerPanic,
    /// An HTTP/2 stream answered by the codec (RST_STREAM, 431, refused).
    H2Stream,
    /// An HTTP/2 connection error (GOAWAY with an error code, floods included).
    H2Connection,
    /// A client address refused by an allow/deny list.
    Denied,
}

impl Rejection {
    /// Every reason the metrics count, in their order.
    const ALL: [Rejection; 16] = [
        Rejection::Limit(Limit::MaxConnections),
        Rejection::Limit(Limit::MaxConnectionsPerIp),
        Rejection::Limit(Limit::RateLimit),
        Rejection::Limit(Limit::MaxRequestLineSize),
        Rejection::Limit(Limit::MaxRequestHeadersTotalSize),
        Rejection::Limit(Limit::MaxRequestHeaderCount),
        Rejection::Limit(Limit::MaxRequestBodySize),
        Rejection::Limit(Limit::RequestHeadersTimeout),
        Rejection::Limit(Limit::MinRequestBodyDataRate),
        Rejection::Limit(Limit::MinResponseDataRate),
        Rejection::Limit(Limit::RequestBodyDrainTimeout),
        Rejection::ProtocolError,
        Rejection::HandlerPanic,
        Rejection::H2Stream,
        Rejection::H2Connection,
        Rejection::Denied,
    ];

    /// The metrics label: a limit's configuration key, or the kind of error.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Rejection::Limit(l) => l.name(),
            Rejection::ProtocolError => "protocol_error",
            Rejection::HandlerPanic => "handler_panic",
            Rejection::H2Stream => "h2_stream_error",
            Rejection::H2Connection => "h2_connection_error",
            Rejection::Denied => "denied",
        }
    }

    /// What a request-head error from the codec counts as.
    pub(crate) fn of_parse(e: &ParseError) -> Rejection {
        match e {
            ParseError::Limit(l) => Rejection::Limit(l.limit),
            _ => Rejection::ProtocolError,
        }
    }

    /// What a request-body error from the codec counts as.
    pub(crate) fn of_body(e: &BodyError) -> Rejection {
        match e {
            BodyError::Limit(l) => Rejection::Limit(l.limit),
            BodyError::Invalid(_) => Rejection::ProtocolError,
        }
    }
}

/// Why a TLS handshake did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsFailure {
    /// A TLS or IO error (bad ClientHello, no common ALPN protocol, peer hung up...).
    Error,
    /// `tls_handshake_timeout` passed.
    Timeout,
    /// `max_concurrent_tls_handshakes_per_core` was reached: closed before any TLS byte.
    OverCap,
}

impl TlsFailure {
    const ALL: [TlsFailure; 3] = [TlsFailure::Error, TlsFailure::Timeout, TlsFailure::OverCap];

    fn label(self) -> &'static str {
        match self {
            TlsFailure::Error => "error",
            TlsFailure::Timeout => Limit::TlsHandshakeTimeout.name(),
            TlsFailure::OverCap => Limit::MaxConcurrentTlsHandshakesPerCore.name(),
        }
    }
}

/// Upper bounds of the request-duration histogram, in microseconds.
const LATENCY_BOUNDS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// A counter with one writer.
#[derive(Default, Debug)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        // Single writer: no read-modify-write needed (see the module doc).
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Sets a gauge (single writer too).
    pub(crate) fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A latency histogram with one writer, over [`LATENCY_BOUNDS_US`].
#[derive(Default, Debug)]
pub(crate) struct Histogram {
    buckets: [Counter; LATENCY_BOUNDS_US.len() + 1],
    sum_us: Counter,
}

impl Histogram {
    /// Counts one observation.
    pub(crate) fn observe(&self, us: u64) {
        let bucket =
            LATENCY_BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[bucket].add(1);
        self.sum_us.add(us);
    }

    /// Writes the Prometheus series of the sum of `parts` (one per core) under `name`, with
    /// `labels` (`key="value"` pairs, or empty) on every line.
    pub(crate) fn render(out: &mut String, name: &str, labels: &str, parts: &[&Histogram]) {
        let sep = if labels.is_empty() { "" } else { "," };
        let braces = |s: &str| if s.is_empty() { String::new() } else { format!("{{{s}}}") };
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS_US.iter().enumerate() {
            cumulative += parts.iter().map(|h| h.buckets[i].get()).sum::<u64>();
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        cumulative += parts.iter().map(|h| h.buckets[LATENCY_BOUNDS_US.len()].get()).sum::<u64>();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
        let sum = parts.iter().map(|h| h.sum_us.get()).sum::<u64>() as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

/// One core's counters.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CoreMetrics {
    accepted: Counter,
    closed: Counter,
    rejections: [Counter; Rejection::ALL.len()],
    /// HTTP/1.1 responses by status class 1xx..5xx.
    responses: [Counter; 5],
    bytes_in: Counter,
    bytes_out: Counter,
    latency: Histogram,
    tls_handshakes: Counter,
    tls_failures: [Counter; 3],
    /// Connections by protocol: HTTP/1, HTTP/2.
    protocols: [Counter; 2],
    /// HTTP/2 streams opened and finished (their difference is the active streams).
    h2_streams_opened: Counter,
    h2_streams_closed: Counter,
    /// Idle connections closed to admit new ones at `max_connections`.
    idle_evicted: Counter,
}

impl CoreMetrics {
    pub(crate) fn accepted(&self) {
        self.accepted.add(1);
    }

    pub(crate) fn closed(&self) {
        self.closed.add(1);
    }

    pub(crate) fn rejected(&self, why: Rejection) {
        let i = Rejection::ALL.iter().position(|r| *r == why);
        debug_assert!(i.is_some(), "{why:?} has no counter");
        if let Some(i) = i {
            self.rejections[i].add(1);
        }
    }

    /// Counts a response; `duration_us` (head arrival to response written) feeds the latency
    /// histogram when known (error responses to unparsed requests have none).
    pub(crate) fn response(&self, status: http::StatusCode, duration_us: Option<u64>) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.responses[class].add(1);
        if let Some(duration_us) = duration_us {
            self.latency.observe(duration_us);
        }
    }

    pub(crate) fn bytes_in(&self, n: u64) {
        self.bytes_in.add(n);
    }

    pub(crate) fn bytes_out(&self, n: u64) {
        self.bytes_out.add(n);
    }

    pub(crate) fn tls_handshake_done(&self) {
        self.tls_handshakes.add(1);
    }

    pub(crate) fn tls_failed(&self, why: TlsFailure) {
        let i = TlsFailure::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.tls_failures[i].add(1);
    }

    /// Counts a connection once its protocol is known (ALPN, sniffing or the listener).
    pub(crate) fn protocol(&self, protocol: crate::conn::Protocol) {
        self.protocols[protocol as usize].add(1);
    }

    pub(crate) fn h2_stream_opened(&self) {
        self.h2_streams_opened.add(1);
    }

    pub(crate) fn h2_stream_closed(&self) {
        self.h2_streams_closed.add(1);
    }

    pub(crate) fn idle_evicted(&self) {
        self.idle_evicted.add(1);
    }
}

/// Every core's metrics plus process-wide facts, rendered on scrape.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub(crate) cores: Arc<Vec<Arc<CoreMetrics>>>,
    pub(crate) driver: &'static str,
    /// The connection cap (a reload may change it).
    pub(crate) limiter: Arc<peregrine_limits::ConnectionLimiter>,
    /// The per-client tables (their counts are read on scrape; a reload may replace them).
    pub(crate) clients: Arc<arc_swap::ArcSwap<crate::clients::ClientPolicy>>,
    /// Config reloads and how the last one went.
    pub(crate) reloads: Arc<crate::reload::ReloadStats>,
}

impl Metrics {
    /// Renders the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let sum =
            |f: &dyn Fn(&CoreMetrics) -> u64| -> u64 { self.cores.iter().map(|c| f(c)).sum() };
        let mut out = String::with_capacity(4096);
        let accepted = sum(&|c| c.accepted.get());
        let closed = sum(&|c| c.closed.get());
        metric(
            &mut out,
            "peregrine_connections_accepted_total",
            "counter",
            "Connections accepted.",
            &[("", accepted)],
        );
        metric(
            &mut out,
            "peregrine_connections_closed_total",
            "counter",
            "Connections closed.",
            &[("", closed)],
        );
        metric(
            &mut out,
            "peregrine_connections_active",
            "gauge",
            "Connections open now.",
            &[("", accepted.saturating_sub(closed))],
        );
        metric(
            &mut out,
            "peregrine_connections_max",
            "gauge",
            "The max_connections cap.",
            &[("", self.limiter.max())],
        );
        let rejections: Vec<(String, u64)> = Rejection::ALL
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("reason=\"{}\"", r.label()), sum(&|c| c.rejections[i].get())))
            .collect();
        metric_owned(
            &mut out,
            "peregrine_rejections_total",
            "counter",
            "Requests or connections refused or cut short, by limit or rule.",
            &rejections,
        );
        let responses: Vec<(String, u64)> = (0..5)
            .map(|i| {
                (
                    format!("protocol=\"http/1.1\",code=\"{}xx\"", i + 1),
                    sum(&|c| c.responses[i].get()),
                )
            })
            .collect();
        metric_owned(
            &mut out,
            "peregrine_responses_total",
            "counter",
            "Responses sent, by protocol and status class.",
            &responses,
        );
        metric(
            &mut out,
            "peregrine_received_bytes_total",
            "counter",
            "Bytes received from clients.",
            &[("", sum(&|c| c.bytes_in.get()))],
        );
        metric(
            &mut out,
            "peregrine_sent_bytes_total",
            "counter",
            "Bytes sent to clients.",
            &[("", sum(&|c| c.bytes_out.get()))],
        );
        metric(
            &mut out,
            "peregrine_tls_handshakes_total",
            "counter",
            "TLS handshakes completed.",
            &[("", sum(&|c| c.tls_handshakes.get()))],
        );
        let failures: Vec<(String, u64)> = TlsFailure::ALL
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("reason=\"{}\"", r.label()), sum(&|c| c.tls_failures[i].get())))
            .collect();
        metric_owned(
            &mut out,
            "peregrine_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that did not complete, by reason.",
            &failures,
        );
        // Two monotonic counters per core rather than a gauge: each has one writer, and the
        // difference of the sums is exact at any scrape.
        let opened = sum(&|c| c.h2_streams_opened.get());
        let closed = sum(&|c| c.h2_streams_closed.get());
        metric(
            &mut out,
            "peregrine_h2_streams_active",
            "gauge",
            "HTTP/2 streams whose handler is running or whose response is being sent.",
            &[("", opened.saturating_sub(closed))],
        );
        if let Some((connections, addresses)) = self.clients.load().connection_counts() {
            metric(
                &mut out,
                "peregrine_client_connections",
                "gauge",
                "Connections counted against max_connections_per_ip.",
                &[("", connections)],
            );
            metric(
                &mut out,
                "peregrine_client_addresses",
                "gauge",
                "Client addresses (slots of the per-client table) holding connections now.",
                &[("", addresses)],
            );
        }
        metric(
            &mut out,
            "peregrine_idle_connections_evicted_total",
            "counter",
            "Idle connections closed to admit new ones at max_connections.",
            &[("", sum(&|c| c.idle_evicted.get()))],
        );
        let protocols: Vec<(String, u64)> = ["http/1.1", "h2"]
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("protocol=\"{p}\""), sum(&|c| c.protocols[i].get())))
            .collect();
        metric_owned(
            &mut out,
            "peregrine_connections_by_protocol_total",
            "counter",
            "Connections by the protocol chosen for them (ALPN, h2c preface, or the listener).",
            &protocols,
        );
        let _ = writeln!(out, "# HELP peregrine_io_driver The IO driver the reactors run.\n# TYPE peregrine_io_driver gauge");
        let _ = writeln!(out, "peregrine_io_driver{{driver=\"{}\"}} 1", self.driver);
        let _ = writeln!(
            out,
            "# HELP peregrine_reactors Reactor threads.\n# TYPE peregrine_reactors gauge"
        );
        let _ = writeln!(out, "peregrine_reactors {}", self.cores.len());
        // Active HTTP/2 streams join here with the HTTP/2 codec.
        let name = "peregrine_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time from a request head's arrival to its response being written.\n# TYPE {name} histogram");
        let parts: Vec<&Histogram> = self.cores.iter().map(|c| &c.latency).collect();
        Histogram::render(&mut out, name, "", &parts);
        self.reloads.render(&mut out);
        crate::proxy::metrics::render(&mut out);
        crate::apps::metrics::render(&mut out);
        crate::cache::render(&mut out);
        out
    }
}

pub(crate) fn metric(out: &mut String, name: &str, kind: &str, help: &str, values: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in values {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

pub(crate) fn metric_owned(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    values: &[(String, u64)],
) {
    let borrowed: Vec<(&str, u64)> = values.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(out, name, kind, help, &borrowed);
}

/// Makes `metrics` this reactor thread's counters.
pub(crate) fn install(metrics: Arc<CoreMetrics>) {
    crate::percore::with(|p| {
        let _ = p.metrics.set(metrics);
    });
}

/// Counts on this core's metrics (nothing on a thread without a reactor).
pub(crate) fn count(f: impl FnOnce(&CoreMetrics)) {
    crate::percore::try_with(|p| {
        if let Some(m) = p.metrics.get() {
            f(m)
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_merge_across_cores_and_render_as_prometheus_text() {
        let cores: Vec<Arc<CoreMetrics>> = (0..2).map(|_| Arc::default()).collect();
        cores[0].accepted();
        cores[1].accepted();
        cores[1].closed();
        cores[0].rejected(Rejection::Limit(Limit::MaxRequestLineSize));
        cores[1].response(http::StatusCode::NOT_FOUND, Some(300));
        cores[0].response(http::StatusCode::OK, Some(50));
        cores[0].response(http::StatusCode::BAD_REQUEST, None);
        cores[0].tls_handshake_done();
        cores[1].tls_handshake_done();
        cores[1].tls_failed(TlsFailure::Timeout);
        cores[0].protocol(crate::conn::Protocol::Http2);
        let clients = crate::clients::ClientPolicy::new(&peregrine_limits::Limits::default());
        let m = Metrics {
            cores: Arc::new(cores),
            driver: "epoll",
            limiter: peregrine_limits::ConnectionLimiter::new(10),
            clients: Arc::new(arc_swap::ArcSwap::new(clients)),
            reloads: Arc::default(),
        };
        let text = m.render();
        assert!(text.contains("peregrine_connections_active 1\n"), "{text}");
        assert!(text.contains("peregrine_rejections_total{reason=\"max_request_line_size\"} 1\n"));
        assert!(text.contains("peregrine_responses_total{protocol=\"http/1.1\",code=\"4xx\"} 2\n"));
        assert!(text.contains("peregrine_request_duration_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("peregrine_request_duration_seconds_bucket{le=\"0.0005\"} 2\n"));
        assert!(text.contains("peregrine_request_duration_seconds_count 2\n"));
        assert!(text.contains("peregrine_io_driver{driver=\"epoll\"} 1\n"));
        assert!(text.contains("peregrine_tls_handshakes_total 2\n"), "{text}");
        assert!(text.contains(
            "peregrine_tls_handshake_failures_total{reason=\"tls_handshake_timeout\"} 1\n"
        ));
        assert!(text.contains("peregrine_connections_by_protocol_total{protocol=\"h2\"} 1\n"));
    }

    #[test]
    fn codec_errors_map_to_limits_by_value() {
        use peregrine_protocols::h1::{LimitExceeded, Violation};
        let line = LimitExceeded { limit: Limit::MaxRequestLineSize, max: 8, observed: 9 };
        let r = Rejection::of_parse(&ParseError::Limit(line));
        assert_eq!(
            (r, r.label()),
            (Rejection::Limit(Limit::MaxRequestLineSize), "max_request_line_size")
        );
        let host = Rejection::of_parse(&ParseError::Invalid(Violation::MissingHost));
        assert_eq!(host, Rejection::ProtocolError);
        assert!(Rejection::ALL
            .iter()
            .all(|r| Rejection::ALL.iter().filter(|o| *o == r).count() == 1));
    }
}

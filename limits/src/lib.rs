//! Peregrine's hardening policy, with no IO.
//!
//! - [`Limits`]: every limit the server enforces, one documented field each, loadable from
//!   TOML with serde, with defaults at parity with ASP.NET Core's Kestrel (cited per field).
//! - [`DataRate`]: a minimum-data-rate meter with a grace period that turns "bytes seen so
//!   far" into the deadline by which the next bytes must arrive.
//! - [`ConnectionLimiter`]: the process-wide connection cap, touched at accept and close only.
//! - [`ClientConnections`], [`ClientRates`], [`AccessList`]: per-client fairness (connections
//!   and request rate per address, allow/deny lists), bounded in memory.
//!
//! Time is always an argument (`now: Instant`): nothing here reads the clock, so every rule
//! is testable on virtual time.
#![forbid(unsafe_code)]

mod clients;
mod connections;
mod h2;
mod limit;
mod rate;

pub use clients::{
    AccessList, ClientConnections, ClientKey, ClientLimits, ClientPermit, ClientRates, RateLimit,
    RateVerdict, CLIENT_SLOTS,
};
pub use connections::{ConnectionLimiter, ConnectionPermit};
pub use h2::{Budget, FloodBudget, H2Limits};
pub use limit::Limit;
pub use rate::DataRate;

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Every limit Peregrine enforces. Each field gives its unit, default, what happens when it is
/// crossed, and the memory it bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most simultaneous client connections over all cores. `None` (the default) derives it
    /// from the open-files limit at start, leaving 256 descriptors of headroom. Past it, a
    /// new HTTP/1 connection gets `503` and is closed. Bounds per-connection memory in total.
    pub max_connections: Option<u64>,
    /// Most connections one client (an address; IPv6 grouped by `ipv6_prefix_length`) may
    /// hold at once, over all cores. `None` (the default): no per-client cap, as Kestrel
    /// (many users can share one NAT address; set it where clients are known not to).
    /// Past it, a new connection from that client is closed at accept, before TLS.
    pub max_connections_per_ip: Option<u32>,
    /// Leading bits of an IPv6 address that make one client for the per-client limits.
    /// Default 64 (one subnet: a host, or a household, usually owns a whole /64).
    pub ipv6_prefix_length: u8,
    /// Requests per second per client (same grouping), shared by all cores, with a burst.
    /// `None` (the default): unlimited. Past it: `429 Too Many Requests` with
    /// `Retry-After`; on HTTP/2 per stream, the connection stays up.
    pub rate_limit: Option<RateLimit>,
    /// Longest request line in bytes, CRLF included. Default 8 KiB (Kestrel:
    /// `MaxRequestLineSize` = 8,192). Past it: `414` and close.
    pub max_request_line_size: usize,
    /// Largest header section in bytes, request line excluded. Default 32 KiB (Kestrel:
    /// `MaxRequestHeadersTotalSize` = 32,768). Past it: `431` and close. With the request
    /// line, this bounds the receive buffer a request head can occupy.
    pub max_request_headers_total_size: usize,
    /// Most header fields in one request. Default 100 (Kestrel: `MaxRequestHeaderCount`).
    /// Past it: `431` and close.
    pub max_request_header_count: usize,
    /// Largest request body in bytes; `None` means unlimited. Default 30,000,000 (Kestrel:
    /// `MaxRequestBodySize`). With Content-Length: `413` before any body byte is read;
    /// chunked: `413` (or an aborted response) as soon as the count passes it.
    pub max_request_body_size: Option<u64>,
    /// How long an idle keep-alive connection may wait for its next request. Default 130 s
    /// (Kestrel: `KeepAliveTimeout`). Then the connection is closed.
    #[serde(with = "humantime_serde")]
    pub keep_alive_timeout: Duration,
    /// How long a client may take to send a whole request head, from its first byte. Default
    /// 30 s (Kestrel: `RequestHeadersTimeout`). Then `408` and close: the slowloris defence.
    #[serde(with = "humantime_serde")]
    pub request_headers_timeout: Duration,
    /// How long a TLS handshake may take. Default 10 s (Kestrel's `HandshakeTimeout`).
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    /// Most TLS handshakes one core runs at once. Default 256 (Peregrine's own: Kestrel has
    /// no such cap). A handshake costs CPU for the key exchange and signature and a few KiB of
    /// rustls state before any request is seen, so a flood of new TLS connections is bounded
    /// per core; past the cap a new TLS connection is closed at once (before any TLS byte) and
    /// counted in metrics. Must be at least 1.
    pub max_concurrent_tls_handshakes_per_core: usize,
    /// Minimum request body rate while the server waits for body bytes. Default 240 B/s after
    /// a 5 s grace (Kestrel: `MinRequestBodyDataRate`). Below it: `408` and close.
    pub min_request_body_data_rate: Option<MinDataRate>,
    /// Minimum response rate while the server waits for the client to take response bytes.
    /// Default 240 B/s after a 5 s grace (Kestrel: `MinResponseDataRate`). Below it: the
    /// connection is aborted. Bounds how long a non-reading client pins response buffers.
    pub min_response_data_rate: Option<MinDataRate>,
    /// How long the server spends reading and discarding a request body the handler did not
    /// read, so the connection can be reused. Default 5 s (Kestrel's drain timeout). Past it,
    /// or past `max_request_body_size`, the connection is closed instead.
    #[serde(with = "humantime_serde")]
    pub request_body_drain_timeout: Duration,
    /// How long a graceful shutdown waits for in-flight requests. Default 30 s (ASP.NET Core
    /// host `ShutdownTimeout` is 30 s since .NET 6). Then remaining connections are aborted.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// HTTP/2 limits and flood budgets (the `[limits.h2]` table).
    pub h2: H2Limits,
}

/// A minimum data rate with a grace period (Kestrel's `MinDataRate`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinDataRate {
    /// Bytes per second that must be sustained once the grace period is over.
    pub bytes_per_second: f64,
    /// Time allowed before the rate is enforced.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
}

impl MinDataRate {
    /// Kestrel's default: 240 bytes/second after a 5 second grace period.
    pub const KESTREL_DEFAULT: MinDataRate =
        MinDataRate { bytes_per_second: 240.0, grace_period: Duration::from_secs(5) };
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: None,
            max_connections_per_ip: None,
            ipv6_prefix_length: 64,
            rate_limit: None,
            max_request_line_size: 8 * 1024,
            max_request_headers_total_size: 32 * 1024,
            max_request_header_count: 100,
            max_request_body_size: Some(30_000_000),
            keep_alive_timeout: Duration::from_secs(130),
            request_headers_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            max_concurrent_tls_handshakes_per_core: 256,
            min_request_body_data_rate: Some(MinDataRate::KESTREL_DEFAULT),
            min_response_data_rate: Some(MinDataRate::KESTREL_DEFAULT),
            request_body_drain_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            h2: H2Limits::default(),
        }
    }
}

impl Limits {
    /// Checks the values for ones that cannot work, naming the field in the error.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_request_line_size", self.max_request_line_size),
            ("max_request_headers_total_size", self.max_request_headers_total_size),
            ("max_request_header_count", self.max_request_header_count),
            ("max_concurrent_tls_handshakes_per_core", self.max_concurrent_tls_handshakes_per_core),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("limits.{name} must be greater than 0"));
            }
        }
        if self.max_connections == Some(0) {
            return Err("limits.max_connections must be greater than 0".into());
        }
        if self.max_connections_per_ip == Some(0) {
            return Err("limits.max_connections_per_ip must be greater than 0".into());
        }
        if self.ipv6_prefix_length > 128 {
            return Err("limits.ipv6_prefix_length must be at most 128".into());
        }
        if let Some(rate) = &self.rate_limit {
            rate.validate("limits.rate_limit")?;
        }
        for (name, rate) in [
            ("min_request_body_data_rate", self.min_request_body_data_rate),
            ("min_response_data_rate", self.min_response_data_rate),
        ] {
            if let Some(r) = rate {
                if !(r.bytes_per_second.is_finite() && r.bytes_per_second > 0.0) {
                    return Err(format!(
                        "limits.{name}.bytes_per_second must be a positive number"
                    ));
                }
            }
        }
        self.h2.validate()
    }

    /// The connection cap to use given the process's open-files limit: the configured value,
    /// or the limit minus 256 descriptors of headroom (listeners, log files, upstreams).
    pub fn effective_max_connections(&self, open_files_limit: u64) -> u64 {
        self.max_connections.unwrap_or_else(|| open_files_limit.saturating_sub(256).max(16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_table() {
        let l = Limits::default();
        assert_eq!(l.max_request_line_size, 8192);
        assert_eq!(l.max_request_headers_total_size, 32768);
        assert_eq!(l.max_request_header_count, 100);
        assert_eq!(l.max_request_body_size, Some(30_000_000));
        assert_eq!(l.keep_alive_timeout, Duration::from_secs(130));
        assert_eq!(l.request_headers_timeout, Duration::from_secs(30));
        assert_eq!(l.request_body_drain_timeout, Duration::from_secs(5));
        assert_eq!(l.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(l.tls_handshake_timeout, Duration::from_secs(10));
        assert_eq!(l.max_concurrent_tls_handshakes_per_core, 256);
        assert_eq!(l.min_request_body_data_rate, Some(MinDataRate::KESTREL_DEFAULT));
        assert!(l.validate().is_ok());
    }

    #[test]
    fn loads_from_toml_with_human_durations_and_keeps_defaults() {
        let l: Limits = toml::from_str(
            "keep_alive_timeout = \"2s\"\nmax_request_header_count = 7\n\
             min_request_body_data_rate = { bytes_per_second = 100.0, grace_period = \"500ms\" }",
        )
        .unwrap();
        assert_eq!(l.keep_alive_timeout, Duration::from_secs(2));
        assert_eq!(l.max_request_header_count, 7);
        assert_eq!(l.min_request_body_data_rate.unwrap().grace_period, Duration::from_millis(500));
        assert_eq!(l.max_request_line_size, 8192);
    }

    #[test]
    fn unknown_field_is_an_error_that_names_it() {
        let err = toml::from_str::<Limits>("max_request_line = 5").unwrap_err().to_string();
        assert!(err.contains("max_request_line"), "{err}");
    }

    #[test]
    fn validate_names_the_bad_field() {
        let l = Limits { max_request_header_count: 0, ..Limits::default() };
        assert!(l.validate().unwrap_err().contains("max_request_header_count"));
    }

    #[test]
    fn connections_derive_from_open_files_limit() {
        let l = Limits::default();
        assert_eq!(l.effective_max_connections(65536), 65280);
        assert_eq!(l.effective_max_connections(100), 16);
        let l = Limits { max_connections: Some(5), ..l };
        assert_eq!(l.effective_max_connections(65536), 5);
    }
}

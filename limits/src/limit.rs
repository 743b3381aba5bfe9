//! Names for the limits, as values: what a rejection, a log line or a metrics label says was
//! crossed, so nothing downstream matches on strings (rustls' `PeerMisbehaved` habit).

/// One enforced limit, named after its [`Limits`](crate::Limits) (or
/// [`H2Limits`](crate::H2Limits)) field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// `max_connections`.
    MaxConnections,
    /// `max_connections_per_ip`.
    MaxConnectionsPerIp,
    /// `rate_limit` (of `[limits]`, or of a route).
    RateLimit,
    /// `max_request_line_size`.
    MaxRequestLineSize,
    /// `max_request_headers_total_size`.
    MaxRequestHeadersTotalSize,
    /// `max_request_header_count`.
    MaxRequestHeaderCount,
    /// `max_request_body_size`.
    MaxRequestBodySize,
    /// `request_headers_timeout`.
    RequestHeadersTimeout,
    /// `min_request_body_data_rate`.
    MinRequestBodyDataRate,
    /// `min_response_data_rate`.
    MinResponseDataRate,
    /// `request_body_drain_timeout`.
    RequestBodyDrainTimeout,
    /// `tls_handshake_timeout`.
    TlsHandshakeTimeout,
    /// `max_concurrent_tls_handshakes_per_core`.
    MaxConcurrentTlsHandshakesPerCore,
    /// `h2.max_frame_size`.
    H2MaxFrameSize,
}

impl Limit {
    /// Every limit, in a fixed order (metrics index their counters by it).
    pub const ALL: [Limit; 14] = [
        Limit::MaxConnections,
        Limit::MaxConnectionsPerIp,
        Limit::RateLimit,
        Limit::MaxRequestLineSize,
        Limit::MaxRequestHeadersTotalSize,
        Limit::MaxRequestHeaderCount,
        Limit::MaxRequestBodySize,
        Limit::RequestHeadersTimeout,
        Limit::MinRequestBodyDataRate,
        Limit::MinResponseDataRate,
        Limit::RequestBodyDrainTimeout,
        Limit::TlsHandshakeTimeout,
        Limit::MaxConcurrentTlsHandshakesPerCore,
        Limit::H2MaxFrameSize,
    ];

    /// The configuration key, as in the config file's `[limits]` table: what a user turns.
    pub const fn name(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::MaxConnectionsPerIp => "max_connections_per_ip",
            Limit::RateLimit => "rate_limit",
            Limit::MaxRequestLineSize => "max_request_line_size",
            Limit::MaxRequestHeadersTotalSize => "max_request_headers_total_size",
            Limit::MaxRequestHeaderCount => "max_request_header_count",
            Limit::MaxRequestBodySize => "max_request_body_size",
            Limit::RequestHeadersTimeout => "request_headers_timeout",
            Limit::MinRequestBodyDataRate => "min_request_body_data_rate",
            Limit::MinResponseDataRate => "min_response_data_rate",
            Limit::RequestBodyDrainTimeout => "request_body_drain_timeout",
            Limit::TlsHandshakeTimeout => "tls_handshake_timeout",
            Limit::MaxConcurrentTlsHandshakesPerCore => "max_concurrent_tls_handshakes_per_core",
            Limit::H2MaxFrameSize => "max_frame_size",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_all_is_complete() {
        let mut names: Vec<_> = Limit::ALL.iter().map(|l| l.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Limit::ALL.len());
    }
}

//! The limits one HTTP/2 connection enforces.

use std::time::Duration;

use peregrine_limits::{H2Limits, Limits};

/// How long the client has to acknowledge our SETTINGS before the connection fails with
/// SETTINGS_TIMEOUT (RFC 9113 §6.5.3 leaves "a reasonable amount of time" to us). Every real
/// client acknowledges in one round trip.
pub const SETTINGS_ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a graceful shutdown waits for the PING that follows the first GOAWAY before it
/// sends the final one (RFC 9113 §6.8: "at least one round-trip time").
pub const GOAWAY_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Streams refused over `max_concurrent_streams` before the client has acknowledged our
/// SETTINGS that do not count against the `server_resets` budget: a client may open streams
/// before it has seen our limit (it starts unlimited, RFC 9113 §5.1.2), and h2 clients do
/// queue hundreds of requests at connection start. Each refusal still costs one header-block
/// decode; past this many, and after the acknowledgement, the budget applies.
pub(crate) const UNACKED_REFUSALS: u32 = 1000;

/// Streams we reset whose late frames are still ignored rather than answered with
/// STREAM_CLOSED (RFC 9113 §5.4.2: frames may already be in flight).
pub(crate) const RECENTLY_RESET: usize = 64;

/// Per-connection settings, derived once from [`Limits`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The HTTP/2 rows of the limits table.
    pub h2: H2Limits,
    /// SETTINGS_MAX_HEADER_LIST_SIZE (`max_request_headers_total_size`).
    pub max_header_list_size: u32,
    /// Most fields in one request head (`max_request_header_count`).
    pub max_header_fields: usize,
    /// With no stream open, the connection is closed (GOAWAY NO_ERROR) after this long
    /// (`keep_alive_timeout`).
    pub idle_timeout: Duration,
    /// The preface and first SETTINGS, and every header block once started, must arrive
    /// within this long (`request_headers_timeout`).
    pub request_headers_timeout: Duration,
    /// Advertise SETTINGS_ENABLE_CONNECT_PROTOCOL and accept extended CONNECT (RFC 8441:
    /// WebSockets over HTTP/2, as Kestrel does). On by default.
    pub enable_connect_protocol: bool,
}

impl Config {
    /// The connection settings for `limits`.
    pub fn new(limits: &Limits) -> Config {
        Config {
            h2: limits.h2.clone(),
            max_header_list_size: u32::try_from(limits.max_request_headers_total_size)
                .unwrap_or(u32::MAX),
            max_header_fields: limits.max_request_header_count,
            idle_timeout: limits.keep_alive_timeout,
            request_headers_timeout: limits.request_headers_timeout,
            enable_connect_protocol: true,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new(&Limits::default())
    }
}

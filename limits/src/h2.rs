//! HTTP/2 limits (ARCHITECTURE §3, the h2 rows) and the flood budget meter.
//!
//! Most HTTP/2 floods (CVE-2019-9512…9518, CVE-2023-44487 "rapid reset", CVE-2025-8671
//! "MadeYouReset") send frames that are each legal but cost the server work or memory and give
//! it nothing. They are bounded the way rustls bounds legal-but-abusable messages: each kind of
//! frame gets an allowance per time window ([`FloodBudget`]); a peer that spends it all gets
//! GOAWAY ENHANCE_YOUR_CALM. The allowances are far above what browsers, curl, gRPC or h2load
//! send, and each is configurable.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// An allowance of `max` events per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloodBudget {
    /// Events allowed per window.
    pub max: u32,
    /// The window's length.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl FloodBudget {
    const fn per_10s(max: u32) -> FloodBudget {
        FloodBudget { max, window: Duration::from_secs(10) }
    }
}

/// Spends a [`FloodBudget`]: a fixed window that restarts at the first event after it ends.
///
/// A fixed window (rather than a sliding one) keeps the meter to two words and one compare;
/// a peer can at most double its allowance across a window boundary, which the defaults
/// already absorb. The meter holds only its count: the allowance comes with each `spend`
/// from the (shared) limits, so a connection's seven meters stay small.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    used: u32,
    window_start: Option<Instant>,
}

impl Budget {
    /// A fresh meter.
    pub fn new() -> Budget {
        Budget::default()
    }

    /// Counts one event at `now` against `budget`. Returns `false` once the window's
    /// allowance is exceeded.
    pub fn spend(&mut self, now: Instant, budget: FloodBudget) -> bool {
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < budget.window => {}
            _ => {
                self.window_start = Some(now);
                self.used = 0;
            }
        }
        self.used = self.used.saturating_add(1);
        self.used <= budget.max
    }

    /// Events counted in the current window.
    pub fn used(&self) -> u32 {
        self.used
    }
}

/// HTTP/2 limits. The header-list limits are the general ones
/// (`max_request_headers_total_size`, `max_request_header_count`), advertised as
/// SETTINGS_MAX_HEADER_LIST_SIZE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct H2Limits {
    /// SETTINGS_MAX_CONCURRENT_STREAMS: streams a client may have open at once. Default 100
    /// (Kestrel: `Http2.MaxStreamsPerConnection`). Past it: RST_STREAM REFUSED_STREAM.
    /// Bounds handler tasks and buffered request bodies per connection.
    pub max_concurrent_streams: u32,
    /// SETTINGS_HEADER_TABLE_SIZE: the HPACK dynamic table our decoder keeps, in bytes.
    /// Default 4096 (Kestrel: `HeaderTableSize`). A peer exceeding it: COMPRESSION_ERROR.
    pub header_table_size: u32,
    /// SETTINGS_MAX_FRAME_SIZE: the largest frame payload accepted. Default 16 KiB (Kestrel:
    /// `MaxFrameSize`); 16384..=16777215. Past it: GOAWAY FRAME_SIZE_ERROR.
    pub max_frame_size: u32,
    /// Connection-level receive window in bytes. Default 1 MiB (Kestrel:
    /// `InitialConnectionWindowSize`). Bounds request body bytes buffered per connection.
    pub initial_connection_window: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE: per-stream receive window. Default 768 KiB (Kestrel:
    /// `InitialStreamWindowSize`). Bounds request body bytes buffered per stream.
    pub initial_stream_window: u32,
    /// Largest compressed header block (HEADERS plus CONTINUATIONs), counted as it arrives.
    /// Default 64 KiB. Past it: GOAWAY (the block is never buffered beyond it).
    pub max_header_block_size: usize,
    /// Most frames in one header block (HEADERS plus CONTINUATIONs). Default 32: the
    /// CONTINUATION flood defence (empty CONTINUATIONs cost no bytes but do cost work).
    /// Past it: GOAWAY ENHANCE_YOUR_CALM.
    pub max_header_block_frames: usize,
    /// Send a PING after this long without receiving anything. Default off (Kestrel:
    /// `KeepAlivePingDelay` = infinite).
    #[serde(with = "humantime_serde")]
    pub keep_alive_ping_interval: Option<Duration>,
    /// How long a keep-alive PING may go unanswered. Default 20 s (Kestrel:
    /// `KeepAlivePingTimeout`). Past it: GOAWAY and close.
    #[serde(with = "humantime_serde")]
    pub keep_alive_ping_timeout: Duration,
    /// Client RST_STREAMs (the rapid reset attack, CVE-2023-44487). Default 200 per 10 s.
    pub client_resets: FloodBudget,
    /// Resets the server sends because of what the client did (malformed requests, flow
    /// control violations, refused streams: MadeYouReset, CVE-2025-8671). Default 100 per 10 s.
    pub server_resets: FloodBudget,
    /// SETTINGS frames (CVE-2019-9515). Default 50 per 10 s.
    pub settings_frames: FloodBudget,
    /// PING frames (CVE-2019-9512). Default 100 per 10 s.
    pub ping_frames: FloodBudget,
    /// PRIORITY frames (CVE-2019-9513). Default 1000 per 10 s (browsers send bursts).
    pub priority_frames: FloodBudget,
    /// Frames that carry nothing: empty DATA without END_STREAM, empty CONTINUATION
    /// (CVE-2019-9518). Default 100 per 10 s.
    pub empty_frames: FloodBudget,
    /// WINDOW_UPDATE frames. Default 20,000 per 10 s.
    pub window_updates: FloodBudget,
    /// Control frames the server may have queued but not yet sent (PING and SETTINGS
    /// acknowledgements, RST_STREAMs): a peer that provokes replies but never reads cannot
    /// grow this queue (CVE-2019-9512, 9514, 9515). Default 1000. Past it: GOAWAY
    /// ENHANCE_YOUR_CALM.
    pub max_queued_control_frames: usize,
    /// Response bytes one stream may have queued beyond what flow control lets out. Default
    /// 64 KiB. The handler's body is read only while the stream is below it, so a peer that
    /// never opens its window pins at most this per stream (CVE-2019-9517).
    pub max_stream_send_buffer: usize,
}

impl Default for H2Limits {
    fn default() -> Self {
        H2Limits {
            max_concurrent_streams: 100,
            header_table_size: 4096,
            max_frame_size: 16 * 1024,
            initial_connection_window: 1024 * 1024,
            initial_stream_window: 768 * 1024,
            max_header_block_size: 64 * 1024,
            max_header_block_frames: 32,
            keep_alive_ping_interval: None,
            keep_alive_ping_timeout: Duration::from_secs(20),
            client_resets: FloodBudget::per_10s(200),
            server_resets: FloodBudget::per_10s(100),
            settings_frames: FloodBudget::per_10s(50),
            ping_frames: FloodBudget::per_10s(100),
            priority_frames: FloodBudget::per_10s(1000),
            empty_frames: FloodBudget::per_10s(100),
            window_updates: FloodBudget::per_10s(20_000),
            max_queued_control_frames: 1000,
            max_stream_send_buffer: 64 * 1024,
        }
    }
}

impl H2Limits {
    /// Checks the values for ones that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(16_384..=16_777_215).contains(&self.max_frame_size) {
            return Err("limits.h2.max_frame_size must be within 16384..=16777215".into());
        }
        const MAX_WINDOW: u32 = (1 << 31) - 1;
        for (name, v) in [
            ("initial_connection_window", self.initial_connection_window),
            ("initial_stream_window", self.initial_stream_window),
        ] {
            if !(65_535..=MAX_WINDOW).contains(&v) {
                return Err(format!("limits.h2.{name} must be within 65535..=2147483647"));
            }
        }
        for (name, v) in [
            ("max_concurrent_streams", self.max_concurrent_streams as usize),
            ("max_header_block_size", self.max_header_block_size),
            ("max_header_block_frames", self.max_header_block_frames),
            ("max_queued_control_frames", self.max_queued_control_frames),
            ("max_stream_send_buffer", self.max_stream_send_buffer),
        ] {
            if v == 0 {
                return Err(format!("limits.h2.{name} must be greater than 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_max_per_window_then_refuses_until_the_window_ends() {
        let t0 = Instant::now();
        let f = FloodBudget { max: 3, window: Duration::from_secs(10) };
        let mut b = Budget::new();
        assert!(b.spend(t0, f) && b.spend(t0, f) && b.spend(t0 + Duration::from_secs(9), f));
        assert!(!b.spend(t0 + Duration::from_secs(9), f));
        // A new window starts at the first event after the old one ended.
        assert!(b.spend(t0 + Duration::from_secs(10), f));
        assert_eq!(b.used(), 1);
    }

    #[test]
    fn defaults_validate_and_bad_values_name_the_field() {
        assert!(H2Limits::default().validate().is_ok());
        let l = H2Limits { max_frame_size: 1000, ..H2Limits::default() };
        assert!(l.validate().unwrap_err().contains("max_frame_size"));
        let l = H2Limits { initial_stream_window: 1, ..H2Limits::default() };
        assert!(l.validate().unwrap_err().contains("initial_stream_window"));
    }
}

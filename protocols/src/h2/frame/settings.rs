//! SETTINGS frames (RFC 9113 §6.5).
//!
//! ```text
//!  +-------------------------------+
//!  |       Identifier (16)         |
//!  +-------------------------------+-------------------------------+
//!  |                        Value (32)                             |
//!  +---------------------------------------------------------------+
//! ```
//! repeated; an ACK carries none.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{flags, require_connection, Head, Kind, StreamId};
use crate::h2::error::{go_away, Error, Reason};

/// SETTINGS_HEADER_TABLE_SIZE (§6.5.2).
const HEADER_TABLE_SIZE: u16 = 0x1;
/// SETTINGS_ENABLE_PUSH (§6.5.2).
const ENABLE_PUSH: u16 = 0x2;
/// SETTINGS_MAX_CONCURRENT_STREAMS (§6.5.2).
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// SETTINGS_INITIAL_WINDOW_SIZE (§6.5.2).
const INITIAL_WINDOW_SIZE: u16 = 0x4;
/// SETTINGS_MAX_FRAME_SIZE (§6.5.2).
const MAX_FRAME_SIZE: u16 = 0x5;
/// SETTINGS_MAX_HEADER_LIST_SIZE (§6.5.2).
const MAX_HEADER_LIST_SIZE: u16 = 0x6;
/// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3).
const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;

/// One setting on the wire: 2-byte identifier, 4-byte value.
const ENTRY_LEN: usize = 6;

/// The largest flow-control window, 2^31 − 1 (§6.9.1).
pub(super) const MAX_WINDOW_SIZE: u32 = (1 << 31) - 1;

/// The range SETTINGS_MAX_FRAME_SIZE must lie in (§6.5.2).
const FRAME_SIZE_RANGE: std::ops::RangeInclusive<u32> = 16_384..=16_777_215;

/// A SETTINGS frame: the known settings it carries (`None` = not sent), or an ACK.
///
/// When a setting appears twice the last value wins (§6.5.3: values are processed in order).
/// Unknown identifiers are ignored (§6.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settings {
    /// ACK: acknowledges the peer's SETTINGS; then every field is `None`.
    pub ack: bool,
    /// SETTINGS_HEADER_TABLE_SIZE: the HPACK dynamic table size the sender's decoder allows.
    pub header_table_size: Option<u32>,
    /// SETTINGS_ENABLE_PUSH (0 or 1 on the wire).
    pub enable_push: Option<bool>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: Option<u32>,
    /// SETTINGS_INITIAL_WINDOW_SIZE, at most 2^31 − 1.
    pub initial_window_size: Option<u32>,
    /// SETTINGS_MAX_FRAME_SIZE, in 16384..=16777215.
    pub max_frame_size: Option<u32>,
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub max_header_list_size: Option<u32>,
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441): the sender accepts extended CONNECT.
    pub enable_connect_protocol: Option<bool>,
}

impl Settings {
    /// A SETTINGS frame with the ACK flag.
    pub fn ack() -> Settings {
        Settings { ack: true, ..Settings::default() }
    }

    /// Validates a SETTINGS frame. All errors are connection errors (§6.5, §6.5.2):
    /// 1. a stream other than 0: PROTOCOL_ERROR;
    /// 2. ACK with a payload: FRAME_SIZE_ERROR;
    /// 3. a length not a multiple of 6: FRAME_SIZE_ERROR;
    /// 4. ENABLE_PUSH other than 0 or 1: PROTOCOL_ERROR;
    /// 5. INITIAL_WINDOW_SIZE above 2^31 − 1: FLOW_CONTROL_ERROR;
    /// 6. MAX_FRAME_SIZE outside 16384..=16777215: PROTOCOL_ERROR;
    /// 7. ENABLE_CONNECT_PROTOCOL other than 0 or 1: PROTOCOL_ERROR (RFC 8441 §3).
    pub fn load(head: Head, mut payload: Bytes) -> Result<Settings, Error> {
        require_connection(&head, "SETTINGS on a stream")?;
        if head.has(flags::ACK) {
            if !payload.is_empty() {
                return Err(go_away(Reason::FRAME_SIZE_ERROR, "SETTINGS ACK with payload"));
            }
            return Ok(Settings::ack());
        }
        if !payload.len().is_multiple_of(ENTRY_LEN) {
            return Err(go_away(Reason::FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6"));
        }
        let mut s = Settings::default();
        while payload.has_remaining() {
            let (id, value) = (payload.get_u16(), payload.get_u32());
            match id {
                HEADER_TABLE_SIZE => s.header_table_size = Some(value),
                ENABLE_PUSH => {
                    if value > 1 {
                        return Err(go_away(Reason::PROTOCOL_ERROR, "ENABLE_PUSH not 0 or 1"));
                    }
                    s.enable_push = Some(value == 1);
                }
                MAX_CONCURRENT_STREAMS => s.max_concurrent_streams = Some(value),
                INITIAL_WINDOW_SIZE => {
                    if value > MAX_WINDOW_SIZE {
                        let e = "INITIAL_WINDOW_SIZE above 2^31-1";
                        return Err(go_away(Reason::FLOW_CONTROL_ERROR, e));
                    }
                    s.initial_window_size = Some(value);
                }
                MAX_FRAME_SIZE => {
                    if !FRAME_SIZE_RANGE.contains(&value) {
                        let e = "MAX_FRAME_SIZE out of range";
                        return Err(go_away(Reason::PROTOCOL_ERROR, e));
                    }
                    s.max_frame_size = Some(value);
                }
                MAX_HEADER_LIST_SIZE => s.max_header_list_size = Some(value),
                ENABLE_CONNECT_PROTOCOL => {
                    if value > 1 {
                        let e = "ENABLE_CONNECT_PROTOCOL not 0 or 1";
                        return Err(go_away(Reason::PROTOCOL_ERROR, e));
                    }
                    s.enable_connect_protocol = Some(value == 1);
                }
                _ => {} // §6.5.2: unsupported identifiers MUST be ignored.
            }
        }
        Ok(s)
    }

    /// The settings that are present, as (identifier, value), in identifier order.
    fn entries(&self) -> impl Iterator<Item = (u16, u32)> {
        [
            (HEADER_TABLE_SIZE, self.header_table_size),
            (ENABLE_PUSH, self.enable_push.map(u32::from)),
            (MAX_CONCURRENT_STREAMS, self.max_concurrent_streams),
            (INITIAL_WINDOW_SIZE, self.initial_window_size),
            (MAX_FRAME_SIZE, self.max_frame_size),
            (MAX_HEADER_LIST_SIZE, self.max_header_list_size),
            (ENABLE_CONNECT_PROTOCOL, self.enable_connect_protocol.map(u32::from)),
        ]
        .into_iter()
        .filter_map(|(id, v)| v.map(|v| (id, v)))
    }

    /// Appends the frame to `dst`: an empty ACK, or each present setting in identifier order.
    /// Values are written as given; the caller sends only valid ones.
    pub fn encode(&self, dst: &mut BytesMut) {
        if self.ack {
            Head::new(Kind::Settings, flags::ACK, StreamId::ZERO, 0).encode(dst);
            return;
        }
        let len = self.entries().count() * ENTRY_LEN;
        Head::new(Kind::Settings, 0, StreamId::ZERO, len as u32).encode(dst);
        for (id, value) in self.entries() {
            dst.put_u16(id);
            dst.put_u32(value);
        }
    }
}

//! HTTP/2 frames (RFC 9113 §4 and §6): the 9-byte header, one file per frame type, and the
//! incremental [`FrameDecoder`].
//!
//! Read RFC 9113 §4.1 (frame format), §4.2 (frame size), §5.4 (error handling) and §6 (frame
//! definitions) before editing. As in the h2 crate, each frame type has
//! `load(head, payload)` (validating every §6 rule that needs no stream state) and `encode`
//! into a caller-owned `BytesMut`, and converts into [`Frame`] with `From`.
//!
//! ```text
//!  +-----------------------------------------------+
//!  |                 Length (24)                   |
//!  +---------------+---------------+---------------+
//!  |   Type (8)    |   Flags (8)   |
//!  +-+-------------+---------------+-------------------------------+
//!  |R|                 Stream Identifier (31)                      |
//!  +=+=============================================================+
//!  |                   Frame Payload (0...)                      ...
//!  +---------------------------------------------------------------+
//! ```

mod continuation;
mod data;
mod decoder;
mod goaway;
mod headers;
mod ping;
mod priority;
mod push_promise;
mod rst_stream;
mod settings;
mod window_update;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::{go_away, Error, Reason};

pub use continuation::Continuation;
pub use data::Data;
pub use decoder::{FrameDecoder, DEFAULT_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE};
pub use goaway::GoAway;
pub use headers::{Headers, StreamDependency};
pub use ping::Ping;
pub use priority::Priority;
pub use push_promise::PushPromise;
pub use rst_stream::RstStream;
pub use settings::Settings;
pub use window_update::WindowUpdate;

/// Length of the frame header (RFC 9113 §4.1).
pub const HEAD_LEN: usize = 9;

/// The largest length the 24-bit Length field can carry.
const MAX_LENGTH: u32 = (1 << 24) - 1;

/// The reserved high bit of stream identifiers and window increments (RFC 9113 §4.1, §6.9).
const RESERVED_BIT: u32 = 1 << 31;

/// Frame flags (RFC 9113 §6). Which bits mean what depends on the frame type; undefined flags
/// are ignored on receipt and never sent (§4.1).
pub mod flags {
    /// DATA, HEADERS: the last frame the sender will send on this stream (§6.1, §6.2).
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: this frame acknowledges the peer's (§6.5, §6.7).
    pub const ACK: u8 = 0x1;
    /// HEADERS, PUSH_PROMISE, CONTINUATION: the field block ends in this frame (§6.2, §6.10).
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS, PUSH_PROMISE: a Pad Length octet and padding are present (§6.1).
    pub const PADDED: u8 = 0x8;
    /// HEADERS: the Exclusive, Stream Dependency and Weight fields are present (§6.2).
    pub const PRIORITY: u8 = 0x20;
}

/// A 31-bit stream identifier (RFC 9113 §5.1.1). 0 names the connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId(u32);

impl StreamId {
    /// Stream 0: frames about the connection as a whole.
    pub const ZERO: StreamId = StreamId(0);
    /// The largest stream identifier, 2^31 − 1.
    pub const MAX: StreamId = StreamId(!RESERVED_BIT);

    /// A stream identifier from 32 bits on the wire; the reserved high bit is ignored
    /// (RFC 9113 §4.1: "MUST be ignored when receiving").
    pub const fn new(raw: u32) -> StreamId {
        StreamId(raw & !RESERVED_BIT)
    }

    /// The identifier as a number (never above 2^31 − 1).
    pub const fn value(self) -> u32 {
        self.0
    }

    /// Whether this is stream 0, the connection.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Whether a client initiated this stream (odd identifiers, RFC 9113 §5.1.1).
    pub const fn is_client_initiated(self) -> bool {
        self.0 % 2 == 1
    }
}

/// A hasher for maps keyed by [`StreamId`]: stream ids are small, distinct integers chosen
/// by the client, so a multiplicative hash (Fibonacci hashing) spreads them well at a
/// fraction of SipHash's cost. A client cannot force collisions worth having: the map holds
/// at most `max_concurrent_streams` entries.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamIdHasher(u64);

impl std::hash::Hasher for StreamIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A `HashMap` keyed by stream id with [`StreamIdHasher`].
pub type StreamMap<V> =
    std::collections::HashMap<StreamId, V, std::hash::BuildHasherDefault<StreamIdHasher>>;

impl From<u32> for StreamId {
    fn from(raw: u32) -> StreamId {
        StreamId::new(raw)
    }
}

/// A frame type (RFC 9113 §6, §11.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// DATA (0x00, §6.1).
    Data,
    /// HEADERS (0x01, §6.2).
    Headers,
    /// PRIORITY (0x02, §6.3; deprecated, still parsed).
    Priority,
    /// RST_STREAM (0x03, §6.4).
    RstStream,
    /// SETTINGS (0x04, §6.5).
    Settings,
    /// PUSH_PROMISE (0x05, §6.6).
    PushPromise,
    /// PING (0x06, §6.7).
    Ping,
    /// GOAWAY (0x07, §6.8).
    GoAway,
    /// WINDOW_UPDATE (0x08, §6.9).
    WindowUpdate,
    /// CONTINUATION (0x09, §6.10).
    Continuation,
    /// Any other type: ignored and discarded (§4.1, §5.5).
    Unknown(u8),
}

impl From<u8> for Kind {
    fn from(byte: u8) -> Kind {
        match byte {
            0x0 => Kind::Data,
            0x1 => Kind::Headers,
            0x2 => Kind::Priority,
            0x3 => Kind::RstStream,
            0x4 => Kind::Settings,
            0x5 => Kind::PushPromise,
            0x6 => Kind::Ping,
            0x7 => Kind::GoAway,
            0x8 => Kind::WindowUpdate,
            0x9 => Kind::Continuation,
            other => Kind::Unknown(other),
        }
    }
}

impl From<Kind> for u8 {
    fn from(kind: Kind) -> u8 {
        match kind {
            Kind::Data => 0x0,
            Kind::Headers => 0x1,
            Kind::Priority => 0x2,
            Kind::RstStream => 0x3,
            Kind::Settings => 0x4,
            Kind::PushPromise => 0x5,
            Kind::Ping => 0x6,
            Kind::GoAway => 0x7,
            Kind::WindowUpdate => 0x8,
            Kind::Continuation => 0x9,
            Kind::Unknown(other) => other,
        }
    }
}

/// The 9-byte frame header (RFC 9113 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The frame type.
    pub kind: Kind,
    /// The flags octet, as received (see [`flags`]).
    pub flags: u8,
    /// The stream the frame belongs to; the reserved bit is already dropped.
    pub stream_id: StreamId,
    /// Payload length in bytes (24 bits), not counting these 9.
    pub length: u32,
}

impl Head {
    /// A header for a frame of `kind` on `stream_id` with `length` payload bytes.
    pub fn new(kind: Kind, flags: u8, stream_id: StreamId, length: u32) -> Head {
        Head { kind, flags, stream_id, length }
    }

    /// Parses the first [`HEAD_LEN`] bytes of `bytes`. The reserved bit is ignored (§4.1).
    ///
    /// # Panics
    ///
    /// If `bytes` is shorter than [`HEAD_LEN`].
    pub fn parse(bytes: &[u8]) -> Head {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        let raw_id = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        Head {
            kind: Kind::from(bytes[3]),
            flags: bytes[4],
            stream_id: StreamId::new(raw_id),
            length,
        }
    }

    /// Whether `flag` (one of [`flags`]) is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag == flag
    }

    /// Appends the 9 header bytes to `dst`; the reserved bit is written as 0 (§4.1).
    ///
    /// # Panics
    ///
    /// If `length` does not fit the 24-bit Length field. Callers never build frames over
    /// the peer's SETTINGS_MAX_FRAME_SIZE, which is at most 2^24 − 1.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_slice(&self.to_bytes());
    }

    /// The nine bytes of the header, for writing it over room left before a payload.
    pub fn to_bytes(&self) -> [u8; HEAD_LEN] {
        assert!(self.length <= MAX_LENGTH, "frame length {} over 24 bits", self.length);
        let mut head = [0; HEAD_LEN];
        head[..3].copy_from_slice(&self.length.to_be_bytes()[1..]);
        head[3] = u8::from(self.kind);
        head[4] = self.flags;
        head[5..].copy_from_slice(&self.stream_id.value().to_be_bytes());
        head
    }
}

/// A decoded frame of a known type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// DATA (§6.1).
    Data(Data),
    /// HEADERS (§6.2).
    Headers(Headers),
    /// PRIORITY (§6.3).
    Priority(Priority),
    /// RST_STREAM (§6.4).
    RstStream(RstStream),
    /// SETTINGS (§6.5).
    Settings(Settings),
    /// PUSH_PROMISE (§6.6). Only servers send it: a server that receives one answers with a
    /// connection error of type PROTOCOL_ERROR (§8.4); the stream layer decides.
    PushPromise(PushPromise),
    /// PING (§6.7).
    Ping(Ping),
    /// GOAWAY (§6.8).
    GoAway(GoAway),
    /// WINDOW_UPDATE (§6.9).
    WindowUpdate(WindowUpdate),
    /// CONTINUATION (§6.10).
    Continuation(Continuation),
}

impl Frame {
    /// The stream the frame belongs to (0 for connection-level frames).
    pub fn stream_id(&self) -> StreamId {
        match self {
            Frame::Data(f) => f.stream_id,
            Frame::Headers(f) => f.stream_id,
            Frame::Priority(f) => f.stream_id,
            Frame::RstStream(f) => f.stream_id,
            Frame::PushPromise(f) => f.stream_id,
            Frame::WindowUpdate(f) => f.stream_id,
            Frame::Continuation(f) => f.stream_id,
            Frame::Settings(_) | Frame::Ping(_) | Frame::GoAway(_) => StreamId::ZERO,
        }
    }

    /// Validates and converts a complete frame. `payload` holds exactly `head.length` bytes.
    /// Unknown types are not frames: the decoder discards them before calling this.
    pub(crate) fn load(head: Head, payload: Bytes) -> Result<Frame, Error> {
        debug_assert_eq!(payload.len(), head.length as usize);
        Ok(match head.kind {
            Kind::Data => Data::load(head, payload)?.into(),
            Kind::Headers => Headers::load(head, payload)?.into(),
            Kind::Priority => Priority::load(head, payload)?.into(),
            Kind::RstStream => RstStream::load(head, payload)?.into(),
            Kind::Settings => Settings::load(head, payload)?.into(),
            Kind::PushPromise => PushPromise::load(head, payload)?.into(),
            Kind::Ping => Ping::load(head, payload)?.into(),
            Kind::GoAway => GoAway::load(head, payload)?.into(),
            Kind::WindowUpdate => WindowUpdate::load(head, payload)?.into(),
            Kind::Continuation => Continuation::load(head, payload)?.into(),
            Kind::Unknown(_) => unreachable!("unknown frame types are skipped by the decoder"),
        })
    }
}

macro_rules! from_frame {
    ($($ty:ident),*) => {$(
        impl From<$ty> for Frame {
            fn from(frame: $ty) -> Frame {
                Frame::$ty(frame)
            }
        }
    )*};
}
from_frame!(
    Data,
    Headers,
    Priority,
    RstStream,
    Settings,
    PushPromise,
    Ping,
    GoAway,
    WindowUpdate,
    Continuation
);

/// RFC 9113 §6.1, §6.2, §6.10 …: frames that belong to a stream must not name stream 0
/// (connection error PROTOCOL_ERROR).
fn require_stream(head: &Head, description: &'static str) -> Result<(), Error> {
    if head.stream_id.is_zero() {
        return Err(go_away(Reason::PROTOCOL_ERROR, description));
    }
    Ok(())
}

/// RFC 9113 §6.5, §6.7, §6.8: connection-level frames must name stream 0 (connection error
/// PROTOCOL_ERROR).
fn require_connection(head: &Head, description: &'static str) -> Result<(), Error> {
    if !head.stream_id.is_zero() {
        return Err(go_away(Reason::PROTOCOL_ERROR, description));
    }
    Ok(())
}

/// Strips the Pad Length octet and the padding of a PADDED frame (RFC 9113 §6.1, §6.2, §6.6),
/// leaving `payload` at the fields after Pad Length. Returns the Pad Length, if present.
///
/// `fixed` is the size of the mandatory fields that follow Pad Length (5 for HEADERS with
/// PRIORITY, 4 for PUSH_PROMISE). Both failures are connection errors:
/// 1. a payload too small for Pad Length plus `fixed` is FRAME_SIZE_ERROR (§4.2);
/// 2. padding longer than what remains after the fixed fields is PROTOCOL_ERROR (§6.1: "If
///    the length of the padding is the length of the frame payload or greater"; §6.2, §6.6).
fn strip_padding(head: &Head, payload: &mut Bytes, fixed: usize) -> Result<Option<u8>, Error> {
    let padded = head.has(flags::PADDED);
    if payload.len() < usize::from(padded) + fixed {
        return Err(go_away(Reason::FRAME_SIZE_ERROR, "frame too short for its fields"));
    }
    if !padded {
        return Ok(None);
    }
    let pad_len = payload.get_u8();
    let Some(keep) = payload.len().checked_sub(fixed + usize::from(pad_len)) else {
        return Err(go_away(Reason::PROTOCOL_ERROR, "padding exceeds frame payload"));
    };
    payload.truncate(fixed + keep);
    Ok(Some(pad_len))
}

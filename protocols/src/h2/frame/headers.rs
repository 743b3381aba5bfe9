//! HEADERS frames (RFC 9113 §6.2) and the priority fields they may carry (§5.3, deprecated
//! but still on the wire).
//!
//! ```text
//!  +---------------+
//!  |Pad Length? (8)|
//!  +-+-------------+-----------------------------------------------+
//!  |E|                 Stream Dependency? (31)                     |
//!  +-+-------------+-----------------------------------------------+
//!  |  Weight? (8)  |
//!  +-+-------------+-----------------------------------------------+
//!  |                   Field Block Fragment (*)                    ...
//!  +---------------------------------------------------------------+
//!  |                           Padding (*)                       ...
//!  +---------------------------------------------------------------+
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{flags, require_stream, strip_padding, Head, Kind, StreamId, RESERVED_BIT};
use crate::h2::error::{reset, Error, Reason};

/// The priority fields of HEADERS and PRIORITY frames (RFC 9113 §5.3.2, §6.3). RFC 9113
/// deprecates this scheme; Peregrine parses and keeps the fields but schedules without them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamDependency {
    /// The stream this one depends on.
    pub dependency: StreamId,
    /// The Weight field as sent (the weight is this plus one, 1..=256).
    pub weight: u8,
    /// The E flag: the dependency is exclusive.
    pub exclusive: bool,
}

impl StreamDependency {
    /// Size on the wire.
    pub(super) const LEN: usize = 5;

    /// Reads the 5 bytes at the front of `payload`; the caller checked the length.
    pub(super) fn read(payload: &mut Bytes) -> StreamDependency {
        let raw = payload.get_u32();
        StreamDependency {
            dependency: StreamId::new(raw),
            weight: payload.get_u8(),
            exclusive: raw & RESERVED_BIT != 0,
        }
    }

    /// RFC 9113 §5.3.1: "A stream cannot depend on itself. An endpoint MUST treat this as a
    /// stream error of type PROTOCOL_ERROR."
    pub(super) fn check(&self, stream_id: StreamId) -> Result<(), Error> {
        if self.dependency == stream_id {
            return Err(reset(stream_id, Reason::PROTOCOL_ERROR, "stream depends on itself"));
        }
        Ok(())
    }

    pub(super) fn encode(&self, dst: &mut BytesMut) {
        let e = if self.exclusive { RESERVED_BIT } else { 0 };
        dst.put_u32(self.dependency.value() | e);
        dst.put_u8(self.weight);
    }
}

/// A HEADERS frame: opens a stream or carries trailers. The field block fragment stays
/// HPACK-encoded; when END_HEADERS is unset, CONTINUATION frames carry the rest (§6.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// The stream (never 0).
    pub stream_id: StreamId,
    /// The HPACK-encoded field block fragment, a slice of the receive buffer.
    pub fragment: Bytes,
    /// END_STREAM: no DATA follows (§6.2).
    pub end_stream: bool,
    /// END_HEADERS: the field block is complete in this frame.
    pub end_headers: bool,
    /// The priority fields, when the PRIORITY flag was set.
    pub priority: Option<StreamDependency>,
    /// The Pad Length of a received PADDED frame. Padding is never sent.
    pub pad_len: Option<u8>,
}

impl Headers {
    /// A HEADERS frame without priority fields or padding.
    pub fn new(stream_id: StreamId, fragment: Bytes, end_stream: bool, end_headers: bool) -> Self {
        Headers { stream_id, fragment, end_stream, end_headers, priority: None, pad_len: None }
    }

    /// Validates a HEADERS frame. Connection errors: stream 0 is PROTOCOL_ERROR (§6.2), a
    /// payload too short for its fields is FRAME_SIZE_ERROR (§4.2: HEADERS carries a field
    /// block, so the error is connection-level), padding past the fragment is PROTOCOL_ERROR
    /// (§6.2). A stream that depends on itself is a stream error PROTOCOL_ERROR (§5.3.1).
    pub fn load(head: Head, mut payload: Bytes) -> Result<Headers, Error> {
        require_stream(&head, "HEADERS on stream 0")?;
        let has_priority = head.has(flags::PRIORITY);
        let fixed = if has_priority { StreamDependency::LEN } else { 0 };
        let pad_len = strip_padding(&head, &mut payload, fixed)?;
        let priority = has_priority.then(|| StreamDependency::read(&mut payload));
        if let Some(p) = &priority {
            p.check(head.stream_id)?;
        }
        Ok(Headers {
            stream_id: head.stream_id,
            fragment: payload,
            end_stream: head.has(flags::END_STREAM),
            end_headers: head.has(flags::END_HEADERS),
            priority,
            pad_len,
        })
    }

    /// Appends the frame (header, priority fields if any, fragment; never padding) to `dst`.
    ///
    /// # Panics
    ///
    /// If the payload is longer than 2^24 − 1 bytes (see [`Head::encode`]).
    pub fn encode(&self, dst: &mut BytesMut) {
        let mut flags = 0;
        if self.end_stream {
            flags |= flags::END_STREAM;
        }
        if self.end_headers {
            flags |= flags::END_HEADERS;
        }
        let mut len = self.fragment.len();
        if self.priority.is_some() {
            flags |= flags::PRIORITY;
            len += StreamDependency::LEN;
        }
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        Head::new(Kind::Headers, flags, self.stream_id, len).encode(dst);
        if let Some(p) = &self.priority {
            p.encode(dst);
        }
        dst.put_slice(&self.fragment);
    }
}

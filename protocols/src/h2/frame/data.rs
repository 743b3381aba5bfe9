//! DATA frames (RFC 9113 §6.1).
//!
//! ```text
//!  +---------------+
//!  |Pad Length? (8)|
//!  +---------------+-----------------------------------------------+
//!  |                            Data (*)                         ...
//!  +---------------------------------------------------------------+
//!  |                           Padding (*)                       ...
//!  +---------------------------------------------------------------+
//! ```

use bytes::{Bytes, BytesMut};

use super::{flags, require_stream, strip_padding, Head, Kind, StreamId};
use crate::h2::error::Error;

/// A DATA frame: a chunk of a request or response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// The stream (never 0).
    pub stream_id: StreamId,
    /// The body bytes, without padding: a slice of the receive buffer, not a copy.
    pub data: Bytes,
    /// END_STREAM: the sender's last frame on this stream.
    pub end_stream: bool,
    /// The Pad Length of a received PADDED frame. Padding is never sent.
    pub pad_len: Option<u8>,
}

impl Data {
    /// An unpadded DATA frame.
    pub fn new(stream_id: StreamId, data: Bytes, end_stream: bool) -> Data {
        Data { stream_id, data, end_stream, pad_len: None }
    }

    /// Validates a DATA frame (§6.1). Connection errors: stream 0 is PROTOCOL_ERROR; PADDED
    /// without a Pad Length octet is FRAME_SIZE_ERROR (§4.2); padding as long as the payload
    /// or longer is PROTOCOL_ERROR.
    pub fn load(head: Head, mut payload: Bytes) -> Result<Data, Error> {
        require_stream(&head, "DATA on stream 0")?;
        let pad_len = strip_padding(&head, &mut payload, 0)?;
        Ok(Data {
            stream_id: head.stream_id,
            data: payload,
            end_stream: head.has(flags::END_STREAM),
            pad_len,
        })
    }

    /// The bytes this frame counts against flow-control windows: the whole payload,
    /// Pad Length octet and padding included (RFC 9113 §6.1, §6.9.1).
    pub fn flow_controlled_len(&self) -> usize {
        self.data.len() + self.pad_len.map_or(0, |p| 1 + usize::from(p))
    }

    /// Appends only the 9-byte frame header to `dst`, unpadded, with Length = `data.len()`.
    ///
    /// The payload is deliberately not copied: the caller sends `self.data` as a separate
    /// chunk after these bytes (a vectored write), so body bytes are never copied into the
    /// send buffer.
    ///
    /// # Panics
    ///
    /// If `data` is longer than 2^24 − 1 bytes (see [`Head::encode`]).
    pub fn encode_head(&self, dst: &mut BytesMut) {
        let flags = if self.end_stream { flags::END_STREAM } else { 0 };
        let len = u32::try_from(self.data.len()).unwrap_or(u32::MAX);
        Head::new(Kind::Data, flags, self.stream_id, len).encode(dst);
    }
}

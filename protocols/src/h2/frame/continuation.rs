//! CONTINUATION frames (RFC 9113 §6.10).
//!
//! ```text
//!  +---------------------------------------------------------------+
//!  |                   Field Block Fragment (*)                    ...
//!  +---------------------------------------------------------------+
//! ```
//!
//! Whether a CONTINUATION is expected at all (it must directly follow a HEADERS, PUSH_PROMISE
//! or CONTINUATION without END_HEADERS on the same stream) is checked by the
//! [`FrameDecoder`](super::FrameDecoder), which sees every frame in order.

use bytes::{BufMut, Bytes, BytesMut};

use super::{flags, require_stream, Head, Kind, StreamId};
use crate::h2::error::Error;

/// A CONTINUATION frame: the next fragment of a field block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    /// The stream (never 0).
    pub stream_id: StreamId,
    /// The HPACK-encoded field block fragment, a slice of the receive buffer.
    pub fragment: Bytes,
    /// END_HEADERS: the field block ends here.
    pub end_headers: bool,
}

impl Continuation {
    /// A CONTINUATION frame.
    pub fn new(stream_id: StreamId, fragment: Bytes, end_headers: bool) -> Continuation {
        Continuation { stream_id, fragment, end_headers }
    }

    /// Validates a CONTINUATION frame: stream 0 is a connection error PROTOCOL_ERROR (§6.10).
    pub fn load(head: Head, payload: Bytes) -> Result<Continuation, Error> {
        require_stream(&head, "CONTINUATION on stream 0")?;
        Ok(Continuation {
            stream_id: head.stream_id,
            fragment: payload,
            end_headers: head.has(flags::END_HEADERS),
        })
    }

    /// Appends the frame to `dst`.
    ///
    /// # Panics
    ///
    /// If the fragment is longer than 2^24 − 1 bytes (see [`Head::encode`]).
    pub fn encode(&self, dst: &mut BytesMut) {
        let flags = if self.end_headers { flags::END_HEADERS } else { 0 };
        let len = u32::try_from(self.fragment.len()).unwrap_or(u32::MAX);
        Head::new(Kind::Continuation, flags, self.stream_id, len).encode(dst);
        dst.put_slice(&self.fragment);
    }
}

//! RST_STREAM frames (RFC 9113 §6.4).
//!
//! ```text
//!  +---------------------------------------------------------------+
//!  |                        Error Code (32)                        |
//!  +---------------------------------------------------------------+
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{require_stream, Head, Kind, StreamId};
use crate::h2::error::{go_away, Error, Reason};

/// A RST_STREAM frame: ends one stream at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RstStream {
    /// The stream being reset (never 0).
    pub stream_id: StreamId,
    /// Why.
    pub reason: Reason,
}

impl RstStream {
    /// A RST_STREAM frame.
    pub fn new(stream_id: StreamId, reason: Reason) -> RstStream {
        RstStream { stream_id, reason }
    }

    /// Validates a RST_STREAM frame (§6.4): stream 0 is a connection error PROTOCOL_ERROR; a
    /// length other than 4 is a connection error FRAME_SIZE_ERROR.
    pub fn load(head: Head, mut payload: Bytes) -> Result<RstStream, Error> {
        require_stream(&head, "RST_STREAM on stream 0")?;
        if payload.len() != 4 {
            return Err(go_away(Reason::FRAME_SIZE_ERROR, "RST_STREAM length not 4"));
        }
        Ok(RstStream { stream_id: head.stream_id, reason: Reason(payload.get_u32()) })
    }

    /// Appends the 13-byte frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        Head::new(Kind::RstStream, 0, self.stream_id, 4).encode(dst);
        dst.put_u32(self.reason.0);
    }
}

//! GOAWAY frames (RFC 9113 §6.8).
//!
//! ```text
//!  +-+-------------------------------------------------------------+
//!  |R|                  Last-Stream-ID (31)                        |
//!  +-+-------------------------------------------------------------+
//!  |                      Error Code (32)                          |
//!  +---------------------------------------------------------------+
//!  |                  Additional Debug Data (*)                    |
//!  +---------------------------------------------------------------+
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{require_connection, Head, Kind, StreamId};
use crate::h2::error::{go_away, Error, Reason};

/// A GOAWAY frame: the sender will process no stream above `last_stream_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    /// The highest stream the sender processed or may still process.
    pub last_stream_id: StreamId,
    /// Why the connection is closing.
    pub reason: Reason,
    /// Opaque diagnostic bytes (§6.8); never interpreted.
    pub debug_data: Bytes,
}

impl GoAway {
    /// A GOAWAY frame.
    pub fn new(last_stream_id: StreamId, reason: Reason, debug_data: Bytes) -> GoAway {
        GoAway { last_stream_id, reason, debug_data }
    }

    /// Validates a GOAWAY frame (§6.8): a stream other than 0 is a connection error
    /// PROTOCOL_ERROR; fewer than 8 bytes is a connection error FRAME_SIZE_ERROR (§4.2).
    pub fn load(head: Head, mut payload: Bytes) -> Result<GoAway, Error> {
        require_connection(&head, "GOAWAY on a stream")?;
        if payload.len() < 8 {
            return Err(go_away(Reason::FRAME_SIZE_ERROR, "GOAWAY shorter than 8"));
        }
        let last_stream_id = StreamId::new(payload.get_u32());
        let reason = Reason(payload.get_u32());
        Ok(GoAway { last_stream_id, reason, debug_data: payload })
    }

    /// Appends the frame to `dst`.
    ///
    /// # Panics
    ///
    /// If the debug data is longer than 2^24 − 9 bytes (see [`Head::encode`]).
    pub fn encode(&self, dst: &mut BytesMut) {
        let len = u32::try_from(8 + self.debug_data.len()).unwrap_or(u32::MAX);
        Head::new(Kind::GoAway, 0, StreamId::ZERO, len).encode(dst);
        dst.put_u32(self.last_stream_id.value());
        dst.put_u32(self.reason.0);
        dst.put_slice(&self.debug_data);
    }
}

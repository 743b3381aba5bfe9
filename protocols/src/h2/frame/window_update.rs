//! WINDOW_UPDATE frames (RFC 9113 §6.9).
//!
//! ```text
//!  +-+-------------------------------------------------------------+
//!  |R|              Window Size Increment (31)                     |
//!  +-+-------------------------------------------------------------+
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{Head, Kind, StreamId};
use crate::h2::error::{go_away, reset, Error, Reason};

/// A WINDOW_UPDATE frame: grows the flow-control window of a stream, or of the connection
/// when `stream_id` is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowUpdate {
    /// The stream, or 0 for the connection window.
    pub stream_id: StreamId,
    /// The increment, 1..=2^31 − 1.
    pub increment: u32,
}

impl WindowUpdate {
    /// A WINDOW_UPDATE frame.
    pub fn new(stream_id: StreamId, increment: u32) -> WindowUpdate {
        WindowUpdate { stream_id, increment }
    }

    /// Validates a WINDOW_UPDATE frame (§6.9):
    /// 1. a length other than 4 is a connection error FRAME_SIZE_ERROR;
    /// 2. the reserved bit of the increment is ignored;
    /// 3. an increment of 0 is PROTOCOL_ERROR: a stream error on a stream, a connection error
    ///    on stream 0.
    pub fn load(head: Head, mut payload: Bytes) -> Result<WindowUpdate, Error> {
        if payload.len() != 4 {
            return Err(go_away(Reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE length not 4"));
        }
        let increment = payload.get_u32() & !super::RESERVED_BIT;
        if increment == 0 {
            let e = "WINDOW_UPDATE increment 0";
            return Err(if head.stream_id.is_zero() {
                go_away(Reason::PROTOCOL_ERROR, e)
            } else {
                reset(head.stream_id, Reason::PROTOCOL_ERROR, e)
            });
        }
        Ok(WindowUpdate { stream_id: head.stream_id, increment })
    }

    /// Appends the 13-byte frame to `dst`; the reserved bit is written as 0.
    pub fn encode(&self, dst: &mut BytesMut) {
        Head::new(Kind::WindowUpdate, 0, self.stream_id, 4).encode(dst);
        dst.put_u32(self.increment & !super::RESERVED_BIT);
    }
}

//! PUSH_PROMISE frames (RFC 9113 §6.6).
//!
//! ```text
//!  +---------------+
//!  |Pad Length? (8)|
//!  +-+-------------+-----------------------------------------------+
//!  |R|                  Promised Stream ID (31)                    |
//!  +-+-----------------------------+-------------------------------+
//!  |                   Field Block Fragment (*)                    ...
//!  +---------------------------------------------------------------+
//!  |                           Padding (*)                       ...
//!  +---------------------------------------------------------------+
//! ```
//!
//! Only servers send PUSH_PROMISE, and Peregrine never does. A server that receives one
//! answers with a connection error PROTOCOL_ERROR (§8.4); this file only parses the frame so
//! the stream layer can make that call. There is no encoder.

use bytes::{Buf, Bytes};

use super::{flags, require_stream, strip_padding, Head, StreamId};
use crate::h2::error::Error;

/// A received PUSH_PROMISE frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushPromise {
    /// The stream the promise is associated with (never 0).
    pub stream_id: StreamId,
    /// The stream the sender promises to open.
    pub promised_id: StreamId,
    /// The HPACK-encoded request field block fragment.
    pub fragment: Bytes,
    /// END_HEADERS: the field block is complete in this frame.
    pub end_headers: bool,
}

impl PushPromise {
    /// Parses a PUSH_PROMISE frame. Connection errors: stream 0 is PROTOCOL_ERROR (§6.6); a
    /// payload too short for the promised stream id is FRAME_SIZE_ERROR (§4.2); padding past
    /// the fragment is PROTOCOL_ERROR (§6.6).
    pub fn load(head: Head, mut payload: Bytes) -> Result<PushPromise, Error> {
        require_stream(&head, "PUSH_PROMISE on stream 0")?;
        strip_padding(&head, &mut payload, 4)?;
        let promised_id = StreamId::new(payload.get_u32());
        Ok(PushPromise {
            stream_id: head.stream_id,
            promised_id,
            fragment: payload,
            end_headers: head.has(flags::END_HEADERS),
        })
    }
}

//! PING frames (RFC 9113 §6.7).
//!
//! ```text
//!  +---------------------------------------------------------------+
//!  |                      Opaque Data (64)                         |
//!  +---------------------------------------------------------------+
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use super::{flags, require_connection, Head, Kind, StreamId};
use crate::h2::error::{go_away, Error, Reason};

/// A PING frame: a liveness check or its answer (ACK), echoing 8 opaque bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// ACK: this answers a PING of ours.
    pub ack: bool,
    /// The opaque data, echoed unchanged in the ACK.
    pub payload: [u8; 8],
}

impl Ping {
    /// A PING to send.
    pub fn new(payload: [u8; 8]) -> Ping {
        Ping { ack: false, payload }
    }

    /// The answer to this PING (§6.7: same payload, ACK set).
    pub fn pong(&self) -> Ping {
        Ping { ack: true, payload: self.payload }
    }

    /// Validates a PING frame (§6.7): a stream other than 0 is a connection error
    /// PROTOCOL_ERROR; a length other than 8 is a connection error FRAME_SIZE_ERROR.
    pub fn load(head: Head, payload: Bytes) -> Result<Ping, Error> {
        require_connection(&head, "PING on a stream")?;
        let Ok(payload) = <[u8; 8]>::try_from(&payload[..]) else {
            return Err(go_away(Reason::FRAME_SIZE_ERROR, "PING length not 8"));
        };
        Ok(Ping { ack: head.has(flags::ACK), payload })
    }

    /// Appends the 17-byte frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        let flags = if self.ack { flags::ACK } else { 0 };
        Head::new(Kind::Ping, flags, StreamId::ZERO, 8).encode(dst);
        dst.put_slice(&self.payload);
    }
}

//! PRIORITY frames (RFC 9113 §6.3; deprecated, but still parsed and validated).
//!
//! ```text
//!  +-+-------------------------------------------------------------+
//!  |E|                  Stream Dependency (31)                     |
//!  +-+-------------+-----------------------------------------------+
//!  |   Weight (8)  |
//!  +-+-------------+
//! ```

use bytes::{Bytes, BytesMut};

use super::{require_stream, Head, Kind, StreamDependency, StreamId};
use crate::h2::error::{reset, Error, Reason};

/// A PRIORITY frame. Peregrine does not schedule by it, but a flood of them must still be
/// counted by the stream layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    /// The stream being reprioritised (never 0).
    pub stream_id: StreamId,
    /// Its new dependency and weight.
    pub dependency: StreamDependency,
}

impl Priority {
    /// Validates a PRIORITY frame (§6.3): stream 0 is a connection error PROTOCOL_ERROR; a
    /// length other than 5 is a stream error FRAME_SIZE_ERROR; a self-dependency is a stream
    /// error PROTOCOL_ERROR (§5.3.1).
    pub fn load(head: Head, mut payload: Bytes) -> Result<Priority, Error> {
        require_stream(&head, "PRIORITY on stream 0")?;
        if payload.len() != StreamDependency::LEN {
            return Err(reset(head.stream_id, Reason::FRAME_SIZE_ERROR, "PRIORITY length not 5"));
        }
        let dependency = StreamDependency::read(&mut payload);
        dependency.check(head.stream_id)?;
        Ok(Priority { stream_id: head.stream_id, dependency })
    }

    /// Appends the 14-byte frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        Head::new(Kind::Priority, 0, self.stream_id, 5).encode(dst);
        self.dependency.encode(dst);
    }
}

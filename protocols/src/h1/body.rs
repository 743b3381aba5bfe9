//! Request body framing: Content-Length and chunked (RFC 9112 §6, §7).

use bytes::{Bytes, BytesMut};

use super::error::BodyError;
use super::request::BodyFraming;

/// What [`BodyDecoder::decode`] found in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEvent {
    /// A piece of body data, split off the buffer without copying. Never empty.
    Data(Bytes),
    /// The buffer holds no more body bytes yet; read more and call again.
    NeedMore,
    /// The body is complete (for chunked: last chunk and trailers consumed). Bytes left in
    /// the buffer belong to the next request.
    Done,
}

/// Decodes one request body from a receive buffer.
#[derive(Debug)]
pub struct BodyDecoder {
    _private: (),
}

impl BodyDecoder {
    /// A decoder for `framing`. `max_body_size` caps the decoded body (`max_request_body_size`);
    /// a Content-Length above it should be rejected by the caller before reading, chunked
    /// bodies are counted as they arrive. `max_trailer_size` caps the trailer section.
    pub fn new(framing: BodyFraming, max_body_size: Option<u64>, max_trailer_size: usize) -> Self {
        let _ = (framing, max_body_size, max_trailer_size);
        todo!()
    }

    /// Decodes from the front of `buf`, consuming framing bytes and splitting off data.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<BodyEvent, BodyError> {
        let _ = buf;
        todo!()
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        todo!()
    }
}

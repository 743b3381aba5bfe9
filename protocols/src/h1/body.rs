//! Request body framing: Content-Length and chunked (RFC 9112 §6, §7).
//!
//! Read RFC 9112 §6.2 (Content-Length), §6.3 (message body length) and §7 (chunked) before
//! editing. The chunked state machine lives in the private `chunked` module.

use bytes::{Bytes, BytesMut};
use peregrine_limits::Limit;

use super::chunked::Chunked;
use super::error::{BodyError, LimitExceeded};
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
///
/// Call [`decode`](Self::decode) whenever bytes arrive, and again after every
/// [`BodyEvent::Data`], until it returns [`BodyEvent::Done`] or an error. `NeedMore` is only
/// returned once every buffered byte has been consumed. The decoder never consumes a byte past
/// the end of its body, so the buffer then holds the next pipelined request.
///
/// Errors are sticky: once `decode` fails, it keeps returning the same error. Trailer fields
/// of a chunked body are validated (and their size capped) but discarded: nothing in Peregrine
/// consumes them, and forwarding them would be a way to inject fields after the head was
/// checked.
#[derive(Debug)]
pub struct BodyDecoder {
    kind: Kind,
    failed: Option<BodyError>,
}

#[derive(Debug)]
enum Kind {
    /// No more body bytes (empty framing, or all read).
    Done,
    /// Content-Length framing: `remaining` of `total` bytes still to come.
    Length {
        remaining: u64,
        total: u64,
        max_body: Option<u64>,
    },
    Chunked(Chunked),
    /// A response body that ends when the connection does: everything is data.
    UntilClose,
}

impl BodyDecoder {
    /// A decoder for `framing`. `max_body_size` caps the decoded body (`max_request_body_size`);
    /// a Content-Length above it should be rejected by the caller before reading, chunked
    /// bodies are counted as they arrive. `max_trailer_size` caps the trailer section.
    pub fn new(framing: BodyFraming, max_body_size: Option<u64>, max_trailer_size: usize) -> Self {
        let kind = match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => Kind::Done,
            BodyFraming::Length(n) => {
                Kind::Length { remaining: n, total: n, max_body: max_body_size }
            }
            BodyFraming::Chunked => Kind::Chunked(Chunked::new(max_body_size, max_trailer_size)),
        };
        BodyDecoder { kind, failed: None }
    }

    /// A decoder for a close-delimited response body (RFC 9112 §6.3 rule 8): every byte is
    /// data, and the body ends when the connection does (the caller sees that; this decoder
    /// never reports `Done`).
    pub fn until_close() -> Self {
        BodyDecoder { kind: Kind::UntilClose, failed: None }
    }

    /// Decodes from the front of `buf`, consuming framing bytes and splitting off data.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<BodyEvent, BodyError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = match &mut self.kind {
            Kind::Done => Ok(BodyEvent::Done),
            Kind::Length { remaining, total, max_body } => {
                decode_length(remaining, *total, *max_body, buf)
            }
            Kind::Chunked(chunked) => chunked.decode(buf),
            Kind::UntilClose if buf.is_empty() => Ok(BodyEvent::NeedMore),
            Kind::UntilClose => Ok(BodyEvent::Data(buf.split().freeze())),
        };
        match &result {
            Err(e) => self.failed = Some(*e),
            Ok(_) if matches!(self.kind, Kind::Length { remaining: 0, .. }) => {
                self.kind = Kind::Done;
            }
            Ok(_) => {}
        }
        result
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        match &self.kind {
            Kind::Done => true,
            Kind::Length { .. } | Kind::UntilClose => false,
            Kind::Chunked(chunked) => chunked.is_done(),
        }
    }
}

/// Content-Length framing (RFC 9112 §6.2): hand out up to `remaining` bytes as they arrive.
fn decode_length(
    remaining: &mut u64,
    total: u64,
    max_body: Option<u64>,
    buf: &mut BytesMut,
) -> Result<BodyEvent, BodyError> {
    // The caller should have answered 413 from the head already; this keeps a decoder built
    // without that check from reading an oversized body anyway.
    if let Some(max) = max_body {
        if total > max {
            return Err(BodyError::Limit(LimitExceeded {
                limit: Limit::MaxRequestBodySize,
                max,
                observed: total,
            }));
        }
    }
    if buf.is_empty() {
        return Ok(BodyEvent::NeedMore);
    }
    // At most `buf.len()`, so it fits a usize.
    let n = (*remaining).min(buf.len() as u64) as usize;
    *remaining -= n as u64;
    Ok(BodyEvent::Data(buf.split_to(n).freeze()))
}

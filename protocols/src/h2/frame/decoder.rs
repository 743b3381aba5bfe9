//! [`FrameDecoder`]: splits complete frames off the receive buffer (RFC 9113 §4.1, §4.2).

use bytes::{Buf, BytesMut};
use peregrine_limits::Limit;

use super::{flags, Frame, Head, Kind, StreamId, HEAD_LEN};
use crate::h1::LimitExceeded;
use crate::h2::error::{go_away, Error, Reason};

/// The initial SETTINGS_MAX_FRAME_SIZE, 2^14 (RFC 9113 §4.2, §6.5.2), and Peregrine's
/// default `max_frame_size`.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;

/// The largest SETTINGS_MAX_FRAME_SIZE a peer may advertise, 2^24 − 1 (RFC 9113 §6.5.2).
pub const MAX_MAX_FRAME_SIZE: u32 = 16_777_215;

/// Reads frames from a receive buffer, one complete frame per call.
///
/// Frames are split off the front of the buffer without copying: payloads (DATA bodies,
/// field block fragments, GOAWAY debug data) are `Bytes` sharing the buffer's memory.
///
/// Errors:
/// - A connection error ([`Error::is_connection_error`]) is sticky: every later call returns
///   it again and the buffer is not read further. The caller sends GOAWAY and closes.
/// - A stream error has consumed its frame; the caller sends RST_STREAM and may keep
///   decoding.
///
/// Frames of unknown types are consumed and discarded (RFC 9113 §4.1, §5.5), though they
/// still must fit `max_frame_size`.
///
/// The decoder also enforces the one ordering rule that needs no stream state, because only
/// it sees the unknown frames it discards (RFC 9113 §6.10): once a HEADERS or PUSH_PROMISE
/// without END_HEADERS arrives, the next frame must be a CONTINUATION on the same stream,
/// until one carries END_HEADERS; anything else (an unknown frame included) is a connection
/// error PROTOCOL_ERROR, as is a CONTINUATION that continues nothing.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_size: u32,
    /// The stream whose field block is open: only a CONTINUATION on it may come next.
    continuation: Option<StreamId>,
    failed: Option<Error>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// A decoder accepting frames up to [`DEFAULT_MAX_FRAME_SIZE`] bytes of payload.
    pub fn new() -> FrameDecoder {
        FrameDecoder { max_frame_size: DEFAULT_MAX_FRAME_SIZE, continuation: None, failed: None }
    }

    /// A decoder accepting payloads up to `max_frame_size` bytes: the value Peregrine
    /// advertised as SETTINGS_MAX_FRAME_SIZE (`Limits::h2.max_frame_size`).
    ///
    /// # Panics
    ///
    /// If `max_frame_size` is outside 16384..=16777215 (RFC 9113 §6.5.2); config loading
    /// rejects such values first.
    pub fn with_max_frame_size(max_frame_size: u32) -> FrameDecoder {
        let mut dec = FrameDecoder::new();
        dec.set_max_frame_size(max_frame_size);
        dec
    }

    /// Changes the largest accepted payload, e.g. once the peer acknowledged new SETTINGS.
    ///
    /// # Panics
    ///
    /// As [`FrameDecoder::with_max_frame_size`].
    pub fn set_max_frame_size(&mut self, max_frame_size: u32) {
        assert!(
            (DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&max_frame_size),
            "max_frame_size {max_frame_size} outside 16384..=16777215"
        );
        self.max_frame_size = max_frame_size;
    }

    /// The largest accepted payload, in bytes.
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Decodes the next frame at the front of `buf`.
    ///
    /// - `Ok(Some(frame))`: one frame was consumed from `buf`.
    /// - `Ok(None)`: no complete frame yet; `buf` is untouched (unknown frames before the
    ///   incomplete one may have been discarded). Read more bytes and call again.
    /// - `Err(e)`: see the type's docs for what was consumed.
    ///
    /// A header announcing more than `max_frame_size` bytes is refused as soon as its 9 bytes
    /// arrive, before any payload is buffered (RFC 9113 §4.2: FRAME_SIZE_ERROR; a connection
    /// error here whatever the frame type, as Peregrine never reads the oversized payload).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = self.decode_inner(buf);
        if let Err(e) = result {
            if e.is_connection_error() {
                self.failed = Some(e);
            }
        }
        result
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        loop {
            if buf.len() < HEAD_LEN {
                return Ok(None);
            }
            let head = Head::parse(&buf[..HEAD_LEN]);
            if head.length > self.max_frame_size {
                return Err(Error::Limit(
                    Reason::FRAME_SIZE_ERROR,
                    LimitExceeded {
                        limit: Limit::H2MaxFrameSize,
                        max: u64::from(self.max_frame_size),
                        observed: u64::from(head.length),
                    },
                ));
            }
            self.check_sequence(&head)?;
            let len = head.length as usize;
            if buf.len() < HEAD_LEN + len {
                return Ok(None);
            }
            buf.advance(HEAD_LEN);
            let payload = buf.split_to(len).freeze();
            if let Kind::Unknown(_) = head.kind {
                continue; // RFC 9113 §5.5: unknown frame types MUST be ignored and discarded.
            }
            let result = Frame::load(head, payload);
            // A stream error still leaves the field block open: its CONTINUATIONs follow.
            let opens = matches!(head.kind, Kind::Headers | Kind::PushPromise | Kind::Continuation);
            if opens && !head.has(flags::END_HEADERS) {
                self.continuation = Some(head.stream_id);
            } else {
                self.continuation = None;
            }
            return result.map(Some);
        }
    }

    /// RFC 9113 §6.10, checked from the header alone:
    /// 1. while a field block is open, only a CONTINUATION on its stream may arrive;
    /// 2. a CONTINUATION must continue an open field block.
    ///
    /// Both are connection errors PROTOCOL_ERROR.
    fn check_sequence(&self, head: &Head) -> Result<(), Error> {
        match (self.continuation, head.kind) {
            (Some(open), Kind::Continuation) if open == head.stream_id => Ok(()),
            (Some(_), _) => Err(go_away(Reason::PROTOCOL_ERROR, "expected CONTINUATION")),
            (None, Kind::Continuation) => {
                Err(go_away(Reason::PROTOCOL_ERROR, "CONTINUATION without a field block"))
            }
            (None, _) => Ok(()),
        }
    }
}

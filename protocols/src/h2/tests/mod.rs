//! Tests of the h2 frame layer.
//!
//! As for h1: every decoder input is fed whole, split in two at every byte boundary, and one
//! byte at a time, and all must give the same frames, the same errors and the same leftover
//! bytes. [`run`] does that; every decoder test goes through it.

mod client;
mod decoder;
mod encode;
mod frames;
mod hpack;
mod preface;
mod request;
mod response;
mod server;

use bytes::BytesMut;

use super::frame::{FrameDecoder, Head, HEAD_LEN};
use super::{Error, Frame, Reason, StreamId};

/// Everything observable after feeding an input.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Outcome {
    /// Frames and errors, in order. Decoding stops at the first connection error.
    pub(super) events: Vec<Result<Frame, Error>>,
    /// Bytes left in the receive buffer.
    pub(super) leftover: Vec<u8>,
}

/// A connection loop in miniature: how `core` will drive the decoder.
struct Conn {
    dec: FrameDecoder,
    buf: BytesMut,
    events: Vec<Result<Frame, Error>>,
    dead: bool,
}

impl Conn {
    fn new(max_frame_size: u32) -> Conn {
        Conn {
            dec: FrameDecoder::with_max_frame_size(max_frame_size),
            buf: BytesMut::new(),
            events: Vec::new(),
            dead: false,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while !self.dead {
            match self.dec.decode(&mut self.buf) {
                Ok(Some(frame)) => self.events.push(Ok(frame)),
                Ok(None) => {
                    // Need more: either the header or the announced payload is incomplete.
                    if self.buf.len() >= HEAD_LEN {
                        let head = Head::parse(&self.buf);
                        assert!(self.buf.len() < HEAD_LEN + head.length as usize);
                    }
                    return;
                }
                Err(e) => {
                    self.events.push(Err(e));
                    if e.is_connection_error() {
                        let before = self.buf.clone();
                        assert_eq!(self.dec.decode(&mut self.buf), Err(e), "sticky");
                        assert_eq!(self.buf, before, "a failed decoder reads nothing");
                        self.dead = true;
                    }
                }
            }
        }
    }

    fn finish(self) -> Outcome {
        Outcome { events: self.events, leftover: self.buf.to_vec() }
    }
}

/// Feeds `input` to fresh decoders whole, split at every byte boundary, and one byte at a
/// time; asserts all agree and returns the outcome.
pub(super) fn run_with(input: &[u8], max_frame_size: u32) -> Outcome {
    let mut c = Conn::new(max_frame_size);
    c.feed(input);
    let whole = c.finish();

    for at in 0..=input.len() {
        let mut c = Conn::new(max_frame_size);
        c.feed(&input[..at]);
        c.feed(&input[at..]);
        assert_eq!(c.finish(), whole, "split at {at} of {input:02x?}");
    }

    let mut c = Conn::new(max_frame_size);
    for b in input {
        c.feed(std::slice::from_ref(b));
    }
    assert_eq!(c.finish(), whole, "byte at a time: {input:02x?}");
    whole
}

/// [`run_with`] under the default max_frame_size.
pub(super) fn run(input: &[u8]) -> Outcome {
    run_with(input, 16_384)
}

/// Raw frame bytes: a header with the given fields, then `payload`.
pub(super) fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut v = len.to_be_bytes()[1..].to_vec();
    v.extend_from_slice(&[kind, flags]);
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Decodes input holding exactly one valid frame.
pub(super) fn frame(input: &[u8]) -> Frame {
    let out = run(input);
    assert!(out.leftover.is_empty(), "leftover {:02x?}", out.leftover);
    match out.events.as_slice() {
        [Ok(f)] => f.clone(),
        other => panic!("expected one frame for {input:02x?}, got {other:?}"),
    }
}

/// Decodes input holding exactly one invalid frame; returns the error.
pub(super) fn error(input: &[u8]) -> Error {
    let out = run(input);
    match out.events.as_slice() {
        [Err(e)] => *e,
        other => panic!("expected one error for {input:02x?}, got {other:?}"),
    }
}

/// Asserts `input` is a connection error with `reason`.
pub(super) fn assert_conn(input: &[u8], reason: Reason) {
    let e = error(input);
    assert!(matches!(e, Error::Connection(r, _) if r == reason), "{e:?}, wanted {reason:?}");
}

/// Asserts `input` is a stream error on `stream` with `reason`.
pub(super) fn assert_stream(input: &[u8], stream: u32, reason: Reason) {
    let e = error(input);
    let want = Some(StreamId::new(stream));
    assert!(
        matches!(e, Error::Stream(..)) && e.stream_id() == want && e.reason() == reason,
        "{e:?}, wanted stream {stream} {reason:?}"
    );
}

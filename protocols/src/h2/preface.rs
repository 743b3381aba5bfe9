//! The client connection preface (RFC 9113 §3.4).
//!
//! A client's first bytes on an HTTP/2 connection are the 24 octets of [`PREFACE`], followed
//! by a SETTINGS frame (which the [`FrameDecoder`](super::FrameDecoder) reads like any other).

use bytes::{Buf, BytesMut};

use super::error::{go_away, Error, Reason};

/// The client connection preface: `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Checks for the client connection preface at the start of `buf`.
///
/// - `Ok(Some(()))`: the preface was there; its 24 bytes have been consumed.
/// - `Ok(None)`: every byte so far matches but the preface is incomplete; `buf` is untouched.
/// - `Err`: a byte differs. RFC 9113 §3.4: an invalid preface is a connection error of type
///   PROTOCOL_ERROR (GOAWAY may be omitted, as the peer is probably not speaking HTTP/2).
///   The check fails on the first wrong byte, without waiting for all 24.
pub fn check(buf: &mut BytesMut) -> Result<Option<()>, Error> {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] != PREFACE[..n] {
        return Err(go_away(Reason::PROTOCOL_ERROR, "invalid connection preface"));
    }
    if n < PREFACE.len() {
        return Ok(None);
    }
    buf.advance(PREFACE.len());
    Ok(Some(()))
}

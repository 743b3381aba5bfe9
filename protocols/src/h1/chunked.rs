//! The chunked transfer coding (RFC 9112 §7.1), one state per function, as hyper's
//! `ChunkedState`.
//!
//! Read RFC 9112 §7.1 (chunked coding), §7.1.1 (extensions), §7.1.2 (trailers) and RFC 9110
//! §5.6 (tokens, quoted strings) before editing.
//!
//! ```text
//! chunked-body   = *chunk last-chunk trailer-section CRLF
//! chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size     = 1*HEXDIG
//! last-chunk     = 1*("0") [ chunk-ext ] CRLF
//! chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! chunk-ext-val  = token / quoted-string
//! trailer-section = *( field-line CRLF )
//! ```
//!
//! Framing bytes are consumed one at a time, so the decoder never needs a whole line (or a
//! whole chunk) buffered, and stops exactly at the end of the body: pipelined requests that
//! follow stay in the buffer. Every line must end in CRLF: a bare LF, or a CR not followed by
//! LF, is a framing error (RFC 9112 §7.1 grammar; lenient LF handling is how chunked bodies
//! get smuggled past a front end that disagrees).
//!
//! Whitespace is accepted only where the grammar puts BWS: before `;` and around `=`. A
//! trailing space before the CRLF (`5 \r\n`) is rejected, unlike hyper.

use bytes::{Buf, BytesMut};
use peregrine_limits::Limit;

use super::body::BodyEvent;
use super::error::{BodyError, LimitExceeded, Violation};
use super::scan::is_tchar;

/// Cap on the bytes of chunk extensions (from the end of the size digits to the CR, summed over
/// the whole body). Extensions carry nothing we use, but each one costs a parse; without a cap
/// a client could stream endless extensions and never any data (hyper's
/// `CHUNKED_EXTENSIONS_LIMIT` is the same 16 KiB, for the same reason).
const CHUNK_EXTENSIONS_LIMIT: usize = 16 * 1024;

/// 16 hex digits fill a u64; more digits (even leading zeros) are refused rather than
/// parsed, so the size line is bounded too.
const MAX_CHUNK_SIZE_DIGITS: u32 = 16;

/// Where the decoder is inside the chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkedState {
    /// Reading `chunk-size` hex digits.
    Size,
    /// Whitespace after the size; only `;` may follow.
    SizeBws,
    /// After `;`, before the extension name.
    ExtBwsBeforeName,
    /// Inside an extension name.
    ExtName,
    /// Whitespace after an extension name; `=` or `;` must follow.
    ExtBwsAfterName,
    /// After `=`, before the value.
    ExtBwsBeforeValue,
    /// Inside a token value.
    ExtToken,
    /// Inside a quoted-string value.
    ExtQuoted,
    /// After a backslash in a quoted-string.
    ExtQuotedPair,
    /// Right after a quoted-string's closing quote.
    ExtAfterValue,
    /// Whitespace after a value; only `;` may follow.
    ExtBwsAfterValue,
    /// Saw the CR ending the size line.
    SizeLf,
    /// Inside chunk data; `remaining` bytes to go.
    Data,
    /// Chunk data done; expecting its CR.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value.
    TrailerValue,
    /// Saw the CR ending a trailer line.
    TrailerLf,
    /// Saw the CR of the final empty line.
    EndLf,
    /// The body is complete.
    Done,
}

use ChunkedState::*;

/// Decoder state for one chunked body.
#[derive(Debug)]
pub(super) struct Chunked {
    state: ChunkedState,
    /// While reading a size line: the size so far. In `Data`: bytes left in this chunk.
    remaining: u64,
    digits: u32,
    /// Sum of all chunk sizes declared so far (checked against `max_body`).
    declared: u64,
    ext_bytes: usize,
    trailer_bytes: usize,
    max_body: Option<u64>,
    max_trailer: usize,
}

fn framing_error() -> BodyError {
    BodyError::Invalid(Violation::InvalidChunkFraming)
}

fn size_error() -> BodyError {
    BodyError::Invalid(Violation::InvalidChunkSize)
}

fn trailer_error() -> BodyError {
    BodyError::Invalid(Violation::InvalidTrailer)
}

/// `field-vchar` plus SP/HTAB (RFC 9110 §5.5), and `qdtext` / quoted-pair bytes are this set
/// minus a few: visible ASCII, obs-text, SP and HTAB. No other control bytes.
fn is_text(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

impl Chunked {
    pub(super) fn new(max_body: Option<u64>, max_trailer: usize) -> Self {
        Chunked {
            state: Size,
            remaining: 0,
            digits: 0,
            declared: 0,
            ext_bytes: 0,
            trailer_bytes: 0,
            max_body,
            max_trailer,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        self.state == Done
    }

    /// Consumes framing bytes until there is data to hand out, the buffer is empty, the body
    /// ends, or the framing is broken. Never consumes a byte past the final CRLF.
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Result<BodyEvent, BodyError> {
        let mut used = 0;
        let result = loop {
            match self.state {
                Done => break Ok(BodyEvent::Done),
                Data => {
                    buf.advance(used);
                    if buf.is_empty() {
                        return Ok(BodyEvent::NeedMore);
                    }
                    // Less than `buf.len()`, so it fits a usize.
                    let n = self.remaining.min(buf.len() as u64) as usize;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = DataCr;
                    }
                    return Ok(BodyEvent::Data(buf.split_to(n).freeze()));
                }
                state => {
                    let Some(&b) = buf.get(used) else { break Ok(BodyEvent::NeedMore) };
                    used += 1;
                    match self.step(state, b) {
                        Ok(next) => self.state = next,
                        Err(e) => break Err(e),
                    }
                }
            }
        };
        buf.advance(used);
        result
    }

    fn step(&mut self, state: ChunkedState, b: u8) -> Result<ChunkedState, BodyError> {
        match state {
            Size => self.read_size(b),
            SizeBws => self.ext_byte(b, read_size_bws),
            ExtBwsBeforeName => self.ext_byte(b, read_ext_bws_before_name),
            ExtName => self.ext_byte(b, read_ext_name),
            ExtBwsAfterName => self.ext_byte(b, read_ext_bws_after_name),
            ExtBwsBeforeValue => self.ext_byte(b, read_ext_bws_before_value),
            ExtToken => self.ext_byte(b, read_ext_token),
            ExtQuoted => self.ext_byte(b, read_ext_quoted),
            ExtQuotedPair => self.ext_byte(b, read_ext_quoted_pair),
            ExtAfterValue => self.ext_byte(b, read_ext_after_value),
            ExtBwsAfterValue => self.ext_byte(b, read_ext_bws_after_value),
            SizeLf => self.read_size_lf(b),
            DataCr => read_data_cr(b),
            DataLf => self.read_data_lf(b),
            TrailerStart => self.trailer_byte(b, read_trailer_start),
            TrailerName => self.trailer_byte(b, read_trailer_name),
            TrailerValue => self.trailer_byte(b, read_trailer_value),
            TrailerLf => self.trailer_byte(b, read_trailer_lf),
            EndLf => read_end_lf(b),
            // `decode` handles these without reading a byte.
            Data | Done => Ok(state),
        }
    }

    /// `1*HEXDIG`, at most [`MAX_CHUNK_SIZE_DIGITS`]. The size is checked against the body
    /// cap as soon as its last digit is read, before any of its data arrives.
    fn read_size(&mut self, b: u8) -> Result<ChunkedState, BodyError> {
        if let Some(d) = (b as char).to_digit(16) {
            if self.digits == MAX_CHUNK_SIZE_DIGITS {
                return Err(size_error());
            }
            self.digits += 1;
            self.remaining = self
                .remaining
                .checked_mul(16)
                .and_then(|s| s.checked_add(u64::from(d)))
                .ok_or_else(size_error)?;
            return Ok(Size);
        }
        if self.digits == 0 {
            return Err(size_error());
        }
        self.declare_chunk()?;
        match b {
            b'\r' => Ok(SizeLf),
            b';' => self.ext_byte(b, |_| Ok(ExtBwsBeforeName)),
            b' ' | b'\t' => self.ext_byte(b, |_| Ok(SizeBws)),
            b'\n' => Err(framing_error()),
            _ => Err(size_error()),
        }
    }

    fn declare_chunk(&mut self) -> Result<(), BodyError> {
        let total = self.declared.saturating_add(self.remaining);
        if let Some(max) = self.max_body {
            if total > max {
                return Err(BodyError::Limit(LimitExceeded {
                    limit: Limit::MaxRequestBodySize,
                    max,
                    observed: total,
                }));
            }
        }
        self.declared = total;
        Ok(())
    }

    /// Runs an extension-state function and counts the byte against
    /// [`CHUNK_EXTENSIONS_LIMIT`]. The CR ending the line is not extension bytes.
    fn ext_byte(
        &mut self,
        b: u8,
        read: impl FnOnce(u8) -> Result<ChunkedState, BodyError>,
    ) -> Result<ChunkedState, BodyError> {
        let next = read(b)?;
        if next != SizeLf {
            self.ext_bytes += 1;
            if self.ext_bytes > CHUNK_EXTENSIONS_LIMIT {
                return Err(framing_error());
            }
        }
        Ok(next)
    }

    fn read_size_lf(&mut self, b: u8) -> Result<ChunkedState, BodyError> {
        match b {
            b'\n' if self.remaining == 0 => Ok(TrailerStart),
            b'\n' => Ok(Data),
            _ => Err(framing_error()),
        }
    }

    fn read_data_lf(&mut self, b: u8) -> Result<ChunkedState, BodyError> {
        match b {
            b'\n' => {
                self.digits = 0;
                self.remaining = 0;
                Ok(Size)
            }
            _ => Err(framing_error()),
        }
    }

    /// Runs a trailer-state function and counts the byte against `max_trailer`. Bytes of
    /// trailer field lines count (CRLF included); the final empty line does not, so a body
    /// without trailers fits any cap.
    fn trailer_byte(
        &mut self,
        b: u8,
        read: impl FnOnce(u8) -> Result<ChunkedState, BodyError>,
    ) -> Result<ChunkedState, BodyError> {
        let next = read(b)?;
        if next != EndLf {
            self.trailer_bytes += 1;
            if self.trailer_bytes > self.max_trailer {
                return Err(BodyError::Limit(LimitExceeded {
                    limit: Limit::MaxRequestHeadersTotalSize,
                    max: self.max_trailer as u64,
                    observed: self.trailer_bytes as u64,
                }));
            }
        }
        Ok(next)
    }
}

fn read_size_bws(b: u8) -> Result<ChunkedState, BodyError> {
    match b {
        b' ' | b'\t' => Ok(SizeBws),
        b';' => Ok(ExtBwsBeforeName),
        _ => Err(framing_error()),
    }
}

fn read_ext_bws_before_name(b: u8) -> Result<ChunkedState, BodyError> {
    match b {
        b' ' | b'\t' => Ok(ExtBwsBeforeName),
        b if is_tchar(b) => Ok(ExtName),
        _ => Err(framing_error()),
    }
}

fn read_ext_name(b: u8) -> Result<ChunkedState, BodyError> {
    match b {
        b if is_tchar(b) => Ok(ExtName),
        b'=' => Ok(ExtBwsBeforeValue),
        b';' => Ok(ExtBwsBeforeName),
        b' ' | b'\t' => Ok(ExtBwsAfterName),
        b'\r' => Ok(SizeLf),
        _ => Err(framing_error()),
    }
}

fn read_ext_bws_after_name(b: u8) -> Result<ChunkedState, BodyError> {
    match b {
        b' ' | b'\t' => Ok(ExtBwsAfterName),
        b'=' => Ok(ExtBwsBeforeValue),
        b';' => Ok(ExtBwsBeforeName),
        _ => Err(framing_error()),
    }
}

fn read_ext_bws_before_value(b: u8) -> Result<ChunkedState, BodyError> {
    match b {
        b' ' | b'\t' => Ok(ExtBwsBeforeValue),
        b'"' => Ok(ExtQuoted),
        b if is_tchar(b) => Ok(ExtToken),
        _ => Err(framing_error()),
    }
}

fn read_ext_token(b: u8) -> Result<ChunkedState, BodyError> {
    if is_tchar(b) {
        Ok(ExtToken)
    } else {
        read_ext_after_value(b)
    }
}

/// `qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text` (RFC 9110 §5.6.4).
fn read_ext_quoted(b: u8) -> Result<ChunkedState, BodyError> {
    match b {
        b'"' => Ok(ExtAfterValue),
        b'\\' => Ok(ExtQuotedPair),
        b if is_text(b) => Ok(ExtQuoted),
        _ => Err(framing_error()),
    }
}

/// `quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )`.
fn read_ext_quoted_pair(b: u8) -> Result<ChunkedState, BodyError> {
    if is_text(b) {
        Ok(ExtQuoted)
    } else {
        Err(framing_error())
    }
}

fn read_ext_after_value(b: u8) -> Result<ChunkedState, BodyError> {
    match b {
        b' ' | b'\t' => Ok(ExtBwsAfterValue),
        b';' => Ok(ExtBwsBeforeName),
        b'\r' => Ok(SizeLf),
        _ => Err(framing_error()),
    }
}

fn read_ext_bws_after_value(b: u8) -> Result<ChunkedState, BodyError> {
    match b {
        b' ' | b'\t' => Ok(ExtBwsAfterValue),
        b';' => Ok(ExtBwsBeforeName),
        _ => Err(framing_error()),
    }
}

fn read_data_cr(b: u8) -> Result<ChunkedState, BodyError> {
    match b {
        b'\r' => Ok(DataLf),
        _ => Err(framing_error()),
    }
}

/// A trailer line starts with a field name; the empty line ends the body. Whitespace here
/// would be obs-fold (RFC 9112 §5.2).
fn read_trailer_start(b: u8) -> Result<ChunkedState, BodyError> {
    match b {
        b'\r' => Ok(EndLf),
        b'\n' => Err(framing_error()),
        b if is_tchar(b) => Ok(TrailerName),
        _ => Err(trailer_error()),
    }
}

/// `field-name ":"` with no whitespace before the colon (RFC 9112 §5.1).
fn read_trailer_name(b: u8) -> Result<ChunkedState, BodyError> {
    match b {
        b if is_tchar(b) => Ok(TrailerName),
        b':' => Ok(TrailerValue),
        _ => Err(trailer_error()),
    }
}

fn read_trailer_value(b: u8) -> Result<ChunkedState, BodyError> {
    match b {
        b'\r' => Ok(TrailerLf),
        b if is_text(b) => Ok(TrailerValue),
        _ => Err(trailer_error()),
    }
}

fn read_trailer_lf(b: u8) -> Result<ChunkedState, BodyError> {
    match b {
        b'\n' => Ok(TrailerStart),
        _ => Err(trailer_error()),
    }
}

fn read_end_lf(b: u8) -> Result<ChunkedState, BodyError> {
    match b {
        b'\n' => Ok(Done),
        _ => Err(framing_error()),
    }
}

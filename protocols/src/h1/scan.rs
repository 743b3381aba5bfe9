//! Finding the request head in the receive buffer: `httparse` tokenises, this module bounds
//! what it may look at and turns its errors into Peregrine's precise ones.
//!
//! Read RFC 9112 §2.2 (message parsing), §3 (request line) and §5 (field syntax) first.
//!
//! Nothing here borrows past its return: the result is a [`RawHead`] of byte offsets, so the
//! caller can split the head off the buffer (zero-copy) and build the `http` types from it.
//!
//! # Why errors do not depend on how the bytes arrived
//!
//! A limit is a byte position: the request line may not reach past `start + max_line`, the
//! header section not past `line_end + max_headers`. `httparse` only ever sees the buffer cut
//! at that position, so a syntax error *before* it wins over the limit and a limit is reported
//! as soon as a byte past it is buffered. Because `httparse` is a forward scanner, the outcome
//! for any prefix is the outcome for the whole input, or "need more". The same holds for the
//! error classifiers below, which answer [`Verdict::Undecided`] rather than guess. That is
//! what the split-at-every-byte tests check.

use peregrine_limits::Limit;
use std::mem::MaybeUninit;
use std::ops::Range;

use httparse::Header;

use super::error::{LimitExceeded, ParseError, Violation};
use super::request::ParseConfig;

/// Header slots kept on the stack (4 KiB of `httparse::Header`, as many again of spans).
/// Configurations allowing more headers than this use a heap `Vec` per call.
pub(super) const STACK_HEADER_SLOTS: usize = 128;

/// Empty lines (CRLF or LF) skipped before a request line (RFC 9112 §2.2: "SHOULD ignore at
/// least one empty line"). Old clients send one CRLF after a POST body; more than a handful is
/// not a client we want to wait for, and bounding it keeps `parse_request` from holding an
/// ever-growing buffer of newlines.
const MAX_LEADING_EMPTY_LINES: usize = 8;

/// Offsets (into the scanned buffer) of one header field's name and value.
#[derive(Debug, Clone, Default)]
pub(super) struct HeaderSpan {
    pub(super) name: Range<usize>,
    pub(super) value: Range<usize>,
}

impl HeaderSpan {
    pub(super) const EMPTY: HeaderSpan = HeaderSpan { name: 0..0, value: 0..0 };
}

/// Where everything in a complete, tokenised request head lies, as offsets into the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct RawHead {
    /// Bytes to split off: leading empty lines, request line and header section.
    pub(super) len: usize,
    pub(super) method: Range<usize>,
    pub(super) target: Range<usize>,
    /// `httparse`'s minor version: 0 or 1.
    pub(super) minor_version: u8,
    /// How many entries of the span slice are filled.
    pub(super) header_count: usize,
}

/// How many header slots a parse needs. More than `max_request_header_count` is never needed;
/// and since the smallest header line (`a:\n`) is 3 bytes, a section cut at
/// `max_request_headers_total_size` cannot hold more than a third of that many lines, so a
/// huge count limit does not make us allocate a huge slot array.
pub(super) fn header_slots(cfg: &ParseConfig) -> usize {
    cfg.max_request_header_count.min(cfg.max_request_headers_total_size / 3 + 1)
}

/// Tokenises the head at the front of `buf`, enforcing the size limits.
/// `spans` must hold [`header_slots`] entries; `Ok(None)` means more bytes are needed.
pub(super) fn scan_head(
    buf: &[u8],
    cfg: &ParseConfig,
    spans: &mut [HeaderSpan],
) -> Result<Option<RawHead>, ParseError> {
    if spans.len() <= STACK_HEADER_SLOTS {
        let mut slots = [const { MaybeUninit::uninit() }; STACK_HEADER_SLOTS];
        scan_with_slots(buf, cfg, &mut slots[..spans.len()], spans)
    } else {
        let mut slots = Vec::new();
        slots.resize_with(spans.len(), MaybeUninit::uninit);
        scan_with_slots(buf, cfg, &mut slots, spans)
    }
}

fn scan_with_slots<'b>(
    buf: &'b [u8],
    cfg: &ParseConfig,
    slots: &mut [MaybeUninit<Header<'b>>],
    spans: &mut [HeaderSpan],
) -> Result<Option<RawHead>, ParseError> {
    let Some(start) = skip_empty_lines(buf)? else { return Ok(None) };
    let line = &buf[start..];

    // Where the limits cut the buffer. Until the request line's LF is seen (within the
    // allowed length), the cut is the end of the longest allowed request line; after it, the
    // end of the largest allowed header section.
    let line_window = &line[..line.len().min(cfg.max_request_line_size)];
    let (cut, limit, max) = match line_window.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            let max = cfg.max_request_headers_total_size;
            ((lf + 1).saturating_add(max), Limit::MaxRequestHeadersTotalSize, max)
        }
        None => (cfg.max_request_line_size, Limit::MaxRequestLineSize, cfg.max_request_line_size),
    };
    let visible = &line[..line.len().min(cut)];
    let over_limit = line.len() > cut;
    // The parser stops looking at the first byte past the limit, so `observed` is the
    // smallest size known to be too large, whatever else is buffered.
    let limit_error = || limit_exceeded(limit, max, max.saturating_add(1));

    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(visible, slots) {
        Ok(httparse::Status::Complete(n)) => {
            // A complete parse always sets all three; the `else` is unreachable.
            let (Some(method), Some(target), Some(minor_version)) =
                (req.method, req.path, req.version)
            else {
                return Err(ParseError::Invalid(Violation::MalformedHead));
            };
            for (span, h) in spans.iter_mut().zip(req.headers.iter()) {
                span.name = span_of(buf, h.name.as_bytes());
                span.value = span_of(buf, h.value);
            }
            Ok(Some(RawHead {
                len: start + n,
                method: span_of(buf, method.as_bytes()),
                target: span_of(buf, target.as_bytes()),
                minor_version,
                header_count: req.headers.len(),
            }))
        }
        Ok(httparse::Status::Partial) if over_limit => Err(limit_error()),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => match classify(e, visible, cfg) {
            Verdict::Reject(e) => Err(e),
            Verdict::Undecided if over_limit => Err(limit_error()),
            Verdict::Undecided => Ok(None),
        },
    }
}

fn limit_exceeded(limit: Limit, max: usize, observed: usize) -> ParseError {
    ParseError::Limit(LimitExceeded { limit, max: max as u64, observed: observed as u64 })
}

/// The offset range of `sub` inside `base`. `sub` always comes from `httparse` scanning
/// `base`, so this is plain address arithmetic, no unsafe needed.
fn span_of(base: &[u8], sub: &[u8]) -> Range<usize> {
    let start = (sub.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
    debug_assert!(start + sub.len() <= base.len());
    start..start + sub.len()
}

/// Skips the empty lines allowed before a request line (RFC 9112 §2.2). Returns the offset of
/// the request line, or `None` if only (part of) empty lines have arrived.
fn skip_empty_lines(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let mut pos = 0;
    for _ in 0..=MAX_LEADING_EMPTY_LINES {
        match buf.get(pos..) {
            Some([b'\r', b'\n', ..]) => pos += 2,
            Some([b'\n', ..]) => pos += 1,
            Some([b'\r']) | Some([]) | None => return Ok(None),
            // A CR that is not part of CRLF (RFC 9112 §2.2: bare CR is invalid).
            Some([b'\r', ..]) => return Err(ParseError::Invalid(Violation::MalformedHead)),
            Some(_) => return Ok(Some(pos)),
        }
    }
    // One empty line too many.
    Err(ParseError::Invalid(Violation::MalformedHead))
}

/// What an `httparse` error means once the bytes around it are looked at.
enum Verdict {
    Reject(ParseError),
    /// The distinguishing bytes have not arrived yet.
    Undecided,
}

/// Maps an `httparse` error to Peregrine's. `line` starts at the request line and is cut at
/// the limit, exactly as `httparse` saw it.
fn classify(e: httparse::Error, line: &[u8], cfg: &ParseConfig) -> Verdict {
    use Violation::MalformedHead;
    match e {
        httparse::Error::TooManyHeaders => Verdict::Reject(limit_exceeded(
            Limit::MaxRequestHeaderCount,
            cfg.max_request_header_count,
            cfg.max_request_header_count.saturating_add(1),
        )),
        httparse::Error::Version => classify_version(line),
        httparse::Error::HeaderName => classify_header_name(line),
        // Token: bad method byte, empty or invalid target. NewLine: bare CR, or junk after
        // the version. HeaderValue: control byte or bare CR in a value. Status: responses only.
        httparse::Error::Token
        | httparse::Error::NewLine
        | httparse::Error::HeaderValue
        | httparse::Error::Status => Verdict::Reject(ParseError::Invalid(MalformedHead)),
    }
}

/// `httparse` accepts exactly `HTTP/1.0` and `HTTP/1.1` and says `Version` for anything else,
/// including a target containing a space (`GET /a b HTTP/1.1` reads `b` as the version).
/// A well-formed `HTTP-version` (RFC 9112 §2.3: `"HTTP/" DIGIT "." DIGIT`) ending the line is
/// answered `505`; everything else is a malformed head.
fn classify_version(line: &[u8]) -> Verdict {
    let malformed = Verdict::Reject(ParseError::Invalid(Violation::MalformedHead));
    // httparse got past method and target, so both single spaces are there.
    let mut spaces = line.iter().enumerate().filter(|(_, &b)| b == b' ').map(|(i, _)| i);
    let (Some(_), Some(sp)) = (spaces.next(), spaces.next()) else { return malformed };
    let version = &line[sp + 1..];

    const SHAPE: &[u8; 8] = b"HTTP/d.d";
    for (i, &want) in SHAPE.iter().enumerate() {
        let Some(&b) = version.get(i) else { return Verdict::Undecided };
        let ok = if want == b'd' { b.is_ascii_digit() } else { b == want };
        if !ok {
            return malformed;
        }
    }
    match version.get(SHAPE.len()) {
        None => Verdict::Undecided,
        Some(b'\r' | b'\n') => Verdict::Reject(ParseError::UnsupportedVersion),
        Some(_) => malformed,
    }
}

/// `httparse` says `HeaderName` for any invalid byte where a field name should be, which hides
/// two rules with their own names: a line starting with whitespace (obs-fold, RFC 9112 §5.2)
/// and whitespace between the name and the colon (RFC 9112 §5.1). Every line before the failing
/// one was valid, so walk the lines and look at the first one that is not `token ":"`.
fn classify_header_name(line: &[u8]) -> Verdict {
    let reject = |v| Verdict::Reject(ParseError::Invalid(v));
    let Some(lf) = line.iter().position(|&b| b == b'\n') else {
        return reject(Violation::MalformedHead);
    };
    let mut pos = lf + 1;
    loop {
        let rest = &line[pos..];
        let Some(&first) = rest.first() else { return Verdict::Undecided };
        if first == b' ' || first == b'\t' {
            return reject(Violation::ObsFold);
        }
        let name_len = rest.iter().take_while(|&&b| is_tchar(b)).count();
        match rest.get(name_len) {
            None => return Verdict::Undecided,
            Some(b':') if name_len > 0 => match rest.iter().position(|&b| b == b'\n') {
                Some(lf) => pos += lf + 1,
                None => return Verdict::Undecided,
            },
            Some(b' ' | b'\t') if name_len > 0 => {
                let ws = rest[name_len..].iter().take_while(|&&b| b == b' ' || b == b'\t');
                return match rest.get(name_len + ws.count()) {
                    None => Verdict::Undecided,
                    Some(b':') => reject(Violation::WhitespaceBeforeColon),
                    Some(_) => reject(Violation::MalformedHead),
                };
            }
            Some(_) => return reject(Violation::MalformedHead),
        }
    }
}

/// `tchar` (RFC 9110 §5.6.2): the bytes allowed in a token such as a field name.
pub(crate) const fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

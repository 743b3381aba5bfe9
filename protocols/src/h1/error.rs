//! Errors of the HTTP/1 codec, and the one place they become status codes.
//!
//! Every error here means the connection can no longer be trusted to be framed correctly:
//! the caller answers with [`ParseError::status`] (when no response has started yet) and then
//! closes the connection, so bytes after an ambiguous request are never read as another
//! request (the request-smuggling defence).

use http::StatusCode;
pub use peregrine_limits::Limit;

/// A configured limit was crossed. `limit` names the `peregrine_limits::Limits` field, so
/// logs and metrics can name the knob a user would turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitExceeded {
    /// The limit that was crossed.
    pub limit: Limit,
    /// The configured maximum.
    pub max: u64,
    /// What was observed (at least `max + 1`; for streaming input, the amount seen so far).
    pub observed: u64,
}

/// A strictness rule of RFC 9112 that the request broke. Each variant is answered with `400`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// The request line or a header line could not be tokenised (bad method token, spaces in
    /// the target, bad version, invalid header name or value bytes, bare CR, ...).
    MalformedHead,
    /// A header line started with whitespace (obs-fold, RFC 9112 §5.2).
    ObsFold,
    /// Whitespace between a header name and its colon (RFC 9112 §5.1).
    WhitespaceBeforeColon,
    /// The request-target is not valid for the method (RFC 9112 §3.2).
    InvalidTarget,
    /// Both Content-Length and Transfer-Encoding were sent (RFC 9112 §6.1).
    ContentLengthWithTransferEncoding,
    /// Content-Length values differ, or one is not a decimal number (RFC 9110 §8.6).
    InvalidContentLength,
    /// Transfer-Encoding does not end in `chunked`, or names `chunked` twice (RFC 9112 §6.3).
    TransferEncodingNotChunkedLast,
    /// Transfer-Encoding on an HTTP/1.0 request (RFC 9112 §6.1).
    TransferEncodingOnHttp10,
    /// An HTTP/1.1 request without a Host header (RFC 9112 §3.2).
    MissingHost,
    /// More than one Host header (RFC 9112 §3.2).
    DuplicateHost,
    /// The Host header is not a valid authority.
    InvalidHost,
    /// A chunk size that is not hexadecimal, is empty, or overflows 64 bits.
    InvalidChunkSize,
    /// Chunk framing broke: bare LF, missing CRLF after chunk data, bad extension bytes.
    InvalidChunkFraming,
    /// A trailer field after the last chunk was malformed.
    InvalidTrailer,
}

impl Violation {
    /// A short, stable, human-readable reason for logs and metrics labels.
    pub fn reason(self) -> &'static str {
        match self {
            Violation::MalformedHead => "malformed request head",
            Violation::ObsFold => "obsolete line folding",
            Violation::WhitespaceBeforeColon => "whitespace before header colon",
            Violation::InvalidTarget => "invalid request target",
            Violation::ContentLengthWithTransferEncoding => {
                "both content-length and transfer-encoding"
            }
            Violation::InvalidContentLength => "invalid content-length",
            Violation::TransferEncodingNotChunkedLast => "transfer-encoding not ending in chunked",
            Violation::TransferEncodingOnHttp10 => "transfer-encoding on http/1.0",
            Violation::MissingHost => "missing host",
            Violation::DuplicateHost => "duplicate host",
            Violation::InvalidHost => "invalid host",
            Violation::InvalidChunkSize => "invalid chunk size",
            Violation::InvalidChunkFraming => "invalid chunk framing",
            Violation::InvalidTrailer => "invalid trailer",
        }
    }
}

/// Why a request head could not be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// A size or count limit was crossed while the head arrived.
    Limit(LimitExceeded),
    /// A strictness rule was broken.
    Invalid(Violation),
    /// A transfer coding other than `chunked` was named (we decode none): `501`.
    UnsupportedTransferCoding,
    /// An HTTP version other than 1.0 or 1.1: `505`.
    UnsupportedVersion,
}

impl ParseError {
    /// The status code to answer with. This is the only place a parse error becomes a status
    /// (hyper's `on_error`).
    pub fn status(&self) -> StatusCode {
        match self {
            ParseError::Limit(l) => limit_status(l.limit),
            ParseError::Invalid(_) => StatusCode::BAD_REQUEST,
            ParseError::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            ParseError::UnsupportedVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        }
    }

    /// A short reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Limit(l) => l.limit.name(),
            ParseError::Invalid(v) => v.reason(),
            ParseError::UnsupportedTransferCoding => "unsupported transfer coding",
            ParseError::UnsupportedVersion => "unsupported http version",
        }
    }
}

/// Errors while decoding a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The body grew past `max_request_body_size` (chunked bodies are counted as they
    /// arrive): `413`.
    Limit(LimitExceeded),
    /// Chunk framing was invalid: `400`.
    Invalid(Violation),
}

impl BodyError {
    /// The status code to answer with, if no response has started yet.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::Limit(l) => limit_status(l.limit),
            BodyError::Invalid(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// A short reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            BodyError::Limit(l) => l.limit.name(),
            BodyError::Invalid(v) => v.reason(),
        }
    }
}

/// The status a crossed limit of the request head or body is answered with.
fn limit_status(limit: Limit) -> StatusCode {
    match limit {
        Limit::MaxRequestLineSize => StatusCode::URI_TOO_LONG,
        Limit::MaxRequestBodySize => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Limit(l) => write!(f, "{} exceeded: {} > {}", l.limit, l.observed, l.max),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Limit(l) => write!(f, "{} exceeded: {} > {}", l.limit, l.observed, l.max),
            BodyError::Invalid(v) => f.write_str(v.reason()),
        }
    }
}

impl std::error::Error for ParseError {}
impl std::error::Error for BodyError {}

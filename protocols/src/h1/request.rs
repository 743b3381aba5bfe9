//! The request head: tokenising with `httparse`, then every rule Peregrine enforces at the edge.
//!
//! Read RFC 9112 §2.2 (message parsing), §3 (request line), §5 (field syntax), §6 (body
//! framing) and RFC 9110 §7.2 (Host) before editing.

use bytes::BytesMut;
use http::{HeaderMap, Method, Uri, Version};

use super::error::ParseError;

/// The limits the head parser enforces while bytes arrive. Built by the caller from
/// `peregrine_limits::Limits`; the field names match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseConfig {
    /// Longest request line, CRLF included (`414` past it).
    pub max_request_line_size: usize,
    /// Largest total size of all header lines, CRLFs included, request line excluded (`431`).
    pub max_request_headers_total_size: usize,
    /// Most header fields (`431`).
    pub max_request_header_count: usize,
}

/// How the request body is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no Content-Length, no Transfer-Encoding, or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes follow.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed, validated request head. Header values and the target are zero-copy slices of
/// the bytes split off the receive buffer.
#[derive(Debug)]
pub struct RequestHead {
    /// The request method.
    pub method: Method,
    /// The request target.
    pub uri: Uri,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: Version,
    /// Header fields, in order.
    pub headers: HeaderMap,
    /// How the body is framed.
    pub framing: BodyFraming,
    /// Whether the connection may stay open after this exchange (version default, adjusted by
    /// `Connection: close` / `Connection: keep-alive`).
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent (HTTP/1.1 only).
    pub expect_continue: bool,
    /// `Connection: upgrade` with an `Upgrade` header: surfaced, not acted on here.
    pub upgrade: bool,
}

/// Parses one request head from the front of `buf`.
///
/// - `Ok(Some(head))`: the head's bytes (and any empty lines before it) were split off `buf`;
///   what remains is the body and/or pipelined requests.
/// - `Ok(None)`: more bytes are needed; `buf` is untouched. Limits are still checked against
///   what has arrived, so an endless request line fails with `414` as soon as it is too long.
/// - `Err(e)`: answer `e.status()` and close the connection.
pub fn parse_request(
    buf: &mut BytesMut,
    cfg: &ParseConfig,
) -> Result<Option<RequestHead>, ParseError> {
    let _ = (buf, cfg);
    todo!()
}

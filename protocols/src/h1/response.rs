//! Serialising responses into caller-owned buffers.

use bytes::BytesMut;
use http::{HeaderMap, Method, StatusCode, Version};

/// `100 Continue`, sent when a handler first reads a body whose request said
/// `Expect: 100-continue`.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// The CRLF that ends each chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";
/// The last chunk of a chunked body, without trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How a response body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body bytes follow (1xx, 204, 304, or a response to HEAD); `content_length` is written
    /// for HEAD when known.
    NoBody {
        /// Content-Length to advertise (HEAD), if known.
        content_length: Option<u64>,
    },
    /// `Content-Length: n`, then n bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1 requests, unknown length).
    Chunked,
    /// Body runs until the connection closes (HTTP/1.0 request, unknown length).
    CloseDelimited,
}

/// Chooses the framing for a response (RFC 9112 §6.3, RFC 9110 §6.4.1).
pub fn response_framing(
    status: StatusCode,
    request_method: &Method,
    request_version: Version,
    body_len: Option<u64>,
) -> ResponseFraming {
    let _ = (status, request_method, request_version, body_len);
    todo!()
}

/// Writes a status line and header block into `dst`.
///
/// Handler headers are copied except the ones the codec owns: `content-length`,
/// `transfer-encoding` and `connection` (derived from `framing` and `close`). `date` is the
/// caller's cached 29-byte IMF-fixdate; `date` and `server` are written unless the handler set
/// them. `Connection: close` is written when `close` is true; for HTTP/1.0 requests that stay
/// open, `Connection: keep-alive`.
pub fn encode_response_head(
    status: StatusCode,
    headers: &HeaderMap,
    framing: ResponseFraming,
    request_version: Version,
    close: bool,
    date: &[u8],
    dst: &mut BytesMut,
) {
    let _ = (status, headers, framing, request_version, close, date, dst);
    todo!()
}

/// Writes a chunk-size line (`{len:x}\r\n`) for a chunk of `len > 0` bytes.
pub fn encode_chunk_header(len: usize, dst: &mut BytesMut) {
    let _ = (len, dst);
    todo!()
}

/// Writes a complete error response (`status`, empty body, `Connection: close`).
pub fn encode_error_response(status: StatusCode, date: &[u8], dst: &mut BytesMut) {
    let _ = (status, date, dst);
    todo!()
}

//! Serialising responses into caller-owned buffers.
//!
//! Read RFC 9112 §4 (status line), §6.3 (message body length), §7.1 (chunked), §9.3
//! (persistence) and RFC 9110 §6.4.1 (which responses have content) before editing.

use bytes::BytesMut;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Version};

use crate::content::{response_content, Content};
use crate::names::KEEP_ALIVE;

/// `100 Continue`, sent when a handler first reads a body whose request said
/// `Expect: 100-continue`.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// The CRLF that ends each chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";
/// The last chunk of a chunked body, without trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends the last chunk with a trailer section (RFC 9112 §7.1.2): `0`, the fields, and the
/// empty line. Fields a trailer must not carry (framing, routing and connection fields,
/// RFC 9110 §6.5.1) are left out.
pub fn encode_last_chunk(trailers: &HeaderMap, dst: &mut BytesMut) {
    dst.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        let forbidden = matches!(
            *name,
            http::header::CONTENT_LENGTH
                | http::header::TRANSFER_ENCODING
                | http::header::HOST
                | http::header::TE
                | http::header::TRAILER
                | http::header::CONNECTION
                | http::header::CONTENT_TYPE
                | http::header::CONTENT_ENCODING
                | http::header::AUTHORIZATION
                | http::header::SET_COOKIE
        );
        if !forbidden {
            put_field(name.as_str().as_bytes(), value.as_bytes(), dst);
        }
    }
    dst.extend_from_slice(b"\r\n");
}

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
    /// A `101 Switching Protocols` that the caller follows with a tunnel (RFC 9110 §7.8):
    /// no body, `Connection: upgrade`; what follows the head is no longer HTTP.
    SwitchingProtocols,
}

/// Chooses the framing for a response (RFC 9112 §6.3): whether it has content and which
/// length it advertises is [`response_content`]'s shared rule; a known length is sent as
/// Content-Length, an unknown one is chunked for HTTP/1.1 and delimited by closing the
/// connection for HTTP/1.0 (which has no chunked coding).
pub fn response_framing(
    status: StatusCode,
    request_method: &Method,
    request_version: Version,
    body_len: Option<u64>,
) -> ResponseFraming {
    match response_content(status, request_method, body_len) {
        Content::None { content_length } => ResponseFraming::NoBody { content_length },
        Content::Body { length: Some(n) } => ResponseFraming::Length(n),
        Content::Body { length: None } if request_version >= Version::HTTP_11 => {
            ResponseFraming::Chunked
        }
        Content::Body { length: None } => ResponseFraming::CloseDelimited,
    }
}

/// Writes a status line and header block into `dst`. `headers` are the handler's fields: a
/// `&HeaderMap`, or any list of pairs (a fixed answer's one `content-type`).
///
/// Handler headers are copied except the ones the codec owns: `content-length`,
/// `transfer-encoding` and `connection` (derived from `framing` and `close`). `date` is the
/// caller's cached 29-byte IMF-fixdate; `date` and `server` are written unless the handler set
/// them. `Connection: close` is written when `close` is true; for HTTP/1.0 requests that stay
/// open, `Connection: keep-alive`.
///
/// A [`ResponseFraming::CloseDelimited`] body ends when the connection closes, so it always
/// gets `Connection: close`, whatever `close` says; the caller must close after it.
///
/// The status line always says `HTTP/1.1` (RFC 9112 §2.3: a server sends its own highest
/// conformant version, whatever the request's), as nginx does. Names are written lowercase, as
/// `http::HeaderName` stores them; values are written as their raw bytes. Nothing on this
/// path allocates except `dst` growing, and it is reserved once.
pub fn encode_response_head<'f>(
    status: StatusCode,
    headers: impl IntoIterator<Item = (&'f HeaderName, &'f HeaderValue)>,
    framing: ResponseFraming,
    request_version: Version,
    close: bool,
    date: &[u8],
    dst: &mut BytesMut,
) {
    let start = encode_head_start(status, headers, framing, dst);
    encode_head_end(start, framing, request_version, close, date, dst);
}

/// What the start of a head ([`encode_head_start`]) wrote of the fields the codec adds
/// otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadStart {
    has_date: bool,
    has_server: bool,
}

/// The part of [`encode_response_head`] that depends only on the response: the status line,
/// the handler's fields and the framing field. It does not depend on the request or the
/// connection (`HEAD` and `GET` get the same bytes), so a caller may keep the bytes written
/// for a response it sends again and put them in place of a second call; then
/// [`encode_head_end`] with what this returned.
pub fn encode_head_start<'f>(
    status: StatusCode,
    headers: impl IntoIterator<Item = (&'f HeaderName, &'f HeaderValue)>,
    framing: ResponseFraming,
    dst: &mut BytesMut,
) -> HeadStart {
    let headers = headers.into_iter();
    // Room for the status line, the codec's own fields and a typical field each (more is
    // grown as needed): sized without a pass over the fields.
    dst.reserve(headers.size_hint().0 * 48 + 200);

    put_status_line(status, dst);
    // One pass: the handler's fields are written and `date`/`server` noted (no lookups).
    let mut start = HeadStart::default();
    for (name, value) in headers {
        if name == header::DATE {
            start.has_date = true;
        } else if name == header::SERVER {
            start.has_server = true;
        } else if is_codec_owned(name) {
            continue;
        }
        put_field(name.as_str().as_bytes(), value.as_bytes(), dst);
    }
    match framing {
        ResponseFraming::Length(n) | ResponseFraming::NoBody { content_length: Some(n) } => {
            dst.extend_from_slice(b"content-length: ");
            dst.extend_from_slice(decimal(n, &mut [0; 20]));
            dst.extend_from_slice(b"\r\n");
        }
        ResponseFraming::Chunked => dst.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ResponseFraming::NoBody { content_length: None }
        | ResponseFraming::CloseDelimited
        | ResponseFraming::SwitchingProtocols => {}
    }
    start
}

/// The rest of [`encode_response_head`] after [`encode_head_start`]: the `connection` field,
/// `date` and `server` unless the handler set them, and the empty line.
pub fn encode_head_end(
    start: HeadStart,
    framing: ResponseFraming,
    request_version: Version,
    close: bool,
    date: &[u8],
    dst: &mut BytesMut,
) {
    let close = close || framing == ResponseFraming::CloseDelimited;
    if framing == ResponseFraming::SwitchingProtocols {
        dst.extend_from_slice(b"connection: upgrade\r\n");
    } else if close {
        dst.extend_from_slice(b"connection: close\r\n");
    } else if request_version == Version::HTTP_10 {
        // HTTP/1.0 closes by default (RFC 9112 §9.3); say that this connection persists.
        dst.extend_from_slice(b"connection: keep-alive\r\n");
    }
    put_tail((!start.has_date).then_some(date), !start.has_server, dst);
}

/// The head's last lines in one copy: our `date` and `server` fields (each where the
/// handler set none) and the empty line.
fn put_tail(date: Option<&[u8]>, server: bool, dst: &mut BytesMut) {
    const SERVER: &[u8] = b"server: peregrine\r\n";
    // `date: ` + 64 + CRLF, `server: peregrine` + CRLF, CRLF: 96 bytes at most.
    let mut tail = [0u8; 96];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        tail[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    };
    match date {
        // An IMF-fixdate is 29 bytes; anything far longer goes its own way.
        Some(date) if date.len() <= 64 => {
            put(b"date: ");
            put(date);
            put(b"\r\n");
        }
        Some(date) => put_field(b"date", date, dst),
        None => {}
    }
    if server {
        put(SERVER);
    }
    put(b"\r\n");
    dst.extend_from_slice(&tail[..len]);
}

/// Fields whose values follow from the framing and connection decisions: a handler's copy
/// could contradict them (the response-splitting / desync shape), so it is dropped.
/// `keep-alive` is a connection-specific field of HTTP/1.0 (RFC 9110 §7.6.1).
fn is_codec_owned(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::CONNECTION
        || *name == KEEP_ALIVE
}

/// `HTTP/1.1 200 OK\r\n`; with no canonical reason, `HTTP/1.1 599 \r\n` (the reason-phrase
/// may be empty, but the space before it is not optional, RFC 9112 §4).
fn put_status_line(status: StatusCode, dst: &mut BytesMut) {
    if status == StatusCode::OK {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    dst.extend_from_slice(b"HTTP/1.1 ");
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.extend_from_slice(b" ");
    dst.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    dst.extend_from_slice(b"\r\n");
}

fn put_field(name: &[u8], value: &[u8], dst: &mut BytesMut) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
}

/// Formats `n` in decimal into the end of `scratch` and returns the digits (HTTP/2's
/// `content-length` uses it too).
pub fn decimal(mut n: u64, scratch: &mut [u8; 20]) -> &[u8] {
    let mut i = scratch.len();
    loop {
        i -= 1;
        scratch[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &scratch[i..];
        }
    }
}

/// Formats `n` in lowercase hex into the end of `scratch` and returns the digits.
fn hex(mut n: u64, scratch: &mut [u8; 16]) -> &[u8] {
    let mut i = scratch.len();
    loop {
        i -= 1;
        scratch[i] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            return &scratch[i..];
        }
    }
}

/// Writes a chunk-size line (`{len:x}\r\n`) for a chunk of `len > 0` bytes.
///
/// # Panics
///
/// In debug builds, if `len` is 0: that line is the last chunk, written with [`LAST_CHUNK`].
pub fn encode_chunk_header(len: usize, dst: &mut BytesMut) {
    debug_assert!(len > 0, "a zero-length chunk ends the body; use LAST_CHUNK");
    dst.extend_from_slice(hex(len as u64, &mut [0; 16]));
    dst.extend_from_slice(b"\r\n");
}

/// Writes a complete error response (`status`, empty body, `Connection: close`).
///
/// The same bytes as [`encode_response_head`] with no handler headers and a zero
/// Content-Length: `content-length: 0`, `connection: close`, `date`, `server`.
pub fn encode_error_response(status: StatusCode, date: &[u8], dst: &mut BytesMut) {
    encode_response_head(
        status,
        &HeaderMap::new(),
        ResponseFraming::Length(0),
        Version::HTTP_11,
        true,
        date,
        dst,
    );
}

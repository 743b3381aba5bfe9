//! The client side of HTTP/1.1, for talking to upstreams: serialising request heads and
//! parsing response heads as strictly as the server side parses requests.
//!
//! Read RFC 9112 §4 (status line), §6.3 (message body length) and §11 (security: response
//! splitting and smuggling) before editing. An upstream response is untrusted input too: a
//! head that frames its body two ways (Content-Length with Transfer-Encoding), a bad
//! Content-Length, bad chunking or an oversized head is an error, which the proxy answers with
//! `502` and by closing the upstream connection, never by passing bytes on.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Version};

use super::body::BodyDecoder;
use super::error::Violation;
use super::request::{BodyFraming, Fields};
use super::response::decimal;

/// How big an upstream response head may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseLimits {
    /// Largest head, status line and CRLFs included.
    pub max_head_size: usize,
    /// Most header fields.
    pub max_header_count: usize,
    /// Largest trailer section of a chunked body (trailers are checked, then dropped).
    pub max_trailer_size: usize,
}

impl Default for ResponseLimits {
    /// 64 KiB and 100 fields, like the request side's defaults; 16 KiB of trailers.
    fn default() -> Self {
        ResponseLimits {
            max_head_size: 64 * 1024,
            max_header_count: 100,
            max_trailer_size: 16 * 1024,
        }
    }
}

/// Why an upstream response head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseError {
    /// The head is larger than `max_head_size`.
    HeadTooLarge,
    /// More than `max_header_count` fields.
    TooManyHeaders,
    /// A framing or syntax rule was broken.
    Invalid(Violation),
    /// A transfer coding other than `chunked` alone.
    UnsupportedTransferCoding,
}

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseError::HeadTooLarge => f.write_str("upstream response head too large"),
            ResponseError::TooManyHeaders => f.write_str("too many upstream response headers"),
            ResponseError::Invalid(v) => write!(f, "upstream response: {}", v.reason()),
            ResponseError::UnsupportedTransferCoding => {
                f.write_str("upstream response: transfer coding other than chunked")
            }
        }
    }
}

impl std::error::Error for ResponseError {}

/// How an upstream response's body is framed (RFC 9112 §6.3, the response rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// No body: a response to HEAD, or 1xx, 204, 304.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the upstream closes the connection (no length given).
    UntilClose,
}

impl ResponseBody {
    /// A decoder for this body. A close-delimited body is handed out as it arrives; its end
    /// is the connection's end, which the caller sees.
    pub fn decoder(self, limits: &ResponseLimits) -> BodyDecoder {
        match self {
            ResponseBody::Empty => BodyDecoder::new(BodyFraming::Empty, None, 0),
            ResponseBody::Length(n) => BodyDecoder::new(BodyFraming::Length(n), None, 0),
            ResponseBody::Chunked => {
                BodyDecoder::new(BodyFraming::Chunked, None, limits.max_trailer_size)
            }
            ResponseBody::UntilClose => BodyDecoder::until_close(),
        }
    }

    /// The exact length, when the head gave one.
    pub fn exact_len(self) -> Option<u64> {
        match self {
            ResponseBody::Empty => Some(0),
            ResponseBody::Length(n) => Some(n),
            ResponseBody::Chunked | ResponseBody::UntilClose => None,
        }
    }
}

/// A parsed upstream response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// The status code.
    pub status: StatusCode,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: Version,
    /// Header fields, in order (hop-by-hop ones included: removing them is the proxy's job).
    pub headers: HeaderMap,
    /// How the body is framed.
    pub body: ResponseBody,
    /// Whether the connection may carry another request after this body.
    pub keep_alive: bool,
    /// Whether a hop-by-hop field is among `headers` ([`crate::names::is_hop_by_hop`]): a
    /// proxy has fields to remove only then.
    pub hop_by_hop: bool,
}

/// The field names of the response heads parsed before, by position, as their bytes arrived:
/// an upstream sends the same fields in the same order response after response, so a name
/// that matches its predecessor's bytes is that predecessor's [`HeaderName`] again. Parsing
/// a name (lowercasing it, then a table of the standard ones; a custom one allocates) was
/// about a hundred instructions a field, the comparison a tenth of that. Keep one per
/// caller (the proxy keeps one per core).
#[derive(Debug, Default)]
pub struct ResponseNames {
    known: Vec<(Box<[u8]>, HeaderName)>,
}

impl ResponseNames {
    /// Positions remembered: the fields past them are parsed each time.
    const KEPT: usize = 24;

    /// The name at `position` of a head, from its bytes `raw` (a token, as httparse checked).
    fn name(&mut self, position: usize, raw: &[u8]) -> Result<HeaderName, ResponseError> {
        if let Some((bytes, name)) = self.known.get(position) {
            if **bytes == *raw {
                return Ok(name.clone());
            }
        }
        let name = HeaderName::from_bytes(raw).map_err(|_| malformed())?;
        let entry = (Box::from(raw), name.clone());
        if let Some(slot) = self.known.get_mut(position) {
            *slot = entry;
        } else if position == self.known.len() && position < Self::KEPT {
            self.known.push(entry);
        }
        Ok(name)
    }
}

/// Parses one response head from the front of `buf`, for a request made with `method`.
///
/// `Ok(Some(head))` splits the head off `buf`; `Ok(None)` means more bytes are needed.
/// Interim `1xx` responses other than `101` are returned like any other: the caller skips
/// them and parses again.
pub fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
    limits: &ResponseLimits,
) -> Result<Option<ResponseHead>, ResponseError> {
    parse_response_with(buf, method, limits, &mut ResponseNames::default())
}

/// [`parse_response`] with the names of earlier heads to reuse (see [`ResponseNames`]).
pub fn parse_response_with(
    buf: &mut BytesMut,
    method: &Method,
    limits: &ResponseLimits,
    names: &mut ResponseNames,
) -> Result<Option<ResponseHead>, ResponseError> {
    // Slots httparse fills as it goes: left uninitialised, not zeroed (2 KiB of stack
    // written for every response was about 600 instructions of each proxied request).
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 64];
    let mut heap;
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if limits.max_header_count <= stack.len()
    {
        &mut stack[..limits.max_header_count]
    } else {
        heap = Vec::with_capacity(limits.max_header_count);
        heap.resize_with(limits.max_header_count, MaybeUninit::uninit);
        &mut heap
    };
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        slots,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len > limits.max_head_size => {
            return Err(ResponseError::HeadTooLarge)
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head_size => {
            return Err(ResponseError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooManyHeaders),
        Err(_) => return Err(ResponseError::Invalid(Violation::MalformedHead)),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| malformed())?;
    let version = if response.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    // Spans of the header names and values inside the head, so the values can be zero-copy
    // slices once the head is split off.
    let base = buf.as_ptr() as usize;
    // Framing is read from the fields as they arrived (matched ignoring case), before the
    // names are made.
    let mut fields = Fields::default();
    let mut spans: Vec<(HeaderName, std::ops::Range<usize>)> =
        Vec::with_capacity(response.headers.len());
    let mut hop_by_hop = false;
    for (position, h) in response.headers.iter().enumerate() {
        fields.observe(h.name.as_bytes(), h.value);
        hop_by_hop |= crate::names::is_hop_by_hop(h.name.as_bytes());
        let name = names.name(position, h.name.as_bytes())?;
        let start = h.value.as_ptr() as usize - base;
        spans.push((name, start..start + h.value.len()));
    }
    let head: Bytes = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (name, range) in spans {
        let value = HeaderValue::from_maybe_shared(head.slice(range)).map_err(|_| malformed())?;
        headers.append(name, value);
    }
    let body = response_body(&fields, status, method)?;
    let keep_alive = !fields.conn_close
        && (version == Version::HTTP_11 || fields.conn_keep_alive)
        && body != ResponseBody::UntilClose;
    Ok(Some(ResponseHead { status, version, headers, body, keep_alive, hop_by_hop }))
}

fn malformed() -> ResponseError {
    ResponseError::Invalid(Violation::MalformedHead)
}

/// RFC 9112 §6.3 for responses. Stricter than the RFC where it allows a guess: both
/// Content-Length and Transfer-Encoding, or a coding list that is not `chunked` alone, is
/// refused rather than read one way (a proxy that guesses differently from the next hop is
/// how responses get split).
fn response_body(
    fields: &Fields,
    status: StatusCode,
    method: &Method,
) -> Result<ResponseBody, ResponseError> {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(ResponseBody::Empty);
    }
    if fields.transfer_encoding_seen {
        if fields.content_length_seen {
            return Err(ResponseError::Invalid(Violation::ContentLengthWithTransferEncoding));
        }
        if fields.chunked_count != 1 || !fields.chunked_last {
            return Err(ResponseError::Invalid(Violation::TransferEncodingNotChunkedLast));
        }
        if fields.other_coding {
            return Err(ResponseError::UnsupportedTransferCoding);
        }
        return Ok(ResponseBody::Chunked);
    }
    if fields.content_length_invalid {
        return Err(ResponseError::Invalid(Violation::InvalidContentLength));
    }
    Ok(match fields.content_length {
        Some(n) => ResponseBody::Length(n),
        None => ResponseBody::UntilClose,
    })
}

/// Writes an HTTP/1.1 request head into `dst`: the request line with `target` (origin-form:
/// path and query), `host` as the first field when given (the host an HTTP/2 request names
/// in `:authority`, kept out of the map: inserting it there grows the map), every field of
/// `headers`, then those of `more` (the fields a proxy adds, kept out of the map), then the
/// framing field for `body` (the caller has removed any framing fields of its own). A
/// request with no body gets `content-length: 0` when its method usually has one, as
/// browsers and Go's proxy send.
pub fn encode_request_head<'a>(
    method: &Method,
    target: &str,
    host: Option<&'a HeaderValue>,
    headers: &'a HeaderMap,
    more: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> + Clone,
    body: BodyFraming,
    dst: &mut BytesMut,
) {
    let host = host.map(|value| (&header::HOST, value));
    let fields = host.into_iter().chain(headers.iter()).chain(more.clone());
    let size: usize = fields.map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    dst.reserve(method.as_str().len() + target.len() + size + 64);
    dst.extend_from_slice(method.as_str().as_bytes());
    dst.extend_from_slice(b" ");
    dst.extend_from_slice(target.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in host.into_iter().chain(headers.iter()).chain(more) {
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    let mut scratch = [0u8; 20];
    match body {
        BodyFraming::Length(n) => {
            dst.extend_from_slice(header::CONTENT_LENGTH.as_str().as_bytes());
            dst.extend_from_slice(b": ");
            dst.extend_from_slice(decimal(n, &mut scratch));
            dst.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => dst.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        BodyFraming::Empty if matches!(*method, Method::POST | Method::PUT | Method::PATCH) => {
            dst.extend_from_slice(b"content-length: 0\r\n");
        }
        BodyFraming::Empty => {}
    }
    dst.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], method: Method) -> Result<Option<ResponseHead>, ResponseError> {
        parse_response(&mut BytesMut::from(bytes), &method, &ResponseLimits::default())
    }

    #[test]
    fn reads_status_headers_and_framing() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhello"[..],
        );
        let head =
            parse_response(&mut buf, &Method::GET, &ResponseLimits::default()).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::CREATED);
        assert_eq!(head.headers["x-a"], "1");
        assert_eq!(head.body, ResponseBody::Length(5));
        assert!(head.keep_alive);
        assert_eq!(&buf[..], b"hello", "the body stays in the buffer");
    }

    #[test]
    fn needs_more_until_the_empty_line() {
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", Method::GET).unwrap().is_none());
    }

    #[test]
    fn bodies_follow_the_response_rules() {
        let body = |bytes: &[u8], m| parse(bytes, m).unwrap().unwrap().body;
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", Method::HEAD),
            ResponseBody::Empty
        );
        assert_eq!(body(b"HTTP/1.1 204 No Content\r\n\r\n", Method::GET), ResponseBody::Empty);
        assert_eq!(body(b"HTTP/1.1 304 Not Modified\r\n\r\n", Method::GET), ResponseBody::Empty);
        assert_eq!(body(b"HTTP/1.1 100 Continue\r\n\r\n", Method::GET), ResponseBody::Empty);
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Method::GET),
            ResponseBody::Chunked
        );
        let close = parse(b"HTTP/1.1 200 OK\r\n\r\n", Method::GET).unwrap().unwrap();
        assert_eq!(close.body, ResponseBody::UntilClose);
        assert!(!close.keep_alive, "a close-delimited body ends the connection");
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let err = |bytes: &[u8]| parse(bytes, Method::GET).unwrap_err();
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ResponseError::Invalid(Violation::ContentLengthWithTransferEncoding)
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            ResponseError::Invalid(Violation::InvalidContentLength)
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            ResponseError::Invalid(Violation::TransferEncodingNotChunkedLast)
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            ResponseError::UnsupportedTransferCoding
        );
        assert_eq!(err(b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"), malformed(), "obs-fold");
        assert_eq!(err(b"HTTP/1.1 2000 OK\r\n\r\n"), malformed());
    }

    #[test]
    fn head_size_and_count_are_capped() {
        let limits =
            ResponseLimits { max_head_size: 64, max_header_count: 2, ..Default::default() };
        let mut long = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX: "[..]);
        long.extend_from_slice(&[b'a'; 100]);
        assert_eq!(
            parse_response(&mut long, &Method::GET, &limits).unwrap_err(),
            ResponseError::HeadTooLarge,
            "refused before the head ends"
        );
        let mut many = BytesMut::from(&b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"[..]);
        assert_eq!(
            parse_response(&mut many, &Method::GET, &limits).unwrap_err(),
            ResponseError::TooManyHeaders
        );
    }

    #[test]
    fn http10_keeps_alive_only_when_asked() {
        let head = |bytes: &[u8]| parse(bytes, Method::GET).unwrap().unwrap().keep_alive;
        assert!(!head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"));
        assert!(!head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"));
    }

    #[test]
    fn encodes_a_request_head_with_its_framing() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        let mut dst = BytesMut::new();
        encode_request_head(
            &Method::POST,
            "/a?b",
            None,
            &headers,
            None.into_iter(),
            BodyFraming::Length(12),
            &mut dst,
        );
        assert_eq!(
            &dst[..],
            b"POST /a?b HTTP/1.1\r\nhost: example.com\r\ncontent-length: 12\r\n\r\n"
        );
        dst.clear();
        encode_request_head(
            &Method::PUT,
            "/",
            None,
            &HeaderMap::new(),
            None.into_iter(),
            BodyFraming::Empty,
            &mut dst,
        );
        assert_eq!(&dst[..], b"PUT / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        dst.clear();
        encode_request_head(
            &Method::GET,
            "/",
            None,
            &HeaderMap::new(),
            None.into_iter(),
            BodyFraming::Chunked,
            &mut dst,
        );
        assert_eq!(&dst[..], b"GET / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n");
    }

    #[test]
    fn a_head_says_whether_it_has_hop_by_hop_fields() {
        let hop = |bytes: &[u8]| parse(bytes, Method::GET).unwrap().unwrap().hop_by_hop;
        assert!(!hop(b"HTTP/1.1 200 OK\r\nContent-Type: a\r\nContent-Length: 0\r\n\r\n"));
        assert!(hop(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n"));
        assert!(hop(b"HTTP/1.1 200 OK\r\nX-A: 1\r\nconnection: x-a\r\ncontent-length: 0\r\n\r\n"));
    }

    #[test]
    fn remembered_names_are_reused_only_for_the_same_bytes() {
        let mut names = ResponseNames::default();
        let mut parse = |head: &[u8]| {
            let mut buf = BytesMut::from(head);
            let limits = ResponseLimits::default();
            let head = parse_response_with(&mut buf, &Method::GET, &limits, &mut names);
            let head = head.unwrap().unwrap();
            head.headers.iter().map(|(n, v)| format!("{n}={}", v.to_str().unwrap())).collect()
        };
        let first: Vec<String> = parse(b"HTTP/1.1 200 OK\r\nX-App: 1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(first, ["x-app=1", "content-length=0"]);
        // The same names at the same places, then others there, then fewer and more.
        let again = parse(b"HTTP/1.1 200 OK\r\nX-App: 2\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(again, ["x-app=2", "content-length=0"]);
        let other = parse(b"HTTP/1.1 200 OK\r\nX-Apq: 3\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(other, ["x-apq=3", "content-length=0"]);
        let more =
            parse(b"HTTP/1.1 200 OK\r\nX-APQ: 4\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(more, ["x-apq=4", "etag=\"e\"", "content-length=0"]);
        // Nothing parsed differently from a fresh parse: a name stays a valid lowercase token.
        let mut fresh = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-APQ: 4\r\n\r\n"[..]);
        let fresh = parse_response(&mut fresh, &Method::GET, &ResponseLimits::default());
        let fresh = fresh.unwrap().unwrap();
        assert!(fresh.headers.contains_key("x-apq"));
    }

    #[test]
    fn a_host_kept_out_of_the_map_is_the_first_field() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let added = (HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("h"));
        let host = HeaderValue::from_static("example.com:8443");
        let mut dst = BytesMut::new();
        encode_request_head(
            &Method::GET,
            "/",
            Some(&host),
            &headers,
            std::iter::once((&added.0, &added.1)),
            BodyFraming::Empty,
            &mut dst,
        );
        assert_eq!(
            &dst[..],
            &b"GET / HTTP/1.1\r\nhost: example.com:8443\r\naccept: */*\r\nx-forwarded-proto: h\r\n\r\n"[..]
        );
    }
}

//! Request header blocks: HPACK decoding plus the HTTP/2 message rules (RFC 9113 §8.1–§8.3),
//! giving an `http` request head or the reason the request is malformed.
//!
//! The connection assembles HEADERS and CONTINUATION into one complete, byte-capped block and
//! hands it to [`HeaderDecoder`]. Errors come in four kinds ([`HeaderError`]), which differ in
//! what survives: a compression error or a flood ends the connection, because the HPACK
//! context is lost; an oversized list or a malformed request ends only the stream, because
//! the block was decoded to its end and the table is still in step with the peer's.
//!
//! Request rules, numbered as [`Request::finish`] and [`Request::field`] apply them:
//!
//! 1. Pseudo-headers come before regular fields, each at most once, and only the four
//!    request ones (§8.3), plus `:protocol` where extended CONNECT is enabled (RFC 8441):
//!    `:status` and unknown ones are malformed.
//! 2. Regular fields pass [`fields::check`] (names, values, connection-specific fields, `te`).
//! 3. `content-length` values are decimal and agree with each other (RFC 9110 §8.6).
//! 4. `:method` is present. CONNECT (§8.5) has `:authority` and neither `:scheme` nor `:path`;
//!    an extended CONNECT (RFC 8441 §4: CONNECT with `:protocol`) has all three, as other
//!    methods do, and `:protocol` with any other method is malformed.
//! 5. Other methods have `:scheme` and a non-empty `:path`, which is `*` only for OPTIONS
//!    and otherwise starts with `/` (§8.3.1).
//! 6. `:authority` has no userinfo (§8.3.1); a `host` field equals it, ignoring case
//!    (§8.3.1 says a server SHOULD treat a mismatch as malformed, and we do); without
//!    `:authority` the `host` field gives the authority, and one of them must be there for
//!    http and https.

use peregrine_limits::Limit;
use std::fmt;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::uri::{Authority, Parts, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::error::{go_away, reset, Error, Reason};
use super::fields;
use super::frame::StreamId;
use super::hpack::decoder::{DecodeError, Decoder, ListLimits};
use super::hpack::table::{Entry, Name, Pseudo, Value};
use crate::h1::request::{parse_path, Target};
use crate::h1::LimitExceeded;
use crate::host::is_valid_host;

/// The request head decoded from one HEADERS block.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// The request method.
    pub method: http::Method,
    /// Scheme, authority (from `:authority`, else `host`) and path-and-query; for CONNECT,
    /// the authority alone.
    pub target: RequestTarget,
    /// The regular fields, in order; repeated names (such as several `cookie` fields) are
    /// kept as separate entries.
    pub headers: FieldList,
    /// The `content-length` value, if the request has one.
    pub content_length: Option<u64>,
    /// An extended CONNECT's `:protocol` (RFC 8441), such as `websocket`: the stream becomes
    /// a tunnel for that protocol once the response is a 2xx.
    pub protocol: Option<Bytes>,
}

/// A request's target as its pseudo-headers gave it (RFC 9113 §8.3.1), checked, with a
/// `Uri` built only when asked for ([`to_uri`](Self::to_uri)): building one checks every
/// byte again, and a request answered from its head never needs it. The path is checked
/// as HTTP/1 checks an origin-form target, and kept the same way ([`Target`]).
#[derive(Debug, Clone)]
pub struct RequestTarget {
    scheme: Option<Scheme>,
    authority: Option<Authority>,
    /// `None` for a CONNECT (not an extended one), which has only an authority.
    path: Option<Target>,
}

impl RequestTarget {
    /// `:scheme`; `None` for a CONNECT.
    pub fn scheme(&self) -> Option<&Scheme> {
        self.scheme.as_ref()
    }

    /// `:authority`, else the `host` field (rule 6).
    pub fn authority(&self) -> Option<&Authority> {
        self.authority.as_ref()
    }

    /// `:path`; `None` for a CONNECT.
    pub fn path(&self) -> Option<&Target> {
        self.path.as_ref()
    }

    /// The target as an absolute `Uri` (the authority alone for a CONNECT).
    pub fn to_uri(&self) -> Uri {
        self.clone().into_uri()
    }

    /// [`to_uri`](Self::to_uri), taking the parts.
    pub fn into_uri(self) -> Uri {
        let mut parts = Parts::default();
        parts.scheme = self.scheme;
        parts.authority = self.authority;
        parts.path_and_query = self.path.and_then(Target::into_path_and_query);
        // The decoder let through only the two shapes `Uri` takes: scheme, authority and
        // path, or a CONNECT's authority alone.
        Uri::from_parts(parts).unwrap_or_default()
    }
}

impl fmt::Display for RequestTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.scheme, &self.authority, &self.path) {
            (Some(scheme), Some(authority), Some(path)) => {
                write!(f, "{scheme}://{authority}{}", path.path_and_query())
            }
            (_, Some(authority), None) => write!(f, "{authority}"),
            _ => write!(f, "{}", self.to_uri()),
        }
    }
}

/// A request's regular fields as decoded, in order, each checked (rule 2): a `HeaderMap`
/// only when asked for ([`into_map`](Self::into_map)). A server that answers from the
/// method, the target and a field or two never hashes them into one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldList(Vec<(HeaderName, HeaderValue)>);

impl FieldList {
    /// The first value of `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a HeaderValue> {
        self.0.iter().filter(move |(n, _)| n == name).map(|(_, v)| v)
    }

    /// Every field, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.0.iter().map(|(n, v)| (n, v))
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields in a `HeaderMap`, in order.
    pub fn into_map(self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.0.len());
        for (name, value) in self.0 {
            map.append(name, value);
        }
        map
    }
}

/// The response head decoded from one HEADERS block (the client side).
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// The status.
    pub status: http::StatusCode,
    /// The regular fields, in order.
    pub headers: http::HeaderMap,
    /// The `content-length` value, if the response has one.
    pub content_length: Option<u64>,
}

/// Why a header block was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// HPACK decoding failed: connection error COMPRESSION_ERROR (the dynamic table is now
    /// unknown). Says what was wrong.
    Compression(&'static str),
    /// The decoded list passed max_list_size or max_fields, but the block was decoded to the
    /// end so the table is still in sync: the stream gets a 431 response (or a reset with
    /// REFUSED_STREAM); the connection lives.
    TooLarge,
    /// The decoded list passed **twice** max_list_size: decoding stopped at once (an HPACK
    /// bomb never expands in memory); the table is now unusable, so this is a connection
    /// error COMPRESSION_ERROR (GOAWAY).
    Flood,
    /// A malformed request (RFC 9113 §8.1.1): stream error PROTOCOL_ERROR, never a normal
    /// response. Says which rule was broken.
    Malformed(&'static str),
}

impl HeaderError {
    /// Whether this ends the connection (GOAWAY) rather than one stream.
    pub fn is_connection_error(&self) -> bool {
        matches!(self, HeaderError::Compression(_) | HeaderError::Flood)
    }

    /// The error code for GOAWAY or RST_STREAM.
    pub fn reason(&self) -> Reason {
        match self {
            HeaderError::Compression(_) | HeaderError::Flood => Reason::COMPRESSION_ERROR,
            HeaderError::TooLarge => Reason::REFUSED_STREAM,
            HeaderError::Malformed(_) => Reason::PROTOCOL_ERROR,
        }
    }

    /// A short description for GOAWAY debug data, RST logs and metrics.
    pub fn description(&self) -> &'static str {
        match self {
            HeaderError::Compression(d) | HeaderError::Malformed(d) => d,
            HeaderError::TooLarge => "request header list over the limit",
            HeaderError::Flood => "request header list over twice the limit",
        }
    }

    /// The frame-layer error to act on for a block received on `stream`: a connection error
    /// for [`Compression`](Self::Compression) and [`Flood`](Self::Flood), a stream error
    /// otherwise. (For [`TooLarge`](Self::TooLarge) a 431 response is the friendlier answer;
    /// this is the reset to send when no response can be.)
    pub fn to_error(&self, stream: StreamId) -> Error {
        if self.is_connection_error() {
            go_away(self.reason(), self.description())
        } else {
            reset(stream, self.reason(), self.description())
        }
    }
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason(), self.description())
    }
}

impl std::error::Error for HeaderError {}

/// Decodes request header blocks for one connection (owns the HPACK dynamic table).
#[derive(Debug)]
pub struct HeaderDecoder {
    blocks: Blocks,
    /// We sent SETTINGS_ENABLE_CONNECT_PROTOCOL: `:protocol` is allowed.
    extended_connect: bool,
    /// The last request's `:authority` and `:path`, parsed.
    recent: Recent,
}

/// The last `:authority` of a connection with its parsed form. A connection's requests
/// repeat it (one host): the same bytes again are the same valid value, with no second
/// parse. (`:path` is not kept: checking one costs about what comparing it would.)
#[derive(Debug, Default)]
struct Recent {
    authority: Option<(Bytes, Authority)>,
}

impl Recent {
    fn authority(&mut self, value: &Value) -> Result<Authority, &'static str> {
        if let Some((bytes, parsed)) = &self.authority {
            if bytes[..] == *value.as_bytes() {
                return Ok(parsed.clone());
            }
        }
        let value = value.to_raw();
        let parsed = parse_authority(value.clone())?;
        self.authority = Some((value, parsed.clone()));
        Ok(parsed)
    }
}

impl HeaderDecoder {
    /// `max_table_size`: our SETTINGS_HEADER_TABLE_SIZE (4096 default); `max_list_size`: our
    /// SETTINGS_MAX_HEADER_LIST_SIZE (= limits.max_request_headers_total_size, 32 KiB,
    /// counted the RFC 9113 way: name + value + 32 per field, pseudo-headers included);
    /// `max_fields`: limits.max_request_header_count (100), counting regular fields only, as
    /// HTTP/1 counts header lines and not the request line.
    ///
    /// A `max_table_size` below the protocol's initial 4096 is enforced from the first block,
    /// although RFC 9113 §6.5.3 lets the peer use 4096 until it acknowledges our SETTINGS: a
    /// client that encodes before the acknowledgement may then be refused. At the default
    /// (4096) there is no difference.
    pub fn new(max_table_size: usize, max_list_size: usize, max_fields: usize) -> HeaderDecoder {
        let limits = ListLimits { max_size: max_list_size, max_fields };
        HeaderDecoder {
            blocks: Blocks {
                hpack: Decoder::new(max_table_size),
                limits,
                failed: None,
                last_limit: None,
            },
            extended_connect: false,
            recent: Recent::default(),
        }
    }

    /// Accepts extended CONNECT requests (`:protocol`, RFC 8441): for a connection that
    /// sends SETTINGS_ENABLE_CONNECT_PROTOCOL.
    pub fn allow_extended_connect(&mut self) {
        self.extended_connect = true;
    }

    /// Decodes one complete header block that opens a request. The head comes boxed (it is
    /// a few hundred bytes, and built in its box it is not moved on the way out).
    pub fn decode_request(&mut self, block: &[u8]) -> Result<Box<RequestHead>, HeaderError> {
        let mut req = Request::new(&mut self.recent, self.extended_connect);
        let too_large = self.blocks.decode(block, |f| req.field(f))?;
        req.finish(too_large)
    }

    /// Decodes one complete header block that opens a response (the client side, RFC 9113
    /// §8.3.2): `:status` and nothing but regular fields, which pass the same checks as a
    /// request's.
    pub fn decode_response(&mut self, block: &[u8]) -> Result<ResponseHead, HeaderError> {
        let mut status: Option<Bytes> = None;
        let mut headers = HeaderMap::new();
        let mut content_length: Option<u64> = None;
        let mut regular_seen = false;
        let mut malformed: Option<&'static str> = None;
        let too_large = self.blocks.decode(block, |Entry { name, value, .. }| {
            if malformed.is_some() {
                return;
            }
            let checked = match name {
                Name::Pseudo(Pseudo::Status) if regular_seen => {
                    Err("pseudo-header after a regular field")
                }
                Name::Pseudo(Pseudo::Status) if status.is_some() => Err("duplicate :status"),
                Name::Pseudo(Pseudo::Status) => {
                    status = Some(value.to_raw());
                    Ok(())
                }
                Name::Pseudo(_) => Err("request pseudo-header in a response"),
                Name::Invalid(why) => Err(*why),
                Name::Header(name) => {
                    regular_seen = true;
                    fields::check_entry(name, value).and_then(|(name, value)| {
                        if name == CONTENT_LENGTH {
                            let n = fields::parse_content_length(&value)
                                .ok_or("invalid content-length")?;
                            if content_length.is_some_and(|seen| seen != n) {
                                return Err("conflicting content-length values");
                            }
                            content_length = Some(n);
                        }
                        headers.append(name, value);
                        Ok(())
                    })
                }
            };
            if let Err(why) = checked {
                malformed = Some(why);
            }
        })?;
        if let Some(why) = malformed {
            return Err(HeaderError::Malformed(why));
        }
        if too_large {
            return Err(HeaderError::TooLarge);
        }
        let status = status.ok_or(HeaderError::Malformed("missing :status"))?;
        let status = (status.len() == 3)
            .then(|| http::StatusCode::from_bytes(&status).ok())
            .flatten()
            .ok_or(HeaderError::Malformed("invalid :status"))?;
        Ok(ResponseHead { status, headers, content_length })
    }

    /// Decodes a complete trailer block (no pseudo-headers allowed).
    pub fn decode_trailers(&mut self, block: &[u8]) -> Result<HeaderMap, HeaderError> {
        let mut headers = HeaderMap::new();
        let mut malformed = None;
        let too_large = self.blocks.decode(block, |Entry { name, value, .. }| {
            if malformed.is_some() {
                return;
            }
            let checked = match name {
                Name::Header(name) => fields::check_entry(name, value),
                Name::Pseudo(_) => Err("pseudo-header in trailers"),
                Name::Invalid(why) => Err(*why),
            };
            match checked {
                Ok((name, value)) => {
                    headers.append(name, value);
                }
                Err(why) => malformed = Some(why),
            }
        })?;
        match malformed {
            Some(why) => Err(HeaderError::Malformed(why)),
            None if too_large => Err(HeaderError::TooLarge),
            None => Ok(headers),
        }
    }

    /// Which limit the last block crossed (with the configured and observed values), if it
    /// ended in [`HeaderError::TooLarge`] or [`HeaderError::Flood`].
    pub fn last_limit(&self) -> Option<LimitExceeded> {
        self.blocks.last_limit
    }
}

/// The HPACK context and the list limits blocks are decoded under.
#[derive(Debug)]
struct Blocks {
    hpack: Decoder,
    limits: ListLimits,
    /// Set by a connection-level failure: the table is out of step for good, so every later
    /// block fails the same way.
    failed: Option<HeaderError>,
    /// The limit the last block crossed, for logs and metrics.
    last_limit: Option<LimitExceeded>,
}

impl Blocks {
    /// Runs the HPACK decoder over `block`, turning connection-level failures into
    /// [`HeaderError`]s; `Ok(true)` means the list passed a limit (fields past it were not
    /// delivered). The caller reports a malformed message before that: the fields it
    /// checked were all within the limit, and a malformed request must never get a response.
    fn decode(&mut self, block: &[u8], field: impl FnMut(&Entry)) -> Result<bool, HeaderError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.last_limit = None;
        let limits = self.limits;
        match self.hpack.decode(block, limits, field) {
            Ok(d) if d.too_large => {
                self.last_limit = Some(if d.list_size > limits.max_size {
                    size_limit(limits.max_size, d.list_size)
                } else {
                    LimitExceeded {
                        limit: Limit::MaxRequestHeaderCount,
                        max: limits.max_fields as u64,
                        observed: d.fields as u64,
                    }
                });
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(DecodeError::Compression(what)) => Err(self.fail(HeaderError::Compression(what))),
            Err(DecodeError::Flood(seen)) => {
                self.last_limit = Some(size_limit(limits.max_size, seen));
                Err(self.fail(HeaderError::Flood))
            }
        }
    }

    fn fail(&mut self, e: HeaderError) -> HeaderError {
        self.failed = Some(e);
        e
    }
}

fn size_limit(max: usize, observed: usize) -> LimitExceeded {
    LimitExceeded {
        limit: Limit::MaxRequestHeadersTotalSize,
        max: max as u64,
        observed: observed as u64,
    }
}

/// A request head being assembled, field by field. Fields are lent by the decoder
/// ([`Decoder::decode`]): what is kept is shared out of them, and `:method`, `:scheme` and
/// `:authority` are parsed on the spot (their errors kept for [`finish`](Self::finish), so
/// the rules are still reported in order).
struct Request<'r> {
    recent: &'r mut Recent,
    method: Option<Option<Method>>,
    scheme: Option<Option<Scheme>>,
    authority: Option<Result<Authority, &'static str>>,
    path: Option<Bytes>,
    protocol: Option<Bytes>,
    extended_connect: bool,
    regular_seen: bool,
    headers: FieldList,
    content_length: Option<u64>,
    /// The first rule broken; later fields are only counted by the decoder, not checked.
    malformed: Option<&'static str>,
}

/// Room for a typical request's regular fields (a browser sends about ten), so the list
/// is allocated once.
const TYPICAL_FIELDS: usize = 12;

impl<'r> Request<'r> {
    fn new(recent: &'r mut Recent, extended_connect: bool) -> Request<'r> {
        Request {
            recent,
            method: None,
            scheme: None,
            authority: None,
            path: None,
            protocol: None,
            extended_connect,
            regular_seen: false,
            headers: FieldList(Vec::with_capacity(TYPICAL_FIELDS)),
            content_length: None,
            malformed: None,
        }
    }

    fn field(&mut self, entry: &Entry) {
        if self.malformed.is_none() {
            if let Err(why) = self.try_field(entry) {
                self.malformed = Some(why);
            }
        }
    }

    /// Rules 1–3.
    fn try_field(&mut self, Entry { name, value, .. }: &Entry) -> Result<(), &'static str> {
        match name {
            Name::Pseudo(pseudo) => {
                if self.regular_seen {
                    return Err("pseudo-header after a regular field");
                }
                let taken = match pseudo {
                    Pseudo::Method => self.method.is_some(),
                    Pseudo::Scheme => self.scheme.is_some(),
                    Pseudo::Authority => self.authority.is_some(),
                    Pseudo::Path => self.path.is_some(),
                    Pseudo::Protocol if self.extended_connect => self.protocol.is_some(),
                    Pseudo::Protocol => return Err(":protocol without extended CONNECT"),
                    Pseudo::Status => return Err("response pseudo-header in a request"),
                };
                if taken {
                    return Err("duplicate pseudo-header");
                }
                let bytes = value.as_bytes();
                match pseudo {
                    Pseudo::Method => self.method = Some(parse_method(bytes)),
                    Pseudo::Scheme => self.scheme = Some(parse_scheme(bytes)),
                    Pseudo::Authority => self.authority = Some(self.recent.authority(value)),
                    Pseudo::Path => self.path = Some(value.to_raw()),
                    _ => self.protocol = Some(value.to_raw()),
                }
            }
            Name::Invalid(why) => return Err(why),
            Name::Header(name) => {
                self.regular_seen = true;
                let (name, value) = fields::check_entry(name, value)?;
                if name == CONTENT_LENGTH {
                    let n = fields::parse_content_length(&value).ok_or("invalid content-length")?;
                    if self.content_length.is_some_and(|seen| seen != n) {
                        return Err("conflicting content-length values");
                    }
                    self.content_length = Some(n);
                }
                self.headers.0.push((name, value));
            }
        }
        Ok(())
    }

    /// Rules 4–6, once the whole block is decoded (unless it was too large: then fields are
    /// missing and only the rules broken so far count).
    fn finish(self, too_large: bool) -> Result<Box<RequestHead>, HeaderError> {
        if let Some(why) = self.malformed {
            return Err(HeaderError::Malformed(why));
        }
        if too_large {
            return Err(HeaderError::TooLarge);
        }
        self.build().map_err(HeaderError::Malformed)
    }

    fn build(self) -> Result<Box<RequestHead>, &'static str> {
        let method = self.method.ok_or("missing :method")?.ok_or("invalid :method")?;
        let authority = self.authority.transpose()?;
        if let (Some(host), Some(authority)) = (self.headers.get(&HOST), &authority) {
            if !host.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes()) {
                return Err("host differs from :authority");
            }
        }

        if self.protocol.is_some() && method != Method::CONNECT {
            return Err(":protocol outside CONNECT");
        }
        let target = if method == Method::CONNECT && self.protocol.is_none() {
            if self.scheme.is_some() || self.path.is_some() {
                return Err("CONNECT with :scheme or :path");
            }
            let authority = Some(authority.ok_or("CONNECT without :authority")?);
            RequestTarget { scheme: None, authority, path: None }
        } else {
            let scheme = self.scheme.ok_or("missing :scheme")?;
            let path = self.path.ok_or("missing :path")?;
            match path.first() {
                None => return Err("empty :path"),
                Some(b'*') if &path[..] == b"*" => {
                    if method != Method::OPTIONS {
                        return Err(":path * outside OPTIONS");
                    }
                }
                Some(b'/') => {}
                Some(_) => return Err(":path is not an absolute path"),
            }
            let authority = match authority {
                Some(a) => a,
                None => {
                    let host = self.headers.get(&HOST).ok_or("no :authority and no host")?;
                    host_authority(host.clone()).ok_or("invalid host")?
                }
            };
            let scheme = Some(scheme.ok_or("invalid :scheme")?);
            let path = Some(parse_path(path).ok_or("invalid :path")?);
            RequestTarget { scheme, authority: Some(authority), path }
        };
        Ok(Box::new(RequestHead {
            method,
            target,
            headers: self.headers,
            content_length: self.content_length,
            protocol: self.protocol,
        }))
    }
}

/// `:method`, with the two that nearly every request has found without `Method`'s
/// general parse.
fn parse_method(bytes: &[u8]) -> Option<Method> {
    match bytes {
        b"GET" => Some(Method::GET),
        b"POST" => Some(Method::POST),
        _ => Method::from_bytes(bytes).ok(),
    }
}

/// `:scheme`, likewise for `http` and `https`.
fn parse_scheme(bytes: &[u8]) -> Option<Scheme> {
    match bytes {
        b"https" => Some(Scheme::HTTPS),
        b"http" => Some(Scheme::HTTP),
        _ => Scheme::try_from(bytes).ok(),
    }
}

/// Rule 6: `:authority` is host and optional port, without userinfo: the rule HTTP/1's
/// `Host` follows ([`is_valid_host`]).
fn parse_authority(value: Bytes) -> Result<Authority, &'static str> {
    if value.contains(&b'@') {
        return Err("userinfo in :authority");
    }
    host_authority(value).ok_or("invalid :authority")
}

/// `value` as the `Authority` of the request's `Uri`, if it is a valid host
/// ([`is_valid_host`]; `Bytes` are taken as they are, anything else is copied).
fn host_authority<T: AsRef<[u8]> + 'static>(value: T) -> Option<Authority> {
    if !is_valid_host(value.as_ref()) {
        return None;
    }
    Authority::from_maybe_shared(value).ok()
}

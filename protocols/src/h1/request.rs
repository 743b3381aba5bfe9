//! The request head: tokenising with `httparse`, then every rule Peregrine enforces at the edge.
//!
//! Read RFC 9112 §2.2 (message parsing), §3 (request line), §5 (field syntax), §6 (body
//! framing) and RFC 9110 §7.2 (Host) before editing.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Uri, Version};
use peregrine_limits::Limit;

use super::error::{LimitExceeded, ParseError, Violation};
use super::lex;
use super::scan::{self, HeaderSpan, RawHead};
use crate::host::KnownHost;

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

/// A request head that passed every check, its fields still where they arrived: what
/// [`HeadParser`](super::HeadParser) yields. A server that can answer from the method, the
/// target and a field or two (a fixed response) never builds the `HeaderMap`, which hashes
/// and stores every field and is most of a small request's parsing cost; one that needs
/// the `http` types calls [`into_head`](Self::into_head).
#[derive(Debug)]
pub struct ParsedHead {
    /// The request method.
    pub method: Method,
    /// The request target, checked; a `Uri` only when asked for.
    pub target: Target,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: Version,
    /// How the body is framed.
    pub framing: BodyFraming,
    /// As [`RequestHead::keep_alive`].
    pub keep_alive: bool,
    /// As [`RequestHead::expect_continue`].
    pub expect_continue: bool,
    /// As [`RequestHead::upgrade`].
    pub upgrade: bool,
    /// The fields.
    pub fields: RawFields,
}

/// A head's fields where they arrived: the head's bytes and where each name and value lie.
#[derive(Debug)]
pub struct RawFields {
    bytes: Bytes,
    /// Each field's name and value, in order.
    spans: Vec<FieldSpan>,
    /// Which of `spans` is the `Host` field (`NO_HOST`: none): the parse found it, so no
    /// second search for it.
    host_at: u16,
}

/// [`RawFields::host_at`] for a head without `Host`.
const NO_HOST: u16 = u16::MAX;

/// Where one field's name and value lie in a [`ParsedHead`]'s bytes. A head is far
/// smaller than 4 GiB (its size limits say so), hence `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FieldSpan {
    name: (u32, u32),
    value: (u32, u32),
}

impl FieldSpan {
    pub(super) fn new(name: std::ops::Range<usize>, value: std::ops::Range<usize>) -> FieldSpan {
        let at = |r: std::ops::Range<usize>| (r.start as u32, r.end as u32);
        FieldSpan { name: at(name), value: at(value) }
    }

    pub(super) fn of(span: &HeaderSpan) -> FieldSpan {
        FieldSpan::new(span.name.clone(), span.value.clone())
    }
}

impl RawFields {
    /// The `Host` field's value (a head has at most one).
    pub fn host(&self) -> Option<&[u8]> {
        match self.spans.get(usize::from(self.host_at)) {
            Some(f) => Some(&self.bytes[f.value.0 as usize..f.value.1 as usize]),
            // None, or further than `host_at` counts: looked for.
            None => self.values("host").next(),
        }
    }

    /// Every field's name as sent, in order.
    pub fn names(&self) -> impl Iterator<Item = &[u8]> {
        self.spans.iter().map(|f| &self.bytes[f.name.0 as usize..f.name.1 as usize])
    }

    /// The values of the fields called `name` (ignoring ASCII case), in the order sent.
    pub fn values<'s, 'n>(&'s self, name: &'n str) -> impl Iterator<Item = &'s [u8]> + 'n
    where
        's: 'n,
    {
        self.spans.iter().filter_map(move |f| {
            let field = &self.bytes[f.name.0 as usize..f.name.1 as usize];
            field
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| &self.bytes[f.value.0 as usize..f.value.1 as usize])
        })
    }

    /// The fields in a `HeaderMap` (zero-copy: the values share the head's bytes).
    /// Fails only for more fields than a `HeaderMap` holds (32 Ki), which only limits far
    /// above the defaults let through.
    pub fn to_map(&self) -> Result<HeaderMap, ParseError> {
        let n = self.spans.len() as u64;
        let too_many = |_| {
            ParseError::Limit(LimitExceeded {
                limit: Limit::MaxRequestHeaderCount,
                max: n,
                observed: n,
            })
        };
        let capacity = self.spans.len() + ROOM_FOR_ADDED_FIELDS;
        let mut headers = HeaderMap::try_with_capacity(capacity).map_err(too_many)?;
        for f in &self.spans {
            // The bytes passed the field syntax when the head was parsed (`httparse`'s token
            // and value rules are the `http` types' own), so these cannot fail; they are the
            // types' own guarantee, kept rather than bypassed with `unsafe`.
            let name = &self.bytes[f.name.0 as usize..f.name.1 as usize];
            let name = HeaderName::from_bytes(name).map_err(malformed)?;
            let value = self.bytes.slice(f.value.0 as usize..f.value.1 as usize);
            let value = HeaderValue::from_maybe_shared(value).map_err(malformed)?;
            headers.try_append(name, value).map_err(too_many)?;
        }
        Ok(headers)
    }
}

impl ParsedHead {
    /// The head as a [`RequestHead`], its fields in a map ([`RawFields::to_map`]).
    pub fn into_head(self) -> Result<RequestHead, ParseError> {
        Ok(RequestHead {
            headers: self.fields.to_map()?,
            method: self.method,
            uri: self.target.into_uri()?,
            version: self.version,
            framing: self.framing,
            keep_alive: self.keep_alive,
            expect_continue: self.expect_continue,
            upgrade: self.upgrade,
        })
    }
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
    parse_head(buf, cfg, &mut KnownHost::default())?.map(ParsedHead::into_head).transpose()
}

/// [`parse_request`] without building the `HeaderMap`: see [`ParsedHead`]. `known_host` is
/// the connection's last valid `Host`.
pub(crate) fn parse_head(
    buf: &mut BytesMut,
    cfg: &ParseConfig,
    known_host: &mut KnownHost,
) -> Result<Option<ParsedHead>, ParseError> {
    let slots = scan::header_slots(cfg);
    let mut kept = Vec::with_capacity(slots.min(TYPICAL_FIELDS));
    // The common shape, in one pass; anything else goes to the reference tokeniser.
    if let Some(raw) = lex::lex_common(buf, cfg, slots, &mut kept) {
        let head = buf.split_to(raw.len).freeze();
        return check_head(head, &raw, kept, known_host);
    }
    kept.clear();
    // Most requests carry a handful of headers: parse first with a small span array (its
    // initialisation is paid on every request), and only when that runs out of slots parse
    // again with room for every header the limit allows.
    let first = slots.min(FIRST_TRY_SLOTS);
    let mut small = [const { HeaderSpan::EMPTY }; FIRST_TRY_SLOTS];
    match scan::scan_head(buf, cfg, &mut small[..first]) {
        Err(ParseError::Limit(l)) if l.limit == Limit::MaxRequestHeaderCount && slots > first => {}
        result => {
            let Some(raw) = result? else { return Ok(None) };
            let head = buf.split_to(raw.len).freeze();
            kept.extend(small[..raw.header_count].iter().map(FieldSpan::of));
            return check_head(head, &raw, kept, known_host);
        }
    }
    let mut stack_spans = [const { HeaderSpan::EMPTY }; scan::STACK_HEADER_SLOTS];
    let mut heap_spans = Vec::new();
    let spans: &mut [HeaderSpan] = if slots <= scan::STACK_HEADER_SLOTS {
        &mut stack_spans[..slots]
    } else {
        heap_spans.resize(slots, HeaderSpan::EMPTY);
        &mut heap_spans
    };

    let Some(raw) = scan::scan_head(buf, cfg, spans)? else { return Ok(None) };
    // The head is complete: from here on the buffer is only split, never copied. On an error
    // below the head is already consumed, which is fine: the caller closes the connection.
    let head = buf.split_to(raw.len).freeze();
    kept.extend(spans[..raw.header_count].iter().map(FieldSpan::of));
    check_head(head, &raw, kept, known_host)
}

/// Fields a request's map has room for beyond what arrived: a reverse proxy adds its
/// forwarding fields (`X-Forwarded-For`, `-Proto`, `-Host`, `X-Request-Id`, `Host`), and a
/// map that grows for them allocates and re-hashes every field once more.
const ROOM_FOR_ADDED_FIELDS: usize = 5;

/// Room for the fields of a typical request (a browser's dozen), reserved before they are
/// counted: a head with more grows the list once or twice.
const TYPICAL_FIELDS: usize = 16;

/// Header slots of the first parse attempt (see [`parse_request`]).
const FIRST_TRY_SLOTS: usize = 24;

fn malformed<E>(_: E) -> ParseError {
    ParseError::Invalid(Violation::MalformedHead)
}

fn invalid(v: Violation) -> ParseError {
    ParseError::Invalid(v)
}

/// Applies the semantic rules to a tokenised head (`bytes` is the head, split off the
/// buffer). When several rules are broken the first in this order is reported: malformed
/// field bytes, target, Host, Transfer-Encoding, Content-Length.
///
/// Returns the head as the parse's result (built in place, not wrapped afterwards: a head is
/// a couple of hundred bytes to copy).
fn check_head(
    bytes: Bytes,
    raw: &RawHead,
    kept: Vec<FieldSpan>,
    known_host: &mut KnownHost,
) -> Result<Option<ParsedHead>, ParseError> {
    let method = Method::from_bytes(&bytes[raw.method.clone()]).map_err(malformed)?;
    let version = if raw.minor_version == 0 { Version::HTTP_10 } else { Version::HTTP_11 };

    let mut fields = Fields::default();
    let mut host_at = NO_HOST;
    for (i, span) in kept.iter().enumerate() {
        let name = &bytes[span.name.0 as usize..span.name.1 as usize];
        let value = &bytes[span.value.0 as usize..span.value.1 as usize];
        // `HeaderName` holds up to 64 KiB: checked here, so that building the map later
        // cannot fail on a head that was answered without one.
        if name.len() > usize::from(u16::MAX) {
            return Err(malformed(()));
        }
        if fields.observe(name, value) {
            fields.check_host_value(value, known_host);
            // Past `NO_HOST` fields (only a limit far above the default lets them through)
            // `host` looks for it.
            host_at = u16::try_from(i).unwrap_or(NO_HOST);
        }
    }

    let target = parse_target(&method, bytes.slice(raw.target.clone()))?;
    fields.check_host(version)?;
    let framing = fields.framing(version)?;

    let http11 = version == Version::HTTP_11;
    // RFC 9112 §9.3: HTTP/1.1 is persistent unless `close`; HTTP/1.0 only with `keep-alive`.
    // `close` wins when both are sent.
    let keep_alive = !fields.conn_close && (http11 || fields.conn_keep_alive);
    Ok(Some(ParsedHead {
        method,
        target,
        version,
        framing,
        keep_alive,
        // RFC 9110 §10.1.1: a server MUST ignore 100-continue in an HTTP/1.0 request.
        expect_continue: http11 && fields.expect_continue,
        // RFC 9110 §7.8: a server MUST ignore Upgrade in an HTTP/1.0 request.
        upgrade: http11 && fields.conn_upgrade && fields.upgrade,
        fields: RawFields { bytes, spans: kept, host_at },
    }))
}

/// A request target that passed [`parse_target`]'s checks (HTTP/1's request line) or
/// [`parse_path`]'s (HTTP/2's `:path`).
///
/// An origin-form target (`/path?query`) made only of bytes `http::Uri` takes as they are,
/// which is nearly every one, stays those bytes until a `Uri` is asked for: building one
/// checks every byte again and costs about 250 instructions that a request answered from
/// its head ([`ParsedHead`]) never needed. Any other target is a `Uri` from the start.
#[derive(Debug, Clone)]
pub struct Target(TargetRepr);

#[derive(Debug, Clone)]
enum TargetRepr {
    /// Origin-form: ASCII, no fragment, every byte one `Uri` keeps as it is.
    Origin {
        text: Bytes,
        /// Where `?` is, if anywhere.
        query: Option<usize>,
    },
    Uri(Uri),
}

impl Target {
    /// The path, as `Uri::path` gives it.
    pub fn path(&self) -> &str {
        match &self.0 {
            TargetRepr::Origin { text, query } => ascii(&text[..query.unwrap_or(text.len())]),
            TargetRepr::Uri(uri) => uri.path(),
        }
    }

    /// [`path`](Self::path)'s bytes, without making them text (a check of each byte).
    #[inline]
    pub fn path_bytes(&self) -> &[u8] {
        match &self.0 {
            TargetRepr::Origin { text, query } => &text[..query.unwrap_or(text.len())],
            TargetRepr::Uri(uri) => uri.path().as_bytes(),
        }
    }

    /// The query, as `Uri::query` gives it.
    pub fn query(&self) -> Option<&str> {
        match &self.0 {
            TargetRepr::Origin { text, query } => query.map(|q| ascii(&text[q + 1..])),
            TargetRepr::Uri(uri) => uri.query(),
        }
    }

    /// The path with its query (`/` when the target has neither, as in `*`'s `Uri`).
    pub fn path_and_query(&self) -> &str {
        match &self.0 {
            TargetRepr::Origin { text, .. } => ascii(text),
            TargetRepr::Uri(uri) => uri.path_and_query().map_or("/", |p| p.as_str()),
        }
    }

    /// [`path_and_query`](Self::path_and_query)'s bytes, without making them text.
    pub fn path_and_query_bytes(&self) -> &[u8] {
        match &self.0 {
            TargetRepr::Origin { text, .. } => text,
            TargetRepr::Uri(uri) => uri.path_and_query().map_or(b"/", |p| p.as_str().as_bytes()),
        }
    }

    /// The target as a `Uri`, when it was built as one (it is not origin-form, or has bytes
    /// a `Uri` re-encodes).
    pub fn as_uri(&self) -> Option<&Uri> {
        match &self.0 {
            TargetRepr::Origin { .. } => None,
            TargetRepr::Uri(uri) => Some(uri),
        }
    }

    /// The target as a `Uri`. Fails only if `Uri` refuses what the origin-form check let
    /// through, which the tests below rule out byte by byte.
    pub fn into_uri(self) -> Result<Uri, ParseError> {
        match self.0 {
            TargetRepr::Origin { text, .. } => {
                Uri::from_maybe_shared(text).map_err(|_| invalid(Violation::InvalidTarget))
            }
            TargetRepr::Uri(uri) => Ok(uri),
        }
    }

    /// The path and query as a `Uri`'s part (HTTP/2 builds an absolute `Uri` from it and
    /// its `:scheme` and `:authority`); `None` only where [`into_uri`](Self::into_uri)
    /// would fail, or for a target with no path (CONNECT's authority-form).
    pub fn into_path_and_query(self) -> Option<PathAndQuery> {
        match self.0 {
            TargetRepr::Origin { text, .. } => PathAndQuery::from_maybe_shared(text).ok(),
            TargetRepr::Uri(uri) => uri.into_parts().path_and_query,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            TargetRepr::Origin { .. } => f.write_str(self.path_and_query()),
            TargetRepr::Uri(uri) => uri.fmt(f),
        }
    }
}

/// `bytes` as text: only called on a target the origin-form check found ASCII.
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// Bytes an origin-form target may hold in its path ([`PATH_BYTE`]) and in its query
/// ([`QUERY_BYTE`]) for `Uri` to keep it byte for byte: printable ASCII, less what `http`'s
/// grammars refuse or treat specially (`#` starts a fragment; `?` ends the path).
static PLAIN_TARGET: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if b.is_ascii_graphic() {
            if !matches!(b, b'#' | b'<' | b'>' | b'`' | b'?') {
                table[i] |= PATH_BYTE;
            }
            if !matches!(b, b'#' | b'<' | b'>' | b'"') {
                table[i] |= QUERY_BYTE;
            }
        }
        i += 1;
    }
    table
};
const PATH_BYTE: u8 = 1;
const QUERY_BYTE: u8 = 2;

/// Whether `target` is an origin-form target `Uri` keeps byte for byte (RFC 9112 §3.2.1):
/// `/`, path bytes, then optionally `?` and query bytes (see [`PLAIN_TARGET`]). Returns
/// where `?` is.
fn plain_origin_form(target: &[u8]) -> Option<Option<usize>> {
    if target.first() != Some(&b'/') || target.len() >= usize::from(u16::MAX) {
        return None;
    }
    let (mut query, mut allowed) = (None, PATH_BYTE);
    for (i, &b) in target.iter().enumerate() {
        if PLAIN_TARGET[usize::from(b)] & allowed == 0 {
            if b != b'?' || query.is_some() {
                return None;
            }
            (query, allowed) = (Some(i), QUERY_BYTE);
        }
    }
    Some(query)
}

/// Checks the request-target against the form its method allows (RFC 9112 §3.2).
///
/// - origin-form (`/path?query`, §3.2.1): any method but CONNECT.
/// - absolute-form (`scheme://authority/path`, §3.2.2): any method but CONNECT.
/// - authority-form (`host:port`, §3.2.3): CONNECT only, and CONNECT takes nothing else. No
///   userinfo: the grammar is `uri-host ":" port`.
/// - asterisk-form (`*`, §3.2.4): OPTIONS only.
///
/// A fragment is never part of a request-target; `http` would drop it silently, we reject
/// it. Targets longer than `http::Uri` can hold (64 KiB) are rejected as invalid too.
pub(crate) fn parse_target(method: &Method, target: Bytes) -> Result<Target, ParseError> {
    if *method != Method::CONNECT {
        if let Some(query) = plain_origin_form(&target) {
            return Ok(Target(TargetRepr::Origin { text: target, query }));
        }
    }
    parse_target_uri(method, target).map(|uri| Target(TargetRepr::Uri(uri)))
}

/// An HTTP/2 `:path` that starts with `/`, or is `*` (RFC 9113 §8.3.1; the caller checks
/// which methods may have which), checked as an origin-form (or asterisk-form) target is
/// above: kept as bytes when `Uri` would keep them as they are, else a `Uri` now. A
/// fragment is refused, as it is in a request line (`#` is in neither the path nor the
/// query grammar).
pub(crate) fn parse_path(path: Bytes) -> Option<Target> {
    if let Some(query) = plain_origin_form(&path) {
        return Some(Target(TargetRepr::Origin { text: path, query }));
    }
    if path.contains(&b'#') {
        return None;
    }
    Uri::from_maybe_shared(path).ok().map(|uri| Target(TargetRepr::Uri(uri)))
}

/// [`parse_target`] for the targets that become a `Uri` at once.
fn parse_target_uri(method: &Method, target: Bytes) -> Result<Uri, ParseError> {
    let bad = || invalid(Violation::InvalidTarget);
    if target.contains(&b'#') {
        return Err(bad());
    }
    let first = target.first().copied();
    let asterisk = target.as_ref() == b"*";
    let uri = Uri::from_maybe_shared(target).map_err(|_| bad())?;
    let ok = if method == Method::CONNECT {
        uri.scheme().is_none()
            && uri.path().is_empty()
            && uri.authority().is_some_and(|a| a.port().is_some() && !a.as_str().contains('@'))
    } else if first == Some(b'/') {
        // `Uri` parses anything starting with '/' as a path.
        true
    } else if asterisk {
        method == Method::OPTIONS
    } else {
        uri.scheme().is_some() && uri.authority().is_some()
    };
    if ok {
        Ok(uri)
    } else {
        Err(bad())
    }
}

/// What the fields that decide framing and connection handling said, gathered in one pass.
#[derive(Debug, Default)]
pub(super) struct Fields {
    pub(super) host_count: usize,
    pub(super) host_invalid: bool,
    /// The agreed Content-Length, once one valid value has been seen.
    pub(super) content_length: Option<u64>,
    pub(super) content_length_seen: bool,
    pub(super) content_length_invalid: bool,
    pub(super) transfer_encoding_seen: bool,
    /// Times `chunked` was named across all Transfer-Encoding lines.
    pub(super) chunked_count: usize,
    /// Whether the last coding named so far is `chunked`.
    pub(super) chunked_last: bool,
    /// Whether any coding other than `chunked` was named.
    pub(super) other_coding: bool,
    pub(super) conn_close: bool,
    pub(super) conn_keep_alive: bool,
    pub(super) conn_upgrade: bool,
    pub(super) expect_continue: bool,
    pub(super) upgrade: bool,
}

impl Fields {
    /// Notes what one field says, its name matched ignoring ASCII case: by length first, so
    /// most fields cost one comparison of a length. Returns whether it is a `Host` field,
    /// whose value the caller checks ([`Fields::check_host_value`]).
    pub(super) fn observe(&mut self, name: &[u8], value: &[u8]) -> bool {
        let is = |known: &str| crate::names::token_is(name, known.as_bytes());
        match name.len() {
            4 if is("host") => {
                self.host_count += 1;
                return true;
            }
            14 if is("content-length") => {
                self.content_length_seen = true;
                self.observe_content_length(value);
            }
            17 if is("transfer-encoding") => {
                self.transfer_encoding_seen = true;
                for coding in list_elements(value) {
                    if coding.eq_ignore_ascii_case(b"chunked") {
                        self.chunked_count += 1;
                        self.chunked_last = true;
                    } else {
                        self.other_coding = true;
                        self.chunked_last = false;
                    }
                }
            }
            10 if is("connection") => {
                for token in list_elements(value) {
                    self.conn_close |= token.eq_ignore_ascii_case(b"close");
                    self.conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                    self.conn_upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                }
            }
            6 if is("expect") => {
                self.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
            }
            7 if is("upgrade") => self.upgrade = true,
            _ => {}
        }
        false
    }

    /// Checks a `Host` value (RFC 9110 §7.2: `uri-host [ ":" port ]`; empty is allowed, for
    /// a target URI without authority).
    pub(super) fn check_host_value(&mut self, value: &[u8], known: &mut KnownHost) {
        if !value.is_empty() && !known.is_valid(value) {
            self.host_invalid = true;
        }
    }

    /// RFC 9110 §8.6: `Content-Length = 1*DIGIT`. A list of identical values (`5, 5`, or
    /// repeated lines) may be accepted as that value; anything else is invalid.
    fn observe_content_length(&mut self, value: &[u8]) {
        let mut any = false;
        for element in value.split(|&b| b == b',').map(trim_ows) {
            any = true;
            match (parse_decimal(element), self.content_length) {
                (Some(n), None) => self.content_length = Some(n),
                (Some(n), Some(agreed)) if n == agreed => {}
                _ => self.content_length_invalid = true,
            }
        }
        self.content_length_invalid |= !any;
    }

    /// RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, for any request with more
    /// than one Host line, and for an invalid Host value.
    fn check_host(&self, version: Version) -> Result<(), ParseError> {
        match self.host_count {
            0 if version == Version::HTTP_11 => Err(invalid(Violation::MissingHost)),
            0 | 1 if self.host_invalid => Err(invalid(Violation::InvalidHost)),
            0 | 1 => Ok(()),
            _ => Err(invalid(Violation::DuplicateHost)),
        }
    }

    /// The request body length, RFC 9112 §6.3, as it applies to requests:
    ///
    /// 1. (HEAD, 1xx, 204, 304: responses only.)
    /// 2. (2xx to CONNECT: responses only.)
    /// 3. Transfer-Encoding and Content-Length both present: RFC 9112 lets TE override and
    ///    asks that the connection be closed; Peregrine rejects it outright, since it is the
    ///    classic request-smuggling shape (§11.2).
    /// 4. Transfer-Encoding present: chunked must be the final coding, else 400. We decode no
    ///    other coding, so anything before `chunked` is 501 (RFC 9112 §6.1). Applying chunked
    ///    twice is forbidden (§7) and also 400. On HTTP/1.0, Transfer-Encoding means the
    ///    framing is faulty (§6.1): 400.
    /// 5. Content-Length invalid, or several differing values: 400.
    /// 6. Content-Length valid: that many bytes.
    /// 7. Neither: no body.
    /// 8. (Close-delimited: responses only.)
    fn framing(&self, version: Version) -> Result<BodyFraming, ParseError> {
        if self.transfer_encoding_seen {
            if version == Version::HTTP_10 {
                return Err(invalid(Violation::TransferEncodingOnHttp10));
            }
            if self.content_length_seen {
                return Err(invalid(Violation::ContentLengthWithTransferEncoding));
            }
            if self.chunked_count != 1 || !self.chunked_last {
                return Err(invalid(Violation::TransferEncodingNotChunkedLast));
            }
            if self.other_coding {
                return Err(ParseError::UnsupportedTransferCoding);
            }
            return Ok(BodyFraming::Chunked);
        }
        if self.content_length_invalid {
            return Err(invalid(Violation::InvalidContentLength));
        }
        Ok(match self.content_length {
            Some(n) if n > 0 => BodyFraming::Length(n),
            _ => BodyFraming::Empty,
        })
    }
}

/// The non-empty, OWS-trimmed elements of a comma-separated list (RFC 9110 §5.6.1; empty
/// elements are ignored, as recipients must).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|e| !e.is_empty())
}

/// Strips optional whitespace (SP / HTAB, RFC 9110 §5.6.3) from both ends.
fn trim_ows(s: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// `1*DIGIT` as a u64: no sign, no whitespace, no overflow.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Whether bytes appended after offset `from` could complete a request head in `buf`: the
/// new bytes (with the 3 before them) contain an empty line (`\n\r\n` or `\n\n`).
///
/// [`HeadParser`](super::HeadParser)'s test for whether a growing head is worth parsing again.
pub(crate) fn head_may_be_complete(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(3).min(buf.len());
    buf[start..]
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && buf.get(start + i + 2) == Some(&b'\n')))
}

#[cfg(test)]
mod target_tests {
    use super::*;

    /// Every byte, in the path and in the query: where the origin-form check keeps a target
    /// as bytes, the `Uri` built later exists and has the same path and query; where it
    /// does not, the target goes the `Uri` way at once, with the same outcome as before.
    #[test]
    fn a_target_kept_as_bytes_becomes_the_same_uri() {
        let mut kept = 0;
        for b in 0..=255u8 {
            for raw in [
                [b"/a".as_slice(), &[b], b"b?q=1"].concat(),
                [b"/a?q".as_slice(), &[b], b"x"].concat(),
            ] {
                let bytes = Bytes::from(raw.clone());
                let target = parse_target(&Method::GET, bytes.clone());
                let reference = parse_target_uri(&Method::GET, bytes);
                match (target, reference) {
                    (Ok(t), Ok(uri)) => {
                        kept += usize::from(t.as_uri().is_none());
                        assert_eq!((t.path(), t.query()), (uri.path(), uri.query()), "{raw:?}");
                        assert_eq!(t.path_bytes(), uri.path().as_bytes());
                        let want = uri.path_and_query().unwrap().as_str();
                        assert_eq!(t.path_and_query(), want);
                        assert_eq!(t.to_string(), uri.to_string());
                        assert_eq!(t.into_uri().unwrap(), uri);
                    }
                    (Err(_), Err(_)) => {}
                    (t, uri) => panic!("{raw:?}: {t:?} but the Uri way says {uri:?}"),
                }
            }
        }
        assert!(kept > 150, "{kept} kept as bytes");
        let star = parse_target(&Method::OPTIONS, Bytes::from_static(b"*")).unwrap();
        assert_eq!((star.as_uri().is_some(), star.path_and_query()), (true, "*"));
        let absolute = parse_target(&Method::GET, Bytes::from_static(b"http://h/p?q")).unwrap();
        assert_eq!((absolute.path(), absolute.query()), ("/p", Some("q")));
    }
}

#[cfg(test)]
mod head_end_tests {
    use super::head_may_be_complete;

    #[test]
    fn finds_an_empty_line_only_in_or_just_before_the_new_bytes() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(head_may_be_complete(head, 0));
        assert!(
            head_may_be_complete(head, head.len() - 1),
            "the \\r\\n before the new byte counts"
        );
        assert!(!head_may_be_complete(&head[..head.len() - 2], 0));
        assert!(head_may_be_complete(b"GET / HTTP/1.1\nHost: x\n\n", 20));
        assert!(!head_may_be_complete(b"GET / HTTP/1.1\r\nHost: x\r\n", 10));
        // Fed a byte at a time, it says yes exactly when the last byte arrives.
        let yes: Vec<usize> =
            (1..=head.len()).filter(|&n| head_may_be_complete(&head[..n], n - 1)).collect();
        assert_eq!(yes, vec![head.len()]);
    }
}

//! Response header blocks: the HPACK encoder.
//!
//! The application's fields go out as literals without indexing (RFC 7541 §6.2.2), naming a
//! static table entry where one has the name, and `:status` is a single indexed byte for the
//! seven codes the static table holds: a pass over the map with no lookups besides the
//! static name index. Sensitive values (`HeaderValue::set_sensitive`) go out "never
//! indexed" (§6.2.3) so intermediaries do not index them either.
//!
//! The two fields the server adds to every response, `date` and `server`, are the exception:
//! they are the same on every response of a second, so the first goes out with incremental
//! indexing (§6.2.1) and the rest as one indexed byte (§6.1), about 40 bytes and the work of
//! writing them saved per response. The encoder remembers only those entries
//! ([`OwnEntries`]); nothing else is ever inserted. Blocks are written to the connection's
//! ordered output as they are encoded and never dropped after, so the peer's decoder sees
//! every insertion in the order it was made.
//!
//! Dynamic table size (RFC 7541 §4.2, RFC 9113 §6.5.2): the peer's
//! SETTINGS_HEADER_TABLE_SIZE bounds our table, and decoders such as nghttp2 insist on a
//! size update at the start of the next block when the setting shrinks. So a decrease is
//! recorded and signalled once, at the front of the next block (where our record of the
//! table is cut down with it); an increase needs no signal (our table stays at the smaller
//! size, which the larger setting allows).

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::fields::is_connection_specific;
use super::hpack::encoder;
use super::hpack::table::{static_name_index, static_status_index};

/// The `:status` entry of the static table, used as a name index for other codes.
const STATUS_NAME_INDEX: usize = 8;
/// Static table entries for request pseudo-headers (RFC 7541 Appendix A): `:authority`,
/// `:method: GET` (`POST` follows), `:path: /`, `:scheme: http` (`https` follows).
const AUTHORITY_INDEX: usize = 1;
const METHOD_GET_INDEX: usize = 2;
const PATH_ROOT_INDEX: usize = 4;
const SCHEME_HTTP_INDEX: usize = 6;
/// `content-length` in the static table.
const CONTENT_LENGTH_INDEX: usize = 28;

/// A request's pseudo-header values, for [`HeaderEncoder::encode_request`].
#[derive(Debug, Clone, Copy)]
pub struct RequestPseudo<'a> {
    /// `:method`.
    pub method: &'a http::Method,
    /// `:scheme` (`None` for CONNECT).
    pub scheme: Option<&'a str>,
    /// `:authority`.
    pub authority: &'a str,
    /// `:path` (`None` for CONNECT).
    pub path: Option<&'a str>,
}
/// The table size both sides assume before any SETTINGS (RFC 9113 §6.5.2).
const INITIAL_TABLE_SIZE: usize = 4096;

/// Encodes response and trailer blocks for one connection.
#[derive(Debug, Clone)]
pub struct HeaderEncoder {
    /// The table size the peer's decoder assumes we may use.
    table_size: usize,
    /// A smaller size to announce at the front of the next block.
    pending_update: Option<usize>,
    /// What we inserted into the peer's dynamic table.
    own: OwnEntries,
}

/// A field the server adds to responses, kept in the peer's dynamic table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnField {
    /// `date`.
    Date,
    /// `server`.
    Server,
}

impl OwnField {
    /// Its name's static table index (RFC 7541 Appendix A) and its name's length.
    fn name(self) -> (usize, usize) {
        match self {
            OwnField::Date => (33, "date".len()),
            OwnField::Server => (54, "server".len()),
        }
    }
}

/// The most of the peer's dynamic table we use: a few `date` entries and a `server` entry
/// (an entry costs its name and value plus 32 bytes, §4.1). Using less than the peer allows
/// is always safe: an entry we still count on is one of the newest, which the peer's larger
/// table holds too.
const OWN_TABLE_MAX: usize = 512;

/// The `server` field's value.
const SERVER: &[u8] = b"peregrine";

/// The peer's dynamic table as far as this encoder filled it (RFC 7541 §2.3, §4): the sizes
/// of the entries, newest first, and the insertion numbers of the current `date` and
/// `server` values. An entry's index is 62 plus the number of entries inserted after it.
#[derive(Debug, Clone, Default)]
struct OwnEntries {
    sizes: std::collections::VecDeque<usize>,
    size: usize,
    inserted: u64,
    /// Per [`OwnField`]: the insertion number and value of its newest entry.
    latest: [Option<(u64, Vec<u8>)>; 2],
}

impl OwnEntries {
    /// The index of `field: value`, if its entry is still in the table.
    fn index_of(&self, field: OwnField, value: &[u8]) -> Option<usize> {
        let (n, v) = self.latest[field as usize].as_ref()?;
        let newer = (self.inserted - n - 1) as usize;
        (newer < self.sizes.len() && v.as_slice() == value).then_some(62 + newer)
    }

    /// Records an insertion of `field: value` into a table of at most `max` bytes. Returns
    /// false (and records nothing) when the entry does not fit at all: the caller sends it
    /// without indexing instead, which leaves the peer's table as it is.
    fn insert(&mut self, field: OwnField, value: &[u8], max: usize) -> bool {
        let size = field.name().1 + value.len() + 32;
        if size > max {
            return false;
        }
        self.evict_to(max - size);
        self.sizes.push_front(size);
        self.size += size;
        self.latest[field as usize] = Some((self.inserted, value.to_vec()));
        self.inserted += 1;
        true
    }

    /// Forgets the oldest entries until the rest fit in `max` bytes (§4.4).
    fn evict_to(&mut self, max: usize) {
        while self.size > max {
            let Some(oldest) = self.sizes.pop_back() else { break };
            self.size -= oldest;
        }
    }
}

impl Default for HeaderEncoder {
    fn default() -> HeaderEncoder {
        HeaderEncoder::new()
    }
}

impl HeaderEncoder {
    /// An encoder at the protocol's initial table size.
    pub fn new() -> HeaderEncoder {
        HeaderEncoder {
            table_size: INITIAL_TABLE_SIZE,
            pending_update: None,
            own: OwnEntries::default(),
        }
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE changed (the encoder must never use more than
    /// this). Call it when the SETTINGS frame arrives; blocks encoded after it honour it.
    pub fn set_max_table_size(&mut self, size: usize) {
        if size < self.table_size {
            // If it shrinks several times before the next block, the smallest value is the
            // one to announce (RFC 7541 §4.2), and it is also the latest smaller one.
            self.table_size = size;
            self.pending_update = Some(size);
        }
    }

    /// Appends the HPACK block for a response head (`:status` first, then the fields) to
    /// `dst`. Connection-specific fields (connection, keep-alive, proxy-connection,
    /// transfer-encoding, upgrade) are dropped, because HTTP/2 forbids them; names are
    /// already lowercase in `http`.
    ///
    /// Returns which of the fields a server adds itself (`date`, `server`) the map had, seen
    /// on the way (no lookups for them afterwards).
    pub fn encode_response<'f>(
        &mut self,
        status: StatusCode,
        headers: impl IntoIterator<Item = (&'f HeaderName, &'f HeaderValue)>,
        dst: &mut BytesMut,
    ) -> Present {
        self.flush_update(dst);
        encode_start(status, headers, None, dst)
    }

    /// Appends the HPACK block for a request head to `dst` (the client side): the four
    /// pseudo-headers (RFC 9113 §8.3.1; CONNECT without `:scheme` and `:path`, §8.5), then
    /// the fields but connection-specific ones and `host` (`:authority` replaces it).
    pub fn encode_request(
        &mut self,
        head: &RequestPseudo<'_>,
        headers: &HeaderMap,
        dst: &mut BytesMut,
    ) {
        self.flush_update(dst);
        match head.method.as_str() {
            "GET" => encoder::indexed(METHOD_GET_INDEX, dst),
            "POST" => encoder::indexed(METHOD_GET_INDEX + 1, dst),
            m => encoder::literal(METHOD_GET_INDEX, &[], m.as_bytes(), false, dst),
        }
        if let Some(scheme) = head.scheme {
            match scheme {
                "http" => encoder::indexed(SCHEME_HTTP_INDEX, dst),
                "https" => encoder::indexed(SCHEME_HTTP_INDEX + 1, dst),
                s => encoder::literal(SCHEME_HTTP_INDEX, &[], s.as_bytes(), false, dst),
            }
        }
        encoder::literal(AUTHORITY_INDEX, &[], head.authority.as_bytes(), false, dst);
        if let Some(path) = head.path {
            match path {
                "/" => encoder::indexed(PATH_ROOT_INDEX, dst),
                p => encoder::literal(PATH_ROOT_INDEX, &[], p.as_bytes(), false, dst),
            }
        }
        encode_fields(headers, Some(&http::header::HOST), dst);
    }

    /// Appends the server's own `date` (when given) and `server` (when `server`), as
    /// [`encode_own_field`](Self::encode_own_field) would one after the other. Once both sit
    /// in the peer's table (every block after the first, within a second) they are one byte
    /// each, written together.
    pub fn encode_own_fields(&mut self, date: Option<&[u8]>, server: bool, dst: &mut BytesMut) {
        if let (Some(date), true) = (date, server) {
            let date_index = self.own.index_of(OwnField::Date, date);
            let server_index = self.own.index_of(OwnField::Server, SERVER);
            if let (Some(d @ ..=126), Some(s @ ..=126)) = (date_index, server_index) {
                dst.extend_from_slice(&[0x80 | d as u8, 0x80 | s as u8]);
                return;
            }
        }
        if let Some(date) = date {
            self.encode_own_field(OwnField::Date, date, dst);
        }
        if server {
            self.encode_own_field(OwnField::Server, SERVER, dst);
        }
    }

    /// Appends a field the server adds (`date`, `server`) to the block `encode_response`
    /// just wrote: one indexed byte when the peer's table holds the same value, else a
    /// literal that the peer adds to its table.
    pub fn encode_own_field(&mut self, field: OwnField, value: &[u8], dst: &mut BytesMut) {
        if let Some(index) = self.own.index_of(field, value) {
            encoder::indexed(index, dst);
            return;
        }
        let name_index = field.name().0;
        if self.own.insert(field, value, self.table_size.min(OWN_TABLE_MAX)) {
            encoder::literal_indexed(name_index, value, dst);
        } else {
            encoder::literal(name_index, &[], value, false, dst);
        }
    }

    /// Appends the HPACK block for trailers to `dst`, dropping connection-specific fields.
    pub fn encode_trailers(&mut self, headers: &HeaderMap, dst: &mut BytesMut) {
        self.flush_update(dst);
        encode_fields(headers, None, dst);
    }

    /// Starts a block: a pending dynamic table size update must come first (RFC 7541 §4.2).
    pub(crate) fn flush_update(&mut self, dst: &mut BytesMut) {
        if let Some(size) = self.pending_update.take() {
            encoder::size_update(size, dst);
            // The peer's decoder evicts down to the new size on reading the update.
            self.own.evict_to(size);
        }
    }
}

/// Which of the fields a server adds itself a map already has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Present {
    /// `date`.
    pub date: bool,
    /// `server`.
    pub server: bool,
}

/// The part of a response block that depends on the response alone: `:status`, the
/// handler's fields and, when given, `content-length`, each encoded without the dynamic
/// table, so the same bytes are right on any connection at any time.
pub(crate) fn encode_start<'f>(
    status: StatusCode,
    headers: impl IntoIterator<Item = (&'f HeaderName, &'f HeaderValue)>,
    content_length: Option<u64>,
    dst: &mut BytesMut,
) -> Present {
    match static_status_index(status.as_u16()) {
        Some(index) => encoder::indexed(index, dst),
        None => encoder::literal(STATUS_NAME_INDEX, &[], status.as_str().as_bytes(), false, dst),
    }
    // `content-length` is the codec's, as in HTTP/1: the caller passes the body's real
    // length (`ServerFields`), so a wrong one from the application never reaches the wire
    // (RFC 9113 §8.1.1 makes a mismatch a malformed response).
    let present = encode_fields(headers, Some(&http::header::CONTENT_LENGTH), dst);
    if let Some(n) = content_length {
        let mut scratch = [0; 20];
        let digits = crate::h1::response::decimal(n, &mut scratch);
        encoder::literal(CONTENT_LENGTH_INDEX, &[], digits, false, dst);
    }
    present
}

/// The start of a response's header block ([`encode_start`]'s bytes), made once and sent
/// any number of times with
/// [`Connection::send_response_from`](crate::h2::server::Connection::send_response_from):
/// a server that answers with the same response again and again (a fixed page, a health
/// check) formats it once. Only this encoder makes one, so what a connection sends from it
/// is always a valid block.
#[derive(Debug, Clone)]
pub struct ResponseStart {
    pub(crate) status: StatusCode,
    pub(crate) bytes: Bytes,
    pub(crate) present: Present,
}

impl ResponseStart {
    /// Encodes `:status`, `headers` (as [`HeaderEncoder::encode_response`] takes them) and
    /// `content-length: content_length`.
    pub fn encode<'f>(
        status: StatusCode,
        headers: impl IntoIterator<Item = (&'f HeaderName, &'f HeaderValue)>,
        content_length: Option<u64>,
    ) -> ResponseStart {
        let mut bytes = BytesMut::new();
        let present = encode_start(status, headers, content_length, &mut bytes);
        ResponseStart { status, bytes: bytes.freeze(), present }
    }

    /// The encoded bytes' length.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether there are none (never: `:status` is always there).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Encodes `headers` but connection-specific fields and `skip`; notes `date` and `server`.
fn encode_fields<'f>(
    headers: impl IntoIterator<Item = (&'f HeaderName, &'f HeaderValue)>,
    skip: Option<&http::HeaderName>,
    dst: &mut BytesMut,
) -> Present {
    let headers = headers.into_iter();
    // Each field costs its bytes plus at most a few of framing; reserving once avoids
    // regrowth for all the usual responses.
    dst.reserve(headers.size_hint().0 * 8);
    let mut present = Present::default();
    for (name, value) in headers {
        if is_connection_specific(name) || skip == Some(name) {
            continue;
        }
        present.date |= name == http::header::DATE;
        present.server |= name == http::header::SERVER;
        let index = static_name_index(name).unwrap_or(0);
        encoder::literal(
            index,
            name.as_str().as_bytes(),
            value.as_bytes(),
            value.is_sensitive(),
            dst,
        );
    }
    present
}

//! Response header blocks: the table-free HPACK encoder.
//!
//! Every field goes out as a literal without indexing (RFC 7541 §6.2.2), naming a static
//! table entry where one has the name, and `:status` is a single indexed byte for the seven
//! codes the static table holds. No dynamic table is kept: encoding is a pass over the map
//! with no lookups besides the static name index, the encoder's state is a few words per
//! connection, and no later block depends on an earlier one (so a response that is dropped
//! after encoding can never desynchronise the peer). The price is bytes on the wire for
//! repeated fields, which a benchmark of small responses barely notices next to the frame
//! and TLS overheads. Sensitive values (`HeaderValue::set_sensitive`) go out "never
//! indexed" (§6.2.3) so intermediaries do not index them either.
//!
//! Dynamic table size (RFC 7541 §4.2, RFC 9113 §6.5.2): the peer's
//! SETTINGS_HEADER_TABLE_SIZE bounds our table. We never insert, but the peer's decoder still
//! believes our table may use its previous maximum, and decoders such as nghttp2 insist on a
//! size update at the start of the next block when the setting shrinks. So a decrease is
//! recorded and signalled once, at the front of the next block; an increase needs no signal
//! (our table stays at the smaller size, which the larger setting allows).

use bytes::BytesMut;
use http::{HeaderMap, StatusCode};

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
}

impl Default for HeaderEncoder {
    fn default() -> HeaderEncoder {
        HeaderEncoder::new()
    }
}

impl HeaderEncoder {
    /// An encoder at the protocol's initial table size.
    pub fn new() -> HeaderEncoder {
        HeaderEncoder { table_size: INITIAL_TABLE_SIZE, pending_update: None }
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
    pub fn encode_response(
        &mut self,
        status: StatusCode,
        headers: &HeaderMap,
        dst: &mut BytesMut,
    ) -> Present {
        self.flush_update(dst);
        match static_status_index(status.as_u16()) {
            Some(index) => encoder::indexed(index, dst),
            None => {
                encoder::literal(STATUS_NAME_INDEX, &[], status.as_str().as_bytes(), false, dst)
            }
        }
        // `content-length` is the codec's, as in HTTP/1: the caller passes the body's real
        // length (`ServerFields`), so a wrong one from the application never reaches the
        // wire (RFC 9113 §8.1.1 makes a mismatch a malformed response).
        encode_fields(headers, Some(&http::header::CONTENT_LENGTH), dst)
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

    /// Appends one more field to the block `encode_response` just wrote (fields the server
    /// adds, such as `date`, without inserting them into the application's `HeaderMap`).
    /// The caller does not pass connection-specific fields.
    pub fn encode_field(&mut self, name: &http::HeaderName, value: &[u8], dst: &mut BytesMut) {
        let index = static_name_index(name).unwrap_or(0);
        encoder::literal(index, name.as_str().as_bytes(), value, false, dst);
    }

    /// Appends the HPACK block for trailers to `dst`, dropping connection-specific fields.
    pub fn encode_trailers(&mut self, headers: &HeaderMap, dst: &mut BytesMut) {
        self.flush_update(dst);
        encode_fields(headers, None, dst);
    }

    fn flush_update(&mut self, dst: &mut BytesMut) {
        if let Some(size) = self.pending_update.take() {
            encoder::size_update(size, dst);
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

/// Encodes `headers` but connection-specific fields and `skip`; notes `date` and `server`.
fn encode_fields(
    headers: &HeaderMap,
    skip: Option<&http::HeaderName>,
    dst: &mut BytesMut,
) -> Present {
    // Each field costs its bytes plus at most a few of framing; reserving once avoids
    // regrowth for all the usual responses.
    dst.reserve(headers.len() * 8);
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

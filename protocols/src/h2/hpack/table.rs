//! The HPACK indexing tables (RFC 7541 §2.3): the static table of Appendix A, indices 1..=61,
//! followed by the dynamic table, newest entry first.
//!
//! Entries hold field names already classified ([`Name`]) and values as [`Bytes`], so a
//! field referenced by index costs a reference-count bump, not a copy or a re-validation;
//! that is the common case for a client that repeats its headers on every request.

use std::collections::VecDeque;
use std::sync::LazyLock;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::h1::scan::is_tchar;

/// A request or response pseudo-header this server knows (RFC 9113 §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pseudo {
    /// `:authority`
    Authority,
    /// `:method`
    Method,
    /// `:path`
    Path,
    /// `:scheme`
    Scheme,
    /// `:status`: a response pseudo-header, malformed in a request.
    Status,
    /// `:protocol` (RFC 8441): valid only in an extended CONNECT, where
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL was sent.
    Protocol,
}

/// A field name as HTTP/2 sees it, classified once when it enters the decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Name {
    /// A known pseudo-header.
    Pseudo(Pseudo),
    /// A regular field name: a lowercase token.
    Header(HeaderName),
    /// A name no request may carry (RFC 9113 §8.2.1, §8.3); says why. It is still a valid
    /// HPACK string and may sit in the dynamic table: the block stays decodable and only the
    /// message is malformed.
    Invalid(&'static str),
}

impl Name {
    /// Classifies a decoded name (RFC 9113 §8.2.1 and §8.3).
    pub(crate) fn classify(raw: &[u8]) -> Name {
        match raw {
            b":authority" => Name::Pseudo(Pseudo::Authority),
            b":method" => Name::Pseudo(Pseudo::Method),
            b":path" => Name::Pseudo(Pseudo::Path),
            b":scheme" => Name::Pseudo(Pseudo::Scheme),
            b":status" => Name::Pseudo(Pseudo::Status),
            b":protocol" => Name::Pseudo(Pseudo::Protocol),
            [b':', ..] => Name::Invalid("unknown pseudo-header"),
            [] => Name::Invalid("empty field name"),
            _ if raw.iter().any(u8::is_ascii_uppercase) => Name::Invalid("uppercase field name"),
            // RFC 9113 §8.2.1 forbids only controls, space, DEL, non-ASCII and colons, but a
            // name outside RFC 9110's token grammar cannot be passed on to HTTP/1 or matched
            // by any rule, so it is refused here too (`http` alone would let `"` through).
            _ if !raw.iter().all(|&b| is_tchar(b)) => {
                Name::Invalid("invalid character in field name")
            }
            // Finds the standard names without allocating.
            _ => match HeaderName::from_lowercase(raw) {
                Ok(name) => Name::Header(name),
                Err(_) => Name::Invalid("invalid character in field name"),
            },
        }
    }
}

/// RFC 7541 §4.1: an entry's size is its name and value lengths plus 32. RFC 9113 §6.5.2
/// counts SETTINGS_MAX_HEADER_LIST_SIZE the same way.
pub(crate) const ENTRY_OVERHEAD: usize = 32;

/// One field as the decoder hands it out.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) name: Name,
    pub(crate) value: Value,
    /// `name.len() + value.len() + 32`, with the name's length as it was on the wire.
    pub(crate) size: usize,
}

/// A field's value as a table entry holds it.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// As decoded.
    Raw(Bytes),
    /// A regular field's value that passed the field checks (`fields::check`) when the
    /// entry was made. A peer re-sends its indexed fields on every request (`user-agent`,
    /// `accept`, cookies): checked once, each use is a reference count.
    Checked(HeaderValue),
}

impl Value {
    pub(crate) fn len(&self) -> usize {
        match self {
            Value::Raw(b) => b.len(),
            Value::Checked(v) => v.len(),
        }
    }

    /// The value's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Value::Raw(b) => b,
            Value::Checked(v) => v.as_bytes(),
        }
    }

    /// The value's bytes, shared. Only pseudo-headers are read this way, and only regular
    /// fields are ever checked, so the copy of a checked value is not taken in practice.
    pub(crate) fn to_raw(&self) -> Bytes {
        match self {
            Value::Raw(b) => b.clone(),
            Value::Checked(v) => Bytes::copy_from_slice(v.as_bytes()),
        }
    }
}

impl Entry {
    /// The entry with its value checked, when it is a regular field that passes the field
    /// checks. One that fails stays raw: every use of it fails the same checks again.
    pub(crate) fn checked(self) -> Entry {
        let value = match (&self.name, self.value) {
            (Name::Header(name), Value::Raw(raw)) => {
                match crate::h2::fields::check(name.clone(), raw.clone()) {
                    Ok((_, value)) => Value::Checked(value),
                    Err(_) => Value::Raw(raw),
                }
            }
            (_, value) => value,
        };
        Entry { value, ..self }
    }
}

/// The static table (RFC 7541 Appendix A): index `i` is `STATIC[i - 1]`.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Number of static entries; dynamic indices start after it.
pub(crate) const STATIC_LEN: usize = STATIC.len();

/// The longest regular name in the static table (`access-control-allow-origin`).
const LONGEST_STATIC_NAME: usize = 27;
/// At most this many regular names of the static table share a length.
const SAME_LENGTH_MAX: usize = 8;

/// The static table's regular names by length: the table positions (0-based) of the names
/// of each length, then zeros (no regular name sits at position 0). Built at compile time.
static BY_LENGTH: [[u8; SAME_LENGTH_MAX]; LONGEST_STATIC_NAME + 1] = by_length();

const fn by_length() -> [[u8; SAME_LENGTH_MAX]; LONGEST_STATIC_NAME + 1] {
    let mut table = [[0u8; SAME_LENGTH_MAX]; LONGEST_STATIC_NAME + 1];
    let mut count = [0usize; LONGEST_STATIC_NAME + 1];
    // Names repeat in the table only among pseudo-headers (positions 0..14), so each
    // regular name is here once.
    let mut i = 14;
    while i < STATIC.len() {
        let len = STATIC[i].0.len();
        table[len][count[len]] = i as u8;
        count[len] += 1;
        i += 1;
    }
    table
}

/// The static index of a regular field name, for the encoder (`None`: send the name as a
/// literal). Pseudo-headers are not looked up here. Only the names of the same length are
/// compared (at most [`SAME_LENGTH_MAX`], usually one or two), where a scan of the table
/// compared up to 47 for every field of every response.
pub(crate) fn static_name_index(name: &HeaderName) -> Option<usize> {
    // The names most responses carry, compared as `http`'s constants first: for a standard
    // name that is a tag comparison, where `as_str` turns it back into text through a table.
    if let Some(&(_, index)) = COMMON_NAMES.iter().find(|(common, _)| common == name) {
        return Some(index);
    }
    let name = name.as_str().as_bytes();
    let (&first, candidates) = (name.first()?, BY_LENGTH.get(name.len())?);
    // The first byte tells most same-length names apart before a full comparison.
    candidates
        .iter()
        .take_while(|&&i| i != 0)
        .map(|&i| usize::from(i))
        .find(|&i| STATIC[i].0.as_bytes()[0] == first && STATIC[i].0.as_bytes() == name)
        .map(|i| i + 1)
}

/// Field names most responses carry, with their static indices (RFC 7541 Appendix A).
static COMMON_NAMES: [(HeaderName, usize); 6] = [
    (http::header::CONTENT_TYPE, 31),
    (http::header::CACHE_CONTROL, 24),
    (http::header::ETAG, 34),
    (http::header::LAST_MODIFIED, 44),
    (http::header::VARY, 59),
    (http::header::CONTENT_ENCODING, 26),
];

/// The static index holding `:status` with this code, if any (8..=14).
pub(crate) fn static_status_index(status: u16) -> Option<usize> {
    match status {
        200 => Some(8),
        204 => Some(9),
        206 => Some(10),
        304 => Some(11),
        400 => Some(12),
        404 => Some(13),
        500 => Some(14),
        _ => None,
    }
}

/// The static table with its names classified once per process, shared by all decoders.
static STATIC_ENTRIES: LazyLock<Vec<Entry>> = LazyLock::new(|| {
    STATIC
        .iter()
        .map(|&(n, v)| {
            let entry = Entry {
                name: Name::classify(n.as_bytes()),
                value: Value::Raw(Bytes::from_static(v.as_bytes())),
                size: n.len() + v.len() + ENTRY_OVERHEAD,
            };
            entry.checked()
        })
        .collect()
});

/// The static and dynamic tables of one decoder.
#[derive(Debug)]
pub(crate) struct Table {
    /// Newest first: index 62 is `dynamic[0]`.
    dynamic: VecDeque<Entry>,
    /// Sum of the dynamic entries' sizes.
    size: usize,
    /// The current maximum size, as last set by a dynamic table size update.
    capacity: usize,
}

impl Table {
    /// A table whose dynamic part may hold `capacity` bytes (RFC 7541 §4.1 sizes).
    pub(crate) fn new(capacity: usize) -> Table {
        Table { dynamic: VecDeque::new(), size: 0, capacity }
    }

    /// The entry at a 1-based index of the combined address space (§2.3.3), or `None` for 0
    /// and for indices past the end.
    pub(crate) fn get(&self, index: usize) -> Option<&Entry> {
        match index {
            0 => None,
            i if i <= STATIC_LEN => STATIC_ENTRIES.get(i - 1),
            i => self.dynamic.get(i - STATIC_LEN - 1),
        }
    }

    /// Adds an entry at the front, evicting from the back until it fits (§4.4). An entry
    /// larger than the whole table empties it and is not added.
    pub(crate) fn insert(&mut self, entry: Entry) {
        if entry.size > self.capacity {
            self.dynamic.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.capacity - entry.size);
        self.size += entry.size;
        self.dynamic.push_front(entry);
    }

    /// Applies a dynamic table size update (§4.3, §6.3); the caller checked the bound.
    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.evict_to(capacity);
    }

    /// Sum of the dynamic entries' sizes (§4.1).
    #[cfg(test)]
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Number of dynamic entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.dynamic.len()
    }

    fn evict_to(&mut self, max: usize) {
        while self.size > max {
            // `size > 0` means an entry is there.
            let old = self.dynamic.pop_back().expect("size accounts for entries");
            self.size -= old.size;
        }
    }
}

//! The HPACK decoder (RFC 7541 §3, §5, §6): one complete header block in, fields out through
//! a callback, with the header-list budget enforced as each field is decoded.
//!
//! Representations (§6), by the leading bits of their first byte:
//!
//! ```text
//!   1xxxxxxx  indexed field                      (§6.1, 7-bit index)
//!   01xxxxxx  literal, incremental indexing      (§6.2.1, 6-bit name index, 0 = literal name)
//!   001xxxxx  dynamic table size update          (§6.3, 5-bit size)
//!   0001xxxx  literal, never indexed             (§6.2.3, 4-bit name index)
//!   0000xxxx  literal, without indexing          (§6.2.2, 4-bit name index)
//! ```
//!
//! Every decoding error is a connection error COMPRESSION_ERROR (RFC 9113 §4.3): after one,
//! this side's dynamic table can no longer be trusted to match the peer's.

use bytes::Bytes;

use super::huffman;
use super::table::{Entry, Name, Table, Value, ENTRY_OVERHEAD};

/// Why decoding stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The block is not valid HPACK; the description says where it went wrong.
    Compression(&'static str),
    /// The decoded list passed twice the list-size limit; decoding stopped there. Carries
    /// the list size counted so far.
    Flood(usize),
}

/// The header-list limits one block is decoded under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListLimits {
    /// Most bytes of list, counted as name + value + 32 per field (RFC 9113 §6.5.2).
    pub(crate) max_size: usize,
    /// Most regular (non-pseudo) fields.
    pub(crate) max_fields: usize,
}

/// What a successfully decoded block amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// The list passed a limit: the fields from the one that crossed it on were decoded
    /// (so the table is in sync) but not handed to the callback.
    pub(crate) too_large: bool,
    /// The list size as counted (over all fields, delivered or not).
    pub(crate) list_size: usize,
    /// Regular fields counted (delivered or not).
    pub(crate) fields: usize,
}

/// The decoding side of one connection's HPACK context.
#[derive(Debug)]
pub(crate) struct Decoder {
    table: Table,
    /// Our SETTINGS_HEADER_TABLE_SIZE: the largest size update the peer may send.
    max_table_size: usize,
    /// The last Huffman-coded value of a literal sent without indexing, as it came and as
    /// decoded. Such values are sent again on every request (nghttp2, for one, never
    /// indexes `:path`, so a client polling one URL or calling one gRPC method repeats it
    /// word for word): the same bytes again are the same value, with no decoding.
    repeated: Option<(Box<[u8]>, Bytes)>,
}

/// Values longer than this (as sent) are not kept in [`Decoder::repeated`].
const REPEATED_MAX: usize = 256;

impl Decoder {
    /// A decoder that lets the peer use at most `max_table_size` bytes of dynamic table.
    ///
    /// The table starts at the protocol's initial 4096 (RFC 9113 §6.5.2), or at
    /// `max_table_size` when that is smaller.
    pub(crate) fn new(max_table_size: usize) -> Decoder {
        Decoder { table: Table::new(max_table_size.min(4096)), max_table_size, repeated: None }
    }

    /// The dynamic table, for tests.
    #[cfg(test)]
    pub(crate) fn table(&self) -> &Table {
        &self.table
    }

    /// Decodes one complete block, calling `field` for each field while the list is within
    /// `limits`. Fields are lent, not given: one sent by index is read in the table, and the
    /// callback copies (shares) only what it keeps.
    ///
    /// Past a limit the remaining fields are still decoded, because literals with
    /// incremental indexing change the table, but are dropped on the spot; past twice the
    /// size limit decoding stops with [`DecodeError::Flood`]. So the fields the callback
    /// sees never add up to more than `limits.max_size`, whatever the block expands to.
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        limits: ListLimits,
        mut field: impl FnMut(&Entry),
    ) -> Result<Decoded, DecodeError> {
        let mut src = Cursor { buf: block, pos: 0 };
        let flood_at = limits.max_size.saturating_mul(2);
        let mut budget = Budget { limits, flood_at, size: 0, fields: 0, over: false };
        // §4.2: size updates may come only before the first field of a block.
        let mut fields_seen = false;

        while let Some(first) = src.peek() {
            if first & 0x80 != 0 {
                // Nearly every index fits the first byte's seven bits.
                let index = if first != 0xff {
                    src.pos += 1;
                    usize::from(first & 0x7f)
                } else {
                    src.integer(7)?
                };
                let entry = self.table.get(index).ok_or(Compression("field index out of range"))?;
                if budget.admit(entry.size, matches!(entry.name, Name::Pseudo(_)))? {
                    field(entry);
                }
            } else if first & 0x40 != 0 {
                let name = self.literal_name(&mut src, 6)?;
                let value = src.string()?;
                let size = name.len() + value.len() + ENTRY_OVERHEAD;
                let value = Value::Raw(value.into_bytes());
                // Checked once here, not at each use of the entry.
                let entry = Entry { name: name.into_name(), value, size }.checked();
                if budget.admit(size, matches!(entry.name, Name::Pseudo(_)))? {
                    field(&entry);
                }
                self.table.insert(entry);
            } else if first & 0x20 != 0 {
                if fields_seen {
                    return Err(Compression("dynamic table size update after a field"));
                }
                let size = src.integer(5)?;
                if size > self.max_table_size {
                    return Err(Compression("dynamic table size update above our limit"));
                }
                self.table.set_capacity(size);
                continue;
            } else {
                // Without indexing and never indexed differ only for intermediaries, which
                // must keep "never indexed" when forwarding; a server that terminates
                // HTTP/2 treats both alike.
                let name = self.literal_name(&mut src, 4)?;
                let value = match src.string_coded()? {
                    (raw, true) => self.repeated_value(raw)?,
                    (raw, false) => Str::Raw(raw),
                };
                let size = name.len() + value.len() + ENTRY_OVERHEAD;
                // Nothing is classified or copied for a field that will be dropped.
                if budget.admit(size, name.is_pseudo())? {
                    let value = Value::Raw(value.into_bytes());
                    field(&Entry { name: name.into_name(), value, size });
                }
            }
            fields_seen = true;
        }
        Ok(Decoded { too_large: budget.over, list_size: budget.size, fields: budget.fields })
    }

    /// A Huffman-coded value of a literal without indexing: the last one's decoding when
    /// `raw` is the same bytes, else decoded (and kept for the next).
    fn repeated_value<'a>(&mut self, raw: &'a [u8]) -> Result<Str<'a>, DecodeError> {
        if let Some((last, value)) = &self.repeated {
            if **last == *raw {
                return Ok(Str::Shared(value.clone()));
            }
        }
        let value = Bytes::from(huffman_decode(raw)?);
        if raw.len() <= REPEATED_MAX {
            self.repeated = Some((raw.into(), value.clone()));
        }
        Ok(Str::Shared(value))
    }

    /// Reads a literal's name: an index into the tables, or 0 and a string (§6.2).
    fn literal_name<'a>(
        &self,
        src: &mut Cursor<'a>,
        prefix: u8,
    ) -> Result<LiteralName<'a>, DecodeError> {
        match src.integer(prefix)? {
            0 => Ok(LiteralName::New(src.string()?)),
            index => {
                let entry = self.table.get(index).ok_or(Compression("name index out of range"))?;
                let len = entry.size - entry.value.len() - ENTRY_OVERHEAD;
                Ok(LiteralName::Indexed(entry.name.clone(), len))
            }
        }
    }
}

/// Shorthand for the common error.
#[allow(non_snake_case)]
fn Compression(what: &'static str) -> DecodeError {
    DecodeError::Compression(what)
}

/// A literal's name as read, before classification.
enum LiteralName<'a> {
    /// Taken from a table entry (already classified), with its length on the wire.
    Indexed(Name, usize),
    /// Sent as a string.
    New(Str<'a>),
}

impl LiteralName<'_> {
    fn len(&self) -> usize {
        match self {
            LiteralName::Indexed(_, len) => *len,
            LiteralName::New(s) => s.len(),
        }
    }

    fn is_pseudo(&self) -> bool {
        match self {
            LiteralName::Indexed(name, _) => matches!(name, Name::Pseudo(_)),
            LiteralName::New(s) => s.as_slice().first() == Some(&b':'),
        }
    }

    fn into_name(self) -> Name {
        match self {
            LiteralName::Indexed(name, _) => name,
            LiteralName::New(s) => Name::classify(s.as_slice()),
        }
    }
}

/// A decoded string literal (§5.2): borrowed from the block, Huffman-decoded, or a value
/// decoded before.
enum Str<'a> {
    Raw(&'a [u8]),
    Huffman(Vec<u8>),
    Shared(Bytes),
}

impl Str<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Str::Raw(s) => s,
            Str::Huffman(v) => v,
            Str::Shared(b) => b,
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// The value as `Bytes`: one copy for a raw literal, none for a Huffman-decoded one.
    fn into_bytes(self) -> Bytes {
        match self {
            Str::Raw(s) => Bytes::copy_from_slice(s),
            Str::Huffman(v) => Bytes::from(v),
            Str::Shared(b) => b,
        }
    }
}

/// Counts the decoded list against [`ListLimits`].
struct Budget {
    limits: ListLimits,
    /// Twice `limits.max_size`: past it, decoding stops.
    flood_at: usize,
    size: usize,
    fields: usize,
    /// A limit was passed: no further field is delivered.
    over: bool,
}

impl Budget {
    /// Counts one field; `Ok(true)` if it should be delivered.
    fn admit(&mut self, size: usize, pseudo: bool) -> Result<bool, DecodeError> {
        self.size = self.size.saturating_add(size);
        self.fields += usize::from(!pseudo);
        if self.size > self.limits.max_size || self.fields > self.limits.max_fields {
            if self.size > self.flood_at {
                return Err(DecodeError::Flood(self.size));
            }
            self.over = true;
        }
        Ok(!self.over)
    }
}

/// A read position in a complete block. The block is whole (the connection assembled
/// HEADERS and CONTINUATION), so running out of bytes mid-representation is an error, not
/// "need more".
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = self.peek().ok_or(Compression("block ends inside an integer"))?;
        self.pos += 1;
        Ok(b)
    }

    /// An integer with an N-bit prefix (§5.1). The first byte's high bits belong to the
    /// representation and are masked off.
    ///
    /// Values are capped at 2^28 + 2^N - 2 (four continuation bytes): nothing in a block of
    /// Peregrine's size needs more, and the cap keeps the arithmetic far from overflow on
    /// every platform. A fifth continuation byte, however small its value, is an error.
    fn integer(&mut self, prefix: u8) -> Result<usize, DecodeError> {
        let mask = (1u8 << prefix) - 1;
        let mut value = usize::from(self.byte()? & mask);
        if value < usize::from(mask) {
            return Ok(value);
        }
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            value += usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
            if shift > 21 {
                return Err(Compression("integer too large"));
            }
        }
    }

    /// A string literal (§5.2): H bit, 7-bit-prefix length, then the octets.
    fn string(&mut self) -> Result<Str<'a>, DecodeError> {
        match self.string_coded()? {
            (raw, false) => Ok(Str::Raw(raw)),
            (raw, true) => Ok(Str::Huffman(huffman_decode(raw)?)),
        }
    }

    /// A string literal's octets as sent, and whether they are Huffman-coded.
    fn string_coded(&mut self) -> Result<(&'a [u8], bool), DecodeError> {
        let huffman = self.peek().ok_or(Compression("block ends before a string"))? & 0x80 != 0;
        let len = self.integer(7)?;
        let rest = &self.buf[self.pos..];
        if len > rest.len() {
            return Err(Compression("string longer than the block"));
        }
        let raw = &rest[..len];
        self.pos += len;
        Ok((raw, huffman))
    }
}

/// Decodes a Huffman-coded string literal.
fn huffman_decode(raw: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    huffman::decode(raw, &mut out).map_err(|e| Compression(e.description()))?;
    Ok(out)
}

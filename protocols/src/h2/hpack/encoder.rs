//! HPACK encoding primitives (RFC 7541 §5, §6) for the response encoder.
//!
//! Only what our encoder needs: indexed fields, literals that are not indexed (with a static
//! name index where there is one), literals that are (the server's own fields), and size
//! updates. Strings are sent raw, never Huffman-coded: responses cross a local link far more
//! often than a slow one, and the CPU per byte matters more here than the bytes Huffman
//! coding would save.

use bytes::{BufMut, BytesMut};

/// Writes `value` as an integer with an N-bit prefix (§5.1); `flags` fills the bits above
/// the prefix.
pub(crate) fn integer(value: usize, prefix: u8, flags: u8, dst: &mut BytesMut) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        dst.put_u8(flags | value as u8);
        return;
    }
    dst.put_u8(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        dst.put_u8(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.put_u8(rest as u8);
}

/// A string literal without Huffman coding (§5.2).
pub(crate) fn string(s: &[u8], dst: &mut BytesMut) {
    integer(s.len(), 7, 0, dst);
    dst.put_slice(s);
}

/// An indexed field (§6.1).
pub(crate) fn indexed(index: usize, dst: &mut BytesMut) {
    integer(index, 7, 0x80, dst);
}

/// A literal field that is not added to the table (§6.2.2), or never indexed (§6.2.3) for a
/// sensitive value. `name_index` 0 means the name follows as a string.
pub(crate) fn literal(
    name_index: usize,
    name: &[u8],
    value: &[u8],
    never_indexed: bool,
    dst: &mut BytesMut,
) {
    let flags = if never_indexed { 0x10 } else { 0x00 };
    integer(name_index, 4, flags, dst);
    if name_index == 0 {
        string(name, dst);
    }
    string(value, dst);
}

/// A literal field with incremental indexing (§6.2.1), named by static index `name_index`:
/// the peer's decoder adds it to its dynamic table.
pub(crate) fn literal_indexed(name_index: usize, value: &[u8], dst: &mut BytesMut) {
    integer(name_index, 6, 0x40, dst);
    string(value, dst);
}

/// A dynamic table size update (§6.3).
pub(crate) fn size_update(size: usize, dst: &mut BytesMut) {
    integer(size, 5, 0x20, dst);
}

//! HPACK, header compression for HTTP/2 (RFC 7541), written for this server.
//!
//! Read RFC 7541 §2–§6 and RFC 9113 §4.3 before editing.
//!
//! - [`decoder`]: one complete header block in, classified fields out through a callback,
//!   with the header-list budget counted as each field is decoded.
//! - [`table`]: the static table, the dynamic table, and the classification of field names.
//! - [`huffman`]: string-literal Huffman decoding (canonical code, derived at compile time).
//! - [`encoder`]: the primitives of the table-free response encoder.
//!
//! Why not the `hpack` crate family: `loona-hpack` 0.4 (and `hpack` 0.3, which it forks)
//! cannot stop from the per-field callback, so an HPACK bomb is expanded to the end of the
//! block; it accepts a dynamic table size update after a field (RFC 7541 §4.2 forbids it);
//! and its Huffman decoder builds a 257-entry hash map for every string, which a peer can
//! turn into CPU amplification with a block of tiny Huffman literals. `hpack` 0.3 also
//! accepts size updates of any size, letting a peer grow the table without bound, and
//! panics on a truncated one. The crate
//! is still used, in the tests, as an independent encoder and decoder to check against.

pub(crate) mod decoder;
pub(crate) mod encoder;
pub(crate) mod huffman;
pub(crate) mod table;

//! HTTP/2 server codec (RFC 9113), sans-IO: so far the frame layer and header blocks.
//!
//! Read RFC 9113 §3.4 (the connection preface), §4 (frames), §5.4 (error handling), §6 (frame
//! definitions), §7 (error codes) and §8.1–§8.3 (HTTP message rules), and RFC 7541 (HPACK),
//! before editing. The layout follows the h2 crate:
//!
//! - [`preface`]: the client connection preface check.
//! - [`frame`]: the 9-byte frame header, one file per frame type (each with `load` and
//!   `encode`), and the incremental [`FrameDecoder`].
//! - [`error`]: [`Reason`] (the §7 error codes) and [`Error`], which says whether a violation
//!   ends the connection (GOAWAY) or one stream (RST_STREAM).
//! - [`HeaderDecoder`] (`request.rs`, over `hpack/`): a complete request or trailer block in,
//!   an `http` request head out, with the header-list limits enforced while decoding and the
//!   message rules of §8.1–§8.3 (`fields.rs` holds the ones trailers share).
//! - [`HeaderEncoder`] (`response.rs`): response and trailer blocks, table-free.
//!
//! Not here yet: assembly of HEADERS + CONTINUATION into one capped block (the decoder
//! already enforces their order, §6.10), the stream state machine, flow control and flood
//! budgets.
//!
//! ```text
//!  received bytes ──► preface::check ──► FrameDecoder::decode ──► Frame ──► (stream layer)
//!  frames to send ──► X::encode / Data::encode_head ──► caller's BytesMut ──► socket (core)
//!  header block   ──► HeaderDecoder::decode_request ──► RequestHead (or HeaderError)
//!  response head  ──► HeaderEncoder::encode_response ──► caller's BytesMut (a block fragment)
//! ```

pub mod client;
pub mod error;
mod fields;
pub(crate) mod flow;
pub mod frame;
pub(crate) mod hpack;
pub(crate) mod outbound;
pub mod preface;
mod request;
mod response;
#[cfg(test)]
mod tests;

pub use error::{Error, Reason};
pub use frame::{Frame, FrameDecoder, Head, Kind, StreamId, StreamIdHasher, StreamMap};
pub mod server;
pub use request::{
    FieldList, HeaderDecoder, HeaderError, RequestHead, RequestTarget, ResponseHead,
};
pub use response::{HeaderEncoder, OwnField, Present, RequestPseudo, ResponseStart};

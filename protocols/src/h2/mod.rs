//! HTTP/2 server codec (RFC 9113), sans-IO: so far the frame layer.
//!
//! Read RFC 9113 §3.4 (the connection preface), §4 (frames), §5.4 (error handling), §6 (frame
//! definitions) and §7 (error codes) before editing. The layout follows the h2 crate:
//!
//! - [`preface`]: the client connection preface check.
//! - [`frame`]: the 9-byte frame header, one file per frame type (each with `load` and
//!   `encode`), and the incremental [`FrameDecoder`].
//! - [`error`]: [`Reason`] (the §7 error codes) and [`Error`], which says whether a violation
//!   ends the connection (GOAWAY) or one stream (RST_STREAM).
//!
//! Not here yet: HPACK (header block fragments are opaque `Bytes`), assembly of HEADERS +
//! CONTINUATION into one capped block (the decoder already enforces their order, §6.10), the
//! stream state machine, flow control and flood budgets.
//!
//! ```text
//!  received bytes ──► preface::check ──► FrameDecoder::decode ──► Frame ──► (stream layer)
//!  frames to send ──► X::encode / Data::encode_head ──► caller's BytesMut ──► socket (core)
//! ```

pub mod error;
pub mod frame;
pub mod preface;
#[cfg(test)]
mod tests;

pub use error::{Error, Reason};
pub use frame::{Frame, FrameDecoder, Head, Kind, StreamId};
mod hpack_shim;
pub mod server;
pub use hpack_shim::*;

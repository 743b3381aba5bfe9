//! HTTP/1.1 codec (RFC 9112), sans-IO: the server side, and the client side the proxy uses.
//!
//! Read RFC 9112 §2–§7 and RFC 9110 §6–§8 before editing. The split follows hyper's
//! `proto/h1`, minus the IO:
//!
//! - [`request`]: the request head: [`parse_request`] tokenises with `httparse` and applies
//!   every framing, strictness and size rule Peregrine enforces at the edge.
//! - [`body`]: [`BodyDecoder`], Content-Length and chunked framing, one state per function.
//! - [`response`]: serialising response heads, chunk framing and canned error responses into
//!   caller-owned buffers.
//! - [`client`]: the upstream side: request heads out, response heads in, as strict as
//!   the request side.
//! - [`error`]: [`ParseError`], and the one place a parse error becomes a status code.
//!
//! The connection loop in `peregrine-core` drives these: it appends received bytes to a
//! `BytesMut`, calls [`parse_request`] until it yields a head (`Ok(None)` means "need more
//! bytes"), then feeds the same buffer to a [`BodyDecoder`] built from the head's
//! [`BodyFraming`]. Pipelined requests are simply the next call to [`parse_request`] on
//! whatever the body decoder left in the buffer.

pub mod body;
mod chunked;
pub mod client;
pub mod error;
mod head;
mod lex;
pub mod request;
pub mod response;
pub(crate) mod scan;
#[cfg(test)]
mod tests;

pub use body::{BodyDecoder, BodyEvent};
pub use client::{
    encode_request_head, parse_response, parse_response_with, ResponseBody, ResponseError,
    ResponseHead, ResponseLimits, ResponseNames,
};
pub use error::{BodyError, Limit, LimitExceeded, ParseError, Violation};
pub use head::HeadParser;
#[doc(hidden)]
pub use lex::agrees_with_reference;
pub use request::{
    parse_request, BodyFraming, ParseConfig, ParsedHead, RawFields, RequestHead, Target,
};
pub use response::{
    encode_chunk_header, encode_error_response, encode_head_end, encode_head_start,
    encode_last_chunk, encode_response_head, response_framing, HeadStart, ResponseFraming,
    CHUNK_END, CONTINUE_100, LAST_CHUNK,
};

//! Sans-IO HTTP codecs for Peregrine.
//!
//! Everything in this crate is deterministic: it takes received bytes and returns events (a
//! parsed request head, body chunks, the end of a message), and it serialises responses into
//! buffers the caller owns. It does no IO, spawns nothing and never reads the clock; the
//! caller (`peregrine-core`) owns sockets, time and buffers. That is what lets every decoder
//! here be tested byte by byte, and fuzzed, without a socket.
//!
//! ```text
//!  received bytes ──► h1::parse_request ──► RequestHead ──► h1::BodyDecoder ──► Bytes chunks
//!  response parts ──► h1::encode_*      ──► caller's BytesMut ──► socket (core)
//!  received bytes ──► h2::preface::check, h2::FrameDecoder ──► h2::Frame
//!  frames to send ──► h2 frame encode    ──► caller's BytesMut ──► socket (core)
//! ```
#![forbid(unsafe_code)]

pub mod content;
pub mod h1;
pub mod h2;
pub mod host;
pub mod names;
pub mod proxy_protocol;

//! HTTP/1.1 connections: the loop that drives `peregrine_protocols::h1` over one socket.
//!
//! - [`conn`]: the connection loop: read a head, call the handler, write the response,
//!   drain what the handler left unread, repeat (pipelining included), and close properly.
//! - [`io`]: the connection's socket state (receive buffer, pending output, its one timer),
//!   shared between the loop and the request body.
//! - [`incoming`]: the request body the handler reads, with 100-continue and the minimum
//!   data rate.
//! - [`write`]: response serialisation and flushing, with the minimum response data rate.

mod conn;
mod incoming;
mod io;
mod write;

pub(crate) use conn::{reject_over_capacity, serve, Settings};
pub(crate) use incoming::Incoming;

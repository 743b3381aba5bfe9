//! What the connection tells the application.

use bytes::Bytes;
use http::HeaderMap;

use crate::h2::frame::StreamId;
use crate::h2::{Reason, RequestHead};

/// An event for the application, from [`Connection::poll_event`](super::Connection::poll_event).
#[derive(Debug)]
pub enum Event {
    /// A new request. Its body follows as [`Event::Data`] unless `end_stream`.
    Request {
        /// The request's stream.
        id: StreamId,
        /// The validated request head (boxed: events are queued and moved, and a head is a few
        /// hundred bytes).
        head: Box<RequestHead>,
        /// The request has no body.
        end_stream: bool,
    },
    /// Request body bytes (a slice of the receive buffer). The application must hand every
    /// byte back with [`Connection::release_capacity`](super::Connection::release_capacity)
    /// once consumed (or dropped): that is what reopens the flow-control windows.
    Data {
        /// The stream.
        id: StreamId,
        /// The bytes.
        data: Bytes,
        /// The body ends here.
        end_stream: bool,
    },
    /// The request's trailers; the body ended.
    Trailers {
        /// The stream.
        id: StreamId,
        /// The trailer fields (boxed: they are rare, and every event is as large as the
        /// largest kind, moved in and out of the queue).
        trailers: Box<HeaderMap>,
    },
    /// The stream ended abnormally and accepts no more output: the client reset it, or the
    /// server did after a stream error. Stop working on it.
    Reset {
        /// The stream.
        id: StreamId,
        /// The error code sent or received.
        reason: Reason,
        /// Whether the client sent the RST_STREAM.
        by_peer: bool,
    },
    /// The codec answered a request itself, without the application (a malformed request
    /// reset with PROTOCOL_ERROR, an oversized header list answered 431, a refused stream).
    /// For logs and metrics.
    Rejected {
        /// The stream.
        id: StreamId,
        /// Why.
        why: &'static str,
    },
    /// The connection failed and is going away with `reason` (GOAWAY queued). For logs and
    /// metrics; [`Connection::is_closed`](super::Connection::is_closed) says when to close.
    ConnectionError {
        /// The GOAWAY error code.
        reason: Reason,
        /// What happened (also the GOAWAY debug data).
        description: &'static str,
    },
}

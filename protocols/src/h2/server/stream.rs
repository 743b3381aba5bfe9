//! One stream's state (RFC 9113 §5.1), seen from the server.
//!
//! ```text
//!                 HEADERS received
//!     idle ─────────────────────────► open ──── END_STREAM received ───► half-closed (remote)
//!       │  HEADERS + END_STREAM received  │                                     │
//!       └─────────────────────────────────┼─────────────────────────────────────┘
//!                                         │ END_STREAM sent                     │ END_STREAM sent
//!                                         ▼                                     ▼
//!                               half-closed (local) ── END_STREAM received ─► closed
//!                          RST_STREAM sent or received, from any state ─────► closed
//! ```
//!
//! The two halves are tracked separately ([`Stream::recv_open`], [`Stream::send`]); a stream
//! leaves the connection's table once both are closed and its queued output has been sent,
//! or at once when reset. A closed stream keeps no state: frames for it are recognised by
//! their identifier being at or below the highest one the client has used.

use std::collections::VecDeque;

use bytes::Bytes;
use http::HeaderMap;

use super::flow::{RecvWindow, SendWindow};

/// What the server has sent on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendState {
    /// No response head yet.
    Idle,
    /// The response head went out; body or trailers may follow.
    Open,
    /// END_STREAM is queued or sent: nothing more may be queued.
    Done,
}

/// Output queued on a stream, waiting for flow control or its turn.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Body bytes; `true` ends the stream.
    Data(Bytes, bool),
    /// Trailers (they end the stream). Encoded when their turn comes, so the HPACK blocks go
    /// out in the order they were encoded.
    Trailers(HeaderMap),
}

/// A stream in the connection's table.
#[derive(Debug)]
pub(crate) struct Stream {
    /// The client may still send (no END_STREAM yet).
    pub(crate) recv_open: bool,
    pub(crate) send: SendState,
    pub(crate) recv_window: RecvWindow,
    pub(crate) send_window: SendWindow,
    /// The request's Content-Length, checked against the DATA received (§8.1.1).
    pub(crate) content_length: Option<u64>,
    pub(crate) received: u64,
    pub(crate) queue: VecDeque<Outgoing>,
    /// Body bytes in `queue`.
    pub(crate) queued_bytes: usize,
    /// Whether the stream is in the connection's list of streams with output to schedule.
    pub(crate) scheduled: bool,
}

impl Stream {
    pub(crate) fn new(recv_window: RecvWindow, send_window: SendWindow) -> Stream {
        Stream {
            recv_open: true,
            send: SendState::Idle,
            recv_window,
            send_window,
            content_length: None,
            received: 0,
            queue: VecDeque::new(),
            queued_bytes: 0,
            scheduled: false,
        }
    }

    /// Whether the front of the queue can go out now given `conn_window` bytes of
    /// connection window.
    pub(crate) fn can_send(&self, conn_window: usize) -> bool {
        match self.queue.front() {
            Some(Outgoing::Data(d, _)) if d.is_empty() => true,
            Some(Outgoing::Data(..)) => self.send_window.available() > 0 && conn_window > 0,
            Some(Outgoing::Trailers(_)) => true,
            None => false,
        }
    }

    /// Both halves are done and nothing is left to send.
    pub(crate) fn is_finished(&self) -> bool {
        !self.recv_open && self.send == SendState::Done && self.queue.is_empty()
    }
}

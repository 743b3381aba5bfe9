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
//! or at once when reset. A response that has fully left while the client is still sending
//! its request ends the stream too: RST_STREAM(NO_ERROR) asks the client to stop (RFC 9113
//! §8.1), so a client that never finishes its bodies cannot hold streams (and the
//! connection's idle timeout) after their answers. A tunnel is the exception: after a 2xx
//! to CONNECT its halves close independently, as a TCP connection's do (§8.5). A closed stream keeps no state: frames for it are recognised by
//! their identifier being at or below the highest one the client has used.

use super::flow::RecvWindow;
use crate::h2::outbound::{Outbound, Sending};

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

/// A stream in the connection's table.
#[derive(Debug)]
pub(crate) struct Stream {
    /// The client may still send (no END_STREAM yet).
    pub(crate) recv_open: bool,
    pub(crate) send: SendState,
    pub(crate) recv_window: RecvWindow,
    /// The request's Content-Length, checked against the DATA received (§8.1.1).
    pub(crate) content_length: Option<u64>,
    pub(crate) received: u64,
    /// The response's window and queued output.
    pub(crate) out: Outbound,
    /// The request is a CONNECT (plain, or RFC 8441's extended CONNECT).
    pub(crate) connect: bool,
    /// A 2xx answered the CONNECT: the stream is a tunnel.
    pub(crate) tunnel: bool,
}

impl Stream {
    pub(crate) fn new(recv_window: RecvWindow, send_window: u32) -> Stream {
        Stream {
            recv_open: true,
            send: SendState::Idle,
            recv_window,
            content_length: None,
            received: 0,
            out: Outbound::new(send_window),
            connect: false,
            tunnel: false,
        }
    }

    /// Moves on to sending the response head (only once: refused when one was sent).
    pub(crate) fn start_response(
        &mut self,
        status: http::StatusCode,
        end_stream: bool,
    ) -> Result<(), super::StreamGone> {
        if self.send != SendState::Idle {
            return Err(super::StreamGone);
        }
        self.send = if end_stream { SendState::Done } else { SendState::Open };
        self.tunnel = self.connect && status.is_success();
        Ok(())
    }

    /// Both halves are done and nothing is left to send.
    pub(crate) fn is_finished(&self) -> bool {
        !self.recv_open && self.response_left()
    }

    /// The whole response has been handed to the output.
    fn response_left(&self) -> bool {
        self.send == SendState::Done && self.out.queue.is_empty()
    }

    /// The response has left but the client is still sending, outside a tunnel: the stream
    /// ends with RST_STREAM(NO_ERROR) (see the module notes).
    pub(crate) fn outlived_by_request(&self) -> bool {
        self.recv_open && !self.tunnel && self.response_left()
    }
}

impl Sending for Stream {
    fn outbound(&self) -> &Outbound {
        &self.out
    }

    fn outbound_mut(&mut self) -> &mut Outbound {
        &mut self.out
    }
}

//! The HTTP/2 connection loop: drives `peregrine_protocols::h2::server::Connection` over a
//! [`Transport`](crate::transport::Transport) (TLS with ALPN `h2`, or h2c prior knowledge).
//!
//! ```text
//!              ┌──────────── connection task (conn.rs) ────────────┐
//!   socket ──► │ recv ─► Connection::recv ─► events ─► stream slots │ ──wake──► stream tasks
//!   socket ◄── │ send ◄─ Connection::poll_transmit ◄─ timers        │ ◄─queue── (stream.rs)
//!              └────────────────────────────────────────────────────┘
//! ```
//!
//! One task owns the socket: it keeps one receive and at most one send in flight at once and
//! turns the codec's events into work per stream. A stream's work (stream.rs) runs the
//! handler with a request whose body reads from its slot (body.rs), then queues the response
//! on the codec, never more than `max_stream_send_buffer` ahead of what flow control lets
//! out. Its first poll happens on the connection task; only work that has to wait gets a
//! task of its own (most handlers answer at once). Everything is on one core: the shared
//! state is `Rc<RefCell<..>>`, borrowed only between awaits.

mod body;
mod conn;
mod stream;

pub(crate) use body::RequestBody;
pub(crate) use conn::serve;

//! The driver API's vocabulary, one source for every driver crate: operation ids, send
//! buffers, completions, settings. `peregrine-io-linux` and `peregrine-io-windows` each
//! include this file (`#[path]`) as their `op::shared` module, after naming their owned socket
//! type `OwnedSocket` in `op`; what differs by OS (the cancellation error, the backend choice)
//! stays in each crate. The shared conformance suite (`driver-conformance/`) holds both
//! drivers to the meanings written here.

use std::io;

use bytes::{Buf, Bytes};

use super::OwnedSocket;

/// Names one submitted operation, for [`Driver::cancel`](crate::Driver::cancel). Carries a
/// generation, so cancelling an operation that already completed can never hit a newer one
/// that reuses its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

// io_uring carries the id in a completion's user data; IOCP keeps it next to its OVERLAPPED.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
impl OpId {
    pub(crate) fn to_user_data(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    pub(crate) fn from_user_data(data: u64) -> OpId {
        OpId { index: data as u32, generation: (data >> 32) as u32 }
    }
}

/// Most chunks one send hands the kernel; the rest go in the next send (after the partial
/// completion reports what was taken). Linux's `UIO_MAXIOV` is 1024; 64 covers a batch of
/// pipelined responses without a large iovec array per send. The same on every OS, so
/// callers batch alike.
pub const MAX_SEND_CHUNKS: usize = 64;

/// The bytes of one send, owned by the driver until the send completes and then handed back
/// in [`Outcome::Sent`] so the caller can reuse its allocation.
#[derive(Debug, Default)]
pub struct SendBuf {
    chunks: Vec<Bytes>,
}

impl SendBuf {
    /// An empty send buffer.
    pub fn new() -> Self {
        SendBuf { chunks: Vec::new() }
    }

    /// Appends a chunk; empty chunks are skipped.
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.chunks.push(chunk);
        }
    }

    /// Bytes still to send.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    /// Whether nothing is left to send.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Drops the first `n` bytes (what a send reported as written).
    pub fn advance(&mut self, mut n: usize) {
        let mut done = 0;
        for chunk in &mut self.chunks {
            if n == 0 {
                break;
            }
            let take = n.min(chunk.len());
            chunk.advance(take);
            n -= take;
            if chunk.is_empty() {
                done += 1;
            }
        }
        self.chunks.drain(..done);
    }

    /// The chunks still to send, in order (a TLS transport reads them to encrypt them).
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// Drops everything, keeping the allocation.
    pub fn clear(&mut self) {
        self.chunks.clear();
    }

    /// The chunks a single send may take (at most [`MAX_SEND_CHUNKS`]).
    pub(crate) fn head_chunks(&self) -> &[Bytes] {
        &self.chunks[..self.chunks.len().min(MAX_SEND_CHUNKS)]
    }
}

/// What a finished operation produced.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// A connection was accepted. `more` is false when the accept operation has ended (an
    /// error, or cancellation) and must be submitted again to keep accepting.
    Accepted {
        /// The new connection, or why accepting failed.
        result: io::Result<OwnedSocket>,
        /// Whether the accept operation is still armed.
        more: bool,
    },
    /// Bytes were received. The slice is valid only during the callback: it lives in a driver
    /// buffer that is recycled as soon as the callback returns. `Ok` with an empty slice
    /// means the peer closed its side (EOF).
    Received(io::Result<&'a [u8]>),
    /// A send finished: how many bytes the kernel took (possibly fewer than offered), and
    /// the buffer back.
    Sent {
        /// Bytes written, or the error.
        result: io::Result<usize>,
        /// The buffer that was sent, unadvanced.
        buf: SendBuf,
    },
    /// A close finished.
    Closed(io::Result<()>),
    /// A connect finished: the socket is connected, or why it is not (refused, unreachable,
    /// cancelled).
    Connected(io::Result<()>),
    /// A file-to-socket send finished: how many bytes of the file reached the socket
    /// (possibly fewer than asked; zero when the file ended early). Only drivers that send
    /// files without a user-space copy produce it (io_uring's splice, IOCP's TransmitFile).
    FileSent(io::Result<usize>),
}

/// One finished operation: the token given at submission and what it produced.
#[derive(Debug)]
pub struct Completion<'a> {
    /// The caller's token from submission.
    pub token: u64,
    /// The operation that finished.
    pub op: OpId,
    /// What it produced.
    pub outcome: Outcome<'a>,
}

/// Driver settings. The same fields on every OS; the io_uring ones are accepted and unused
/// elsewhere.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Which backend.
    pub io: crate::IoChoice,
    /// io_uring submission queue entries (completion queue is twice that). Bounds the
    /// submissions per turn, not the operations in flight.
    pub ring_entries: u32,
    /// io_uring provided receive buffers (a power of two), shared by all connections of one
    /// driver. Memory: `recv_buffers * recv_buffer_size` per driver (default 4 MiB).
    pub recv_buffers: u16,
    /// Size of each receive buffer: the most one receive returns (epoll's and IOCP's
    /// scratch buffer size too).
    pub recv_buffer_size: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            io: crate::IoChoice::Auto,
            ring_entries: 4096,
            recv_buffers: 256,
            recv_buffer_size: 16 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_drops_written_chunks_and_slices_the_partial_one() {
        let mut buf = SendBuf::new();
        buf.push(Bytes::from_static(b"abc"));
        buf.push(Bytes::new());
        buf.push(Bytes::from_static(b"defg"));
        assert_eq!(buf.len(), 7);
        buf.advance(4);
        assert_eq!(buf.head_chunks(), &[Bytes::from_static(b"efg")]);
        buf.advance(3);
        assert!(buf.is_empty());
    }

    #[test]
    fn op_id_round_trips_through_user_data() {
        let id = OpId { index: 7, generation: 0xdead_beef };
        assert_eq!(OpId::from_user_data(id.to_user_data()), id);
    }
}

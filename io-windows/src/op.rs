//! The driver's vocabulary: operation ids, send buffers, completions. The same names and
//! meanings as `peregrine-io-linux`'s `op.rs`, with Windows socket handles in place of file
//! descriptors; the shared conformance suite (`driver-conformance/`) holds both to it.

use std::io;
use std::os::windows::io::OwnedSocket;

use bytes::{Buf, Bytes};
use windows_sys::Win32::Foundation::ERROR_OPERATION_ABORTED;

/// Names one submitted operation, for [`Driver::cancel`](crate::Driver::cancel). Carries a
/// generation, so cancelling an operation that already completed can never hit a newer one
/// that reuses its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

/// Most chunks one send hands the kernel; the rest go in the next send (after the partial
/// completion reports what was taken). The same value as on Linux, so callers batch alike.
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

/// Whether `e` is the error of a cancelled operation (`ERROR_OPERATION_ABORTED`, which is
/// also `WSA_OPERATION_ABORTED`: Windows' ECANCELED).
pub fn is_canceled(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ERROR_OPERATION_ABORTED as i32)
}

/// The error a cancelled operation completes with.
pub(crate) fn canceled() -> io::Error {
    io::Error::from_raw_os_error(ERROR_OPERATION_ABORTED as i32)
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
    fn cancellation_is_recognised() {
        assert!(is_canceled(&canceled()));
        assert!(!is_canceled(&io::Error::from(io::ErrorKind::ConnectionReset)));
    }
}

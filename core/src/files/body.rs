//! A response body made of an open file's regions (and, for `multipart/byteranges`, the
//! part headers between them).
//!
//! Two ways out: HTTP/1.1 over cleartext on io_uring, or on IOCP on Windows Server, sends the
//! regions straight from the page cache to the socket (`h1/write.rs`, the driver's
//! sendfile, splice or `TransmitFile`); everything else (HTTP/2, TLS, the epoll driver,
//! client editions of Windows) reads them in [`READ_CHUNK`] pieces on the disk pool
//! (`rt::blocking`), one piece at a time, so a slow client holds one piece of memory and a
//! cold file never blocks the reactor.
//!
//! Over TLS the bytes must pass through user space to be encrypted. kTLS (the kernel
//! encrypting records after rustls' handshake) would let the splice path serve TLS too; it
//! needs the kernel's `tls` module and rustls' secret extraction, and is not done yet.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};

use crate::rt::blocking::{self, Blocking};
use crate::BodyError;

/// Bytes read per disk job when a region is read rather than spliced.
pub(crate) const READ_CHUNK: usize = 128 * 1024;

/// One piece of a file body.
#[derive(Debug, Clone)]
pub(crate) enum Part {
    /// Bytes in memory (a multipart boundary and part header).
    Bytes(Bytes),
    /// `len` bytes of the file from `offset`.
    Region {
        /// Where the region starts.
        offset: u64,
        /// Its length.
        len: u64,
    },
}

/// See the module doc.
pub(crate) struct FileBody {
    file: Arc<File>,
    parts: VecDeque<Part>,
    len: u64,
    reading: Option<(Blocking<io::Result<Bytes>>, usize)>,
}

impl FileBody {
    /// A body of `parts` of `file`.
    pub(crate) fn new(file: Arc<File>, parts: Vec<Part>) -> FileBody {
        let len = parts
            .iter()
            .map(|p| match p {
                Part::Bytes(b) => b.len() as u64,
                Part::Region { len, .. } => *len,
            })
            .sum();
        FileBody { file, parts: parts.into(), len, reading: None }
    }

    /// The bytes left to send.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The open file.
    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Takes the next part to send (for a sender that splices regions itself).
    pub(crate) fn next_part(&mut self) -> Option<Part> {
        debug_assert!(self.reading.is_none(), "parts taken after reading began");
        let part = self.parts.pop_front()?;
        self.len -= match &part {
            Part::Bytes(b) => b.len() as u64,
            Part::Region { len, .. } => *len,
        };
        Some(part)
    }

    /// Puts `part` back in front (a sender that took it and could not send it).
    pub(crate) fn push_front(&mut self, part: Part) {
        self.len += match &part {
            Part::Bytes(b) => b.len() as u64,
            Part::Region { len, .. } => *len,
        };
        self.parts.push_front(part);
    }

    /// The next chunk: a part's bytes, or the next piece of a region read on the disk pool.
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            if let Some((reading, want)) = &mut self.reading {
                let want = *want;
                let result = std::task::ready!(std::pin::Pin::new(reading).poll(cx));
                self.reading = None;
                let chunk = match result {
                    Some(Ok(b)) if b.len() == want => Ok(b),
                    // The file shrank under us: the length already sent cannot be kept.
                    Some(Ok(_)) => Err(BodyError::Io(io::ErrorKind::UnexpectedEof.into())),
                    Some(Err(e)) => Err(BodyError::Io(e)),
                    None => Err(BodyError::Io(io::Error::other("file read failed"))),
                };
                return Poll::Ready(Some(chunk));
            }
            match self.parts.front_mut() {
                None => return Poll::Ready(None),
                Some(Part::Bytes(_)) => {
                    let Some(Part::Bytes(b)) = self.parts.pop_front() else { unreachable!() };
                    self.len -= b.len() as u64;
                    return Poll::Ready(Some(Ok(b)));
                }
                Some(Part::Region { offset, len }) => {
                    let want = (*len).min(READ_CHUNK as u64) as usize;
                    let at = *offset;
                    *offset += want as u64;
                    *len -= want as u64;
                    if *len == 0 {
                        self.parts.pop_front();
                    }
                    self.len -= want as u64;
                    let file = Arc::clone(&self.file);
                    self.reading = Some((blocking::run(move || read_at(&file, at, want)), want));
                }
            }
        }
    }
}

/// Reads `len` bytes of `file` at `offset` (fewer only at the file's end).
pub(crate) fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(len);
    let mut filled = 0;
    while filled < len {
        let n = positional_read(file, &mut buf[filled..], offset + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf.freeze())
}

#[cfg(unix)]
fn positional_read(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn positional_read(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

//! HTTP/2 error codes (RFC 9113 §7) and codec errors (RFC 9113 §5.4).
//!
//! Every rule in the frame layer creates its error explicitly as connection-level
//! (`go_away`, answered with GOAWAY and a close, §5.4.1) or stream-level (`reset`,
//! answered with RST_STREAM on that stream, §5.4.2), as the h2 crate's `library_go_away` and
//! `library_reset` do. Nothing later guesses the level from the code.

use std::fmt;

use super::frame::StreamId;
use crate::h1::LimitExceeded;

/// An HTTP/2 error code (RFC 9113 §7), as carried by RST_STREAM and GOAWAY.
///
/// A newtype rather than an enum: unknown codes must be accepted and kept (§7: "Unknown or
/// unsupported error codes MUST NOT trigger any special behavior").
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reason(pub u32);

impl Reason {
    /// Graceful shutdown, or no error (0x00).
    pub const NO_ERROR: Reason = Reason(0x0);
    /// An unspecific protocol error (0x01).
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    /// An unexpected internal error (0x02).
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    /// The peer violated the flow-control protocol (0x03).
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    /// A SETTINGS frame was not acknowledged in time (0x04).
    pub const SETTINGS_TIMEOUT: Reason = Reason(0x4);
    /// A frame arrived after the stream was half-closed (0x05).
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    /// A frame had an invalid size (0x06).
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    /// The stream was refused before any processing (0x07).
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    /// The stream is no longer needed (0x08).
    pub const CANCEL: Reason = Reason(0x8);
    /// The field-compression context cannot be maintained (0x09).
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    /// A CONNECT tunnel's connection was reset or abnormally closed (0x0a).
    pub const CONNECT_ERROR: Reason = Reason(0xa);
    /// The peer is generating excessive load (0x0b).
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);
    /// The transport does not meet minimum security requirements (0x0c).
    pub const INADEQUATE_SECURITY: Reason = Reason(0xc);
    /// HTTP/1.1 must be used instead (0x0d).
    pub const HTTP_1_1_REQUIRED: Reason = Reason(0xd);

    /// The RFC name of a known code (`"PROTOCOL_ERROR"`), or `None` for an unknown one.
    pub fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 14] = [
            "NO_ERROR",
            "PROTOCOL_ERROR",
            "INTERNAL_ERROR",
            "FLOW_CONTROL_ERROR",
            "SETTINGS_TIMEOUT",
            "STREAM_CLOSED",
            "FRAME_SIZE_ERROR",
            "REFUSED_STREAM",
            "CANCEL",
            "COMPRESSION_ERROR",
            "CONNECT_ERROR",
            "ENHANCE_YOUR_CALM",
            "INADEQUATE_SECURITY",
            "HTTP_1_1_REQUIRED",
        ];
        NAMES.get(self.0 as usize).copied()
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Reason({:#x})", self.0),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A violation found while decoding frames, already sorted by what it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A connection error (RFC 9113 §5.4.1): send GOAWAY with the reason, then close. The
    /// string is a short description, suitable as GOAWAY debug data and for logs.
    Connection(Reason, &'static str),
    /// A stream error (RFC 9113 §5.4.2): send RST_STREAM on the stream with the reason; the
    /// connection goes on. The offending frame has been consumed from the buffer.
    Stream(StreamId, Reason, &'static str),
    /// A configured limit was crossed: a connection error with the given reason (for
    /// `max_frame_size`, FRAME_SIZE_ERROR). `limit` names the `peregrine_limits::Limits` field.
    Limit(Reason, LimitExceeded),
}

impl Error {
    /// The error code to send in GOAWAY or RST_STREAM.
    pub fn reason(&self) -> Reason {
        match *self {
            Error::Connection(r, _) | Error::Stream(_, r, _) | Error::Limit(r, _) => r,
        }
    }

    /// The stream to reset, or `None` when the whole connection must go away.
    pub fn stream_id(&self) -> Option<StreamId> {
        match *self {
            Error::Stream(id, _, _) => Some(id),
            Error::Connection(..) | Error::Limit(..) => None,
        }
    }

    /// Whether this ends the connection (GOAWAY) rather than one stream.
    pub fn is_connection_error(&self) -> bool {
        self.stream_id().is_none()
    }

    /// A short description for GOAWAY debug data and logs (a limit error gives the name of
    /// the limit).
    pub fn description(&self) -> &'static str {
        match *self {
            Error::Connection(_, d) | Error::Stream(_, _, d) => d,
            Error::Limit(_, l) => l.limit.name(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connection(r, d) => write!(f, "connection error {r}: {d}"),
            Error::Stream(id, r, d) => write!(f, "stream {} error {r}: {d}", id.value()),
            Error::Limit(r, l) => {
                write!(f, "connection error {r}: {} exceeded: {} > {}", l.limit, l.observed, l.max)
            }
        }
    }
}

impl std::error::Error for Error {}

/// Creates a connection error (RFC 9113 §5.4.1): the caller sends GOAWAY and closes.
pub(crate) fn go_away(reason: Reason, description: &'static str) -> Error {
    Error::Connection(reason, description)
}

/// Creates a stream error (RFC 9113 §5.4.2): the caller resets `id` and carries on.
pub(crate) fn reset(id: StreamId, reason: Reason, description: &'static str) -> Error {
    Error::Stream(id, reason, description)
}

//! Request and response bodies.
//!
//! One type serves both directions, as in most servers' app APIs: a handler receives a
//! request whose body streams from the socket with back-pressure (nothing is read until the
//! handler asks), and returns a response whose body is empty, a single `Bytes`, or a stream.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use http::StatusCode;

/// A streamed body's item.
pub type BodyChunk = Result<Bytes, BodyError>;

/// An HTTP message body.
pub struct Body {
    inner: Inner,
}

enum Inner {
    Empty,
    Full(Option<Bytes>),
    Incoming(crate::h1::Incoming),
    /// Boxed: inline, its timer and rate meter made every `Body` (and so every request and
    /// response, moved several times each) twice the size of the other variants.
    H2(Box<crate::h2::RequestBody>),
    Stream {
        stream: Pin<Box<dyn Stream<Item = BodyChunk>>>,
        len: Option<u64>,
    },
    /// Regions of an open file (static files), sent without a copy where the transport allows.
    File(Box<crate::files::body::FileBody>),
    /// No body: the upstream end of a tunnel that follows a `101` (a proxied WebSocket).
    Tunnel(Box<crate::tunnel::Tunnel>),
    /// An HTTP/2 upstream's response body, whose end may carry trailers (gRPC's status).
    Upstream(Box<crate::proxy::h2::ResponseBody>),
}

/// Why a body could not be read in full.
#[derive(Debug)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is larger than `max_request_body_size` (the server answers `413`).
    TooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// The body's framing was invalid (the server answers `400`).
    Malformed(&'static str),
    /// The client sent the body slower than `min_request_body_data_rate` (`408`).
    TooSlow,
    /// The connection ended before the body did.
    Closed,
    /// A socket error.
    Io(io::Error),
    /// An error raised by a streamed body's producer.
    Other(Box<dyn std::error::Error>),
}

impl BodyError {
    /// The status the server answers with when this error ends a request before the response
    /// started, if it is the client's fault.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            BodyError::TooLarge { .. } => Some(StatusCode::PAYLOAD_TOO_LARGE),
            BodyError::Malformed(_) => Some(StatusCode::BAD_REQUEST),
            BodyError::TooSlow => Some(StatusCode::REQUEST_TIMEOUT),
            _ => None,
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLarge { limit } => {
                write!(f, "request body larger than max_request_body_size ({limit} bytes)")
            }
            BodyError::Malformed(why) => write!(f, "malformed request body: {why}"),
            BodyError::TooSlow => {
                f.write_str("request body slower than min_request_body_data_rate")
            }
            BodyError::Closed => f.write_str("connection closed before the body ended"),
            BodyError::Io(e) => write!(f, "io error: {e}"),
            BodyError::Other(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BodyError {}

impl Body {
    /// An empty body.
    pub fn empty() -> Body {
        Body { inner: Inner::Empty }
    }

    /// A body produced by a stream. `len`, when given, is sent as Content-Length (the
    /// stream must then yield exactly that many bytes, or the connection is aborted);
    /// otherwise the body is sent chunked.
    pub fn from_stream<S>(stream: S, len: Option<u64>) -> Body
    where
        S: Stream<Item = BodyChunk> + 'static,
    {
        Body { inner: Inner::Stream { stream: Box::pin(stream), len } }
    }

    pub(crate) fn incoming(incoming: crate::h1::Incoming) -> Body {
        Body { inner: Inner::Incoming(incoming) }
    }

    pub(crate) fn h2(body: crate::h2::RequestBody) -> Body {
        Body { inner: Inner::H2(Box::new(body)) }
    }

    /// The body of a `101` response: the connection becomes a tunnel to `tunnel`.
    pub(crate) fn tunnel(tunnel: crate::tunnel::Tunnel) -> Body {
        Body { inner: Inner::Tunnel(Box::new(tunnel)) }
    }

    /// An HTTP/2 upstream's response body.
    pub(crate) fn upstream(body: crate::proxy::h2::ResponseBody) -> Body {
        Body { inner: Inner::Upstream(Box::new(body)) }
    }

    /// The trailer fields that ended the body, once it has ended (`None` when it had none,
    /// or has not ended yet). Only an HTTP/2 upstream's responses carry them so far.
    pub(crate) fn take_trailers(&mut self) -> Option<http::HeaderMap> {
        match &mut self.inner {
            Inner::Upstream(b) => b.take_trailers(),
            _ => None,
        }
    }

    /// A body of file regions.
    pub(crate) fn file(body: crate::files::body::FileBody) -> Body {
        Body { inner: Inner::File(Box::new(body)) }
    }

    /// The file body this is, if it is one (for a sender that splices it).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn take_file(&mut self) -> Option<Box<crate::files::body::FileBody>> {
        match std::mem::replace(&mut self.inner, Inner::Empty) {
            Inner::File(f) => Some(f),
            other => {
                self.inner = other;
                None
            }
        }
    }

    /// Whether this body is a tunnel (the connection is handed over after a `101`).
    pub(crate) fn is_tunnel(&self) -> bool {
        matches!(self.inner, Inner::Tunnel(_))
    }

    /// The tunnel this body carries, if it is one.
    pub(crate) fn take_tunnel(&mut self) -> Option<crate::tunnel::Tunnel> {
        match std::mem::replace(&mut self.inner, Inner::Empty) {
            Inner::Tunnel(t) => Some(*t),
            other => {
                self.inner = other;
                None
            }
        }
    }

    /// The exact length, when known in advance.
    pub fn exact_len(&self) -> Option<u64> {
        match &self.inner {
            Inner::Empty | Inner::Tunnel(_) => Some(0),
            Inner::Full(b) => Some(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Incoming(i) => i.exact_len(),
            Inner::H2(b) => b.exact_len(),
            Inner::Stream { len, .. } => *len,
            Inner::File(f) => Some(f.len()),
            Inner::Upstream(b) => b.exact_len(),
        }
    }

    /// Whether the body is already in memory (sending it reads nothing else).
    pub(crate) fn is_in_memory(&self) -> bool {
        matches!(self.inner, Inner::Empty | Inner::Full(_))
    }

    /// The whole body at once, if it is already in memory.
    pub(crate) fn take_full(&mut self) -> Option<Bytes> {
        match &mut self.inner {
            Inner::Empty => Some(Bytes::new()),
            Inner::Full(b) => Some(b.take().unwrap_or_default()),
            _ => None,
        }
    }

    /// Polls for the next chunk; `None` at the end.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<BodyChunk>> {
        match &mut self.inner {
            Inner::Empty | Inner::Tunnel(_) => Poll::Ready(None),
            Inner::Full(b) => Poll::Ready(b.take().filter(|b| !b.is_empty()).map(Ok)),
            Inner::Incoming(i) => i.poll_chunk(cx),
            Inner::H2(b) => b.poll_chunk(cx),
            Inner::Stream { stream, .. } => stream.as_mut().poll_next(cx),
            Inner::File(f) => f.poll_chunk(cx),
            Inner::Upstream(b) => b.poll_chunk(cx),
        }
    }

    /// The next chunk; `None` at the end.
    pub async fn chunk(&mut self) -> Option<BodyChunk> {
        poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// Reads the whole body into memory, failing once it passes `limit` bytes.
    pub async fn collect(mut self, limit: usize) -> Result<Bytes, BodyError> {
        if let Some(b) = self.take_full() {
            return if b.len() > limit {
                Err(BodyError::TooLarge { limit: limit as u64 })
            } else {
                Ok(b)
            };
        }
        let mut out = BytesMut::new();
        while let Some(chunk) = self.chunk().await {
            let chunk = chunk?;
            if out.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge { limit: limit as u64 });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }
}

impl Stream for Body {
    type Item = BodyChunk;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_chunk(cx)
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner {
            Inner::Empty => "empty",
            Inner::Full(_) => "full",
            Inner::Incoming(_) | Inner::H2(_) => "incoming",
            Inner::Stream { .. } => "stream",
            Inner::Tunnel(_) => "tunnel",
            Inner::File(_) => "file",
            Inner::Upstream(_) => "upstream",
        };
        f.debug_struct("Body").field("kind", &kind).field("len", &self.exact_len()).finish()
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body { inner: Inner::Full(Some(b)) }
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Body {
        Bytes::from_static(s.as_bytes()).into()
    }
}

impl From<&'static [u8]> for Body {
    fn from(s: &'static [u8]) -> Body {
        Bytes::from_static(s).into()
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Bytes::from(s).into()
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        Bytes::from(v).into()
    }
}

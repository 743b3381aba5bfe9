//! Writing a response: head, then the body as one piece or streamed, framed as the codec
//! decided (Content-Length, chunked, or until close).

use http::{HeaderMap, Method, Response, StatusCode, Version};
use peregrine_protocols::h1::{
    encode_chunk_header, encode_head_end, encode_head_start, encode_last_chunk,
    encode_response_head, response_framing, HeadStart, ResponseFraming, CHUNK_END, LAST_CHUNK,
};

use super::io::{ConnIo, Why, WriteFail};
use crate::answer_start::{self, H1Start};
use crate::body::BodyError;
use crate::exchange::{pump, BodyFailed, BodySink, PumpError};
use crate::handler::{CacheHit, Fixed};
use crate::transport::Recv;
use crate::{date, Body};
use bytes::{Bytes, BytesMut};
use peregrine_limits::Limit;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Bodies up to this size are copied next to the head (one send, one small copy); larger
/// ones are sent from their own buffer without copying.
const COPY_BODY_MAX: usize = 16 * 1024;
/// Pipelined responses are gathered into one send up to this much output.
const PIPELINE_FLUSH_AT: usize = 64 * 1024;

/// How writing a response ended.
pub(crate) enum Written {
    /// Fully written (or queued behind pipelined requests); `close` says whether the
    /// framing or headers require closing the connection now.
    Done {
        /// Close the connection now.
        close: bool,
        /// Body bytes sent (for the access log).
        body_bytes: u64,
    },
    /// The body stream failed before any byte of the response was sent: answer this status
    /// instead.
    FailedBeforeStart(http::StatusCode),
    /// The connection cannot continue (write error, body failure mid-response, panic).
    Abort(Why),
}

/// A response whose head (and body, when in memory) is in the output buffer.
pub(crate) enum Prepared {
    /// Everything is written or queued; `close` as in [`Written::Done`].
    Complete { close: bool },
    /// The body still has to be streamed.
    Streaming(StreamingBody),
}

/// A body to stream after its head.
pub(crate) struct StreamingBody {
    body: Body,
    framing: ResponseFraming,
    close: bool,
}

/// Writes the head of `response` (to a request made with `method`/`version`) into the output
/// buffer, and its body too when it is already in memory: the common case costs no await.
/// The body is taken out of `response` (a streamed one comes back in [`Prepared`]).
/// `close_unless_streaming`: close if the body is in memory (it cannot go on to read the
/// request body the connection still owes; a streamed one might, e.g. an echo).
pub(crate) fn prepare_response(
    io: &ConnIo,
    response: &mut Response<Body>,
    method: &Method,
    version: Version,
    mut close: bool,
    close_unless_streaming: bool,
) -> Prepared {
    let mut body = std::mem::take(response.body_mut());
    let (status, headers) = (response.status(), response.headers());
    if let Some(full) = body.take_full() {
        let close = close || close_unless_streaming;
        let (close, _) = put_in_memory(io, status, headers, full, method, version, close);
        return Prepared::Complete { close };
    }
    let framing = response_framing(status, method, version, body.exact_len());
    close |= framing == ResponseFraming::CloseDelimited || wants_close(headers);
    date::with(|d| {
        let mut out = io.out();
        encode_response_head(status, headers, framing, version, close, d, &mut out)
    });
    if let ResponseFraming::NoBody { .. } = framing {
        return Prepared::Complete { close };
    }
    Prepared::Streaming(StreamingBody { body, framing, close })
}

/// Puts a response whose body is in memory, head and body, into the output buffer: a
/// handler's, or a cache hit with the entry's fields as they are stored. Returns whether
/// the connection must close after it, and the body bytes written (none for `HEAD`, `204`,
/// `304`).
pub(crate) fn put_in_memory(
    io: &ConnIo,
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
    method: &Method,
    version: Version,
    close: bool,
) -> (bool, u64) {
    let start = |framing, out: &mut BytesMut| encode_head_start(status, headers, framing, out);
    let close = close || wants_close(headers);
    put_whole(io, status, body, (method, version, close), start)
}

/// [`put_in_memory`] for a cache hit: the start of its head is the entry's, formatted at the
/// first hit that needs it (once for each second of `Age`) and copied after that.
pub(crate) fn put_cache_hit(
    io: &ConnIo,
    hit: &CacheHit,
    method: &Method,
    version: Version,
    close: bool,
) -> (bool, u64) {
    let (status, fields) = (hit.status, &*hit.fields);
    let start = |framing: ResponseFraming, out: &mut BytesMut| {
        // A declared length gives `HEAD` and `GET` the same bytes.
        let (ResponseFraming::Length(_) | ResponseFraming::NoBody { content_length: Some(_) }) =
            framing
        else {
            return encode_head_start(status, fields, framing, out);
        };
        let kept = hit.entry.h1_start(&hit.fields, || {
            let mut bytes = BytesMut::new();
            let start = encode_head_start(status, fields, framing, &mut bytes);
            H1Start { start, bytes: bytes.to_vec() }
        });
        match kept {
            Some(kept) => {
                out.extend_from_slice(&kept.bytes);
                kept.start
            }
            None => encode_head_start(status, fields, framing, out),
        }
    };
    // The entry's hit fields hold no `connection` (dropped when it was stored).
    put_whole(io, status, hit.body.clone(), (method, version, close), start)
}

/// The request's method and version, and whether the connection closes after the response.
type Exchange<'a> = (&'a Method, Version, bool);

/// [`put_in_memory`], with the start of the head put by `start` (`close` already says
/// whether the response's fields ask for a close).
fn put_whole(
    io: &ConnIo,
    status: StatusCode,
    body: Bytes,
    (method, version, close): Exchange<'_>,
    start: impl FnOnce(ResponseFraming, &mut BytesMut) -> HeadStart,
) -> (bool, u64) {
    let len = body.len() as u64;
    let framing = response_framing(status, method, version, Some(len));
    let close = close || framing == ResponseFraming::CloseDelimited;
    date::with(|d| {
        let mut out = io.out();
        let head_start = start(framing, &mut out);
        encode_head_end(head_start, framing, version, close, d, &mut out);
    });
    if let ResponseFraming::NoBody { .. } = framing {
        return (close, 0);
    }
    write_in_memory(io, body);
    (close, len)
}

/// Writes a fixed answer ([`Handler::answer`](crate::Handler::answer)), sent as [`finish`]
/// decides.
pub(crate) async fn write_answer(
    io: &ConnIo,
    answer: &Fixed,
    method: &Method,
    version: Version,
    close: bool,
) -> Written {
    let body_bytes = put_answer(io, answer, method, version, close);
    if must_flush(io, close) {
        return finish(io, close, body_bytes).await;
    }
    Written::Done { close, body_bytes }
}

/// Puts a fixed answer's head and body into the output buffer. Returns the body bytes
/// written (none for `HEAD`, `204`, `304`).
pub(crate) fn put_answer(
    io: &ConnIo,
    answer: &Fixed,
    method: &Method,
    version: Version,
    close: bool,
) -> u64 {
    let len = answer.body.len() as u64;
    let framing = response_framing(answer.status, method, version, Some(len));
    date::with(|d| {
        let mut out = io.out();
        let start = put_answer_start(answer, framing, &mut out);
        encode_head_end(start, framing, version, close, d, &mut out);
    });
    match framing {
        ResponseFraming::NoBody { .. } => 0,
        _ => {
            write_in_memory(io, answer.body.clone());
            len
        }
    }
}

/// Writes a fixed answer's [`encode_head_start`], copied from this core's last one
/// (`answer_start`) when it is the same answer.
fn put_answer_start(answer: &Fixed, framing: ResponseFraming, out: &mut BytesMut) -> HeadStart {
    // A declared length gives `HEAD` and `GET` the same bytes; other framings are rare for
    // a fixed answer.
    let (ResponseFraming::Length(len) | ResponseFraming::NoBody { content_length: Some(len) }) =
        framing
    else {
        return encode_head_start(answer.status, answer.fields(), framing, out);
    };
    answer_start::with(|known| {
        if let Some(kept) = known.h1.get(answer, len) {
            out.extend_from_slice(&kept.bytes);
            return kept.start;
        }
        let at = out.len();
        let start = encode_head_start(answer.status, answer.fields(), framing, out);
        let written = &out[at..];
        if written.len() <= answer_start::MAX_KEPT {
            // The last one's room is reused when answers alternate.
            let mut bytes = known.h1.take().map(|k| k.bytes).unwrap_or_default();
            bytes.clear();
            bytes.extend_from_slice(written);
            known.h1.set(answer, len, H1Start { start, bytes });
        }
        start
    })
}

/// Puts a body that is in memory after its head: copied when small (one send, one small
/// copy), else sent from its own buffer without copying.
fn write_in_memory(io: &ConnIo, full: Bytes) {
    if full.len() <= COPY_BODY_MAX {
        io.write_small(&full);
    } else {
        io.write_shared(full);
    }
}

/// Whether pending output must go out now: unless more pipelined requests are already
/// buffered, in which case their responses join this one in a single send.
pub(crate) fn must_flush(io: &ConnIo, close: bool) -> bool {
    close || io.read.borrow().inbuf.is_empty() || io.output_len() >= PIPELINE_FLUSH_AT
}

/// Sends pending output if [`must_flush`] says so.
pub(crate) async fn finish(io: &ConnIo, close: bool, body_bytes: u64) -> Written {
    if must_flush(io, close) {
        if let Err(e) = io.flush().await {
            return write_failed(e);
        }
    }
    Written::Done { close, body_bytes }
}

/// Streams a body whose head is already in the output buffer.
pub(crate) async fn stream_body(io: &ConnIo, streaming: StreamingBody) -> Written {
    let StreamingBody { mut body, framing, close } = streaming;
    if matches!(framing, ResponseFraming::Length(_))
        && io.transport.plain_socket().is_some()
        && crate::rt::io::sends_files()
    {
        if let Some(file) = body.take_file() {
            return splice_body(io, *file, close).await;
        }
    }
    let declared = match framing {
        ResponseFraming::Length(n) => Some(n),
        _ => None,
    };
    let chunked = framing == ResponseFraming::Chunked;
    let pumped = pump(body, declared, &mut Sink { io, chunked, watch: None, alive: false }).await;
    if let (true, Ok(p)) = (chunked, &pumped) {
        match &p.trailers {
            // A trailer section after the last chunk (RFC 9112 §7.1.2); a response framed
            // by Content-Length has nowhere to put them.
            Some(trailers) => encode_last_chunk(trailers, &mut io.out()),
            None => io.write_small(LAST_CHUNK),
        }
    }
    pumped_body(io, pumped.map(|p| p.bytes), close, 0).await
}

/// How a pumped body ended, as [`Written`] (`before`: body bytes sent before the pump).
async fn pumped_body(
    io: &ConnIo,
    pumped: Result<u64, PumpError<WriteFail>>,
    close: bool,
    before: u64,
) -> Written {
    match pumped {
        Ok(written) => finish(io, close, before + written).await,
        Err(PumpError::Body(BodyFailed::Error(e))) => body_failed(io, e),
        Err(PumpError::Body(failed)) => Written::Abort(Why::uncounted(failed.reason())),
        Err(PumpError::Sink(e)) => write_failed(e),
    }
}

/// Sends a file body with its regions spliced (io_uring) or transmitted (IOCP) from the page
/// cache to the socket, with no copy through user space; the bytes between them (multipart
/// headers) as usual.
async fn splice_body(io: &ConnIo, mut file: crate::files::body::FileBody, close: bool) -> Written {
    use crate::files::body::Part;
    let mut sent = 0u64;
    let mut rate = io.response_rate();
    while let Some(part) = file.next_part() {
        match part {
            Part::Bytes(b) => {
                sent += b.len() as u64;
                io.write_shared(b);
            }
            Part::Region { mut offset, mut len } => {
                // The head (and any part header) goes first.
                if io.has_output() {
                    if let Err(e) = io.flush().await {
                        return write_failed(e);
                    }
                }
                while len > 0 {
                    match io.send_file(file.file(), offset, len, &mut rate).await {
                        Ok(0) => {
                            return Written::Abort(Why::uncounted("file shorter than its length"))
                        }
                        Ok(n) => {
                            offset += n as u64;
                            len -= n as u64;
                            sent += n as u64;
                        }
                        // No pipe to be had (the per-user pipe budget is spent): the rest
                        // is read on the disk pool and sent as bytes.
                        Err(WriteFail::Io(e)) if e.kind() == io::ErrorKind::Unsupported => {
                            file.push_front(Part::Region { offset, len });
                            let rest = file.len();
                            let mut sink = Sink { io, chunked: false, watch: None, alive: false };
                            let pumped = pump(Body::file(file), Some(rest), &mut sink)
                                .await
                                .map(|p| p.bytes);
                            return pumped_body(io, pumped, close, sent).await;
                        }
                        Err(e) => return write_failed(e),
                    }
                }
            }
        }
    }
    finish(io, close, sent).await
}

/// An HTTP/1 response body's way out: chunk framing when chunked, then a flush per chunk
/// (the flush's own rate check is the back-pressure).
///
/// While the body has nothing to send, the client's socket is watched for EOF (nginx does
/// the same for proxied requests), once the request body has been read: a client that
/// leaves ends the response at once, instead of when the body next writes.
struct Sink<'a> {
    io: &'a ConnIo,
    chunked: bool,
    /// The receive watching for the client's EOF (started with an empty buffer, so
    /// cancelling it loses nothing).
    watch: Option<Recv<'a>>,
    /// The client sent more bytes (a pipelined request): it is there, stop watching.
    alive: bool,
}

impl Drop for Sink<'_> {
    fn drop(&mut self) {
        // A receive that completed but was not yet polled holds the client's next bytes:
        // keep them for the next request rather than dropping them with the operation.
        let Some(mut watch) = self.watch.take() else { return };
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready((buf, Ok(n))) = Pin::new(&mut watch).poll(&mut cx) {
            if n > 0 {
                self.io.read.borrow_mut().inbuf = buf;
            }
        }
    }
}

impl BodySink for Sink<'_> {
    type Error = WriteFail;

    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<WriteFail> {
        if self.alive {
            return Poll::Pending;
        }
        if self.watch.is_none() {
            let read = self.io.read.borrow();
            // Only once the request body is read (its reader owns the socket's receive
            // side until then) and nothing is buffered (the client is evidently there).
            if read.decoder.is_some() || !read.inbuf.is_empty() {
                return Poll::Pending;
            }
            drop(read);
            self.watch = Some(self.io.transport.recv(BytesMut::new()));
        }
        let watch = self.watch.as_mut().expect("set above");
        let (buf, result) = std::task::ready!(Pin::new(watch).poll(cx));
        self.watch = None;
        match result {
            Ok(0) => Poll::Ready(WriteFail::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {
                self.io.read.borrow_mut().inbuf = buf;
                self.alive = true;
                Poll::Pending
            }
            Err(e) => Poll::Ready(WriteFail::Io(e)),
        }
    }

    async fn chunk(&mut self, chunk: Bytes) -> Result<(), WriteFail> {
        if self.chunked {
            encode_chunk_header(chunk.len(), &mut self.io.out());
            self.io.write_shared(chunk);
            self.io.write_small(CHUNK_END);
        } else {
            self.io.write_shared(chunk);
        }
        self.io.flush().await
    }
}

fn body_failed(io: &ConnIo, e: BodyError) -> Written {
    match e.status() {
        Some(status) if !io.response_started.get() => {
            io.out.borrow_mut().clear();
            io.queued.borrow_mut().clear();
            Written::FailedBeforeStart(status)
        }
        _ => Written::Abort(Why::uncounted("response body failed")),
    }
}

pub(crate) fn write_failed(e: WriteFail) -> Written {
    Written::Abort(why_failed(e))
}

/// Why a connection whose write failed ends.
pub(crate) fn why_failed(e: WriteFail) -> Why {
    match e {
        WriteFail::TooSlow => Why::limit(Limit::MinResponseDataRate),
        WriteFail::Io(e) => {
            tracing::debug!(error = %e, "write failed");
            Why::uncounted("write error")
        }
    }
}

/// Whether the handler asked for the connection to close.
fn wants_close(headers: &http::HeaderMap) -> bool {
    headers.get_all(http::header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    })
}

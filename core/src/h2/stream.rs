//! One stream's task: run the handler, then queue the response on the codec.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, Version};
use peregrine_limits::{DataRate, Limit};
use peregrine_protocols::content::{response_content, Content};
use peregrine_protocols::h2::server::ServerFields;
use peregrine_protocols::h2::server::{Connection, StreamGone as Gone};
use peregrine_protocols::h2::{Reason, RequestHead, ResponseStart, StreamId};

use super::body::RequestBody;
use super::conn::Shared;
use crate::exchange::{self, BodyFailed, BodySink, Panicked, PumpError, Record, Stage};
use crate::handler::{Answer, CacheHit, Fields, Fixed};
use crate::metrics::Rejection;
use crate::rt::executor;
use crate::rt::timer::Timer;
use crate::{answer_start, date, rt, Body, ConnectionInfo, Handler, Head};

/// What [`offer`] could not end: the rest runs in the stream's task ([`start`]).
pub(crate) struct Started {
    head: Box<RequestHead>,
    end_stream: bool,
    record: Record,
    /// The connection's details, with the real client when a trusted proxy names it.
    info: ConnectionInfo,
    stage: Stage,
}

/// Begins the exchange for a new request on stream `id`, and ends it where that takes no
/// waiting (as HTTP/1's `offer` does): a request without a body, under no rate limit, that
/// the handler answers from its head with a fixed response or one whose body is in memory
/// and within `max_stream_send_buffer` is queued on the codec here, on the connection task.
/// Such a stream costs no task, no slot and no future (h2c `/plaintext` spent about 900
/// instructions a request on them). Anything else comes back as a [`Started`].
pub(crate) fn offer<H: Handler>(
    shared: &Shared,
    handler: &H,
    id: StreamId,
    head: Box<RequestHead>,
    end_stream: bool,
) -> Option<Started> {
    let limits = &shared.settings.limits;
    let log = shared.settings.access_log.as_ref();
    let mut record =
        Record::start(&head.method, &head.target, Version::HTTP_2, shared.info.info().peer, log);
    if let (Some(n), Some(max)) = (head.content_length, limits.max_request_body_size) {
        if n > max {
            crate::metrics::count(|m| m.rejected(Rejection::Limit(Limit::MaxRequestBodySize)));
            respond_error(shared, id, StatusCode::PAYLOAD_TOO_LARGE);
            return None;
        }
    }
    let forwarded_for = head.headers.get_all(&crate::trust::X_FORWARDED_FOR).map(|v| v.as_bytes());
    let info = shared.settings.real_client(shared.info.info(), forwarded_for);
    record.note_client(info.client);
    let admission = shared.clients.check(info.client);
    if let Some(stage) = Stage::admitted(admission, end_stream) {
        return Some(Started { head, end_stream, record, info, stage });
    }
    // No `Request` is built, and the fields never go into a `HeaderMap`.
    let view = Head::new(&head.method, &head.target, Version::HTTP_2, Fields::List(&head.headers));
    let max = limits.h2.max_stream_send_buffer;
    let whole = |len: Option<u64>| len.is_some_and(|n| n <= max as u64);
    // A CONNECT's 2xx opens a tunnel, which is not a whole response.
    let connect = head.method == Method::CONNECT;
    let (status, bytes) = match exchange::answer(handler, &view) {
        Ok(Some(Answer::Fixed(fixed))) if whole(Some(fixed.body.len() as u64)) => {
            (fixed.status, queue_fixed(shared, id, &fixed, &head.method))
        }
        Ok(Some(Answer::Response(mut response)))
            if !connect && response.body().is_in_memory() && whole(response.body().exact_len()) =>
        {
            record.note_upstream(&response);
            let body = response.body_mut().take_full().unwrap_or_default();
            let status = response.status();
            (status, queue_whole(shared, id, status, response.headers(), body, &head.method))
        }
        Ok(Some(Answer::CacheHit(hit))) if whole(Some(hit.body.len() as u64)) => {
            (hit.status, queue_cache_hit(shared, id, &hit, &head.method))
        }
        // The 500 goes on this stream only: the connection's other streams go on.
        Err(Panicked) => {
            respond_error(shared, id, StatusCode::INTERNAL_SERVER_ERROR);
            return None;
        }
        answered => {
            let stage = Stage::Answered(answered);
            return Some(Started { head, end_stream, record, info, stage });
        }
    };
    if let Some(bytes) = bytes {
        record.finish(status, bytes, log);
    }
    None
}

/// Runs what [`offer`] began on stream `id`: polled once right here, on the connection
/// task, and given a task of its own only if it has to wait. Wakers it registered during
/// that first poll are the connection task's: they cause at most a spurious wake of it, and
/// the stream's own task re-registers when it first runs.
pub(crate) fn start<H: Handler>(
    shared: Rc<Shared>,
    handler: Rc<H>,
    id: StreamId,
    started: Started,
    cx: &mut Context<'_>,
) {
    // One allocation per stream: the handler's future is built inside the task, which owns
    // what it needs (an `async` block borrowing them would need the work boxed apart).
    let task_shared = Rc::clone(&shared);
    let mut work = rt::boxed(|| StreamTask {
        shared: Rc::clone(&shared),
        id,
        work: run(task_shared, handler, id, started),
    });
    if work.as_mut().poll(cx).is_pending() {
        executor::spawn(work);
    }
}

/// Marks the connection task's handling of the codec's events, until dropped (also if it
/// unwinds, so the flag can never stay set): a stream's work done there need not wake the
/// connection task, which transmits right after.
pub(crate) struct OnConnTask<'a>(&'a Shared);

impl<'a> OnConnTask<'a> {
    pub(crate) fn enter(shared: &'a Shared) -> OnConnTask<'a> {
        shared.on_conn_task.set(true);
        OnConnTask(shared)
    }
}

impl Drop for OnConnTask<'_> {
    fn drop(&mut self) {
        self.0.on_conn_task.set(false);
    }
}

pin_project_lite::pin_project! {
    /// A stream's task: runs `work` until it finishes or the stream is reset, then lets the
    /// stream go (its slot, the running count). A reset stops the handler wherever it
    /// waits: the task is done and drops `work` with it.
    struct StreamTask<F> {
        shared: Rc<Shared>,
        id: StreamId,
        #[pin]
        work: F,
    }
}

impl<F: Future<Output = ()>> Future for StreamTask<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let (shared, id) = (&**this.shared, *this.id);
        let reset = shared.with_slot(id, |slot| {
            rt::store_waker(&mut slot.task_waker, cx);
            slot.reset
        });
        if reset == Some(false) && this.work.poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Finished or reset. Never polled again: the executor drops a finished task, and
        // `start` drops one that finished on its first poll.
        shared.remove_slot(id);
        crate::metrics::count(|m| m.h2_stream_closed());
        shared.running.set(shared.running.get() - 1);
        shared.wake_conn();
        Poll::Ready(())
    }
}

async fn run<H: Handler>(shared: Rc<Shared>, handler: Rc<H>, id: StreamId, started: Started) {
    let (shared, handler) = (&shared, &*handler);
    let log = shared.settings.access_log.as_ref();
    let Started { head, end_stream, mut record, info, stage } = started;
    let RequestHead { method, target, headers, content_length, protocol } = *head;
    let view =
        end_stream.then(|| Head::new(&method, &target, Version::HTTP_2, Fields::List(&headers)));
    let (over_rate, answered) = stage.settle(handler, view).await;
    let mut response = match answered {
        Ok(Some(Answer::Fixed(fixed))) => {
            let Some(bytes) = write_answer(shared, id, &fixed, &method).await else { return };
            return record.finish(fixed.status, bytes, log);
        }
        Ok(Some(Answer::Response(response))) => response,
        Ok(Some(Answer::CacheHit(hit))) => hit.into_response(),
        // The 500 goes on this stream only: the connection's other streams go on.
        Err(Panicked) => return respond_error(shared, id, StatusCode::INTERNAL_SERVER_ERROR),
        Ok(None) => {
            let body = if end_stream {
                Body::empty()
            } else if protocol.is_some() {
                Body::h2(RequestBody::tunnel(Rc::clone(shared), id))
            } else {
                Body::h2(RequestBody::new(Rc::clone(shared), id, content_length))
            };
            let certificates = shared.info.client_certificates();
            let headers = headers.into_map();
            let mut request = exchange::request(
                method,
                target.into_uri(),
                Version::HTTP_2,
                headers,
                body,
                certificates,
            );
            if let Some(protocol) = protocol {
                request.extensions_mut().insert(exchange::ConnectProtocol::new(protocol));
            }
            match over_rate {
                // Per stream: the connection and its other streams go on.
                Some(too_many) => too_many,
                None => match exchange::call(handler, request, &info).await {
                    Ok(r) => r,
                    Err(Panicked) => {
                        return respond_error(shared, id, StatusCode::INTERNAL_SERVER_ERROR)
                    }
                },
            }
        }
    };
    if let Some(Some((status, _why))) = shared.with_slot(id, |s| s.body_failure.take()) {
        // The request body failed (too large, too slow): the client's mistake decides the
        // answer, as for HTTP/1.
        return respond_error(shared, id, status);
    }
    let status = response.status();
    record.note_upstream(&response);
    let Some(bytes) = write_response(shared, id, &mut response, record.method()).await else {
        return;
    };
    record.finish(status, bytes, log);
}

/// Answers `status` with an empty body. A request body the client may still be sending is
/// stopped by the codec (RST_STREAM NO_ERROR after a complete response, RFC 9113 §8.1).
fn respond_error(shared: &Shared, id: StreamId, status: StatusCode) {
    let mut conn = shared.conn.borrow_mut();
    let sent = date::with(|date| {
        let fields = ServerFields { date, content_length: Some(0) };
        conn.send_response_with(id, status, &HeaderMap::new(), Some(fields), true)
    });
    if sent.is_ok() {
        crate::metrics::count(|m| m.response(status, None));
    }
    shared.wake_conn();
}

/// How much of a response is queued once its head is.
enum Queued {
    /// All of it: this many body bytes.
    Done(u64),
    /// A body too large to leave queued unwatched: wait (under the rate) until it has left.
    Large(u64),
    /// A streamed body still to read and queue.
    Streaming(Body, Option<u64>),
}

/// Queues the response head, and the body when it is in memory, without waiting: the
/// common case (a small in-memory body) costs the stream task no await and no allocation.
fn queue_response(
    shared: &Shared,
    id: StreamId,
    response: &mut Response<Body>,
    method: &Method,
) -> Option<Queued> {
    // Borrowed, not moved: a response is a few hundred bytes, copied at each hand-over.
    let mut body = std::mem::take(response.body_mut());
    let (status, headers) = (response.status(), response.headers());
    if *method == Method::CONNECT && status.is_success() {
        // RFC 9113 §8.5: after a 2xx the stream's DATA frames are the tunnel's bytes, with
        // no length (HTTP/1's tunnel leaves HTTP instead, hence the shared rule's "none").
        queue_head(shared, id, status, headers, None, false)?;
        return Some(Queued::Streaming(body, None));
    }
    if let Some(full) = body.take_full() {
        let n = queue_whole(shared, id, status, headers, full, method)?;
        return Some(queued_whole(shared, n));
    }
    let (no_body, len) = content_of(status, method, body.exact_len());
    queue_head(shared, id, status, headers, len, no_body)?;
    Some(if no_body { Queued::Done(0) } else { Queued::Streaming(body, len) })
}

/// Queues a fixed answer ([`Handler::answer`](crate::Handler::answer)) as
/// [`queue_response`] queues a response with its body in memory.
fn queue_answer(shared: &Shared, id: StreamId, answer: &Fixed, method: &Method) -> Option<Queued> {
    let n = queue_fixed(shared, id, answer, method)?;
    Some(queued_whole(shared, n))
}

/// [`queue_whole`] for a fixed answer: its block starts from this core's last one
/// (`answer_start`) when it is the same answer.
fn queue_fixed(shared: &Shared, id: StreamId, answer: &Fixed, method: &Method) -> Option<u64> {
    let body = &answer.body;
    let (no_body, len) = content_of(answer.status, method, Some(body.len() as u64));
    let Some(len) = len else {
        return queue_whole(shared, id, answer.status, answer.fields(), body.clone(), method);
    };
    let body = (!no_body).then(|| body.clone());
    let send = |conn: &mut Connection, date: &[u8], body| {
        answer_start::with(|known| {
            if let Some(start) = known.h2.get(answer, len) {
                return conn.send_response_from(id, start, date, body);
            }
            let start = ResponseStart::encode(answer.status, answer.fields(), Some(len));
            let sent = conn.send_response_from(id, &start, date, body);
            if start.len() <= answer_start::MAX_KEPT {
                known.h2.set(answer, len, start);
            }
            sent
        })
    };
    queue_started(shared, send, body)
}

/// [`queue_whole`] for a cache hit: its block starts from the entry's encoding, made at the
/// first hit that needs it (once for each second of `Age`).
fn queue_cache_hit(shared: &Shared, id: StreamId, hit: &CacheHit, method: &Method) -> Option<u64> {
    let (status, fields, body) = (hit.status, &*hit.fields, &hit.body);
    let (no_body, len) = content_of(status, method, Some(body.len() as u64));
    let Some(len) = len else {
        return queue_whole(shared, id, status, fields, body.clone(), method);
    };
    let start =
        hit.entry.h2_start(&hit.fields, || ResponseStart::encode(status, fields, Some(len)));
    let start = start.unwrap_or_else(|| ResponseStart::encode(status, fields, Some(len)));
    let send =
        |conn: &mut Connection, date: &[u8], body| conn.send_response_from(id, &start, date, body);
    queue_started(shared, send, (!no_body).then(|| body.clone()))
}

/// Queues a whole response that `send` sends from a [`ResponseStart`] with `body` (none:
/// the head ends the stream): the body bytes queued, or `None` if the stream is gone.
fn queue_started(
    shared: &Shared,
    send: impl FnOnce(&mut Connection, &[u8], Option<Bytes>) -> Result<(), Gone>,
    body: Option<Bytes>,
) -> Option<u64> {
    let n = body.as_ref().map_or(0, |b| b.len() as u64);
    date::with(|date| send(&mut shared.conn.borrow_mut(), date, body)).ok()?;
    shared.wake_conn();
    Some(n)
}

/// Queues a response whose body is in memory, head and body: the body bytes queued, or
/// `None` if the stream is gone.
fn queue_whole<'f>(
    shared: &Shared,
    id: StreamId,
    status: StatusCode,
    headers: impl IntoIterator<Item = (&'f http::HeaderName, &'f http::HeaderValue)>,
    body: Bytes,
    method: &Method,
) -> Option<u64> {
    let (no_body, len) = content_of(status, method, Some(body.len() as u64));
    queue_head(shared, id, status, headers, len, no_body)?;
    if no_body {
        return Some(0);
    }
    let n = body.len() as u64;
    shared.conn.borrow_mut().send_data(id, body, true).ok()?;
    Some(n)
}

/// What is left to do for a whole body of `n` bytes once queued: nothing when it sits
/// within `max_stream_send_buffer` (bounded without watching it).
fn queued_whole(shared: &Shared, n: u64) -> Queued {
    if n <= shared.settings.limits.h2.max_stream_send_buffer as u64 {
        Queued::Done(n)
    } else {
        Queued::Large(n)
    }
}

/// Whether a response has no body, and the length it advertises: the shared content rule
/// (with the body's own length, whatever content-length the handler set: the codec owns
/// that field).
fn content_of(status: StatusCode, method: &Method, body_len: Option<u64>) -> (bool, Option<u64>) {
    match response_content(status, method, body_len) {
        Content::None { content_length } => (true, content_length),
        Content::Body { length } => (length == Some(0), length),
    }
}

/// Queues a response head; `no_body` ends the stream with it.
fn queue_head<'f>(
    shared: &Shared,
    id: StreamId,
    status: StatusCode,
    headers: impl IntoIterator<Item = (&'f http::HeaderName, &'f http::HeaderValue)>,
    len: Option<u64>,
    no_body: bool,
) -> Option<()> {
    let mut conn = shared.conn.borrow_mut();
    // `date`, `server` and `content-length` are added by the codec straight into the HPACK
    // block: no insertion into (and growth of) the handler's map, no allocation for values.
    let sent = date::with(|date| {
        let fields = ServerFields { date, content_length: len };
        conn.send_response_with(id, status, headers, Some(fields), no_body)
    });
    sent.ok()?;
    shared.wake_conn();
    Some(())
}

/// Queues the response, then follows it while its queue drains. Returns the body bytes
/// queued, or `None` if the stream went away.
async fn write_response(
    shared: &Shared,
    id: StreamId,
    response: &mut Response<Body>,
    method: &Method,
) -> Option<u64> {
    let queued = queue_response(shared, id, response, method)?;
    follow(shared, id, queued).await
}

/// [`write_response`] for a fixed answer.
async fn write_answer(
    shared: &Shared,
    id: StreamId,
    answer: &Fixed,
    method: &Method,
) -> Option<u64> {
    let queued = queue_answer(shared, id, answer, method)?;
    follow(shared, id, queued).await
}

/// Follows a queued response while its queue drains: the body bytes queued, or `None` if the
/// stream went away.
async fn follow(shared: &Shared, id: StreamId, queued: Queued) -> Option<u64> {
    match queued {
        Queued::Done(n) => Some(n),
        // Rare next to small bodies; boxed so their state does not enlarge every stream task.
        Queued::Large(n) => rt::boxed(|| wait_sent(shared, id)).await.then_some(n),
        Queued::Streaming(body, len) => rt::boxed(|| stream_body(shared, id, body, len)).await,
    }
}

/// A client that never opens its flow-control window would keep a stream's queue full
/// forever: whenever the queue is full, it must drain at `min_response_data_rate` or the
/// stream is reset (memory per stream is capped by `max_stream_send_buffer` regardless).
fn response_rate(shared: &Shared) -> Option<DataRate> {
    shared.settings.limits.min_response_data_rate.map(DataRate::new)
}

/// Waits until a body queued whole (shared, not copied) has left.
async fn wait_sent(shared: &Shared, id: StreamId) -> bool {
    drain_below(shared, id, 1, &mut response_rate(shared), &Timer::new()).await
}

/// Reads a streamed body and queues it, never more than `max_stream_send_buffer` ahead of
/// what flow control lets out. A body that fails, panics or breaks its declared length
/// resets the stream (INTERNAL_ERROR).
async fn stream_body(shared: &Shared, id: StreamId, body: Body, len: Option<u64>) -> Option<u64> {
    let mut sink = StreamSink {
        shared,
        id,
        rate: response_rate(shared),
        timer: Timer::new(),
        max_buffered: shared.settings.limits.h2.max_stream_send_buffer,
    };
    match exchange::pump(body, len, &mut sink).await {
        Ok(pumped) => {
            let mut conn = shared.conn.borrow_mut();
            match pumped.trailers {
                Some(trailers) => conn.send_trailers(id, trailers).ok()?,
                None => conn.send_data(id, Bytes::new(), true).ok()?,
            }
            drop(conn);
            shared.wake_conn();
            Some(pumped.bytes)
        }
        Err(PumpError::Body(failed)) => {
            if let BodyFailed::Error(e) = &failed {
                tracing::debug!(error = %e, "response body failed");
            }
            tracing::debug!(stream = id.value(), reason = failed.reason(), "resetting the stream");
            shared.conn.borrow_mut().reset_stream(id, Reason::INTERNAL_ERROR);
            shared.wake_conn();
            None
        }
        Err(PumpError::Sink(StreamGone)) => None,
    }
}

/// The stream is gone (reset, or too slow to drain and reset by [`drain_below`]).
struct StreamGone;

/// An HTTP/2 response body's way out: DATA queued on the codec, then back-pressure (the
/// next chunk is read only once the stream's queue is under `max_stream_send_buffer`).
struct StreamSink<'a> {
    shared: &'a Shared,
    id: StreamId,
    rate: Option<DataRate>,
    timer: Timer,
    max_buffered: usize,
}

impl BodySink for StreamSink<'_> {
    type Error = StreamGone;

    async fn chunk(&mut self, chunk: Bytes) -> Result<(), StreamGone> {
        self.shared.conn.borrow_mut().send_data(self.id, chunk, false).map_err(|_| StreamGone)?;
        self.shared.wake_conn();
        let (shared, id, below) = (self.shared, self.id, self.max_buffered);
        if drain_below(shared, id, below, &mut self.rate, &self.timer).await {
            Ok(())
        } else {
            Err(StreamGone)
        }
    }
}

/// Waits until fewer than `below` bytes are queued on the stream. While waiting, the queue
/// must drain at `rate`; if it does not, the stream is reset and this returns `false`.
async fn drain_below(
    shared: &Shared,
    id: StreamId,
    below: usize,
    rate: &mut Option<DataRate>,
    timer: &Timer,
) -> bool {
    let mut last: Option<usize> = None;
    let drained = poll_fn(|cx| {
        let Some(n) = shared.conn.borrow().stream_buffered(id) else {
            return Poll::Ready(true); // gone: the caller's next send fails
        };
        if let (Some(before), Some(r)) = (last, rate.as_mut()) {
            if n < before {
                r.end_wait(rt::now(), (before - n) as u64);
                last = None;
            }
        }
        if n < below {
            timer.set(None);
            return Poll::Ready(true);
        }
        if last.is_none() {
            last = Some(n);
            timer.set(rate.as_mut().map(|r| r.start_wait(rt::now())));
        }
        if timer.poll_fired(cx).is_ready() {
            return Poll::Ready(false);
        }
        shared.with_slot(id, |slot| rt::store_waker(&mut slot.capacity_waker, cx));
        Poll::Pending
    })
    .await;
    if !drained {
        tracing::debug!(stream = id.value(), "h2 client reads slower than min_response_data_rate");
        crate::metrics::count(|m| m.rejected(Rejection::Limit(Limit::MinResponseDataRate)));
        shared.conn.borrow_mut().reset_stream(id, Reason::CANCEL);
        shared.wake_conn();
    }
    drained
}

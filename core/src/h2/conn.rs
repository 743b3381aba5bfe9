//! The connection task and the state it shares with its stream tasks.

use crate::sys::OwnedSocket;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::sys::driver::SendBuf;
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use peregrine_limits::{DataRate, Limit};
use peregrine_protocols::h2::server::{Connection, Event};
use peregrine_protocols::h2::{StreamId, StreamMap};
use tracing::debug;

use super::stream;
use crate::clients::ClientPolicy;
use crate::h1::Settings;
use crate::metrics::Rejection;
use crate::rt;
use crate::rt::timer::Timer;
use crate::transport::{self, Transport};
use crate::ConnectionInfo;
use crate::Handler;

/// A stream as the connection task and the stream's own task share it.
#[derive(Default)]
pub(crate) struct Slot {
    /// Request body chunks received and not yet read by the handler.
    pub(crate) body: VecDeque<Bytes>,
    /// The request body ended (END_STREAM or trailers).
    pub(crate) body_done: bool,
    /// The stream was reset (by the client, or after a stream error): stop.
    pub(crate) reset: bool,
    /// The handler's body reader waits for data.
    pub(crate) body_waker: Option<Waker>,
    /// The stream task, to wake on reset.
    pub(crate) task_waker: Option<Waker>,
    /// The stream task while it waits for its send queue to drain.
    pub(crate) capacity_waker: Option<Waker>,
    /// A request body failure (too large, too slow) that decides the answer.
    pub(crate) body_failure: Option<(StatusCode, &'static str)>,
}

/// What the connection task and its stream tasks share.
pub(crate) struct Shared {
    pub(crate) conn: RefCell<Connection>,
    pub(crate) slots: RefCell<StreamMap<Slot>>,
    conn_waker: RefCell<Option<Waker>>,
    pub(crate) settings: Rc<Settings>,
    /// The connection's addresses and transport, for the record and the handlers.
    pub(crate) info: crate::conn::ConnectionDetails,
    /// The listener's per-client tables (the request rate).
    pub(crate) clients: Arc<ClientPolicy>,
    /// Streams whose task has not finished yet (the connection ends only after them).
    pub(crate) running: Cell<usize>,
    /// A stream's first poll runs on the connection task: waking it then is pointless (it
    /// goes on to transmit right after).
    pub(crate) on_conn_task: Cell<bool>,
}

impl Shared {
    /// Wakes the connection task: the codec has new output or the windows changed.
    pub(crate) fn wake_conn(&self) {
        if self.on_conn_task.get() {
            return;
        }
        if let Some(w) = self.conn_waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }

    /// Runs `f` on a stream's slot, if it still exists.
    pub(crate) fn with_slot<R>(&self, id: StreamId, f: impl FnOnce(&mut Slot) -> R) -> Option<R> {
        self.slots.borrow_mut().get_mut(&id).map(f)
    }

    /// Forgets a stream's slot, handing unread body bytes back to flow control.
    pub(crate) fn remove_slot(&self, id: StreamId) {
        let Some(slot) = self.slots.borrow_mut().remove(&id) else { return };
        // A body reader outside the stream's task (a tunnel's copy) learns the stream is gone.
        if let Some(w) = &slot.body_waker {
            w.wake_by_ref();
        }
        let unread: usize = slot.body.iter().map(Bytes::len).sum();
        if unread > 0 {
            self.conn.borrow_mut().release_capacity(id, unread);
            self.wake_conn();
        }
    }

    /// Wakes the stream tasks waiting for their send queue to drain (output just left).
    fn wake_capacity_waiters(&self) {
        for slot in self.slots.borrow_mut().values_mut() {
            if let Some(w) = slot.capacity_waker.take() {
                w.wake();
            }
        }
    }

    /// Wakes every stream task (the connection is ending).
    fn wake_all_tasks(&self) {
        for slot in self.slots.borrow_mut().values_mut() {
            for w in [slot.task_waker.take(), slot.capacity_waker.take()].into_iter().flatten() {
                w.wake();
            }
        }
    }
}

/// Serves one HTTP/2 connection until it closes. `initial` holds bytes already received
/// (for h2c, the preface the listener sniffed).
///
/// A plain function returning an `async move` block, not an `async fn`: an async fn copies
/// its arguments into locals and its future keeps room for both copies
/// (rust-lang/rust#62958). This future is most of what an idle connection costs.
pub(crate) fn serve<H: Handler>(
    fd: OwnedSocket,
    transport: Transport,
    initial: BytesMut,
    handler: Rc<H>,
    settings: Rc<Settings>,
    admitted: crate::conn::Admitted,
    info: ConnectionInfo,
) -> impl Future<Output = ()> {
    debug!(tls = info.tls, peer = ?info.peer, "HTTP/2 connection");
    let config = Arc::clone(&settings.h2);
    let shared = Rc::new(Shared {
        conn: RefCell::new(Connection::new(config, rt::now())),
        slots: RefCell::new(StreamMap::default()),
        conn_waker: RefCell::new(None),
        settings,
        info: crate::conn::ConnectionDetails::of(info, transport.client_certificates()),
        clients: Arc::clone(admitted.clients()),
        running: Cell::new(0),
        on_conn_task: Cell::new(false),
    });
    async move {
        Driver { shared: &shared, transport: &transport, handler: &handler, inbuf: Some(initial) }
            .run()
            .await;
        debug!(streams = shared.conn.borrow().open_streams(), "h2 connection ends");
        // Stream tasks still running see their slots gone and stop.
        for slot in shared.slots.borrow_mut().values_mut() {
            slot.reset = true;
        }
        shared.wake_all_tasks();
        let deadline = rt::now() + std::time::Duration::from_secs(1);
        rt::timer::timeout(deadline, transport.close_notify()).await;
        drop(transport);
        rt::io::close(fd).await;
        drop(admitted);
    }
}

/// How long a connection with nothing to send stays quiet before its stream tables and
/// queues shrink ([`Driver::shed_spare_room`]). A busy connection waits for its next read
/// many times a second; shrinking at each of those waits made every burst of streams grow
/// them again (about 150 instructions a request on h2c with 100 streams in flight).
const SHED_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// Where a connection's spare room (stream tables, queues) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spare {
    /// Kept: the connection received or sent something since it last shrank.
    Held,
    /// To shrink at this time, if it stays quiet.
    SheddingAt(Instant),
    /// Given back; nothing to do until the connection receives again.
    Shed,
}

/// The connection task's state.
struct Driver<'a, H> {
    shared: &'a Rc<Shared>,
    transport: &'a Transport,
    handler: &'a Rc<H>,
    inbuf: Option<BytesMut>,
}

impl<'a, H: Handler> Driver<'a, H> {
    /// The connection's loop. Not an `async fn`: the loop's state lives in the `poll_fn`
    /// closure that owns it, instead of in a generator plus a closure of references to it.
    fn run(mut self) -> impl Future<Output = ()> + 'a {
        let timer = Timer::new();
        // Idle: a graceful shutdown fires it, which is how this task learns of one.
        timer.set_idle(true);
        let min_rate = self.shared.settings.limits.min_response_data_rate;
        let mut recv: Option<transport::Recv<'a>> = None;
        // The send in flight, with the min-response-rate meter and the deadline by which it
        // must complete.
        let mut send: Option<(transport::Send<'a>, Option<(DataRate, Instant)>)> = None;
        let mut pending = SendBuf::new();
        let mut eof = false;
        let mut going_away = false;
        let mut armed: Option<std::time::Instant> = None;
        let mut chunks = Vec::new();
        // Response data queued while nothing can be sent (the client keeps its windows shut)
        // must still start to leave: the deadline by which some must, or the connection ends.
        let mut stalled: Option<Instant> = None;
        let mut spare = Spare::Held;
        poll_fn(move |cx| {
            rt::store_waker(&mut self.shared.conn_waker.borrow_mut(), cx);
            loop {
                let mut progress = false;
                if !going_away && rt::shutting_down() {
                    going_away = true;
                    self.shared.conn.borrow_mut().go_away(rt::now());
                    progress = true;
                }
                // 1. Receive.
                if recv.is_none() && !eof && !self.shared.conn.borrow().is_closed() {
                    let mut buf = self.inbuf.take().unwrap_or_default();
                    if !buf.is_empty() {
                        self.feed(&mut buf);
                        progress = true;
                    }
                    if buf.is_empty() {
                        // Nothing half-received: wait with no buffer (the receive takes one
                        // from the core's pool when data arrives), as HTTP/1 does.
                        rt::io::give_buffer(std::mem::take(&mut buf));
                    } else if buf.capacity() - buf.len() < 1024 {
                        buf.reserve(rt::io::RECV_BUF);
                    }
                    recv = Some(self.transport.recv(buf));
                }
                if let Some(f) = recv.as_mut() {
                    if let Poll::Ready((mut buf, result)) = Pin::new(f).poll(cx) {
                        recv = None;
                        progress = true;
                        match result {
                            Ok(n) if n > 0 => {
                                crate::metrics::count(|m| m.bytes_in(n as u64));
                                self.feed(&mut buf);
                                spare = Spare::Held;
                            }
                            Ok(_) => eof = true,
                            Err(e) => {
                                debug!(error = %e, "h2 receive failed");
                                eof = true;
                            }
                        }
                        self.inbuf = Some(buf);
                    }
                }
                // 2. Events.
                if self.dispatch_events(cx) {
                    progress = true;
                }
                // 3. Send.
                if send.is_none() {
                    if pending.is_empty() {
                        chunks.clear();
                        if self.shared.conn.borrow_mut().poll_transmit(&mut chunks) {
                            spare = Spare::Held;
                            for c in chunks.drain(..) {
                                pending.push(c);
                            }
                            // Room freed in the stream buffers: producers may go on.
                            self.shared.wake_capacity_waiters();
                        }
                    }
                    if pending.is_empty() {
                        let queued = self.shared.conn.borrow().queued_bytes();
                        match (queued, stalled, min_rate) {
                            (0, _, _) | (_, _, None) => stalled = None,
                            (_, Some(deadline), _) if deadline <= rt::now() => {
                                debug!(
                                    "h2 client keeps its windows shut past min_response_data_rate"
                                );
                                crate::metrics::count(|m| {
                                    m.rejected(Rejection::Limit(Limit::MinResponseDataRate))
                                });
                                return Poll::Ready(());
                            }
                            (_, Some(_), _) => {}
                            (_, None, Some(m)) => {
                                // Twice a fresh stream's allowance: a large body's own
                                // rate check (which resets just that stream) acts first;
                                // this is the backstop for the small ones nobody watches.
                                let now = rt::now();
                                let allowance = DataRate::new(m).start_wait(now) - now;
                                stalled = Some(now + 2 * allowance);
                            }
                        }
                    } else {
                        stalled = None;
                    }
                    if !pending.is_empty() {
                        let buf = std::mem::take(&mut pending);
                        let rate = min_rate.map(|m| {
                            let mut r = DataRate::new(m);
                            let deadline = r.start_wait(rt::now());
                            (r, deadline)
                        });
                        send = Some((self.transport.send(buf), rate));
                    }
                }
                if let Some((f, rate)) = send.as_mut() {
                    if rate.as_ref().is_some_and(|(_, deadline)| *deadline <= rt::now()) {
                        debug!("h2 client reads slower than min_response_data_rate");
                        return Poll::Ready(());
                    }
                    if let Poll::Ready((result, mut buf)) = Pin::new(f).poll(cx) {
                        progress = true;
                        let Ok(n @ 1..) = result else {
                            debug!("h2 send failed");
                            return Poll::Ready(());
                        };
                        crate::metrics::count(|m| m.bytes_out(n as u64));
                        buf.advance(n);
                        let mut rate = rate.take();
                        send = None;
                        if !buf.is_empty() {
                            // A partial send: the rest must move at the minimum rate too.
                            if let Some((r, deadline)) = rate.as_mut() {
                                r.end_wait(rt::now(), n as u64);
                                *deadline = r.start_wait(rt::now());
                            }
                            send = Some((self.transport.send(buf), rate));
                        }
                    }
                }
                // 4. Timers.
                let conn_deadline = self.shared.conn.borrow().poll_timeout();
                let send_deadline = send.as_ref().and_then(|(_, r)| r.as_ref()).map(|(_, d)| *d);
                let shed_at = match spare {
                    Spare::SheddingAt(at) => Some(at),
                    _ => None,
                };
                let deadline =
                    [conn_deadline, send_deadline, stalled, shed_at].into_iter().flatten().min();
                if deadline != armed {
                    timer.set(deadline);
                    armed = deadline;
                }
                if timer.poll_fired(cx).is_ready() {
                    timer.set(deadline);
                    let now = rt::now();
                    if conn_deadline.is_some_and(|d| d <= now) {
                        self.shared.conn.borrow_mut().handle_timeout(now);
                    }
                    if shed_at.is_some_and(|d| d <= now) {
                        // Nothing was received or sent since it went quiet (either would
                        // have made it `Held`).
                        spare = Spare::Shed;
                        self.shed_spare_room();
                        chunks = Vec::new();
                    }
                    progress = true; // re-check the send deadline and shutdown
                }
                // 5. The end.
                let closed = self.shared.conn.borrow().is_closed();
                if closed && send.is_none() && pending.is_empty() {
                    chunks.clear();
                    if !self.shared.conn.borrow_mut().poll_transmit(&mut chunks) {
                        return Poll::Ready(());
                    }
                    for c in chunks.drain(..) {
                        pending.push(c);
                    }
                    continue;
                }
                if eof && send.is_none() && pending.is_empty() {
                    return Poll::Ready(()); // the client is gone
                }
                if !progress {
                    if send.is_none() && pending.is_empty() {
                        // The receive buffer goes back at once (to the core's pool, as
                        // HTTP/1's does); the rest once the connection has stayed quiet.
                        self.transport.shed_buffers();
                        if spare == Spare::Held {
                            let at = rt::now() + SHED_AFTER;
                            spare = Spare::SheddingAt(at);
                            let deadline = armed.map_or(at, |d| d.min(at));
                            timer.set(Some(deadline));
                            armed = Some(deadline);
                        }
                    }
                    return Poll::Pending;
                }
            }
        })
    }

    /// Once quiet for [`SHED_AFTER`] with nothing to send: the stream tables and queues give
    /// their room back to the allocator, so an idle connection holds only its state.
    fn shed_spare_room(&self) {
        let mut slots = self.shared.slots.borrow_mut();
        if slots.is_empty() {
            *slots = StreamMap::default();
            self.shared.conn.borrow_mut().shrink_idle();
        }
    }

    fn feed(&mut self, buf: &mut BytesMut) {
        self.shared.conn.borrow_mut().recv(buf, rt::now());
    }

    /// Hands the codec's events to the stream tasks. Returns whether there were any.
    fn dispatch_events(&mut self, cx: &mut Context<'_>) -> bool {
        let mut any = false;
        let _on_conn_task = stream::OnConnTask::enter(self.shared);
        loop {
            let event = self.shared.conn.borrow_mut().poll_event();
            let Some(event) = event else { return any };
            any = true;
            match event {
                Event::Request { id, head, end_stream } => {
                    crate::metrics::count(|m| m.h2_stream_opened());
                    let offered = stream::offer(self.shared, &**self.handler, id, head, end_stream);
                    let Some(started) = offered else {
                        // Ended there (answered, or refused): its task never starts.
                        crate::metrics::count(|m| m.h2_stream_closed());
                        continue;
                    };
                    let slot = Slot { body_done: end_stream, ..Slot::default() };
                    self.shared.slots.borrow_mut().insert(id, slot);
                    self.shared.running.set(self.shared.running.get() + 1);
                    let (shared, handler) = (Rc::clone(self.shared), Rc::clone(self.handler));
                    stream::start(shared, handler, id, started, cx);
                }
                Event::Data { id, data, end_stream } => {
                    let len = data.len();
                    let found = self.shared.with_slot(id, |slot| {
                        if !data.is_empty() {
                            slot.body.push_back(data);
                        }
                        slot.body_done |= end_stream;
                        if let Some(w) = slot.body_waker.take() {
                            w.wake();
                        }
                    });
                    if found.is_none() {
                        self.shared.conn.borrow_mut().release_capacity(id, len);
                    }
                }
                Event::Trailers { id, .. } => {
                    // Request trailers are validated by the codec; the handler API has no
                    // place for them yet, so they end the body.
                    self.shared.with_slot(id, |slot| {
                        slot.body_done = true;
                        if let Some(w) = slot.body_waker.take() {
                            w.wake();
                        }
                    });
                }
                Event::Reset { id, reason, by_peer } => {
                    debug!(stream = id.value(), %reason, by_peer, "h2 stream reset");
                    self.shared.with_slot(id, |slot| {
                        slot.reset = true;
                        for w in
                            [slot.body_waker.take(), slot.task_waker.take()].into_iter().flatten()
                        {
                            w.wake();
                        }
                    });
                }
                Event::Rejected { id, why } => {
                    debug!(stream = id.value(), why, "h2 request rejected");
                    crate::metrics::count(|m| m.rejected(Rejection::H2Stream));
                }
                Event::ConnectionError { reason, description } => {
                    debug!(%reason, description, "h2 connection error");
                    crate::metrics::count(|m| m.rejected(Rejection::H2Connection));
                }
            }
        }
    }
}

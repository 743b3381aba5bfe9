//! A stream's output under flow control, and header blocks cut into frames: what the server
//! side (responses) and the client side (requests) send the same way.
//!
//! Each stream queues DATA and trailers ([`Outbound`]); the connection keeps the streams
//! that can send in a round-robin list ([`schedule`]) and, when asked to transmit, takes one
//! frame from each in turn ([`Outbound::next_frame`]), within the stream's window, the
//! connection's window and the peer's frame size. A DATA frame is its 9-byte header in the
//! connection's output buffer followed by the body `Bytes` as a separate chunk (a vectored
//! send), except for tiny bodies, whose copy is cheaper than an extra chunk.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use super::error::Error;
use super::flow::SendWindow;
use super::frame::{self, Continuation, Data, Headers, StreamId, StreamMap};

/// Bodies up to this size are copied next to their frame header instead of sent as their own
/// chunk.
const COPY_BELOW: usize = 256;

/// Most chunks one transmit hands out (the driver's send takes 64).
const MAX_CHUNKS: usize = 60;

/// Most body bytes one transmit schedules, so one send stays a reasonable size and the other
/// streams get their turn soon.
const MAX_TRANSMIT: usize = 256 * 1024;

/// One transmit's worth of frames: `next` sends the next ready stream's frame into `dst` and
/// says how many body bytes it took (`None`: no stream is ready), until the chunk or byte
/// budget is spent.
#[inline]
pub(crate) fn fill(dst: &mut Vec<Bytes>, mut next: impl FnMut(&mut Vec<Bytes>) -> Option<usize>) {
    let start = dst.len();
    let mut budget = MAX_TRANSMIT;
    while dst.len() - start < MAX_CHUNKS && budget > 0 {
        let Some(sent) = next(dst) else { break };
        budget = budget.saturating_sub(sent);
    }
}

/// Output queued on a stream, waiting for flow control or its turn.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Body bytes; `true` ends the stream.
    Data(Bytes, bool),
    /// Trailers (they end the stream). Encoded when their turn comes, so the HPACK blocks go
    /// out in the order they were encoded. Boxed: they are rare, and the queue holds its
    /// first item inline.
    Trailers(Box<HeaderMap>),
}

/// A stream's queue of output. Most streams hold one item at a time (a response's only DATA
/// frame), so the first lives inline and the `VecDeque`, made on the first push behind it,
/// is only used for more: its allocation and free were about 200 instructions of every
/// HTTP/2 response.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// The oldest item; `None` only when `rest` is empty too.
    front: Option<Outgoing>,
    /// Boxed, so an idle queue is one word: streams live in a hash map and are moved in
    /// and out of it whole, and a stream within 128 bytes is moved without a `memcpy` call.
    #[allow(clippy::box_collection)] // the point: one word, not a `VecDeque`'s four
    rest: Option<Box<VecDeque<Outgoing>>>,
}

impl Queue {
    pub(crate) fn push_back(&mut self, item: Outgoing) {
        if self.front.is_none() {
            self.front = Some(item);
        } else {
            self.rest.get_or_insert_default().push_back(item);
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<Outgoing> {
        let front = self.front.take();
        self.front = self.rest.as_mut().and_then(|rest| rest.pop_front());
        front
    }

    pub(crate) fn front(&self) -> Option<&Outgoing> {
        self.front.as_ref()
    }

    pub(crate) fn front_mut(&mut self) -> Option<&mut Outgoing> {
        self.front.as_mut()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.front.is_none()
    }
}

/// One stream's send side: its window and what waits to go.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) window: SendWindow,
    pub(crate) queue: Queue,
    /// Body bytes in `queue`.
    pub(crate) queued_bytes: usize,
    /// Whether the stream is in the connection's list of streams with output to schedule.
    pub(crate) scheduled: bool,
}

impl Outbound {
    /// An empty queue with a window of `window` bytes.
    pub(crate) fn new(window: u32) -> Outbound {
        Outbound {
            window: SendWindow::new(window),
            queue: Queue::default(),
            queued_bytes: 0,
            scheduled: false,
        }
    }

    /// Queues body bytes; `end` ends the stream.
    pub(crate) fn push_data(&mut self, data: Bytes, end: bool) {
        self.queued_bytes += data.len();
        self.queue.push_back(Outgoing::Data(data, end));
    }

    /// Sends a small body at once instead of queuing it: one DATA frame written into `out`,
    /// when nothing waits ahead of it on the stream and the stream's window, `conn_window`
    /// and `max_frame` all let the whole of it go now. A response whose body is in memory
    /// then takes no turn in the round robin (no queue entry, no scheduling, no second
    /// look at the stream when transmitting). Returns whether it was sent; the caller
    /// counts it against the connection window.
    pub(crate) fn send_at_once(
        &mut self,
        id: StreamId,
        data: &[u8],
        end: bool,
        conn_window: usize,
        max_frame: usize,
        out: &mut BytesMut,
    ) -> bool {
        let n = data.len();
        let fits = n < COPY_BELOW && n <= self.window.available() && n <= conn_window;
        if !fits || n > max_frame || !self.queue.is_empty() {
            return false;
        }
        self.window.consume(n);
        copy_data(out, id, data, end);
        true
    }

    /// Queues trailers (they end the stream).
    pub(crate) fn push_trailers(&mut self, trailers: HeaderMap) {
        self.queue.push_back(Outgoing::Trailers(Box::new(trailers)));
    }

    /// Whether the front of the queue can go out now given `conn_window` bytes of
    /// connection window.
    #[inline]
    pub(crate) fn can_send(&self, conn_window: usize) -> bool {
        match self.queue.front() {
            Some(Outgoing::Data(d, _)) if d.is_empty() => true,
            Some(Outgoing::Data(..)) => self.window.available() > 0 && conn_window > 0,
            Some(Outgoing::Trailers(_)) => true,
            None => false,
        }
    }

    /// Sends the front of the queue on `id`: DATA up to one frame (into `out`, or `dst` for
    /// the body of a large one, after what `out` held), returning the body bytes sent (the
    /// caller counts them against the connection window); or hands back the trailers in
    /// `trailers`, for the caller to encode with its HPACK encoder and write with
    /// [`write_block`], ending the stream. (An out-parameter: returning the 96-byte map
    /// by value cost every DATA frame a copy.)
    #[inline]
    pub(crate) fn next_frame(
        &mut self,
        id: StreamId,
        conn_window: usize,
        max_frame: usize,
        out: &mut BytesMut,
        dst: &mut Vec<Bytes>,
        trailers: &mut Option<HeaderMap>,
    ) -> usize {
        self.scheduled = false;
        if !self.can_send(conn_window) {
            return 0;
        }
        let mut sent = 0;
        match self.queue.front_mut() {
            Some(Outgoing::Data(data, end)) => {
                let n = data.len().min(self.window.available()).min(conn_window).min(max_frame);
                let chunk = data.split_to(n);
                let last = data.is_empty();
                let end_stream = last && *end;
                if last {
                    self.queue.pop_front();
                }
                self.queued_bytes -= n;
                self.window.consume(n);
                sent = n;
                if n < COPY_BELOW {
                    copy_data(out, id, &chunk, end_stream);
                } else {
                    Data::new(id, chunk.clone(), end_stream).encode_head(out);
                    dst.push(out.split().freeze());
                    dst.push(chunk);
                }
            }
            Some(Outgoing::Trailers(_)) => {
                if let Some(Outgoing::Trailers(t)) = self.queue.pop_front() {
                    *trailers = Some(*t);
                }
            }
            None => {}
        }
        sent
    }
}

/// A DATA frame whose payload is copied into `out` behind its header.
fn copy_data(out: &mut BytesMut, id: StreamId, data: &[u8], end_stream: bool) {
    let flags = if end_stream { frame::flags::END_STREAM } else { 0 };
    frame::Head::new(frame::Kind::Data, flags, id, data.len() as u32).encode(out);
    out.extend_from_slice(data);
}

/// A stream type of either side, for the scheduling both share.
pub(crate) trait Sending {
    /// The stream's send side.
    fn outbound(&self) -> &Outbound;
    /// The same, to change.
    fn outbound_mut(&mut self) -> &mut Outbound;
}

/// Puts `id` in the round-robin list `ready` if it has output that can go.
#[inline]
pub(crate) fn schedule<S: Sending>(
    streams: &mut StreamMap<S>,
    ready: &mut VecDeque<StreamId>,
    id: StreamId,
    conn_window: usize,
) {
    if let Some(stream) = streams.get_mut(&id) {
        let out = stream.outbound_mut();
        if !out.scheduled && out.can_send(conn_window) {
            out.scheduled = true;
            ready.push_back(id);
        }
    }
}

/// After a window grew: schedules every stream that can now send, in identifier order.
pub(crate) fn schedule_all<S: Sending>(
    streams: &mut StreamMap<S>,
    ready: &mut VecDeque<StreamId>,
    conn_window: usize,
) {
    let mut ids: Vec<StreamId> =
        streams.iter().filter(|(_, s)| !s.outbound().queue.is_empty()).map(|(id, _)| *id).collect();
    ids.sort();
    for id in ids {
        schedule(streams, ready, id, conn_window);
    }
}

/// The peer's SETTINGS_INITIAL_WINDOW_SIZE changed from `*current` to `new`: every stream's
/// window moves by the difference (RFC 9113 §6.9.2, even below zero). Returns the
/// difference; overflow is a connection error FLOW_CONTROL_ERROR.
pub(crate) fn adjust_windows<S: Sending>(
    streams: &mut StreamMap<S>,
    current: &mut u32,
    new: u32,
) -> Result<i64, Error> {
    let delta = i64::from(new) - i64::from(*current);
    *current = new;
    for stream in streams.values_mut() {
        stream.outbound_mut().window.adjust(delta)?;
    }
    Ok(delta)
}

/// Appends a header block as HEADERS plus CONTINUATIONs no larger than `max_frame`.
pub(crate) fn write_block(
    out: &mut BytesMut,
    id: StreamId,
    mut block: Bytes,
    end_stream: bool,
    max_frame: usize,
) {
    let first = block.split_to(block.len().min(max_frame));
    Headers::new(id, first, end_stream, block.is_empty()).encode(out);
    while !block.is_empty() {
        let next = block.split_to(block.len().min(max_frame));
        Continuation::new(id, next, block.is_empty()).encode(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_of(item: Option<Outgoing>) -> Option<Bytes> {
        match item {
            Some(Outgoing::Data(d, _)) => Some(d),
            Some(Outgoing::Trailers(_)) => panic!("trailers"),
            None => None,
        }
    }

    #[test]
    fn the_queue_keeps_order_across_its_inline_front_and_the_rest() {
        let mut q = Queue::default();
        assert!(q.is_empty());
        for n in 0..3u8 {
            q.push_back(Outgoing::Data(Bytes::from(vec![n]), false));
        }
        assert_eq!(data_of(q.pop_front()).unwrap()[..], [0]);
        q.push_back(Outgoing::Data(Bytes::from_static(b"\x03"), true));
        q.push_back(Outgoing::Trailers(Box::default()));
        assert_eq!(data_of(q.pop_front()).unwrap()[..], [1]);
        assert!(matches!(q.front(), Some(Outgoing::Data(d, false)) if d[..] == [2]));
        assert_eq!(data_of(q.pop_front()).unwrap()[..], [2]);
        assert_eq!(data_of(q.pop_front()).unwrap()[..], [3]);
        assert!(matches!(q.pop_front(), Some(Outgoing::Trailers(_))));
        assert!(q.is_empty() && q.pop_front().is_none());
        q.push_back(Outgoing::Data(Bytes::new(), true));
        assert!(!q.is_empty());
    }
}

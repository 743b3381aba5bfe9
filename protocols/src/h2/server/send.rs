//! Output: control frames, response heads, and DATA scheduled under flow control.
//!
//! Everything encoded goes into one ordered buffer (`out`), so frames leave in the order they
//! were encoded; that order matters for HPACK, whose blocks must reach the client in the
//! order the encoder produced them. Bodies are not copied into it: a DATA frame is its 9-byte
//! header in `out` followed by the body `Bytes` as a separate chunk (a vectored send), except
//! for tiny bodies, whose copy is cheaper than an extra chunk.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::stream::SendState;
use super::{Connection, Phase};
use crate::h2::frame::{self, RstStream, StreamId, WindowUpdate};
use crate::h2::outbound;
use crate::h2::response::{encode_start, HeaderEncoder, Present, ResponseStart};
use crate::h2::Reason;

/// The most room reserved in the output buffer when a batch of responses starts: a batch
/// of small responses fits in one allocation, given back when the connection goes idle.
const OUT_ROOM: usize = 16 * 1024;
/// Room per open stream: a response's HEADERS and, below `outbound::COPY_BELOW`, its DATA.
const ROOM_PER_STREAM: usize = 192;
/// The least room reserved: one small response.
const MIN_ROOM: usize = 512;

/// Fields the server adds to a response head (see
/// [`Connection::send_response_with`]).
#[derive(Debug, Clone, Copy)]
pub struct ServerFields<'a> {
    /// The cached IMF-fixdate for `date` (29 bytes).
    pub date: &'a [u8],
    /// The body's length, when known.
    pub content_length: Option<u64>,
}

/// Why an application command was refused: the stream is gone (reset, or the connection
/// failed) or the command does not fit its state. Stop working on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamGone;

impl std::fmt::Display for StreamGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the HTTP/2 stream is closed")
    }
}

impl std::error::Error for StreamGone {}

impl Connection {
    /// Queues the response head for `id`. `end_stream`: the response has no body.
    pub fn send_response(
        &mut self,
        id: StreamId,
        status: StatusCode,
        headers: &HeaderMap,
        end_stream: bool,
    ) -> Result<(), StreamGone> {
        self.send_response_with(id, status, headers, None, end_stream)
    }

    /// [`send_response`](Self::send_response) plus the fields the server adds unless the
    /// handler set them (as HTTP/1's `encode_response_head` does): `date`, `server`, and
    /// `content-length` when known. They go straight into the HPACK block, so the handler's
    /// map is neither grown nor copied. `headers`: a `&HeaderMap`, or any list of pairs.
    pub fn send_response_with<'f>(
        &mut self,
        id: StreamId,
        status: StatusCode,
        headers: impl IntoIterator<Item = (&'f HeaderName, &'f HeaderValue)>,
        fields: Option<ServerFields<'_>>,
        end_stream: bool,
    ) -> Result<(), StreamGone> {
        self.start_response(id, status, end_stream)?;
        self.encode_head(id, status, headers, fields, end_stream);
        if end_stream {
            self.settle(id);
        }
        Ok(())
    }

    /// A whole response whose body is in memory, as [`send_response_with`] and then
    /// [`send_data`] with `end_stream` would send it, for a head that starts with `start`
    /// (made once, sent any number of times; see [`ResponseStart`]): `date` and `server`
    /// follow unless it set them. `body`: `None` ends the stream with the head. The stream
    /// is looked up once, and a small body goes out right behind its head.
    ///
    /// [`send_response_with`]: Self::send_response_with
    /// [`send_data`]: Self::send_data
    pub fn send_response_from(
        &mut self,
        id: StreamId,
        start: &ResponseStart,
        date: &[u8],
        body: Option<Bytes>,
    ) -> Result<(), StreamGone> {
        let open_streams = self.streams.len();
        let stream = self.streams.get_mut(&id).ok_or(StreamGone)?;
        let end_stream = body.is_none();
        stream.start_response(start.status, end_stream)?;
        let max_frame = self.peer_max_frame_size as usize;
        let mut head = HeadOut { out: &mut self.out, encoder: &mut self.encoder, max_frame };
        let at = head.begin(open_streams);
        head.out.extend_from_slice(&start.bytes);
        head.end(id, at, start.present, Some(date), end_stream);
        let mut queued = false;
        if let Some(body) = body {
            stream.send = SendState::Done;
            let conn_window = self.send_window.available();
            let out = &mut self.out;
            if stream.out.send_at_once(id, &body, true, conn_window, max_frame, out) {
                self.send_window.consume(body.len());
            } else {
                stream.out.push_data(body, true);
                queued = true;
            }
        }
        let (finished, outlived) = (stream.is_finished(), stream.outlived_by_request());
        if queued {
            self.schedule(id);
        } else {
            self.settle_as(id, finished, outlived);
        }
        Ok(())
    }

    /// Moves `id` on to sending its response head (only once; refused if it is gone).
    fn start_response(
        &mut self,
        id: StreamId,
        status: StatusCode,
        end_stream: bool,
    ) -> Result<(), StreamGone> {
        let stream = self.streams.get_mut(&id).ok_or(StreamGone)?;
        stream.start_response(status, end_stream)
    }

    /// Queues body bytes on `id` (after [`send_response`](Self::send_response)); they leave
    /// as flow control allows. `end_stream` ends the response. Check
    /// [`stream_buffered`](Self::stream_buffered) before queuing more: nothing here refuses
    /// bytes, the caller applies `max_stream_send_buffer`.
    pub fn send_data(
        &mut self,
        id: StreamId,
        data: Bytes,
        end_stream: bool,
    ) -> Result<(), StreamGone> {
        let stream = self.streams.get_mut(&id).ok_or(StreamGone)?;
        if stream.send != SendState::Open {
            return Err(StreamGone);
        }
        if data.is_empty() && !end_stream {
            return Ok(());
        }
        if end_stream {
            stream.send = SendState::Done;
        }
        let conn_window = self.send_window.available();
        let max_frame = self.peer_max_frame_size as usize;
        if stream.out.send_at_once(id, &data, end_stream, conn_window, max_frame, &mut self.out) {
            self.send_window.consume(data.len());
            if end_stream {
                self.settle(id);
            }
            return Ok(());
        }
        stream.out.push_data(data, end_stream);
        self.schedule(id);
        Ok(())
    }

    /// Queues trailers on `id`; they end the response once the body queued before them is
    /// out.
    pub fn send_trailers(&mut self, id: StreamId, trailers: HeaderMap) -> Result<(), StreamGone> {
        let stream = self.streams.get_mut(&id).ok_or(StreamGone)?;
        if stream.send != SendState::Open {
            return Err(StreamGone);
        }
        stream.send = SendState::Done;
        stream.out.push_trailers(trailers);
        self.schedule(id);
        Ok(())
    }

    /// Body bytes queued on `id` and not yet sent; `None` if the stream is gone.
    pub fn stream_buffered(&self, id: StreamId) -> Option<usize> {
        self.streams.get(&id).map(|s| s.out.queued_bytes)
    }

    /// Body bytes queued on all streams and not yet sent (waiting for flow control or for
    /// their turn).
    pub fn queued_bytes(&self) -> usize {
        self.streams.values().map(|s| s.out.queued_bytes).sum()
    }

    /// Whether `id` is still open for output.
    pub fn stream_is_open(&self, id: StreamId) -> bool {
        self.streams.get(&id).is_some_and(|s| s.send != SendState::Done)
    }

    /// The server abandons `id` (a handler failure, an unreadable request body): RST_STREAM
    /// with `reason` and the stream's queued output dropped. No event is produced.
    pub fn reset_stream(&mut self, id: StreamId, reason: Reason) {
        if self.streams.contains_key(&id) {
            self.send_reset(id, reason);
        }
    }

    /// The application consumed `n` bytes of `id`'s request body (delivered in
    /// [`Event::Data`](super::Event::Data)). Reopens the windows, announcing them with
    /// WINDOW_UPDATE when pacing says so. Call it even after the stream is gone: the
    /// connection window still needs the bytes back.
    pub fn release_capacity(&mut self, id: StreamId, n: usize) {
        if n == 0 || self.phase == Phase::Closed {
            return;
        }
        self.release_connection(n);
        if let Some(stream) = self.streams.get_mut(&id).filter(|s| s.recv_open) {
            if let Some(increment) = stream.recv_window.release(n) {
                WindowUpdate::new(id, increment).encode(&mut self.out);
            }
        }
    }

    pub(super) fn release_connection(&mut self, n: usize) {
        if let Some(increment) = self.recv_window.release(n) {
            WindowUpdate::new(StreamId::ZERO, increment).encode(&mut self.out);
        }
    }

    /// Queues a control frame that answers the client (PING or SETTINGS acknowledgement,
    /// RST_STREAM). A client that provokes more of them than `max_queued_control_frames`
    /// while not reading what we send gets GOAWAY ENHANCE_YOUR_CALM.
    pub(super) fn queue_control(&mut self, encode: impl FnOnce(&mut BytesMut)) {
        if self.queued_control >= self.config.h2.max_queued_control_frames {
            return self.fail(Reason::ENHANCE_YOUR_CALM, "max_queued_control_frames");
        }
        self.queued_control += 1;
        encode(&mut self.out);
    }

    /// RST_STREAM on `id`; the stream is forgotten and its late frames are ignored.
    pub(super) fn send_reset(&mut self, id: StreamId, reason: Reason) {
        self.queue_control(|out| RstStream::new(id, reason).encode(out));
        if self.streams.contains_key(&id) {
            self.ready.retain(|s| *s != id);
            self.remove_stream(id);
        }
        self.remember_reset(id);
    }

    /// Encodes a response head as HEADERS plus CONTINUATIONs no larger than the client's
    /// SETTINGS_MAX_FRAME_SIZE. The block is encoded straight into the output after room for
    /// the frame header, which is filled in once the length is known (no copy) unless the
    /// block needs CONTINUATIONs.
    pub(super) fn encode_head<'f>(
        &mut self,
        id: StreamId,
        status: StatusCode,
        headers: impl IntoIterator<Item = (&'f HeaderName, &'f HeaderValue)>,
        fields: Option<ServerFields<'_>>,
        end_stream: bool,
    ) {
        let open_streams = self.streams.len();
        let max_frame = self.peer_max_frame_size as usize;
        let mut head = HeadOut { out: &mut self.out, encoder: &mut self.encoder, max_frame };
        let at = head.begin(open_streams);
        let content_length = fields.and_then(|f| f.content_length);
        let present = encode_start(status, headers, content_length, head.out);
        head.end(id, at, present, fields.map(|f| f.date), end_stream);
    }

    fn write_block(&mut self, id: StreamId, block: Bytes, end_stream: bool) {
        let max = self.peer_max_frame_size as usize;
        outbound::write_block(&mut self.out, id, block, end_stream, max);
    }

    /// Puts `id` in the round-robin list if it has output that can go.
    pub(super) fn schedule(&mut self, id: StreamId) {
        let conn_window = self.send_window.available();
        outbound::schedule(&mut self.streams, &mut self.ready, id, conn_window);
    }

    /// After a window grew: schedules every stream that can now send.
    pub(super) fn schedule_all(&mut self) {
        let conn_window = self.send_window.available();
        outbound::schedule_all(&mut self.streams, &mut self.ready, conn_window);
    }

    /// Appends the next bytes to send to `dst` as chunks, in order. Returns whether it added
    /// any. Call it when the previous send has completed.
    #[must_use]
    pub fn poll_transmit(&mut self, dst: &mut Vec<Bytes>) -> bool {
        let start = dst.len();
        outbound::fill(dst, |dst| {
            let id = self.ready.pop_front()?;
            Some(self.send_one(id, dst))
        });
        self.flush_out(dst);
        self.queued_control = 0;
        if self.phase == Phase::Closing && self.streams.is_empty() {
            self.phase = Phase::Closed;
        }
        dst.len() > start
    }

    fn flush_out(&mut self, dst: &mut Vec<Bytes>) {
        if !self.out.is_empty() {
            dst.push(self.out.split().freeze());
        }
    }

    /// Sends the next frame of `id`'s queue (DATA up to one frame, or the trailers) and
    /// reschedules the stream if more can go. Returns the body bytes sent.
    fn send_one(&mut self, id: StreamId, dst: &mut Vec<Bytes>) -> usize {
        let conn_window = self.send_window.available();
        let max_frame = self.peer_max_frame_size as usize;
        let Some(stream) = self.streams.get_mut(&id) else { return 0 };
        let mut trailers = None;
        let sent =
            stream.out.next_frame(id, conn_window, max_frame, &mut self.out, dst, &mut trailers);
        self.send_window.consume(sent);
        if let Some(t) = trailers {
            let mut block = BytesMut::new();
            self.encoder.encode_trailers(&t, &mut block);
            self.write_block(id, block.freeze(), true);
        }
        if self.settle(id) {
            self.schedule(id);
        }
        sent
    }
}

/// The connection's output and HPACK encoder, borrowed apart from its stream table, to
/// write a response head into.
struct HeadOut<'a> {
    out: &'a mut BytesMut,
    encoder: &'a mut HeaderEncoder,
    /// The peer's SETTINGS_MAX_FRAME_SIZE.
    max_frame: usize,
}

impl HeadOut<'_> {
    /// Room for a head in the output, the frame header's included: where it starts. The
    /// block's size update, if one is due, is written (it must come first, RFC 7541 §4.2).
    fn begin(&mut self, open_streams: usize) -> usize {
        if self.out.is_empty() {
            // The first response of a batch: room for the batch up front, so a hundred
            // responses are not encoded into a buffer that doubles (and copies) its way up.
            // Sized by the streams open (each likely to answer in this batch), so a
            // connection with one stream, such as a slow client's, holds little while its
            // send waits. `shrink_idle` gives it back when the connection goes quiet.
            let room = (open_streams * ROOM_PER_STREAM).clamp(MIN_ROOM, OUT_ROOM);
            if self.out.capacity() < room {
                self.out.reserve(room);
            }
        }
        let at = self.out.len();
        self.out.extend_from_slice(&[0; frame::HEAD_LEN]);
        self.encoder.flush_update(self.out);
        at
    }

    /// Ends a head begun at `at`: `date` and `server` unless `present` says the handler set
    /// them (when `date` is given), then the frame header.
    fn end(
        &mut self,
        id: StreamId,
        at: usize,
        present: Present,
        date: Option<&[u8]>,
        end_stream: bool,
    ) {
        if let Some(date) = date {
            let date = (!present.date).then_some(date);
            self.encoder.encode_own_fields(date, !present.server, self.out);
        }
        let len = self.out.len() - at - frame::HEAD_LEN;
        if len <= self.max_frame {
            let mut flags = frame::flags::END_HEADERS;
            if end_stream {
                flags |= frame::flags::END_STREAM;
            }
            let head = frame::Head::new(frame::Kind::Headers, flags, id, len as u32);
            self.out[at..at + frame::HEAD_LEN].copy_from_slice(&head.to_bytes());
        } else {
            let block = self.out.split_off(at + frame::HEAD_LEN).freeze();
            self.out.truncate(at);
            outbound::write_block(self.out, id, block, end_stream, self.max_frame);
        }
    }
}

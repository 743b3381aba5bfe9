//! The client side of an HTTP/2 connection (RFC 9113), sans-IO: what the reverse proxy
//! speaks to an HTTP/2 upstream (h2c, or h2 over TLS), multiplexing many requests on one
//! connection, with trailers both ways (gRPC's `grpc-status`).
//!
//! Driven like the server side ([`super::server::Connection`]): [`recv`](Connection::recv)
//! takes received bytes; commands ([`send_request`](Connection::send_request),
//! [`send_data`](Connection::send_data), [`send_trailers`](Connection::send_trailers),
//! [`reset_stream`](Connection::reset_stream),
//! [`release_capacity`](Connection::release_capacity)) queue output; then
//! [`poll_event`](Connection::poll_event) and [`poll_transmit`](Connection::poll_transmit)
//! drain it. It keeps no clock: the caller owns the timeouts (connect, response head, idle).
//!
//! An upstream is trusted more than a client, but not blindly: its response heads are
//! decoded under a header-list limit and checked as strictly as requests are (a malformed
//! head resets that stream), its windows and frame sizes are enforced, server push is
//! refused (SETTINGS_ENABLE_PUSH = 0, so a PUSH_PROMISE is a connection error), and control
//! frames it provokes faster than they are sent end the connection.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode};

use super::error::{go_away, reset, Error, Reason};
use super::flow::{RecvWindow, SendWindow, DEFAULT_WINDOW};
use super::frame::{
    self, Continuation, Data, Frame, FrameDecoder, GoAway, Headers, Ping, RstStream, Settings,
    StreamId, StreamMap, WindowUpdate,
};
use super::outbound::{self, Outbound, Sending};
use super::server::StreamGone;
use super::{HeaderDecoder, HeaderEncoder, HeaderError, RequestPseudo};

/// The connection preface a client sends first (§3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Control output (SETTINGS and PING acknowledgements, resets) the upstream may make us
/// queue between two transmits before it is treated as a flood.
const MAX_QUEUED_CONTROL: usize = 64 * 1024;
/// Streams at once before the upstream's SETTINGS say otherwise (RFC 9113 §5.1.2 leaves it
/// unlimited; this is the value most servers send).
const INITIAL_MAX_STREAMS: u32 = 100;

/// The client side's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our receive window per stream (SETTINGS_INITIAL_WINDOW_SIZE): how far the upstream
    /// may run ahead of a slow client per response.
    pub stream_window: u32,
    /// Our receive window for the whole connection.
    pub connection_window: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: the largest response head (or trailers) accepted.
    pub max_header_list_size: u32,
    /// Most fields in one response head.
    pub max_header_fields: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            stream_window: 1 << 20,
            connection_window: 4 << 20,
            max_header_list_size: 64 * 1024,
            max_header_fields: 200,
        }
    }
}

/// What the connection reports to the application.
#[derive(Debug)]
pub enum Event {
    /// A final response head (informational ones are skipped). `end_stream`: no body.
    Response {
        /// The stream.
        id: StreamId,
        /// The status.
        status: StatusCode,
        /// The fields.
        headers: HeaderMap,
        /// The `content-length`, if any.
        content_length: Option<u64>,
        /// No body follows.
        end_stream: bool,
    },
    /// Response body bytes; give them back with [`Connection::release_capacity`] once
    /// consumed.
    Data {
        /// The stream.
        id: StreamId,
        /// The bytes.
        data: Bytes,
        /// The body ends here.
        end_stream: bool,
    },
    /// The response's trailers; the body ended.
    Trailers {
        /// The stream.
        id: StreamId,
        /// The fields.
        trailers: HeaderMap,
    },
    /// The stream ended early: reset by the upstream (`by_peer`), by us for a protocol
    /// error, or refused by a GOAWAY (`REFUSED_STREAM`: it was never processed, and may be
    /// sent again elsewhere).
    Reset {
        /// The stream.
        id: StreamId,
        /// The error code.
        reason: Reason,
        /// Whether the upstream sent it.
        by_peer: bool,
    },
    /// The connection failed; every open stream was reported reset before this.
    ConnectionError {
        /// The error code.
        reason: Reason,
        /// What went wrong.
        description: &'static str,
    },
}

/// Why a request could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The connection takes no new streams (GOAWAY, failed, or out of identifiers).
    Closed,
    /// It is at the upstream's SETTINGS_MAX_CONCURRENT_STREAMS: open another connection or
    /// wait.
    Busy,
}

#[derive(Debug)]
struct Stream {
    /// The upstream may still send on it.
    recv_open: bool,
    /// A final response head arrived.
    responded: bool,
    /// END_STREAM is queued or sent.
    send_done: bool,
    recv_window: RecvWindow,
    /// The request's window and queued output.
    out: Outbound,
}

impl Stream {
    fn is_finished(&self) -> bool {
        !self.recv_open && self.send_done && self.out.queue.is_empty()
    }
}

impl Sending for Stream {
    fn outbound(&self) -> &Outbound {
        &self.out
    }

    fn outbound_mut(&mut self) -> &mut Outbound {
        &mut self.out
    }
}

/// A header block being assembled from HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct Block {
    id: StreamId,
    fragments: BytesMut,
    end_stream: bool,
}

/// One client-side HTTP/2 connection. See the module docs for how to drive it.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    frames: FrameDecoder,
    decoder: HeaderDecoder,
    encoder: HeaderEncoder,
    streams: StreamMap<Stream>,
    ready: VecDeque<StreamId>,
    next_id: u32,
    /// The upstream's first frame (its SETTINGS) has arrived.
    peer_settings_seen: bool,
    peer_max_streams: u32,
    peer_initial_window: u32,
    peer_max_frame_size: u32,
    send_window: SendWindow,
    recv_window: RecvWindow,
    block: Option<Block>,
    out: BytesMut,
    queued_control: usize,
    events: VecDeque<Event>,
    /// The upstream's GOAWAY: no new streams; those above this were refused.
    going_away: Option<StreamId>,
    failed: bool,
    /// The payload of our PING that awaits its ACK.
    ping: Option<[u8; 8]>,
    pings_sent: u64,
}

impl Connection {
    /// A new connection: the preface, our SETTINGS and the connection window's
    /// WINDOW_UPDATE are queued at once (§3.4: a client may send requests right behind them).
    pub fn new(config: Config) -> Connection {
        let max_list = config.max_header_list_size as usize;
        let mut conn = Connection {
            frames: FrameDecoder::new(),
            decoder: HeaderDecoder::new(4096, max_list, config.max_header_fields),
            encoder: HeaderEncoder::new(),
            streams: StreamMap::default(),
            ready: VecDeque::new(),
            next_id: 1,
            peer_settings_seen: false,
            peer_max_streams: INITIAL_MAX_STREAMS,
            peer_initial_window: DEFAULT_WINDOW,
            peer_max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
            send_window: SendWindow::new(DEFAULT_WINDOW),
            recv_window: RecvWindow::new(DEFAULT_WINDOW, config.connection_window),
            block: None,
            out: BytesMut::with_capacity(256),
            queued_control: 0,
            events: VecDeque::new(),
            going_away: None,
            failed: false,
            ping: None,
            pings_sent: 0,
            config,
        };
        conn.out.extend_from_slice(PREFACE);
        Settings {
            enable_push: Some(false),
            initial_window_size: Some(conn.config.stream_window),
            max_header_list_size: Some(conn.config.max_header_list_size),
            ..Settings::default()
        }
        .encode(&mut conn.out);
        if let Some(increment) = conn.recv_window.open_to_target() {
            WindowUpdate::new(StreamId::ZERO, increment).encode(&mut conn.out);
        }
        conn
    }

    /// Whether a request may be opened now (else see [`OpenError`]).
    pub fn can_open(&self) -> Result<(), OpenError> {
        if self.failed || self.going_away.is_some() || self.next_id > StreamId::MAX.value() {
            return Err(OpenError::Closed);
        }
        if self.streams.len() >= self.peer_max_streams as usize {
            return Err(OpenError::Busy);
        }
        Ok(())
    }

    /// Whether the connection is done for: failed, or told to go away with nothing open.
    pub fn is_closed(&self) -> bool {
        self.failed || (self.going_away.is_some() && self.streams.is_empty())
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Opens a stream with the request head `pseudo` + `headers`; `end_stream`: no body.
    pub fn send_request(
        &mut self,
        pseudo: &RequestPseudo<'_>,
        headers: &HeaderMap,
        end_stream: bool,
    ) -> Result<StreamId, OpenError> {
        self.can_open()?;
        let id = StreamId::new(self.next_id);
        self.next_id += 2;
        let stream = Stream {
            recv_open: true,
            responded: false,
            send_done: end_stream,
            recv_window: RecvWindow::new(self.config.stream_window, self.config.stream_window),
            out: Outbound::new(self.peer_initial_window),
        };
        self.streams.insert(id, stream);
        let mut block = BytesMut::new();
        self.encoder.encode_request(pseudo, headers, &mut block);
        self.write_block(id, block.freeze(), end_stream);
        Ok(id)
    }

    /// Queues request body bytes on `id`; they leave as flow control allows. Check
    /// [`stream_buffered`](Self::stream_buffered) before queuing more.
    pub fn send_data(
        &mut self,
        id: StreamId,
        data: Bytes,
        end_stream: bool,
    ) -> Result<(), StreamGone> {
        let stream = self.streams.get_mut(&id).filter(|s| !s.send_done).ok_or(StreamGone)?;
        if data.is_empty() && !end_stream {
            return Ok(());
        }
        stream.send_done = end_stream;
        stream.out.push_data(data, end_stream);
        self.schedule(id);
        Ok(())
    }

    /// Queues the request's trailers on `id`; they end it.
    pub fn send_trailers(&mut self, id: StreamId, trailers: HeaderMap) -> Result<(), StreamGone> {
        let stream = self.streams.get_mut(&id).filter(|s| !s.send_done).ok_or(StreamGone)?;
        stream.send_done = true;
        stream.out.push_trailers(trailers);
        self.schedule(id);
        Ok(())
    }

    /// Request body bytes queued on `id` and not yet sent (`None`: the stream is gone).
    pub fn stream_buffered(&self, id: StreamId) -> Option<usize> {
        self.streams.get(&id).map(|s| s.out.queued_bytes)
    }

    /// Resets `id` (the client went away, or its request failed): RST_STREAM with `reason`,
    /// and the stream is forgotten.
    pub fn reset_stream(&mut self, id: StreamId, reason: Reason) {
        if self.streams.remove(&id).is_some() {
            self.ready.retain(|s| *s != id);
            RstStream::new(id, reason).encode(&mut self.out);
        }
    }

    /// The application consumed `n` bytes of `id`'s response body: the windows reopen.
    /// Call it even after the stream is gone: the connection window needs them back.
    pub fn release_capacity(&mut self, id: StreamId, n: usize) {
        if n == 0 || self.failed {
            return;
        }
        self.release_connection(n);
        if let Some(stream) = self.streams.get_mut(&id).filter(|s| s.recv_open) {
            if let Some(increment) = stream.recv_window.release(n) {
                WindowUpdate::new(id, increment).encode(&mut self.out);
            }
        }
    }

    /// Gives `n` bytes back to the connection window only.
    fn release_connection(&mut self, n: usize) {
        if let Some(increment) = self.recv_window.release(n) {
            WindowUpdate::new(StreamId::ZERO, increment).encode(&mut self.out);
        }
    }

    /// Ends the connection politely (GOAWAY NO_ERROR; we accept no pushed streams, so the
    /// last stream is 0).
    pub fn go_away(&mut self) {
        if !self.failed {
            GoAway::new(StreamId::ZERO, Reason::NO_ERROR, Bytes::new()).encode(&mut self.out);
            self.going_away.get_or_insert(StreamId::ZERO);
        }
    }

    /// Asks whether the upstream still answers: queues a PING (§6.7) unless one already
    /// awaits its ACK ([`Connection::awaiting_pong`]). An upstream that never ACKs is gone
    /// (a black hole: no RST, no FIN), which only the application's clock can tell.
    pub fn ping(&mut self) {
        if self.failed || self.ping.is_some() {
            return;
        }
        self.pings_sent += 1;
        let payload = self.pings_sent.to_be_bytes();
        Ping::new(payload).encode(&mut self.out);
        self.ping = Some(payload);
    }

    /// Whether a PING of ours awaits the upstream's ACK.
    pub fn awaiting_pong(&self) -> bool {
        self.ping.is_some()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Feeds received bytes (consumed as frames complete; a partial frame stays in `buf`).
    pub fn recv(&mut self, buf: &mut BytesMut) {
        while !self.failed {
            let frame = match self.frames.decode(buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    self.on_error(e);
                    continue;
                }
            };
            if let Err(e) = self.on_frame(frame) {
                self.on_error(e);
            }
            if self.queued_control > MAX_QUEUED_CONTROL {
                self.fail(Reason::ENHANCE_YOUR_CALM, "upstream control frame flood");
            }
        }
    }

    fn on_error(&mut self, e: Error) {
        match e {
            Error::Stream(id, reason, _) => {
                if self.streams.remove(&id).is_some() {
                    self.ready.retain(|s| *s != id);
                    self.events.push_back(Event::Reset { id, reason, by_peer: false });
                }
                self.queue_control(|out| RstStream::new(id, reason).encode(out));
            }
            other => self.fail(other.reason(), describe(&other)),
        }
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), Error> {
        if !self.peer_settings_seen && !matches!(frame, Frame::Settings(ref s) if !s.ack) {
            return Err(go_away(Reason::PROTOCOL_ERROR, "upstream did not start with SETTINGS"));
        }
        if self.block.is_some() && !matches!(frame, Frame::Continuation(_)) {
            return Err(go_away(Reason::PROTOCOL_ERROR, "header block interrupted"));
        }
        match frame {
            Frame::Settings(s) => self.on_settings(s),
            Frame::Ping(p) => {
                if !p.ack {
                    self.queue_control(|out| p.pong().encode(out));
                } else if self.ping == Some(p.payload) {
                    self.ping = None;
                }
                Ok(())
            }
            Frame::GoAway(g) => {
                self.on_go_away(g.last_stream_id);
                Ok(())
            }
            Frame::WindowUpdate(w) => self.on_window_update(w.stream_id, w.increment),
            Frame::RstStream(r) => {
                if self.streams.remove(&r.stream_id).is_some() {
                    self.ready.retain(|s| *s != r.stream_id);
                    let (id, reason) = (r.stream_id, r.reason);
                    self.events.push_back(Event::Reset { id, reason, by_peer: true });
                }
                Ok(())
            }
            Frame::Headers(h) => self.on_headers(h),
            Frame::Continuation(c) => self.on_continuation(c),
            Frame::Data(d) => self.on_data(d),
            Frame::PushPromise(_) => Err(go_away(Reason::PROTOCOL_ERROR, "push not enabled")),
            Frame::Priority(_) => Ok(()),
        }
    }

    fn on_settings(&mut self, s: Settings) -> Result<(), Error> {
        if s.ack {
            return Ok(());
        }
        self.peer_settings_seen = true;
        if s.enable_push == Some(true) {
            return Err(go_away(Reason::PROTOCOL_ERROR, "server set ENABLE_PUSH"));
        }
        if let Some(size) = s.header_table_size {
            self.encoder.set_max_table_size(size as usize);
        }
        if let Some(n) = s.max_concurrent_streams {
            self.peer_max_streams = n;
        }
        if let Some(size) = s.max_frame_size {
            self.peer_max_frame_size = size;
        }
        if let Some(window) = s.initial_window_size {
            outbound::adjust_windows(&mut self.streams, &mut self.peer_initial_window, window)?;
            self.schedule_all();
        }
        self.queue_control(|out| Settings::ack().encode(out));
        Ok(())
    }

    fn on_go_away(&mut self, last: StreamId) {
        self.going_away = Some(last);
        let mut refused: Vec<StreamId> =
            self.streams.keys().copied().filter(|id| *id > last).collect();
        refused.sort();
        for id in refused {
            self.streams.remove(&id);
            self.ready.retain(|s| *s != id);
            self.events.push_back(Event::Reset {
                id,
                reason: Reason::REFUSED_STREAM,
                by_peer: true,
            });
        }
    }

    fn on_window_update(&mut self, id: StreamId, increment: u32) -> Result<(), Error> {
        if id.is_zero() {
            self.send_window.grow(id, increment)?;
            self.schedule_all();
        } else if let Some(stream) = self.streams.get_mut(&id) {
            stream.out.window.grow(id, increment)?;
            self.schedule(id);
        }
        Ok(())
    }

    /// Checks that `id` is a stream we opened (it may be closed since).
    fn check_ours(&self, id: StreamId) -> Result<(), Error> {
        if !id.is_client_initiated() || id.value() >= self.next_id {
            return Err(go_away(Reason::PROTOCOL_ERROR, "frame on a stream we did not open"));
        }
        Ok(())
    }

    fn on_headers(&mut self, h: Headers) -> Result<(), Error> {
        self.check_ours(h.stream_id)?;
        let block = Block {
            id: h.stream_id,
            fragments: BytesMut::from(&h.fragment[..]),
            end_stream: h.end_stream,
        };
        if h.end_headers {
            self.on_block(block)
        } else {
            self.block = Some(block);
            Ok(())
        }
    }

    fn on_continuation(&mut self, c: Continuation) -> Result<(), Error> {
        let Some(mut block) = self.block.take() else {
            return Err(go_away(Reason::PROTOCOL_ERROR, "CONTINUATION without HEADERS"));
        };
        if block.id != c.stream_id {
            return Err(go_away(Reason::PROTOCOL_ERROR, "CONTINUATION on another stream"));
        }
        // Bounded: more than twice the header-list limit cannot decode to anything accepted.
        if block.fragments.len() + c.fragment.len() > 2 * self.config.max_header_list_size as usize
        {
            return Err(go_away(Reason::ENHANCE_YOUR_CALM, "upstream header block too large"));
        }
        block.fragments.extend_from_slice(&c.fragment);
        if c.end_headers {
            self.on_block(block)
        } else {
            self.block = Some(block);
            Ok(())
        }
    }

    /// A complete header block: a response head, or trailers. Every block is decoded, even
    /// for a stream already gone, so the HPACK table stays in step with the upstream's.
    fn on_block(&mut self, block: Block) -> Result<(), Error> {
        let Block { id, fragments, end_stream } = block;
        let responded = match self.streams.get(&id) {
            Some(s) if s.recv_open => s.responded,
            // A stream that is closed, reset or finished: the block is decoded all the same
            // (the upstream's HPACK table changed with it), then refused or dropped.
            closed => {
                let closed = closed.is_some();
                if let Err(e) = only_connection_error(self.decoder.decode_trailers(&fragments)) {
                    return Err(e.to_error(id));
                }
                return match closed {
                    true => Err(reset(id, Reason::STREAM_CLOSED, "HEADERS after END_STREAM")),
                    false => Ok(()),
                };
            }
        };
        if responded {
            let trailers = self.decoder.decode_trailers(&fragments);
            if !end_stream {
                if let Err(e) = only_connection_error(trailers) {
                    return Err(e.to_error(id));
                }
                return Err(reset(id, Reason::PROTOCOL_ERROR, "trailers without END_STREAM"));
            }
            let trailers = trailers.map_err(|e| header_error(id, e))?;
            self.events.push_back(Event::Trailers { id, trailers });
            self.end_recv(id);
            return Ok(());
        }
        let head = self.decoder.decode_response(&fragments).map_err(|e| header_error(id, e))?;
        if head.status.is_informational() {
            // 1xx (100 Continue, 103 Early Hints): the final head follows; 101 is not HTTP/2.
            if end_stream || head.status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(reset(id, Reason::PROTOCOL_ERROR, "invalid informational response"));
            }
            return Ok(());
        }
        if let Some(s) = self.streams.get_mut(&id) {
            s.responded = true;
        }
        self.events.push_back(Event::Response {
            id,
            status: head.status,
            headers: head.headers,
            content_length: head.content_length,
            end_stream,
        });
        if end_stream {
            self.end_recv(id);
        }
        Ok(())
    }

    fn on_data(&mut self, d: Data) -> Result<(), Error> {
        self.check_ours(d.stream_id)?;
        let id = d.stream_id;
        let len = d.flow_controlled_len();
        if !self.recv_window.receive(len) {
            return Err(go_away(
                Reason::FLOW_CONTROL_ERROR,
                "upstream overran the connection window",
            ));
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            // Gone: its bytes still count against the connection window; give them back.
            self.release_capacity(id, len);
            return Ok(());
        };
        let refused = if !stream.recv_open {
            Some(reset(id, Reason::STREAM_CLOSED, "DATA after END_STREAM"))
        } else if !stream.responded {
            Some(reset(id, Reason::PROTOCOL_ERROR, "DATA before the response head"))
        } else if !stream.recv_window.receive(len) {
            Some(reset(id, Reason::FLOW_CONTROL_ERROR, "upstream overran the stream window"))
        } else {
            None
        };
        if let Some(e) = refused {
            // Charged to the connection window above: give it back, or it shrinks for good.
            self.release_connection(len);
            return Err(e);
        }
        // Padding is flow-controlled but never delivered: give it back now.
        let padding = len - d.data.len();
        if padding > 0 {
            self.release_capacity(id, padding);
        }
        self.events.push_back(Event::Data { id, data: d.data, end_stream: d.end_stream });
        if d.end_stream {
            self.end_recv(id);
        }
        Ok(())
    }

    /// The upstream finished sending on `id`.
    fn end_recv(&mut self, id: StreamId) {
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.recv_open = false;
            if stream.is_finished() {
                self.streams.remove(&id);
            } else if !stream.send_done {
                // The response is complete while the request is not (§8.1): the upstream
                // wants no more of it. Stop sending, politely.
                self.reset_stream(id, Reason::NO_ERROR);
            }
        }
    }

    fn fail(&mut self, reason: Reason, description: &'static str) {
        if self.failed {
            return;
        }
        GoAway::new(StreamId::ZERO, reason, Bytes::from_static(description.as_bytes()))
            .encode(&mut self.out);
        self.failed = true;
        let mut ids: Vec<StreamId> = self.streams.keys().copied().collect();
        ids.sort();
        for id in ids {
            self.streams.remove(&id);
            self.events.push_back(Event::Reset { id, reason, by_peer: false });
        }
        self.ready.clear();
        self.block = None;
        self.events.push_back(Event::ConnectionError { reason, description });
    }

    fn queue_control(&mut self, encode: impl FnOnce(&mut BytesMut)) {
        let before = self.out.len();
        encode(&mut self.out);
        self.queued_control += self.out.len() - before;
    }

    fn write_block(&mut self, id: StreamId, block: Bytes, end_stream: bool) {
        let max = self.peer_max_frame_size as usize;
        outbound::write_block(&mut self.out, id, block, end_stream, max);
    }

    fn schedule(&mut self, id: StreamId) {
        let conn_window = self.send_window.available();
        outbound::schedule(&mut self.streams, &mut self.ready, id, conn_window);
    }

    fn schedule_all(&mut self) {
        let conn_window = self.send_window.available();
        outbound::schedule_all(&mut self.streams, &mut self.ready, conn_window);
    }

    /// Appends the next bytes to send to `dst` as chunks, in order; whether it added any.
    /// Call it when the previous send has completed.
    #[must_use]
    pub fn poll_transmit(&mut self, dst: &mut Vec<Bytes>) -> bool {
        let start = dst.len();
        outbound::fill(dst, |dst| {
            let id = self.ready.pop_front()?;
            Some(self.send_one(id, dst))
        });
        if !self.out.is_empty() {
            dst.push(self.out.split().freeze());
        }
        self.queued_control = 0;
        dst.len() > start
    }

    /// Sends the next frame of `id`'s queue; returns the body bytes sent.
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
        if self.streams.get(&id).is_some_and(Stream::is_finished) {
            self.streams.remove(&id);
        } else {
            self.schedule(id);
        }
        sent
    }
}

/// A header block error on stream `id`: the connection's for a compression failure, the
/// stream's otherwise (a malformed or oversized response head: PROTOCOL_ERROR, RFC 9113
/// §10.5.1; the server side's REFUSED_STREAM would tell the upstream it was not processed).
fn header_error(id: StreamId, e: HeaderError) -> Error {
    match e {
        HeaderError::TooLarge => reset(id, Reason::PROTOCOL_ERROR, "response head too large"),
        other => other.to_error(id),
    }
}

/// A decode result's connection-level failure, if it had one (any other failure is the
/// stream's, and the block was decoded to its end, so the table is in step).
fn only_connection_error<T>(decoded: Result<T, HeaderError>) -> Result<(), HeaderError> {
    match decoded {
        Err(e) if e.is_connection_error() => Err(e),
        _ => Ok(()),
    }
}

fn describe(e: &Error) -> &'static str {
    match e {
        Error::Connection(_, d) | Error::Stream(_, _, d) => d,
        Error::Limit(..) => "frame larger than max_frame_size",
    }
}

/// The pseudo-headers of a request to `authority` for `method` and `path` over `scheme`
/// (CONNECT carries neither scheme nor path, RFC 9113 §8.5).
pub fn pseudo<'a>(
    method: &'a Method,
    scheme: &'a str,
    authority: &'a str,
    path: &'a str,
) -> RequestPseudo<'a> {
    let connect = *method == Method::CONNECT;
    RequestPseudo {
        method,
        scheme: (!connect).then_some(scheme),
        authority,
        path: (!connect).then_some(path),
    }
}

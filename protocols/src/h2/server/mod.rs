//! The server side of an HTTP/2 connection (RFC 9113), sans-IO.
//!
//! A [`Connection`] is fed received bytes and the time, and is asked for bytes to send,
//! events for the application and its next deadline. It never reads the clock and never
//! touches a socket, so every rule is testable byte by byte on virtual time (the habit of
//! quinn-proto and rustls).
//!
//! Its methods, by role:
//! - inputs: [`recv`](Connection::recv) (bytes from the socket),
//!   [`handle_timeout`](Connection::handle_timeout);
//! - application commands: [`send_response`](Connection::send_response),
//!   [`send_data`](Connection::send_data), [`send_trailers`](Connection::send_trailers),
//!   [`reset_stream`](Connection::reset_stream),
//!   [`release_capacity`](Connection::release_capacity), [`go_away`](Connection::go_away);
//! - outputs, drained in this order after every input or command:
//!   [`poll_event`](Connection::poll_event), [`poll_transmit`](Connection::poll_transmit),
//!   [`poll_timeout`](Connection::poll_timeout); then [`is_closed`](Connection::is_closed).
//!
//! The caller should call `poll_transmit` only when its previous send has completed: output
//! then accumulates here while the peer is not reading, where the caps on queued control
//! frames and per-stream send buffers can see it.
//!
//! Files: `recv.rs` (every received frame, stream state checks, the flood budgets),
//! `send.rs` (output: control frames, response heads, DATA scheduling under flow control),
//! `stream.rs` (one stream), `config.rs`, `event.rs`; the windows are `h2/flow.rs`, shared
//! with the client side.

mod config;
mod event;
use super::flow;
mod recv;
mod send;
mod stream;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use peregrine_limits::Budget;

pub use config::{Config, GOAWAY_PING_TIMEOUT, SETTINGS_ACK_TIMEOUT};
pub use event::Event;
pub use send::{ServerFields, StreamGone};

use super::frame::{FrameDecoder, GoAway, Ping, Settings, StreamId, StreamMap, WindowUpdate};
use super::{HeaderDecoder, HeaderEncoder, Reason};
use flow::{RecvWindow, SendWindow, DEFAULT_WINDOW};
use stream::Stream;

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the 24-byte client preface.
    Preface,
    /// Preface seen; the first frame must be SETTINGS (§3.4).
    FirstSettings,
    /// Serving.
    Open,
    /// A graceful shutdown: GOAWAY(2^31−1) and a PING sent; the final GOAWAY follows the
    /// PING's acknowledgement or [`GOAWAY_PING_TIMEOUT`].
    Draining,
    /// The final GOAWAY is queued: no new streams; ends once the open ones finish.
    Closing,
    /// Done (after an error, or once the last stream finished while closing): flush what is
    /// queued, then close the socket.
    Closed,
}

/// The flood budgets of one connection (see `peregrine_limits::H2Limits`).
#[derive(Debug)]
struct Budgets {
    client_resets: Budget,
    server_resets: Budget,
    settings: Budget,
    ping: Budget,
    priority: Budget,
    empty: Budget,
    window_updates: Budget,
}

/// A header block being assembled from HEADERS and CONTINUATION frames (§4.3, §6.10).
#[derive(Debug)]
struct HeaderBlock {
    id: StreamId,
    fragments: BytesMut,
    frames: usize,
    end_stream: bool,
    started: Instant,
}

/// Payload of the PING a graceful shutdown sends between its two GOAWAYs.
const GOAWAY_PING: [u8; 8] = *b"peregrGA";
/// Payload of keep-alive PINGs.
const KEEPALIVE_PING: [u8; 8] = *b"peregrKA";

/// One server-side HTTP/2 connection. See the module docs for how to drive it.
#[derive(Debug)]
pub struct Connection {
    /// Shared by every connection of a core: the limits are the same for all of them, and a
    /// copy per connection would be a few hundred bytes of every idle connection.
    config: Arc<Config>,
    phase: Phase,
    frames: FrameDecoder,
    decoder: HeaderDecoder,
    encoder: HeaderEncoder,
    streams: StreamMap<Stream>,
    /// Streams with output queued, in round-robin order.
    ready: VecDeque<StreamId>,
    /// Streams we reset recently: their late frames are dropped quietly.
    recently_reset: VecDeque<StreamId>,
    /// The highest stream the client has opened (or tried to).
    last_peer_stream: StreamId,
    /// After the final GOAWAY: the last stream we will process.
    accept_up_to: StreamId,
    peer_max_frame_size: u32,
    peer_initial_window: u32,
    send_window: SendWindow,
    recv_window: RecvWindow,
    block: Option<HeaderBlock>,
    /// Encoded frames waiting to go out, in order.
    out: BytesMut,

    /// Control frames queued in `out` and not yet handed to the caller.
    queued_control: usize,
    events: VecDeque<Event>,
    budgets: Budgets,
    /// When our SETTINGS must be acknowledged by.
    settings_ack_due: Option<Instant>,
    /// Streams refused over `max_concurrent_streams` before that acknowledgement.
    unacked_refusals: u32,
    /// The preface and first SETTINGS must arrive by then.
    preface_due: Option<Instant>,
    /// When the last stream closed (the idle timeout runs from there) or `None` while
    /// streams are open.
    idle_since: Option<Instant>,
    /// When the draining PING times out.
    drain_due: Option<Instant>,
    /// When we last received anything (the keep-alive PING runs from there).
    last_recv: Instant,
    /// An unanswered keep-alive PING's deadline.
    ping_due: Option<Instant>,
    /// The peer sent GOAWAY: it opens no more streams.
    peer_going_away: bool,
    /// The time of the latest input.
    now: Instant,
}

impl Connection {
    /// A new connection at `now`. Our SETTINGS and the connection window's WINDOW_UPDATE
    /// are queued at once (§3.4: the server preface may be sent before the client's).
    pub fn new(config: impl Into<Arc<Config>>, now: Instant) -> Connection {
        let config = config.into();
        let h2 = &config.h2;
        let budgets = Budgets {
            client_resets: Budget::new(),
            server_resets: Budget::new(),
            settings: Budget::new(),
            ping: Budget::new(),
            priority: Budget::new(),
            empty: Budget::new(),
            window_updates: Budget::new(),
        };
        let mut conn = Connection {
            frames: FrameDecoder::with_max_frame_size(h2.max_frame_size),
            decoder: HeaderDecoder::new(
                h2.header_table_size as usize,
                config.max_header_list_size as usize,
                config.max_header_fields,
            ),
            encoder: HeaderEncoder::new(),
            phase: Phase::Preface,
            streams: StreamMap::default(),
            ready: VecDeque::new(),
            recently_reset: VecDeque::new(),
            last_peer_stream: StreamId::ZERO,
            accept_up_to: StreamId::MAX,
            peer_max_frame_size: super::frame::DEFAULT_MAX_FRAME_SIZE,
            peer_initial_window: DEFAULT_WINDOW,
            send_window: SendWindow::new(DEFAULT_WINDOW),
            recv_window: RecvWindow::new(DEFAULT_WINDOW, h2.initial_connection_window),
            block: None,
            out: BytesMut::with_capacity(256),

            queued_control: 0,
            events: VecDeque::new(),
            budgets,
            settings_ack_due: Some(now + SETTINGS_ACK_TIMEOUT),
            unacked_refusals: 0,
            preface_due: Some(now + config.request_headers_timeout),
            idle_since: Some(now),
            drain_due: None,
            last_recv: now,
            ping_due: None,
            peer_going_away: false,
            now,
            config,
        };
        if conn.config.enable_connect_protocol {
            conn.decoder.allow_extended_connect();
        }
        let h2 = &conn.config.h2;
        Settings {
            header_table_size: Some(h2.header_table_size),
            enable_push: Some(false),
            max_concurrent_streams: Some(h2.max_concurrent_streams),
            initial_window_size: Some(h2.initial_stream_window),
            max_frame_size: Some(h2.max_frame_size),
            max_header_list_size: Some(conn.config.max_header_list_size),
            enable_connect_protocol: conn.config.enable_connect_protocol.then_some(true),
            ..Settings::default()
        }
        .encode(&mut conn.out);
        if let Some(increment) = conn.recv_window.open_to_target() {
            WindowUpdate::new(StreamId::ZERO, increment).encode(&mut conn.out);
        }
        conn
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest deadline at which [`handle_timeout`](Self::handle_timeout) must run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self.idle_since.map(|t| t + self.config.idle_timeout);
        let block = self.block.as_ref().map(|b| b.started + self.config.request_headers_timeout);
        let keepalive = match (self.config.h2.keep_alive_ping_interval, self.ping_due) {
            (_, Some(due)) => Some(due),
            (Some(interval), None) => Some(self.last_recv + interval),
            (None, None) => None,
        };
        [self.settings_ack_due, self.preface_due, idle, block, keepalive, self.drain_due]
            .into_iter()
            .flatten()
            .min()
            .filter(|_| self.phase != Phase::Closed)
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.phase == Phase::Closed {
            return;
        }
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.preface_due) {
            // Nothing HTTP/2 arrived in time: close without a word, as for a silent HTTP/1
            // connection (the peer may not speak HTTP/2 at all).
            self.phase = Phase::Closed;
            return;
        }
        if due(self.settings_ack_due) {
            return self.fail(Reason::SETTINGS_TIMEOUT, "SETTINGS not acknowledged in time");
        }
        if due(self.block.as_ref().map(|b| b.started + self.config.request_headers_timeout)) {
            return self.fail(Reason::ENHANCE_YOUR_CALM, "header block not completed in time");
        }
        if due(self.ping_due) {
            return self.fail(Reason::INTERNAL_ERROR, "keep-alive PING not answered in time");
        }
        if let Some(interval) = self.config.h2.keep_alive_ping_interval {
            if self.ping_due.is_none() && self.last_recv + interval <= now {
                self.queue_control(|out| Ping::new(KEEPALIVE_PING).encode(out));
                self.ping_due = Some(now + self.config.h2.keep_alive_ping_timeout);
            }
        }
        if due(self.drain_due) {
            self.final_go_away();
        }
        if due(self.idle_since.map(|t| t + self.config.idle_timeout)) {
            self.idle_since = None;
            self.final_go_away();
        }
    }

    /// Starts a graceful shutdown (§6.8): GOAWAY with the largest stream identifier and a
    /// PING now; once the PING comes back (or after [`GOAWAY_PING_TIMEOUT`]), the final
    /// GOAWAY names the last stream that will be served. Open streams finish; then
    /// [`is_closed`](Self::is_closed).
    ///
    /// Before the client's preface and SETTINGS are here, its first requests may be on
    /// their way right behind them (a client sends them without waiting): the two GOAWAYs
    /// start once they arrive, and a client that sends nothing gets the final one after
    /// [`GOAWAY_PING_TIMEOUT`].
    pub fn go_away(&mut self, now: Instant) {
        match self.phase {
            Phase::Open => {}
            Phase::Preface | Phase::FirstSettings => {
                self.drain_due.get_or_insert(now + GOAWAY_PING_TIMEOUT);
                return;
            }
            _ => return,
        }
        self.phase = Phase::Draining;
        GoAway::new(StreamId::MAX, Reason::NO_ERROR, Bytes::new()).encode(&mut self.out);
        Ping::new(GOAWAY_PING).encode(&mut self.out);
        self.drain_due = Some(now + GOAWAY_PING_TIMEOUT);
    }

    /// Sends the final GOAWAY naming the last stream that will be processed.
    fn final_go_away(&mut self) {
        if matches!(self.phase, Phase::Closing | Phase::Closed) {
            return;
        }
        self.drain_due = None;
        self.accept_up_to = self.last_peer_stream;
        GoAway::new(self.last_peer_stream, Reason::NO_ERROR, Bytes::new()).encode(&mut self.out);
        self.phase = Phase::Closing;
        self.check_done();
    }

    /// Ends the connection at once with a connection error (§5.4.1): GOAWAY with `reason`,
    /// every stream reset for the application, nothing more read.
    pub fn abort(&mut self, reason: Reason, description: &'static str) {
        self.fail(reason, description);
    }

    fn fail(&mut self, reason: Reason, description: &'static str) {
        if self.phase == Phase::Closed {
            return;
        }
        // A peer that has not even sent the preface gets no GOAWAY (§3.4: it is probably not
        // speaking HTTP/2).
        if self.phase != Phase::Preface {
            GoAway::new(self.last_peer_stream, reason, Bytes::from_static(description.as_bytes()))
                .encode(&mut self.out);
        }
        self.phase = Phase::Closed;
        self.events.push_back(Event::ConnectionError { reason, description });
        let mut ids: Vec<StreamId> = self.streams.keys().copied().collect();
        ids.sort();
        for id in ids {
            self.streams.remove(&id);
            self.events.push_back(Event::Reset { id, reason, by_peer: false });
        }
        self.ready.clear();
        self.block = None;
    }

    /// Whether the connection is finished: close the socket once
    /// [`poll_transmit`](Self::poll_transmit) has nothing more.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether the connection still takes new streams (no GOAWAY sent or received).
    pub fn is_accepting(&self) -> bool {
        matches!(self.phase, Phase::Preface | Phase::FirstSettings | Phase::Open)
            && !self.peer_going_away
    }

    /// Streams currently open.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Lets go of the memory kept for reuse between frames and streams (output buffer, event
    /// queue, stream tables) where it holds nothing: for a caller about to wait on an idle
    /// connection, so that idle connections cost only their state. The HPACK tables and the
    /// recently-reset list are kept: they are state, not spare room.
    pub fn shrink_idle(&mut self) {
        if self.out.is_empty() {
            self.out = BytesMut::new();
        }
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
        if self.ready.is_empty() {
            self.ready = VecDeque::new();
        }
        if self.streams.is_empty() {
            self.streams = StreamMap::default();
        }
    }

    /// Called whenever a stream may have finished: removes finished streams and moves the
    /// connection towards idle or closed.
    fn check_done(&mut self) {
        let ending = self.phase == Phase::Closing || self.peer_going_away;
        if self.streams.is_empty() && ending && self.phase != Phase::Closed {
            self.phase = Phase::Closed;
        }
    }

    /// Forgets `id` and starts the idle clock if it was the last stream.
    fn remove_stream(&mut self, id: StreamId) {
        self.streams.remove(&id);
        if self.streams.is_empty() {
            self.idle_since = Some(self.now);
        }
        self.check_done();
    }

    fn remember_reset(&mut self, id: StreamId) {
        if self.recently_reset.len() == config::RECENTLY_RESET {
            self.recently_reset.pop_front();
        }
        self.recently_reset.push_back(id);
    }
}

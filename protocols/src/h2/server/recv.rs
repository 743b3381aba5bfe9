//! Received frames: stream state rules (RFC 9113 §5.1), flow control (§6.9), header block
//! assembly (§4.3, §6.10) and the flood budgets.
//!
//! Every violation is created where its rule is written as a connection error (GOAWAY, the
//! connection ends) or a stream error (RST_STREAM, the connection goes on); resets the client
//! provokes count against the `server_resets` budget (MadeYouReset).

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use peregrine_limits::H2Limits;

use super::config::UNACKED_REFUSALS;
use super::flow::RecvWindow;
use super::stream::Stream;
use super::{Connection, HeaderBlock, Phase, GOAWAY_PING, KEEPALIVE_PING};
use crate::h2::error::{go_away, reset, Error};
use crate::h2::frame::{
    Continuation, Data, Frame, Headers, Ping, RstStream, Settings, StreamId, WindowUpdate,
};
use crate::h2::{preface, HeaderError, Reason};

impl Connection {
    /// Consumes what it can of `buf` (bytes received from the client) at `now`. Bytes of an
    /// incomplete frame stay in `buf`; call again when more arrive. Afterwards, drain
    /// [`poll_event`](Self::poll_event) and [`poll_transmit`](Self::poll_transmit).
    pub fn recv(&mut self, buf: &mut BytesMut, now: Instant) {
        self.now = now;
        if !buf.is_empty() {
            // Anything received shows the client is alive.
            self.last_recv = now;
            self.ping_due = None;
        }
        if self.phase == Phase::Preface {
            match preface::check(buf) {
                Ok(Some(())) => self.phase = Phase::FirstSettings,
                Ok(None) => return,
                Err(e) => return self.fail(e.reason(), e.description()),
            }
        }
        while self.phase != Phase::Closed {
            match self.frames.decode(buf) {
                Ok(Some(frame)) => {
                    if let Err(e) = self.on_frame(frame, now) {
                        self.on_error(e, now);
                    }
                }
                Ok(None) => break,
                Err(e) => self.on_error(e, now),
            }
        }
    }

    fn on_error(&mut self, e: Error, now: Instant) {
        match e.stream_id() {
            None => self.fail(e.reason(), e.description()),
            Some(id) => self.reset_for_client(id, e.reason(), e.description(), now),
        }
    }

    /// A stream error the client caused: RST_STREAM, counted against `server_resets`.
    fn reset_for_client(&mut self, id: StreamId, reason: Reason, why: &'static str, now: Instant) {
        if !self.budgets.server_resets.spend(now, self.config.h2.server_resets) {
            return self.fail(Reason::ENHANCE_YOUR_CALM, "too many stream errors (server_resets)");
        }
        if self.streams.contains_key(&id) {
            self.events.push_back(super::Event::Reset { id, reason, by_peer: false });
        }
        self.events.push_back(super::Event::Rejected { id, why });
        self.send_reset(id, reason);
    }

    fn on_frame(&mut self, frame: Frame, now: Instant) -> Result<(), Error> {
        if self.phase == Phase::FirstSettings {
            if !matches!(&frame, Frame::Settings(s) if !s.ack) {
                return Err(go_away(Reason::PROTOCOL_ERROR, "first frame is not SETTINGS"));
            }
            self.phase = Phase::Open;
            self.preface_due = None;
            if self.drain_due.is_some() {
                // A shutdown began while the preface was on its way (see `go_away`).
                self.go_away(now);
            }
        }
        match frame {
            Frame::Data(d) => self.on_data(d, now),
            Frame::Headers(h) => self.on_headers(h, now),
            Frame::Continuation(c) => self.on_continuation(c, now),
            Frame::Priority(_) => {
                self.spend(|b, l| (&mut b.priority, l.priority_frames), now, "priority_frames")
            }
            Frame::RstStream(r) => self.on_reset(r, now),
            Frame::Settings(s) => self.on_settings(s, now),
            Frame::PushPromise(_) => {
                Err(go_away(Reason::PROTOCOL_ERROR, "PUSH_PROMISE from a client"))
            }
            Frame::Ping(p) => self.on_ping(p, now),
            Frame::GoAway(_) => {
                // The client opens no more streams; the open ones finish (§6.8).
                self.peer_going_away = true;
                self.check_done();
                Ok(())
            }
            Frame::WindowUpdate(w) => self.on_window_update(w, now),
        }
    }

    /// Spends one unit of a flood budget; exhausting it is GOAWAY ENHANCE_YOUR_CALM.
    fn spend(
        &mut self,
        budget: impl for<'a> FnOnce(
            &'a mut super::Budgets,
            &peregrine_limits::H2Limits,
        )
            -> (&'a mut peregrine_limits::Budget, peregrine_limits::FloodBudget),
        now: Instant,
        name: &'static str,
    ) -> Result<(), Error> {
        let (meter, allowance) = budget(&mut self.budgets, &self.config.h2);
        if meter.spend(now, allowance) {
            Ok(())
        } else {
            Err(go_away(Reason::ENHANCE_YOUR_CALM, name))
        }
    }

    /// Whether `id` names a stream the client has not opened yet ("idle", §5.1). Frames
    /// other than HEADERS and PRIORITY on an idle stream are a connection error
    /// PROTOCOL_ERROR.
    fn is_idle(&self, id: StreamId) -> bool {
        id > self.last_peer_stream
    }

    fn on_data(&mut self, d: Data, now: Instant) -> Result<(), Error> {
        let id = d.stream_id;
        if !id.is_client_initiated() || self.is_idle(id) {
            return Err(go_away(Reason::PROTOCOL_ERROR, "DATA on an idle stream"));
        }
        if d.data.is_empty() && !d.end_stream {
            self.spend(|b, l| (&mut b.empty, l.empty_frames), now, "empty_frames")?;
        }
        let len = d.flow_controlled_len();
        if !self.recv_window.receive(len) {
            return Err(go_away(Reason::FLOW_CONTROL_ERROR, "DATA beyond the connection window"));
        }
        let padding = len - d.data.len();
        let Some(stream) = self.streams.get_mut(&id).filter(|s| s.recv_open) else {
            // Closed or half-closed (remote): the bytes still count against the connection
            // window, which we reopen at once.
            self.release_connection(len);
            if self.recently_reset.contains(&id) {
                return Ok(());
            }
            return Err(reset(id, Reason::STREAM_CLOSED, "DATA on a closed stream"));
        };
        if !stream.recv_window.receive(len) {
            self.release_connection(len);
            return Err(reset(id, Reason::FLOW_CONTROL_ERROR, "DATA beyond the stream window"));
        }
        stream.received += d.data.len() as u64;
        if let Some(cl) = stream.content_length {
            if stream.received > cl || (d.end_stream && stream.received != cl) {
                self.release_connection(len);
                return Err(reset(
                    id,
                    Reason::PROTOCOL_ERROR,
                    "DATA does not match content-length",
                ));
            }
        }
        if d.end_stream {
            stream.recv_open = false;
        }
        if padding > 0 {
            self.release_capacity(id, padding);
        }
        self.events.push_back(super::Event::Data { id, data: d.data, end_stream: d.end_stream });
        if d.end_stream {
            self.settle(id);
        }
        Ok(())
    }

    fn on_headers(&mut self, h: Headers, now: Instant) -> Result<(), Error> {
        if !h.stream_id.is_client_initiated() {
            return Err(go_away(Reason::PROTOCOL_ERROR, "HEADERS on a server stream id"));
        }
        if h.end_headers {
            // The whole block in one frame, as nearly every one is: nothing to assemble.
            check_block(&self.config.h2, 1, h.fragment.len())?;
            return self.on_block(h.stream_id, &h.fragment, h.end_stream, now);
        }
        let block = HeaderBlock {
            id: h.stream_id,
            fragments: BytesMut::new(),
            frames: 0,
            end_stream: h.end_stream,
            started: now,
        };
        self.block = Some(block);
        self.add_fragment(h.fragment, false, now)
    }

    fn on_continuation(&mut self, c: Continuation, now: Instant) -> Result<(), Error> {
        // The frame decoder already refused a CONTINUATION that continues nothing (§6.10).
        if c.fragment.is_empty() {
            self.spend(|b, l| (&mut b.empty, l.empty_frames), now, "empty_frames")?;
        }
        self.add_fragment(c.fragment, c.end_headers, now)
    }

    /// Appends a fragment, enforcing the block's byte and frame caps as it grows (the
    /// CONTINUATION flood defence: a block is never buffered past `max_header_block_size`).
    fn add_fragment(&mut self, fragment: Bytes, end: bool, now: Instant) -> Result<(), Error> {
        let Some(block) = self.block.as_mut() else {
            return Err(go_away(Reason::PROTOCOL_ERROR, "CONTINUATION without a field block"));
        };
        block.frames += 1;
        check_block(&self.config.h2, block.frames, block.fragments.len() + fragment.len())?;
        block.fragments.extend_from_slice(&fragment);
        if end {
            let block = self.block.take().expect("block present");
            return self.on_block(block.id, &block.fragments, block.end_stream, now);
        }
        Ok(())
    }

    /// A complete header block: a new request, trailers, or a block for a stream that is
    /// gone (decoded anyway: the HPACK table must stay in step with the client's).
    fn on_block(
        &mut self,
        id: StreamId,
        block: &[u8],
        end: bool,
        now: Instant,
    ) -> Result<(), Error> {
        if !self.is_idle(id) {
            return self.on_trailers(id, block, end, now);
        }
        self.last_peer_stream = id;
        let decoded = self.decoder.decode_request(block);
        if let Err(HeaderError::Compression(why)) = &decoded {
            return Err(go_away(Reason::COMPRESSION_ERROR, why));
        }
        if let Err(HeaderError::Flood) = &decoded {
            return Err(go_away(
                Reason::COMPRESSION_ERROR,
                "header list far over max_request_headers_total_size",
            ));
        }
        if id > self.accept_up_to {
            return Ok(()); // §6.8: streams above the final GOAWAY's id are ignored.
        }
        if self.streams.len() >= self.config.h2.max_concurrent_streams as usize {
            // Until the client acknowledges our SETTINGS it may not know the limit yet (it
            // starts unlimited, RFC 9113 §5.1.2), so the first refusals are honest ones and
            // do not spend the MadeYouReset budget; past `UNACKED_REFUSALS` they do.
            if self.settings_ack_due.is_some() && self.unacked_refusals < UNACKED_REFUSALS {
                self.unacked_refusals += 1;
                self.events.push_back(super::Event::Rejected { id, why: "max_concurrent_streams" });
                self.send_reset(id, Reason::REFUSED_STREAM);
                return Ok(());
            }
            return Err(reset(id, Reason::REFUSED_STREAM, "max_concurrent_streams"));
        }
        let head = match decoded {
            Ok(head) => head,
            Err(HeaderError::TooLarge) => {
                return self.answer_431(id, end, now);
            }
            Err(HeaderError::Malformed(why)) => return Err(reset(id, Reason::PROTOCOL_ERROR, why)),
            Err(HeaderError::Compression(_) | HeaderError::Flood) => unreachable!("handled above"),
        };
        if end && head.content_length.is_some_and(|n| n > 0) {
            return Err(reset(id, Reason::PROTOCOL_ERROR, "content-length without DATA"));
        }
        let mut stream = self.new_stream();
        stream.content_length = head.content_length;
        stream.recv_open = !end;
        stream.connect = head.method == http::Method::CONNECT;
        self.streams.insert(id, stream);
        self.idle_since = None;
        self.events.push_back(super::Event::Request { id, head, end_stream: end });
        Ok(())
    }

    fn new_stream(&self) -> Stream {
        let h2 = &self.config.h2;
        Stream::new(
            RecvWindow::new(h2.initial_stream_window, h2.initial_stream_window),
            self.peer_initial_window,
        )
    }

    /// The header list was over `max_request_headers_total_size`: answer 431 on the stream
    /// ourselves, and ask the client to stop sending the body (§8.1: RST_STREAM NO_ERROR
    /// after a complete response).
    fn answer_431(&mut self, id: StreamId, end: bool, now: Instant) -> Result<(), Error> {
        if !self.budgets.server_resets.spend(now, self.config.h2.server_resets) {
            return Err(go_away(
                Reason::ENHANCE_YOUR_CALM,
                "too many stream errors (server_resets)",
            ));
        }
        self.events.push_back(super::Event::Rejected { id, why: "max_request_headers_total_size" });
        self.encode_head(
            id,
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &http::HeaderMap::new(),
            None,
            true,
        );
        if !end {
            self.send_reset(id, Reason::NO_ERROR);
        }
        Ok(())
    }

    fn on_trailers(
        &mut self,
        id: StreamId,
        block: &[u8],
        end: bool,
        now: Instant,
    ) -> Result<(), Error> {
        let decoded = self.decoder.decode_trailers(block);
        match &decoded {
            Err(HeaderError::Compression(why)) => {
                return Err(go_away(Reason::COMPRESSION_ERROR, why))
            }
            Err(HeaderError::Flood) => {
                return Err(go_away(
                    Reason::COMPRESSION_ERROR,
                    "trailers far over the header limit",
                ))
            }
            _ => {}
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            if self.recently_reset.contains(&id) {
                return Ok(());
            }
            return Err(go_away(Reason::STREAM_CLOSED, "HEADERS on a closed stream"));
        };
        if !stream.recv_open {
            return Err(reset(id, Reason::STREAM_CLOSED, "HEADERS after END_STREAM"));
        }
        if !end {
            return Err(reset(id, Reason::PROTOCOL_ERROR, "trailers without END_STREAM"));
        }
        let trailers = match decoded {
            Ok(t) => t,
            Err(_) => return Err(reset(id, Reason::PROTOCOL_ERROR, "malformed trailers")),
        };
        if stream.content_length.is_some_and(|cl| cl != stream.received) {
            return Err(reset(id, Reason::PROTOCOL_ERROR, "DATA does not match content-length"));
        }
        stream.recv_open = false;
        let _ = now;
        self.events.push_back(super::Event::Trailers { id, trailers: Box::new(trailers) });
        self.settle(id);
        Ok(())
    }

    fn on_reset(&mut self, r: RstStream, now: Instant) -> Result<(), Error> {
        let id = r.stream_id;
        if !id.is_client_initiated() || self.is_idle(id) {
            return Err(go_away(Reason::PROTOCOL_ERROR, "RST_STREAM on an idle stream"));
        }
        if self.streams.contains_key(&id) {
            // Only resets of live streams cost the server work: they are the rapid reset
            // attack (CVE-2023-44487) when they come fast.
            self.spend(|b, l| (&mut b.client_resets, l.client_resets), now, "client_resets")?;
            self.ready.retain(|s| *s != id);
            self.events.push_back(super::Event::Reset { id, reason: r.reason, by_peer: true });
            self.remove_stream(id);
        }
        Ok(())
    }

    fn on_settings(&mut self, s: Settings, now: Instant) -> Result<(), Error> {
        if s.ack {
            self.settings_ack_due = None;
            return Ok(());
        }
        self.spend(|b, l| (&mut b.settings, l.settings_frames), now, "settings_frames")?;
        if let Some(size) = s.header_table_size {
            self.encoder.set_max_table_size(size as usize);
        }
        if let Some(size) = s.max_frame_size {
            self.peer_max_frame_size = size;
        }
        if let Some(window) = s.initial_window_size {
            let current = &mut self.peer_initial_window;
            let delta = crate::h2::outbound::adjust_windows(&mut self.streams, current, window)?;
            if delta > 0 {
                self.schedule_all();
            }
        }
        self.queue_control(|out| Settings::ack().encode(out));
        Ok(())
    }

    fn on_ping(&mut self, p: Ping, now: Instant) -> Result<(), Error> {
        if p.ack {
            if p.payload == GOAWAY_PING && self.phase == Phase::Draining {
                self.final_go_away();
            } else if p.payload == KEEPALIVE_PING {
                self.ping_due = None;
            }
            return Ok(());
        }
        self.spend(|b, l| (&mut b.ping, l.ping_frames), now, "ping_frames")?;
        self.queue_control(|out| p.pong().encode(out));
        Ok(())
    }

    fn on_window_update(&mut self, w: WindowUpdate, now: Instant) -> Result<(), Error> {
        self.spend(|b, l| (&mut b.window_updates, l.window_updates), now, "window_updates")?;
        let id = w.stream_id;
        if id.is_zero() {
            self.send_window.grow(id, w.increment)?;
            self.schedule_all();
            return Ok(());
        }
        if self.is_idle(id) {
            return Err(go_away(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream"));
        }
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.out.window.grow(id, w.increment)?;
            self.schedule(id);
        }
        Ok(())
    }

    /// After either half of `id` moved on: forgets the stream if both halves are done,
    /// or resets it if its response has left while the request goes on (RFC 9113 §8.1).
    /// Returns whether the stream is still there.
    pub(super) fn settle(&mut self, id: StreamId) -> bool {
        match self.streams.get(&id) {
            Some(s) => self.settle_as(id, s.is_finished(), s.outlived_by_request()),
            None => false,
        }
    }

    /// [`settle`](Self::settle) for a stream whose state the caller read: `finished`
    /// ([`Stream::is_finished`]) and `outlived` ([`Stream::outlived_by_request`]).
    pub(super) fn settle_as(&mut self, id: StreamId, finished: bool, outlived: bool) -> bool {
        if finished {
            self.remove_stream(id);
        } else if outlived {
            self.send_reset(id, Reason::NO_ERROR);
        } else {
            return true;
        }
        false
    }
}

/// The caps on a header block as it grows, at `frames` frames and `size` bytes: the
/// CONTINUATION flood defence (a block is never buffered past `max_header_block_size`).
fn check_block(limits: &H2Limits, frames: usize, size: usize) -> Result<(), Error> {
    if frames > limits.max_header_block_frames {
        return Err(go_away(Reason::ENHANCE_YOUR_CALM, "max_header_block_frames"));
    }
    if size > limits.max_header_block_size {
        return Err(go_away(Reason::ENHANCE_YOUR_CALM, "max_header_block_size"));
    }
    Ok(())
}

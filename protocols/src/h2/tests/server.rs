//! Tests of the server connection state machine: a scripted client feeds frames on virtual
//! time and checks the exact frames, error codes and events that come back.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use peregrine_limits::{FloodBudget, Limits};

use crate::h2::frame::{
    self, Continuation, Data, FrameDecoder, GoAway, Headers, Ping, Priority, RstStream, Settings,
    StreamDependency, WindowUpdate,
};
use crate::h2::preface::PREFACE;
use crate::h2::server::{Config, Connection, Event};
use crate::h2::{Frame, Reason, StreamId};

/// HPACK "literal header field without indexing, new name" (RFC 7541 §6.2.2), no Huffman:
/// the simplest encoding, independent of the codec under test.
fn literal(name: &str, value: &str, dst: &mut Vec<u8>) {
    dst.push(0x00);
    int7(name.len(), dst);
    dst.extend_from_slice(name.as_bytes());
    int7(value.len(), dst);
    dst.extend_from_slice(value.as_bytes());
}

/// An HPACK integer with a 7-bit prefix (RFC 7541 §5.1), H bit clear.
fn int7(mut n: usize, dst: &mut Vec<u8>) {
    if n < 127 {
        dst.push(n as u8);
        return;
    }
    dst.push(127);
    n -= 127;
    while n >= 128 {
        dst.push((n % 128 + 128) as u8);
        n /= 128;
    }
    dst.push(n as u8);
}

/// A GET request's header block.
fn get(path: &str) -> Vec<u8> {
    block(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "example.com"),
        (":path", path),
    ])
}

fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in fields {
        literal(n, v, &mut b);
    }
    b
}

fn id(n: u32) -> StreamId {
    StreamId::new(n)
}

fn encode(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut b = BytesMut::new();
    f(&mut b);
    b.to_vec()
}

fn headers(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    encode(|b| Headers::new(id(stream), Bytes::copy_from_slice(block), end_stream, true).encode(b))
}

fn data(stream: u32, bytes: &[u8], end_stream: bool) -> Vec<u8> {
    let d = Data::new(id(stream), Bytes::copy_from_slice(bytes), end_stream);
    encode(|b| {
        d.encode_head(b);
        b.extend_from_slice(bytes);
    })
}

fn rst(stream: u32, reason: Reason) -> Vec<u8> {
    encode(|b| RstStream::new(id(stream), reason).encode(b))
}

fn ping(payload: [u8; 8]) -> Vec<u8> {
    encode(|b| Ping::new(payload).encode(b))
}

fn window_update(stream: u32, n: u32) -> Vec<u8> {
    encode(|b| WindowUpdate::new(id(stream), n).encode(b))
}

fn settings(s: Settings) -> Vec<u8> {
    encode(|b| s.encode(b))
}

/// A scripted client around a server [`Connection`].
struct Client {
    conn: Connection,
    now: Instant,
    /// Bytes the server sent that are not yet decoded into frames.
    wire: BytesMut,
    decoder: FrameDecoder,
    hpack: loona_hpack::Decoder<'static>,
}

impl Client {
    /// A connection with default limits, after the preface and SETTINGS exchange.
    fn new() -> Client {
        Client::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut Limits)) -> Client {
        let mut limits = Limits::default();
        tweak(&mut limits);
        let now = Instant::now();
        let mut c = Client {
            conn: Connection::new(Config::new(&limits), now),
            now,
            wire: BytesMut::new(),
            decoder: FrameDecoder::new(),
            hpack: loona_hpack::Decoder::new(),
        };
        let server_preface = c.frames();
        let h2 = &limits.h2;
        assert!(matches!(server_preface[0], Frame::Settings(s) if !s.ack
            && s.max_concurrent_streams == Some(h2.max_concurrent_streams)
            && s.initial_window_size == Some(h2.initial_stream_window)
            && s.max_header_list_size == Some(32 * 1024)
            && s.enable_push == Some(false)));
        if h2.initial_connection_window > 65_535 {
            let increment = h2.initial_connection_window - 65_535;
            let wu = WindowUpdate::new(StreamId::ZERO, increment);
            assert_eq!(server_preface[1], Frame::WindowUpdate(wu));
        }
        let mut hello = PREFACE.to_vec();
        hello.extend(settings(Settings::default()));
        hello.extend(settings(Settings::ack()));
        c.send(&hello);
        assert_eq!(c.frames(), vec![Frame::Settings(Settings::ack())]);
        c
    }

    /// A connection with default limits before anything from the client (the server's
    /// preface is queued).
    fn unopened(now: Instant) -> Client {
        Client {
            conn: Connection::new(Config::default(), now),
            now,
            wire: BytesMut::new(),
            decoder: FrameDecoder::new(),
            hpack: loona_hpack::Decoder::new(),
        }
    }

    /// Feeds bytes to the server in one piece.
    fn send(&mut self, bytes: &[u8]) {
        let mut buf = BytesMut::from(bytes);
        self.conn.recv(&mut buf, self.now);
        assert!(buf.is_empty() || self.conn.is_closed() || buf.len() < 9 + 16_384);
    }

    /// Feeds bytes one at a time.
    fn send_bytewise(&mut self, bytes: &[u8]) {
        let mut buf = BytesMut::new();
        for b in bytes {
            buf.extend_from_slice(&[*b]);
            self.conn.recv(&mut buf, self.now);
        }
        assert!(buf.is_empty());
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.conn.handle_timeout(self.now);
    }

    /// Everything the server sends now, as frames.
    fn frames(&mut self) -> Vec<Frame> {
        let mut chunks = Vec::new();
        while self.conn.poll_transmit(&mut chunks) {}
        for c in chunks {
            self.wire.extend_from_slice(&c);
        }
        let mut out = Vec::new();
        while let Some(f) = self.decoder.decode(&mut self.wire).expect("server sent a bad frame") {
            out.push(f);
        }
        out
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    /// Decodes a response head's field block.
    fn fields(&mut self, block: &[u8]) -> Vec<(String, String)> {
        self.hpack
            .decode(block)
            .expect("valid HPACK")
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    /// Opens stream `n` with a GET and returns the Request event's stream.
    fn open(&mut self, n: u32) {
        self.send(&headers(n, &get("/"), true));
        let events = self.events();
        assert!(
            matches!(events.as_slice(), [Event::Request { id, end_stream: true, .. }] if *id == StreamId::new(n)),
            "{events:?}"
        );
    }

    /// The GOAWAY the server sent, if any, among `frames`.
    fn goaway(frames: &[Frame]) -> Option<&GoAway> {
        frames.iter().find_map(|f| match f {
            Frame::GoAway(g) => Some(g),
            _ => None,
        })
    }

    fn expect_goaway(&mut self, reason: Reason) -> GoAway {
        let frames = self.frames();
        let g =
            Client::goaway(&frames).unwrap_or_else(|| panic!("no GOAWAY in {frames:?}")).clone();
        assert_eq!(g.reason, reason, "{g:?}");
        assert!(self.conn.is_closed() || reason == Reason::NO_ERROR);
        g
    }

    fn expect_reset(&mut self, stream: u32, reason: Reason) {
        let frames = self.frames();
        assert!(
            frames.contains(&Frame::RstStream(RstStream::new(id(stream), reason))),
            "expected RST_STREAM({stream}, {reason}) in {frames:?}"
        );
        assert!(!self.conn.is_closed());
    }
}

#[test]
fn a_get_is_answered_with_headers_and_data() {
    let mut c = Client::new();
    c.send(&headers(1, &get("/hello?x=1"), true));
    let events = c.events();
    let [Event::Request { id: sid, head, end_stream: true }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(*sid, id(1));
    assert_eq!(head.method, http::Method::GET);
    assert_eq!(head.target.to_uri().path(), "/hello");
    assert_eq!(head.target.to_uri().query(), Some("x=1"));
    let mut h = HeaderMap::new();
    h.insert("content-type", "text/plain".parse().unwrap());
    c.conn.send_response(id(1), StatusCode::OK, &h, false).unwrap();
    c.conn.send_data(id(1), Bytes::from_static(b"hello"), true).unwrap();
    let frames = c.frames();
    let Frame::Headers(hf) = &frames[0] else { panic!("{frames:?}") };
    assert!(hf.end_headers && !hf.end_stream);
    let fields = c.fields(&hf.fragment.clone());
    assert_eq!(fields[0], (":status".into(), "200".into()));
    assert!(fields.contains(&("content-type".into(), "text/plain".into())));
    assert_eq!(frames[1], Frame::Data(Data::new(id(1), Bytes::from_static(b"hello"), true)));
    assert_eq!(c.conn.open_streams(), 0);
    assert!(c.conn.send_data(id(1), Bytes::from_static(b"x"), true).is_err());
}

#[test]
fn input_split_at_every_byte_gives_the_same_request() {
    let now = Instant::now();
    let mut conn = Connection::new(Config::default(), now);
    let mut input = PREFACE.to_vec();
    input.extend(settings(Settings::default()));
    input.extend(headers(1, &get("/a"), false));
    input.extend(data(1, b"body", true));
    let mut c = Client::unopened(now);
    let _ = conn.poll_event();
    c.send_bytewise(&input);
    let events = c.events();
    assert!(matches!(&events[0], Event::Request { end_stream: false, .. }), "{events:?}");
    assert!(
        matches!(&events[1], Event::Data { data, end_stream: true, .. } if &data[..] == b"body")
    );
}

#[test]
fn a_bad_preface_closes_without_goaway() {
    let mut conn = Connection::new(Config::default(), Instant::now());
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
    conn.recv(&mut buf, Instant::now());
    assert!(conn.is_closed());
    let mut chunks = Vec::new();
    let _ = conn.poll_transmit(&mut chunks);
    let sent: Vec<u8> = chunks.concat();
    assert!(!sent.is_empty()); // our SETTINGS were already queued...
    let mut wire = BytesMut::from(&sent[..]);
    let mut dec = FrameDecoder::new();
    while let Some(f) = dec.decode(&mut wire).unwrap() {
        assert!(!matches!(f, Frame::GoAway(_)), "...but no GOAWAY follows");
    }
}

#[test]
fn the_first_frame_must_be_settings() {
    let mut conn = Connection::new(Config::default(), Instant::now());
    let mut input = PREFACE.to_vec();
    input.extend(ping([0; 8]));
    let mut buf = BytesMut::from(&input[..]);
    conn.recv(&mut buf, Instant::now());
    assert!(conn.is_closed());
    let mut chunks = Vec::new();
    let _ = conn.poll_transmit(&mut chunks);
    let mut wire = BytesMut::from(&chunks.concat()[..]);
    let mut dec = FrameDecoder::new();
    let mut frames = Vec::new();
    while let Some(f) = dec.decode(&mut wire).unwrap() {
        frames.push(f);
    }
    assert_eq!(Client::goaway(&frames).unwrap().reason, Reason::PROTOCOL_ERROR);
}

#[test]
fn streams_past_max_concurrent_streams_are_refused() {
    let mut c = Client::with(|l| l.h2.max_concurrent_streams = 2);
    c.send(&headers(1, &get("/"), false));
    c.send(&headers(3, &get("/"), false));
    c.send(&headers(5, &get("/"), false));
    let requests = c.events().iter().filter(|e| matches!(e, Event::Request { .. })).count();
    assert_eq!(requests, 2);
    c.expect_reset(5, Reason::REFUSED_STREAM);
    // Once a stream finishes, a new one is accepted.
    c.conn.send_response(id(1), StatusCode::OK, &HeaderMap::new(), true).unwrap();
    c.send(&data(1, b"", true));
    let _ = c.events();
    c.send(&headers(7, &get("/"), true));
    assert!(matches!(c.events().as_slice(), [Event::Request { .. }]));
}

#[test]
fn rapid_reset_gets_goaway_enhance_your_calm() {
    let mut c = Client::with(|l| {
        l.h2.client_resets = FloodBudget { max: 10, window: Duration::from_secs(10) }
    });
    for i in 0..10 {
        let n = 1 + 2 * i;
        c.send(&headers(n, &get("/"), false));
        c.send(&rst(n, Reason::CANCEL));
    }
    let events = c.events();
    assert_eq!(
        events.iter().filter(|e| matches!(e, Event::Reset { by_peer: true, .. })).count(),
        10
    );
    assert!(!c.conn.is_closed());
    c.send(&headers(21, &get("/"), false));
    c.send(&rst(21, Reason::CANCEL));
    let g = c.expect_goaway(Reason::ENHANCE_YOUR_CALM);
    assert_eq!(g.last_stream_id, id(21));
    assert_eq!(&g.debug_data[..], b"client_resets");
}

#[test]
fn resets_spread_over_windows_are_fine() {
    let mut c = Client::with(|l| {
        l.h2.client_resets = FloodBudget { max: 5, window: Duration::from_secs(1) }
    });
    for i in 0..20 {
        let n = 1 + 2 * i;
        c.send(&headers(n, &get("/"), false));
        c.send(&rst(n, Reason::CANCEL));
        c.advance(Duration::from_millis(300));
    }
    assert!(!c.conn.is_closed());
}

#[test]
fn ping_is_answered_and_a_ping_flood_gets_goaway() {
    let mut c = Client::with(|l| {
        l.h2.ping_frames = FloodBudget { max: 3, window: Duration::from_secs(10) }
    });
    c.send(&ping(*b"12345678"));
    assert_eq!(c.frames(), vec![Frame::Ping(Ping::new(*b"12345678").pong())]);
    c.send(&[ping([1; 8]), ping([2; 8]), ping([3; 8])].concat());
    c.expect_goaway(Reason::ENHANCE_YOUR_CALM);
}

#[test]
fn settings_flood_gets_goaway() {
    let mut c = Client::new();
    for _ in 0..49 {
        c.send(&settings(Settings::default()));
    }
    assert!(!c.conn.is_closed());
    assert_eq!(c.frames().len(), 49, "one ACK per SETTINGS");
    c.send(&settings(Settings::default()));
    c.expect_goaway(Reason::ENHANCE_YOUR_CALM);
}

#[test]
fn unread_control_replies_are_capped() {
    // A client that sends PINGs but never reads our answers: the server stops queueing.
    let mut c = Client::with(|l| {
        l.h2.ping_frames = FloodBudget { max: 1_000_000, window: Duration::from_secs(10) };
        l.h2.max_queued_control_frames = 50;
    });
    let flood: Vec<u8> = (0..50).flat_map(|_| ping([7; 8])).collect();
    c.send(&flood);
    assert!(!c.conn.is_closed());
    c.send(&ping([7; 8]));
    assert!(c.conn.is_closed());
    let frames = c.frames();
    assert_eq!(Client::goaway(&frames).unwrap().reason, Reason::ENHANCE_YOUR_CALM);
}

#[test]
fn priority_frames_are_parsed_ignored_and_budgeted() {
    let mut c = Client::with(|l| {
        l.h2.priority_frames = FloodBudget { max: 5, window: Duration::from_secs(10) }
    });
    let p = |n| {
        encode(|b| {
            Priority {
                stream_id: id(n),
                dependency: StreamDependency { dependency: id(0), weight: 7, exclusive: false },
            }
            .encode(b)
        })
    };
    for n in 0..5 {
        c.send(&p(1 + 2 * n));
    }
    assert!(c.frames().is_empty() && !c.conn.is_closed());
    c.open(1); // PRIORITY on an idle stream does not open it
    c.send(&p(99));
    c.expect_goaway(Reason::ENHANCE_YOUR_CALM);
}

#[test]
fn continuation_flood_is_cut_off_by_frame_count_and_size() {
    let mut c = Client::with(|l| l.h2.max_header_block_frames = 4);
    let start = encode(|b| Headers::new(id(1), Bytes::new(), false, false).encode(b));
    let cont = encode(|b| Continuation::new(id(1), Bytes::from_static(b"\x00"), false).encode(b));
    c.send(&start);
    c.send(&[cont.clone(), cont.clone(), cont.clone()].concat());
    assert!(!c.conn.is_closed());
    c.send(&cont);
    let g = c.expect_goaway(Reason::ENHANCE_YOUR_CALM);
    assert_eq!(&g.debug_data[..], b"max_header_block_frames");

    let mut c = Client::with(|l| l.h2.max_header_block_size = 20_000);
    let big = Bytes::from(vec![0u8; 16_000]);
    c.send(&encode(|b| Headers::new(id(1), big.clone(), false, false).encode(b)));
    assert!(!c.conn.is_closed());
    c.send(&encode(|b| Continuation::new(id(1), big, false).encode(b)));
    let g = c.expect_goaway(Reason::ENHANCE_YOUR_CALM);
    assert_eq!(&g.debug_data[..], b"max_header_block_size");
}

#[test]
fn a_header_block_left_open_times_out() {
    let mut c = Client::new();
    let mut first = get("/");
    let rest = first.split_off(4);
    c.send(&encode(|b| Headers::new(id(1), Bytes::from(first), false, false).encode(b)));
    c.advance(Duration::from_secs(29));
    assert!(!c.conn.is_closed());
    c.advance(Duration::from_secs(2));
    c.expect_goaway(Reason::ENHANCE_YOUR_CALM);
    let _ = rest;
}

#[test]
fn a_block_split_over_continuations_is_one_request() {
    let mut c = Client::new();
    let block = get("/split");
    let (a, b) = block.split_at(5);
    let (b, d) = b.split_at(7);
    c.send(&encode(|x| Headers::new(id(1), Bytes::copy_from_slice(a), true, false).encode(x)));
    c.send(&encode(|x| Continuation::new(id(1), Bytes::copy_from_slice(b), false).encode(x)));
    c.send(&encode(|x| Continuation::new(id(1), Bytes::copy_from_slice(d), true).encode(x)));
    let events = c.events();
    assert!(
        matches!(&events[..], [Event::Request { head, end_stream: true, .. }] if head.target.to_uri().path() == "/split")
    );
}

#[test]
fn empty_data_flood_gets_goaway() {
    let mut c = Client::with(|l| {
        l.h2.empty_frames = FloodBudget { max: 3, window: Duration::from_secs(10) }
    });
    c.send(&headers(1, &get("/"), false));
    for _ in 0..3 {
        c.send(&data(1, b"", false));
    }
    assert!(!c.conn.is_closed());
    c.send(&data(1, b"", false));
    c.expect_goaway(Reason::ENHANCE_YOUR_CALM);
}

#[test]
fn request_body_flow_control_is_enforced_and_windows_reopen_when_released() {
    let mut c = Client::with(|l| {
        l.h2.initial_stream_window = 65_535;
        l.h2.initial_connection_window = 65_535 * 4;
    });
    c.send(&headers(1, &get("/"), false));
    let _ = c.events();
    let chunk = vec![b'x'; 16_000];
    for _ in 0..4 {
        c.send(&data(1, &chunk, false));
    }
    let got: usize = c
        .events()
        .iter()
        .map(|e| match e {
            Event::Data { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(got, 64_000);
    assert!(c.frames().is_empty(), "nothing released, no WINDOW_UPDATE");
    // Beyond the stream window (65,535): a stream error.
    c.send(&data(1, &chunk, false));
    c.expect_reset(1, Reason::FLOW_CONTROL_ERROR);

    // Releasing reopens the window with one WINDOW_UPDATE per half window.
    let mut c = Client::with(|l| l.h2.initial_stream_window = 65_535);
    c.send(&headers(1, &get("/"), false));
    let _ = c.events();
    c.send(&data(1, &chunk, false));
    c.conn.release_capacity(id(1), 16_000);
    assert!(c.frames().is_empty(), "16,000 < half the window: not yet");
    c.send(&data(1, &chunk, false));
    c.conn.release_capacity(id(1), 16_000);
    assert!(c.frames().is_empty(), "32,000 < half the window: not yet");
    c.send(&data(1, &chunk, false));
    c.conn.release_capacity(id(1), 16_000);
    let frames = c.frames();
    assert!(frames.contains(&Frame::WindowUpdate(WindowUpdate::new(id(1), 48_000))), "{frames:?}");
}

#[test]
fn data_beyond_the_connection_window_is_a_connection_error() {
    let mut c = Client::with(|l| {
        l.h2.initial_connection_window = 65_535;
        l.h2.initial_stream_window = 1 << 20;
    });
    let chunk = vec![b'x'; 16_000];
    for n in [1, 3] {
        c.send(&headers(n, &get("/"), false));
        c.send(&data(n, &chunk, false));
        c.send(&data(n, &chunk, false));
    }
    assert!(!c.conn.is_closed());
    c.send(&data(1, &chunk, false));
    c.expect_goaway(Reason::FLOW_CONTROL_ERROR);
}

#[test]
fn response_body_waits_for_the_clients_window() {
    let mut c = Client::new();
    c.open(1);
    c.conn.send_response(id(1), StatusCode::OK, &HeaderMap::new(), false).unwrap();
    c.conn.send_data(id(1), Bytes::from(vec![1u8; 100_000]), true).unwrap();
    let sent: usize = c
        .frames()
        .iter()
        .map(|f| match f {
            Frame::Data(d) => d.data.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(sent, 65_535, "the default window");
    assert_eq!(c.conn.stream_buffered(id(1)), Some(100_000 - 65_535));
    c.send(&window_update(1, 50_000));
    assert!(c.frames().is_empty(), "the connection window is still closed");
    c.send(&window_update(0, 50_000));
    let frames = c.frames();
    let rest: usize = frames
        .iter()
        .map(|f| match f {
            Frame::Data(d) => d.data.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(rest, 100_000 - 65_535);
    assert!(matches!(frames.last(), Some(Frame::Data(d)) if d.end_stream));
    assert_eq!(c.conn.open_streams(), 0);
}

#[test]
fn settings_initial_window_changes_apply_to_open_streams() {
    let mut c = Client::new();
    c.send(&settings(Settings { initial_window_size: Some(0), ..Settings::default() }));
    let _ = c.frames();
    c.open(1);
    c.conn.send_response(id(1), StatusCode::OK, &HeaderMap::new(), false).unwrap();
    c.conn.send_data(id(1), Bytes::from_static(b"abc"), true).unwrap();
    assert!(matches!(c.frames().as_slice(), [Frame::Headers(_)]), "window 0: headers only");
    c.send(&settings(Settings { initial_window_size: Some(10), ..Settings::default() }));
    let frames = c.frames();
    assert!(frames.contains(&Frame::Data(Data::new(id(1), Bytes::from_static(b"abc"), true))));
}

#[test]
fn window_overflow_is_flow_control_error() {
    let mut c = Client::new();
    c.open(1);
    c.conn.send_response(id(1), StatusCode::OK, &HeaderMap::new(), false).unwrap();
    c.send(&window_update(1, (1 << 31) - 1));
    c.expect_reset(1, Reason::FLOW_CONTROL_ERROR);
    c.send(&window_update(0, (1 << 31) - 1));
    c.expect_goaway(Reason::FLOW_CONTROL_ERROR);
}

#[test]
fn made_you_reset_is_budgeted() {
    // Each WINDOW_UPDATE overflow makes the server reset a stream (CVE-2025-8671).
    let mut c = Client::with(|l| {
        l.h2.server_resets = FloodBudget { max: 5, window: Duration::from_secs(10) }
    });
    for i in 0..5 {
        let n = 1 + 2 * i;
        c.open(n);
        c.send(&window_update(n, (1 << 31) - 1));
        c.expect_reset(n, Reason::FLOW_CONTROL_ERROR);
        let _ = c.events();
    }
    c.open(11);
    c.send(&window_update(11, (1 << 31) - 1));
    c.expect_goaway(Reason::ENHANCE_YOUR_CALM);
}

#[test]
fn content_length_must_match_the_data() {
    let mut c = Client::new();
    let mut b = get("/");
    literal("content-length", "3", &mut b);
    c.send(&headers(1, &b, false));
    c.send(&data(1, b"four", true));
    c.expect_reset(1, Reason::PROTOCOL_ERROR);
    c.send(&headers(3, &b, false));
    c.send(&data(3, b"ab", true));
    c.expect_reset(3, Reason::PROTOCOL_ERROR);
    c.send(&headers(5, &b, false));
    c.send(&data(5, b"abc", true));
    assert!(c.frames().is_empty());
}

#[test]
fn frames_on_idle_and_closed_streams() {
    let mut c = Client::new();
    c.open(1);
    c.conn.send_response(id(1), StatusCode::OK, &HeaderMap::new(), true).unwrap();
    let _ = c.frames();
    // Stream 1 is closed (END_STREAM both ways): DATA on it is STREAM_CLOSED.
    c.send(&data(1, b"late", false));
    c.expect_reset(1, Reason::STREAM_CLOSED);
    // An even (server) stream id is a connection error.
    c.send(&headers(2, &get("/"), true));
    c.expect_goaway(Reason::PROTOCOL_ERROR);

    let mut c = Client::new();
    c.send(&data(5, b"x", false));
    c.expect_goaway(Reason::PROTOCOL_ERROR);

    let mut c = Client::new();
    c.open(1);
    c.send(&headers(1, &get("/"), true)); // HEADERS after END_STREAM
    c.expect_reset(1, Reason::STREAM_CLOSED);
}

#[test]
fn a_reset_streams_late_frames_are_ignored() {
    let mut c = Client::new();
    c.send(&headers(1, &get("/"), false));
    let _ = c.events();
    c.conn.reset_stream(id(1), Reason::CANCEL);
    c.expect_reset(1, Reason::CANCEL);
    c.send(&data(1, b"in flight", false));
    assert!(c.frames().is_empty());
}

#[test]
fn push_promise_from_a_client_is_a_connection_error() {
    let mut c = Client::new();
    let pp = encode(|b| {
        frame::Head::new(frame::Kind::PushPromise, frame::flags::END_HEADERS, id(1), 4).encode(b);
        b.extend_from_slice(&2u32.to_be_bytes());
    });
    c.send(&pp);
    c.expect_goaway(Reason::PROTOCOL_ERROR);
}

#[test]
fn trailers_both_ways() {
    let mut c = Client::new();
    c.send(&headers(1, &get("/"), false));
    c.send(&data(1, b"body", false));
    c.send(&headers(1, &block(&[("x-checksum", "abc")]), true));
    let events = c.events();
    assert!(
        matches!(&events[2], Event::Trailers { trailers, .. } if trailers["x-checksum"] == "abc"),
        "{events:?}"
    );
    c.conn.send_response(id(1), StatusCode::OK, &HeaderMap::new(), false).unwrap();
    c.conn.send_data(id(1), Bytes::from_static(b"resp"), false).unwrap();
    let mut t = HeaderMap::new();
    t.insert("grpc-status", "0".parse().unwrap());
    c.conn.send_trailers(id(1), t).unwrap();
    let frames = c.frames();
    assert!(matches!(&frames[1], Frame::Data(d) if !d.end_stream));
    let Frame::Headers(h) = &frames[2] else { panic!("{frames:?}") };
    assert!(h.end_stream);
    let fields = c.fields(&h.fragment.clone());
    assert_eq!(fields, vec![("grpc-status".to_string(), "0".to_string())]);
    assert_eq!(c.conn.open_streams(), 0);

    // Trailers without END_STREAM are malformed.
    c.send(&headers(3, &get("/"), false));
    c.send(&headers(3, &block(&[("x", "y")]), false));
    c.expect_reset(3, Reason::PROTOCOL_ERROR);
}

#[test]
fn graceful_shutdown_is_two_goaways_around_a_ping() {
    let mut c = Client::new();
    c.open(1);
    c.conn.go_away(c.now);
    let frames = c.frames();
    assert_eq!(
        frames[0],
        Frame::GoAway(GoAway::new(StreamId::MAX, Reason::NO_ERROR, Bytes::new()))
    );
    let Frame::Ping(p) = frames[1] else { panic!("{frames:?}") };
    assert!(!c.conn.is_accepting());
    // A stream opened before the client saw the GOAWAY is still served.
    c.open(3);
    c.send(&encode(|b| p.pong().encode(b)));
    assert_eq!(c.frames(), vec![Frame::GoAway(GoAway::new(id(3), Reason::NO_ERROR, Bytes::new()))]);
    // Streams after the final GOAWAY are ignored.
    c.send(&headers(5, &get("/"), true));
    assert!(c.events().is_empty());
    for n in [1, 3] {
        c.conn.send_response(id(n), StatusCode::OK, &HeaderMap::new(), true).unwrap();
    }
    assert!(!c.conn.is_closed() || c.conn.open_streams() == 0);
    let _ = c.frames();
    assert!(c.conn.is_closed());
}

#[test]
fn graceful_shutdown_without_a_ping_answer_still_finishes() {
    let mut c = Client::new();
    c.conn.go_away(c.now);
    let _ = c.frames();
    c.advance(Duration::from_secs(2));
    let frames = c.frames();
    assert_eq!(
        frames,
        vec![Frame::GoAway(GoAway::new(StreamId::ZERO, Reason::NO_ERROR, Bytes::new()))]
    );
    assert!(c.conn.is_closed());
}

#[test]
fn a_shutdown_before_the_client_preface_serves_the_requests_right_behind_it() {
    let now = Instant::now();
    let mut c = Client::unopened(now);
    let _ = c.frames(); // the server's preface
    c.conn.go_away(c.now);
    assert!(c.frames().is_empty(), "nothing until the client has spoken");
    // The client's preface, SETTINGS and first request arrive together.
    let mut hello = PREFACE.to_vec();
    hello.extend(settings(Settings::default()));
    hello.extend(headers(1, &get("/"), true));
    c.send(&hello);
    assert!(matches!(c.events()[..], [Event::Request { .. }]));
    let frames = c.frames();
    let goaway = frames.iter().find_map(|f| match f {
        Frame::GoAway(g) => Some(g.last_stream_id),
        _ => None,
    });
    assert_eq!(goaway, Some(StreamId::MAX), "the first of the two GOAWAYs: {frames:?}");
    let ping = frames.iter().find_map(|f| match f {
        Frame::Ping(p) => Some(*p),
        _ => None,
    });
    c.send(&encode(|b| ping.expect("a PING").pong().encode(b)));
    assert_eq!(c.frames(), vec![Frame::GoAway(GoAway::new(id(1), Reason::NO_ERROR, Bytes::new()))]);
    c.conn.send_response(id(1), StatusCode::OK, &HeaderMap::new(), true).unwrap();
    let _ = c.frames();
    assert!(c.conn.is_closed());

    // A client that never sends its preface is let go after GOAWAY_PING_TIMEOUT.
    let mut c = Client::unopened(now);
    let _ = c.frames();
    c.conn.go_away(c.now);
    c.advance(Duration::from_secs(2));
    assert_eq!(c.frames(), vec![Frame::GoAway(GoAway::new(id(0), Reason::NO_ERROR, Bytes::new()))]);
    assert!(c.conn.is_closed());
}

#[test]
fn idle_connections_get_goaway_no_error() {
    let mut c = Client::with(|l| l.keep_alive_timeout = Duration::from_secs(5));
    c.open(1);
    c.advance(Duration::from_secs(10));
    assert!(!c.conn.is_closed(), "a stream is open: not idle");
    c.conn.send_response(id(1), StatusCode::OK, &HeaderMap::new(), true).unwrap();
    let _ = c.frames();
    c.advance(Duration::from_secs(6));
    let g = c.expect_goaway(Reason::NO_ERROR);
    assert_eq!(g.last_stream_id, id(1));
    assert!(c.conn.is_closed());
}

#[test]
fn unacknowledged_settings_time_out() {
    let now = Instant::now();
    let mut c = Client::unopened(now);
    let _ = c.frames();
    let mut hello = PREFACE.to_vec();
    hello.extend(settings(Settings::default()));
    c.send(&hello);
    let _ = c.frames();
    c.advance(Duration::from_secs(11));
    c.expect_goaway(Reason::SETTINGS_TIMEOUT);
}

#[test]
fn keep_alive_pings_and_their_timeout() {
    let mut c = Client::with(|l| {
        l.h2.keep_alive_ping_interval = Some(Duration::from_secs(10));
        l.h2.keep_alive_ping_timeout = Duration::from_secs(5);
    });
    c.advance(Duration::from_secs(11));
    let frames = c.frames();
    let [Frame::Ping(p)] = frames.as_slice() else { panic!("{frames:?}") };
    c.send(&encode(|b| p.pong().encode(b)));
    c.advance(Duration::from_secs(6));
    assert!(!c.conn.is_closed());
    c.advance(Duration::from_secs(5)); // next ping due
    let _ = c.frames();
    c.advance(Duration::from_secs(6));
    c.expect_goaway(Reason::INTERNAL_ERROR);
}

#[test]
fn frame_size_errors_come_from_the_decoder() {
    let mut c = Client::new();
    let big = encode(|b| frame::Head::new(frame::Kind::Data, 0, id(1), 16_385).encode(b));
    c.send(&big);
    c.expect_goaway(Reason::FRAME_SIZE_ERROR);
}

#[test]
fn a_connection_error_resets_every_open_stream_for_the_application() {
    let mut c = Client::new();
    c.send(&headers(1, &get("/"), false));
    c.send(&headers(3, &get("/"), false));
    let _ = c.events();
    c.send(&window_update(0, (1 << 31) - 1));
    let events = c.events();
    assert!(matches!(events[0], Event::ConnectionError { reason: Reason::FLOW_CONTROL_ERROR, .. }));
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Reset { .. })).count(), 2);
}

#[test]
fn server_fields_are_added_unless_the_handler_set_them() {
    use crate::h2::server::ServerFields;
    let mut c = Client::new();
    c.open(1);
    let mut h = HeaderMap::new();
    h.insert("server", "app".parse().unwrap());
    let date = b"Sun, 22 Nov 2026 05:00:00 GMT";
    let fields = ServerFields { date, content_length: Some(1234) };
    c.conn.send_response_with(id(1), StatusCode::OK, &h, Some(fields), true).unwrap();
    let frames = c.frames();
    let Frame::Headers(hf) = &frames[0] else { panic!("{frames:?}") };
    let fields = c.fields(&hf.fragment.clone());
    let get =
        |n: &str| fields.iter().filter(|(k, _)| k == n).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    assert_eq!(get("server"), vec!["app".to_string()], "the handler's wins, once");
    assert_eq!(get("date"), vec![String::from_utf8(date.to_vec()).unwrap()]);
    assert_eq!(get("content-length"), vec!["1234".to_string()]);
}

/// A whole response from a kept start: a small body leaves in the same batch as its head,
/// and the stream is gone at once; where the client's window holds the body back, it waits
/// in the stream's queue and leaves when the window opens, as any DATA does.
#[test]
fn a_whole_response_goes_at_once_where_the_window_allows_and_waits_where_it_does_not() {
    use crate::h2::ResponseStart;
    let date = b"Sun, 22 Nov 2026 05:00:00 GMT";
    let start = ResponseStart::encode(StatusCode::OK, &HeaderMap::new(), Some(3));
    let body = || Some(Bytes::from_static(b"abc"));
    let data = |n| Frame::Data(Data::new(id(n), Bytes::from_static(b"abc"), true));

    let mut c = Client::new();
    c.open(1);
    c.conn.send_response_from(id(1), &start, date, body()).unwrap();
    assert_eq!(c.conn.open_streams(), 0, "sent whole: nothing left of the stream");
    let frames = c.frames();
    assert!(matches!(&frames[..], [Frame::Headers(h), d] if !h.end_stream && *d == data(1)));
    assert!(c.conn.send_response_from(id(1), &start, date, body()).is_err(), "gone");

    // A head alone ends the stream (HEAD, or no body).
    c.open(3);
    c.conn.send_response_from(id(3), &start, date, None).unwrap();
    assert!(matches!(&c.frames()[..], [Frame::Headers(h)] if h.end_stream));

    c.send(&settings(Settings { initial_window_size: Some(0), ..Settings::default() }));
    let _ = c.frames();
    c.open(5);
    c.conn.send_response_from(id(5), &start, date, body()).unwrap();
    assert!(matches!(&c.frames()[..], [Frame::Headers(_)]), "window 0: the head only");
    assert_eq!(c.conn.open_streams(), 1, "the body waits on its stream");
    c.send(&settings(Settings { initial_window_size: Some(10), ..Settings::default() }));
    assert!(c.frames().contains(&data(5)));
    assert_eq!(c.conn.open_streams(), 0);
}

/// A response that is complete while the request body is still open ends the stream with
/// RST_STREAM NO_ERROR (RFC 9113 §8.1), but only once the whole response has left: DATA held
/// back by the client's window goes first. A 2xx to CONNECT is a tunnel and is not reset.
#[test]
fn a_complete_response_stops_an_unfinished_request_after_its_last_byte() {
    let mut c = Client::new();
    let post = block(&[
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "example.com"),
        (":path", "/upload"),
    ]);
    c.send(&headers(1, &post, false));
    c.send(&data(1, b"part", false));
    let _ = c.events();
    c.conn.send_response(id(1), StatusCode::OK, &HeaderMap::new(), false).unwrap();
    c.conn.send_data(id(1), Bytes::from(vec![7u8; 100_000]), true).unwrap();
    let body_bytes = |frames: &[Frame]| -> usize {
        frames.iter().map(|f| if let Frame::Data(d) = f { d.data.len() } else { 0 }).sum()
    };
    let first = c.frames();
    assert_eq!(body_bytes(&first), 65_535, "the default window holds the rest back");
    assert!(!first.iter().any(|f| matches!(f, Frame::RstStream(_))), "{first:?}");
    assert_eq!(c.conn.open_streams(), 1);

    c.send(&window_update(0, 100_000));
    c.send(&window_update(1, 100_000));
    let rest = c.frames();
    assert_eq!(body_bytes(&rest), 100_000 - 65_535);
    let [.., Frame::Data(last), Frame::RstStream(r)] = rest.as_slice() else { panic!("{rest:?}") };
    assert!(last.end_stream);
    assert_eq!(*r, RstStream::new(id(1), Reason::NO_ERROR), "after the last byte");
    assert_eq!(c.conn.open_streams(), 0, "the stream slot is free");
    c.send(&data(1, b"late", true));
    assert!(c.frames().is_empty(), "late DATA on the stopped stream is ignored");

    let connect = block(&[(":method", "CONNECT"), (":authority", "example.com:443")]);
    c.send(&headers(3, &connect, false));
    let _ = c.events();
    c.conn.send_response(id(3), StatusCode::OK, &HeaderMap::new(), false).unwrap();
    c.conn.send_data(id(3), Bytes::from_static(b"bye"), true).unwrap();
    let frames = c.frames();
    assert!(!frames.iter().any(|f| matches!(f, Frame::RstStream(_))), "{frames:?}");
    c.send(&data(3, b"still here", true));
    let events = c.events();
    assert!(
        matches!(&events[..], [Event::Data { id: i, end_stream: true, .. }] if *i == id(3)),
        "a tunnel's halves close apart: {events:?}"
    );
    assert_eq!(c.conn.open_streams(), 0);
}

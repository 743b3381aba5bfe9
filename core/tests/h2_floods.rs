//! HTTP/2 abuse over real sockets: a raw-frame client sends each malformed request and each
//! flood, and checks the exact RST_STREAM or GOAWAY code; then a new client must be served
//! normally (an attack on one connection never takes the server down for others).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{addr, finish, start};
use peregrine::{IoChoice, Limits};
use peregrine_protocols::h2::frame::{
    Continuation, Data, FrameDecoder, Headers, Ping, RstStream, Settings, WindowUpdate,
};
use peregrine_protocols::h2::preface::PREFACE;
use peregrine_protocols::h2::{Frame, Reason, StreamId};

/// HPACK literal without indexing, new name, no Huffman (RFC 7541 §6.2.2); lengths < 127.
fn literal(name: &str, value: &str, dst: &mut Vec<u8>) {
    assert!(name.len() < 127 && value.len() < 127);
    dst.push(0);
    dst.push(name.len() as u8);
    dst.extend_from_slice(name.as_bytes());
    dst.push(value.len() as u8);
    dst.extend_from_slice(value.as_bytes());
}

/// A request's header block: the four pseudo-headers for `method` and `path`.
fn request(method: &str, path: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in
        [(":method", method), (":scheme", "http"), (":authority", "localhost"), (":path", path)]
    {
        literal(n, v, &mut b);
    }
    b
}

/// `GET /plaintext` to `authority`.
fn authority_block(authority: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in
        [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", "/")]
    {
        literal(n, v, &mut b);
    }
    b
}

/// `GET /plaintext` with `extra` fields after the pseudo-headers.
fn request_block(extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = request("GET", "/plaintext");
    for (n, v) in extra {
        literal(n, v, &mut b);
    }
    b
}

fn frame(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut b = BytesMut::new();
    f(&mut b);
    b.to_vec()
}

fn headers(id: u32, block: Vec<u8>, end_stream: bool) -> Vec<u8> {
    frame(|b| Headers::new(StreamId::new(id), Bytes::from(block), end_stream, true).encode(b))
}

/// A raw HTTP/2 client over a blocking socket with bounded reads.
struct Raw {
    tcp: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

/// What the server ended with.
#[derive(Debug, PartialEq)]
enum End {
    GoAway(Reason),
    Reset(u32, Reason),
    Closed,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        Raw::connect_with(addr, Settings::default())
    }

    /// Connects, sends the preface with `settings`, and acknowledges the server's SETTINGS.
    fn connect_with(addr: SocketAddr, settings: Settings) -> Raw {
        let mut raw = Raw::connect_unacked(addr, settings);
        raw.send(&frame(|b| Settings::ack().encode(b)));
        raw
    }

    /// Connects and sends the preface with `settings`, leaving the server's SETTINGS
    /// unacknowledged (as a client that has not read them yet).
    fn connect_unacked(addr: SocketAddr, settings: Settings) -> Raw {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut raw = Raw { tcp, buf: BytesMut::new(), decoder: FrameDecoder::new() };
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(|b| settings.encode(b)));
        raw.send(&hello);
        raw
    }

    fn send(&mut self, bytes: &[u8]) {
        // The server may close mid-flood: a write error then is expected.
        let _ = self.tcp.write_all(bytes);
    }

    /// Reads frames until `want` matches one (or the connection ends), within 10 s.
    fn until(&mut self, mut want: impl FnMut(&Frame) -> Option<End>) -> End {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut chunk = [0u8; 16 * 1024];
        loop {
            while let Ok(Some(f)) = self.decoder.decode(&mut self.buf) {
                if let Some(end) = want(&f) {
                    return end;
                }
            }
            assert!(Instant::now() < deadline, "no answer within 10 s");
            match self.tcp.read(&mut chunk) {
                Ok(0) => return End::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return End::Closed,
            }
        }
    }

    fn goaway_or_reset(&mut self) -> End {
        self.until(|f| match f {
            Frame::GoAway(g) => Some(End::GoAway(g.reason)),
            Frame::RstStream(r) => Some(End::Reset(r.stream_id.value(), r.reason)),
            _ => None,
        })
    }

    fn goaway(&mut self) -> End {
        self.until(|f| match f {
            Frame::GoAway(g) => Some(End::GoAway(g.reason)),
            _ => None,
        })
    }

    /// Sends a GET on stream `id` and waits for its response HEADERS.
    fn served(&mut self, id: u32) -> bool {
        self.send(&headers(id, request_block(&[]), true));
        self.until(|f| match f {
            Frame::Headers(h) if h.stream_id.value() == id => Some(End::Closed),
            Frame::GoAway(g) => Some(End::GoAway(g.reason)),
            Frame::RstStream(r) if r.stream_id.value() == id => Some(End::Reset(id, r.reason)),
            _ => None,
        }) == End::Closed
    }
}

fn limits() -> Limits {
    Limits::default()
}

/// Each malformed request gets RST_STREAM PROTOCOL_ERROR on its stream, never a response;
/// the connection goes on serving.
fn malformed_requests_are_reset(io: IoChoice) {
    let server = start(io, limits());
    let a = addr(&server);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("uppercase name", request_block(&[("X-Upper", "1")])),
        ("connection header", request_block(&[("connection", "keep-alive")])),
        ("te other than trailers", request_block(&[("te", "gzip")])),
        ("unknown pseudo", request_block(&[(":bogus", "1")])),
        ("duplicate pseudo", {
            let mut b = request_block(&[]);
            literal(":path", "/again", &mut b);
            b
        }),
        ("pseudo after regular", {
            let mut b = request_block(&[("x-a", "1")]);
            literal(":status", "200", &mut b);
            b
        }),
        ("missing :path", {
            let mut b = Vec::new();
            for (n, v) in [(":method", "GET"), (":scheme", "http"), (":authority", "x")] {
                literal(n, v, &mut b);
            }
            b
        }),
        ("bad value", request_block(&[("x-a", "a\u{0}b")])),
        ("userinfo in :authority", authority_block("user@x")),
        (":authority port past 65535", authority_block("x:65536")),
        ("invalid host without :authority", {
            let mut b = Vec::new();
            for (n, v) in [(":method", "GET"), (":scheme", "http"), (":path", "/"), ("host", "a b")]
            {
                literal(n, v, &mut b);
            }
            b
        }),
        ("bad content-length", request_block(&[("content-length", "12x")])),
        // A fragment is in neither the path nor the query grammar (refused in a request
        // line too).
        ("fragment in :path", {
            let mut b = Vec::new();
            for (n, v) in [(":method", "GET"), (":scheme", "http"), (":authority", "x")] {
                literal(n, v, &mut b);
            }
            literal(":path", "/a#b", &mut b);
            b
        }),
    ];
    let mut raw = Raw::connect(a);
    for (i, (what, block)) in cases.into_iter().enumerate() {
        let id = 1 + 2 * i as u32;
        raw.send(&headers(id, block, true));
        assert_eq!(raw.goaway_or_reset(), End::Reset(id, Reason::PROTOCOL_ERROR), "{what}");
    }
    assert!(raw.served(101), "the connection still serves after malformed requests");
    // content-length that does not match the DATA, sent to a handler that reads the body
    // (one that answers first ends the stream with NO_ERROR before the DATA is seen).
    let mut block = request("POST", "/collect");
    literal("content-length", "2", &mut block);
    raw.send(&headers(103, block, false));
    raw.send(&frame(|b| {
        let d = Data::new(StreamId::new(103), Bytes::from_static(b"abc"), true);
        d.encode_head(b);
        b.extend_from_slice(b"abc");
    }));
    assert_eq!(raw.goaway_or_reset(), End::Reset(103, Reason::PROTOCOL_ERROR));
    finish(server);
}

/// A field the client adds to the HPACK table (RFC 7541 §6.2.1) is judged again at each use
/// by index: the decoder checks an entry once when it is made, and a bad one must still be
/// refused every time, a good one served every time.
fn an_indexed_field_is_judged_at_every_use(io: IoChoice) {
    let server = start(io, limits());
    let mut raw = Raw::connect(addr(&server));
    let indexing = |name: &str, value: &str| {
        let mut b = request("GET", "/plaintext");
        b.push(0x40);
        for s in [name, value] {
            b.push(s.len() as u8);
            b.extend_from_slice(s.as_bytes());
        }
        b
    };
    let by_index = |index: u8| {
        let mut b = request("GET", "/plaintext");
        b.push(0x80 | index);
        b
    };
    let answer = |raw: &mut Raw, id: u32| {
        raw.until(|f| match f {
            Frame::Headers(h) if h.stream_id.value() == id => Some(End::Closed),
            Frame::RstStream(r) if r.stream_id.value() == id => Some(End::Reset(id, r.reason)),
            Frame::GoAway(g) => Some(End::GoAway(g.reason)),
            _ => None,
        })
    };
    let refused = |id| End::Reset(id, Reason::PROTOCOL_ERROR);
    // `te: gzip` enters the table at index 62.
    raw.send(&headers(1, indexing("te", "gzip"), true));
    assert_eq!(answer(&mut raw, 1), refused(1));
    raw.send(&headers(3, by_index(62), true));
    assert_eq!(answer(&mut raw, 3), refused(3), "the indexed bad field");
    // `user-agent: probe` enters at 62; `te: gzip` moves to 63.
    raw.send(&headers(5, indexing("user-agent", "probe"), true));
    assert_eq!(answer(&mut raw, 5), End::Closed, "a response");
    raw.send(&headers(7, by_index(62), true));
    assert_eq!(answer(&mut raw, 7), End::Closed, "the indexed good field");
    raw.send(&headers(9, by_index(63), true));
    assert_eq!(answer(&mut raw, 9), refused(9), "the bad field, older");
    finish(server);
}

/// Runs a flood and checks the GOAWAY code, then that a new client is served.
fn flood(
    io: IoChoice,
    tweak: impl FnOnce(&mut Limits),
    attack: impl FnOnce(&mut Raw),
    want: Reason,
) {
    let mut l = limits();
    tweak(&mut l);
    let server = start(io, l);
    let a = addr(&server);
    let mut raw = Raw::connect(a);
    attack(&mut raw);
    assert_eq!(raw.goaway(), End::GoAway(want));
    let mut fresh = Raw::connect(a);
    assert!(fresh.served(1), "a new client is served after the attack");
    common::assert_healthy(&server);
    finish(server);
}

fn rapid_reset(io: IoChoice) {
    flood(
        io,
        |_| {},
        |raw| {
            let mut burst = Vec::new();
            for i in 0..400u32 {
                let id = 1 + 2 * i;
                burst.extend(headers(id, request_block(&[]), false));
                burst
                    .extend(frame(|b| RstStream::new(StreamId::new(id), Reason::CANCEL).encode(b)));
            }
            raw.send(&burst);
        },
        Reason::ENHANCE_YOUR_CALM,
    );
}

fn made_you_reset(io: IoChoice) {
    // Each WINDOW_UPDATE overflow makes the server reset a stream (CVE-2025-8671).
    flood(
        io,
        |_| {},
        |raw| {
            let mut burst = Vec::new();
            for i in 0..200u32 {
                let id = 1 + 2 * i;
                burst.extend(headers(id, request_block(&[]), false));
                burst.extend(frame(|b| {
                    WindowUpdate::new(StreamId::new(id), (1 << 31) - 1).encode(b)
                }));
            }
            raw.send(&burst);
        },
        Reason::ENHANCE_YOUR_CALM,
    );
}

fn ping_flood(io: IoChoice) {
    flood(
        io,
        |_| {},
        |raw| {
            let burst: Vec<u8> =
                (0..500).flat_map(|_| frame(|b| Ping::new([1; 8]).encode(b))).collect();
            raw.send(&burst);
        },
        Reason::ENHANCE_YOUR_CALM,
    );
}

fn settings_flood(io: IoChoice) {
    flood(
        io,
        |_| {},
        |raw| {
            let burst: Vec<u8> =
                (0..200).flat_map(|_| frame(|b| Settings::default().encode(b))).collect();
            raw.send(&burst);
        },
        Reason::ENHANCE_YOUR_CALM,
    );
}

fn continuation_flood(io: IoChoice) {
    flood(
        io,
        |_| {},
        |raw| {
            let mut burst =
                frame(|b| Headers::new(StreamId::new(1), Bytes::new(), true, false).encode(b));
            for _ in 0..1000 {
                burst.extend(frame(|b| {
                    Continuation::new(StreamId::new(1), Bytes::new(), false).encode(b)
                }));
            }
            raw.send(&burst);
        },
        Reason::ENHANCE_YOUR_CALM,
    );
}

fn empty_data_flood(io: IoChoice) {
    flood(
        io,
        |_| {},
        |raw| {
            let mut burst = headers(1, request_block(&[]), false);
            for _ in 0..500 {
                burst.extend(frame(|b| {
                    Data::new(StreamId::new(1), Bytes::new(), false).encode_head(b)
                }));
            }
            raw.send(&burst);
        },
        Reason::ENHANCE_YOUR_CALM,
    );
}

fn hpack_bomb(io: IoChoice) {
    // One 4,000-byte value inserted into the dynamic table, then referenced thousands of
    // times in one small block: it would expand to ~40 MB; decoding stops at twice the limit.
    flood(
        io,
        |_| {},
        |raw| {
            let mut block = request_block(&[]);
            block.push(0x40); // literal with incremental indexing, new name
            block.push(5);
            block.extend_from_slice(b"x-big");
            block.extend_from_slice(&[0x7f, 0x81, 0x1e]); // length 4000 (127 + 3873)
            block.extend(std::iter::repeat_n(b'a', 4000));
            block.extend(std::iter::repeat_n(0xbe, 10_000)); // indexed: dynamic entry 62
            assert!(block.len() > 10_000 && block.len() < 16_000);
            raw.send(&frame(|b| {
                let mut block = Bytes::from(block);
                let first = block.split_to(10_000);
                Headers::new(StreamId::new(1), first, true, false).encode(b);
                Continuation::new(StreamId::new(1), block, true).encode(b);
            }));
        },
        Reason::COMPRESSION_ERROR,
    );
}

fn oversized_header_list_gets_431(io: IoChoice) {
    let server = start(io, limits());
    let a = addr(&server);
    let mut raw = Raw::connect(a);
    let mut extra = Vec::new();
    for i in 0..400 {
        extra.push((format!("x-h{i}"), "v".repeat(100)));
    }
    let extra: Vec<(&str, &str)> = extra.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let block = request_block(&extra);
    raw.send(&frame(|b| {
        let mut block = Bytes::from(block);
        let first = block.split_to(16_000);
        Headers::new(StreamId::new(1), first, true, false).encode(b);
        while !block.is_empty() {
            let next = block.split_to(block.len().min(16_000));
            Continuation::new(StreamId::new(1), next, block.is_empty()).encode(b);
        }
    }));
    let status = raw.until(|f| match f {
        Frame::Headers(h) if h.stream_id.value() == 1 => Some(End::Closed),
        Frame::GoAway(g) => Some(End::GoAway(g.reason)),
        _ => None,
    });
    assert_eq!(status, End::Closed, "a response, not a GOAWAY");
    assert!(raw.served(3));
    finish(server);
}

fn refused_past_max_concurrent_streams(io: IoChoice) {
    let server = start(io, limits());
    let a = addr(&server);
    let mut raw = Raw::connect(a);
    // /collect waits for a body that never comes: each stream stays open.
    let mut burst = Vec::new();
    for i in 0..101u32 {
        burst.extend(headers(1 + 2 * i, request("POST", "/collect"), false));
    }
    raw.send(&burst);
    assert_eq!(raw.goaway_or_reset(), End::Reset(201, Reason::REFUSED_STREAM));
    finish(server);
}

/// A client that opens streams before it has seen the server's SETTINGS (as the h2 crate
/// does) learns the limit from REFUSED_STREAM, and is not taken for a MadeYouReset attacker:
/// 200 refusals, twice the `server_resets` budget, and the connection still answers.
fn refusals_before_settings_ack_are_not_abuse(io: IoChoice) {
    let server = start(io, limits());
    let a = addr(&server);
    let mut raw = Raw::connect_unacked(a, Settings::default());
    let mut burst = Vec::new();
    for i in 0..300u32 {
        burst.extend(headers(1 + 2 * i, request("POST", "/collect"), false));
    }
    raw.send(&burst);
    let mut refused = 0;
    let end = raw.until(|f| match f {
        Frame::RstStream(r) if r.reason == Reason::REFUSED_STREAM => {
            refused += 1;
            (refused == 200).then_some(End::Closed)
        }
        Frame::GoAway(g) => Some(End::GoAway(g.reason)),
        _ => None,
    });
    assert_eq!((end, refused), (End::Closed, 200), "200 refusals and no GOAWAY");
    raw.send(&frame(|b| Settings::ack().encode(b)));
    raw.send(&frame(|b| Ping::new([7; 8]).encode(b)));
    let pong = raw.until(|f| match f {
        Frame::Ping(p) if p.ack => Some(End::Closed),
        Frame::GoAway(g) => Some(End::GoAway(g.reason)),
        _ => None,
    });
    assert_eq!(pong, End::Closed, "the connection still answers a PING");
    finish(server);
}

/// The allowance for refusals before the acknowledgement is bounded: a client that never
/// acknowledges and keeps opening streams past it (1,000 free, then the `server_resets`
/// budget of 100) gets GOAWAY ENHANCE_YOUR_CALM.
fn refusals_before_settings_ack_are_capped(io: IoChoice) {
    let server = start(io, limits());
    let a = addr(&server);
    let mut raw = Raw::connect_unacked(a, Settings::default());
    let mut burst = Vec::new();
    for i in 0..1300u32 {
        burst.extend(headers(1 + 2 * i, request("POST", "/collect"), false));
    }
    raw.send(&burst);
    assert_eq!(raw.goaway(), End::GoAway(Reason::ENHANCE_YOUR_CALM));
    finish(server);
}

both_drivers!(
    refusals_before_settings_ack_are_not_abuse,
    refusals_before_settings_ack_are_capped,
    malformed_requests_are_reset,
    an_indexed_field_is_judged_at_every_use,
    rapid_reset,
    made_you_reset,
    ping_flood,
    settings_flood,
    continuation_flood,
    empty_data_flood,
    hpack_bomb,
    oversized_header_list_gets_431,
    refused_past_max_concurrent_streams,
);

/// A server with a fast min_response_data_rate (1000 B/s after 300 ms), and a client that
/// announces a stream window of zero and never opens it.
fn shut_window_client() -> (peregrine::Server, SocketAddr, Raw) {
    let mut l = limits();
    l.min_response_data_rate = Some(peregrine::MinDataRate {
        bytes_per_second: 1000.0,
        grace_period: Duration::from_millis(300),
    });
    let server = start(IoChoice::Auto, l);
    let a = addr(&server);
    let raw =
        Raw::connect_with(a, Settings { initial_window_size: Some(0), ..Settings::default() });
    (server, a, raw)
}

/// A client that opens a window of zero and never reads: the stream's queue is capped and,
/// once it stops draining at min_response_data_rate, the stream is reset.
#[test]
fn a_client_that_never_opens_its_window_is_cut_off() {
    let (server, _, mut raw) = shut_window_client();
    raw.send(&headers(1, request("GET", "/big"), true));
    assert_eq!(raw.goaway_or_reset(), End::Reset(1, Reason::CANCEL));
    assert!(raw.served(3), "the connection and server go on");
    finish(server);
}

/// Small responses queued behind a window the client never opens: nothing can be sent, so the
/// connection itself must make progress at min_response_data_rate or be closed.
#[test]
fn a_connection_whose_windows_stay_shut_is_closed() {
    let (server, a, mut raw) = shut_window_client();
    for id in [1, 3, 5] {
        raw.send(&headers(id, request_block(&[]), true));
    }
    let started = Instant::now();
    let end = raw.until(|f| match f {
        Frame::Data(d) if !d.data.is_empty() => panic!("DATA sent through a zero window"),
        _ => None,
    });
    assert_eq!(end, End::Closed);
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    let mut fresh = Raw::connect(a);
    assert!(fresh.served(1));
    finish(server);
}

/// The response HEADERS on stream `id`: its HPACK block (statuses outside HPACK's static
/// table, such as 408 and 413, are sent as literal digits).
fn response_block(raw: &mut Raw, id: u32) -> Bytes {
    let mut block = None;
    let end = raw.until(|f| match f {
        Frame::Headers(h) if h.stream_id.value() == id => {
            block = Some(h.fragment.clone());
            Some(End::Closed)
        }
        Frame::GoAway(g) => Some(End::GoAway(g.reason)),
        _ => None,
    });
    block.unwrap_or_else(|| panic!("no response on stream {id}: {end:?}"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// max_request_body_size over HTTP/2: a Content-Length over it is answered 413 before any
/// DATA; a body that grows past it is answered 413 too.
fn request_body_limit_gets_413(io: IoChoice) {
    let server = start(io, Limits { max_request_body_size: Some(1000), ..limits() });
    let mut raw = Raw::connect(addr(&server));
    let mut b = request("POST", "/collect");
    literal("content-length", "5000", &mut b);
    raw.send(&headers(1, b, false));
    assert!(contains(&response_block(&mut raw, 1), b"413"));

    raw.send(&headers(3, request("POST", "/collect"), false));
    raw.send(&frame(|b| {
        let body = Bytes::from(vec![b'x'; 1500]);
        Data::new(StreamId::new(3), body.clone(), false).encode_head(b);
        b.extend_from_slice(&body);
    }));
    assert!(contains(&response_block(&mut raw, 3), b"413"));
    assert!(raw.served(5), "the connection goes on");
    finish(server);
}

/// min_request_body_data_rate over HTTP/2: a body that stops arriving is answered 408.
fn stalled_request_body_gets_408(io: IoChoice) {
    let rate = peregrine::MinDataRate {
        bytes_per_second: 1000.0,
        grace_period: Duration::from_millis(300),
    };
    let server = start(io, Limits { min_request_body_data_rate: Some(rate), ..limits() });
    let mut raw = Raw::connect(addr(&server));
    raw.send(&headers(1, request("POST", "/collect"), false));
    let started = Instant::now();
    assert!(contains(&response_block(&mut raw, 1), b"408"));
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(raw.served(3));
    finish(server);
}

/// keep_alive_timeout over HTTP/2: an idle connection gets GOAWAY NO_ERROR, then is closed.
fn idle_connection_gets_goaway(io: IoChoice) {
    let l = Limits { keep_alive_timeout: Duration::from_millis(300), ..limits() };
    let server = start(io, l);
    let mut raw = Raw::connect(addr(&server));
    assert!(raw.served(1));
    assert_eq!(raw.goaway(), End::GoAway(Reason::NO_ERROR));
    assert_eq!(raw.until(|_| None), End::Closed);
    finish(server);
}

fn priority_flood(io: IoChoice) {
    flood(
        io,
        |_| {},
        |raw| {
            let burst: Vec<u8> = (0..2000u32)
                .flat_map(|i| {
                    let p = peregrine_protocols::h2::frame::Priority {
                        stream_id: StreamId::new(1 + 2 * i),
                        dependency: peregrine_protocols::h2::frame::StreamDependency {
                            dependency: StreamId::ZERO,
                            weight: 16,
                            exclusive: false,
                        },
                    };
                    frame(|b| p.encode(b))
                })
                .collect();
            raw.send(&burst);
        },
        Reason::ENHANCE_YOUR_CALM,
    );
}

fn window_update_flood(io: IoChoice) {
    flood(
        io,
        |l| l.h2.window_updates.max = 500,
        |raw| {
            let burst: Vec<u8> = (0..1000)
                .flat_map(|_| frame(|b| WindowUpdate::new(StreamId::ZERO, 1).encode(b)))
                .collect();
            raw.send(&burst);
        },
        Reason::ENHANCE_YOUR_CALM,
    );
}

/// A header block larger than max_header_block_size is cut off while it arrives.
fn oversized_header_block(io: IoChoice) {
    flood(
        io,
        |l| l.h2.max_header_block_size = 20_000,
        |raw| {
            let mut burst = frame(|b| {
                Headers::new(StreamId::new(1), Bytes::from(vec![0; 16_000]), true, false).encode(b)
            });
            burst.extend(frame(|b| {
                Continuation::new(StreamId::new(1), Bytes::from(vec![0; 16_000]), false).encode(b)
            }));
            raw.send(&burst);
        },
        Reason::ENHANCE_YOUR_CALM,
    );
}

/// A header block in one HEADERS frame (END_HEADERS set) is held to max_header_block_size
/// as an assembled one is: the frame is within max_frame_size, the block is not.
fn oversized_header_block_in_one_frame(io: IoChoice) {
    flood(
        io,
        |l| l.h2.max_header_block_size = 8_000,
        |raw| {
            raw.send(&frame(|b| {
                Headers::new(StreamId::new(1), Bytes::from(vec![0; 12_000]), true, true).encode(b)
            }));
        },
        Reason::ENHANCE_YOUR_CALM,
    );
}

both_drivers!(
    request_body_limit_gets_413,
    stalled_request_body_gets_408,
    idle_connection_gets_goaway,
    priority_flood,
    window_update_flood,
    oversized_header_block,
    oversized_header_block_in_one_frame,
);

//! The client side against the server side, in memory: requests, bodies larger than the
//! initial windows both ways, trailers both ways, resets, GOAWAY, and the upstream rules the
//! client enforces (a malformed response head, a push, a first frame other than SETTINGS).

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::h2::client::{self, Connection as Client, Event as ClientEvent, OpenError};
use crate::h2::server::{Config, Connection as Server, Event as ServerEvent};
use crate::h2::{Reason, StreamId};

/// Moves bytes both ways until neither side has anything more to send.
fn pump(c: &mut Client, s: &mut Server) {
    let now = Instant::now();
    for _ in 0..1000 {
        let mut out = Vec::new();
        let mut moved = false;
        if c.poll_transmit(&mut out) {
            let mut buf = BytesMut::new();
            out.iter().for_each(|b| buf.extend_from_slice(b));
            s.recv(&mut buf, now);
            moved = true;
        }
        out.clear();
        if s.poll_transmit(&mut out) {
            let mut buf = BytesMut::new();
            out.iter().for_each(|b| buf.extend_from_slice(b));
            c.recv(&mut buf);
            moved = true;
        }
        if !moved {
            return;
        }
    }
    panic!("the connection never went quiet");
}

fn pair() -> (Client, Server) {
    let mut c = Client::new(client::Config::default());
    let mut s = Server::new(Config::default(), Instant::now());
    pump(&mut c, &mut s);
    (c, s)
}

fn open(c: &mut Client, method: &Method, path: &str, end: bool) -> StreamId {
    let mut headers = HeaderMap::new();
    headers.insert("te", HeaderValue::from_static("trailers"));
    headers.insert("host", HeaderValue::from_static("ignored.example"));
    let pseudo = client::pseudo(method, "http", "up.example", path);
    c.send_request(&pseudo, &headers, end).unwrap()
}

fn server_events(s: &mut Server) -> Vec<ServerEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn client_events(c: &mut Client) -> Vec<ClientEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn a_request_with_bodies_larger_than_the_windows_and_trailers_both_ways() {
    let (mut c, mut s) = pair();
    let id = open(&mut c, &Method::POST, "/svc/Method", false);
    // 200 KB up: more than the 64 KiB initial windows, so WINDOW_UPDATEs must flow.
    let up: Bytes = (0..200_000u32).map(|i| i as u8).collect::<Vec<_>>().into();
    c.send_data(id, up.clone(), false).unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-client-done", HeaderValue::from_static("1"));
    c.send_trailers(id, trailers).unwrap();
    let mut received = BytesMut::new();
    let mut got_trailers = None;
    let mut head = None;
    for _ in 0..100 {
        pump(&mut c, &mut s);
        for e in server_events(&mut s) {
            match e {
                ServerEvent::Request { id: sid, head: h, .. } => head = Some((sid, h)),
                ServerEvent::Data { id: sid, data, .. } => {
                    received.extend_from_slice(&data);
                    s.release_capacity(sid, data.len());
                }
                ServerEvent::Trailers { trailers, .. } => got_trailers = Some(trailers),
                other => panic!("unexpected {other:?}"),
            }
        }
        if got_trailers.is_some() {
            break;
        }
    }
    let (sid, head) = head.expect("the request arrived");
    assert_eq!(sid, id);
    assert_eq!(head.method, Method::POST);
    assert_eq!(head.target.to_uri(), "http://up.example/svc/Method");
    assert!(head.headers.clone().into_map().get("host").is_none(), ":authority replaces host");
    assert_eq!(head.headers.clone().into_map().get("te").unwrap(), "trailers");
    assert_eq!(received.len(), up.len());
    assert!(received[..] == up[..], "the body arrived intact");
    assert_eq!(got_trailers.unwrap().get("x-client-done").unwrap(), "1");

    // 300 KB down, then trailers.
    let down: Bytes = vec![7u8; 300_000].into();
    let mut response_headers = HeaderMap::new();
    response_headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    s.send_response(id, StatusCode::OK, &response_headers, false).unwrap();
    s.send_data(id, down.clone(), false).unwrap();
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from_static("0"));
    s.send_trailers(id, t).unwrap();
    let mut body = 0;
    let mut status = None;
    let mut grpc_status = None;
    for _ in 0..100 {
        pump(&mut c, &mut s);
        for e in client_events(&mut c) {
            match e {
                ClientEvent::Response { status: st, headers, end_stream, .. } => {
                    assert!(!end_stream);
                    assert_eq!(headers.get("content-type").unwrap(), "application/grpc");
                    status = Some(st);
                }
                ClientEvent::Data { id: cid, data, .. } => {
                    body += data.len();
                    c.release_capacity(cid, data.len());
                }
                ClientEvent::Trailers { trailers, .. } => {
                    grpc_status = trailers.get("grpc-status").cloned();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if grpc_status.is_some() {
            break;
        }
    }
    assert_eq!(status, Some(StatusCode::OK));
    assert_eq!(body, down.len());
    assert_eq!(grpc_status.unwrap(), "0");
    assert_eq!(c.open_streams(), 0, "both halves ended: the stream is gone");
}

#[test]
fn many_streams_share_the_connection_up_to_the_servers_limit() {
    let (mut c, mut s) = pair();
    // The server's SETTINGS said 100 (the default limit).
    let ids: Vec<_> = (0..100).map(|_| open(&mut c, &Method::GET, "/", true)).collect();
    assert_eq!(c.can_open(), Err(OpenError::Busy));
    pump(&mut c, &mut s);
    for e in server_events(&mut s) {
        if let ServerEvent::Request { id, .. } = e {
            s.send_response(id, StatusCode::NO_CONTENT, &HeaderMap::new(), true).unwrap();
        }
    }
    pump(&mut c, &mut s);
    let done = client_events(&mut c)
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::Response { end_stream: true, .. }))
        .count();
    assert_eq!(done, ids.len());
    assert_eq!(c.can_open(), Ok(()));
}

#[test]
fn a_reset_from_either_side_ends_only_that_stream() {
    let (mut c, mut s) = pair();
    let a = open(&mut c, &Method::GET, "/a", true);
    let b = open(&mut c, &Method::POST, "/b", false);
    pump(&mut c, &mut s);
    let _ = server_events(&mut s);
    s.reset_stream(a, Reason::INTERNAL_ERROR);
    c.reset_stream(b, Reason::CANCEL);
    pump(&mut c, &mut s);
    let events = client_events(&mut c);
    assert!(
        matches!(events[..], [ClientEvent::Reset { id, reason: Reason::INTERNAL_ERROR, by_peer: true }] if id == a),
        "{events:?}"
    );
    assert!(c.send_data(b, Bytes::from_static(b"x"), true).is_err(), "b is gone");
    let server_saw: Vec<_> = server_events(&mut s);
    assert!(
        server_saw.iter().any(
            |e| matches!(e, ServerEvent::Reset { id, reason: Reason::CANCEL, .. } if *id == b)
        ),
        "{server_saw:?}"
    );
    assert_eq!(c.can_open(), Ok(()), "the connection goes on");
}

#[test]
fn goaway_refuses_the_streams_the_server_did_not_take() {
    let (mut c, mut s) = pair();
    let first = open(&mut c, &Method::GET, "/1", true);
    pump(&mut c, &mut s);
    let _ = server_events(&mut s);
    // The server starts shutting down (GOAWAY with the largest id, then a PING, then the
    // final GOAWAY naming the last stream it took).
    s.go_away(Instant::now());
    pump(&mut c, &mut s);
    s.handle_timeout(Instant::now() + std::time::Duration::from_secs(5));
    pump(&mut c, &mut s);
    assert_eq!(c.can_open(), Err(OpenError::Closed));
    s.send_response(first, StatusCode::OK, &HeaderMap::new(), true).unwrap();
    pump(&mut c, &mut s);
    let events = client_events(&mut c);
    assert!(events.iter().any(|e| matches!(e, ClientEvent::Response { id, .. } if *id == first)));
    assert!(c.is_closed(), "GOAWAY and nothing left open");
}

/// Feeds the client raw frames from a fake upstream (after its SETTINGS).
fn from_upstream(c: &mut Client, frames: &[u8]) {
    let mut settings = BytesMut::new();
    crate::h2::frame::Settings::default().encode(&mut settings);
    settings.extend_from_slice(frames);
    c.recv(&mut settings);
}

/// A raw frame: length, type, flags, stream, payload.
fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn a_malformed_response_head_resets_the_stream_only() {
    let mut c = Client::new(client::Config::default());
    let id = open(&mut c, &Method::GET, "/", true);
    // HEADERS, END_HEADERS: `:status: 200` (static index 8) then `:path: /` (index 4): a
    // request pseudo-header in a response.
    from_upstream(&mut c, &raw(1, 0x4 | 0x1, id.value(), &[0x88, 0x84]));
    let events = client_events(&mut c);
    assert!(
        matches!(
            events[..],
            [ClientEvent::Reset { reason: Reason::PROTOCOL_ERROR, by_peer: false, .. }]
        ),
        "{events:?}"
    );
    assert_eq!(c.can_open(), Ok(()));
}

#[test]
fn upstream_protocol_errors_end_the_connection() {
    // A push, when SETTINGS_ENABLE_PUSH was 0.
    let mut c = Client::new(client::Config::default());
    let id = open(&mut c, &Method::GET, "/", true);
    from_upstream(&mut c, &raw(5, 0x4, id.value(), &[0, 0, 0, 2, 0x88]));
    let events = client_events(&mut c);
    assert!(
        matches!(
            events.last(),
            Some(ClientEvent::ConnectionError { reason: Reason::PROTOCOL_ERROR, .. })
        ),
        "{events:?}"
    );
    assert!(c.is_closed());
    // A first frame other than SETTINGS.
    let mut c = Client::new(client::Config::default());
    let mut ping = BytesMut::from(&raw(6, 0, 0, &[0; 8])[..]);
    c.recv(&mut ping);
    assert!(c.is_closed());
    // DATA on a stream never opened.
    let mut c = Client::new(client::Config::default());
    from_upstream(&mut c, &raw(0, 0, 3, b"x"));
    assert!(c.is_closed());
}

#[test]
fn informational_heads_are_skipped() {
    let mut c = Client::new(client::Config::default());
    let id = open(&mut c, &Method::GET, "/", true);
    // 103 (literal, name index 8 = :status), then 200 with END_STREAM.
    let mut frames = raw(1, 0x4, id.value(), &[0x08, 0x03, b'1', b'0', b'3']);
    frames.extend(raw(1, 0x4 | 0x1, id.value(), &[0x88]));
    from_upstream(&mut c, &frames);
    let events = client_events(&mut c);
    assert!(
        matches!(
            events[..],
            [ClientEvent::Response { status: StatusCode::OK, end_stream: true, .. }]
        ),
        "{events:?}"
    );
}

#[test]
fn a_ping_awaits_its_own_ack_only() {
    let (mut c, mut s) = pair();
    c.ping();
    assert!(c.awaiting_pong());
    // A second call while the first awaits its ACK sends nothing more.
    c.ping();
    let mut out = Vec::new();
    assert!(c.poll_transmit(&mut out));
    let sent: usize = out.iter().map(Bytes::len).sum();
    assert_eq!(sent, 9 + 8, "one PING frame");
    // An ACK for another payload is not the answer.
    from_upstream(&mut c, &raw(0x6, 0x1, 0, &[9; 8]));
    assert!(c.awaiting_pong());
    // The server's real ACK is.
    let mut buf = BytesMut::new();
    out.iter().for_each(|b| buf.extend_from_slice(b));
    s.recv(&mut buf, Instant::now());
    pump(&mut c, &mut s);
    assert!(!c.awaiting_pong());
    // And the next question is a new PING.
    c.ping();
    assert!(c.awaiting_pong());
}

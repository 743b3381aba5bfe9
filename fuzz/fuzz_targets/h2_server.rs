//! The sans-IO HTTP/2 server connection driven by arbitrary bytes after the preface, in
//! arbitrary pieces, on virtual time: never a panic, and bounded output whatever the client
//! does (every error must become a GOAWAY or RST_STREAM the codec writes itself). Requests
//! are answered with a small body and request data is released, as the server's loop does.
#![no_main]

mod split;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use libfuzzer_sys::fuzz_target;
use peregrine_limits::Limits;
use peregrine_protocols::h2::preface::PREFACE;
use peregrine_protocols::h2::server::{Config, Connection, Event};

/// Output allowed to wait in the codec at once: the flood budgets keep it far below this.
const MAX_QUEUED: usize = 4 << 20;

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else { return };
    let limits = Limits::default();
    let start = Instant::now();
    let mut now = start;
    let mut conn = Connection::new(Config::new(&limits), now);
    let mut buf = BytesMut::from(&PREFACE[..]);
    let mut out = Vec::new();
    let mut sent = 0usize;
    for (i, piece) in split::pieces(seed, data).into_iter().enumerate() {
        buf.extend_from_slice(piece);
        // Virtual time moves a little per piece, and jumps now and then (timeouts fire).
        now += Duration::from_millis(if i % 17 == 16 { 20_000 } else { 3 });
        conn.recv(&mut buf, now);
        while let Some(event) = conn.poll_event() {
            match event {
                Event::Request { id, .. } => {
                    let _ = conn.send_response(id, StatusCode::OK, &HeaderMap::new(), false);
                    let _ = conn.send_data(id, Bytes::from_static(b"hello"), true);
                }
                Event::Data { id, data, .. } => conn.release_capacity(id, data.len()),
                _ => {}
            }
        }
        if conn.poll_timeout().is_some_and(|t| t <= now) {
            conn.handle_timeout(now);
        }
        out.clear();
        while conn.poll_transmit(&mut out) {
            sent += out.iter().map(Bytes::len).sum::<usize>();
            out.clear();
        }
        assert!(conn.queued_bytes() <= MAX_QUEUED, "{} bytes queued", conn.queued_bytes());
        if conn.is_closed() {
            break;
        }
    }
    conn.go_away(now);
    now += Duration::from_secs(60);
    conn.handle_timeout(now);
    while conn.poll_transmit(&mut out) {
        out.clear();
    }
    let _ = sent;
});

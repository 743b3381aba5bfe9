//! The response encoder: round trips through an independent decoder (`loona-hpack`) and our
//! own, connection-specific fields dropped, and table size updates after SETTINGS changes.

use bytes::BytesMut;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, SERVER, SET_COOKIE};
use http::{HeaderMap, StatusCode};
use loona_hpack::Decoder as OtherDecoder;

use crate::h2::hpack::decoder::{Decoder, ListLimits};
use crate::h2::response::encode_start;
use crate::h2::HeaderEncoder;

type List = Vec<(String, String)>;

fn other_decode(dec: &mut OtherDecoder, block: &[u8]) -> List {
    let list = dec.decode(block).unwrap_or_else(|e| panic!("{e:?} decoding {block:02x?}"));
    list.into_iter()
        .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
        .collect()
}

fn own_decode(block: &[u8]) -> List {
    own_decode_with(&mut Decoder::new(4096), block)
}

/// Decodes with `dec`, which keeps its dynamic table for the next block.
fn own_decode_with(dec: &mut Decoder, block: &[u8]) -> List {
    let mut out = Vec::new();
    let limits = ListLimits { max_size: 1 << 20, max_fields: 1000 };
    dec.decode(block, limits, |e| {
        let name = match &e.name {
            crate::h2::hpack::table::Name::Header(h) => h.to_string(),
            crate::h2::hpack::table::Name::Pseudo(p) => format!(":{p:?}").to_lowercase(),
            crate::h2::hpack::table::Name::Invalid(w) => panic!("{w}"),
        };
        out.push((name, String::from_utf8(e.value.to_raw().to_vec()).unwrap()));
    })
    .unwrap();
    out
}

fn pairs(fields: &[(&str, &str)]) -> List {
    fields.iter().map(|&(n, v)| (n.to_string(), v.to_string())).collect()
}

/// Encodes after a 0xa5-filled prefix and checks the prefix was left alone.
fn encode(enc: &mut HeaderEncoder, status: StatusCode, headers: &HeaderMap) -> Vec<u8> {
    let mut dst = BytesMut::from(&[0xa5; 7][..]);
    enc.encode_response(status, headers, &mut dst);
    assert_eq!(dst[..7], [0xa5; 7]);
    dst[7..].to_vec()
}

fn response_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert(CONTENT_LENGTH, HeaderValue::from_static("13"));
    h.insert(SERVER, HeaderValue::from_static("peregrine"));
    h.append(SET_COOKIE, HeaderValue::from_static("a=1"));
    h.append(SET_COOKIE, HeaderValue::from_static("b=2"));
    h.insert("x-custom", HeaderValue::from_static("v"));
    for name in ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"] {
        h.insert(name, HeaderValue::from_static("x"));
    }
    h
}

/// Connection-specific fields are dropped (RFC 9113 §8.2.2), and so is the application's
/// `content-length`: the codec owns it, the server adds the body's real length with
/// `ServerFields` (a wrong one would make the response malformed, §8.1.1).
#[test]
fn a_response_round_trips_without_connection_specific_fields() {
    let want = pairs(&[
        (":status", "200"),
        ("content-type", "text/plain"),
        ("server", "peregrine"),
        ("set-cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("x-custom", "v"),
    ]);
    let mut enc = HeaderEncoder::new();
    let mut other = OtherDecoder::new();
    for _ in 0..3 {
        // No dynamic table: every block is the same bytes and decodes on its own.
        let block = encode(&mut enc, StatusCode::OK, &response_headers());
        assert_eq!(block[0], 0x88, ":status 200 is static index 8");
        assert_eq!(other_decode(&mut other, &block), want);
        assert_eq!(own_decode(&block), want);
    }
}

#[test]
fn statuses_outside_the_static_table_and_long_values() {
    let mut enc = HeaderEncoder::new();
    let mut h = HeaderMap::new();
    let long = "l".repeat(300); // a length that needs a multi-byte integer
    h.insert("x-long", HeaderValue::from_str(&long).unwrap());
    for status in [201, 204, 206, 304, 400, 404, 418, 500, 503] {
        let status = StatusCode::from_u16(status).unwrap();
        let block = encode(&mut enc, status, &h);
        let want = pairs(&[(":status", status.as_str()), ("x-long", &long)]);
        assert_eq!(other_decode(&mut OtherDecoder::new(), &block), want);
    }
}

#[test]
fn sensitive_values_are_never_indexed() {
    let mut h = HeaderMap::new();
    let mut v = HeaderValue::from_static("secret");
    v.set_sensitive(true);
    h.insert("authorization", v);
    let block = encode(&mut HeaderEncoder::new(), StatusCode::OK, &h);
    // 0001 + name index 23 (authorization) needs the 4-bit prefix extended: 0x1f, 23 - 15.
    assert_eq!(block[1..3], [0x1f, 0x08]);
    assert_eq!(
        other_decode(&mut OtherDecoder::new(), &block)[1],
        ("authorization".into(), "secret".into())
    );
}

#[test]
fn trailers_round_trip() {
    let mut h = HeaderMap::new();
    h.insert("grpc-status", HeaderValue::from_static("0"));
    h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    let mut dst = BytesMut::new();
    HeaderEncoder::new().encode_trailers(&h, &mut dst);
    assert_eq!(other_decode(&mut OtherDecoder::new(), &dst), pairs(&[("grpc-status", "0")]));
}

#[test]
fn a_smaller_peer_table_is_announced_once() {
    let mut enc = HeaderEncoder::new();
    let h = HeaderMap::new();
    // Growing needs no signal.
    enc.set_max_table_size(65_536);
    assert_eq!(encode(&mut enc, StatusCode::OK, &h), [0x88]);
    // Shrinking several times before a block: only the smallest goes out, once.
    enc.set_max_table_size(100);
    enc.set_max_table_size(50);
    enc.set_max_table_size(200);
    let block = encode(&mut enc, StatusCode::OK, &h);
    assert_eq!(block, [0x3f, 0x13, 0x88]); // size update 50 (31 + 19), then :status 200
    let mut other = OtherDecoder::new();
    other.set_max_allowed_table_size(200);
    assert_eq!(other_decode(&mut other, &block), pairs(&[(":status", "200")]));
    assert_eq!(encode(&mut enc, StatusCode::OK, &h), [0x88]);
    // To zero, and it is the first thing in a trailer block too.
    enc.set_max_table_size(0);
    let mut dst = BytesMut::new();
    enc.encode_trailers(&h, &mut dst);
    assert_eq!(dst[..], [0x20]);
}

/// A block of `:status 200`, `content-length` and the server's own `date` and `server`, as
/// `encode_head` writes them.
fn own_fields_block(enc: &mut HeaderEncoder, date: &str) -> Vec<u8> {
    let mut dst = BytesMut::new();
    enc.flush_update(&mut dst);
    encode_start(StatusCode::OK, &HeaderMap::new(), Some(13), &mut dst);
    enc.encode_own_fields(Some(date.as_bytes()), true, &mut dst);
    dst.to_vec()
}

/// `date` and `server` go into the peer's table once and are one byte each after that; a
/// new date is inserted again; a table the peer shrinks or refuses is honoured. Each
/// block is decoded in order by one independent decoder and by one of ours, both keeping
/// their tables across blocks, as a peer does.
#[test]
fn the_servers_own_fields_are_indexed_once_and_stay_in_step_with_the_peer() {
    let mut enc = HeaderEncoder::new();
    let mut other = OtherDecoder::new();
    let mut own = Decoder::new(4096);
    let mut decode_both = |block: &[u8]| {
        let ours = own_decode_with(&mut own, block);
        let theirs = other_decode(&mut other, block);
        assert_eq!(ours, theirs);
        theirs
    };
    let want = |date: &str| {
        pairs(&[
            (":status", "200"),
            ("content-length", "13"),
            ("date", date),
            ("server", "peregrine"),
        ])
    };
    let date = |s: u32| format!("Sun, 06 Dec 2026 04:{:02}:{:02} GMT", s / 60, s % 60);

    let first = own_fields_block(&mut enc, &date(0));
    assert_eq!(decode_both(&first), want(&date(0)));
    let again = own_fields_block(&mut enc, &date(0));
    // :status, the content-length literal (name index 28), date (index 63: one newer
    // entry), server (62).
    assert_eq!(again[..], [0x88, 0x0f, 0x0d, 0x02, b'1', b'3', 0x80 | 63, 0x80 | 62]);
    assert!(again.len() < first.len() - 35, "{} vs {} bytes", again.len(), first.len());
    assert_eq!(decode_both(&again), want(&date(0)));
    // Dates move on for long enough that old entries are evicted, server's with them.
    for s in 1..40 {
        for _ in 0..3 {
            assert_eq!(decode_both(&own_fields_block(&mut enc, &date(s))), want(&date(s)));
        }
    }
    // The peer shrinks its table below one entry: nothing is indexed any more.
    enc.set_max_table_size(40);
    for s in 40..43 {
        let block = own_fields_block(&mut enc, &date(s));
        assert_eq!(decode_both(&block), want(&date(s)));
    }
    enc.set_max_table_size(0);
    for s in 43..45 {
        assert_eq!(decode_both(&own_fields_block(&mut enc, &date(s))), want(&date(s)));
    }
    // A peer that starts with no table at all.
    let mut enc = HeaderEncoder::new();
    enc.set_max_table_size(0);
    let mut other = OtherDecoder::new();
    for _ in 0..2 {
        let block = own_fields_block(&mut enc, &date(0));
        assert_eq!(other_decode(&mut other, &block), want(&date(0)));
    }
}

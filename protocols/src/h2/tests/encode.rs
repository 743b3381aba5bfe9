//! Encoders: exact bytes after a 0xa5 canary, and encode → decode round trips.

use bytes::{Bytes, BytesMut};

use super::{frame, raw, run};
use crate::h2::frame::{
    Continuation, Data, GoAway, Head, Headers, Kind, Ping, Priority, RstStream, Settings,
    StreamDependency, WindowUpdate,
};
use crate::h2::{Frame, Reason, StreamId};

const CANARY: [u8; 8] = [0xa5; 8];

/// Runs `f` on a buffer already holding the canary; checks it survived and returns the rest.
fn encoded(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut dst = BytesMut::from(&CANARY[..]);
    f(&mut dst);
    assert_eq!(dst[..8], CANARY, "encoder overwrote bytes it does not own");
    dst[8..].to_vec()
}

/// Encodes `frame` and checks the bytes equal `wire` and decode back to `frame`.
fn round_trip(frame_: Frame, wire: &[u8]) {
    let bytes = encoded(|dst| match &frame_ {
        Frame::Data(d) => {
            d.encode_head(dst);
            dst.extend_from_slice(&d.data);
        }
        Frame::Headers(f) => f.encode(dst),
        Frame::Priority(f) => f.encode(dst),
        Frame::RstStream(f) => f.encode(dst),
        Frame::Settings(f) => f.encode(dst),
        Frame::Ping(f) => f.encode(dst),
        Frame::GoAway(f) => f.encode(dst),
        Frame::WindowUpdate(f) => f.encode(dst),
        Frame::Continuation(f) => f.encode(dst),
        Frame::PushPromise(_) => unreachable!("never sent"),
    });
    assert_eq!(bytes, wire);
    if let Frame::Continuation(c) = &frame_ {
        // A CONTINUATION only decodes inside an open field block (§6.10).
        let mut input = raw(1, 0, c.stream_id.value(), b"");
        input.extend_from_slice(&bytes);
        assert_eq!(run(&input).events[1], Ok(frame_));
        return;
    }
    assert_eq!(frame(&bytes), frame_);
}

fn id(n: u32) -> StreamId {
    StreamId::new(n)
}

#[test]
fn head_writes_the_reserved_bit_as_zero() {
    let bytes =
        encoded(|dst| Head::new(Kind::Unknown(0xfe), 0x3, id(0xffff_ffff), 0x01_0203).encode(dst));
    assert_eq!(bytes, [0x01, 0x02, 0x03, 0xfe, 0x03, 0x7f, 0xff, 0xff, 0xff]);
}

#[test]
#[should_panic(expected = "over 24 bits")]
fn head_longer_than_24_bits_panics() {
    Head::new(Kind::Data, 0, id(1), 1 << 24).encode(&mut BytesMut::new());
}

#[test]
fn data_head_only_so_the_body_can_go_separately() {
    let d = Data::new(id(1), Bytes::from_static(b"hello"), true);
    assert_eq!(encoded(|dst| d.encode_head(dst)), [0, 0, 5, 0, 1, 0, 0, 0, 1]);
    round_trip(d.into(), &raw(0, 1, 1, b"hello"));
    round_trip(Data::new(id(3), Bytes::new(), false).into(), &raw(0, 0, 3, b""));
}

#[test]
fn headers_round_trip() {
    let h = Headers::new(id(1), Bytes::from_static(b"\x88"), false, true);
    round_trip(h.clone().into(), &raw(1, 0x4, 1, b"\x88"));
    let dep = StreamDependency { dependency: id(3), weight: 7, exclusive: true };
    let h = Headers { priority: Some(dep), end_stream: true, ..h };
    round_trip(h.into(), &raw(1, 0x25, 1, b"\x80\x00\x00\x03\x07\x88"));
}

#[test]
fn control_frames_round_trip() {
    let dep = StreamDependency { dependency: id(1), weight: 0, exclusive: false };
    round_trip(
        Priority { stream_id: id(5), dependency: dep }.into(),
        &raw(2, 0, 5, b"\0\0\0\x01\0"),
    );
    round_trip(RstStream::new(id(7), Reason::REFUSED_STREAM).into(), &raw(3, 0, 7, b"\0\0\0\x07"));
    round_trip(Ping::new(*b"pingpong").into(), &raw(6, 0, 0, b"pingpong"));
    round_trip(Ping::new(*b"pingpong").pong().into(), &raw(6, 1, 0, b"pingpong"));
    let g = GoAway::new(id(9), Reason::PROTOCOL_ERROR, Bytes::from_static(b"bye"));
    round_trip(g.into(), &raw(7, 0, 0, b"\0\0\0\x09\0\0\0\x01bye"));
    round_trip(WindowUpdate::new(id(0), 1 << 20).into(), &raw(8, 0, 0, b"\0\x10\0\0"));
    round_trip(WindowUpdate::new(id(1), 1).into(), &raw(8, 0, 1, b"\0\0\0\x01"));
    let c = Continuation::new(id(1), Bytes::from_static(b"frag"), true);
    round_trip(c.into(), &raw(9, 0x4, 1, b"frag"));
}

#[test]
fn settings_round_trip() {
    round_trip(Settings::ack().into(), &raw(4, 1, 0, b""));
    round_trip(Settings::default().into(), &raw(4, 0, 0, b""));
    let s = Settings {
        max_concurrent_streams: Some(100),
        initial_window_size: Some(768 * 1024),
        enable_push: Some(false),
        max_header_list_size: Some(32 * 1024),
        ..Settings::default()
    };
    let wire = raw(4, 0, 0, b"\0\x02\0\0\0\0\0\x03\0\0\0\x64\0\x04\0\x0c\0\0\0\x06\0\0\x80\0");
    round_trip(s.into(), &wire);
}

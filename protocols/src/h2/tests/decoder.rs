//! `FrameDecoder`: framing, max_frame_size, unknown types, zero-copy, error stickiness.

use bytes::{Bytes, BytesMut};
use peregrine_limits::Limit;

use super::{assert_conn, frame, raw, run, run_with};
use crate::h1::LimitExceeded;
use crate::h2::frame::{Data, FrameDecoder, Head, Kind, Ping};
use crate::h2::{Error, Frame, Reason, StreamId};

fn ping(byte: u8) -> Vec<u8> {
    raw(6, 0, 0, &[byte; 8])
}

fn ping_frame(byte: u8) -> Frame {
    Ping::new([byte; 8]).into()
}

#[test]
fn head_parses_every_field_and_ignores_the_reserved_bit() {
    let head = Head::parse(&[0x01, 0x02, 0x03, 0x01, 0x25, 0x80, 0x00, 0x00, 0x07]);
    assert_eq!(head, Head::new(Kind::Headers, 0x25, StreamId::new(7), 0x010203));
    assert_eq!(head.stream_id.value(), 7);
    assert!(head.has(0x20) && head.has(0x4) && !head.has(0x8));
}

#[test]
fn kinds_round_trip_through_u8() {
    for byte in 0..=255u8 {
        assert_eq!(u8::from(Kind::from(byte)), byte);
    }
    assert_eq!(Kind::from(0x9), Kind::Continuation);
    assert_eq!(Kind::from(0xa), Kind::Unknown(0xa));
}

#[test]
fn nothing_and_partial_frames_need_more() {
    assert!(run(b"").events.is_empty());
    let input = raw(0, 0, 1, b"hello");
    let out = run(&input[..input.len() - 1]);
    assert!(out.events.is_empty());
    assert_eq!(out.leftover, &input[..input.len() - 1]);
}

#[test]
fn several_frames_and_a_partial_one() {
    let mut input = ping(1);
    input.extend(raw(0, 1, 3, b"body"));
    input.extend(&ping(2)[..12]);
    let out = run(&input);
    let data = Data::new(StreamId::new(3), Bytes::from_static(b"body"), true);
    assert_eq!(out.events, [Ok(ping_frame(1)), Ok(data.into())]);
    assert_eq!(out.leftover, &ping(2)[..12]);
}

#[test]
fn over_max_frame_size_is_refused_from_the_header_alone() {
    // Only the 9 header bytes: the payload never has to arrive.
    let head = &raw(0, 0, 1, &[0; 16_385])[..9];
    let out = run(head);
    let limit = LimitExceeded { limit: Limit::H2MaxFrameSize, max: 16_384, observed: 16_385 };
    assert_eq!(out.events, [Err(Error::Limit(Reason::FRAME_SIZE_ERROR, limit))]);
    assert_eq!(out.leftover, head);
    let e = out.events[0].clone().unwrap_err();
    assert!(e.is_connection_error());
    assert_eq!(e.reason(), Reason::FRAME_SIZE_ERROR);
    assert_eq!(e.description(), "max_frame_size");
    // The same header under a larger configured limit just needs more bytes.
    assert!(run_with(head, 16_385).events.is_empty());
    // Even an unknown frame type must fit.
    assert_eq!(run(&raw(0xee, 0, 0, &[0; 16_385])[..9]).events.len(), 1);
}

#[test]
fn exactly_max_frame_size_is_accepted() {
    let input = raw(0, 0, 1, &[7; 16_384]);
    let mut buf = BytesMut::from(&input[..]);
    let Ok(Some(Frame::Data(d))) = FrameDecoder::new().decode(&mut buf) else { panic!() };
    assert_eq!(d.data.len(), 16_384);
    assert!(buf.is_empty());
    let mut dec = FrameDecoder::with_max_frame_size(20_000);
    let mut buf = BytesMut::from(&raw(0, 0, 1, &[7; 20_000])[..]);
    assert!(matches!(dec.decode(&mut buf), Ok(Some(Frame::Data(_)))));
    let mut buf = BytesMut::from(&raw(0, 0, 1, &[7; 20_001])[..9]);
    assert!(matches!(dec.decode(&mut buf), Err(Error::Limit(..))));
}

#[test]
#[should_panic(expected = "outside 16384..=16777215")]
fn max_frame_size_below_the_rfc_minimum_panics() {
    FrameDecoder::with_max_frame_size(16_383);
}

#[test]
fn max_frame_size_can_change() {
    let mut dec = FrameDecoder::default();
    assert_eq!(dec.max_frame_size(), 16_384);
    dec.set_max_frame_size(16_777_215);
    assert_eq!(dec.max_frame_size(), 16_777_215);
}

#[test]
fn unknown_frame_types_are_skipped() {
    let mut input = raw(0xfa, 0xff, 0, b"ignored");
    input.extend(raw(0x0a, 0, 5, b""));
    input.extend(ping(9));
    input.extend(raw(0xbe, 0x1, 0x8000_0003, &[0; 100]));
    let out = run(&input);
    assert_eq!(out.events, [Ok(ping_frame(9))]);
    assert!(out.leftover.is_empty());
}

#[test]
fn payloads_are_split_off_without_copying() {
    let mut buf = BytesMut::from(&raw(0, 0, 1, b"zero-copy body")[..]);
    let start = buf.as_ptr();
    let Ok(Some(Frame::Data(d))) = FrameDecoder::new().decode(&mut buf) else { panic!() };
    assert_eq!(d.data.as_ptr(), start.wrapping_add(9));
}

#[test]
fn undefined_flags_are_ignored() {
    let f = frame(&raw(6, 0xfe, 0, &[3; 8]));
    assert_eq!(f, ping_frame(3));
}

#[test]
fn a_stream_error_consumes_its_frame_and_decoding_goes_on() {
    let mut input = raw(8, 0, 3, &[0, 0, 0, 0]); // WINDOW_UPDATE 0 on stream 3
    input.extend(ping(4));
    let out = run(&input);
    assert_eq!(out.events.len(), 2);
    assert_eq!(out.events[0].clone().unwrap_err().stream_id(), Some(StreamId::new(3)));
    assert_eq!(out.events[1], Ok(ping_frame(4)));
}

#[test]
fn a_connection_error_is_sticky_and_reads_nothing_more() {
    let mut input = raw(6, 0, 1, &[0; 8]); // PING on a stream
    input.extend(ping(5));
    let out = run(&input);
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.leftover, ping(5));
    assert_conn(&raw(6, 0, 1, &[0; 8]), Reason::PROTOCOL_ERROR);
}

#[test]
fn frame_stream_ids() {
    assert_eq!(frame(&ping(0)).stream_id(), StreamId::ZERO);
    assert_eq!(frame(&raw(0, 0, 5, b"")).stream_id(), StreamId::new(5));
    assert!(StreamId::new(5).is_client_initiated() && !StreamId::new(2).is_client_initiated());
    assert_eq!(StreamId::from(u32::MAX), StreamId::MAX);
}

#[test]
fn reasons_and_errors_describe_themselves() {
    assert_eq!(format!("{:?}", Reason::ENHANCE_YOUR_CALM), "ENHANCE_YOUR_CALM");
    assert_eq!(format!("{:?}", Reason::HTTP_1_1_REQUIRED), "HTTP_1_1_REQUIRED");
    assert_eq!(format!("{}", Reason::NO_ERROR), "NO_ERROR");
    assert_eq!(format!("{:?}", Reason(0x1234)), "Reason(0x1234)");
    assert_eq!(Reason(0xe).name(), None);
    let e = Error::Stream(StreamId::new(3), Reason::CANCEL, "why");
    assert_eq!(e.to_string(), "stream 3 error CANCEL: why");
    assert_eq!(e.description(), "why");
    assert!(!e.is_connection_error());
    let e = Error::Connection(Reason::PROTOCOL_ERROR, "bad");
    assert_eq!(e.to_string(), "connection error PROTOCOL_ERROR: bad");
    assert_eq!(e.stream_id(), None);
    let l = LimitExceeded { limit: Limit::H2MaxFrameSize, max: 1, observed: 2 };
    let e = Error::Limit(Reason::FRAME_SIZE_ERROR, l);
    assert_eq!(e.to_string(), "connection error FRAME_SIZE_ERROR: max_frame_size exceeded: 2 > 1");
}

#[test]
fn a_client_opening_sequence() {
    // What curl sends after the preface: SETTINGS, a connection WINDOW_UPDATE, and a HEADERS
    // with priority fields opening stream 1.
    let mut settings = Vec::new();
    for (id, value) in [(3u16, 100u32), (4, 10 << 20), (2, 0)] {
        settings.extend(id.to_be_bytes());
        settings.extend(value.to_be_bytes());
    }
    let mut input = raw(4, 0, 0, &settings);
    input.extend(raw(8, 0, 0, &0x01ff_0001u32.to_be_bytes()));
    input.extend(raw(1, 0x25, 1, b"\x00\x00\x00\x00\xff\x82\x86\x84"));
    let out = run(&input);
    assert!(out.leftover.is_empty());
    let kinds: Vec<_> = out.events.iter().map(|e| e.as_ref().map(std::mem::discriminant)).collect();
    let want = [
        Frame::Settings(Default::default()),
        Frame::WindowUpdate(crate::h2::frame::WindowUpdate::new(StreamId::ZERO, 1)),
        Frame::Headers(crate::h2::frame::Headers::new(StreamId::new(1), Bytes::new(), true, true)),
    ];
    let want: Vec<_> = want.iter().map(|f| Ok(std::mem::discriminant(f))).collect();
    assert_eq!(kinds, want);
    let Ok(Frame::Headers(h)) = &out.events[2] else { panic!() };
    assert_eq!(
        (h.stream_id, &h.fragment[..], h.end_stream),
        (StreamId::new(1), &b"\x82\x86\x84"[..], true)
    );
    let Ok(Frame::Settings(s)) = &out.events[0] else { panic!() };
    assert_eq!((s.initial_window_size, s.enable_push), (Some(10 << 20), Some(false)));
}

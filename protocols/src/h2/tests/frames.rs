//! Every frame type: valid frames, and every rule of RFC 9113 §6 that `load` enforces.

use bytes::Bytes;

use super::{assert_conn, assert_stream, frame, raw, run};
use crate::h2::frame::{
    Continuation, Data, GoAway, Headers, Ping, Priority, PushPromise, RstStream, Settings,
    StreamDependency, WindowUpdate,
};
use crate::h2::{Frame, Reason, StreamId};

const PROTOCOL: Reason = Reason::PROTOCOL_ERROR;
const FRAME_SIZE: Reason = Reason::FRAME_SIZE_ERROR;

fn id(n: u32) -> StreamId {
    StreamId::new(n)
}

fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

// ---- DATA (§6.1) -------------------------------------------------------------------------

#[test]
fn data_plain_and_end_stream() {
    assert_eq!(frame(&raw(0, 0, 1, b"abc")), Data::new(id(1), b(b"abc"), false).into());
    assert_eq!(frame(&raw(0, 1, 1, b"")), Data::new(id(1), b(b""), true).into());
}

#[test]
fn data_padding_is_stripped_and_counted_for_flow_control() {
    let Frame::Data(d) = frame(&raw(0, 0x9, 3, b"\x02abcPP")) else { panic!() };
    assert_eq!((d.data, d.end_stream, d.pad_len), (b(b"abc"), true, Some(2)));
    assert_eq!(Data { data: b(b"abc"), ..Data::new(id(1), b(b""), true) }.flow_controlled_len(), 3);
    let Frame::Data(d) = frame(&raw(0, 0x8, 3, b"\x02abcPP")) else { panic!() };
    assert_eq!(d.flow_controlled_len(), 6);
    // Padding filling everything after the Pad Length octet: empty data, still valid.
    let Frame::Data(d) = frame(&raw(0, 0x8, 3, b"\x03PPP")) else { panic!() };
    assert_eq!((d.data.len(), d.flow_controlled_len()), (0, 4));
    let Frame::Data(d) = frame(&raw(0, 0x8, 3, b"\x00")) else { panic!() };
    assert_eq!((d.data.len(), d.pad_len), (0, Some(0)));
}

#[test]
fn data_padding_as_long_as_the_payload_is_a_protocol_error() {
    assert_conn(&raw(0, 0x8, 1, b"\x04PPP"), PROTOCOL);
    assert_conn(&raw(0, 0x8, 1, b"\x01"), PROTOCOL);
    assert_conn(&raw(0, 0x8, 1, b"\xffabc"), PROTOCOL);
}

#[test]
fn data_padded_without_pad_length_is_a_frame_size_error() {
    assert_conn(&raw(0, 0x8, 1, b""), FRAME_SIZE);
}

#[test]
fn data_on_stream_0_is_a_protocol_error() {
    assert_conn(&raw(0, 0, 0, b"abc"), PROTOCOL);
}

// ---- HEADERS (§6.2) ----------------------------------------------------------------------

#[test]
fn headers_flags_and_fragment() {
    let f = frame(&raw(1, 0x5, 1, b"\x82\x86"));
    assert_eq!(f, Headers::new(id(1), b(b"\x82\x86"), true, true).into());
    let f = frame(&raw(1, 0, 3, b"frag"));
    assert_eq!(f, Headers::new(id(3), b(b"frag"), false, false).into());
}

#[test]
fn headers_priority_fields_are_kept() {
    let Frame::Headers(h) = frame(&raw(1, 0x24, 5, b"\x80\x00\x00\x03\x0ffrag")) else { panic!() };
    let dep = StreamDependency { dependency: id(3), weight: 15, exclusive: true };
    assert_eq!((h.priority, h.fragment, h.end_headers), (Some(dep), b(b"frag"), true));
    let Frame::Headers(h) = frame(&raw(1, 0x20, 5, b"\x00\x00\x00\x00\xff")) else { panic!() };
    let dep = StreamDependency { dependency: id(0), weight: 255, exclusive: false };
    assert_eq!((h.priority, h.fragment.len()), (Some(dep), 0));
}

#[test]
fn headers_padding_with_and_without_priority() {
    let Frame::Headers(h) = frame(&raw(1, 0x8, 1, b"\x02fragPP")) else { panic!() };
    assert_eq!((h.fragment, h.pad_len, h.priority), (b(b"frag"), Some(2), None));
    let input = raw(1, 0x28, 1, b"\x01\x00\x00\x00\x03\x10fragP");
    let Frame::Headers(h) = frame(&input) else { panic!() };
    assert_eq!((h.fragment, h.pad_len), (b(b"frag"), Some(1)));
    assert_eq!(h.priority.map(|p| p.weight), Some(16));
    // Padding exactly filling the rest: empty fragment.
    let Frame::Headers(h) = frame(&raw(1, 0x28, 1, b"\x01\x00\x00\x00\x03\x10P")) else { panic!() };
    assert!(h.fragment.is_empty());
}

#[test]
fn headers_padding_past_the_fragment_is_a_protocol_error() {
    assert_conn(&raw(1, 0x8, 1, b"\x05frag"), PROTOCOL);
    // The priority fields are not room for padding.
    assert_conn(&raw(1, 0x28, 1, b"\x01\x00\x00\x00\x03\x10"), PROTOCOL);
}

#[test]
fn headers_too_short_for_their_fields_is_a_frame_size_error() {
    assert_conn(&raw(1, 0x20, 1, b"\x00\x00\x00\x03"), FRAME_SIZE);
    assert_conn(&raw(1, 0x28, 1, b"\x00\x00\x00\x00\x03"), FRAME_SIZE);
    assert_conn(&raw(1, 0x8, 1, b""), FRAME_SIZE);
}

#[test]
fn headers_on_stream_0_and_self_dependency() {
    assert_conn(&raw(1, 0x4, 0, b"frag"), PROTOCOL);
    assert_stream(&raw(1, 0x20, 7, b"\x00\x00\x00\x07\x10"), 7, PROTOCOL);
}

// ---- PRIORITY (§6.3) ---------------------------------------------------------------------

#[test]
fn priority_valid() {
    let dependency = StreamDependency { dependency: id(1), weight: 200, exclusive: true };
    let f = frame(&raw(2, 0, 3, b"\x80\x00\x00\x01\xc8"));
    assert_eq!(f, Priority { stream_id: id(3), dependency }.into());
}

#[test]
fn priority_length_not_5_is_a_stream_frame_size_error() {
    assert_stream(&raw(2, 0, 3, b"\x00\x00\x00\x01"), 3, FRAME_SIZE);
    assert_stream(&raw(2, 0, 3, b"\x00\x00\x00\x01\x10\x00"), 3, FRAME_SIZE);
    assert_stream(&raw(2, 0, 3, b""), 3, FRAME_SIZE);
}

#[test]
fn priority_on_stream_0_or_on_itself() {
    assert_conn(&raw(2, 0, 0, b"\x00\x00\x00\x01\x10"), PROTOCOL);
    assert_stream(&raw(2, 0, 3, b"\x80\x00\x00\x03\x10"), 3, PROTOCOL);
}

// ---- RST_STREAM (§6.4) -------------------------------------------------------------------

#[test]
fn rst_stream_valid_including_unknown_codes() {
    let f = frame(&raw(3, 0, 1, b"\x00\x00\x00\x08"));
    assert_eq!(f, RstStream::new(id(1), Reason::CANCEL).into());
    let f = frame(&raw(3, 0, 1, b"\xde\xad\xbe\xef"));
    assert_eq!(f, RstStream::new(id(1), Reason(0xdead_beef)).into());
}

#[test]
fn rst_stream_length_not_4_and_stream_0() {
    assert_conn(&raw(3, 0, 1, b"\x00\x00\x08"), FRAME_SIZE);
    assert_conn(&raw(3, 0, 1, b"\x00\x00\x00\x08\x00"), FRAME_SIZE);
    assert_conn(&raw(3, 0, 0, b"\x00\x00\x00\x08"), PROTOCOL);
}

// ---- SETTINGS (§6.5) ---------------------------------------------------------------------

fn setting(id: u16, value: u32) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    v.extend(value.to_be_bytes());
    v
}

fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = entries.iter().flat_map(|&(i, v)| setting(i, v)).collect();
    raw(4, 0, 0, &payload)
}

#[test]
fn settings_all_known_values() {
    let input =
        settings(&[(1, 4096), (2, 0), (3, 100), (4, 65_535), (5, 16_384), (6, 8192), (8, 1)]);
    let want = Settings {
        ack: false,
        header_table_size: Some(4096),
        enable_push: Some(false),
        max_concurrent_streams: Some(100),
        initial_window_size: Some(65_535),
        max_frame_size: Some(16_384),
        max_header_list_size: Some(8192),
        enable_connect_protocol: Some(true),
    };
    assert_eq!(frame(&input), want.into());
}

#[test]
fn settings_empty_ack_unknown_and_duplicates() {
    assert_eq!(frame(&raw(4, 0, 0, b"")), Settings::default().into());
    assert_eq!(frame(&raw(4, 1, 0, b"")), Settings::ack().into());
    // Unknown identifiers (including 0) are ignored; the last value wins.
    let input = settings(&[(0x8, 1), (0, 7), (0xffff, 9), (3, 10), (3, 20), (2, 1)]);
    let want = Settings {
        max_concurrent_streams: Some(20),
        enable_push: Some(true),
        enable_connect_protocol: Some(true),
        ..Default::default()
    };
    assert_eq!(frame(&input), want.into());
}

#[test]
fn settings_value_bounds() {
    let f = frame(&settings(&[(4, 0x7fff_ffff), (5, 16_777_215)]));
    let want = Settings {
        initial_window_size: Some(0x7fff_ffff),
        max_frame_size: Some(16_777_215),
        ..Default::default()
    };
    assert_eq!(f, want.into());
    assert_conn(&settings(&[(2, 2)]), PROTOCOL);
    assert_conn(&settings(&[(8, 2)]), PROTOCOL);
    assert_conn(&settings(&[(4, 0x8000_0000)]), Reason::FLOW_CONTROL_ERROR);
    assert_conn(&settings(&[(5, 16_383)]), PROTOCOL);
    assert_conn(&settings(&[(5, 16_777_216)]), PROTOCOL);
    assert_conn(&settings(&[(5, 0)]), PROTOCOL);
}

#[test]
fn settings_framing_errors() {
    assert_conn(&raw(4, 1, 0, &setting(3, 1)), FRAME_SIZE);
    assert_conn(&raw(4, 0, 0, b"\x00\x03\x00\x00\x00"), FRAME_SIZE);
    assert_conn(&raw(4, 0, 0, &[0; 7]), FRAME_SIZE);
    assert_conn(&raw(4, 0, 1, b""), PROTOCOL);
    assert_conn(&raw(4, 1, 1, b""), PROTOCOL);
}

// ---- PUSH_PROMISE (§6.6) -----------------------------------------------------------------

#[test]
fn push_promise_is_parsed_for_the_caller_to_refuse() {
    let want = PushPromise {
        stream_id: id(1),
        promised_id: id(2),
        fragment: b(b"frag"),
        end_headers: true,
    };
    assert_eq!(frame(&raw(5, 0x4, 1, b"\x80\x00\x00\x02frag")), want.clone().into());
    assert_eq!(frame(&raw(5, 0xc, 1, b"\x01\x00\x00\x00\x02fragP")), want.into());
    assert_conn(&raw(5, 0x4, 1, b"\x00\x00\x02"), FRAME_SIZE);
    assert_conn(&raw(5, 0xc, 1, b"\x02\x00\x00\x00\x02P"), PROTOCOL);
    assert_conn(&raw(5, 0x4, 0, b"\x00\x00\x00\x02"), PROTOCOL);
}

// ---- PING (§6.7) -------------------------------------------------------------------------

#[test]
fn ping_and_ack() {
    assert_eq!(frame(&raw(6, 0, 0, b"12345678")), Ping::new(*b"12345678").into());
    assert_eq!(frame(&raw(6, 1, 0, b"12345678")), Ping::new(*b"12345678").pong().into());
}

#[test]
fn ping_length_not_8_and_on_a_stream() {
    assert_conn(&raw(6, 0, 0, b"1234567"), FRAME_SIZE);
    assert_conn(&raw(6, 0, 0, b"123456789"), FRAME_SIZE);
    assert_conn(&raw(6, 1, 0, b""), FRAME_SIZE);
    assert_conn(&raw(6, 0, 3, b"12345678"), PROTOCOL);
}

// ---- GOAWAY (§6.8) -----------------------------------------------------------------------

#[test]
fn goaway_with_and_without_debug_data() {
    let f = frame(&raw(7, 0, 0, b"\x80\x00\x00\x05\x00\x00\x00\x0bslow down"));
    assert_eq!(f, GoAway::new(id(5), Reason::ENHANCE_YOUR_CALM, b(b"slow down")).into());
    let f = frame(&raw(7, 0, 0, &[0; 8]));
    assert_eq!(f, GoAway::new(id(0), Reason::NO_ERROR, Bytes::new()).into());
}

#[test]
fn goaway_too_short_and_on_a_stream() {
    assert_conn(&raw(7, 0, 0, &[0; 7]), FRAME_SIZE);
    assert_conn(&raw(7, 0, 1, &[0; 8]), PROTOCOL);
}

// ---- WINDOW_UPDATE (§6.9) ----------------------------------------------------------------

#[test]
fn window_update_on_streams_and_the_connection() {
    assert_eq!(frame(&raw(8, 0, 0, b"\x00\x00\x10\x00")), WindowUpdate::new(id(0), 4096).into());
    // The reserved bit of the increment is ignored.
    let f = frame(&raw(8, 0, 3, b"\xff\xff\xff\xff"));
    assert_eq!(f, WindowUpdate::new(id(3), 0x7fff_ffff).into());
}

#[test]
fn window_update_zero_increment_level_depends_on_the_stream() {
    assert_stream(&raw(8, 0, 3, b"\x00\x00\x00\x00"), 3, PROTOCOL);
    assert_stream(&raw(8, 0, 3, b"\x80\x00\x00\x00"), 3, PROTOCOL);
    assert_conn(&raw(8, 0, 0, b"\x00\x00\x00\x00"), PROTOCOL);
}

#[test]
fn window_update_length_not_4() {
    assert_conn(&raw(8, 0, 0, b"\x00\x00\x01"), FRAME_SIZE);
    assert_conn(&raw(8, 0, 3, b"\x00\x00\x00\x01\x00"), FRAME_SIZE);
}

// ---- CONTINUATION (§6.10) ----------------------------------------------------------------

/// A HEADERS without END_HEADERS on `stream`, then `next`: returns what `next` decoded to.
fn after_open_block(stream: u32, next: &[u8]) -> Result<Frame, crate::h2::Error> {
    let mut input = raw(1, 0, stream, b"ab");
    input.extend_from_slice(next);
    let out = run(&input);
    assert_eq!(out.events[0], Ok(Headers::new(id(stream), b(b"ab"), false, false).into()));
    assert_eq!(out.events.len(), 2, "{:?}", out.events);
    out.events[1].clone()
}

fn conn_error(result: Result<Frame, crate::h2::Error>) -> Reason {
    let e = result.unwrap_err();
    assert!(e.is_connection_error(), "{e:?}");
    e.reason()
}

#[test]
fn continuation_valid() {
    let f = after_open_block(1, &raw(9, 0x4, 1, b"more"));
    assert_eq!(f, Ok(Continuation::new(id(1), b(b"more"), true).into()));
    let f = after_open_block(1, &raw(9, 0, 1, b""));
    assert_eq!(f, Ok(Continuation::new(id(1), b(b""), false).into()));
}

#[test]
fn continuation_on_stream_0_or_another_stream_or_out_of_the_blue() {
    assert_eq!(conn_error(after_open_block(1, &raw(9, 0x4, 0, b"more"))), PROTOCOL);
    assert_eq!(conn_error(after_open_block(1, &raw(9, 0x4, 3, b"more"))), PROTOCOL);
    assert_conn(&raw(9, 0x4, 1, b"more"), PROTOCOL);
    // A block that ended does not take more.
    let mut input = raw(1, 0x4, 1, b"ab");
    input.extend(raw(9, 0x4, 1, b"cd"));
    let out = run(&input);
    assert_eq!(out.events.len(), 2);
    assert_eq!(conn_error(out.events[1].clone()), PROTOCOL);
}

#[test]
fn only_continuation_may_interrupt_a_field_block() {
    // §6.10: any other frame, unknown types and frames of other streams included.
    assert_eq!(conn_error(after_open_block(1, &raw(6, 0, 0, b"12345678"))), PROTOCOL);
    assert_eq!(conn_error(after_open_block(1, &raw(0xfa, 0, 1, b"x"))), PROTOCOL);
    assert_eq!(conn_error(after_open_block(1, &raw(1, 0x4, 3, b"x"))), PROTOCOL);
    assert_eq!(conn_error(after_open_block(1, &raw(0, 0, 1, b"x"))), PROTOCOL);
    // A PUSH_PROMISE opens a block too, on its own stream.
    let mut input = raw(5, 0, 1, b"\x00\x00\x00\x02");
    input.extend(raw(6, 0, 0, b"12345678"));
    let out = run(&input);
    assert_eq!(conn_error(out.events[1].clone()), PROTOCOL);
    // A HEADERS that was a stream error still leaves its block open.
    let mut input = raw(1, 0x20, 7, b"\x00\x00\x00\x07\x10");
    input.extend(raw(9, 0x4, 7, b"end"));
    input.extend(raw(6, 0, 0, b"12345678"));
    let out = run(&input);
    assert!(matches!(out.events[0], Err(crate::h2::Error::Stream(..))));
    assert_eq!(out.events[1], Ok(Continuation::new(id(7), b(b"end"), true).into()));
    assert_eq!(out.events[2], Ok(Ping::new(*b"12345678").into()));
}

#[test]
fn a_header_block_across_frames_stays_in_order() {
    let mut input = raw(1, 0x1, 1, b"ab");
    input.extend(raw(9, 0, 1, b"cd"));
    input.extend(raw(9, 0x4, 1, b"ef"));
    let out = run(&input);
    assert_eq!(
        out.events,
        [
            Ok(Headers::new(id(1), b(b"ab"), true, false).into()),
            Ok(Continuation::new(id(1), b(b"cd"), false).into()),
            Ok(Continuation::new(id(1), b(b"ef"), true).into()),
        ]
    );
}

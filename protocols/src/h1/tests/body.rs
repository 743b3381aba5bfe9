//! `BodyDecoder`: Content-Length and chunked framing, every rejection, the caps.

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use peregrine_limits::Limit;

use super::{run, Conn, Ev, Outcome};
use crate::h1::{BodyDecoder, BodyError, BodyEvent, BodyFraming, LimitExceeded, Violation};

const NO_CAP: Option<u64> = None;

fn chunked(input: &[u8]) -> Outcome {
    chunked_with(input, NO_CAP, 1024)
}

fn chunked_with(input: &[u8], max_body: Option<u64>, max_trailer: usize) -> Outcome {
    run(input, || Conn::body(BodyFraming::Chunked, max_body, max_trailer))
}

/// Decodes a complete chunked body; returns the data and what follows it.
fn chunked_ok(input: &str) -> (Vec<u8>, Vec<u8>) {
    let out = chunked(input.as_bytes());
    match out.events.first() {
        Some(Ev::Body(data)) => (data.clone(), out.leftover),
        other => panic!("{input:?}: {other:?}"),
    }
}

fn chunked_error(input: &str) -> BodyError {
    chunked_error_with(input.as_bytes(), NO_CAP, 1024)
}

fn chunked_error_with(input: &[u8], max_body: Option<u64>, max_trailer: usize) -> BodyError {
    let out = chunked_with(input, max_body, max_trailer);
    match out.events.as_slice() {
        [Ev::BodyError(_, e)] => *e,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

fn invalid(v: Violation) -> BodyError {
    BodyError::Invalid(v)
}

// ---- empty and Content-Length ------------------------------------------------------------

#[test]
fn empty_is_done_at_once_and_consumes_nothing() {
    let mut dec = BodyDecoder::new(BodyFraming::Empty, Some(0), 0);
    assert!(dec.is_done());
    let mut buf = BytesMut::from("GET / HTTP/1.1\r\n");
    assert_eq!(dec.decode(&mut buf), Ok(BodyEvent::Done));
    assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
    assert!(BodyDecoder::new(BodyFraming::Length(0), None, 0).is_done());
}

#[test]
fn length_body_then_next_request() {
    let out = run(b"helloGET /", || Conn::body(BodyFraming::Length(5), NO_CAP, 0));
    assert_eq!(out.events, [Ev::Body(b"hello".to_vec())]);
    assert_eq!(out.leftover, b"GET /");
}

#[test]
fn length_body_incomplete() {
    let out = run(b"hel", || Conn::body(BodyFraming::Length(5), NO_CAP, 0));
    assert!(out.events.is_empty());
    assert_eq!(out.pending_body, b"hel");
}

#[test]
fn length_data_is_split_off_without_copying() {
    let mut dec = BodyDecoder::new(BodyFraming::Length(3), None, 0);
    let mut buf = BytesMut::from("abcdef");
    let start = buf.as_ptr();
    assert!(!dec.is_done());
    let Ok(BodyEvent::Data(data)) = dec.decode(&mut buf) else { panic!() };
    assert_eq!(data, Bytes::from_static(b"abc"));
    assert_eq!(data.as_ptr(), start);
    assert!(dec.is_done());
    assert_eq!(dec.decode(&mut buf), Ok(BodyEvent::Done));
    assert_eq!(&buf[..], b"def");
}

#[test]
fn length_over_the_cap_is_refused_before_reading() {
    let e =
        BodyError::Limit(LimitExceeded { limit: Limit::MaxRequestBodySize, max: 4, observed: 5 });
    let out = run(b"hello", || Conn::body(BodyFraming::Length(5), Some(4), 0));
    assert_eq!(out.events, [Ev::BodyError(vec![], e)]);
    assert_eq!(out.leftover, b"hello");
    assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let at_cap = run(b"hello", || Conn::body(BodyFraming::Length(5), Some(5), 0));
    assert_eq!(at_cap.events, [Ev::Body(b"hello".to_vec())]);
}

// ---- chunked: sizes and data -------------------------------------------------------------

#[test]
fn chunked_basic() {
    let (data, rest) = chunked_ok("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n");
    assert_eq!(data, b"hello world");
    assert_eq!(rest, b"GET / HTTP/1.1\r\n");
}

#[test]
fn chunked_empty_body() {
    assert_eq!(chunked_ok("0\r\n\r\n"), (vec![], vec![]));
    assert_eq!(chunked_ok("000\r\n\r\nX"), (vec![], b"X".to_vec()));
}

#[test]
fn chunk_sizes_are_hex_any_case() {
    let body = "x".repeat(0xab);
    let (data, _) = chunked_ok(&format!("aB\r\n{body}\r\n0\r\n\r\n"));
    assert_eq!(data.len(), 0xab);
    let (data, _) = chunked_ok(&format!("00000000000000Ab\r\n{body}\r\n0\r\n\r\n"));
    assert_eq!(data.len(), 0xab);
}

#[test]
fn invalid_chunk_sizes() {
    for input in [
        "\r\n",
        ";a\r\n",
        "x\r\n",
        "5x\r\nhello\r\n",
        // An empty size line where the next chunk should start.
        "5\r\nhello\r\n\r\n0\r\n\r\n",
        "-5\r\n",
        "+5\r\n",
        "0x5\r\n",
        // 17 digits, even if they are leading zeros.
        "00000000000000005\r\n",
        "10000000000000000\r\n",
    ] {
        assert_eq!(chunked_error(input), invalid(Violation::InvalidChunkSize), "{input:?}");
    }
}

#[test]
fn largest_chunk_size_parses() {
    let out = chunked(b"ffffffffffffffff\r\nabc");
    assert!(out.events.is_empty());
    assert_eq!(out.pending_body, b"abc");
}

#[test]
fn partial_chunk_data_is_handed_out_as_it_arrives() {
    let mut dec = BodyDecoder::new(BodyFraming::Chunked, None, 0);
    let mut buf = BytesMut::from("a\r\nhel");
    assert_eq!(dec.decode(&mut buf), Ok(BodyEvent::Data(Bytes::from_static(b"hel"))));
    assert_eq!(dec.decode(&mut buf), Ok(BodyEvent::NeedMore));
    buf.extend_from_slice(b"lo world!!\r\n0\r\n\r\nnext");
    let start = buf.as_ptr();
    let Ok(BodyEvent::Data(data)) = dec.decode(&mut buf) else { panic!() };
    assert_eq!(data, Bytes::from_static(b"lo worl"));
    assert_eq!(data.as_ptr(), start, "split off the buffer, not copied");
    // The rest is past this chunk: never handed out as part of it.
    assert!(!dec.is_done());
    assert_eq!(dec.decode(&mut buf), Err(invalid(Violation::InvalidChunkFraming)));
}

#[test]
fn is_done_only_after_the_final_crlf() {
    let mut dec = BodyDecoder::new(BodyFraming::Chunked, None, 0);
    let mut buf = BytesMut::from("0\r\n\r");
    assert_eq!(dec.decode(&mut buf), Ok(BodyEvent::NeedMore));
    assert!(!dec.is_done());
    buf.extend_from_slice(b"\nGET");
    assert_eq!(dec.decode(&mut buf), Ok(BodyEvent::Done));
    assert!(dec.is_done());
    assert_eq!(&buf[..], b"GET");
}

// ---- chunked: line endings ---------------------------------------------------------------

#[test]
fn every_chunk_line_must_end_in_crlf() {
    for input in [
        "5\nhello\r\n0\r\n\r\n",
        "5\rhello\r\n0\r\n\r\n",
        "5\r\nhello\n0\r\n\r\n",
        "5\r\nhello\r0\r\n\r\n",
        "5\r\nhelloX\r\n0\r\n\r\n",
        "5\r\nhello\r\n0\n\r\n",
        "5\r\nhello\r\n0\r\n\n",
        "5\r\nhello\r\n0\r\n\rX",
        "5;a\nhello\r\n",
        "5;a=b\nhello\r\n",
        "5;a=\"b\"\nhello\r\n",
    ] {
        assert_eq!(chunked_error(input), invalid(Violation::InvalidChunkFraming), "{input:?}");
    }
}

#[test]
fn data_before_a_framing_error_is_still_delivered() {
    let out = chunked(b"5\r\nhelloX");
    assert_eq!(
        out.events,
        [Ev::BodyError(b"hello".to_vec(), invalid(Violation::InvalidChunkFraming))]
    );
}

// ---- chunked: extensions -----------------------------------------------------------------

#[test]
fn chunk_extensions_are_parsed_and_ignored() {
    for input in [
        "5;a\r\nhello\r\n0\r\n\r\n",
        "5;a=b\r\nhello\r\n0\r\n\r\n",
        "5;a=b;c;d=e\r\nhello\r\n0\r\n\r\n",
        "5 ;a\r\nhello\r\n0\r\n\r\n",
        "5\t; \ta \t= \tb\r\nhello\r\n0\r\n\r\n",
        "5;a ;b\r\nhello\r\n0\r\n\r\n",
        "5;a=b ;c\r\nhello\r\n0\r\n\r\n",
        "5;a=\"quoted; \\\"string\\\" \\\\ \t\"\r\nhello\r\n0\r\n\r\n",
        "5;a=\"\"\r\nhello\r\n0\r\n\r\n",
        "5;a=\"x\";b=y\r\nhello\r\n0\r\n\r\n",
        "5;a=\"x\" ;b\r\nhello\r\n0;last=1\r\n\r\n",
        "5;!#$%&'*+-.^_`|~=!#$%&'*+-.^_`|~\r\nhello\r\n0\r\n\r\n",
    ] {
        assert_eq!(chunked_ok(input).0, b"hello", "{input:?}");
    }
    let (data, _) = chunked_ok("5;a=\"\u{e9}\"\r\nhello\r\n0\r\n\r\n");
    assert_eq!(data, b"hello", "obs-text in a quoted string");
}

#[test]
fn invalid_chunk_extensions() {
    for input in [
        "5 \r\nhello\r\n",
        "5;\r\nhello\r\n",
        "5;;a\r\nhello\r\n",
        "5;=b\r\nhello\r\n",
        "5;a=\r\nhello\r\n",
        "5;a=;b\r\nhello\r\n",
        "5;a \r\nhello\r\n",
        "5;a b\r\nhello\r\n",
        "5;a=b \r\nhello\r\n",
        "5;a=b c\r\nhello\r\n",
        "5;a=b\"c\"\r\nhello\r\n",
        "5;a=\"unterminated\r\nhello\r\n",
        "5;a=\"x\"y\r\nhello\r\n",
        "5;a=\"\x01\"\r\nhello\r\n",
        "5;a=\"\\\x01\"\r\nhello\r\n",
        "5;a=\"\x7f\"\r\nhello\r\n",
        "5;a(b\r\nhello\r\n",
        "5;a=b(c\r\nhello\r\n",
        "5;a\x00\r\nhello\r\n",
        "5 5\r\nhello\r\n",
    ] {
        assert_eq!(chunked_error(input), invalid(Violation::InvalidChunkFraming), "{input:?}");
    }
}

#[test]
fn chunk_extension_bytes_are_capped_across_the_body() {
    // 16 KiB of extensions in total passes; one byte more fails, however it is spread out.
    let ext = |n: usize| format!(";{}", "e".repeat(n - 1));
    let at_cap = format!("1{}\r\na\r\n1{}\r\nb\r\n0\r\n\r\n", ext(8 * 1024), ext(8 * 1024));
    assert_eq!(chunked_ok(&at_cap).0, b"ab");
    let over = format!("1{}\r\na\r\n1{}\r\nb\r\n0\r\n\r\n", ext(8 * 1024), ext(8 * 1024 + 1));
    let out = chunked(over.as_bytes());
    assert_eq!(out.events, [Ev::BodyError(b"a".to_vec(), invalid(Violation::InvalidChunkFraming))]);
    // Whitespace after the size counts too, so an endless run of it is cut off.
    let spaces = format!("1{}", " ".repeat(16 * 1024 + 1));
    assert_eq!(chunked_error(&spaces), invalid(Violation::InvalidChunkFraming));
}

// ---- chunked: trailers -------------------------------------------------------------------

#[test]
fn trailers_are_validated_and_discarded() {
    let (data, rest) = chunked_ok("5\r\nhello\r\n0\r\nX-T: v\r\nY:\r\nZ: a \t b\u{80}\r\n\r\nnext");
    assert_eq!(data, b"hello");
    assert_eq!(rest, b"next");
}

#[test]
fn invalid_trailers() {
    for trailer in [
        "X: a\r\n b\r\n",
        "X: a\r\n\tb\r\n",
        " X: a\r\n",
        "X : a\r\n",
        "X\t: a\r\n",
        "X\r\n",
        ": a\r\n",
        "X(: a\r\n",
        "X: a\nY: b\r\n",
        "X: a\rY: b\r\n",
        "X: a\x01\r\n",
        "X: a\x7f\r\n",
        "X: a\x00\r\n",
    ] {
        let input = format!("0\r\n{trailer}\r\n");
        assert_eq!(chunked_error(&input), invalid(Violation::InvalidTrailer), "{trailer:?}");
    }
}

#[test]
fn trailer_section_size_boundary() {
    let input = b"0\r\nX-T: abc\r\nY: z\r\n\r\n"; // trailer lines: 10 + 6 = 16 bytes
    let at_cap = chunked_with(input, NO_CAP, 16);
    assert_eq!(at_cap.events, [Ev::Body(vec![])]);
    let e = chunked_error_with(input, NO_CAP, 15);
    assert_eq!(
        e,
        BodyError::Limit(LimitExceeded {
            limit: Limit::MaxRequestHeadersTotalSize,
            max: 15,
            observed: 16
        })
    );
    assert_eq!(e.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // No trailers fit any cap, even zero.
    assert_eq!(chunked_with(b"0\r\n\r\n", NO_CAP, 0).events, [Ev::Body(vec![])]);
}

// ---- chunked: body cap -------------------------------------------------------------------

#[test]
fn chunked_body_cap_boundary() {
    let input = b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n";
    assert_eq!(chunked_with(input, Some(10), 0).events, [Ev::Body(b"helloworld".to_vec())]);
    let out = chunked_with(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", Some(10), 0);
    let e =
        BodyError::Limit(LimitExceeded { limit: Limit::MaxRequestBodySize, max: 10, observed: 11 });
    // Refused when the size is read, before any byte of that chunk is handed out.
    assert_eq!(out.events, [Ev::BodyError(b"hello".to_vec(), e)]);
    // The CR that ended the size line was consumed; nothing after it was.
    assert_eq!(out.leftover, b"\n world\r\n0\r\n\r\n");
}

#[test]
fn chunked_body_cap_with_huge_size() {
    let e = chunked_error_with(b"ffffffffffffffff\r\n", Some(1 << 20), 0);
    assert_eq!(
        e,
        BodyError::Limit(LimitExceeded {
            limit: Limit::MaxRequestBodySize,
            max: 1 << 20,
            observed: u64::MAX
        })
    );
    // The running total saturates rather than wrapping around past the cap.
    let e = chunked_error_with(b"1\r\na\r\nffffffffffffffff\r\n", Some(u64::MAX - 1), 0);
    assert!(matches!(e, BodyError::Limit(l) if l.observed == u64::MAX));
}

#[test]
fn chunked_body_then_pipelined_request() {
    let input = b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let out = chunked(input);
    assert!(
        matches!(&out.events[..], [Ev::Body(b), Ev::Head(_), Ev::Body(e)] if b == b"abc" && e.is_empty())
    );
    assert!(out.leftover.is_empty());
}

#[test]
fn errors_are_sticky() {
    let mut dec = BodyDecoder::new(BodyFraming::Chunked, None, 0);
    let mut buf = BytesMut::from("zz");
    let e = dec.decode(&mut buf);
    assert_eq!(e, Err(invalid(Violation::InvalidChunkSize)));
    buf.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(dec.decode(&mut buf), e);
    assert!(!dec.is_done());
}

//! Response framing and encoding. Encoders append to a buffer that already holds 0xa5 bytes
//! (smoltcp's habit), so a write before the end or a missing byte shows.

use bytes::BytesMut;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Version};

use super::{run, Conn, Ev};
use crate::h1::{
    encode_chunk_header, encode_error_response, encode_response_head, response_framing,
    BodyFraming, ResponseFraming, CHUNK_END, CONTINUE_100, LAST_CHUNK,
};

const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";
const CANARY: [u8; 8] = [0xa5; 8];

/// A buffer holding the canary; returns what the encoder appended after checking the canary.
fn encode(f: impl FnOnce(&mut BytesMut)) -> String {
    let mut dst = BytesMut::from(&CANARY[..]);
    f(&mut dst);
    assert_eq!(dst[..CANARY.len()], CANARY, "bytes before the write are untouched");
    String::from_utf8(dst[CANARY.len()..].to_vec()).unwrap()
}

fn head(
    status: u16,
    headers: &HeaderMap,
    framing: ResponseFraming,
    version: Version,
    close: bool,
) -> String {
    let status = StatusCode::from_u16(status).unwrap();
    encode(|dst| encode_response_head(status, headers, framing, version, close, DATE, dst))
}

const DATE_SERVER: &str = "date: Sun, 06 Nov 1994 08:49:37 GMT\r\nserver: peregrine\r\n";

// ---- response_framing --------------------------------------------------------------------

#[test]
fn framing_table() {
    use ResponseFraming::*;
    let f = |status: u16, method: Method, version, len| {
        response_framing(StatusCode::from_u16(status).unwrap(), &method, version, len)
    };
    let v11 = Version::HTTP_11;
    let v10 = Version::HTTP_10;
    for status in [100, 101, 103, 204, 304] {
        assert_eq!(f(status, Method::GET, v11, Some(5)), NoBody { content_length: None });
        assert_eq!(f(status, Method::HEAD, v11, Some(5)), NoBody { content_length: None });
    }
    assert_eq!(f(200, Method::HEAD, v11, Some(5)), NoBody { content_length: Some(5) });
    assert_eq!(f(200, Method::HEAD, v10, None), NoBody { content_length: None });
    assert_eq!(f(200, Method::GET, v11, Some(5)), Length(5));
    assert_eq!(f(404, Method::POST, v10, Some(0)), Length(0));
    assert_eq!(f(200, Method::GET, v11, None), Chunked);
    assert_eq!(f(500, Method::GET, v10, None), CloseDelimited);
    // RFC 9110 §9.3.6: a 2xx to CONNECT is a tunnel, no framing fields at all.
    assert_eq!(f(200, Method::CONNECT, v11, Some(5)), NoBody { content_length: None });
    assert_eq!(f(407, Method::CONNECT, v11, Some(3)), Length(3));
}

// ---- encode_response_head ----------------------------------------------------------------

#[test]
fn simple_head_exact_bytes() {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    let out = head(200, &headers, ResponseFraming::Length(13), Version::HTTP_11, false);
    assert_eq!(
        out,
        format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 13\r\n{DATE_SERVER}\r\n")
    );
}

#[test]
fn codec_owned_headers_are_replaced() {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
    headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    headers.append("x-multi", HeaderValue::from_static("a"));
    headers.append("x-multi", HeaderValue::from_static("b"));
    let out = head(200, &headers, ResponseFraming::Chunked, Version::HTTP_11, false);
    assert_eq!(
        out,
        format!(
            "HTTP/1.1 200 OK\r\nx-multi: a\r\nx-multi: b\r\ntransfer-encoding: chunked\r\n\
             {DATE_SERVER}\r\n"
        )
    );
}

#[test]
fn connection_field() {
    let none = HeaderMap::new();
    let close = head(200, &none, ResponseFraming::Length(0), Version::HTTP_11, true);
    assert_eq!(
        close,
        format!("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n{DATE_SERVER}\r\n")
    );
    // HTTP/1.0 closes by default, so staying open must be said.
    let keep = head(200, &none, ResponseFraming::Length(0), Version::HTTP_10, false);
    assert_eq!(
        keep,
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: keep-alive\r\n{DATE_SERVER}\r\n"
        )
    );
    let close10 = head(200, &none, ResponseFraming::Length(0), Version::HTTP_10, true);
    assert!(close10.contains("connection: close\r\n"));
    assert!(!close10.contains("keep-alive"));
    // A close-delimited body needs the close, whatever the caller said.
    let delimited = head(200, &none, ResponseFraming::CloseDelimited, Version::HTTP_10, false);
    assert_eq!(delimited, format!("HTTP/1.1 200 OK\r\nconnection: close\r\n{DATE_SERVER}\r\n"));
}

#[test]
fn no_body_framing() {
    let none = HeaderMap::new();
    let head_req = head(
        200,
        &none,
        ResponseFraming::NoBody { content_length: Some(42) },
        Version::HTTP_11,
        false,
    );
    assert_eq!(head_req, format!("HTTP/1.1 200 OK\r\ncontent-length: 42\r\n{DATE_SERVER}\r\n"));
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
    let no_content = head(
        204,
        &headers,
        ResponseFraming::NoBody { content_length: None },
        Version::HTTP_11,
        false,
    );
    assert_eq!(no_content, format!("HTTP/1.1 204 No Content\r\n{DATE_SERVER}\r\n"));
}

#[test]
fn handler_date_and_server_win() {
    let mut headers = HeaderMap::new();
    headers.insert(header::SERVER, HeaderValue::from_static("mine"));
    headers.insert(header::DATE, HeaderValue::from_static("Mon, 07 Nov 1994 08:49:37 GMT"));
    let out = head(200, &headers, ResponseFraming::Length(0), Version::HTTP_11, false);
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nserver: mine\r\ndate: Mon, 07 Nov 1994 08:49:37 GMT\r\n\
         content-length: 0\r\n\r\n"
    );
}

#[test]
fn values_are_written_as_raw_bytes() {
    let mut headers = HeaderMap::new();
    headers.insert("x-raw", HeaderValue::from_bytes(b"caf\xe9\t!").unwrap());
    let mut dst = BytesMut::new();
    let (status, framing) = (StatusCode::OK, ResponseFraming::Length(0));
    encode_response_head(status, &headers, framing, Version::HTTP_11, false, DATE, &mut dst);
    assert!(dst.windows(15).any(|w| w == b"x-raw: caf\xe9\t!\r\n"));
}

#[test]
fn status_line_reasons() {
    let none = HeaderMap::new();
    let line = |status| {
        let out = head(status, &none, ResponseFraming::Length(0), Version::HTTP_11, false);
        out.split("\r\n").next().unwrap().to_owned()
    };
    assert_eq!(line(404), "HTTP/1.1 404 Not Found");
    assert_eq!(line(431), "HTTP/1.1 431 Request Header Fields Too Large");
    // No canonical reason: the code and the space, which RFC 9112 §4 requires.
    assert_eq!(line(599), "HTTP/1.1 599 ");
    assert_eq!(line(299), "HTTP/1.1 299 ");
}

#[test]
fn large_content_length() {
    let none = HeaderMap::new();
    let out = head(200, &none, ResponseFraming::Length(u64::MAX), Version::HTTP_11, false);
    assert!(out.contains("\r\ncontent-length: 18446744073709551615\r\n"));
    let zero = head(200, &none, ResponseFraming::Length(0), Version::HTTP_11, false);
    assert!(zero.contains("\r\ncontent-length: 0\r\n"));
}

// ---- chunks and canned responses ---------------------------------------------------------

#[test]
fn chunk_headers() {
    for (len, want) in [
        (1, "1\r\n"),
        (9, "9\r\n"),
        (10, "a\r\n"),
        (255, "ff\r\n"),
        (4096, "1000\r\n"),
        (0xdead_beef, "deadbeef\r\n"),
    ] {
        assert_eq!(encode(|dst| encode_chunk_header(len, dst)), want);
    }
    let max = encode(|dst| encode_chunk_header(usize::MAX, dst));
    assert_eq!(max, format!("{:x}\r\n", usize::MAX));
}

#[test]
fn error_responses() {
    let out = encode(|dst| encode_error_response(StatusCode::BAD_REQUEST, DATE, dst));
    assert_eq!(
        out,
        format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n{DATE_SERVER}\r\n"
        )
    );
    let out = encode(|dst| encode_error_response(StatusCode::URI_TOO_LONG, DATE, dst));
    assert!(out.starts_with("HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n"));
}

#[test]
fn encoded_chunks_decode() {
    // What the encoder frames, the decoder reads back: chunk headers, CHUNK_END, LAST_CHUNK.
    let mut wire = BytesMut::new();
    for piece in [&b"hello"[..], &[b'x'; 300][..], b" world"] {
        encode_chunk_header(piece.len(), &mut wire);
        wire.extend_from_slice(piece);
        wire.extend_from_slice(CHUNK_END);
    }
    wire.extend_from_slice(LAST_CHUNK);
    let out = run(&wire, || Conn::body(BodyFraming::Chunked, None, 0));
    let mut want = b"hello".to_vec();
    want.extend_from_slice(&[b'x'; 300]);
    want.extend_from_slice(b" world");
    assert_eq!(out.events, [Ev::Body(want)]);
}

#[test]
fn constants() {
    assert_eq!(CONTINUE_100, b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(CHUNK_END, b"\r\n");
    assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
}

#[test]
fn switching_protocols_says_upgrade_and_nothing_of_a_body() {
    let mut h = HeaderMap::new();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    let out = head(101, &h, ResponseFraming::SwitchingProtocols, Version::HTTP_11, true);
    assert_eq!(
        out,
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
             {DATE_SERVER}\r\n"
        )
    );
}

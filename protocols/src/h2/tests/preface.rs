//! The client connection preface (RFC 9113 §3.4).

use bytes::BytesMut;

use crate::h2::preface::{check, PREFACE};
use crate::h2::{Error, Reason};

/// Feeds `input` in two parts split at every boundary, and one byte at a time, checking
/// after each part; returns the result once everything arrived and what was left.
fn check_all(input: &[u8]) -> (Result<Option<()>, Error>, Vec<u8>) {
    let once = |parts: &[&[u8]]| {
        let mut buf = BytesMut::new();
        let mut result = Ok(None);
        for part in parts {
            buf.extend_from_slice(part);
            result = check(&mut buf);
            if result != Ok(None) {
                // Done (or failed): later bytes are the frame decoder's.
                let rest: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
                let consumed = if result.is_ok() { PREFACE.len() } else { 0 };
                return (result, rest[consumed..].to_vec());
            }
        }
        (result, buf.to_vec())
    };
    let whole = once(&[input]);
    for at in 0..=input.len() {
        assert_eq!(once(&[&input[..at], &input[at..]]), whole, "split at {at}");
    }
    let bytes: Vec<&[u8]> = input.iter().map(std::slice::from_ref).collect();
    assert_eq!(once(&bytes), whole, "byte at a time");
    whole
}

#[test]
fn preface_is_consumed_and_what_follows_is_left() {
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    assert_eq!(check_all(&input), (Ok(Some(())), vec![0, 0, 0, 4, 0, 0, 0, 0, 0]));
}

#[test]
fn partial_preface_needs_more_and_is_untouched() {
    for n in 0..PREFACE.len() {
        let mut buf = BytesMut::from(&PREFACE[..n]);
        assert_eq!(check(&mut buf), Ok(None));
        assert_eq!(&buf[..], &PREFACE[..n]);
    }
}

#[test]
fn wrong_preface_is_a_protocol_error_at_the_first_wrong_byte() {
    let (result, _) = check_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        result,
        Err(Error::Connection(Reason::PROTOCOL_ERROR, "invalid connection preface"))
    );
    let mut buf = BytesMut::from(&b"G"[..]);
    assert!(check(&mut buf).is_err());
    let mut late = PREFACE.to_vec();
    late[23] = b'X';
    assert!(check_all(&late).0.is_err());
    // HTTP/2 with prior knowledge, but a mangled middle.
    assert!(check_all(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").0.is_err());
}

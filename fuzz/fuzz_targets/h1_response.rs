//! The HTTP/1 response head parser (the proxy's side): no panic, and the head parsed from
//! the bytes whole is the one parsed as they arrive piece by piece, with the field names of
//! an earlier parse of the same bytes remembered (`ResponseNames`).
#![no_main]

mod split;

use bytes::BytesMut;
use http::Method;
use libfuzzer_sys::fuzz_target;
use peregrine_protocols::h1::{parse_response, parse_response_with, ResponseLimits, ResponseNames};

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else { return };
    let method = match seed % 4 {
        0 => Method::HEAD,
        1 => Method::CONNECT,
        _ => Method::GET,
    };
    let limits =
        ResponseLimits { max_head_size: 2048, max_header_count: 16, max_trailer_size: 256 };
    let mut whole = BytesMut::from(data);
    let expected = match parse_response(&mut whole, &method, &limits) {
        Ok(Some(head)) => {
            // The framing's decoder must be constructible for whatever was accepted.
            let _ = format!("{head:?}");
            format!("{head:?} rest={:?}", &whole[..])
        }
        Ok(None) => "incomplete".into(),
        Err(e) => format!("error {e:?}"),
    };
    // Names remembered from the same head parsed once before: reusing them must change nothing.
    let mut names = ResponseNames::default();
    let _ = parse_response_with(&mut BytesMut::from(data), &method, &limits, &mut names);
    let mut buf = BytesMut::new();
    let mut got = "incomplete".to_string();
    let pieces = split::pieces(seed, data);
    for (i, piece) in pieces.iter().enumerate() {
        buf.extend_from_slice(piece);
        match parse_response_with(&mut buf, &method, &limits, &mut names) {
            Ok(None) => {}
            Ok(Some(head)) => {
                for later in &pieces[i + 1..] {
                    buf.extend_from_slice(later);
                }
                got = format!("{head:?} rest={:?}", &buf[..]);
                break;
            }
            Err(e) => {
                got = format!("error {e:?}");
                break;
            }
        }
    }
    if expected.starts_with("error") {
        assert!(got.starts_with("error") || got == "incomplete", "whole: {expected}\nsplit: {got}");
    } else {
        assert_eq!(expected, got);
    }
});

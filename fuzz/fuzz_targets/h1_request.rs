//! The HTTP/1 request head parser, and the split-invariance of the stateful parser: the same
//! bytes fed whole to `parse_request`, or piece by piece to `HeadParser`, give the same head
//! (and leave the same bytes behind) or the same error status; and the one-pass lexer for the
//! common shape agrees with the reference tokeniser. Small limits, so the limit paths are
//! reached too.
#![no_main]

mod split;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use peregrine_protocols::h1::{
    agrees_with_reference, parse_request, HeadParser, ParseConfig, ParseError, ParsedHead,
    RequestHead,
};
use peregrine_protocols::host::KnownHost;

fn summary(result: Result<Option<RequestHead>, ParseError>, rest: &BytesMut) -> String {
    match result {
        Ok(Some(head)) => format!("{head:?} rest={:?}", &rest[..]),
        Ok(None) => "incomplete".into(),
        Err(e) => format!("error {}", e.status()),
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else { return };
    let cfg = ParseConfig {
        max_request_line_size: 256,
        max_request_headers_total_size: 1024,
        max_request_header_count: 16,
    };
    // The one-pass lexer takes only what the reference tokeniser takes, the same way.
    assert!(agrees_with_reference(data, &cfg), "the lexers disagree");
    let mut whole = BytesMut::from(data);
    let result = parse_request(&mut whole, &cfg);
    let expected = summary(result, &whole);

    let mut parser = HeadParser::new();
    let mut known_host = KnownHost::default();
    let mut buf = BytesMut::new();
    let mut got = None;
    let pieces = split::pieces(seed, data);
    for (i, piece) in pieces.iter().enumerate() {
        buf.extend_from_slice(piece);
        match parser.parse(&mut buf, &cfg, &mut known_host) {
            Ok(None) => {}
            other => {
                // What arrives after the head is left behind for the body or the next one.
                for later in &pieces[i + 1..] {
                    buf.extend_from_slice(later);
                }
                // The stateful parser checks every rule and leaves the map for later: built
                // here, it must be the stateless parser's.
                let built = other.and_then(|head| head.map(ParsedHead::into_head).transpose());
                got = Some(summary(built, &buf));
                break;
            }
        }
    }
    let got = got.unwrap_or_else(|| "incomplete".into());
    if got.starts_with("error") || expected.starts_with("error") {
        // A limit may be crossed before a later error is seen: both must be errors.
        assert!(
            got.starts_with("error") == expected.starts_with("error") || got == "incomplete",
            "whole: {expected}\nsplit: {got}"
        );
    } else {
        assert_eq!(expected, got, "split changed the outcome");
    }
});

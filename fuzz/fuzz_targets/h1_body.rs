//! The HTTP/1 body decoders (chunked, and by length): the body and its end decoded from the
//! bytes whole equal those decoded piece by piece, and the decoder never hands out more than
//! its limit.
#![no_main]

mod split;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use peregrine_protocols::h1::{BodyDecoder, BodyEvent, BodyFraming};

const MAX_BODY: u64 = 4096;

/// Feeds `pieces` to a fresh decoder: the body, and how it ended (`done`, `need more`, or
/// the error), plus the bytes left behind once done.
fn decode<'a>(framing: BodyFraming, mut pieces: impl Iterator<Item = &'a [u8]>) -> String {
    let mut decoder = BodyDecoder::new(framing, Some(MAX_BODY), 256);
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    while let Some(piece) = pieces.next() {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(BodyEvent::Data(d)) => {
                    assert!(!d.is_empty(), "empty data event");
                    body.extend_from_slice(&d);
                    assert!(body.len() as u64 <= MAX_BODY, "body past its limit");
                }
                Ok(BodyEvent::NeedMore) => break,
                Ok(BodyEvent::Done) => {
                    assert!(decoder.is_done());
                    // What arrives after the body belongs to the next request.
                    let after: usize = buf.len() + pieces.map(<[u8]>::len).sum::<usize>();
                    return format!("done {body:?} then {after}");
                }
                Err(e) => return format!("error {e:?} after {}", body.len().min(1)),
            }
        }
    }
    format!("need more {body:?}")
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else { return };
    let framing = match seed % 3 {
        0 => BodyFraming::Chunked,
        _ => BodyFraming::Length(u64::from(seed) * 7),
    };
    let whole = decode(framing, std::iter::once(data));
    let pieces = decode(framing, split::pieces(seed, data).into_iter());
    // Where the whole decoder stops with "done" after an error-free body, so must the
    // split one; errors must agree on being errors.
    if whole.starts_with("error") || pieces.starts_with("error") {
        assert_eq!(whole.starts_with("error"), pieces.starts_with("error"), "{whole}\n{pieces}");
    } else {
        assert_eq!(whole, pieces);
    }
});

//! The HTTP/2 frame decoder: no panic, the frames decoded from the bytes whole equal those
//! decoded piece by piece, and no frame exceeds the maximum size.
#![no_main]

mod split;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use peregrine_protocols::h2::FrameDecoder;

fn decode<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    let mut decoder = FrameDecoder::with_max_frame_size(16_384);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => out.push(format!("{frame:?}")),
                Ok(None) => break,
                Err(e) => {
                    out.push(format!("error {e:?}"));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else { return };
    let whole = decode(std::iter::once(data));
    let pieces = decode(split::pieces(seed, data).into_iter());
    assert_eq!(whole, pieces, "split changed the frames");
});

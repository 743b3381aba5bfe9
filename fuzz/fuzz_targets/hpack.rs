//! HPACK decoding of arbitrary header blocks (request and trailer validation on top): no
//! panic and bounded work; and an encode → decode round trip of fields built from the input.
#![no_main]

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use peregrine_protocols::h2::{HeaderDecoder, HeaderEncoder};

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else { return };
    if mode % 2 == 0 {
        // Arbitrary blocks through one decoder, so its dynamic table carries over.
        let mut decoder = HeaderDecoder::new(4096, 8192, 64);
        for block in data.split(|&b| b == 0xff) {
            let _ = decoder.decode_request(block);
            let _ = decoder.decode_trailers(block);
        }
        return;
    }
    // Fields from the input: `name=value` pairs separated by newlines.
    let mut fields = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(eq) = line.iter().position(|&b| b == b'=') else { continue };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(&line[..eq]), HeaderValue::from_bytes(&line[eq + 1..]))
        else {
            continue;
        };
        // The encoder leaves out connection-specific fields by design (RFC 9113 §8.2.2).
        let connection_specific =
            ["connection", "transfer-encoding", "upgrade", "keep-alive", "proxy-connection"];
        if name.as_str().starts_with(':') || connection_specific.contains(&name.as_str()) {
            continue;
        }
        fields.append(name, value);
    }
    let mut encoder = HeaderEncoder::new();
    let mut block = BytesMut::new();
    encoder.encode_trailers(&fields, &mut block);
    let mut decoder = HeaderDecoder::new(4096, 1 << 20, 10_000);
    match decoder.decode_trailers(&block) {
        Ok(decoded) => assert_eq!(decoded, fields, "round trip changed the fields"),
        // Fields a trailer section may not carry (connection-specific ones) are refused
        // by validation, not by the codec.
        Err(_) => {}
    }
});

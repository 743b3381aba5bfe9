//! The WebSocket handshake's two fields (RFC 6455 §4), for a WebSocket over HTTP/2
//! (RFC 8441) that the proxy sends upstream as an HTTP/1.1 upgrade: there the proxy is the
//! client of the handshake, so it makes the key and checks the upstream's answer to it (the
//! HTTP/2 client has no key of its own to check).

use base64::Engine as _;
use http::HeaderValue;
use ring::rand::{SecureRandom, SystemRandom};

/// The GUID RFC 6455 §1.3 appends to the key before hashing.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64 (§4.1).
pub(crate) fn new_key() -> HeaderValue {
    let mut nonce = [0u8; 16];
    // The system's random source failing is not something a request can recover from; a
    // key need only be unpredictable enough that a cache cannot answer the handshake, so the
    // clock is an acceptable stand-in there.
    if SystemRandom::new().fill(&mut nonce).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        nonce = nanos.to_le_bytes();
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(nonce);
    HeaderValue::from_str(&encoded).expect("base64 is a valid field value")
}

/// The `Sec-WebSocket-Accept` that answers `key`: base64 of the SHA-1 of the key and the
/// GUID (§4.2.2).
pub(crate) fn accept_for(key: &HeaderValue) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_example_accept() {
        // RFC 6455 §1.3's worked example.
        let key = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept_for(&key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn keys_are_16_bytes_and_differ() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        let raw = base64::engine::general_purpose::STANDARD.decode(a.as_bytes()).unwrap();
        assert_eq!(raw.len(), 16);
    }
}

//! Field names the `http` crate has no constant for, as values to compare with.
//!
//! Comparing a `HeaderName` with one of these is a check of its representation and, for a
//! name that is not one of `http`'s standard ones, a byte comparison; comparing
//! `name.as_str()` with a string first turns a standard name back into text through a
//! table, on every field of every message.

use http::HeaderName;

/// `Keep-Alive` (RFC 9110 §7.6.1: HTTP/1.0's connection-specific field).
pub static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// `Proxy-Connection`, which old clients send in place of `Connection`.
pub static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether the field name `token` (a token) is one that describes a single hop, which a proxy
/// never forwards (RFC 9110 §7.6.1: `Connection`, `Keep-Alive`, `Proxy-Authenticate`,
/// `Proxy-Authorization`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`; plus the
/// `Proxy-Connection` of old clients), ignoring ASCII case: a jump on its length, then at
/// most two comparisons.
pub fn is_hop_by_hop(token: &[u8]) -> bool {
    match token.len() {
        2 => token_is(token, b"te"),
        7 => token_is(token, b"trailer") || token_is(token, b"upgrade"),
        10 => token_is(token, b"connection") || token_is(token, b"keep-alive"),
        16 => token_is(token, b"proxy-connection"),
        17 => token_is(token, b"transfer-encoding"),
        18 => token_is(token, b"proxy-authenticate"),
        19 => token_is(token, b"proxy-authorization"),
        _ => false,
    }
}

/// Whether the field name `token` (a token, as the parser checked it) is `lower`, ignoring
/// ASCII case, eight bytes at a time. `lower` is lowercase letters and `-` only: OR-ing
/// 0x20 into a token byte gives such a byte only from that byte or its uppercase letter
/// (the other byte that ORs to `-`, CR, is no token byte).
pub(crate) fn token_is(token: &[u8], lower: &[u8]) -> bool {
    debug_assert!(lower.iter().all(|&b| b.is_ascii_lowercase() || b == b'-'), "{lower:?}");
    if token.len() != lower.len() {
        return false;
    }
    const CASE: u64 = 0x2020_2020_2020_2020;
    let (mut t, mut l) = (token, lower);
    while t.len() >= 8 {
        let word = |s: &[u8]| u64::from_ne_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
        if word(t) | CASE != word(l) {
            return false;
        }
        (t, l) = (&t[8..], &l[8..]);
    }
    t.iter().zip(l).all(|(&a, &b)| a | 0x20 == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_are_found_in_any_case_and_no_others() {
        for name in [
            "te",
            "Trailer",
            "UPGRADE",
            "connection",
            "Keep-Alive",
            "proxy-connection",
            "Transfer-Encoding",
            "proxy-authenticate",
            "Proxy-Authorization",
        ] {
            assert!(is_hop_by_hop(name.as_bytes()), "{name}");
        }
        for name in ["t", "tf", "content-length", "x-upgrade", "upgradex", "connectiom", "host"] {
            assert!(!is_hop_by_hop(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn a_token_is_a_lowercase_name_in_any_case_and_nothing_else() {
        for yes in [&b"content-length"[..], b"Content-Length", b"CONTENT-LENGTH", b"host", b"HoSt"]
        {
            let lower = yes.to_ascii_lowercase();
            assert!(token_is(yes, &lower), "{yes:?}");
        }
        assert!(!token_is(b"content-lengtx", b"content-length"));
        assert!(!token_is(b"content_length", b"content-length"), "_ is not -");
        assert!(!token_is(b"host", b"hosts"));
        assert!(!token_is(b"hosu", b"host"));
        assert!(!token_is(b"transfer-encodinG", b"transfer-encodinh"));
        // Every byte but the letter's two cases fails, in the word part and in the tail.
        for b in 0..=255u8 {
            let mut t = *b"transfer-encoding";
            t[3] = b;
            t[16] = b'g';
            assert_eq!(token_is(&t, b"transfer-encoding"), b == b'n' || b == b'N', "{b}");
            let mut t = *b"transfer-encoding";
            t[16] = b;
            assert_eq!(token_is(&t, b"transfer-encoding"), b == b'g' || b == b'G', "{b}");
        }
    }

    #[test]
    fn they_equal_the_parsed_names_and_nothing_else() {
        assert_eq!(HeaderName::from_bytes(b"Keep-Alive").unwrap(), KEEP_ALIVE);
        assert_eq!(HeaderName::from_bytes(b"proxy-connection").unwrap(), PROXY_CONNECTION);
        assert_ne!(http::header::CONNECTION, KEEP_ALIVE);
        assert_ne!(HeaderName::from_static("keep-alivx"), KEEP_ALIVE);
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn they_equal_the_parsed_names_and_nothing_else() {
        assert_eq!(HeaderName::from_bytes(b"Keep-Alive").unwrap(), KEEP_ALIVE);
        assert_eq!(HeaderName::from_bytes(b"proxy-connection").unwrap(), PROXY_CONNECTION);
        assert_ne!(http::header::CONNECTION, KEEP_ALIVE);
        assert_ne!(HeaderName::from_static("keep-alivx"), KEEP_ALIVE);
    }
}

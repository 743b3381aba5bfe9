//! Checks on regular (non-pseudo) fields shared by requests and trailers (RFC 9113 §8.2).
//!
//! Numbered as applied in [`check`]:
//!
//! 1. The name is a lowercase token (§8.2.1, classified as the field was decoded).
//! 2. The value holds no NUL, CR or LF, nor other controls `http` refuses (§8.2.1), and
//!    starts and ends with neither SP nor HTAB.
//! 3. No connection-specific field: `connection`, `keep-alive`, `proxy-connection`,
//!    `transfer-encoding`, `upgrade` (§8.2.2).
//! 4. `te`, if present, is exactly `trailers` (§8.2.2).

use bytes::Bytes;
use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, HeaderValue};

use super::hpack::table::Value;
use crate::names::{KEEP_ALIVE, PROXY_CONNECTION};

/// Names HTTP/2 forbids because they describe one hop's connection (RFC 9113 §8.2.2).
pub(crate) fn is_connection_specific(name: &HeaderName) -> bool {
    *name == CONNECTION
        || *name == TRANSFER_ENCODING
        || *name == UPGRADE
        || *name == KEEP_ALIVE
        || *name == PROXY_CONNECTION
}

/// Applies rules 2–4 to a regular field (rule 1 held when its name became a `HeaderName`);
/// returns it ready for a `HeaderMap`, or why the message is malformed.
pub(crate) fn check(
    name: HeaderName,
    value: Bytes,
) -> Result<(HeaderName, HeaderValue), &'static str> {
    if let (Some(first), Some(last)) = (value.first(), value.last()) {
        if matches!(first, b' ' | b'\t') || matches!(last, b' ' | b'\t') {
            return Err("field value starts or ends with whitespace");
        }
    }
    // `from_maybe_shared` takes the `Bytes` as they are: no copy.
    let value =
        HeaderValue::from_maybe_shared(value).map_err(|_| "invalid character in field value")?;
    if is_connection_specific(&name) {
        return Err("connection-specific field");
    }
    if name == TE && value.as_bytes() != b"trailers" {
        return Err("te other than trailers");
    }
    Ok((name, value))
}

/// [`check`] for a decoded field: a value checked when its table entry was made passes as
/// it is.
pub(crate) fn check_entry(
    name: &HeaderName,
    value: &Value,
) -> Result<(HeaderName, HeaderValue), &'static str> {
    match value {
        Value::Checked(value) => Ok((name.clone(), value.clone())),
        Value::Raw(raw) => check(name.clone(), raw.clone()),
    }
}

/// Parses a `content-length` value: decimal digits only, no sign, no list (RFC 9110 §8.6).
pub(crate) fn parse_content_length(value: &HeaderValue) -> Option<u64> {
    let digits = value.as_bytes();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

//! What a valid `Host` field (HTTP/1) or `:authority` (HTTP/2) is: RFC 9110 §7.2's
//! `uri-host [ ":" port ]`, with RFC 3986 §3.2.2's host grammar. No userinfo.
//!
//! Why not `http::uri::Authority`: it accepts userinfo (`user@host`), which a Host field must
//! not carry, and building one per HTTP/1 request cost about 300 instructions (its parse plus
//! a reference-counted copy) where this check costs a pass over the bytes. The HTTP/2 decoder
//! still builds the `Authority` its `Uri` needs, after this same check, so both protocols
//! accept the same values.

use std::net::Ipv6Addr;

/// The longest host [`KnownHost`] remembers.
const KNOWN_HOST_MAX: usize = 47;

/// The last valid `Host` value a connection sent. A connection's requests repeat it: the
/// same bytes again are the same valid value, found by a comparison instead of a pass over
/// them with a table load per byte (about 120 instructions for `127.0.0.1:8080`, on every
/// HTTP/1 request).
#[derive(Debug, Clone)]
pub struct KnownHost {
    len: u8,
    bytes: [u8; KNOWN_HOST_MAX],
}

impl Default for KnownHost {
    fn default() -> KnownHost {
        KnownHost { len: 0, bytes: [0; KNOWN_HOST_MAX] }
    }
}

impl KnownHost {
    /// [`is_valid_host`], answered from memory when `value` is the last valid one.
    pub fn is_valid(&mut self, value: &[u8]) -> bool {
        let n = value.len();
        if n > 0 && n == usize::from(self.len) && *value == self.bytes[..n] {
            return true;
        }
        let valid = is_valid_host(value);
        if valid && n <= KNOWN_HOST_MAX {
            self.bytes[..n].copy_from_slice(value);
            self.len = n as u8;
        }
        valid
    }
}

/// Whether `value` is `uri-host [ ":" port ]` (RFC 3986 §3.2.2 and §3.2.3):
///
/// - `uri-host` is a bracketed IPv6 address, or a non-empty `reg-name` (unreserved
///   characters, percent-encodings and sub-delims; an IPv4 address is one of these).
///   `IPvFuture` literals and IPv6 zone identifiers are refused: no client sends them.
/// - `port` is up to five digits naming a TCP port (0 to 65535), or empty as the grammar
///   allows (`host:`).
///
/// The empty value (a target without authority) is the caller's case: it is not a host.
pub fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        Some(b'[') => {
            let Some(close) = value.iter().position(|&b| b == b']') else { return false };
            let Ok(literal) = std::str::from_utf8(&value[1..close]) else { return false };
            if literal.parse::<Ipv6Addr>().is_err() {
                return false;
            }
            match &value[close + 1..] {
                [] => return true,
                [b':', port @ ..] => (&value[..close + 1], port),
                _ => return false,
            }
        }
        _ => {
            // The usual shape, name bytes then an optional port, in one pass (a table load
            // per byte): a Host field is checked on every HTTP/1 request.
            let name = value.iter().position(|&b| !REG_NAME[usize::from(b)]);
            let name = name.unwrap_or(value.len());
            if name > 0 && value.get(name).is_none_or(|&b| b == b':') {
                return is_port(value.get(name + 1..).unwrap_or_default());
            }
            match value.iter().position(|&b| b == b':') {
                Some(colon) => (&value[..colon], &value[colon + 1..]),
                None => (value, &[][..]),
            }
        }
    };
    let reg_name_ok = host.first() == Some(&b'[') || is_reg_name(host);
    reg_name_ok && is_port(port)
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )`, required non-empty here.
fn is_reg_name(host: &[u8]) -> bool {
    if host.is_empty() {
        return false;
    }
    // One table load per byte: a Host field is checked on every HTTP/1 request.
    if host.iter().all(|&b| REG_NAME[usize::from(b)]) {
        return true;
    }
    // Rare: percent-encodings, each `%` followed by two hex digits.
    let mut i = 0;
    while i < host.len() {
        if host[i] == b'%' {
            if !host.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else if REG_NAME[usize::from(host[i])] {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// The bytes a `reg-name` holds as themselves: unreserved (`ALPHA DIGIT - . _ ~`) and
/// sub-delims (`! $ & ' ( ) * + , ; =`).
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'.' | b'_' | b'~')
            || matches!(
                c,
                b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
            );
        b += 1;
    }
    table
};

/// `port = *DIGIT`, bounded to what a TCP port can be.
fn is_port(port: &[u8]) -> bool {
    if port.len() > 5 {
        return false;
    }
    let mut n = 0u32;
    for &d in port {
        if !d.is_ascii_digit() {
            return false;
        }
        n = n * 10 + u32::from(d - b'0');
    }
    n <= 65535
}

#[cfg(test)]
mod tests {
    use super::is_valid_host;

    #[test]
    fn accepts_names_addresses_and_ports() {
        for good in [
            "example.com",
            "example.com:8080",
            "EXAMPLE.com:443",
            "127.0.0.1",
            "127.0.0.1:65535",
            "[::1]",
            "[::1]:80",
            "[2001:db8::7]:0",
            "my_host-1.local",
            "a%2Db",
            "host:",
            "x.y~!$&'()*+,;=",
        ] {
            assert!(is_valid_host(good.as_bytes()), "{good:?}");
        }
    }

    #[test]
    fn refuses_userinfo_paths_spaces_and_bad_ports() {
        for bad in [
            "",
            ":80",
            "a b",
            "user@a",
            "a/b",
            "a?b",
            "a#b",
            "a:b:c:d:e:f:g:h:i:j",
            "a:65536",
            "a:123456",
            "a:8o",
            "[::1",
            "[::1]x",
            "[::1]:x",
            "[nope]",
            "[v1.x]",
            "[fe80::1%25eth0]",
            "a%2",
            "a%zz",
            "a\tb",
            "ä",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn a_known_host_answers_as_the_check_does() {
        let mut known = super::KnownHost::default();
        let values: [&[u8]; 9] = [
            b"127.0.0.1:8080",
            b"127.0.0.1:8080",
            b"127.0.0.1:80800",
            b"127.0.0.1:8080",
            b"exa mple.com",
            b"exa mple.com",
            b"",
            &[b'a'; 60],
            b"[::1]:443",
        ];
        for value in values.into_iter().chain(values) {
            assert_eq!(known.is_valid(value), is_valid_host(value), "{value:?}");
        }
    }
}

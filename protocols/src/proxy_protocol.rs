//! The PROXY protocol (HAProxy's spec, versions 1 and 2), sans-IO: the header a load balancer
//! in front of Peregrine writes before the client's bytes, saying who the client is.
//!
//! Read the spec's sections 2.1 (v1, text) and 2.2 (v2, binary) before editing. Only what a
//! receiver needs is decoded: the command (`PROXY`, or `LOCAL` for the balancer's own health
//! checks) and, for TCP over IPv4 or IPv6, the source and destination addresses. Other
//! families (UDP, Unix) and every TLV are skipped, as the spec allows.
//!
//! A header is only ever parsed on a connection from a trusted peer (the caller's job): from
//! anyone else it would let a client claim any address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included (spec: 107 bytes).
pub const V1_MAX: usize = 107;
/// The longest v2 header accepted: its 16-byte prelude and up to this much address and TLV
/// data (the spec allows 64 KiB; balancers send a few hundred bytes at most).
pub const V2_MAX_PAYLOAD: usize = 2048;

/// What the header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The connection is the balancer's own (v2 `LOCAL`, v1 `UNKNOWN`, or an address family
    /// not decoded): keep the connection's real addresses.
    Local,
    /// A proxied TCP connection from `source` to `destination`.
    Proxied {
        /// The client.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
}

/// Why a header was refused (the connection is then closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyHeaderError {
    /// The bytes are neither a v1 nor a v2 header.
    NotProxyProtocol,
    /// A v1 line longer than 107 bytes, or a v2 header over the accepted size.
    TooLong,
    /// A v1 line that breaks the grammar, or a v2 header with a bad version, command or
    /// address block.
    Malformed,
}

impl std::fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProxyHeaderError::NotProxyProtocol => "no PROXY protocol header",
            ProxyHeaderError::TooLong => "PROXY protocol header too long",
            ProxyHeaderError::Malformed => "malformed PROXY protocol header",
        })
    }
}

impl std::error::Error for ProxyHeaderError {}

/// Parses a header from the front of `buf`: `Ok(Some((header, len)))` once it is complete
/// (`len` bytes are the header; what follows is the client's), `Ok(None)` while more bytes
/// are needed, `Err` as soon as the bytes cannot be one.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() { Ok(None) } else { parse_v2(buf) };
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return if n < 6 { Ok(None) } else { parse_v1(buf) };
    }
    Err(ProxyHeaderError::NotProxyProtocol)
}

/// The header a proxy sends before a connection's first bytes (version 1: text), naming
/// `source` and `destination`; `PROXY UNKNOWN` when either is unknown or their families
/// differ.
pub fn encode_v1(source: Option<SocketAddr>, destination: Option<SocketAddr>) -> Vec<u8> {
    match (source, destination) {
        (Some(SocketAddr::V4(s)), Some(SocketAddr::V4(d))) => {
            format!("PROXY TCP4 {} {} {} {}\r\n", s.ip(), d.ip(), s.port(), d.port())
        }
        (Some(SocketAddr::V6(s)), Some(SocketAddr::V6(d))) => {
            format!("PROXY TCP6 {} {} {} {}\r\n", s.ip(), d.ip(), s.port(), d.port())
        }
        _ => "PROXY UNKNOWN\r\n".to_string(),
    }
    .into_bytes()
}

/// The same in version 2 (binary): `PROXY` over TCP, or `LOCAL` when an address is
/// unknown or the families differ.
pub fn encode_v2(source: Option<SocketAddr>, destination: Option<SocketAddr>) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    match (source, destination) {
        (Some(SocketAddr::V4(s)), Some(SocketAddr::V4(d))) => {
            out.extend_from_slice(&[0x21, 0x11, 0, 12]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (Some(SocketAddr::V6(s)), Some(SocketAddr::V6(d))) => {
            out.extend_from_slice(&[0x21, 0x21, 0, 36]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        _ => out.extend_from_slice(&[0x20, 0x00, 0, 0]),
    }
    out
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX { Err(ProxyHeaderError::TooLong) } else { Ok(None) };
    };
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| ProxyHeaderError::Malformed)?;
    let len = end + 2;
    let mut fields = line.split(' ');
    let header = match fields.next() {
        Some("UNKNOWN") => ProxyHeader::Local,
        Some(family @ ("TCP4" | "TCP6")) => {
            let mut next = || fields.next().ok_or(ProxyHeaderError::Malformed);
            let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
            let ip = |s: &str| -> Result<IpAddr, ProxyHeaderError> {
                let ip: IpAddr = s.parse().map_err(|_| ProxyHeaderError::Malformed)?;
                match (family, ip) {
                    ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => Ok(ip),
                    _ => Err(ProxyHeaderError::Malformed),
                }
            };
            let port = |s: &str| -> Result<u16, ProxyHeaderError> {
                // No sign, no leading zeros (spec), at most 65535.
                if s.is_empty()
                    || (s.len() > 1 && s.starts_with('0'))
                    || !s.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(ProxyHeaderError::Malformed);
                }
                s.parse().map_err(|_| ProxyHeaderError::Malformed)
            };
            let header = ProxyHeader::Proxied {
                source: SocketAddr::new(ip(src)?, port(sport)?),
                destination: SocketAddr::new(ip(dst)?, port(dport)?),
            };
            if fields.next().is_some() {
                return Err(ProxyHeaderError::Malformed);
            }
            header
        }
        _ => return Err(ProxyHeaderError::Malformed),
    };
    Ok(Some((header, len)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 || command > 1 {
        return Err(ProxyHeaderError::Malformed);
    }
    let payload = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if payload > V2_MAX_PAYLOAD {
        return Err(ProxyHeaderError::TooLong);
    }
    let len = 16 + payload;
    if buf.len() < len {
        return Ok(None);
    }
    if command == 0 {
        return Ok(Some((ProxyHeader::Local, len))); // LOCAL: addresses ignored
    }
    let data = &buf[16..len];
    let port = |at: usize| u16::from_be_bytes([data[at], data[at + 1]]);
    let header = match buf[13] {
        // TCP over IPv4: 4 + 4 address bytes, 2 + 2 port bytes.
        0x11 => {
            if data.len() < 12 {
                return Err(ProxyHeaderError::Malformed);
            }
            let ip = |at: usize| Ipv4Addr::new(data[at], data[at + 1], data[at + 2], data[at + 3]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0).into(), port(8)),
                destination: SocketAddr::new(ip(4).into(), port(10)),
            }
        }
        // TCP over IPv6: 16 + 16, then 2 + 2.
        0x21 => {
            if data.len() < 36 {
                return Err(ProxyHeaderError::Malformed);
            }
            let ip = |at: usize| {
                let octets: [u8; 16] = data[at..at + 16].try_into().expect("16 bytes");
                Ipv6Addr::from(octets)
            };
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0).into(), port(32)),
                destination: SocketAddr::new(ip(16).into(), port(34)),
            }
        }
        // UNSPEC, UDP, Unix sockets: nothing a TCP server can use.
        _ => ProxyHeader::Local,
    };
    Ok(Some((header, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxied(src: &str, dst: &str) -> ProxyHeader {
        ProxyHeader::Proxied { source: src.parse().unwrap(), destination: dst.parse().unwrap() }
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(parse(line), Ok(Some((proxied("203.0.113.7:56324", "10.0.0.1:443"), 43))));
        let line = b"PROXY TCP6 2001:db8::1 ::1 1 80\r\n";
        assert_eq!(parse(line), Ok(Some((proxied("[2001:db8::1]:1", "[::1]:80"), line.len()))));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Some((ProxyHeader::Local, 15))));
        assert_eq!(
            parse(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n").unwrap().unwrap().0,
            ProxyHeader::Local
        );
    }

    #[test]
    fn v1_needs_more_then_fails_at_the_first_bad_byte() {
        let line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
        for n in 0..line.len() {
            assert_eq!(parse(&line[..n]), Ok(None), "prefix of {n} bytes");
        }
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyHeaderError::NotProxyProtocol));
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Err(ProxyHeaderError::Malformed),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert_eq!(parse(&long), Err(ProxyHeaderError::TooLong));
    }

    fn v2(command: u8, family: u8, data: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn v2_ipv4_ipv6_local_and_tlvs() {
        let mut data = vec![203, 0, 113, 7, 10, 0, 0, 1];
        data.extend_from_slice(&56324u16.to_be_bytes());
        data.extend_from_slice(&443u16.to_be_bytes());
        data.extend_from_slice(&[0x04, 0x00, 0x01, 0xff]); // a TLV, skipped
        let header = v2(1, 0x11, &data);
        let mut with_payload = header.clone();
        with_payload.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            parse(&with_payload),
            Ok(Some((proxied("203.0.113.7:56324", "10.0.0.1:443"), header.len())))
        );
        let mut data6 = [0u8; 36];
        data6[15] = 1; // ::1
        data6[31] = 2; // ::2
        data6[33] = 80;
        data6[35] = 81;
        assert_eq!(
            parse(&v2(1, 0x21, &data6)).unwrap().unwrap().0,
            proxied("[::1]:80", "[::2]:81")
        );
        assert_eq!(parse(&v2(0, 0x00, &[])), Ok(Some((ProxyHeader::Local, 16))));
        assert_eq!(parse(&v2(1, 0x31, &[0; 216])).unwrap().unwrap().0, ProxyHeader::Local, "unix");
    }

    #[test]
    fn what_is_encoded_parses_back() {
        let v4 = (Some("203.0.113.7:5000".parse().unwrap()), Some("10.0.0.1:443".parse().unwrap()));
        let v6 = (Some("[2001:db8::7]:5000".parse().unwrap()), Some("[::1]:443".parse().unwrap()));
        for (s, d) in [v4, v6] {
            let want = ProxyHeader::Proxied { source: s.unwrap(), destination: d.unwrap() };
            for bytes in [encode_v1(s, d), encode_v2(s, d)] {
                assert_eq!(parse(&bytes), Ok(Some((want, bytes.len()))));
            }
        }
        let mixed = (v4.0, v6.1);
        assert_eq!(parse(&encode_v1(mixed.0, mixed.1)).unwrap().unwrap().0, ProxyHeader::Local);
        assert_eq!(parse(&encode_v2(None, None)).unwrap().unwrap().0, ProxyHeader::Local);
    }

    #[test]
    fn v2_refuses_bad_versions_commands_and_short_addresses() {
        for n in 0..16 {
            assert_eq!(parse(&v2(1, 0x11, &[0; 12])[..n]), Ok(None));
        }
        let mut bad_version = v2(1, 0x11, &[0; 12]);
        bad_version[12] = 0x11;
        assert_eq!(parse(&bad_version), Err(ProxyHeaderError::Malformed));
        assert_eq!(parse(&v2(2, 0x11, &[0; 12])), Err(ProxyHeaderError::Malformed));
        assert_eq!(parse(&v2(1, 0x11, &[0; 8])), Err(ProxyHeaderError::Malformed));
        assert_eq!(parse(&v2(1, 0x21, &[0; 20])), Err(ProxyHeaderError::Malformed));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&huge), Err(ProxyHeaderError::TooLong));
    }
}

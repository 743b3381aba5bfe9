//! A request head that arrives in pieces: [`HeadParser`] owns the rule for when a growing
//! buffer is worth parsing again, so a caller never needs to know where the codec's limits
//! fire (hyper's `is_complete_fast` habit: resume where the last read ended).

use bytes::BytesMut;

use super::request::{head_may_be_complete, parse_head, ParseConfig, ParsedHead};
use super::ParseError;
use crate::host::KnownHost;

/// Parses one request head at a time from a buffer that grows between calls.
///
/// [`parse_request`] keeps no state, so parsing after every read costs work quadratic in the
/// head's size when a client sends it a byte per segment (the slowloris shape). This parser
/// re-runs it only when the new bytes could end the head (an empty line in or just before
/// them), or when the buffer crosses the point where a size limit fires, so 414 and 431 are
/// answered on the dot. Each byte is looked at a bounded number of times.
#[derive(Debug, Default)]
pub struct HeadParser {
    /// Bytes of the buffer already looked at.
    seen: usize,
    /// Where the request line starts (after empty lines, RFC 9112 §2.2) and ends.
    line: RequestLine,
    /// Full parses run for the current head (for tests of the bound).
    #[cfg(test)]
    parses: usize,
}

/// Where the request line of a growing head starts and ends, found by looking at each byte
/// once. Leading empty lines are skipped as the parser skips them.
#[derive(Debug, Default)]
struct RequestLine {
    scanned: usize,
    start: usize,
    /// The offset of the LF ending the request line, once seen.
    end: Option<usize>,
}

impl RequestLine {
    fn advance(&mut self, buf: &[u8]) {
        while self.end.is_none() && self.scanned < buf.len() {
            let at = self.scanned;
            self.scanned += 1;
            if buf[at] == b'\n' {
                let line = &buf[self.start..at];
                if line.is_empty() || line == b"\r" {
                    self.start = at + 1;
                } else {
                    self.end = Some(at);
                }
            }
        }
    }
}

impl HeadParser {
    /// A parser waiting for the first byte of a head.
    pub fn new() -> HeadParser {
        HeadParser::default()
    }

    /// Whether bytes of the current head have been seen (it has started arriving).
    pub fn started(&self) -> bool {
        self.seen > 0
    }

    /// Parses the head at the front of `buf`, which holds everything received since the
    /// previous head (the caller only appends between calls). `known_host` is the
    /// connection's, kept from head to head (see [`KnownHost`]).
    ///
    /// - `Ok(Some(head))`: the head was split off `buf`, every rule checked, its fields not yet
    ///   in a `HeaderMap` ([`ParsedHead::into_head`]); the parser is ready for the next one.
    /// - `Ok(None)`: more bytes are needed.
    /// - `Err(e)`: answer `e.status()` and close the connection.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        cfg: &ParseConfig,
        known_host: &mut KnownHost,
    ) -> Result<Option<ParsedHead>, ParseError> {
        let len = buf.len();
        if len == 0 {
            return Ok(None);
        }
        let seen = self.seen;
        let crossed = |limit: usize| seen <= limit && len > limit;
        // The first bytes of a head are always parsed (usually the whole head came in one
        // read); the request line is only looked for when the head came in pieces, so the
        // common case walks its bytes once, in `parse_request`.
        let worth_parsing = seen == 0 || {
            self.line.advance(buf);
            head_may_be_complete(buf, seen)
                || crossed(self.line.start + cfg.max_request_line_size)
                || self
                    .line
                    .end
                    .is_some_and(|end| crossed(end + 1 + cfg.max_request_headers_total_size))
        };
        self.seen = len;
        if !worth_parsing {
            return Ok(None);
        }
        #[cfg(test)]
        {
            self.parses += 1;
        }
        // Returned as `parse_head` built it: unwrapping and re-wrapping would copy the head.
        let head = parse_head(buf, cfg, known_host);
        if let Ok(Some(_)) = head {
            *self = HeadParser::default();
        }
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::Limit;

    fn cfg() -> ParseConfig {
        ParseConfig {
            max_request_line_size: 64,
            max_request_headers_total_size: 128,
            max_request_header_count: 16,
        }
    }

    /// Feeds `bytes` a piece at a time (`step` bytes), returning the result and the parses.
    fn trickle(bytes: &[u8], step: usize) -> (Result<Option<ParsedHead>, ParseError>, usize) {
        let mut p = HeadParser::new();
        let mut buf = BytesMut::new();
        let mut last = Ok(None);
        let mut parses = 0;
        for piece in bytes.chunks(step) {
            buf.extend_from_slice(piece);
            parses = p.parses;
            last = p.parse(&mut buf, &cfg(), &mut KnownHost::default());
            parses = parses.max(p.parses);
            if !matches!(last, Ok(None)) {
                break;
            }
        }
        (last, parses)
    }

    #[test]
    fn split_anywhere_gives_the_same_head_with_few_parses() {
        let head = b"\r\nGET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        let mut whole = BytesMut::from(&head[..]);
        let want = HeadParser::new()
            .parse(&mut whole, &cfg(), &mut KnownHost::default())
            .unwrap()
            .expect("a head");
        let want = want.into_head().unwrap();
        for step in 1..head.len() {
            let (got, parses) = trickle(head, step);
            let got = got.unwrap().expect("a head").into_head().unwrap();
            assert_eq!(
                (got.method.clone(), got.uri.clone()),
                (want.method.clone(), want.uri.clone())
            );
            assert_eq!(got.headers, want.headers, "step {step}");
            assert!(parses <= 3, "step {step}: {parses} parses");
        }
    }

    #[test]
    fn limits_fire_when_crossed_even_a_byte_at_a_time() {
        let long_line = [b"GET /".as_slice(), &[b'a'; 80]].concat();
        let (e, _) = trickle(&long_line, 1);
        assert!(matches!(e, Err(ParseError::Limit(l)) if l.limit == Limit::MaxRequestLineSize));
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.extend(b"X-Filler: ");
        big.extend([b'f'; 200]);
        let (e, parses) = trickle(&big, 1);
        assert!(
            matches!(e, Err(ParseError::Limit(l)) if l.limit == Limit::MaxRequestHeadersTotalSize),
            "{e:?}"
        );
        assert!(parses <= 3, "{parses} parses");
    }

    #[test]
    fn a_parsed_head_finds_its_fields_and_builds_the_same_map() {
        let bytes = b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\nAccept: */*\r\n\
                      x-forwarded-for: 5.6.7.8\r\n\r\n";
        let head = HeadParser::new()
            .parse(&mut BytesMut::from(&bytes[..]), &cfg(), &mut KnownHost::default())
            .unwrap();
        let head = head.expect("a head");
        let xff: Vec<&[u8]> = head.fields.values("X-Forwarded-FOR").collect();
        assert_eq!(xff, [&b"1.2.3.4"[..], b"5.6.7.8"], "every line, in order, any case");
        assert_eq!(head.fields.values("host").collect::<Vec<_>>(), [b"x"]);
        assert_eq!(head.fields.values("cookie").count(), 0);
        let built = head.into_head().unwrap();
        let mut whole = BytesMut::from(&bytes[..]);
        let parsed = crate::h1::parse_request(&mut whole, &cfg()).unwrap().unwrap();
        assert_eq!(built.headers, parsed.headers);
        assert_eq!(built.headers.get_all("x-forwarded-for").iter().count(), 2);
    }

    #[test]
    fn resets_for_the_next_pipelined_head() {
        let mut buf = BytesMut::from(&b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\n"[..]);
        let mut p = HeadParser::new();
        assert_eq!(
            p.parse(&mut buf, &cfg(), &mut KnownHost::default()).unwrap().unwrap().target.path(),
            "/1"
        );
        assert!(!p.started());
        assert!(p.parse(&mut buf, &cfg(), &mut KnownHost::default()).unwrap().is_none());
        buf.extend_from_slice(b"Host: x\r\n\r\n");
        assert_eq!(
            p.parse(&mut buf, &cfg(), &mut KnownHost::default()).unwrap().unwrap().target.path(),
            "/2"
        );
    }

    /// The parse notes where `Host` is, however it is spelled and wherever it comes.
    #[test]
    fn the_host_field_is_found_by_the_parse() {
        let cases: [(&[u8], Option<&[u8]>); 3] = [
            (b"GET / HTTP/1.1\r\nUser-Agent: x\r\nhOsT: a.test:80\r\n\r\n", Some(b"a.test:80")),
            (b"GET / HTTP/1.1\r\nHost: b.test\r\nAccept: */*\r\n\r\n", Some(b"b.test")),
            (b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n", None),
        ];
        for (bytes, host) in cases {
            let mut buf = BytesMut::from(bytes);
            let head = HeadParser::new().parse(&mut buf, &cfg(), &mut KnownHost::default());
            let head = head.unwrap().expect("a head");
            assert_eq!(head.fields.host(), host, "{:?}", String::from_utf8_lossy(bytes));
        }
    }
}

//! The request head nearly every client sends, tokenised in one pass.
//!
//! [`scan`](super::scan) is the reference tokeniser: `httparse`, cut at the limits, with
//! its errors turned into Peregrine's. Around a head of a hundred bytes its setup cost more
//! than the tokenising itself (a pass to find the request line's end for the limit cut, UTF-8
//! checks of the method and target, a stack array of spans to initialise and convert): about
//! 1,000 of the 7,000 instructions a keep-alive request cost. That is why this is written
//! here rather than taken from a crate.
//!
//! It accepts only the common shape, strictly: no empty lines before the request line,
//! single spaces, an ASCII target, `HTTP/1.0` or `HTTP/1.1`, CRLF line ends, `token ":"`
//! fields with values of `HTAB / SP / VCHAR / obs-text`, a complete head within the limits.
//! For such a head it yields exactly what `scan` yields (the unit tests below run both over
//! thousands of mutated heads, and so does the `h1_request` fuzz target); for anything else,
//! including every error and every head still arriving, it declines and `scan` decides. So
//! each rejection still has one source.

use super::request::{FieldSpan, ParseConfig};
use super::scan::{is_tchar, RawHead};

/// A field-name or method byte (`tchar`).
const TOKEN: u8 = 1;
/// A request-target byte this lexer accepts: `VCHAR` (`httparse` also takes UTF-8 there; it
/// is left to `scan`).
const TARGET: u8 = 2;
/// A field-value byte: `HTAB / SP / VCHAR / obs-text` (RFC 9110 §5.5), `httparse`'s set.
const VALUE: u8 = 4;

/// Which of the classes above each byte is in: one table load per byte.
static CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut class = 0;
        if is_tchar(b) {
            class |= TOKEN;
        }
        if b >= 0x21 && b <= 0x7e {
            class |= TARGET;
        }
        if b == b'\t' || (b >= 0x20 && b != 0x7f) {
            class |= VALUE;
        }
        table[i] = class;
        i += 1;
    }
    table
};

/// The end of the run of `class` bytes starting at `from` (`from <= buf.len()`).
fn run(buf: &[u8], from: usize, class: u8) -> usize {
    let mut i = from;
    while let Some(&b) = buf.get(i) {
        if CLASS[usize::from(b)] & class == 0 {
            break;
        }
        i += 1;
    }
    i
}

/// Eight bytes of `buf` from `at`, as a little-endian word (the first byte lowest).
fn word(buf: &[u8], at: usize) -> Option<u64> {
    let bytes = buf.get(at..at + 8)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` below `n` (`n <= 0x80`); exact for the lowest such
/// byte, which is all the callers use (a borrow only runs upward from a byte that is below).
fn below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS
}

/// [`run`] of [`VALUE`] bytes, eight at a time: field values are most of a head's bytes.
/// A word stops at its first byte below SP or equal to DEL; a tab there is a value byte.
fn value_run(buf: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(x) = word(buf, i) {
        let stops = below(x, 0x20) | below(x ^ (ONES * 0x7f), 1);
        if stops == 0 {
            i += 8;
            continue;
        }
        i += (stops.trailing_zeros() / 8) as usize;
        if buf[i] != b'\t' {
            return i;
        }
        i += 1;
    }
    run(buf, i, VALUE)
}

/// [`run`] of [`TARGET`] bytes (`0x21..=0x7e`), eight at a time.
fn target_run(buf: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(x) = word(buf, i) {
        // Below `!`, or DEL and above (a byte's low seven bits all set, or its high bit).
        let stops = below(x, 0x21) | (((x & !HIGHS) + ONES) | x) & HIGHS;
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    run(buf, i, TARGET)
}

/// Tokenises a complete head of the common shape at the front of `buf`, appending its
/// fields to `fields` (at most `max_fields` of them). `None`: not that shape, not complete,
/// or not within the limits; `fields` may hold some spans then, and `scan` decides.
pub(super) fn lex_common(
    buf: &[u8],
    cfg: &ParseConfig,
    max_fields: usize,
    fields: &mut Vec<FieldSpan>,
) -> Option<RawHead> {
    let method_end = run(buf, 0, TOKEN);
    if method_end == 0 || buf.get(method_end) != Some(&b' ') {
        return None;
    }
    let target_start = method_end + 1;
    let target_end = target_run(buf, target_start);
    if target_end == target_start || buf.get(target_end) != Some(&b' ') {
        return None;
    }
    let version = target_end + 1;
    let minor_version = match buf.get(version..version + 10)? {
        b"HTTP/1.1\r\n" => 1,
        b"HTTP/1.0\r\n" => 0,
        _ => return None,
    };
    let line_end = version + 10;
    if line_end > cfg.max_request_line_size {
        return None;
    }
    // The header section may not reach past this: a head that does is `scan`'s 431.
    let cut = line_end.saturating_add(cfg.max_request_headers_total_size);
    let buf = &buf[..buf.len().min(cut)];
    let mut at = line_end;
    while buf.get(at..at + 2)? != b"\r\n" {
        let name_end = run(buf, at, TOKEN);
        if name_end == at || buf.get(name_end) != Some(&b':') {
            return None;
        }
        let mut value_start = name_end + 1;
        while matches!(buf.get(value_start), Some(b' ' | b'\t')) {
            value_start += 1;
        }
        let value_stop = value_run(buf, value_start);
        if buf.get(value_stop..value_stop + 2)? != b"\r\n" {
            return None;
        }
        // Trailing whitespace is not part of the value (RFC 9110 §5.5).
        let mut value_end = value_stop;
        while value_end > value_start && matches!(buf[value_end - 1], b' ' | b'\t') {
            value_end -= 1;
        }
        if fields.len() == max_fields {
            return None;
        }
        fields.push(FieldSpan::new(at..name_end, value_start..value_end));
        at = value_stop + 2;
    }
    Some(RawHead {
        len: at + 2,
        method: 0..method_end,
        target: target_start..target_end,
        minor_version,
        header_count: fields.len(),
    })
}

/// Whether [`lex_common`] and the reference tokeniser agree on `buf`: when the lexer takes
/// a head, `scan` must yield the same head, field for field. For the unit tests below and
/// the `h1_request` fuzz target; not an API.
#[doc(hidden)]
pub fn agrees_with_reference(buf: &[u8], cfg: &ParseConfig) -> bool {
    let slots = super::scan::header_slots(cfg);
    let mut fields = Vec::new();
    let Some(lexed) = lex_common(buf, cfg, slots, &mut fields) else { return true };
    let mut spans = vec![super::scan::HeaderSpan::EMPTY; slots];
    let Ok(Some(reference)) = super::scan::scan_head(buf, cfg, &mut spans) else { return false };
    let reference_fields = spans[..reference.header_count].iter().map(FieldSpan::of);
    lexed == reference && fields.iter().copied().eq(reference_fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ParseConfig {
        ParseConfig {
            max_request_line_size: 64,
            max_request_headers_total_size: 160,
            max_request_header_count: 6,
        }
    }

    const HEADS: &[&[u8]] = &[
        b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nuser-agent: h2load nghttp2/1.52.0\r\n\r\n",
        b"POST /a?b=c HTTP/1.0\r\nContent-Length: 5\r\nX-E:\r\nX-T: \t v \t\r\n\r\nhello",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n",
        b"M-SEARCH http://a/b HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\n\r\n",
    ];

    #[test]
    fn takes_the_common_shape_as_the_reference_does() {
        for head in HEADS {
            let mut fields = Vec::new();
            assert!(lex_common(head, &cfg(), 6, &mut fields).is_some(), "{head:?}");
            assert!(agrees_with_reference(head, &cfg()));
        }
    }

    /// Every one-byte change, insertion and removal of the sample heads: whatever the lexer
    /// takes, the reference takes the same way. Enough of them must still be taken for the
    /// comparison to mean something.
    #[test]
    fn agrees_with_the_reference_on_every_one_byte_mutation() {
        let mut taken = 0;
        let mut tried = 0;
        let mut check = |bytes: &[u8]| {
            tried += 1;
            let mut fields = Vec::new();
            taken += usize::from(lex_common(bytes, &cfg(), 6, &mut fields).is_some());
            assert!(agrees_with_reference(bytes, &cfg()), "{:?}", String::from_utf8_lossy(bytes));
        };
        for head in HEADS {
            for at in 0..head.len() {
                for b in 0..=255u8 {
                    let mut changed = head.to_vec();
                    changed[at] = b;
                    check(&changed);
                    changed.insert(at, b);
                    check(&changed);
                }
                let mut shorter = head.to_vec();
                shorter.remove(at);
                check(&shorter);
                check(&head[..at]);
            }
        }
        assert!(taken * 4 > tried, "only {taken} of {tried} taken");
    }

    #[test]
    fn declines_what_only_the_reference_may_decide() {
        let cases: &[&[u8]] = &[
            b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\nHost: x\n\n",
            b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\n Host: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r",
            b"GET / HTTP/1.1\r\nHost: x\x7f\r\n\r\n",
        ];
        for case in cases {
            assert!(lex_common(case, &cfg(), 6, &mut Vec::new()).is_none(), "{case:?}");
        }
        // Limits: a request line one byte too long, a header section one byte too large, one
        // field too many.
        let line = [b"GET /".as_slice(), &[b'a'; 49], b" HTTP/1.1\r\n\r\n"].concat();
        assert_eq!(line.len() - 2, 65);
        assert!(lex_common(&line, &cfg(), 6, &mut Vec::new()).is_none());
        assert!(lex_common(&line[1..], &cfg(), 6, &mut Vec::new()).is_some(), "64 fits");
        let section = [b"GET / HTTP/1.1\r\nA: ".as_slice(), &[b'v'; 154], b"\r\n\r\n"].concat();
        assert_eq!(section.len() - 16, 161);
        assert!(lex_common(&section, &cfg(), 6, &mut Vec::new()).is_none());
        let fits = [b"GET / HTTP/1.1\r\nA: ".as_slice(), &[b'v'; 153], b"\r\n\r\n"].concat();
        assert!(lex_common(&fits, &cfg(), 6, &mut Vec::new()).is_some());
        let seven = b"GET / HTTP/1.1\r\nA:\r\nA:\r\nA:\r\nA:\r\nA:\r\nA:\r\nA:\r\n\r\n";
        assert!(lex_common(seven, &cfg(), 6, &mut Vec::new()).is_none());
        let six = b"GET / HTTP/1.1\r\nA:\r\nA:\r\nA:\r\nA:\r\nA:\r\nA:\r\n\r\n";
        let taken = lex_common(six, &cfg(), 6, &mut Vec::new());
        assert_eq!(taken.map(|h| h.header_count), Some(6));
    }
}

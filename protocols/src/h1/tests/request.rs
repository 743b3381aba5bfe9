//! `parse_request`: valid heads, every rejection, limits at their boundaries, pipelining.

use bytes::BytesMut;
use http::{Method, StatusCode, Version};
use peregrine_limits::Limit;

use super::{head, head_error, head_error_with, run_requests, Conn, Ev, CFG};
use crate::h1::{parse_request, BodyFraming, LimitExceeded, ParseConfig, ParseError, Violation};

fn violation(v: Violation) -> ParseError {
    ParseError::Invalid(v)
}

fn limit(limit: Limit, max: u64) -> ParseError {
    ParseError::Limit(LimitExceeded { limit, max, observed: max + 1 })
}

/// A request with the given request line and header lines, ended by the empty line.
fn req(line: &str, headers: &[&str]) -> String {
    let mut s = format!("{line}\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s
}

fn get(headers: &[&str]) -> String {
    req("GET / HTTP/1.1", headers)
}

// ---- valid heads -------------------------------------------------------------------------

#[test]
fn simple_get() {
    let h = head("GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n");
    assert_eq!(h.method, Method::GET);
    assert_eq!(h.uri, "/index.html?q=1");
    assert_eq!(h.version, Version::HTTP_11);
    assert_eq!(h.headers["host"], "example.com");
    assert_eq!(h.headers["accept"], "*/*");
    assert_eq!(h.framing, BodyFraming::Empty);
    assert!(h.keep_alive);
    assert!(!h.expect_continue);
    assert!(!h.upgrade);
}

#[test]
fn header_names_lowercased_values_trimmed_order_kept() {
    let h =
        head(&get(&["HOST: a", "X-Multi:  one \t", "x-multi:two", "X-Empty:", "X-Obs: caf\u{e9}"]));
    let lines: Vec<(&str, &[u8])> =
        h.lines.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    assert_eq!(
        lines,
        [
            ("host", &b"a"[..]),
            ("x-multi", b"one"),
            ("x-multi", b"two"),
            ("x-empty", b""),
            ("x-obs", "caf\u{e9}".as_bytes()),
        ]
    );
}

#[test]
fn obs_text_in_values_is_kept() {
    let mut input = get(&["Host: a"]).into_bytes();
    let at = input.len() - 2;
    input.splice(at..at, b"X: \x80\xff\r\n".iter().copied());
    let out = run_requests(&input, CFG);
    let Some(Ev::Head(h)) = out.events.first() else { panic!("{out:?}") };
    assert_eq!(h.headers["x"].as_bytes(), b"\x80\xff");
}

#[test]
fn bare_lf_line_endings_are_accepted_in_the_head() {
    // RFC 9112 §2.2: a recipient MAY recognise a single LF as a line terminator.
    let h = head("GET / HTTP/1.1\nHost: a\nX: b\n\n");
    assert_eq!(h.headers["x"], "b");
}

#[test]
fn leading_empty_lines_are_skipped() {
    let h = head("\r\n\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.method, Method::GET);
    let eight = format!("{}{}", "\r\n".repeat(8), get(&["Host: a"]));
    assert_eq!(head(&eight).method, Method::GET);
}

#[test]
fn too_many_leading_empty_lines() {
    let nine = format!("{}{}", "\r\n".repeat(9), get(&["Host: a"]));
    assert_eq!(head_error(&nine), violation(Violation::MalformedHead));
}

#[test]
fn bare_cr_before_request_line() {
    assert_eq!(head_error("\rGET / HTTP/1.1\r\n\r\n"), violation(Violation::MalformedHead));
}

#[test]
fn incomplete_input_waits() {
    for input in ["", "\r", "\r\n", "GET", "GET / HTTP/1.1\r\nHost: a\r\n", "GET / HTTP/1.1\r\n\r"]
    {
        let out = run_requests(input.as_bytes(), CFG);
        assert!(out.events.is_empty(), "{input:?}: {out:?}");
        assert_eq!(out.leftover, input.as_bytes());
    }
}

#[test]
fn extension_and_lowercase_methods() {
    assert_eq!(head(&req("PURGE /x HTTP/1.1", &["Host: a"])).method.as_str(), "PURGE");
    // Methods are case-sensitive (RFC 9110 §9.1): `get` is not GET.
    let h = head(&req("get / HTTP/1.1", &["Host: a"]));
    assert_ne!(h.method, Method::GET);
    assert_eq!(h.method.as_str(), "get");
}

// ---- version and keep-alive --------------------------------------------------------------

#[test]
fn http10_defaults_to_close_and_needs_no_host() {
    let h = head("GET / HTTP/1.0\r\n\r\n");
    assert_eq!(h.version, Version::HTTP_10);
    assert!(!h.keep_alive);
    assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(!head("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
}

#[test]
fn http11_defaults_to_keep_alive() {
    assert!(head(&get(&["Host: a"])).keep_alive);
    assert!(!head(&get(&["Host: a", "Connection: close"])).keep_alive);
    assert!(!head(&get(&["Host: a", "Connection: CLOSE"])).keep_alive);
    assert!(!head(&get(&["Host: a", "Connection: foo ,\tclose , bar"])).keep_alive);
    assert!(!head(&get(&["Host: a", "Connection: foo", "Connection: close"])).keep_alive);
    assert!(head(&get(&["Host: a", "Connection: keep-alive"])).keep_alive);
    // Not a token match.
    assert!(head(&get(&["Host: a", "Connection: closed"])).keep_alive);
}

#[test]
fn expect_continue() {
    assert!(head(&get(&["Host: a", "Expect: 100-continue"])).expect_continue);
    assert!(head(&get(&["Host: a", "Expect: 100-Continue"])).expect_continue);
    assert!(!head(&get(&["Host: a", "Expect: 200-ok"])).expect_continue);
    assert!(!head(&get(&["Host: a"])).expect_continue);
    // RFC 9110 §10.1.1: ignored for HTTP/1.0.
    assert!(!head("GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
}

#[test]
fn upgrade() {
    assert!(head(&get(&["Host: a", "Connection: Upgrade", "Upgrade: websocket"])).upgrade);
    assert!(head(&get(&["Host: a", "Connection: keep-alive, upgrade", "Upgrade: h2c"])).upgrade);
    assert!(!head(&get(&["Host: a", "Upgrade: websocket"])).upgrade);
    assert!(!head(&get(&["Host: a", "Connection: upgrade"])).upgrade);
    // RFC 9110 §7.8: ignored for HTTP/1.0.
    assert!(!head("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade);
}

#[test]
fn unsupported_versions_get_505() {
    for v in ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0", "HTTP/9.9"] {
        let e = head_error(&req(&format!("GET / {v}"), &["Host: a"]));
        assert_eq!(e, ParseError::UnsupportedVersion, "{v}");
        assert_eq!(e.status(), StatusCode::HTTP_VERSION_NOT_SUPPORTED);
    }
    // Bare LF after it is also a line end.
    assert_eq!(head_error("GET / HTTP/2.0\n\n"), ParseError::UnsupportedVersion);
}

#[test]
fn malformed_versions() {
    for v in ["HTTP/2", "http/1.1", "HTTX/1.1", "HTTP/1.1x", "HTTP/1.10", "HTTP/11.1", "HTTP/2.0x"]
    {
        let e = head_error(&req(&format!("GET / {v}"), &["Host: a"]));
        assert_eq!(e, violation(Violation::MalformedHead), "{v}");
    }
    // HTTP/0.9 style request line: no version at all.
    assert_eq!(head_error("GET /\r\n\r\n"), violation(Violation::MalformedHead));
}

// ---- request line ------------------------------------------------------------------------

#[test]
fn malformed_request_lines() {
    for line in [
        "G(T / HTTP/1.1",
        "GET /a b HTTP/1.1",
        "GET  / HTTP/1.1",
        "GET / HTTP/1.1 ",
        " GET / HTTP/1.1",
        "GET /\x7f HTTP/1.1",
        "GET /\x01 HTTP/1.1",
        "GET\t/ HTTP/1.1",
        "GET / HTTP/1.1\rX",
    ] {
        assert_eq!(
            head_error(&req(line, &["Host: a"])),
            violation(Violation::MalformedHead),
            "{line:?}"
        );
    }
}

#[test]
fn non_utf8_target_is_malformed() {
    let input = b"GET /\xff\xfe HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(head_error_with(input, CFG), violation(Violation::MalformedHead));
}

#[test]
fn target_forms() {
    assert_eq!(head(&req("GET /a/b?c=d&e HTTP/1.1", &["Host: a"])).uri, "/a/b?c=d&e");
    assert_eq!(head(&req("GET //double HTTP/1.1", &["Host: a"])).uri, "//double");
    let abs = head(&req("GET http://example.com:8080/x?y HTTP/1.1", &["Host: example.com"]));
    assert_eq!(abs.uri, "http://example.com:8080/x?y");
    assert_eq!(head(&req("OPTIONS * HTTP/1.1", &["Host: a"])).uri, "*");
    let connect = head(&req("CONNECT example.com:443 HTTP/1.1", &["Host: example.com:443"]));
    assert_eq!(connect.method, Method::CONNECT);
    assert_eq!(connect.uri, "example.com:443");
    // `http::Uri` is lenient about visible ASCII outside RFC 3986 (`"`, `|`, `{`, bad
    // percent-escapes), and so are real clients; none of it affects framing, so it passes.
    assert_eq!(head(&req("GET /a%zz\"|{} HTTP/1.1", &["Host: a"])).uri, "/a%zz\"|{}");
    // Raw UTF-8 too (httparse insists on UTF-8, see `non_utf8_target_is_malformed`).
    assert_eq!(head(&req("GET /caf\u{e9} HTTP/1.1", &["Host: a"])).uri, "/caf\u{e9}");
    let v6 = head(&req("CONNECT [::1]:443 HTTP/1.1", &["Host: [::1]:443"]));
    assert_eq!(v6.uri, "[::1]:443");
}

#[test]
fn invalid_targets() {
    for line in [
        "GET * HTTP/1.1",
        "OPTIONS *x HTTP/1.1",
        "GET example.com:443 HTTP/1.1",
        "GET example.com HTTP/1.1",
        "GET a HTTP/1.1",
        "GET http:/x HTTP/1.1",
        "GET http:// HTTP/1.1",
        "GET /a#frag HTTP/1.1",
        "CONNECT /path HTTP/1.1",
        "CONNECT example.com HTTP/1.1",
        "CONNECT http://example.com:443/ HTTP/1.1",
        "CONNECT user@example.com:443 HTTP/1.1",
        "CONNECT * HTTP/1.1",
    ] {
        let e = head_error(&req(line, &["Host: a"]));
        assert_eq!(e, violation(Violation::InvalidTarget), "{line:?}");
    }
}

#[test]
fn target_longer_than_uri_can_hold_is_invalid() {
    // `http::Uri` holds at most 64 KiB - 2. Too big to feed split at every byte in a debug
    // build, so this one is parsed whole.
    let cfg = ParseConfig { max_request_line_size: 100_000, ..CFG };
    let input = req(&format!("GET /{} HTTP/1.1", "a".repeat(70_000)), &["Host: a"]);
    let mut buf = BytesMut::from(input.as_bytes());
    assert_eq!(parse_request(&mut buf, &cfg).unwrap_err(), violation(Violation::InvalidTarget));
}

// ---- header syntax -----------------------------------------------------------------------

#[test]
fn obs_fold() {
    assert_eq!(head_error(&get(&["Host: a", "X: b", " c"])), violation(Violation::ObsFold));
    assert_eq!(head_error(&get(&["Host: a", "X: b", "\tc"])), violation(Violation::ObsFold));
    // Whitespace between the request line and the first field (RFC 9112 §2.2).
    assert_eq!(head_error(&get(&[" Host: a"])), violation(Violation::ObsFold));
}

#[test]
fn whitespace_before_colon() {
    for line in ["Host : a", "Host\t: a", "X-Foo  \t : b"] {
        assert_eq!(
            head_error(&get(&[line])),
            violation(Violation::WhitespaceBeforeColon),
            "{line:?}"
        );
    }
    assert_eq!(head_error(&get(&["Host: a", "X y: b"])), violation(Violation::MalformedHead));
    assert_eq!(head_error(&get(&["Host: a", "X "])), violation(Violation::MalformedHead));
}

#[test]
fn malformed_header_lines() {
    for line in [
        "X(: b",
        "X-No-Colon",
        ": empty-name",
        "X: a\x01b",
        "X: a\x7fb",
        "X: a\x00b",
        "X: a\rb",
        "X: \r",
        "\u{e9}: b",
    ] {
        assert_eq!(
            head_error(&get(&["Host: a", line])),
            violation(Violation::MalformedHead),
            "{line:?}"
        );
    }
}

#[test]
fn bad_bytes_anywhere_in_long_fields() {
    // Long enough for httparse's vectorised scanners; the bad byte at every offset in a block.
    let value = "v".repeat(80);
    for at in 0..70 {
        for bad in ["\x00", "\x01", "\x1f", "\x7f", "\r", "\n "] {
            let mut v = value.clone();
            v.insert_str(at, bad);
            let input = get(&["Host: a", &format!("X: {v}")]);
            let e = head_error(&input);
            let want = if bad == "\n " { Violation::ObsFold } else { Violation::MalformedHead };
            assert_eq!(e, violation(want), "{bad:?} at {at}");
        }
        let mut target = format!("/{value}");
        target.insert(at + 1, '\x7f');
        let e = head_error(&req(&format!("GET {target} HTTP/1.1"), &["Host: a"]));
        assert_eq!(e, violation(Violation::MalformedHead), "DEL at {at} in target");
        let mut name = "X".repeat(70);
        name.insert(at, '(');
        let e = head_error(&get(&["Host: a", &format!("{name}: v")]));
        assert_eq!(e, violation(Violation::MalformedHead), "'(' at {at} in name");
    }
}

#[test]
fn bare_cr_ending_the_head() {
    assert_eq!(head_error("GET / HTTP/1.1\r\nHost: a\r\n\rX"), violation(Violation::MalformedHead));
}

// ---- Host --------------------------------------------------------------------------------

#[test]
fn host_rules() {
    assert_eq!(head(&get(&["Host: example.com:8080"])).headers["host"], "example.com:8080");
    assert_eq!(head(&get(&["Host: [::1]:80"])).headers["host"], "[::1]:80");
    // Empty Host is what a client sends for a target without authority (RFC 9112 §3.2).
    assert_eq!(head(&get(&["Host:"])).headers["host"], "");
    assert_eq!(head_error(&get(&[])), violation(Violation::MissingHost));
    assert_eq!(head_error(&get(&["Host: a", "Host: a"])), violation(Violation::DuplicateHost));
    assert_eq!(head_error(&get(&["Host: a", "host: b"])), violation(Violation::DuplicateHost));
    for bad in ["Host: a b", "Host: user@a", "Host: a/b", "Host: a:b:c:d:e:f:g:h:i:j", "Host: [::1"]
    {
        assert_eq!(head_error(&get(&[bad])), violation(Violation::InvalidHost), "{bad:?}");
    }
}

#[test]
fn host_on_http10_is_optional_but_checked() {
    assert_eq!(head("GET / HTTP/1.0\r\nHost: a\r\n\r\n").headers["host"], "a");
    let dup = "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n";
    assert_eq!(head_error(dup), violation(Violation::DuplicateHost));
    assert_eq!(
        head_error("GET / HTTP/1.0\r\nHost: a@b\r\n\r\n"),
        violation(Violation::InvalidHost)
    );
}

// ---- framing -----------------------------------------------------------------------------

fn framing(headers: &[&str]) -> BodyFraming {
    let mut all = vec!["Host: a"];
    all.extend_from_slice(headers);
    // A body that decodes under any framing the test expects, so the stream parses cleanly.
    let out = run_requests(req("POST / HTTP/1.1", &all).as_bytes(), CFG);
    match out.events.first() {
        Some(Ev::Head(h)) => h.framing,
        other => panic!("{headers:?}: {other:?}"),
    }
}

fn framing_error(headers: &[&str]) -> ParseError {
    let mut all = vec!["Host: a"];
    all.extend_from_slice(headers);
    head_error(&req("POST / HTTP/1.1", &all))
}

#[test]
fn content_length() {
    assert_eq!(framing(&[]), BodyFraming::Empty);
    assert_eq!(framing(&["Content-Length: 0"]), BodyFraming::Empty);
    assert_eq!(framing(&["Content-Length: 5"]), BodyFraming::Length(5));
    assert_eq!(framing(&["content-length: 007"]), BodyFraming::Length(7));
    assert_eq!(framing(&["Content-Length: 5", "Content-Length: 5"]), BodyFraming::Length(5));
    assert_eq!(framing(&["Content-Length: 5, 5 ,5"]), BodyFraming::Length(5));
    assert_eq!(framing(&["Content-Length: 5", "Content-Length: 005"]), BodyFraming::Length(5));
    assert_eq!(framing(&["Content-Length: 18446744073709551615"]), BodyFraming::Length(u64::MAX));
}

#[test]
fn invalid_content_length() {
    for cl in [
        &["Content-Length: -5"][..],
        &["Content-Length: +5"],
        &["Content-Length: 5a"],
        &["Content-Length: 0x5"],
        &["Content-Length: 5 5"],
        &["Content-Length:"],
        &["Content-Length: ,"],
        &["Content-Length: 5,"],
        &["Content-Length: 5,,5"],
        &["Content-Length: 18446744073709551616"],
        &["Content-Length: 99999999999999999999999"],
        &["Content-Length: 5, 6"],
        &["Content-Length: 5", "Content-Length: 6"],
        &["Content-Length: 0", "Content-Length: 1"],
    ] {
        assert_eq!(framing_error(cl), violation(Violation::InvalidContentLength), "{cl:?}");
    }
}

#[test]
fn transfer_encoding() {
    assert_eq!(framing(&["Transfer-Encoding: chunked"]), BodyFraming::Chunked);
    assert_eq!(framing(&["Transfer-Encoding: Chunked"]), BodyFraming::Chunked);
    assert_eq!(framing(&["Transfer-Encoding: \t chunked ,"]), BodyFraming::Chunked);
    assert_eq!(framing(&["Transfer-Encoding: ,chunked"]), BodyFraming::Chunked);
}

#[test]
fn transfer_encoding_not_chunked_last() {
    for te in [
        &["Transfer-Encoding: gzip"][..],
        &["Transfer-Encoding: chunked, gzip"],
        &["Transfer-Encoding: chunked", "Transfer-Encoding: gzip"],
        &["Transfer-Encoding: chunked, chunked"],
        &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
        &["Transfer-Encoding: gzip, chunked, chunked"],
        &["Transfer-Encoding:"],
        &["Transfer-Encoding: ,"],
        &["Transfer-Encoding: chunked;q=1"],
        &["Transfer-Encoding: chunkedx"],
    ] {
        assert_eq!(
            framing_error(te),
            violation(Violation::TransferEncodingNotChunkedLast),
            "{te:?}"
        );
    }
}

#[test]
fn other_codings_before_chunked_are_501() {
    for te in [
        &["Transfer-Encoding: gzip, chunked"][..],
        &["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"],
        &["Transfer-Encoding: identity, chunked"],
    ] {
        let e = framing_error(te);
        assert_eq!(e, ParseError::UnsupportedTransferCoding, "{te:?}");
        assert_eq!(e.status(), StatusCode::NOT_IMPLEMENTED);
    }
}

#[test]
fn content_length_with_transfer_encoding() {
    let both = violation(Violation::ContentLengthWithTransferEncoding);
    assert_eq!(framing_error(&["Content-Length: 5", "Transfer-Encoding: chunked"]), both);
    assert_eq!(framing_error(&["Transfer-Encoding: chunked", "Content-Length: 5"]), both);
    // Even a bogus coding or length: the pair is the smuggling shape, whatever the values.
    assert_eq!(framing_error(&["Transfer-Encoding: gzip", "Content-Length: x"]), both);
}

#[test]
fn transfer_encoding_on_http10() {
    let e = head_error("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(e, violation(Violation::TransferEncodingOnHttp10));
    let both = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n";
    assert_eq!(head_error(both), violation(Violation::TransferEncodingOnHttp10));
}

#[test]
fn rule_order_when_several_are_broken() {
    // Target before Host before framing.
    assert_eq!(
        head_error("GET * HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
        violation(Violation::InvalidTarget)
    );
    assert_eq!(
        head_error("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
        violation(Violation::MissingHost)
    );
    // Syntax (found by the tokeniser) before any semantic rule.
    assert_eq!(
        head_error("GET * HTTP/1.1\r\nX : y\r\n\r\n"),
        violation(Violation::WhitespaceBeforeColon)
    );
}

// ---- limits ------------------------------------------------------------------------------

fn cfg(line: usize, headers: usize, count: usize) -> ParseConfig {
    ParseConfig {
        max_request_line_size: line,
        max_request_headers_total_size: headers,
        max_request_header_count: count,
    }
}

#[test]
fn request_line_limit_boundary() {
    let line = "GET /abcdef HTTP/1.1\r\n"; // 22 bytes, CRLF included
    let input = format!("{line}Host: a\r\n\r\n");
    let at_max = run_requests(input.as_bytes(), cfg(22, 1024, 10));
    assert!(matches!(at_max.events[..], [Ev::Head(_), Ev::Body(_)]), "{at_max:?}");
    let e = head_error_with(input.as_bytes(), cfg(21, 1024, 10));
    assert_eq!(e, limit(Limit::MaxRequestLineSize, 21));
    assert_eq!(e.status(), StatusCode::URI_TOO_LONG);
}

#[test]
fn request_line_limit_counts_from_the_method_not_leading_empty_lines() {
    let input = format!("\r\n\r\n{}", get(&["Host: a"]));
    assert!(matches!(
        run_requests(input.as_bytes(), cfg(16, 1024, 10)).events[..],
        [Ev::Head(_), ..]
    ));
}

#[test]
fn endless_request_line_fails_before_its_end() {
    // No LF yet, but more than the limit has arrived: 414 now, not when the line ends.
    let c = cfg(32, 1024, 10);
    let at_max = format!("GET /{}", "a".repeat(27));
    assert_eq!(at_max.len(), 32);
    assert!(run_requests(at_max.as_bytes(), c).events.is_empty());
    let over = format!("{at_max}a");
    assert_eq!(head_error_with(over.as_bytes(), c), limit(Limit::MaxRequestLineSize, 32));
    // Also when the surplus is a CR whose LF would have been the 34th byte.
    let cr = format!("{at_max}\r");
    assert_eq!(head_error_with(cr.as_bytes(), c), limit(Limit::MaxRequestLineSize, 32));
}

#[test]
fn syntax_error_inside_the_limit_wins_over_the_limit() {
    let input = format!("G(T /{}", "a".repeat(100));
    assert_eq!(
        head_error_with(input.as_bytes(), cfg(32, 1024, 10)),
        violation(Violation::MalformedHead)
    );
    // ... but one past the limit is never looked at.
    let input = format!("GET /{} {}", "a".repeat(27), "(".repeat(10));
    assert_eq!(
        head_error_with(input.as_bytes(), cfg(32, 1024, 10)),
        limit(Limit::MaxRequestLineSize, 32)
    );
}

#[test]
fn header_section_limit_boundary() {
    let headers = "Host: a\r\nX-Long: 0123456789\r\n\r\n"; // 9 + 20 + 2 = 31 bytes
    let input = format!("GET / HTTP/1.1\r\n{headers}");
    assert_eq!(headers.len(), 31);
    let at_max = run_requests(input.as_bytes(), cfg(1024, 31, 10));
    assert!(matches!(at_max.events[..], [Ev::Head(_), Ev::Body(_)]), "{at_max:?}");
    let e = head_error_with(input.as_bytes(), cfg(1024, 30, 10));
    assert_eq!(e, limit(Limit::MaxRequestHeadersTotalSize, 30));
    assert_eq!(e.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

#[test]
fn header_section_limit_does_not_count_the_body() {
    let input = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\n\r\n01234567890123456789";
    let out = run_requests(input.as_bytes(), cfg(1024, 31, 10));
    assert_eq!(out.events.last(), Some(&Ev::Body(b"01234567890123456789".to_vec())));
}

#[test]
fn endless_header_section_fails_before_its_end() {
    let c = cfg(1024, 40, 100);
    let prefix = "GET / HTTP/1.1\r\nHost: a\r\n";
    let at_max = format!("{prefix}X: {}", "b".repeat(40 - 9 - 3));
    assert!(run_requests(at_max.as_bytes(), c).events.is_empty());
    let over = format!("{at_max}b");
    assert_eq!(head_error_with(over.as_bytes(), c), limit(Limit::MaxRequestHeadersTotalSize, 40));
    // Many small complete lines, never an empty one.
    let lines = format!("{prefix}{}", "X: b\r\n".repeat(10));
    assert_eq!(head_error_with(lines.as_bytes(), c), limit(Limit::MaxRequestHeadersTotalSize, 40));
}

#[test]
fn endless_whitespace_before_colon_hits_the_limit() {
    let input = format!("GET / HTTP/1.1\r\nHost{}", " ".repeat(100));
    assert_eq!(
        head_error_with(input.as_bytes(), cfg(1024, 40, 10)),
        limit(Limit::MaxRequestHeadersTotalSize, 40)
    );
}

#[test]
fn header_count_limit_boundary() {
    let three = get(&["Host: a", "X: 1", "Y: 2"]);
    assert!(matches!(
        run_requests(three.as_bytes(), cfg(1024, 1024, 3)).events[..],
        [Ev::Head(_), _]
    ));
    let e = head_error_with(three.as_bytes(), cfg(1024, 1024, 2));
    assert_eq!(e, limit(Limit::MaxRequestHeaderCount, 2));
    assert_eq!(e.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

#[test]
fn header_count_above_the_stack_slots() {
    // 300 slots do not fit the 128 on the stack: the heap path must count exactly as well.
    let c = cfg(1024, 64 * 1024, 300);
    let names: Vec<String> = (0..299).map(|i| format!("X-{i}: v")).collect();
    let mut lines: Vec<&str> = names.iter().map(String::as_str).collect();
    lines.push("Host: a");
    let mut buf = BytesMut::from(get(&lines).as_bytes());
    assert_eq!(parse_request(&mut buf, &c).unwrap().unwrap().headers.len(), 300);
    lines.push("Z: 1");
    let mut buf = BytesMut::from(get(&lines).as_bytes());
    assert_eq!(parse_request(&mut buf, &c).unwrap_err(), limit(Limit::MaxRequestHeaderCount, 300));
}

#[test]
fn huge_header_count_limit_is_bounded_by_the_section_size() {
    let c = cfg(1024, 1024, usize::MAX);
    let mut buf = BytesMut::from(get(&["Host: a", "X: 1"]).as_bytes());
    assert_eq!(parse_request(&mut buf, &c).unwrap().unwrap().headers.len(), 2);
}

// ---- zero copy and pipelining ------------------------------------------------------------

#[test]
fn head_fields_point_into_the_receive_buffer() {
    let input = get(&["Host: example.com", "X-Value: some-long-value-here"]);
    let mut buf = BytesMut::from(format!("{input}rest").as_bytes());
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let head = parse_request(&mut buf, &CFG).unwrap().unwrap();
    let inside = |p: *const u8| range.contains(&(p as usize));
    assert!(inside(head.headers["x-value"].as_bytes().as_ptr()));
    assert!(inside(head.headers["host"].as_bytes().as_ptr()));
    assert_eq!(&buf[..], b"rest");
}

#[test]
fn target_points_into_the_receive_buffer() {
    let mut buf = BytesMut::from("GET /a/long/path?with=query HTTP/1.1\r\nHost: a\r\n\r\n");
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let head = parse_request(&mut buf, &CFG).unwrap().unwrap();
    assert!(range.contains(&(head.uri.path().as_ptr() as usize)));
    assert!(buf.is_empty());
}

#[test]
fn pipelined_requests_decode_in_order() {
    let input = concat!(
        "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        "\r\n", // a stray CRLF after a body, as old clients send
        "POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        "5\r\nworld\r\n3;x=y\r\n!!!\r\n0\r\nT: v\r\n\r\n",
        "GET /4 HTTP/1.0\r\n\r\n",
        "GET /5 HTTP/1.1\r\nHo",
    );
    let out = run_requests(input.as_bytes(), CFG);
    let summary: Vec<String> = out
        .events
        .iter()
        .map(|e| match e {
            Ev::Head(h) => format!("{} {}", h.method, h.uri),
            Ev::Body(b) => format!("body {}", String::from_utf8_lossy(b)),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        ["GET /1", "body ", "POST /2", "body hello", "POST /3", "body world!!!", "GET /4", "body ",]
    );
    assert_eq!(out.leftover, b"GET /5 HTTP/1.1\r\nHo");
}

#[test]
fn limits_apply_to_each_pipelined_request_afresh() {
    // Each head alone fits; together they are far over both limits.
    let one = get(&["Host: a", "X: 0123456789"]);
    let input = one.repeat(5);
    let out = run_requests(input.as_bytes(), cfg(one.len(), one.len(), 2));
    assert_eq!(out.events.iter().filter(|e| matches!(e, Ev::Head(_))).count(), 5);
    assert!(out.leftover.is_empty());
}

#[test]
fn http10_with_a_body() {
    let input = "POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nokGET";
    let out = run_requests(input.as_bytes(), CFG);
    assert!(matches!(&out.events[..], [Ev::Head(h), Ev::Body(b)] if !h.keep_alive && b == b"ok"));
    assert_eq!(out.leftover, b"GET");
}

#[test]
fn pipelined_bad_request_after_a_good_one() {
    let input = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost : a\r\n\r\nGET /3";
    let out = run_requests(input.as_bytes(), CFG);
    assert!(matches!(
        out.events[..],
        [
            Ev::Head(_),
            Ev::Body(_),
            Ev::HeadError(ParseError::Invalid(Violation::WhitespaceBeforeColon))
        ]
    ));
}

#[test]
fn content_length_over_the_body_cap() {
    let input = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world";
    let out = super::run(input.as_bytes(), || Conn::new(CFG).with_max_body(Some(10)));
    let Some(Ev::BodyError(data, e)) = out.events.last() else { panic!("{out:?}") };
    assert!(data.is_empty());
    assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

// ---- error mapping -----------------------------------------------------------------------

#[test]
fn every_violation_is_400_with_a_reason() {
    for v in [
        Violation::MalformedHead,
        Violation::ObsFold,
        Violation::WhitespaceBeforeColon,
        Violation::InvalidTarget,
        Violation::ContentLengthWithTransferEncoding,
        Violation::InvalidContentLength,
        Violation::TransferEncodingNotChunkedLast,
        Violation::TransferEncodingOnHttp10,
        Violation::MissingHost,
        Violation::DuplicateHost,
        Violation::InvalidHost,
        Violation::InvalidChunkSize,
        Violation::InvalidChunkFraming,
        Violation::InvalidTrailer,
    ] {
        assert_eq!(ParseError::Invalid(v).status(), StatusCode::BAD_REQUEST);
        assert!(!v.reason().is_empty());
        assert_eq!(ParseError::Invalid(v).to_string(), v.reason());
    }
    assert_eq!(
        limit(Limit::MaxRequestLineSize, 8).to_string(),
        "max_request_line_size exceeded: 9 > 8"
    );
}

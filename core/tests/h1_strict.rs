//! HTTP/1.1 strictness at the edge (RFC 9112), on both IO drivers: every ambiguous or
//! malformed request gets one error response and a closed connection, and the request
//! pipelined behind it in the same write is never answered (the request-smuggling defence).

mod common;

use std::time::Duration;

use common::{addr, count_status_lines, finish, first_status, start, Client};
use peregrine::{IoChoice, Limits};

/// The request written right after each bad one, in the same write.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// Rejected while parsing the head: (case, bad request, expected status).
const HEAD_CASES: &[(&str, &str, u16)] = &[
    (
        "content-length with transfer-encoding",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
         0\r\n\r\n",
        400,
    ),
    (
        "two differing content-length headers",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        400,
    ),
    (
        "content-length list 1, 2",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\nh",
        400,
    ),
    (
        "transfer-encoding chunked, gzip (chunked not last)",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "transfer-encoding gzip, chunked (unsupported coding)",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    ("obs-fold", "GET /plaintext HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", 400),
    ("whitespace before colon", "GET /plaintext HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    ("bare CR in a header value", "GET /plaintext HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400),
    ("missing host on HTTP/1.1", "GET /plaintext HTTP/1.1\r\nX-A: 1\r\n\r\n", 400),
    ("duplicate host", "GET /plaintext HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    ("userinfo in host", "GET /plaintext HTTP/1.1\r\nHost: user@x\r\n\r\n", 400),
    ("host with a path", "GET /plaintext HTTP/1.1\r\nHost: x/y\r\n\r\n", 400),
    ("host port past 65535", "GET /plaintext HTTP/1.1\r\nHost: x:65536\r\n\r\n", 400),
    ("invalid method token", "G(ET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("space inside the target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (
        "transfer-encoding on HTTP/1.0",
        "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
];

/// Rejected while decoding the body, which `/echo` streams back.
const CHUNK_CASES: &[(&str, &str, u16)] = &[
    (
        "invalid chunk size",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         zz\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    (
        "overflowing chunk size",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         100000000000000000005\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    (
        "bare LF in chunk framing",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\nhello\r\n0\r\n\r\n",
        400,
    ),
];

/// Sends each case with [`SMUGGLED`] behind it, each on a new connection, and fails listing
/// every case not answered with exactly one response of the expected status (announcing
/// `connection: close`) followed by the server closing the connection.
fn check_cases(io: IoChoice, cases: &[(&str, &str, u16)]) {
    let server = start(io, Limits::default());
    let mut failures = Vec::new();
    for &(case, bad, status) in cases {
        let mut c = Client::connect(addr(&server));
        c.send(format!("{bad}{SMUGGLED}").as_bytes());
        let Some(received) = c.read_until_closed(Duration::from_secs(5)) else {
            failures.push(format!("{case}: connection still open after 5 s"));
            continue;
        };
        let text = String::from_utf8_lossy(&received);
        let responses = count_status_lines(&received);
        if responses != 1 {
            failures.push(format!("{case}: {responses} responses, want 1: {text:?}"));
        } else if first_status(&received) != Some(status) {
            failures.push(format!("{case}: want {status}: {text:?}"));
        } else if !text.to_ascii_lowercase().contains("\r\nconnection: close\r\n") {
            failures.push(format!("{case}: no `connection: close`: {text:?}"));
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
    finish(server);
}

fn strict_head_rejections(io: IoChoice) {
    check_cases(io, HEAD_CASES);
}

fn strict_chunk_framing_rejections(io: IoChoice) {
    check_cases(io, CHUNK_CASES);
}

/// The control case: the same write with a valid first request gets both responses, so the
/// single response above is the server's choice, not an artefact of how the test reads.
fn valid_request_then_pipelined(io: IoChoice) {
    let server = start(io, Limits::default());
    let mut c = Client::connect(addr(&server));
    c.send(
        format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello{SMUGGLED}")
            .as_bytes(),
    );
    let first = c.read_response();
    assert_eq!((first.status, first.text().as_str()), (200, "hello"));
    let second = c.read_response();
    assert_eq!(second.status, 404, "{second:?}");
    drop(c);
    finish(server);
}

both_drivers!(
    strict_head_rejections,
    strict_chunk_framing_rejections,
    valid_request_then_pipelined,
);

//! Criterion micro-benchmarks of Peregrine's HTTP/1 codec (`peregrine-protocols`).
//!
//! The load harness measures whole servers; these isolate the codec's share
//! of the per-request cost, so a regression in parsing or serialising shows
//! up here before it drowns in wrk's noise:
//!
//! - `h1_parse_request`: [`parse_request`] on the request wrk sends (one
//!   header) and on a browser-like GET with 13 headers;
//! - `h1_encode_response_head`: [`encode_response_head`] with a small header
//!   map and a cached date, as the connection loop calls it;
//! - `h1_chunked_decode`: [`BodyDecoder`] over a chunked body, in large and in
//!   small chunks (the latter is mostly framing).
//!
//! HTTP/2 frame decode and HPACK decode benchmarks come later, with the
//! HTTP/2 codec (the TLS/HTTP/2 issue).
//!
//! ```sh
//! cargo bench -p peregrine-bench --bench codec              # full measurement
//! cargo bench -p peregrine-bench --bench codec -- --quick   # a rough pass in seconds
//! ```

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_main, BatchSize, Criterion, Throughput};
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, VARY};
use http::{HeaderMap, StatusCode, Version};
use peregrine_protocols::h1::{
    encode_response_head, parse_request, BodyDecoder, BodyEvent, BodyFraming, ParseConfig,
    ResponseFraming,
};

/// `peregrine_limits::Limits::default()`'s parse limits (Kestrel's defaults).
const CFG: ParseConfig = ParseConfig {
    max_request_line_size: 8 * 1024,
    max_request_headers_total_size: 32 * 1024,
    max_request_header_count: 100,
};

/// What wrk sends for `wrk http://127.0.0.1:8080/plaintext`.
const WRK_GET: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";

/// A navigation request as a current desktop browser sends it (13 headers).
const BROWSER_GET: &[u8] = b"GET /articles/2026/11/edge-servers?ref=home HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-GB,en;q=0.7,de;q=0.3\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/\r\n\
Connection: keep-alive\r\n\
Cookie: session=5f2b9c1e7a4d4e0f8b3c6a9d2e1f0a7b; theme=dark; consent=1\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: same-origin\r\n\
Priority: u=0, i\r\n\
\r\n";

/// The 29-byte IMF-fixdate the server caches once a second.
const DATE: &[u8] = b"Sun, 22 Nov 2026 02:20:30 GMT";

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("h1_parse_request");
    for (name, request) in [("wrk_get", WRK_GET), ("browser_get_13_headers", BROWSER_GET)] {
        // Parse must succeed, or the benchmark would time an error path.
        let head = parse_request(&mut BytesMut::from(request), &CFG)
            .expect("valid request")
            .expect("complete request");
        assert!(head.keep_alive);
        group.throughput(Throughput::Bytes(request.len() as u64));
        group.bench_function(name, |b| {
            // A fresh buffer per iteration (parsing splits the head off it),
            // filled outside the timed part. Dropping the parsed head is
            // timed, as the server pays it per request too.
            b.iter_batched_ref(
                || BytesMut::from(request),
                |buf| parse_request(black_box(buf), &CFG),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
    headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    // Reused, as the connection's output buffer is: this times the encoding,
    // not the allocator.
    let mut dst = BytesMut::with_capacity(512);
    c.bench_function("h1_encode_response_head/3_headers_cached_date", |b| {
        b.iter(|| {
            dst.clear();
            encode_response_head(
                StatusCode::OK,
                black_box(&headers),
                ResponseFraming::Length(13),
                Version::HTTP_11,
                false,
                black_box(DATE),
                &mut dst,
            );
            black_box(dst.len())
        })
    });
}

/// `total` bytes of body as chunks of `chunk` bytes, then the last chunk.
fn chunked_body(total: usize, chunk: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(total + total / chunk * 8 + 8);
    let data = vec![b'x'; chunk];
    for _ in 0..total / chunk {
        body.extend_from_slice(format!("{chunk:x}\r\n").as_bytes());
        body.extend_from_slice(&data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

/// Decodes a whole chunked body; returns the data bytes seen.
fn decode_all(buf: &mut BytesMut) -> usize {
    let mut decoder = BodyDecoder::new(BodyFraming::Chunked, None, 32 * 1024);
    let mut seen = 0;
    loop {
        match decoder.decode(buf) {
            Ok(BodyEvent::Data(data)) => seen += black_box(data).len(),
            Ok(BodyEvent::Done) => return seen,
            other => panic!("chunked body did not decode: {other:?}"),
        }
    }
}

fn chunked(c: &mut Criterion) {
    let mut group = c.benchmark_group("h1_chunked_decode");
    for (name, chunk) in [("16KiB_in_1KiB_chunks", 1024), ("16KiB_in_64B_chunks", 64)] {
        let body = chunked_body(16 * 1024, chunk);
        assert_eq!(decode_all(&mut BytesMut::from(&body[..])), 16 * 1024);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || BytesMut::from(&body[..]),
                |buf| decode_all(black_box(buf)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// The benchmarks `criterion_main!` runs.
mod group {
    // `criterion_group!` generates an undocumented `pub fn benches`.
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::parse, super::encode, super::chunked);
}
criterion_main!(group::benches);

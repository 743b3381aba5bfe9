//! On-the-fly compression of responses (brotli, zstd, gzip), for routes that ask for it
//! (`compress = true`, or `--compress` for `--root`/`--proxy`/`--app`). Off by default:
//! compressing a secret next to attacker-controlled input in one response lets an attacker
//! who can watch sizes recover the secret (BREACH), so it is a route's owner's choice.
//!
//! A response is compressed when the client accepts a coding (`Accept-Encoding` q-values,
//! ties to the server's order: br, zstd, gzip), it is not a `206`/`204`/`304`/1xx, it is not
//! already encoded, its type compresses (text, JSON, JavaScript, XML, SVG, wasm), it does
//! not say `Cache-Control: no-transform`, the request asked for no range, and its length is
//! unknown or at least `min_size`. It then loses `Content-Length` (and `Accept-Ranges`),
//! gains `Content-Encoding` and `Vary: accept-encoding`, and its `ETag` becomes weak.
//!
//! The body is compressed as it streams: what is ready is fed to the encoder; when the
//! source has nothing more for now, the encoder is flushed so the client is not kept
//! waiting (a proxied stream stays a stream).

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde::Deserialize;

use crate::content_coding::{self, Coding};
use crate::{Body, BodyChunk, BodyError};

/// `[compression]`: how routes with `compress = true` compress.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionSection {
    /// Responses shorter than this are sent as they are (when their length is known).
    pub min_size: u64,
    /// The codings offered, in the server's order of preference.
    pub codings: Vec<Coding>,
}

impl Default for CompressionSection {
    fn default() -> Self {
        CompressionSection { min_size: 1024, codings: Coding::ALL.to_vec() }
    }
}

/// Output gathered before it is handed on, while input keeps coming.
const OUTPUT_CHUNK: usize = 64 * 1024;

/// The coding to compress a response to `method`/`headers` with, if the client takes one.
pub(crate) fn negotiate(
    method: &Method,
    headers: &HeaderMap,
    section: &CompressionSection,
) -> Option<Coding> {
    if headers.contains_key(header::RANGE) || (method != Method::GET && method != Method::HEAD) {
        return None;
    }
    content_coding::choose(headers, &section.codings)
}

/// `response`, compressed with `coding` when it qualifies (see the module doc).
pub(crate) fn apply(
    mut response: Response<Body>,
    coding: Coding,
    section: &CompressionSection,
) -> Response<Body> {
    let status = response.status();
    if status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
    {
        return response;
    }
    let headers = response.headers();
    let no_transform = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.to_ascii_lowercase().contains("no-transform")));
    if headers.contains_key(header::CONTENT_ENCODING)
        || no_transform
        || !compressible(headers.get(header::CONTENT_TYPE))
        || response.body().exact_len().is_some_and(|n| n < section.min_size)
    {
        return response;
    }
    let h = response.headers_mut();
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::ACCEPT_RANGES);
    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding.token()));
    let varies = h.get_all(header::VARY).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|f| f.trim().eq_ignore_ascii_case("accept-encoding")))
    });
    if !varies {
        h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if let Some(etag) = h.get(header::ETAG).and_then(|v| v.to_str().ok()) {
        if !etag.starts_with("W/") {
            if let Ok(weak) = HeaderValue::from_str(&format!("W/{etag}")) {
                h.insert(header::ETAG, weak);
            }
        }
    }
    let body = std::mem::take(response.body_mut());
    *response.body_mut() = Body::from_stream(
        Compressed { source: body, encoder: Some(Encoder::new(coding)), fed: false },
        None,
    );
    response
}

/// Whether a body of this `Content-Type` is worth compressing.
fn compressible(content_type: Option<&HeaderValue>) -> bool {
    let Some(ct) = content_type.and_then(|v| v.to_str().ok()) else { return false };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "text/event-stream" {
        // A stream of events must not wait on an encoder's buffer.
        return false;
    }
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "application/wasm"
                | "image/svg+xml"
                | "application/x-javascript"
        )
}

/// One encoder, writing into its own `Vec` that is drained after each step.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    /// Levels for dynamic content: gzip 6 (zlib's default), brotli 4 and zstd 3 (their
    /// fast-but-good settings for compressing on each request).
    fn new(coding: Coding) -> Encoder {
        match coding {
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(6),
            )),
            Coding::Br => {
                Encoder::Br(Box::new(brotli::CompressorWriter::new(Vec::new(), 4096, 4, 22)))
            }
            Coding::Zstd => Encoder::Zstd(
                zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd level 3 is valid"),
            ),
        }
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Br(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Br(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }

    /// The output so far, taken.
    fn take(&mut self) -> Vec<u8> {
        match self {
            Encoder::Gzip(e) => std::mem::take(e.get_mut()),
            Encoder::Br(e) => std::mem::take(e.get_mut()),
            Encoder::Zstd(e) => std::mem::take(e.get_mut()),
        }
    }

    /// Ends the stream: the rest of the output.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Br(e) => Ok(e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
        }
    }

    fn buffered(&self) -> usize {
        match self {
            Encoder::Gzip(e) => e.get_ref().len(),
            Encoder::Br(e) => e.get_ref().len(),
            Encoder::Zstd(e) => e.get_ref().len(),
        }
    }
}

/// A body compressed as it streams (see the module doc).
struct Compressed {
    source: Body,
    /// `None` once finished.
    encoder: Option<Encoder>,
    /// Input went in since the last output.
    fed: bool,
}

fn failed(e: std::io::Error) -> Option<BodyChunk> {
    Some(Err(BodyError::Io(e)))
}

impl Stream for Compressed {
    type Item = BodyChunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BodyChunk>> {
        let this = &mut *self;
        loop {
            let Some(encoder) = this.encoder.as_mut() else { return Poll::Ready(None) };
            if encoder.buffered() >= OUTPUT_CHUNK {
                return Poll::Ready(Some(Ok(Bytes::from(encoder.take()))));
            }
            match this.source.poll_chunk(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Err(e) = encoder.write(&chunk) {
                        return Poll::Ready(failed(e));
                    }
                    this.fed = true;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    let encoder = this.encoder.take().expect("checked above");
                    return Poll::Ready(match encoder.finish() {
                        Ok(rest) if rest.is_empty() => None,
                        Ok(rest) => Some(Ok(Bytes::from(rest))),
                        Err(e) => failed(e),
                    });
                }
                Poll::Pending => {
                    // The source has nothing for now: what was fed goes out rather than
                    // waiting in the encoder.
                    if !std::mem::take(&mut this.fed) {
                        return Poll::Pending;
                    }
                    if let Err(e) = encoder.flush() {
                        return Poll::Ready(failed(e));
                    }
                    let out = encoder.take();
                    if out.is_empty() {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Some(Ok(Bytes::from(out))));
                }
            }
        }
    }
}

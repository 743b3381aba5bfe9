//! From a cached file to a response: which representation (a precompressed sibling or the
//! file itself), the preconditions, the ranges, and the headers.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderValue, Request, Response, StatusCode};

use super::body::{FileBody, Part};
use super::conditional::{evaluate, ranges, Fields, Precondition, Ranges, Validators};
use super::open::FileEntry;
use super::FileRoute;
use crate::content_coding;
use crate::Body;

/// The response for `entry`, as `request` asks for it.
pub(crate) fn file(
    route: &FileRoute,
    request: &Request<Body>,
    entry: &FileEntry,
) -> Response<Body> {
    let headers = request.headers();
    let codings: Vec<_> = entry.codings().collect();
    let chosen = content_coding::choose(headers, &codings);
    let rep = match chosen {
        Some(c) => &entry.variants.iter().find(|(v, _)| *v == c).expect("chosen from these").1,
        None => entry,
    };
    let etag = rep.etag.to_str().unwrap_or("");
    let validators = Validators { etag, modified: rep.modified };
    let fields = Fields::of(headers);
    let mut response = Response::new(Body::empty());
    // Room for every field a file response has: the map never grows.
    *response.headers_mut() = http::HeaderMap::with_capacity(8);
    let h = response.headers_mut();
    h.insert(header::ETAG, rep.etag.clone());
    h.insert(header::LAST_MODIFIED, rep.last_modified.clone());
    if let Some(cc) = &route.cache_control {
        h.insert(header::CACHE_CONTROL, cc.clone());
    }
    if !codings.is_empty() {
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    match evaluate(request.method(), &fields, &validators) {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
        Precondition::Failed => {
            *response.status_mut() = StatusCode::PRECONDITION_FAILED;
            return response;
        }
    }
    let h = response.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(c) = chosen {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(c.token()));
    }
    let len = rep.len;
    let (status, content_type, range, body) =
        match ranges(request.method(), &fields, &validators, len, route.section.max_ranges) {
            Ranges::Full => {
                let all = match &rep.inline {
                    Some(inline) => Body::from(inline.clone()),
                    None => body(rep, vec![Part::Region { offset: 0, len }]),
                };
                (StatusCode::OK, Some(rep.content_type.clone()), None, all)
            }
            Ranges::Unsatisfiable => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                None,
                Some(content_range(None, len)),
                Body::empty(),
            ),
            Ranges::Partial(list) if list.len() == 1 => {
                let (first, last) = list[0];
                let region = Part::Region { offset: first, len: last - first + 1 };
                (
                    StatusCode::PARTIAL_CONTENT,
                    Some(rep.content_type.clone()),
                    Some(content_range(Some((first, last)), len)),
                    body(rep, vec![region]),
                )
            }
            Ranges::Partial(list) => {
                let (content_type, parts) = multipart(rep, &list);
                (StatusCode::PARTIAL_CONTENT, Some(content_type), None, body(rep, parts))
            }
        };
    *response.status_mut() = status;
    let h = response.headers_mut();
    if let Some(v) = content_type {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Some(v) = range {
        h.insert(header::CONTENT_RANGE, v);
    }
    *response.body_mut() = body;
    response
}

/// A `multipart/byteranges` body's content type and parts for `list`.
fn multipart(rep: &FileEntry, list: &[(u64, u64)]) -> (HeaderValue, Vec<Part>) {
    let boundary = boundary();
    let value = format!("multipart/byteranges; boundary={boundary}");
    let mut parts = Vec::with_capacity(list.len() * 2 + 1);
    for (i, &(first, last)) in list.iter().enumerate() {
        let mut head = BytesMut::new();
        if i > 0 {
            head.put_slice(b"\r\n");
        }
        head.put_slice(format!("--{boundary}\r\nContent-Type: ").as_bytes());
        head.put_slice(rep.content_type.as_bytes());
        head.put_slice(b"\r\nContent-Range: ");
        head.put_slice(content_range(Some((first, last)), rep.len).as_bytes());
        head.put_slice(b"\r\n\r\n");
        parts.push(Part::Bytes(head.freeze()));
        parts.push(Part::Region { offset: first, len: last - first + 1 });
    }
    parts.push(Part::Bytes(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
    (HeaderValue::from_str(&value).expect("ASCII"), parts)
}

/// The body of `parts` of `rep`: from memory when the cache holds the file, else from it.
fn body(rep: &FileEntry, parts: Vec<Part>) -> Body {
    let Some(inline) = &rep.inline else {
        return Body::file(FileBody::new(std::sync::Arc::clone(&rep.file), parts));
    };
    if let [Part::Region { offset, len }] = parts[..] {
        return Body::from(inline.slice(offset as usize..(offset + len) as usize));
    }
    let mut out = BytesMut::new();
    for part in parts {
        match part {
            Part::Bytes(b) => out.put_slice(&b),
            Part::Region { offset, len } => {
                out.put_slice(&inline[offset as usize..(offset + len) as usize])
            }
        }
    }
    Body::from(out.freeze())
}

/// `bytes first-last/len`, or `bytes */len` for a 416.
fn content_range(range: Option<(u64, u64)>, len: u64) -> HeaderValue {
    let value = match range {
        Some((first, last)) => format!("bytes {first}-{last}/{len}"),
        None => format!("bytes */{len}"),
    };
    HeaderValue::from_str(&value).expect("digits")
}

/// Multipart responses so far (rare enough that one shared counter costs nothing).
static BOUNDARY_SEQ: AtomicU64 = AtomicU64::new(0);

/// A multipart boundary: a sequence mixed with the clock. It need not be secret,
/// only absent from the parts, which are bytes of the file: 24 hex digits make a collision
/// with file content as unlikely as nginx's 10 decimal ones do.
fn boundary() -> String {
    let seq = BOUNDARY_SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:016x}{:08x}", (seq + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15), nanos)
}

/// `308` to the directory's path with its trailing slash (and the query, kept).
pub(crate) fn to_directory(request: &Request<Body>) -> Response<Body> {
    let uri = request.uri();
    let location = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    let mut r = crate::handler::respond(
        StatusCode::PERMANENT_REDIRECT,
        crate::handler::content_type::TEXT,
        "",
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

//! Conditional and range requests (RFC 9110 §13 and §14) against one representation's
//! validators: pure decisions, no IO.
//!
//! Preconditions are evaluated in the RFC's order (§13.2.2): `If-Match`, else
//! `If-Unmodified-Since` (412 when they fail); `If-None-Match`, else `If-Modified-Since`
//! (304 for GET and HEAD); then `Range`, only for GET, guarded by `If-Range`.
//!
//! Ranges: single or multiple (`multipart/byteranges`). As nginx and Apache do since
//! CVE-2011-3192 (a few bytes of `Range` asking for the same bytes thousands of times), a
//! request with more than `max_ranges` ranges gets the whole representation, and one whose
//! ranges overlap gets `416`. Unsatisfiable ranges get `416` with `Content-Range: bytes */len`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap, HeaderValue, Method};

/// The fields this module reads, found in one pass over a request's headers: cheaper than a
/// hashed lookup per name on the handful of fields a request has, most with none of these.
/// Each is the field's first line, as `HeaderMap::get` would give.
#[derive(Default)]
pub(crate) struct Fields<'a> {
    if_match: Option<&'a HeaderValue>,
    if_none_match: Option<&'a HeaderValue>,
    if_modified_since: Option<&'a HeaderValue>,
    if_unmodified_since: Option<&'a HeaderValue>,
    range: Option<&'a HeaderValue>,
    if_range: Option<&'a HeaderValue>,
}

impl<'a> Fields<'a> {
    /// Finds them in `headers`.
    pub(crate) fn of(headers: &'a HeaderMap) -> Fields<'a> {
        let mut f = Fields::default();
        for (name, value) in headers {
            let slot = match *name {
                header::IF_MATCH => &mut f.if_match,
                header::IF_NONE_MATCH => &mut f.if_none_match,
                header::IF_MODIFIED_SINCE => &mut f.if_modified_since,
                header::IF_UNMODIFIED_SINCE => &mut f.if_unmodified_since,
                header::RANGE => &mut f.range,
                header::IF_RANGE => &mut f.if_range,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        f
    }
}

/// A field's value as text, if it is visible ASCII.
fn text(value: Option<&HeaderValue>) -> Option<&str> {
    value.and_then(|v| v.to_str().ok())
}

/// A representation's validators.
pub(crate) struct Validators<'a> {
    /// The strong entity tag, quoted (`"1a-5f3"`).
    pub(crate) etag: &'a str,
    /// The modification time, truncated to whole seconds (HTTP dates have no more).
    pub(crate) modified: SystemTime,
}

/// What the preconditions decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Precondition {
    /// Go on and answer the request.
    Proceed,
    /// `304 Not Modified`.
    NotModified,
    /// `412 Precondition Failed`.
    Failed,
}

/// Evaluates the request's preconditions (RFC 9110 §13.2.2).
pub(crate) fn evaluate(method: &Method, fields: &Fields<'_>, v: &Validators<'_>) -> Precondition {
    if let Some(if_match) = text(fields.if_match) {
        if !matches_list(if_match, v.etag, true) {
            return Precondition::Failed;
        }
    } else if let Some(date) = http_date(fields.if_unmodified_since) {
        if v.modified > date {
            return Precondition::Failed;
        }
    }
    let safe = method == Method::GET || method == Method::HEAD;
    if let Some(none_match) = text(fields.if_none_match) {
        if matches_list(none_match, v.etag, false) {
            return if safe { Precondition::NotModified } else { Precondition::Failed };
        }
    } else if safe {
        if let Some(date) = http_date(fields.if_modified_since) {
            if v.modified <= date {
                return Precondition::NotModified;
            }
        }
    }
    Precondition::Proceed
}

/// Whether the list of entity tags (or `*`) in an `If-Match`/`If-None-Match` field matches
/// `etag`: by strong comparison (both strong and equal) or weak (equal once `W/` is dropped).
fn matches_list(list: &str, etag: &str, strong: bool) -> bool {
    if list.trim() == "*" {
        return true;
    }
    list.split(',').map(str::trim).any(|tag| match tag.strip_prefix("W/") {
        Some(weak) => !strong && weak == etag,
        None => tag == etag,
    })
}

/// Whether an `If-None-Match` list matches `etag` by weak comparison (the response cache
/// asks this of the responses it stores).
pub(crate) fn weak_match(list: &str, etag: &str) -> bool {
    matches_list(list, etag, false)
}

/// The HTTP-date in a field, if present and valid (an invalid date is ignored, §13.1.3).
fn http_date(value: Option<&HeaderValue>) -> Option<SystemTime> {
    httpdate::parse_http_date(text(value)?).ok()
}

/// `t` truncated to whole seconds (what an HTTP date can carry).
pub(crate) fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// What to do with a request's `Range`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ranges {
    /// Send the whole representation (no `Range`, a malformed one, one `If-Range` rejects,
    /// or too many ranges).
    Full,
    /// Send these ranges (start, inclusive end), in the order asked.
    Partial(Vec<(u64, u64)>),
    /// `416 Range Not Satisfiable`.
    Unsatisfiable,
}

/// Decides a GET's `Range` against a representation of `len` bytes.
pub(crate) fn ranges(
    method: &Method,
    fields: &Fields<'_>,
    v: &Validators<'_>,
    len: u64,
    max_ranges: usize,
) -> Ranges {
    if method != Method::GET {
        return Ranges::Full;
    }
    let Some(range) = text(fields.range) else {
        return Ranges::Full;
    };
    if let Some(if_range) = text(fields.if_range) {
        let current = if if_range.starts_with('"') || if_range.starts_with("W/") {
            // Only a strong tag can validate a range (§13.1.5).
            if_range == v.etag
        } else {
            httpdate::parse_http_date(if_range).is_ok_and(|d| d == v.modified)
        };
        if !current {
            return Ranges::Full;
        }
    }
    let Some(specs) = parse_range(range) else { return Ranges::Full };
    if specs.len() > max_ranges {
        return Ranges::Full;
    }
    let satisfiable: Vec<(u64, u64)> = specs
        .into_iter()
        .filter_map(|spec| match spec {
            Spec::From(first, last) if first < len => Some((first, last.unwrap_or(u64::MAX))),
            Spec::Suffix(n) if n > 0 && len > 0 => Some((len - n.min(len), len - 1)),
            _ => None,
        })
        .map(|(first, last)| (first, last.min(len - 1)))
        .collect();
    if satisfiable.is_empty() {
        return Ranges::Unsatisfiable;
    }
    let mut sorted = satisfiable.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[1].0 <= w[0].1) {
        return Ranges::Unsatisfiable;
    }
    Ranges::Partial(satisfiable)
}

/// One range spec of a `bytes=` range.
enum Spec {
    /// `first-` or `first-last`.
    From(u64, Option<u64>),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// Parses `bytes=spec, spec`; `None` when malformed or not in bytes (then ignored, §14.2).
fn parse_range(value: &str) -> Option<Vec<Spec>> {
    let (unit, set) = value.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    for spec in set.split(',') {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        let (first, last) = spec.split_once('-')?;
        let number = |s: &str| -> Option<u64> {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
        };
        specs.push(match (first.trim(), last.trim()) {
            ("", n) => Spec::Suffix(number(n)?),
            (f, "") => Spec::From(number(f)?, None),
            (f, l) => {
                let (f, l) = (number(f)?, number(l)?);
                if l < f {
                    return None;
                }
                Spec::From(f, Some(l))
            }
        });
    }
    (!specs.is_empty()).then_some(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "\"abc\"";

    fn v() -> Validators<'static> {
        Validators { etag: TAG, modified: UNIX_EPOCH + Duration::from_secs(1_700_000_000) }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, val) in pairs {
            h.append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), val.parse().unwrap());
        }
        h
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn preconditions_follow_the_rfc_order() {
        let get = Method::GET;
        let pre = |h: &[(&str, &str)]| evaluate(&get, &Fields::of(&headers(h)), &v());
        assert_eq!(pre(&[]), Precondition::Proceed);
        assert_eq!(pre(&[("if-none-match", TAG)]), Precondition::NotModified);
        assert_eq!(pre(&[("if-none-match", "W/\"abc\"")]), Precondition::NotModified);
        assert_eq!(pre(&[("if-none-match", "\"x\", \"abc\"")]), Precondition::NotModified);
        assert_eq!(pre(&[("if-none-match", "*")]), Precondition::NotModified);
        assert_eq!(pre(&[("if-none-match", "\"x\"")]), Precondition::Proceed);
        assert_eq!(pre(&[("if-match", "\"x\"")]), Precondition::Failed);
        assert_eq!(pre(&[("if-match", "W/\"abc\"")]), Precondition::Failed);
        assert_eq!(pre(&[("if-match", TAG)]), Precondition::Proceed);
        assert_eq!(pre(&[("if-match", "*")]), Precondition::Proceed);
        let (older, newer) = (date(1_600_000_000), date(1_800_000_000));
        assert_eq!(pre(&[("if-modified-since", &newer)]), Precondition::NotModified);
        assert_eq!(pre(&[("if-modified-since", &date(1_700_000_000))]), Precondition::NotModified);
        assert_eq!(pre(&[("if-modified-since", &older)]), Precondition::Proceed);
        assert_eq!(pre(&[("if-modified-since", "yesterday")]), Precondition::Proceed);
        assert_eq!(pre(&[("if-unmodified-since", &older)]), Precondition::Failed);
        assert_eq!(pre(&[("if-unmodified-since", &newer)]), Precondition::Proceed);
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            pre(&[("if-none-match", "\"x\""), ("if-modified-since", &newer)]),
            Precondition::Proceed
        );
        // If-Match wins over If-Unmodified-Since.
        assert_eq!(
            pre(&[("if-match", TAG), ("if-unmodified-since", &older)]),
            Precondition::Proceed
        );
        // A non-safe method gets 412 where GET would get 304.
        let h = headers(&[("if-none-match", TAG)]);
        let put = evaluate(&Method::PUT, &Fields::of(&h), &v());
        assert_eq!(put, Precondition::Failed);
    }

    fn range(h: &[(&str, &str)], len: u64) -> Ranges {
        ranges(&Method::GET, &Fields::of(&headers(h)), &v(), len, 4)
    }

    #[test]
    fn ranges_single_multiple_and_refused() {
        assert_eq!(range(&[], 100), Ranges::Full);
        assert_eq!(range(&[("range", "bytes=0-9")], 100), Ranges::Partial(vec![(0, 9)]));
        assert_eq!(range(&[("range", "bytes=90-")], 100), Ranges::Partial(vec![(90, 99)]));
        assert_eq!(range(&[("range", "bytes=-10")], 100), Ranges::Partial(vec![(90, 99)]));
        assert_eq!(range(&[("range", "bytes=-1000")], 100), Ranges::Partial(vec![(0, 99)]));
        assert_eq!(range(&[("range", "bytes=50-5000")], 100), Ranges::Partial(vec![(50, 99)]));
        assert_eq!(
            range(&[("range", "bytes=0-1, 10-19")], 100),
            Ranges::Partial(vec![(0, 1), (10, 19)])
        );
        assert_eq!(range(&[("range", "bytes=100-")], 100), Ranges::Unsatisfiable);
        assert_eq!(range(&[("range", "bytes=-0")], 100), Ranges::Unsatisfiable);
        assert_eq!(range(&[("range", "bytes=0-0")], 0), Ranges::Unsatisfiable);
        // Unsatisfiable ranges are dropped when another one is satisfiable.
        assert_eq!(range(&[("range", "bytes=200-300, 0-0")], 100), Ranges::Partial(vec![(0, 0)]));
        // Overlapping ranges are refused; too many get the whole file; bad syntax is ignored.
        assert_eq!(range(&[("range", "bytes=0-10, 5-20")], 100), Ranges::Unsatisfiable);
        assert_eq!(range(&[("range", "bytes=0-0,0-0")], 100), Ranges::Unsatisfiable);
        assert_eq!(range(&[("range", "bytes=0-1,3-4,6-7,9-10,12-13")], 100), Ranges::Full);
        assert_eq!(range(&[("range", "bytes=5-1")], 100), Ranges::Full);
        assert_eq!(range(&[("range", "items=0-1")], 100), Ranges::Full);
        assert_eq!(range(&[("range", "bytes=a-b")], 100), Ranges::Full);
        // HEAD and other methods ignore Range.
        let h = headers(&[("range", "bytes=0-1")]);
        let head = ranges(&Method::HEAD, &Fields::of(&h), &v(), 100, 4);
        assert_eq!(head, Ranges::Full);
    }

    #[test]
    fn if_range_needs_the_current_strong_validator() {
        let r = ("range", "bytes=0-1");
        assert_eq!(range(&[r, ("if-range", TAG)], 100), Ranges::Partial(vec![(0, 1)]));
        assert_eq!(range(&[r, ("if-range", "\"old\"")], 100), Ranges::Full);
        assert_eq!(range(&[r, ("if-range", "W/\"abc\"")], 100), Ranges::Full);
        let now = date(1_700_000_000);
        assert_eq!(range(&[r, ("if-range", &now)], 100), Ranges::Partial(vec![(0, 1)]));
        assert_eq!(range(&[r, ("if-range", &date(1_600_000_000))], 100), Ranges::Full);
    }
}

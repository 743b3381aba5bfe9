//! What may be cached and for how long: the RFC 9111 subset a shared cache in front of an
//! app needs. Pure decisions on heads; no IO.
//!
//! - Only GET and HEAD are looked up (HEAD is answered from GET's entry); a request with
//!   `Range` or `Upgrade`, or `Cache-Control: no-store`, bypasses the cache; `no-cache` (or
//!   `Pragma: no-cache`) skips the lookup and refreshes the entry.
//! - A response is stored when its status is one of the configured ones and it carries no
//!   `Set-Cookie`, no `Vary: *`, no `no-store`, `private` or `no-cache`; a response to a
//!   request with `Authorization` only when it says `public`, `s-maxage` or
//!   `must-revalidate` (§3.5).
//! - Its freshness lifetime (§4.2.1): `s-maxage`, else `max-age`, else `Expires` minus
//!   `Date`, else the configured default (none: not stored).

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, Method, StatusCode};

use crate::handler::Head;

/// How to treat a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Not cacheable: straight through.
    Bypass,
    /// Look it up (`refresh`: skip the lookup, fetch and store anew; `conditional`: the
    /// request carries `If-None-Match` or `If-Modified-Since`).
    Cache { refresh: bool, conditional: bool },
}

/// The request's treatment, from its head (built into a `Request` or not).
pub(crate) fn request(head: &Head<'_>) -> Lookup {
    let method = head.method();
    if method != Method::GET && method != Method::HEAD {
        return Lookup::Bypass;
    }
    // One pass over the fields (a request has few; four lookups cost more).
    let (mut bypass, mut directives_given, mut conditional) = (false, false, false);
    head.each_name(|name| {
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        bypass |= is("range") || is("upgrade");
        directives_given |= is("cache-control") || is("pragma");
        conditional |= is("if-none-match") || is("if-modified-since");
    });
    if bypass {
        return Lookup::Bypass;
    }
    // Most requests say nothing about caching: no directive to parse.
    if !directives_given {
        return Lookup::Cache { refresh: false, conditional };
    }
    let mut values = Vec::new();
    head.each_value("cache-control", |v| values.push(v));
    let cc = directives(values.into_iter());
    if has(&cc, "no-store") {
        return Lookup::Bypass;
    }
    let mut pragma_no_cache = false;
    head.each_value("pragma", |v| {
        pragma_no_cache |= v.to_ascii_lowercase().windows(8).any(|w| w == b"no-cache");
    });
    let refresh = has(&cc, "no-cache") || (cc.is_empty() && pragma_no_cache);
    Lookup::Cache { refresh, conditional }
}

/// What the store needs to know beyond the response itself.
pub(crate) struct Rules<'a> {
    pub(crate) statuses: &'a [u16],
    pub(crate) default_ttl: Option<Duration>,
    /// The request carried `Authorization`.
    pub(crate) authorized: bool,
}

/// How long the response may be served from the cache; `None`: not stored.
pub(crate) fn freshness(
    status: StatusCode,
    headers: &HeaderMap,
    rules: &Rules<'_>,
    now: SystemTime,
) -> Option<Duration> {
    if !rules.statuses.contains(&status.as_u16()) || headers.contains_key(header::SET_COOKIE) {
        return None;
    }
    let vary_any = headers
        .get_all(header::VARY)
        .iter()
        .any(|v| v.to_str().map_or(true, |v| v.split(',').any(|f| f.trim() == "*")));
    if vary_any {
        return None;
    }
    let cc = directives(headers.get_all(header::CACHE_CONTROL).iter().map(|v| v.as_bytes()));
    if has(&cc, "no-store") || has(&cc, "private") || has(&cc, "no-cache") {
        return None;
    }
    if rules.authorized
        && !(has(&cc, "public") || has(&cc, "s-maxage") || has(&cc, "must-revalidate"))
    {
        return None;
    }
    let seconds = |name: &str| -> Option<Duration> {
        let (_, v) = cc.iter().find(|(k, _)| k == name)?;
        delta_seconds(v.as_deref()?)
    };
    let lifetime = seconds("s-maxage").or_else(|| seconds("max-age")).or_else(|| {
        let expires = date(headers, header::EXPIRES)?;
        let base = date(headers, header::DATE).unwrap_or(now);
        Some(expires.duration_since(base).unwrap_or(Duration::ZERO))
    });
    let lifetime = match lifetime {
        Some(l) => l,
        // `Expires` present but not a valid date means already expired (§5.3).
        None if headers.contains_key(header::EXPIRES) => Duration::ZERO,
        None => rules.default_ttl?,
    };
    (!lifetime.is_zero()).then_some(lifetime.min(MAX_DELTA))
}

/// The age the response already had when it arrived (its `Age` field).
pub(crate) fn initial_age(headers: &HeaderMap) -> Duration {
    headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| delta_seconds(v.trim()))
        .unwrap_or(Duration::ZERO)
}

/// The largest delta-seconds a cache need represent (RFC 9111 §1.2.2): larger values, and
/// lifetimes from far-off `Expires` dates, count as this, so clock arithmetic on them
/// cannot overflow.
pub(crate) const MAX_DELTA: Duration = Duration::from_secs(1 << 31);

/// A delta-seconds value (`1*DIGIT`), at most [`MAX_DELTA`].
fn delta_seconds(v: &str) -> Option<Duration> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits: parsing fails only on a value too large for u64, which counts as the cap.
    let n = v.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(n).min(MAX_DELTA))
}

fn date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    httpdate::parse_http_date(headers.get(name)?.to_str().ok()?).ok()
}

/// The directives of `Cache-Control` values: lowercased names with their (unquoted) values.
fn directives<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for value in values {
        let Ok(value) = std::str::from_utf8(value) else { continue };
        for item in value.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (name, arg) = match item.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"').to_string())),
                None => (item, None),
            };
            out.push((name.to_ascii_lowercase(), arg));
        }
    }
    out
}

fn has(cc: &[(String, Option<String>)], name: &str) -> bool {
    cc.iter().any(|(k, _)| k == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        m
    }

    const RULES: Rules<'static> =
        Rules { statuses: &[200, 301, 404], default_ttl: None, authorized: false };

    fn fresh(status: u16, pairs: &[(&str, &str)]) -> Option<u64> {
        let s = StatusCode::from_u16(status).unwrap();
        freshness(s, &h(pairs), &RULES, SystemTime::now()).map(|d| d.as_secs())
    }

    /// The treatment of a request with `method` and the fields `headers`.
    fn req(method: Method, headers: &HeaderMap) -> Lookup {
        let uri = http::Uri::from_static("/");
        let fields = crate::handler::Fields::Map(headers);
        request(&Head::new(&method, &uri, http::Version::HTTP_11, fields))
    }

    #[test]
    fn requests() {
        let plain = Lookup::Cache { refresh: false, conditional: false };
        assert_eq!(req(Method::GET, &h(&[])), plain);
        assert_eq!(req(Method::HEAD, &h(&[])), plain);
        let conditional = Lookup::Cache { refresh: false, conditional: true };
        assert_eq!(req(Method::GET, &h(&[("if-none-match", "\"a\"")])), conditional);
        assert_eq!(req(Method::POST, &h(&[])), Lookup::Bypass);
        assert_eq!(req(Method::GET, &h(&[("range", "bytes=0-1")])), Lookup::Bypass);
        assert_eq!(req(Method::GET, &h(&[("cache-control", "no-store")])), Lookup::Bypass);
        let refresh = Lookup::Cache { refresh: true, conditional: false };
        assert_eq!(req(Method::GET, &h(&[("cache-control", "no-cache")])), refresh);
        assert_eq!(req(Method::GET, &h(&[("pragma", "no-cache")])), refresh);
    }

    #[test]
    fn responses() {
        assert_eq!(fresh(200, &[("cache-control", "max-age=60")]), Some(60));
        assert_eq!(fresh(200, &[("cache-control", "public, max-age=60, s-maxage=5")]), Some(5));
        assert_eq!(fresh(200, &[("cache-control", "max-age=\"30\"")]), Some(30));
        assert_eq!(fresh(200, &[]), None, "no freshness and no default: not stored");
        assert_eq!(fresh(200, &[("cache-control", "max-age=0")]), None);
        assert_eq!(fresh(500, &[("cache-control", "max-age=60")]), None);
        assert_eq!(fresh(404, &[("cache-control", "max-age=60")]), Some(60));
        for cc in ["no-store", "private", "no-cache", "private, max-age=60", "no-store, max-age=5"]
        {
            assert_eq!(fresh(200, &[("cache-control", cc)]), None, "{cc}");
        }
        assert_eq!(fresh(200, &[("cache-control", "max-age=60"), ("set-cookie", "a=b")]), None);
        assert_eq!(fresh(200, &[("cache-control", "max-age=60"), ("vary", "*")]), None);
        assert_eq!(
            fresh(200, &[("cache-control", "max-age=60"), ("vary", "accept-encoding")]),
            Some(60)
        );
        let now = SystemTime::now();
        let date = httpdate::fmt_http_date(now);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        assert_eq!(fresh(200, &[("date", &date), ("expires", &later)]), Some(120));
        assert_eq!(fresh(200, &[("expires", "0")]), None);
        let with_default = Rules { default_ttl: Some(Duration::from_secs(9)), ..RULES };
        let d = freshness(StatusCode::OK, &h(&[]), &with_default, now).unwrap();
        assert_eq!(d.as_secs(), 9);
    }

    #[test]
    fn huge_delta_seconds_count_as_two_to_the_31st() {
        let cap = Some(1u64 << 31);
        assert_eq!(fresh(200, &[("cache-control", "max-age=18446744073709551615")]), cap);
        assert_eq!(fresh(200, &[("cache-control", "s-maxage=99999999999999999999999")]), cap);
        assert_eq!(fresh(200, &[("cache-control", "max-age=-5")]), None);
        assert_eq!(fresh(200, &[("cache-control", "max-age=")]), None);
        assert_eq!(fresh(200, &[("expires", "Fri, 31 Dec 9999 23:59:59 GMT")]), cap);
        assert_eq!(initial_age(&h(&[("age", "99999999999999999999999")])).as_secs(), 1 << 31);
        assert_eq!(initial_age(&h(&[("age", "+3")])), Duration::ZERO);
    }

    #[test]
    fn authorized_requests_need_an_explicit_public_response() {
        let auth = Rules { authorized: true, ..RULES };
        let f = |cc: &str| {
            freshness(StatusCode::OK, &h(&[("cache-control", cc)]), &auth, SystemTime::now())
        };
        assert_eq!(f("max-age=60"), None);
        assert!(f("public, max-age=60").is_some());
        assert!(f("s-maxage=60").is_some());
    }
}

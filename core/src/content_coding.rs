//! Content codings (RFC 9110 §8.4.1) and choosing one from a request's `Accept-Encoding`
//! (§12.5.3): for precompressed files, and for compressing on the fly.

use http::HeaderMap;
use serde::Deserialize;

/// A content coding Peregrine can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Coding {
    /// Brotli (`br`).
    Br,
    /// Zstandard (`zstd`).
    Zstd,
    /// gzip (`gzip`).
    Gzip,
}

impl Coding {
    /// The coding's token in `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    /// The file name extension of a precompressed sibling (`app.js.br`).
    pub fn extension(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zst",
            Coding::Gzip => "gz",
        }
    }

    /// Every coding, in the server's order of preference (smallest output first).
    pub const ALL: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];
}

/// The client's weight (0 to 1000) for `token` in an `Accept-Encoding` list: its own entry,
/// else `*`'s, else none (`None`: not acceptable unless it is identity).
fn weight(fields: &[(String, u16)], token: &str) -> Option<u16> {
    let own = fields.iter().find(|(t, _)| t == token || (token == "gzip" && t == "x-gzip"));
    own.or_else(|| fields.iter().find(|(t, _)| t == "*")).map(|(_, q)| *q)
}

/// Parses `Accept-Encoding` into (lowercase coding, weight in thousandths) pairs; malformed
/// weights count as 0 (not acceptable), as a strict reading of the grammar would refuse them.
fn parse(headers: &HeaderMap) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for value in headers.get_all(http::header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if token.is_empty() {
                continue;
            }
            let mut q = 1000;
            for param in parts {
                if let Some((k, v)) = param.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        q = parse_qvalue(v.trim()).unwrap_or(0);
                    }
                }
            }
            out.push((token, q));
        }
    }
    out
}

/// A `qvalue` (`0`, `0.5`, `1.000`) in thousandths.
fn parse_qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = frac.parse::<u16>().unwrap_or(0);
    for _ in frac.len()..3 {
        thousandths *= 10;
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The coding to answer with, from those `available` (in the server's preference order):
/// the one the client weighs highest (ties go to the server's order), or `None` for the
/// identity coding (also when the client sent no `Accept-Encoding`).
pub fn choose(headers: &HeaderMap, available: &[Coding]) -> Option<Coding> {
    if available.is_empty() || !headers.contains_key(http::header::ACCEPT_ENCODING) {
        return None;
    }
    let fields = parse(headers);
    let mut best: Option<(Coding, u16)> = None;
    for &coding in available {
        let q = weight(&fields, coding.token()).unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((coding, q));
        }
    }
    best.map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(accept: &str, available: &[Coding]) -> Option<Coding> {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT_ENCODING, accept.parse().unwrap());
        choose(&h, available)
    }

    #[test]
    fn picks_by_weight_then_server_order() {
        let all = &Coding::ALL;
        assert_eq!(pick("gzip, deflate, br, zstd", all), Some(Coding::Br));
        assert_eq!(pick("gzip;q=1, br;q=0.5", all), Some(Coding::Gzip));
        assert_eq!(pick("br;q=0, gzip", all), Some(Coding::Gzip));
        assert_eq!(pick("*", all), Some(Coding::Br));
        assert_eq!(pick("*;q=0, identity", all), None);
        assert_eq!(pick("identity", all), None);
        assert_eq!(pick("x-gzip", all), Some(Coding::Gzip));
        assert_eq!(pick("gzip;q=0.001", &[Coding::Gzip]), Some(Coding::Gzip));
        assert_eq!(pick("gzip;q=2", all), None);
        assert_eq!(pick("br", &[Coding::Gzip]), None);
        assert_eq!(choose(&HeaderMap::new(), all), None);
    }
}

//! Driving `h2load` (nghttp2) and parsing what it prints.
//!
//! h2load has no machine-readable summary; its report is a handful of fixed
//! lines (`finished in`, `requests:`, `status codes:`, `time for request:`).
//! What it gives for latency is min / max / mean / standard deviation of the
//! request time, not percentiles. Its `--log-file` would give per-request times
//! to compute percentiles from, but writing it cost h2load about a fifth of its
//! throughput here (one line per request), which would change the load being
//! measured; so the harness reports what the summary gives and says so.
//!
//! h2load exits 0 even when nothing succeeded (a server that does not speak
//! h2c, a refused connection), so the parser's counts decide: a run that
//! completed no request is an error, a run with failed requests or non-2xx
//! statuses is recorded with its error count.

/// Request-time statistics from h2load's `time for request:` row, in
/// microseconds. h2load measures from sending a request's HEADERS to its
/// last byte.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RequestTime {
    /// Fastest request.
    pub min_us: f64,
    /// Slowest request.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Standard deviation.
    pub sd_us: f64,
}

/// The numbers the harness takes from one h2load run.
#[derive(Debug, Clone, PartialEq)]
pub struct H2loadStats {
    /// `finished in T` — the measured duration, in seconds.
    pub elapsed_s: f64,
    /// `..., N req/s` on the `finished` line.
    pub requests_per_sec: f64,
    /// `requests: … N done`: requests that got a complete response.
    pub done: u64,
    /// `… N succeeded`: 2xx and 3xx responses.
    pub succeeded: u64,
    /// `… N failed`: every request that did not succeed, non-2xx/3xx
    /// responses included (`errored` and `timeout` are subsets of it).
    pub failed: u64,
    /// `status codes:` 2xx, 3xx, 4xx, 5xx counts.
    pub status: [u64; 4],
    /// `time for request:` min/max/mean/sd; `None` when no request finished
    /// (h2load then prints zeros, which are not measurements).
    pub request_time: Option<RequestTime>,
    /// `Application protocol:` (`h2c`, `h2`, `http/1.1`), if printed.
    pub protocol: Option<String>,
}

impl H2loadStats {
    /// Failed requests plus 3xx answers: `GET /plaintext` must answer 200,
    /// though h2load counts a 3xx as a success.
    pub fn errors(&self) -> u64 {
        self.failed + self.status[1]
    }
}

/// Converts an h2load duration such as `315us`, `1.55ms`, `2.00s` or `1.5m`
/// to microseconds.
pub fn parse_time_us(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    // Rounded to nanoseconds so `2.03ms` is 2030 us, not 2029.9999999999998.
    (value.is_finite() && value >= 0.0).then(|| (value * scale * 1e3).round() / 1e3)
}

/// Parses h2load's report. Errors name the first required line that is
/// missing or malformed.
pub fn parse_output(output: &str) -> Result<H2loadStats, String> {
    let mut finished = None;
    let mut requests = None;
    let mut status = None;
    let mut request_time = None;
    let mut protocol = None;
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            finished = Some(parse_finished(rest).ok_or_else(|| bad("finished", line))?);
        } else if let Some(rest) = line.strip_prefix("requests:") {
            requests = Some(parse_counts(rest, "total").ok_or_else(|| bad("requests", line))?);
        } else if let Some(rest) = line.strip_prefix("status codes:") {
            status = Some(parse_counts(rest, "2xx").ok_or_else(|| bad("status codes", line))?);
        } else if let Some(rest) = line.strip_prefix("time for request:") {
            request_time = Some(parse_time_row(rest).ok_or_else(|| bad("time for request", line))?);
        } else if let Some(rest) = line.strip_prefix("Application protocol:") {
            protocol = Some(rest.trim().to_owned());
        }
    }
    let (elapsed_s, requests_per_sec) = finished.ok_or("no `finished in` line in h2load output")?;
    let requests = requests.ok_or("no `requests:` line in h2load output")?;
    let status = status.ok_or("no `status codes:` line in h2load output")?;
    let field = |counts: &[(String, u64)], name: &str| {
        counts
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, v)| v)
            .ok_or_else(|| format!("h2load printed no `{name}` count"))
    };
    let done = field(&requests, "done")?;
    Ok(H2loadStats {
        elapsed_s,
        requests_per_sec,
        done,
        succeeded: field(&requests, "succeeded")?,
        failed: field(&requests, "failed")?,
        status: [
            field(&status, "2xx")?,
            field(&status, "3xx")?,
            field(&status, "4xx")?,
            field(&status, "5xx")?,
        ],
        request_time: request_time.filter(|_| done > 0),
        protocol,
    })
}

fn bad(what: &str, line: &str) -> String {
    format!("bad h2load `{what}` line: {line:?}")
}

/// `2.00s, 264855.00 req/s, 10.36MB/s` → (2.0, 264855.0).
fn parse_finished(rest: &str) -> Option<(f64, f64)> {
    let mut parts = rest.split(',').map(str::trim);
    let elapsed = parse_time_us(parts.next()?)? / 1e6;
    let rate = parts.next()?.strip_suffix(" req/s")?.parse::<f64>().ok()?;
    rate.is_finite().then_some((elapsed, rate))
}

/// ` 529710 total, 529870 started, …` → [("total", 529710), ("started", …), …].
/// The first name must be `first`, so a reworded line fails rather than
/// parsing into the wrong fields.
fn parse_counts(rest: &str, first: &str) -> Option<Vec<(String, u64)>> {
    let counts: Vec<(String, u64)> = rest
        .split(',')
        .map(|part| {
            let (count, name) = part.trim().split_once(' ')?;
            Some((name.trim().to_owned(), count.parse().ok()?))
        })
        .collect::<Option<_>>()?;
    (counts.first()?.0 == first).then_some(counts)
}

/// `   90us   2.03ms   315us   86us   79.13%` (min, max, mean, sd, ±sd share).
fn parse_time_row(rest: &str) -> Option<RequestTime> {
    let cells: Vec<&str> = rest.split_whitespace().collect();
    let [min, max, mean, sd, _share] = cells[..] else { return None };
    Some(RequestTime {
        min_us: parse_time_us(min)?,
        max_us: parse_time_us(max)?,
        mean_us: parse_time_us(mean)?,
        sd_us: parse_time_us(sd)?,
    })
}

/// Arguments for one timed `h2load` run (everything after the program name).
///
/// One thread (`-t1`): h2load gets one core, like wrk. `-D` bounds the run in
/// time. For an `http://` URL h2load speaks h2c with prior knowledge (its
/// default `--no-tls-proto=h2c`); for `https://` it offers ALPN `h2` first.
pub fn args(url: &str, connections: u32, streams: u32, duration_s: u64) -> Vec<String> {
    vec![
        "-t1".to_owned(),
        format!("-c{connections}"),
        format!("-m{streams}"),
        "-D".to_owned(),
        duration_s.to_string(),
        url.to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real h2load 1.52.0 output (progress lines removed), loopback, 2 cores:
    // h2o 2.2.5 over h2c and TLS; Peregrine before HTTP/2 (it answers the h2c
    // preface as a bad HTTP/1 request); h2o on a path it does not serve; a
    // port nobody listens on.
    const H2C: &str = include_str!("../fixtures/h2load_h2c_c16_m10.txt");
    const TLS: &str = include_str!("../fixtures/h2load_tls_c64_m100.txt");
    const NO_H2: &str = include_str!("../fixtures/h2load_no_h2.txt");
    const NOT_FOUND: &str = include_str!("../fixtures/h2load_404.txt");
    const REFUSED: &str = include_str!("../fixtures/h2load_refused.txt");

    #[test]
    fn parses_h2c_run() {
        let s = parse_output(H2C).unwrap();
        assert_eq!(s.elapsed_s, 2.0);
        assert_eq!(s.requests_per_sec, 264_855.0);
        assert_eq!((s.done, s.succeeded, s.failed), (529_710, 529_710, 0));
        assert_eq!(s.status, [529_710, 0, 0, 0]);
        assert_eq!(s.errors(), 0);
        assert_eq!(s.protocol.as_deref(), Some("h2c"));
        assert_eq!(
            s.request_time,
            Some(RequestTime { min_us: 90.0, max_us: 2030.0, mean_us: 315.0, sd_us: 86.0 })
        );
    }

    #[test]
    fn parses_tls_run() {
        let s = parse_output(TLS).unwrap();
        assert_eq!(s.elapsed_s, 2.03);
        assert_eq!(s.requests_per_sec, 140_650.0);
        assert_eq!(s.done, 281_300);
        assert_eq!(s.protocol.as_deref(), Some("h2"));
        let t = s.request_time.unwrap();
        assert_eq!((t.min_us, t.mean_us), (13_640.0, 21_650.0));
    }

    #[test]
    fn nothing_done_has_no_request_time() {
        let s = parse_output(NO_H2).unwrap();
        assert_eq!((s.done, s.succeeded, s.failed), (0, 0, 0));
        assert_eq!(s.request_time, None);
        assert_eq!(s.protocol.as_deref(), Some("h2c"));
        let s = parse_output(REFUSED).unwrap();
        assert_eq!(s.done, 0);
        assert_eq!(s.protocol, None);
    }

    #[test]
    fn non_2xx_are_errors() {
        let s = parse_output(NOT_FOUND).unwrap();
        assert_eq!((s.succeeded, s.failed), (0, 82_230));
        assert_eq!(s.status, [0, 0, 82_230, 0]);
        assert_eq!(s.errors(), 82_230);
        let redirected = H2C.replace("529710 2xx, 0 3xx", "529700 2xx, 10 3xx");
        assert_eq!(parse_output(&redirected).unwrap().errors(), 10);
    }

    #[test]
    fn missing_or_garbled_lines_are_errors() {
        assert!(parse_output("").is_err());
        let no_status: String =
            H2C.lines().filter(|l| !l.starts_with("status codes")).collect::<Vec<_>>().join("\n");
        assert!(parse_output(&no_status).unwrap_err().contains("status codes"));
        assert!(parse_output(&H2C.replace("529710 done", "x done")).is_err());
        assert!(parse_output(&H2C.replace("264855.00 req/s", "fast")).is_err());
        assert!(parse_output(&H2C.replace("315us", "315furlongs")).is_err());
        assert!(parse_output(&H2C.replace(" 529710 done,", "")).unwrap_err().contains("done"));
    }

    #[test]
    fn time_units() {
        assert_eq!(parse_time_us("315us"), Some(315.0));
        assert_eq!(parse_time_us("2.03ms"), Some(2030.0));
        assert_eq!(parse_time_us("2.00s"), Some(2_000_000.0));
        assert_eq!(parse_time_us("1.5m"), Some(90_000_000.0));
        assert_eq!(parse_time_us("-1us"), None);
        assert_eq!(parse_time_us("12"), None);
    }

    #[test]
    fn command_line() {
        assert_eq!(
            args("https://127.0.0.1:8443/plaintext", 64, 100, 9),
            ["-t1", "-c64", "-m100", "-D", "9", "https://127.0.0.1:8443/plaintext"]
        );
    }
}

//! Driving `wrk` and parsing what it prints.
//!
//! Only `wrk` 4.x's human-readable output is available (it has no
//! machine-readable mode without a Lua `done` hook), so the parser reads the
//! handful of lines the harness needs and fails loudly if they are missing
//! rather than reporting zeros.

use std::path::Path;

/// Socket-level errors as reported on wrk's `Socket errors:` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketErrors {
    /// Failed connects.
    pub connect: u64,
    /// Failed reads, including the server closing a connection wrk expected to stay open.
    pub read: u64,
    /// Failed writes.
    pub write: u64,
    /// Requests that saw no response within wrk's `--timeout` (2 s by default).
    pub timeout: u64,
}

impl SocketErrors {
    /// All socket errors together.
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }
}

/// The numbers the harness takes from one `wrk --latency` run.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkStats {
    /// `Requests/sec:` — completed responses per second of wall time.
    pub requests_per_sec: f64,
    /// Completed responses (`N requests in ...`); with pipelining, every
    /// response counts, not every batch.
    pub total_requests: u64,
    /// Run length wrk measured (`... in 3.00s`), in seconds.
    pub elapsed_s: f64,
    /// The `Socket errors:` line; all zero when wrk omits it (no errors).
    pub socket_errors: SocketErrors,
    /// `Non-2xx or 3xx responses:`; zero when wrk omits the line.
    pub non_2xx_3xx: u64,
    /// 99th percentile latency in microseconds, from the `Latency
    /// Distribution` block. With a pipelining script wrk samples one latency
    /// per batch, so this is the time to the batch's last response.
    ///
    /// `None` when wrk printed an impossible value: wrk 4.1's
    /// coordinated-omission correction can add samples below the recorded
    /// minimum, and its percentile scan then falls off the end and prints
    /// `0.00us` (wg/wrk#354). Seen here with pipelining, where the correction
    /// interval is per response but samples are per batch.
    pub p99_us: Option<f64>,
}

impl WrkStats {
    /// Socket errors plus non-2xx/3xx responses: anything that is not a
    /// successful, timely response.
    pub fn errors(&self) -> u64 {
        self.socket_errors.total() + self.non_2xx_3xx
    }
}

/// Converts a wrk time such as `644.00us`, `1.17ms`, `2.00s` or `1.50m` to
/// microseconds.
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
    (value.is_finite() && value >= 0.0).then_some(value * scale)
}

/// Parses the output of `wrk --latency`.
///
/// Errors name the first required line that is missing or malformed, so a
/// crashed or misconfigured wrk does not turn into a row of zeros.
pub fn parse_output(output: &str) -> Result<WrkStats, String> {
    let mut requests_per_sec = None;
    let mut totals = None;
    let mut socket_errors = SocketErrors::default();
    let mut non_2xx_3xx = 0;
    let mut percentiles: Vec<(f64, f64)> = Vec::new();
    let mut in_distribution = false;

    for line in output.lines() {
        let line = line.trim();
        if line == "Latency Distribution" {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            // The block is four `NN%  TIME` lines; anything else ends it.
            // Scoping matters: the "Thread Stats" rows also contain `%`.
            match line.split_once('%') {
                Some((pct, time)) if pct.parse::<f64>().is_ok() => {
                    let us = parse_time_us(time)
                        .ok_or_else(|| format!("bad latency percentile line: {line:?}"))?;
                    percentiles.push((pct.parse().unwrap_or_default(), us));
                    continue;
                }
                _ => in_distribution = false,
            }
        }
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            requests_per_sec = Some(
                rest.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("bad Requests/sec line: {line:?}"))?,
            );
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            socket_errors = parse_socket_errors(rest)
                .ok_or_else(|| format!("bad Socket errors line: {line:?}"))?;
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx_3xx = rest.trim().parse().map_err(|_| format!("bad Non-2xx line: {line:?}"))?;
        } else if line.contains(" requests in ") {
            totals = Some(parse_totals(line).ok_or_else(|| format!("bad totals line: {line:?}"))?);
        }
    }

    let (total_requests, elapsed_s) = totals.ok_or("no `N requests in T` line in wrk output")?;
    let p99_us = percentiles
        .iter()
        .find(|(pct, _)| *pct == 99.0)
        .map(|&(_, us)| us)
        .ok_or("no 99% line in wrk's Latency Distribution (was --latency passed?)")?;
    // A percentile can never be below a lower one, and a run that completed
    // requests cannot have a zero p99; either means wrk#354 struck.
    let p99_plausible = p99_us > 0.0 && percentiles.iter().all(|&(_, us)| us <= p99_us);
    Ok(WrkStats {
        requests_per_sec: requests_per_sec.ok_or("no `Requests/sec:` line in wrk output")?,
        total_requests,
        elapsed_s,
        socket_errors,
        non_2xx_3xx,
        p99_us: p99_plausible.then_some(p99_us),
    })
}

/// `169534 requests in 2.00s, 26.03MB read` → (169534, 2.0).
fn parse_totals(line: &str) -> Option<(u64, f64)> {
    let (count, rest) = line.split_once(" requests in ")?;
    let elapsed = rest.split(',').next()?;
    Some((count.trim().parse().ok()?, parse_time_us(elapsed)? / 1e6))
}

/// ` connect 0, read 0, write 0, timeout 245085` → [`SocketErrors`].
fn parse_socket_errors(rest: &str) -> Option<SocketErrors> {
    let mut errors = SocketErrors::default();
    for part in rest.split(',') {
        let (name, count) = part.trim().split_once(' ')?;
        let count: u64 = count.trim().parse().ok()?;
        match name {
            "connect" => errors.connect = count,
            "read" => errors.read = count,
            "write" => errors.write = count,
            "timeout" => errors.timeout = count,
            _ => return None,
        }
    }
    Some(errors)
}

/// Arguments for one `wrk` run (everything after the program name).
///
/// Always one wrk thread (`-t1`): wrk gets one core, and more threads on one
/// core would only add contention. `script` is the pipelining script and its
/// arguments, passed after `--` as wrk expects.
pub fn args(
    url: &str,
    connections: u32,
    duration_s: u64,
    script: Option<(&Path, &[String])>,
) -> Vec<String> {
    let mut args = vec![
        "--latency".to_owned(),
        "-t1".to_owned(),
        format!("-c{connections}"),
        format!("-d{duration_s}s"),
    ];
    if let Some((path, _)) = script {
        args.push("-s".to_owned());
        args.push(path.display().to_string());
    }
    args.push(url.to_owned());
    if let Some((_, script_args)) = script {
        if !script_args.is_empty() {
            args.push("--".to_owned());
            args.extend(script_args.iter().cloned());
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real wrk 4.1.0 output captured against nginx 1.22 on 127.0.0.1.
    const KEEPALIVE: &str = include_str!("../fixtures/wrk_keepalive_c64.txt");
    const KEEPALIVE_C256: &str = include_str!("../fixtures/wrk_keepalive_c256.txt");
    const PIPELINED: &str = include_str!("../fixtures/wrk_pipeline16_c64.txt");
    const ERRORS: &str = include_str!("../fixtures/wrk_errors.txt");
    const PIPELINED_P99_BUG: &str = include_str!("../fixtures/wrk_pipeline16_p99_bug.txt");

    #[test]
    fn time_units_convert_to_microseconds() {
        assert_eq!(parse_time_us("644.00us"), Some(644.0));
        assert_eq!(parse_time_us("1.17ms"), Some(1170.0));
        assert_eq!(parse_time_us("  0.87ms "), Some(870.0));
        assert_eq!(parse_time_us("2.00s"), Some(2_000_000.0));
        assert_eq!(parse_time_us("1.50m"), Some(90_000_000.0));
        assert_eq!(parse_time_us("1.00h"), Some(3_600_000_000.0));
        assert_eq!(parse_time_us("0.00us"), Some(0.0));
    }

    #[test]
    fn time_parser_rejects_junk() {
        assert_eq!(parse_time_us(""), None);
        assert_eq!(parse_time_us("12"), None);
        assert_eq!(parse_time_us("ms"), None);
        assert_eq!(parse_time_us("1.0ns"), None);
        assert_eq!(parse_time_us("-nan%"), None);
    }

    #[test]
    fn parses_keepalive_run() {
        let stats = parse_output(KEEPALIVE).unwrap();
        assert_eq!(stats.requests_per_sec, 84694.88);
        assert_eq!(stats.total_requests, 169_534);
        assert_eq!(stats.elapsed_s, 2.0);
        assert_eq!(stats.socket_errors, SocketErrors::default());
        assert_eq!(stats.non_2xx_3xx, 0);
        assert_eq!(stats.errors(), 0);
        assert_eq!(stats.p99_us, Some(1170.0));
    }

    #[test]
    fn parses_millisecond_distribution() {
        let stats = parse_output(KEEPALIVE_C256).unwrap();
        assert_eq!(stats.total_requests, 170_400);
        assert_eq!(stats.elapsed_s, 2.01);
        assert_eq!(stats.p99_us, Some(3880.0));
    }

    #[test]
    fn parses_pipelined_run() {
        let stats = parse_output(PIPELINED).unwrap();
        assert_eq!(stats.requests_per_sec, 129969.09);
        assert_eq!(stats.total_requests, 260_195);
        assert_eq!(stats.p99_us, Some(48290.0));
    }

    #[test]
    fn parses_error_lines() {
        let stats = parse_output(ERRORS).unwrap();
        assert_eq!(
            stats.socket_errors,
            SocketErrors { connect: 0, read: 0, write: 0, timeout: 245_085 }
        );
        assert_eq!(stats.non_2xx_3xx, 245_085);
        assert_eq!(stats.errors(), 2 * 245_085);
        assert_eq!(stats.elapsed_s, 3.03);
        // Every request timed out, so wrk has no latency samples at all.
        assert_eq!(stats.p99_us, None);
    }

    #[test]
    fn implausible_p99_is_dropped() {
        // Captured: wrk 4.1.0, pipelined x16, -c64 -d1s against nginx.
        let stats = parse_output(PIPELINED_P99_BUG).unwrap();
        assert_eq!(stats.total_requests, 114_776);
        assert_eq!(stats.p99_us, None);
    }

    #[test]
    fn missing_lines_are_errors_not_zeros() {
        assert!(parse_output("").is_err());
        assert!(parse_output("unable to connect to 127.0.0.1:1 Connection refused").is_err());
        // Without --latency there is no distribution block.
        let no_latency: String =
            KEEPALIVE.lines().filter(|l| !l.contains('%')).collect::<Vec<_>>().join("\n");
        assert!(parse_output(&no_latency).unwrap_err().contains("99%"));
    }

    #[test]
    fn builds_pipelined_command_line() {
        let script_args = vec!["16".to_owned()];
        let args = args(
            "http://127.0.0.1:8080/plaintext",
            64,
            3,
            Some((Path::new("/tmp/p.lua"), &script_args)),
        );
        assert_eq!(
            args,
            [
                "--latency",
                "-t1",
                "-c64",
                "-d3s",
                "-s",
                "/tmp/p.lua",
                "http://127.0.0.1:8080/plaintext",
                "--",
                "16"
            ]
        );
    }
}

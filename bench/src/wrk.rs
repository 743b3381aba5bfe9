//! Driving `wrk` and parsing what it prints.
//!
//! wrk 4.x has no machine-readable output of its own. Every run therefore
//! loads one of the harness's Lua scripts (`keepalive.lua`, `pipeline.lua`),
//! whose `done` hook prints a single `peregrine-bench-wrk key=value ...` line
//! with the latency percentiles (p99.9 included, which `--latency` does not
//! print) and the error counters. Throughput still comes from wrk's
//! human-readable report. The parser reads the handful of lines the harness
//! needs and fails loudly if they are missing rather than reporting zeros.

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
    /// Latency percentiles, from the `done` hook's line when present, else
    /// from the `Latency Distribution` block (which has no p99.9). With a
    /// pipelining script wrk samples one latency per batch, so these are times
    /// to the batch's last response. Impossible values are `None`: see
    /// [`Percentiles::from_raw`].
    pub latency: Percentiles,
    /// Whether the harness's `done` hook line was found (the script loaded
    /// and ran).
    pub from_hook: bool,
}

impl WrkStats {
    /// Socket errors plus non-2xx/3xx responses: anything that is not a
    /// successful, timely response.
    pub fn errors(&self) -> u64 {
        self.socket_errors.total() + self.non_2xx_3xx
    }
}

/// Latency percentile levels the harness reports, in percent. wrk's
/// `--latency` block prints the first four; the `done` hook adds p99.9.
pub const PERCENTILE_LEVELS: [f64; 5] = [50.0, 75.0, 90.0, 99.0, 99.9];

/// Latency percentiles of one run in microseconds, one slot per
/// [`PERCENTILE_LEVELS`] entry; `None` where wrk gave no value or an
/// impossible one.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles(pub [Option<f64>; 5]);

impl Percentiles {
    /// Keeps the plausible values of `raw` (same order as
    /// [`PERCENTILE_LEVELS`]).
    ///
    /// wrk 4.1's coordinated-omission correction can add samples below the
    /// recorded minimum; its percentile scan then falls off the end and
    /// reports `0` (wg/wrk#354), seen here with pipelining, where the
    /// correction interval is per response but samples are per batch. A run
    /// that completed requests cannot have a zero percentile, and a
    /// percentile can never be below a lower one, so either marks the value
    /// as impossible.
    pub fn from_raw(raw: [Option<f64>; 5]) -> Self {
        let mut kept = [None; 5];
        for (i, value) in raw.iter().enumerate() {
            let Some(us) = *value else { continue };
            let below_lower = raw[..i].iter().flatten().any(|&lower| lower > us);
            if us.is_finite() && us > 0.0 && !below_lower {
                kept[i] = Some(us);
            }
        }
        Percentiles(kept)
    }

    /// The value at `level` (one of [`PERCENTILE_LEVELS`]).
    pub fn at(&self, level: f64) -> Option<f64> {
        PERCENTILE_LEVELS.iter().position(|&l| l == level).and_then(|i| self.0[i])
    }

    /// Median latency.
    pub fn p50(&self) -> Option<f64> {
        self.0[0]
    }

    /// 99th percentile.
    pub fn p99(&self) -> Option<f64> {
        self.0[3]
    }

    /// 99.9th percentile.
    pub fn p999(&self) -> Option<f64> {
        self.0[4]
    }
}

/// First word of the line the Lua `done` hook prints.
pub const HOOK_PREFIX: &str = "peregrine-bench-wrk";

/// What the `done` hook in `keepalive.lua`/`pipeline.lua` printed.
#[derive(Debug, Clone, PartialEq)]
pub struct HookLine {
    /// `summary.requests`: completed responses.
    pub requests: u64,
    /// `summary.duration`: run length in microseconds.
    pub duration_us: u64,
    /// `latency:percentile(p)` at each of [`PERCENTILE_LEVELS`], raw
    /// (impossible values included), microseconds.
    pub latency_us: [f64; 5],
    /// `latency.max`, microseconds.
    pub max_us: f64,
    /// `summary.errors` connect/read/write/timeout.
    pub socket_errors: SocketErrors,
    /// `summary.errors.status`: responses with a status of 400 or more
    /// (wrk's `Non-2xx or 3xx responses`).
    pub status_errors: u64,
}

/// Parses the hook's `peregrine-bench-wrk requests=N ... timeout=N` line.
/// Every key must be present once and numeric; unknown keys are errors, so a
/// script and harness that drifted apart fail loudly.
pub fn parse_hook_line(line: &str) -> Result<HookLine, String> {
    const KEYS: [&str; 13] = [
        "requests",
        "duration_us",
        "p50_us",
        "p75_us",
        "p90_us",
        "p99_us",
        "p99.9_us",
        "max_us",
        "connect",
        "read",
        "write",
        "status",
        "timeout",
    ];
    let bad = |why: &str| format!("bad {HOOK_PREFIX} line ({why}): {line:?}");
    let mut words = line.split_whitespace();
    if words.next() != Some(HOOK_PREFIX) {
        return Err(bad("prefix"));
    }
    let mut values = [None::<f64>; KEYS.len()];
    for word in words {
        let (key, value) = word.split_once('=').ok_or_else(|| bad("no `=`"))?;
        let slot = KEYS.iter().position(|&k| k == key).ok_or_else(|| bad("unknown key"))?;
        // Lua prints `nan`/`inf` for broken maths; refuse those too.
        let value: f64 = value
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| bad(key))?;
        if values[slot].replace(value).is_some() {
            return Err(bad("duplicate key"));
        }
    }
    let mut got = [0.0; KEYS.len()];
    for (i, value) in values.iter().enumerate() {
        got[i] = value.ok_or_else(|| bad(&format!("missing {}", KEYS[i])))?;
    }
    // Counters are printed with %.0f, so they are whole numbers.
    let count = |i: usize| got[i] as u64;
    Ok(HookLine {
        requests: count(0),
        duration_us: count(1),
        latency_us: [got[2], got[3], got[4], got[5], got[6]],
        max_us: got[7],
        socket_errors: SocketErrors {
            connect: count(8),
            read: count(9),
            write: count(10),
            timeout: count(12),
        },
        status_errors: count(11),
    })
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
    let mut hook = None;

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
        if line.starts_with(HOOK_PREFIX) {
            hook = Some(parse_hook_line(line)?);
        } else if let Some(rest) = line.strip_prefix("Requests/sec:") {
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
    let latency = match &hook {
        // The hook reads the same histogram as --latency, unrounded, and
        // adds p99.9; its error counters are the ones wrk prints too.
        Some(hook) => {
            socket_errors = hook.socket_errors;
            non_2xx_3xx = hook.status_errors;
            Percentiles::from_raw(hook.latency_us.map(Some))
        }
        None => {
            if !percentiles.iter().any(|&(pct, _)| pct == 99.0) {
                return Err(
                    "no 99% line in wrk's Latency Distribution (was --latency passed?)".into()
                );
            }
            let mut raw = [None; 5];
            for (pct, us) in percentiles {
                if let Some(i) = PERCENTILE_LEVELS.iter().position(|&l| l == pct) {
                    raw[i] = Some(us);
                }
            }
            Percentiles::from_raw(raw)
        }
    };
    Ok(WrkStats {
        requests_per_sec: requests_per_sec.ok_or("no `Requests/sec:` line in wrk output")?,
        total_requests,
        elapsed_s,
        socket_errors,
        non_2xx_3xx,
        latency,
        from_hook: hook.is_some(),
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
/// core would only add contention. `script` is the Lua script
/// (`keepalive.lua` or `pipeline.lua`) and its arguments, passed after `--` as
/// wrk expects.
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
    // The same, with the harness's Lua scripts loaded (wrk 4.1.0, nginx 1.22).
    const KEEPALIVE_HOOK: &str = include_str!("../fixtures/wrk_keepalive_c64_hook.txt");
    const PIPELINED_HOOK: &str = include_str!("../fixtures/wrk_pipeline16_c64_hook.txt");
    const ERRORS_HOOK: &str = include_str!("../fixtures/wrk_errors_hook.txt");
    const PIPELINED_P99_BUG_HOOK: &str =
        include_str!("../fixtures/wrk_pipeline16_p99_bug_hook.txt");

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
        assert_eq!(stats.latency.p99(), Some(1170.0));
        assert_eq!(stats.latency.p50(), Some(644.0));
        assert_eq!(stats.latency.at(90.0), Some(870.0));
        // --latency prints no p99.9; only the hook has it.
        assert_eq!(stats.latency.p999(), None);
        assert!(!stats.from_hook);
    }

    #[test]
    fn parses_millisecond_distribution() {
        let stats = parse_output(KEEPALIVE_C256).unwrap();
        assert_eq!(stats.total_requests, 170_400);
        assert_eq!(stats.elapsed_s, 2.01);
        assert_eq!(stats.latency.p99(), Some(3880.0));
    }

    #[test]
    fn parses_pipelined_run() {
        let stats = parse_output(PIPELINED).unwrap();
        assert_eq!(stats.requests_per_sec, 129969.09);
        assert_eq!(stats.total_requests, 260_195);
        assert_eq!(stats.latency.p99(), Some(48290.0));
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
        assert_eq!(stats.latency, Percentiles::default());
    }

    #[test]
    fn implausible_p99_is_dropped() {
        // Captured: wrk 4.1.0, pipelined x16, -c64 -d1s against nginx.
        let stats = parse_output(PIPELINED_P99_BUG).unwrap();
        assert_eq!(stats.total_requests, 114_776);
        assert_eq!(stats.latency.p99(), None);
        assert!(stats.latency.p50().is_some());
    }

    #[test]
    fn hook_line_gives_full_precision_percentiles() {
        let stats = parse_output(KEEPALIVE_HOOK).unwrap();
        assert!(stats.from_hook);
        assert_eq!(stats.total_requests, 202_817);
        assert_eq!(stats.requests_per_sec, 96562.28);
        // --latency printed `90% 1.00ms`; the hook has the unrounded 1005 us.
        assert_eq!(
            stats.latency,
            Percentiles([Some(637.0), Some(683.0), Some(1005.0), Some(1199.0), Some(3581.0)])
        );
        assert_eq!(stats.errors(), 0);

        let stats = parse_output(PIPELINED_HOOK).unwrap();
        assert_eq!(stats.total_requests, 171_374);
        assert_eq!(stats.latency.p99(), Some(21178.0));
        assert_eq!(stats.latency.p999(), Some(30755.0));
    }

    #[test]
    fn hook_line_carries_errors() {
        let stats = parse_output(ERRORS_HOOK).unwrap();
        assert_eq!(stats.non_2xx_3xx, 103_541);
        assert_eq!(stats.socket_errors, SocketErrors::default());
        assert_eq!(stats.errors(), 103_541);
    }

    #[test]
    fn hook_percentiles_keep_the_wrk354_guard() {
        // Captured: the hook printed `p99_us=0.00 p99.9_us=0.00`.
        let stats = parse_output(PIPELINED_P99_BUG_HOOK).unwrap();
        assert_eq!(stats.latency.p50(), Some(8462.0));
        assert_eq!(stats.latency.at(90.0), Some(15927.0));
        assert_eq!(stats.latency.p99(), None);
        assert_eq!(stats.latency.p999(), None);
    }

    #[test]
    fn percentile_guard() {
        let p = Percentiles::from_raw([Some(5.0), Some(7.0), Some(6.0), Some(9.0), Some(0.0)]);
        // 6 < 7 is impossible; 0 is impossible; 9 is fine (above all lower ones).
        assert_eq!(p, Percentiles([Some(5.0), Some(7.0), None, Some(9.0), None]));
        let p = Percentiles::from_raw([Some(0.0), None, Some(3.0), Some(f64::NAN), Some(4.0)]);
        assert_eq!(p, Percentiles([None, None, Some(3.0), None, Some(4.0)]));
    }

    #[test]
    fn parses_hook_line() {
        let line = "peregrine-bench-wrk requests=10 duration_us=2000000 p50_us=1.50 p75_us=2 \
                    p90_us=3 p99_us=4 p99.9_us=5 max_us=6 connect=1 read=2 write=3 status=4 \
                    timeout=5";
        let hook = parse_hook_line(line).unwrap();
        assert_eq!(hook.requests, 10);
        assert_eq!(hook.duration_us, 2_000_000);
        assert_eq!(hook.latency_us, [1.5, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(hook.max_us, 6.0);
        assert_eq!(hook.socket_errors, SocketErrors { connect: 1, read: 2, write: 3, timeout: 5 });
        assert_eq!(hook.status_errors, 4);
    }

    #[test]
    fn hook_line_rejects_junk() {
        let full = "peregrine-bench-wrk requests=1 duration_us=1 p50_us=1 p75_us=1 p90_us=1 \
                    p99_us=1 p99.9_us=1 max_us=1 connect=0 read=0 write=0 status=0 timeout=0";
        assert!(parse_hook_line(full).is_ok());
        assert!(parse_hook_line(&full.replace(" timeout=0", "")).unwrap_err().contains("timeout"));
        assert!(parse_hook_line(&full.replace("p50_us=1", "p50_us=nan")).is_err());
        assert!(parse_hook_line(&full.replace("p50_us=1", "p50_us=-1")).is_err());
        assert!(parse_hook_line(&format!("{full} extra=1")).is_err());
        assert!(parse_hook_line(&format!("{full} read=0")).is_err());
        assert!(parse_hook_line("peregrine-bench-wrk requests").is_err());
        // A malformed hook line fails the whole parse rather than being ignored.
        let broken = KEEPALIVE_HOOK.replace("p99_us=1199.00", "p99_us=");
        assert!(parse_output(&broken).is_err());
    }

    #[test]
    fn lua_scripts_share_one_done_hook() {
        fn done_hook(script: &str) -> &str {
            let start = script.find("-- BEGIN done hook").expect("BEGIN marker");
            let end = script.find("-- END done hook").expect("END marker");
            &script[start..end]
        }
        let keepalive = include_str!("../keepalive.lua");
        let pipeline = include_str!("../pipeline.lua");
        assert_eq!(done_hook(keepalive), done_hook(pipeline));
        assert!(done_hook(keepalive).contains(HOOK_PREFIX));
        // The keep-alive script must not replace wrk's default request.
        assert!(!keepalive.contains("request ="));
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

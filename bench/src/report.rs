//! Aggregation (medians, ratios) and the Markdown and JSON reports.
//!
//! The headline number is *requests per server-CPU-second*: total responses
//! divided by the CPU time the server process consumed. On a 2-core box wrk
//! often saturates its core before the server does, which caps requests/s for
//! every server alike; CPU cost per request still shows how much work each
//! server spends per response, and is far less sensitive to the load
//! generator and to noisy neighbours.

use std::fmt::Write as _;

use crate::scenario::Scenario;
use crate::sys::{MachineInfo, UtcTime};

/// Name under which Peregrine's runs are recorded.
pub const PEREGRINE: &str = "peregrine";
/// Name under which nginx's runs are recorded.
pub const NGINX: &str = "nginx";

/// The sentence every report leads with.
pub const DRIFT_NOTE: &str = "Absolute numbers on a shared 2-core machine drift by up to 2× \
between runs; the Peregrine/nginx ratios measured in the same run (servers interleaved round \
by round) are what to compare.";

/// What one wrk run against one server measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RunMeasurement {
    /// wrk's `Requests/sec`.
    pub req_per_s: f64,
    /// Completed responses.
    pub total_requests: u64,
    /// Run length as measured by wrk, in seconds.
    pub elapsed_s: f64,
    /// Server CPU time (user + system, all threads) during the run, in seconds.
    pub cpu_s: f64,
    /// 99th percentile latency, microseconds; `None` when wrk's value was
    /// implausible (see [`crate::wrk::WrkStats::p99_us`]).
    pub p99_us: Option<f64>,
    /// Socket errors plus non-2xx/3xx responses.
    pub errors: u64,
}

impl RunMeasurement {
    /// Responses per second of server CPU time; `None` if no CPU time was
    /// measured (it is sampled in clock ticks, so this needs a run ≫ 10 ms).
    pub fn req_per_cpu_s(&self) -> Option<f64> {
        (self.cpu_s > 0.0).then(|| self.total_requests as f64 / self.cpu_s)
    }

    /// Server CPU time over wall time: 1.0 means one core fully busy. Well
    /// below 1.0 for a single-threaded server means the load generator, not
    /// the server, was the bottleneck.
    pub fn cpu_utilisation(&self) -> Option<f64> {
        (self.elapsed_s > 0.0).then(|| self.cpu_s / self.elapsed_s)
    }
}

/// One (round, scenario, server) cell: a measurement or why there is none.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Round number, from 1.
    pub round: u32,
    /// [`Scenario::name`].
    pub scenario: &'static str,
    /// Server name ([`PEREGRINE`] or [`NGINX`]).
    pub server: String,
    /// The measurement, or the error that prevented it.
    pub outcome: Result<RunMeasurement, String>,
}

/// A server that took part, for the report header.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// Server name.
    pub name: String,
    /// Version string or binary path.
    pub version: String,
}

/// How the run was configured.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Rounds over all scenarios.
    pub rounds: u32,
    /// Seconds per wrk run.
    pub duration_s: u64,
    /// Seconds of unrecorded warm-up per server before round 1.
    pub warmup_s: u64,
    /// CPU list the servers are pinned to (`taskset -c`).
    pub server_cpus: String,
    /// CPU list wrk is pinned to.
    pub wrk_cpus: String,
    /// Whether pinning was in effect (`taskset` found and not disabled).
    pub pinned: bool,
    /// Clock ticks per second used to convert `/proc` CPU times.
    pub clk_tck: u64,
    /// `wrk -v` first line.
    pub wrk_version: String,
}

/// Everything needed to render the report.
#[derive(Debug, Clone)]
pub struct Report {
    /// When the benchmark started.
    pub started: UtcTime,
    /// Machine facts.
    pub machine: MachineInfo,
    /// Run configuration.
    pub config: RunConfig,
    /// Servers that were started.
    pub servers: Vec<ServerInfo>,
    /// Scenarios, in run order.
    pub scenarios: Vec<Scenario>,
    /// Every run, in the order executed.
    pub runs: Vec<RunRecord>,
    /// Free-form notes: skipped servers, warnings.
    pub notes: Vec<String>,
}

/// Medians over the successful rounds of one (scenario, server) pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Successful runs aggregated.
    pub runs_ok: usize,
    /// Runs that produced no measurement.
    pub runs_failed: usize,
    /// Median requests/s.
    pub req_per_s: f64,
    /// Median requests per server-CPU-second.
    pub req_per_cpu_s: Option<f64>,
    /// Median server CPU utilisation (1.0 = one core).
    pub cpu_utilisation: Option<f64>,
    /// Median p99 latency over the runs that have one, microseconds.
    pub p99_us: Option<f64>,
    /// Median error count per run.
    pub errors_median: f64,
    /// Errors summed over all successful runs, so one bad round is not hidden
    /// by the median.
    pub errors_total: u64,
}

/// Peregrine/nginx ratios of the medians for one scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratios {
    /// Ratio of median requests/s.
    pub req_per_s: Option<f64>,
    /// Ratio of median requests per server-CPU-second.
    pub req_per_cpu_s: Option<f64>,
}

/// Median of the values (mean of the middle two for an even count); `None`
/// when empty. NaNs are ignored.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    match (numerator, denominator) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    }
}

impl Report {
    /// Medians for `server` in `scenario`; `None` when it has no successful run.
    pub fn summary(&self, scenario: &str, server: &str) -> Option<Summary> {
        let runs: Vec<&RunRecord> =
            self.runs.iter().filter(|r| r.scenario == scenario && r.server == server).collect();
        let ok: Vec<&RunMeasurement> =
            runs.iter().filter_map(|r| r.outcome.as_ref().ok()).collect();
        Some(Summary {
            runs_ok: ok.len(),
            runs_failed: runs.len() - ok.len(),
            req_per_s: median(ok.iter().map(|m| m.req_per_s))?,
            req_per_cpu_s: median(ok.iter().filter_map(|m| m.req_per_cpu_s())),
            cpu_utilisation: median(ok.iter().filter_map(|m| m.cpu_utilisation())),
            p99_us: median(ok.iter().filter_map(|m| m.p99_us)),
            errors_median: median(ok.iter().map(|m| m.errors as f64))?,
            errors_total: ok.iter().map(|m| m.errors).sum(),
        })
    }

    /// Peregrine/nginx ratios for `scenario`; `None` unless both have results.
    pub fn ratios(&self, scenario: &str) -> Option<Ratios> {
        let p = self.summary(scenario, PEREGRINE)?;
        let n = self.summary(scenario, NGINX)?;
        Some(Ratios {
            req_per_s: ratio(Some(p.req_per_s), Some(n.req_per_s)),
            req_per_cpu_s: ratio(p.req_per_cpu_s, n.req_per_cpu_s),
        })
    }

    fn has_server(&self, name: &str) -> bool {
        self.servers.iter().any(|s| s.name == name)
    }

    /// The human-readable report.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let rounds = self.config.rounds;
        let _ = writeln!(md, "# Peregrine load benchmark — {}\n", self.started.iso8601());
        let _ = writeln!(md, "**Compare ratios, not absolute numbers.** {DRIFT_NOTE}\n");

        let _ = writeln!(md, "## Peregrine / nginx (ratio of medians over {rounds} round(s))\n");
        if self.has_server(PEREGRINE) && self.has_server(NGINX) {
            md.push_str("| scenario | req/s | req per server-CPU-s | target (per CPU-s) | met |\n");
            md.push_str("|---|---:|---:|---:|:---:|\n");
            for s in &self.scenarios {
                let r = self.ratios(s.name);
                let per_cpu = r.and_then(|r| r.req_per_cpu_s);
                let met = match per_cpu {
                    Some(x) if x >= s.target_cpu_ratio => "yes",
                    Some(_) => "no",
                    None => "n/a",
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | ≥ {}× | {met} |",
                    s.description,
                    fmt_ratio(r.and_then(|r| r.req_per_s)),
                    fmt_ratio(per_cpu),
                    s.target_cpu_ratio,
                );
            }
        } else {
            let missing = if self.has_server(PEREGRINE) { "nginx" } else { "Peregrine" };
            let _ = writeln!(
                md,
                "Ratios unavailable: {missing} was not measured in this run (see Notes)."
            );
        }

        let _ = writeln!(md, "\n## Per server (medians over {rounds} round(s))\n");
        md.push_str(
            "| scenario | server | req/s | req per server-CPU-s | server CPU | p99 | \
             errors (median / total) | runs ok |\n",
        );
        md.push_str("|---|---|---:|---:|---:|---:|---:|---:|\n");
        for s in &self.scenarios {
            for server in &self.servers {
                let Some(sum) = self.summary(s.name, &server.name) else {
                    let _ = writeln!(
                        md,
                        "| {} | {} | failed | | | | | 0/{rounds} |",
                        s.description, server.name
                    );
                    continue;
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} / {} | {}/{} |",
                    s.description,
                    server.name,
                    fmt_count(sum.req_per_s),
                    sum.req_per_cpu_s.map_or("n/a".into(), fmt_count),
                    sum.cpu_utilisation.map_or("n/a".into(), |u| format!("{:.0}%", u * 100.0)),
                    sum.p99_us.map_or("n/a".into(), fmt_us),
                    sum.errors_median,
                    sum.errors_total,
                    sum.runs_ok,
                    sum.runs_ok + sum.runs_failed,
                );
            }
        }
        md.push_str(
            "\n`server CPU` is server CPU time over wall time (100% = one core busy); well under \
             100% means wrk, not the server, set the pace, so req/s understates the server and \
             req per server-CPU-s is the number to read. Pipelined p99 is per batch of 16 (wrk \
             records one latency per pipelined write) and approximate; `n/a` marks a p99 wrk \
             printed as impossible (wg/wrk#354).\n",
        );

        if !self.notes.is_empty() {
            md.push_str("\n## Notes\n\n");
            for note in &self.notes {
                let _ = writeln!(md, "- {}", note.replace('\n', "\n  "));
            }
        }

        let c = &self.config;
        md.push_str("\n## Setup\n\n");
        let _ = writeln!(
            md,
            "- Machine: nproc {}, {}{}",
            self.machine.nproc,
            self.machine.kernel,
            self.machine.cpu_model.as_deref().map(|m| format!(", {m}")).unwrap_or_default()
        );
        let _ = writeln!(md, "- Load generator: {} (`-t1 --latency`)", c.wrk_version);
        for server in &self.servers {
            let _ = writeln!(md, "- Server: {} — {}", server.name, server.version);
        }
        if c.pinned {
            let _ = writeln!(
                md,
                "- Pinning (taskset): servers on CPU {}, wrk on CPU {}",
                c.server_cpus, c.wrk_cpus
            );
        } else {
            md.push_str("- Pinning: off (servers and wrk share all CPUs)\n");
        }
        let _ = writeln!(
            md,
            "- {} round(s) × {} s per run, {} s warm-up per server; rounds interleave servers, \
             alternating which goes first",
            c.rounds, c.duration_s, c.warmup_s
        );
        let _ = writeln!(
            md,
            "- Server CPU from /proc/PID/stat utime+stime, CLK_TCK={} ({} ms resolution)",
            c.clk_tck,
            1000 / c.clk_tck.max(1)
        );

        md.push_str("\n## All runs\n\n");
        md.push_str(
            "| round | scenario | server | req/s | requests | server CPU-s | req per CPU-s | p99 | errors |\n",
        );
        md.push_str("|---:|---|---|---:|---:|---:|---:|---:|---:|\n");
        for run in &self.runs {
            match &run.outcome {
                Ok(m) => {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} | {:.2} | {} | {} | {} |",
                        run.round,
                        run.scenario,
                        run.server,
                        fmt_count(m.req_per_s),
                        fmt_count(m.total_requests as f64),
                        m.cpu_s,
                        m.req_per_cpu_s().map_or("n/a".into(), fmt_count),
                        m.p99_us.map_or("n/a".into(), fmt_us),
                        m.errors
                    );
                }
                Err(e) => {
                    let first_line = e.lines().next().unwrap_or_default().replace('|', "\\|");
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | failed: {first_line} | | | | | |",
                        run.round, run.scenario, run.server
                    );
                }
            }
        }
        md
    }

    /// The machine-readable report (hand-written JSON; no dependencies).
    pub fn to_json(&self) -> String {
        let c = &self.config;
        let mut j = String::from("{\n");
        let _ = writeln!(j, "  \"started\": {},", js(&self.started.iso8601()));
        let _ = writeln!(j, "  \"note\": {},", js(DRIFT_NOTE));
        let _ = writeln!(
            j,
            "  \"machine\": {{\"nproc\": {}, \"kernel\": {}, \"cpu_model\": {}}},",
            js(&self.machine.nproc),
            js(&self.machine.kernel),
            self.machine.cpu_model.as_deref().map_or("null".into(), js)
        );
        let _ = writeln!(
            j,
            "  \"config\": {{\"rounds\": {}, \"duration_s\": {}, \"warmup_s\": {}, \
             \"server_cpus\": {}, \"wrk_cpus\": {}, \"pinned\": {}, \"clk_tck\": {}, \
             \"wrk\": {}}},",
            c.rounds,
            c.duration_s,
            c.warmup_s,
            js(&c.server_cpus),
            js(&c.wrk_cpus),
            c.pinned,
            c.clk_tck,
            js(&c.wrk_version)
        );
        let servers: Vec<String> = self
            .servers
            .iter()
            .map(|s| format!("{{\"name\": {}, \"version\": {}}}", js(&s.name), js(&s.version)))
            .collect();
        let _ = writeln!(j, "  \"servers\": [{}],", servers.join(", "));
        let notes: Vec<String> = self.notes.iter().map(|n| js(n)).collect();
        let _ = writeln!(j, "  \"notes\": [{}],", notes.join(", "));

        j.push_str("  \"scenarios\": [\n");
        for (i, s) in self.scenarios.iter().enumerate() {
            let _ = writeln!(j, "    {{");
            let _ = writeln!(
                j,
                "      \"name\": {}, \"description\": {}, \"connections\": {}, \
                 \"pipeline_depth\": {}, \"target_req_per_cpu_s_ratio\": {},",
                js(s.name),
                js(s.description),
                s.connections,
                s.pipeline_depth,
                jf(Some(s.target_cpu_ratio))
            );
            let r = self.ratios(s.name);
            let _ = writeln!(
                j,
                "      \"ratio_peregrine_over_nginx\": {{\"req_per_s\": {}, \"req_per_cpu_s\": {}}},",
                jf(r.and_then(|r| r.req_per_s)),
                jf(r.and_then(|r| r.req_per_cpu_s))
            );
            j.push_str("      \"servers\": {");
            let per_server: Vec<String> = self
                .servers
                .iter()
                .map(|server| {
                    let body = match self.summary(s.name, &server.name) {
                        Some(m) => format!(
                            "{{\"median_req_per_s\": {}, \"median_req_per_cpu_s\": {}, \
                             \"median_cpu_utilisation\": {}, \"median_p99_us\": {}, \
                             \"median_errors\": {}, \"errors_total\": {}, \"runs_ok\": {}, \
                             \"runs_failed\": {}}}",
                            jf(Some(m.req_per_s)),
                            jf(m.req_per_cpu_s),
                            jf(m.cpu_utilisation),
                            jf(m.p99_us),
                            jf(Some(m.errors_median)),
                            m.errors_total,
                            m.runs_ok,
                            m.runs_failed
                        ),
                        None => "null".into(),
                    };
                    format!("\n        {}: {body}", js(&server.name))
                })
                .collect();
            j.push_str(&per_server.join(","));
            j.push_str("\n      }\n");
            let _ = writeln!(j, "    }}{}", if i + 1 < self.scenarios.len() { "," } else { "" });
        }
        j.push_str("  ],\n");

        j.push_str("  \"runs\": [");
        let runs: Vec<String> = self
            .runs
            .iter()
            .map(|run| {
                let head = format!(
                    "\"round\": {}, \"scenario\": {}, \"server\": {}",
                    run.round,
                    js(run.scenario),
                    js(&run.server)
                );
                match &run.outcome {
                    Ok(m) => format!(
                        "\n    {{{head}, \"req_per_s\": {}, \"total_requests\": {}, \
                         \"elapsed_s\": {}, \"cpu_s\": {}, \"req_per_cpu_s\": {}, \
                         \"p99_us\": {}, \"errors\": {}}}",
                        jf(Some(m.req_per_s)),
                        m.total_requests,
                        jf(Some(m.elapsed_s)),
                        jf(Some(m.cpu_s)),
                        jf(m.req_per_cpu_s()),
                        jf(m.p99_us),
                        m.errors
                    ),
                    Err(e) => format!("\n    {{{head}, \"error\": {}}}", js(e)),
                }
            })
            .collect();
        j.push_str(&runs.join(","));
        j.push_str("\n  ]\n}\n");
        j
    }
}

/// JSON string literal.
fn js(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// JSON number, or `null` for missing/non-finite values. Rounded to 3
/// decimals: more digits than that are noise here.
fn jf(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() => {
            let rounded = (x * 1000.0).round() / 1000.0;
            format!("{rounded}")
        }
        _ => "null".into(),
    }
}

/// `84694.88` → `84,695`.
fn fmt_count(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// Microseconds in the unit a reader expects: `644 us`, `1.17 ms`, `2.00 s`.
fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} us")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn fmt_ratio(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |x| format!("{x:.2}×"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::SCENARIOS;

    fn measurement(req_per_s: f64, total: u64, cpu_s: f64, errors: u64) -> RunMeasurement {
        RunMeasurement {
            req_per_s,
            total_requests: total,
            elapsed_s: 3.0,
            cpu_s,
            p99_us: Some(1500.0),
            errors,
        }
    }

    fn report(runs: Vec<RunRecord>, servers: &[&str]) -> Report {
        Report {
            started: UtcTime::from_unix(1_700_000_000),
            machine: MachineInfo {
                nproc: "2".into(),
                kernel: "Linux 6.1".into(),
                cpu_model: Some("Test \"CPU\"".into()),
            },
            config: RunConfig {
                rounds: 3,
                duration_s: 3,
                warmup_s: 1,
                server_cpus: "0".into(),
                wrk_cpus: "1".into(),
                pinned: true,
                clk_tck: 100,
                wrk_version: "wrk 4.1.0".into(),
            },
            servers: servers
                .iter()
                .map(|s| ServerInfo { name: (*s).into(), version: format!("{s} 1.0") })
                .collect(),
            scenarios: SCENARIOS.to_vec(),
            runs,
            notes: vec!["a note\nwith two lines".into()],
        }
    }

    fn run(round: u32, server: &str, outcome: Result<RunMeasurement, String>) -> RunRecord {
        RunRecord { round, scenario: "keepalive-c64", server: server.into(), outcome }
    }

    #[test]
    fn median_handles_odd_even_and_empty() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median([]), None);
        assert_eq!(median([f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn ratios_use_medians_and_skip_failed_runs() {
        let runs = vec![
            run(1, PEREGRINE, Ok(measurement(200.0, 600, 2.0, 0))),
            run(1, NGINX, Ok(measurement(100.0, 300, 3.0, 0))),
            run(2, NGINX, Ok(measurement(120.0, 360, 3.0, 4))),
            run(2, PEREGRINE, Err("wrk timed out".into())),
            run(3, PEREGRINE, Ok(measurement(240.0, 720, 2.0, 0))),
            run(3, NGINX, Ok(measurement(80.0, 240, 3.0, 0))),
        ];
        let r = report(runs, &[PEREGRINE, NGINX]);
        let p = r.summary("keepalive-c64", PEREGRINE).unwrap();
        assert_eq!((p.runs_ok, p.runs_failed), (2, 1));
        assert_eq!(p.req_per_s, 220.0);
        assert_eq!(p.req_per_cpu_s, Some(330.0));
        let n = r.summary("keepalive-c64", NGINX).unwrap();
        assert_eq!(n.req_per_cpu_s, Some(100.0));
        assert_eq!(n.errors_total, 4);
        assert_eq!(n.errors_median, 0.0);
        let ratios = r.ratios("keepalive-c64").unwrap();
        assert_eq!(ratios.req_per_s, Some(2.2));
        assert_eq!(ratios.req_per_cpu_s, Some(3.3));
        assert!(r.ratios("pipeline16-c64").is_none());

        let md = r.to_markdown();
        assert!(md.contains(DRIFT_NOTE));
        assert!(md.contains("| keep-alive, 64 connections | 2.20× | 3.30× | ≥ 1.5× | yes |"));
        assert!(md.contains("failed: wrk timed out"));
    }

    #[test]
    fn markdown_without_nginx_says_ratios_unavailable() {
        let r = report(vec![run(1, PEREGRINE, Ok(measurement(1.0, 3, 1.0, 0)))], &[PEREGRINE]);
        assert!(r.to_markdown().contains("Ratios unavailable: nginx was not measured"));
        let r = report(vec![run(1, NGINX, Ok(measurement(1.0, 3, 1.0, 0)))], &[NGINX]);
        assert!(r.to_markdown().contains("Ratios unavailable: Peregrine was not measured"));
    }

    #[test]
    fn json_is_well_formed_enough() {
        let runs = vec![
            run(1, NGINX, Ok(measurement(100.0, 300, 0.0, 0))),
            run(1, PEREGRINE, Err("boom \"quoted\"\n\tline".into())),
        ];
        let j = report(runs, &[PEREGRINE, NGINX]).to_json();
        // Balanced brackets outside strings, and escapes where expected.
        let (mut depth, mut in_str, mut escaped) = (0i32, false, false);
        for c in j.chars() {
            match (in_str, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (true, false, '"') | (false, _, '"') => in_str = !in_str,
                (false, _, '{' | '[') => depth += 1,
                (false, _, '}' | ']') => depth -= 1,
                _ => {}
            }
            assert!(depth >= 0);
            assert!(!(in_str && c == '\n'), "raw newline inside a JSON string");
        }
        assert_eq!(depth, 0);
        assert!(!in_str);
        assert!(j.contains(r#""error": "boom \"quoted\"\n\tline""#));
        assert!(j.contains(r#""cpu_model": "Test \"CPU\"""#));
        // Zero CPU time gives no per-CPU rate rather than infinity.
        assert!(j.contains(r#""req_per_cpu_s": null"#));
    }

    #[test]
    fn number_formatting() {
        assert_eq!(fmt_count(84694.88), "84,695");
        assert_eq!(fmt_count(999.0), "999");
        assert_eq!(fmt_count(1_000_000.0), "1,000,000");
        assert_eq!(fmt_us(644.0), "644 us");
        assert_eq!(fmt_us(1170.0), "1.17 ms");
        assert_eq!(fmt_us(2_500_000.0), "2.50 s");
        assert_eq!(jf(Some(1.23456)), "1.235");
        assert_eq!(jf(Some(f64::INFINITY)), "null");
    }
}

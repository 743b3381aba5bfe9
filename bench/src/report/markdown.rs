//! The human-readable report. It leads with the Peregrine/nginx ratios and the
//! drift caveat, because within-run ratios are the only numbers that carry
//! from one run (or machine) to the next.

use std::fmt::Write as _;

use super::{Report, DRIFT_NOTE, NGINX, PEREGRINE};
use crate::perf;

impl Report {
    /// The human-readable report.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Peregrine load benchmark — {}\n", self.started.iso8601());
        self.ratios_section(&mut md);
        let _ = writeln!(md, "\n**Compare ratios, not absolute numbers.** {DRIFT_NOTE}");
        self.per_server_section(&mut md);
        self.latency_section(&mut md);
        self.idle_section(&mut md);
        md.push_str(
            "\n## Not measured yet\n\nHTTP/2 and TLS scenarios (h2load, with h2o as a second \
             peer) arrive with the TLS/HTTP/2 issue: Peregrine has no HTTP/2 yet.\n",
        );
        if !self.notes.is_empty() {
            md.push_str("\n## Notes\n\n");
            for note in &self.notes {
                let _ = writeln!(md, "- {}", note.replace('\n', "\n  "));
            }
        }
        self.setup_section(&mut md);
        self.all_runs_section(&mut md);
        md
    }

    fn ratios_section(&self, md: &mut String) {
        let rounds = self.config.rounds;
        let _ = writeln!(md, "## Peregrine / nginx (ratio of medians over {rounds} round(s))\n");
        if !(self.has_server(PEREGRINE) && self.has_server(NGINX)) {
            let missing = if self.has_server(PEREGRINE) { "nginx" } else { "Peregrine" };
            let _ = writeln!(
                md,
                "Ratios unavailable: {missing} was not measured in this run (see Notes)."
            );
            return;
        }
        md.push_str(
            "| scenario | req/s | req per server-CPU-s | target (per CPU-s) | met | p99 latency | \
             instructions/req |\n",
        );
        md.push_str("|---|---:|---:|---:|:---:|---:|---:|\n");
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
                "| {} | {} | {} | ≥ {}× | {met} | {} | {} |",
                s.description,
                fmt_ratio(r.and_then(|r| r.req_per_s)),
                fmt_ratio(per_cpu),
                s.target_cpu_ratio,
                fmt_ratio(r.and_then(|r| r.p99)),
                fmt_ratio(r.and_then(|r| r.instructions_per_req)),
            );
        }
        let idle = match (self.idle_memory(PEREGRINE), self.idle_memory(NGINX)) {
            (Some(p), Some(n)) => match (p.bytes_per_connection(), n.bytes_per_connection()) {
                (Some(pb), Some(nb)) => format!(
                    "**{}** ({} vs {} per connection; {} and {} connections)",
                    fmt_ratio(self.idle_ratio()),
                    fmt_bytes(pb),
                    fmt_bytes(nb),
                    fmt_count(p.open_at_sample as f64),
                    fmt_count(n.open_at_sample as f64),
                ),
                _ => "n/a (no connection stayed open)".into(),
            },
            _ if self.config.idle_connections == 0 => "not measured (--idle-conns 0)".into(),
            _ => "n/a (see Memory per idle connection)".into(),
        };
        let _ = writeln!(md, "\nMemory per idle keep-alive connection, Peregrine / nginx: {idle}.");
        md.push_str(
            "\nHigher is better for req/s and req per server-CPU-s; lower is better for p99 \
             latency, instructions per request and memory.",
        );
        if let perf::Support::Unavailable(why) = &self.config.perf {
            let _ = write!(md, " Instructions per request: {why}.");
        }
        md.push('\n');
    }

    fn per_server_section(&self, md: &mut String) {
        let rounds = self.config.rounds;
        let _ = writeln!(md, "\n## Per server (medians over {rounds} round(s))\n");
        md.push_str(
            "| scenario | server | req/s | req per server-CPU-s | server CPU | p50 | p99 | p99.9 | \
             instructions/req | errors (median / total) | runs ok |\n",
        );
        md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for s in &self.scenarios {
            for server in &self.servers {
                let Some(sum) = self.summary(s.name, &server.name) else {
                    let _ = writeln!(
                        md,
                        "| {} | {} | failed | | | | | | | | 0/{rounds} |",
                        s.description, server.name
                    );
                    continue;
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {}/{} |",
                    s.description,
                    server.name,
                    fmt_count(sum.req_per_s),
                    sum.req_per_cpu_s.map_or("n/a".into(), fmt_count),
                    sum.cpu_utilisation.map_or("n/a".into(), |u| format!("{:.0}%", u * 100.0)),
                    sum.latency.p50().map_or("n/a".into(), fmt_us),
                    sum.latency.p99().map_or("n/a".into(), fmt_us),
                    sum.latency.p999().map_or("n/a".into(), fmt_us),
                    sum.instructions_per_req.map_or("n/a".into(), fmt_count),
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
             req per server-CPU-s is the number to read. Latency percentiles come from wrk's \
             histogram through the scripts' `done` hook. Pipelined percentiles are per batch of \
             16 (wrk records one latency per pipelined write) and approximate; `n/a` marks a \
             percentile wrk reported as impossible (wg/wrk#354).\n",
        );
    }

    fn latency_section(&self, md: &mut String) {
        md.push_str("\n## Latency percentiles\n\n");
        match &self.plot_file {
            Some(file) => {
                let _ = writeln!(
                    md,
                    "![Latency percentiles, medians over rounds]({file})\n\n\
                     [{file}]({file}): p50, p75, p90, p99 and p99.9 per server and scenario \
                     (medians over rounds), one evenly spaced slot per percentile; the y axis is logarithmic. \
                     A missing point is a percentile wrk reported as impossible (wg/wrk#354)."
                );
            }
            None => md.push_str("No chart was written (see Notes).\n"),
        }
    }

    fn idle_section(&self, md: &mut String) {
        md.push_str("\n## Memory per idle connection\n\n");
        if self.config.idle_connections == 0 {
            md.push_str("Skipped (--idle-conns 0).\n");
            return;
        }
        let target = fmt_count(self.config.idle_connections as f64);
        md.push_str(
            "| server | connections (open / asked) | RSS before | RSS after | bytes per \
             connection |\n|---|---:|---:|---:|---:|\n",
        );
        let mut shortfalls = Vec::new();
        for record in &self.idle {
            match &record.outcome {
                Ok(m) => {
                    let _ = writeln!(
                        md,
                        "| {} | {} / {} | {} | {} | {} |",
                        record.server,
                        fmt_count(m.open_at_sample as f64),
                        fmt_count(m.target as f64),
                        fmt_mib(m.rss_before),
                        fmt_mib(m.rss_after),
                        m.bytes_per_connection().map_or("n/a".into(), fmt_bytes),
                    );
                    if let Some(why) = &m.stopped_by {
                        shortfalls.push(format!(
                            "{}: stopped at {} of {}: {why}",
                            record.server,
                            fmt_count(m.opened as f64),
                            fmt_count(m.target as f64)
                        ));
                    }
                }
                Err(e) => {
                    let first_line = e.lines().next().unwrap_or_default().replace('|', "\\|");
                    let _ = writeln!(md, "| {} | failed: {first_line} | | | |", record.server);
                }
            }
        }
        let _ = writeln!(
            md,
            "\nEach server is started fresh; {target} HTTP/1.1 keep-alive connections each send \
             one `GET /plaintext`, read the response and stay open idle. Bytes per connection = \
             (RSS after − RSS before) / connections still open after the reading; RSS is \
             `VmRSS` from /proc/PID/status, summed over the server's process tree. Kernel \
             socket memory is not in RSS and not counted for either server. nginx allocates \
             and touches its whole connection table (`worker_connections` 20,000 slots) at \
             start, so that part of its per-connection cost is in RSS before."
        );
        if self.config.quick {
            md.push_str(
                "\nQuick mode: fewer connections than the default 10,000, so fixed costs \
                 (buffers and tables sized on first use) weigh more per connection.\n",
            );
        }
        for shortfall in shortfalls {
            let _ = writeln!(md, "\n- {shortfall}");
        }
    }

    fn setup_section(&self, md: &mut String) {
        let c = &self.config;
        md.push_str("\n## Setup\n\n");
        let _ = writeln!(
            md,
            "- Machine: nproc {}, {}{}",
            self.machine.nproc,
            self.machine.kernel,
            self.machine.cpu_model.as_deref().map(|m| format!(", {m}")).unwrap_or_default()
        );
        let _ = writeln!(
            md,
            "- Load generator: {} (`-t1 --latency`, `keepalive.lua`/`pipeline.lua`)",
            c.wrk_version
        );
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
             alternating which goes first{}",
            c.rounds,
            c.duration_s,
            c.warmup_s,
            if c.quick { " (--quick)" } else { "" }
        );
        let _ = writeln!(
            md,
            "- Server CPU from /proc/PID/stat utime+stime, CLK_TCK={} ({} ms resolution)",
            c.clk_tck,
            1000 / c.clk_tck.max(1)
        );
        match &c.perf {
            perf::Support::Available(_) => md.push_str(
                "- Instructions: `perf stat -e instructions -p PID` over each measured run\n",
            ),
            perf::Support::Unavailable(why) => {
                let _ = writeln!(md, "- Instructions per request: {why}");
            }
        }
        if c.idle_connections > 0 {
            let _ = writeln!(
                md,
                "- Idle memory: {} connections per server{}",
                fmt_count(c.idle_connections as f64),
                c.nofile_limit
                    .map(|n| format!(", harness open-files limit {}", fmt_count(n as f64)))
                    .unwrap_or_default()
            );
        }
    }

    fn all_runs_section(&self, md: &mut String) {
        md.push_str("\n## All runs\n\n");
        md.push_str(
            "| round | scenario | server | req/s | requests | server CPU-s | req per CPU-s | p50 | \
             p99 | p99.9 | instructions/req | errors |\n",
        );
        md.push_str("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for run in &self.runs {
            match &run.outcome {
                Ok(m) => {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} |",
                        run.round,
                        run.scenario,
                        run.server,
                        fmt_count(m.req_per_s),
                        fmt_count(m.total_requests as f64),
                        m.cpu_s,
                        m.req_per_cpu_s().map_or("n/a".into(), fmt_count),
                        m.latency.p50().map_or("n/a".into(), fmt_us),
                        m.latency.p99().map_or("n/a".into(), fmt_us),
                        m.latency.p999().map_or("n/a".into(), fmt_us),
                        m.instructions_per_request().map_or("n/a".into(), fmt_count),
                        m.errors
                    );
                }
                Err(e) => {
                    let first_line = e.lines().next().unwrap_or_default().replace('|', "\\|");
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | failed: {first_line} | | | | | | | | |",
                        run.round, run.scenario, run.server
                    );
                }
            }
        }
    }
}

/// `84694.88` → `84,695`.
fn fmt_count(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    if x.round() < 0.0 {
        out.push('−');
    }
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

/// `4521.3` → `4,521 B`.
fn fmt_bytes(bytes: f64) -> String {
    format!("{} B", fmt_count(bytes))
}

/// Bytes as MiB with one decimal: `13107200` → `12.5 MiB`.
fn fmt_mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn fmt_ratio(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |x| format!("{x:.2}×"))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{idle, measurement, report, run};
    use super::super::IdleRecord;
    use super::*;

    #[test]
    fn leads_with_ratios_then_the_drift_caveat() {
        let runs = vec![
            run(1, PEREGRINE, Ok(measurement(200.0, 600, 2.0, 0))),
            run(1, NGINX, Ok(measurement(100.0, 300, 3.0, 0))),
            run(2, PEREGRINE, Err("wrk timed out".into())),
        ];
        let mut r = report(runs, &[PEREGRINE, NGINX]);
        r.idle = vec![
            IdleRecord { server: PEREGRINE.into(), outcome: Ok(idle(10_000, 0, 20_480_000)) },
            IdleRecord { server: NGINX.into(), outcome: Ok(idle(10_000, 0, 40_960_000)) },
        ];
        r.plot_file = Some("20231114T221320Z-latency.svg".into());
        let md = r.to_markdown();
        let ratios = md.find("## Peregrine / nginx").unwrap();
        let caveat = md.find(DRIFT_NOTE).unwrap();
        let per_server = md.find("## Per server").unwrap();
        assert!(ratios < caveat && caveat < per_server, "{md}");
        assert!(md.contains(
            "| keep-alive, 64 connections | 2.00× | 3.00× | ≥ 1.5× | yes | 1.00× | 1.00× |"
        ));
        assert!(md.contains("Peregrine / nginx: **0.50×** (2,048 B vs 4,096 B per connection"));
        assert!(md.contains("Instructions per request: not supported on this machine."));
        assert!(md.contains("](20231114T221320Z-latency.svg)"));
        assert!(md.contains("| peregrine | 10,000 / 10,000 | 0.0 MiB | 19.5 MiB | 2,048 B |"));
        assert!(md.contains("h2load"));
        assert!(md.contains("failed: wrk timed out"));
        // p50 / p99 / p99.9 (missing) / instructions per request.
        assert!(md.contains("| 500 us | 1.50 ms | n/a | 20,000 |"));
    }

    #[test]
    fn without_nginx_says_ratios_unavailable() {
        let r = report(vec![run(1, PEREGRINE, Ok(measurement(1.0, 3, 1.0, 0)))], &[PEREGRINE]);
        assert!(r.to_markdown().contains("Ratios unavailable: nginx was not measured"));
        let r = report(vec![run(1, NGINX, Ok(measurement(1.0, 3, 1.0, 0)))], &[NGINX]);
        assert!(r.to_markdown().contains("Ratios unavailable: Peregrine was not measured"));
    }

    #[test]
    fn idle_shortfall_and_quick_mode_are_stated() {
        let mut r = report(vec![], &[PEREGRINE]);
        r.config.quick = true;
        r.config.idle_connections = 2000;
        let mut short = idle(1500, 1_000_000, 2_000_000);
        short.target = 2000;
        short.stopped_by = Some("connect to 127.0.0.1:1: Cannot assign requested address".into());
        r.idle = vec![IdleRecord { server: PEREGRINE.into(), outcome: Ok(short) }];
        let md = r.to_markdown();
        assert!(md.contains("| peregrine | 1,500 / 2,000 |"), "{md}");
        assert!(md.contains("stopped at 1,500 of 2,000: connect to"));
        assert!(md.contains("Quick mode: fewer connections"));
        assert!(md.contains("2,000 HTTP/1.1 keep-alive connections"));
    }

    #[test]
    fn number_formatting() {
        assert_eq!(fmt_count(84694.88), "84,695");
        assert_eq!(fmt_count(999.0), "999");
        assert_eq!(fmt_count(1_000_000.0), "1,000,000");
        assert_eq!(fmt_count(-1234.0), "−1,234");
        assert_eq!(fmt_us(644.0), "644 us");
        assert_eq!(fmt_us(1170.0), "1.17 ms");
        assert_eq!(fmt_us(2_500_000.0), "2.50 s");
        assert_eq!(fmt_bytes(4521.3), "4,521 B");
        assert_eq!(fmt_mib(13_107_200), "12.5 MiB");
    }
}

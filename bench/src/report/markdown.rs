//! The human-readable report. It leads with the Peregrine/peer ratios and the
//! drift caveat, because within-run ratios are the only numbers that carry
//! from one run (or machine) to the next.

use std::fmt::Write as _;

use super::{Report, DRIFT_NOTE, NGINX, PEREGRINE};
use crate::perf;
use crate::scenario::Load;

impl Report {
    /// The human-readable report.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Peregrine load benchmark — {}\n", self.started.iso8601());
        self.ratios_section(&mut md);
        let _ = writeln!(md, "\n**Compare ratios, not absolute numbers.** {DRIFT_NOTE}");
        self.per_server_section(&mut md);
        self.request_time_section(&mut md);
        self.latency_section(&mut md);
        self.idle_section(&mut md);
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
        let _ = writeln!(md, "## Peregrine / peer (ratio of medians over {rounds} round(s))\n");
        if !self.has_server(PEREGRINE) {
            md.push_str(
                "Ratios unavailable: Peregrine was not measured in this run (see Notes).\n",
            );
            return;
        }
        md.push_str(
            "| scenario | peer | req/s | req per server-CPU-s | target (per CPU-s) | met | \
             kernel ceiling | p99 latency | mean request time | instructions/req |\n",
        );
        md.push_str("|---|---|---:|---:|---:|:---:|---:|---:|---:|---:|\n");
        for s in &self.scenarios {
            if !self.has_server(s.peer) {
                let _ = writeln!(
                    md,
                    "| {} | {} | n/a: {} not measured (see Notes) | | {} | n/a | | | | |",
                    s.description,
                    s.peer,
                    s.peer,
                    fmt_target(s.target_cpu_ratio)
                );
                continue;
            }
            let r = self.ratios(s.name);
            let per_cpu = r.and_then(|r| r.req_per_cpu_s);
            let met = match (per_cpu, s.target_cpu_ratio) {
                (_, None) => "—",
                (Some(x), Some(target)) if x >= target => "yes",
                (Some(_), Some(_)) => "no",
                (None, Some(_)) => "n/a",
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {met} | {} | {} | {} | {} |",
                s.description,
                s.peer,
                fmt_ratio(r.and_then(|r| r.req_per_s)),
                fmt_ratio(per_cpu),
                fmt_target(s.target_cpu_ratio),
                fmt_ratio(r.and_then(|r| r.kernel_ceiling)),
                fmt_ratio(r.and_then(|r| r.p99)),
                fmt_ratio(r.and_then(|r| r.mean_request)),
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
            "\nHigher is better for req/s and req per server-CPU-s; lower is better for latency, \
             instructions per request and memory. The kernel ceiling is Peregrine's requests \
             per second of its kernel time alone over the peer's per CPU-second: the ratio \
             Peregrine would reach if its user space cost nothing and its kernel work stayed \
             the same, so a target above it cannot be met by user-space work. For the \
             handshake scenario a request is a \
             connection: a full TLS 1.3 handshake, one HTTP/1.0 request, close. p99 comes from \
             wrk only; h2load gives a mean request time instead (no percentiles), s_time neither.",
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
            "| scenario | server | req/s | req per server-CPU-s | server CPU | kernel share | p50 | \
             p99 | p99.9 | instructions/req | errors (median / total) | runs ok |\n",
        );
        md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for s in &self.scenarios {
            for server in self.servers_in(s) {
                let Some(sum) = self.summary(s.name, &server.name) else {
                    let why = self
                        .first_error(s.name, &server.name)
                        .unwrap_or("no run")
                        .replace('|', "\\|");
                    let _ = writeln!(
                        md,
                        "| {} | {} | failed: {why} | | | | | | | | | 0/{} |",
                        s.description,
                        server.name,
                        self.runs_of(s.name, &server.name)
                    );
                    continue;
                };
                let flag = if sum.errors_total > 0 { " ⚠" } else { "" };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {}{flag} | {}/{} |",
                    s.description,
                    server.name,
                    fmt_count(sum.req_per_s),
                    sum.req_per_cpu_s.map_or("n/a".into(), fmt_count),
                    sum.cpu_utilisation.map_or("n/a".into(), |u| format!("{:.0}%", u * 100.0)),
                    sum.kernel_share.map_or("n/a".into(), |k| format!("{:.0}%", k * 100.0)),
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
             req per server-CPU-s is the number to read. `kernel share` is the part of the \
             server's CPU time spent in the kernel (on loopback that includes the client's TCP \
             receive path, which runs in the sending server's context). Latency percentiles come from wrk's \
             histogram through the scripts' `done` hook. Pipelined percentiles are per batch of \
             16 (wrk records one latency per pipelined write) and approximate; `n/a` marks a \
             percentile wrk reported as impossible (wg/wrk#354), or a tool that prints none \
             (h2load, s_time). ⚠ marks errors: failed requests, non-2xx answers, socket \
             errors; a failed run's first error is shown in place of its numbers.\n",
        );
    }

    /// h2load's own latency figures: it prints min / max / mean / sd of the
    /// request time, not percentiles.
    fn request_time_section(&self, md: &mut String) {
        let h2: Vec<_> =
            self.scenarios.iter().filter(|s| matches!(s.load, Load::H2load { .. })).collect();
        if h2.is_empty() {
            return;
        }
        md.push_str(
            "\n## HTTP/2 request time (h2load)\n\n\
             h2load prints the min, max, mean and standard deviation of the time from sending a \
             request to its last byte, not percentiles. Mean and sd are medians over rounds; max \
             is the largest of any round.\n\n\
             | scenario | server | mean | sd | max |\n|---|---|---:|---:|---:|\n",
        );
        for s in h2 {
            for server in self.servers_in(s) {
                let Some(sum) = self.summary(s.name, &server.name) else { continue };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} |",
                    s.description,
                    server.name,
                    sum.mean_request_us.map_or("n/a".into(), fmt_us),
                    sum.sd_request_us.map_or("n/a".into(), fmt_us),
                    sum.max_request_us.map_or("n/a".into(), fmt_us),
                );
            }
        }
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
            "| server | path | connections (open / asked) | RSS before | RSS after | bytes per \
             connection |\n|---|---|---:|---:|---:|---:|\n",
        );
        let mut shortfalls = Vec::new();
        for record in &self.idle {
            match &record.outcome {
                Ok(m) => {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} / {} | {} | {} | {} |",
                        record.server,
                        record.path,
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
                    let _ = writeln!(
                        md,
                        "| {} | {} | failed: {first_line} | | | |",
                        record.server, record.path
                    );
                }
            }
        }
        let _ = writeln!(
            md,
            "\nEach server is started fresh for each path; {target} keep-alive connections \
             (HTTP/1.1, h2c, or over TLS with the run's certificate) each send one \
             `GET /plaintext`, read the response and stay open idle (HTTP/2 ones acknowledge \
             the server's SETTINGS). nginx has no h2c and its TLS listener no h2 here. Bytes per connection = \
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
            "- HTTP/1.1 load: {} (`-t1 --latency`, `keepalive.lua`/`pipeline.lua`), peer nginx",
            c.wrk_version
        );
        let _ = writeln!(
            md,
            "- HTTP/2 load: {} (`-t1 -cN -mM -D SECS`, h2c prior knowledge or h2 by ALPN over \
             TLS), peer h2o",
            c.h2load_version.as_deref().unwrap_or("h2load not found")
        );
        let _ = writeln!(
            md,
            "- TLS handshakes: {} (`s_time -new -www /plaintext`, one process per client, a \
             full handshake per connection, never resumed), peer nginx; certificate: \
             self-signed ECDSA P-256 made for this run, shared by all servers",
            c.openssl_version.as_deref().unwrap_or("openssl not found")
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

fn fmt_target(target: Option<f64>) -> String {
    target.map_or("none".into(), |t| format!("≥ {t}×"))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{idle, measurement, report, run};
    use super::super::{IdleRecord, RunRecord, H2O};
    use super::*;
    use crate::h2load::RequestTime;
    use crate::wrk::Percentiles;

    #[test]
    fn leads_with_ratios_then_the_drift_caveat() {
        let runs = vec![
            run(1, PEREGRINE, Ok(measurement(200.0, 600, 2.0, 0))),
            run(1, NGINX, Ok(measurement(100.0, 300, 3.0, 0))),
            run(2, PEREGRINE, Err("wrk timed out".into())),
        ];
        let mut r = report(runs, &[PEREGRINE, NGINX]);
        r.idle = vec![
            IdleRecord {
                server: PEREGRINE.into(),
                path: "HTTP/1.1",
                outcome: Ok(idle(10_000, 0, 20_480_000)),
            },
            IdleRecord {
                server: NGINX.into(),
                path: "HTTP/1.1",
                outcome: Ok(idle(10_000, 0, 40_960_000)),
            },
        ];
        r.plot_file = Some("20231114T221320Z-latency.svg".into());
        let md = r.to_markdown();
        let ratios = md.find("## Peregrine / peer").unwrap();
        let caveat = md.find(DRIFT_NOTE).unwrap();
        let per_server = md.find("## Per server").unwrap();
        assert!(ratios < caveat && caveat < per_server, "{md}");
        assert!(md.contains(
            "| keep-alive, 64 connections | nginx | 2.00× | 3.00× | ≥ 1.5× | yes | 4.00× | 1.00× | \
             n/a | 1.00× |"
        ));
        assert!(md.contains("Peregrine / nginx: **0.50×** (2,048 B vs 4,096 B per connection"));
        assert!(md.contains("Instructions per request: not supported on this machine."));
        assert!(md.contains("](20231114T221320Z-latency.svg)"));
        assert!(md
            .contains("| peregrine | HTTP/1.1 | 10,000 / 10,000 | 0.0 MiB | 19.5 MiB | 2,048 B |"));
        assert!(md.contains("h2load"));
        assert!(md.contains("failed: wrk timed out"));
        // p50 / p99 / p99.9 (missing) / instructions per request.
        assert!(md.contains("| 75% | 500 us | 1.50 ms | n/a | 20,000 |"));
    }

    #[test]
    fn a_missing_peer_is_named_per_scenario() {
        let r = report(vec![run(1, PEREGRINE, Ok(measurement(1.0, 3, 1.0, 0)))], &[PEREGRINE]);
        let md = r.to_markdown();
        assert!(md.contains(
            "| keep-alive, 64 connections | nginx | n/a: nginx not measured (see Notes) |"
        ));
        assert!(md.contains("| h2c, 16 connections × 10 streams | h2o | n/a: h2o not measured"));
        let r = report(vec![run(1, NGINX, Ok(measurement(1.0, 3, 1.0, 0)))], &[NGINX]);
        assert!(r.to_markdown().contains("Ratios unavailable: Peregrine was not measured"));
    }

    #[test]
    fn h2_scenarios_compare_with_h2o_and_flag_failures() {
        let h2 = |server: &str, outcome| RunRecord {
            round: 1,
            scenario: "h2c-c16-m10",
            server: server.into(),
            outcome,
        };
        let mut h2o = measurement(100.0, 300, 3.0, 7);
        h2o.latency = Percentiles::default();
        h2o.request_time =
            Some(RequestTime { min_us: 90.0, max_us: 2030.0, mean_us: 315.0, sd_us: 86.0 });
        let runs = vec![
            run(1, PEREGRINE, Ok(measurement(200.0, 600, 2.0, 0))),
            run(1, NGINX, Ok(measurement(100.0, 300, 3.0, 0))),
            h2(PEREGRINE, Err("h2load completed no request over h2c | x\nmore".into())),
            h2(H2O, Ok(h2o)),
        ];
        let md = report(runs, &[PEREGRINE, NGINX, H2O]).to_markdown();
        // The h2 row compares with h2o and has no ratio while Peregrine fails.
        assert!(md.contains(
            "| h2c, 16 connections × 10 streams | h2o | n/a | n/a | ≥ 1.3× | n/a | n/a | n/a | n/a \
             | n/a |"
        ));
        assert!(md.contains(
            "| h2c, 16 connections × 10 streams | peregrine | failed: h2load completed no \
             request over h2c \\| x | | | | | | | | | 0/1 |"
        ));
        // h2o's errors are flagged; its request time has its own table.
        assert!(md.contains("| 7 / 7 ⚠ | 1/1 |"), "{md}");
        assert!(
            md.contains("| h2c, 16 connections × 10 streams | h2o | 315 us | 86 us | 2.03 ms |")
        );
        // h2o takes no part in HTTP/1.1 rows, nginx none in HTTP/2 rows.
        assert!(!md.contains("| keep-alive, 64 connections | h2o |"));
        assert!(!md.contains("| h2c, 16 connections × 10 streams | nginx |"));
        // The handshake scenario is recorded without a target.
        assert!(md.contains(
            "| TLS 1.3 full handshake + 1 request per connection, 4 clients | \
             nginx | n/a | n/a | none | — |"
        ));
    }

    #[test]
    fn idle_shortfall_and_quick_mode_are_stated() {
        let mut r = report(vec![], &[PEREGRINE]);
        r.config.quick = true;
        r.config.idle_connections = 2000;
        let mut short = idle(1500, 1_000_000, 2_000_000);
        short.target = 2000;
        short.stopped_by = Some("connect to 127.0.0.1:1: Cannot assign requested address".into());
        r.idle =
            vec![IdleRecord { server: PEREGRINE.into(), path: "HTTP/1.1", outcome: Ok(short) }];
        let md = r.to_markdown();
        assert!(md.contains("| peregrine | HTTP/1.1 | 1,500 / 2,000 |"), "{md}");
        assert!(md.contains("stopped at 1,500 of 2,000: connect to"));
        assert!(md.contains("Quick mode: fewer connections"));
        assert!(md.contains("2,000 keep-alive connections"));
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

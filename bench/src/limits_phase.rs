//! `--limits`: what the per-client limits cost on the wall clock. The same Peregrine runs
//! twice on the server CPU, with the limits off and on (`max_connections_per_ip` and
//! `rate_limit`, set high enough never to refuse the load), and wrk keep-alive (64 and 256
//! connections) alternates between them; the figure is requests per server-CPU-second. The
//! instruction-count side of the same question is `--instructions`' "limits on" row.

use std::fmt::Write as _;
use std::path::Path;

use peregrine_bench::peers;
use peregrine_bench::report::RunMeasurement;
use peregrine_bench::scenario::{Scenario, SCENARIOS};
use peregrine_bench::servers::{self, Server};
use peregrine_bench::sys::UtcTime;

use crate::{cli, describe, measure, peregrine_binary, Bench};

/// The main table's keep-alive scenarios (64 and 256 connections).
fn scenarios() -> Vec<Scenario> {
    SCENARIOS.iter().filter(|s| s.name.starts_with("keepalive")).copied().collect()
}

/// Runs the phase and writes `<stem>-limits.md`.
pub(crate) fn run(cli: &cli::Cli, bench: &Bench, out_dir: &Path) -> Result<(), String> {
    let started = UtcTime::now();
    let binary = peregrine_binary(cli)?;
    let off = peers::peregrine_config(None);
    let on = format!(
        "{off}\n[limits]\nmax_connections_per_ip = 100000\n\
         rate_limit = {{ requests_per_second = 1e9, burst = 100000 }}\n"
    );
    let mut servers: Vec<(&str, Server)> = Vec::new();
    for (label, config) in [("limits off", &off), ("limits on", &on)] {
        let s = servers::start_peregrine_with(
            &bench.launcher,
            &cli.server_cpus,
            &binary,
            config,
            false,
        )?;
        servers::check_plaintext(s.addr())?;
        servers.push((label, s));
    }
    let rounds = cli.rounds();
    let scenarios = scenarios();
    let mut results: Vec<(&str, &str, RunMeasurement)> = Vec::new();
    for round in 1..=rounds {
        for scenario in &scenarios {
            let mut order: Vec<usize> = (0..servers.len()).collect();
            if round % 2 == 0 {
                order.reverse();
            }
            for i in order {
                let (label, server) = &mut servers[i];
                let outcome = measure(bench, server, scenario, &mut None);
                eprintln!(
                    "[limits round {round}/{rounds}] {:<16} {label:<10} {}",
                    scenario.name,
                    describe(&outcome)
                );
                if let Ok(m) = outcome {
                    results.push((scenario.name, *label, m));
                }
            }
        }
    }
    drop(servers);
    let mut md = String::from("## Per-client limits: cost on the wall clock\n\n");
    let _ = writeln!(
        md,
        "The same Peregrine with the per-client limits off and on (never refusing), medians \
         over {rounds} round(s) of {} s, requests per server-CPU-second.\n",
        bench.duration_s
    );
    md.push_str("| scenario | limits off | limits on | on ÷ off |\n|---|---:|---:|---:|\n");
    for s in &scenarios {
        let median = |label: &str| {
            let mut v: Vec<f64> = results
                .iter()
                .filter(|(n, l, _)| *n == s.name && *l == label)
                .filter_map(|(_, _, m)| m.req_per_cpu_s())
                .collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied()
        };
        let (off, on) = (median("limits off"), median("limits on"));
        let ratio = match (off, on) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:.3}", b / a),
            _ => "—".into(),
        };
        let cell = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.0}"));
        let _ = writeln!(md, "| {} | {} | {} | {ratio} |", s.name, cell(off), cell(on));
    }
    print!("{md}");
    peregrine_bench::report::write_markdown(out_dir, started, "limits", &md)
}

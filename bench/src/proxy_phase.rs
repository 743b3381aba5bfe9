//! `--proxy`: the reverse-proxy benchmark. Peregrine (`[[route]]` to an `[[upstream]]`),
//! nginx (`proxy_pass` with upstream keep-alive, `proxy_http_version 1.1`) and h2o
//! (`proxy.reverse.url`) each run as a proxy on the server CPU, one worker each, in front of
//! the same upstream: a Peregrine serving `/plaintext`, pinned with the load generator so
//! its work is not counted. Rounds are interleaved; the figure is requests per
//! proxy-CPU-second (the proxy's own CPU time only), with p99 latency beside it.
//!
//! nginx 1.22 cannot serve h2c and HTTP/1.1 on one port, so the h2c scenario compares
//! Peregrine with h2o only.

use std::fmt::Write as _;
use std::path::Path;

use peregrine_bench::peers;
use peregrine_bench::report::{median, PhaseMedians, RunMeasurement, H2O, NGINX, PEREGRINE};
use peregrine_bench::scenario::{Load, Scenario};
use peregrine_bench::servers::{self, Launcher, NginxTemplates, Server};
use peregrine_bench::sys::{self, UtcTime};

use crate::{cli, describe, h2o_binary, measure, nginx_binary, peregrine_binary, Bench};

/// Peregrine forwarding to the upstream program it hosts as an `[[app]]`.
const PEREGRINE_APP: &str = "peregrine (app)";
/// nginx also sending the forwarding fields Peregrine sends by default: the same work.
const NGINX_FORWARDING: &str = "nginx (forwarding)";
/// nginx as a reverse proxy to `{{UPSTREAM}}` (a port on 127.0.0.1).
const NGINX_PROXY: &str = include_str!("../peers/nginx-proxy.conf");
/// The `proxy_set_header` lines that make nginx send the forwarding fields Peregrine sends
/// by default (its `$request_id` is 32 random hex digits; Peregrine's id is a per-thread
/// prefix and a counter).
const NGINX_FORWARDING_HEADERS: &str = concat!(
    "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n",
    "            proxy_set_header X-Forwarded-Proto $scheme;\n",
    "            proxy_set_header X-Forwarded-Host $host;\n",
    "            proxy_set_header X-Request-Id $request_id;",
);

/// nginx's proxy configuration for an upstream on `upstream_port`: as the issue describes it
/// (`proxy_pass` alone), or also sending the forwarding fields, the same work Peregrine does.
pub(crate) fn nginx_proxy_conf(upstream_port: u16, forwarding: bool) -> String {
    let headers = if forwarding { NGINX_FORWARDING_HEADERS } else { "" };
    NGINX_PROXY
        .replace("{{UPSTREAM}}", &upstream_port.to_string())
        .replace("{{PROXY_HEADERS}}", headers)
}
const H2O_PROXY: &str = include_str!("../peers/h2o-proxy.conf");

/// The proxy scenarios: wrk keep-alive at two concurrency levels, and h2load h2c with 100
/// streams per connection (the shapes).
const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "proxy-keepalive-c64",
        description: "proxy, keep-alive, 64 connections",
        load: Load::Wrk { connections: 64, pipeline_depth: 1 },
        peer: NGINX,
        target_cpu_ratio: Some(1.5),
        quick: true,
    },
    Scenario {
        name: "proxy-keepalive-c256",
        description: "proxy, keep-alive, 256 connections",
        load: Load::Wrk { connections: 256, pipeline_depth: 1 },
        peer: NGINX,
        target_cpu_ratio: Some(1.5),
        quick: true,
    },
    Scenario {
        name: "proxy-h2c-c16-m100",
        description: "proxy, h2c, 16 connections × 100 streams",
        load: Load::H2load { connections: 16, streams: 100, tls: false },
        peer: H2O,
        target_cpu_ratio: Some(1.3),
        quick: true,
    },
];

/// Runs the proxy phase and writes `<stem>-proxy.md`.
pub(crate) fn run(cli: &cli::Cli, bench: &Bench, out_dir: &Path) -> Result<(), String> {
    let started = UtcTime::now();
    let binary = peregrine_binary(cli)?;
    let launcher: &Launcher = &bench.launcher;
    // The upstream: Peregrine's /plaintext, on the load generator's CPU.
    let upstream = servers::start_peregrine(launcher, &bench.wrk_cpus, &binary, None)?;
    servers::check_plaintext(upstream.addr())?;
    let port = upstream.addr().port().to_string();
    eprintln!("upstream: peregrine on {} (CPU {})", upstream.addr(), bench.wrk_cpus);

    let mut proxies: Vec<Server> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let config = format!(
        "{}\n[[route]]\nupstream = \"app\"\n\n[[upstream]]\nname = \"app\"\n\
         [[upstream.server]]\naddress = \"http://{}\"\n",
        peers::peregrine_config(None),
        upstream.addr()
    );
    match servers::start_peregrine_with(launcher, &cli.server_cpus, &binary, &config, false) {
        Ok(s) => proxies.push(s),
        Err(e) => return Err(format!("Peregrine as a proxy did not start: {e}")),
    }
    // The same upstream program, started and supervised by Peregrine as a hosted app (on
    // the load generator's CPU like the other upstream): what app hosting adds to proxying.
    let app_config = format!(
        "{}
[[route]]
app = \"bench\"

[[app]]
name = \"bench\"
start = \"at_start\"
         command = \"sh -c 'exec taskset -c {} {} --listen 127.0.0.1:$PORT --threads 1 --no-pin'\"
",
        peers::peregrine_config(None),
        bench.wrk_cpus,
        binary.display()
    );
    match servers::start_peregrine_with(launcher, &cli.server_cpus, &binary, &app_config, false) {
        Ok(s) => proxies.push(s.named(PEREGRINE_APP).own_cpu_only()),
        Err(e) => notes.push(format!("Peregrine hosting the upstream as an app skipped: {e}")),
    }
    for (name, forwarding) in [(NGINX, false), (NGINX_FORWARDING, true)] {
        let nginx_conf = nginx_proxy_conf(upstream.addr().port(), forwarding);
        match nginx_binary(cli).and_then(|bin| {
            let templates = NginxTemplates { main: &nginx_conf, tls: "" };
            servers::start_nginx(launcher, &cli.server_cpus, &bin, templates, None)
        }) {
            Ok(s) => proxies.push(s.named(name)),
            Err(e) => notes.push(format!("{name} skipped: {e}")),
        }
    }
    let h2o_conf = H2O_PROXY.replace("{{UPSTREAM}}", &port);
    match h2o_binary(cli)
        .and_then(|bin| servers::start_h2o(launcher, &cli.server_cpus, &bin, &h2o_conf, None))
    {
        Ok(s) => proxies.push(s),
        Err(e) => notes.push(format!("h2o skipped: {e}")),
    }
    for p in &proxies {
        servers::check_plaintext(p.addr()).map_err(|e| format!("{} as a proxy: {e}", p.name()))?;
        eprintln!("proxy: {} — pid {} on {}", p.name(), p.pid(), p.addr());
    }

    let takes_part = |s: &Scenario, server: &Server| {
        // nginx 1.22 has no h2c on an HTTP/1.1 port.
        !(matches!(s.load, Load::H2load { .. })
            && [NGINX, NGINX_FORWARDING].contains(&server.name()))
    };
    let rounds = cli.rounds();
    let mut results: Vec<(&'static str, String, RunMeasurement)> = Vec::new();
    for round in 1..=rounds {
        for scenario in &SCENARIOS {
            let mut order: Vec<usize> =
                (0..proxies.len()).filter(|&i| takes_part(scenario, &proxies[i])).collect();
            if round % 2 == 0 {
                order.reverse();
            }
            for i in order {
                let outcome = measure(bench, &mut proxies[i], scenario, &mut None);
                eprintln!(
                    "[proxy round {round}/{rounds}] {:<22} {:<9} {}",
                    scenario.name,
                    proxies[i].name(),
                    describe(&outcome)
                );
                match outcome {
                    Ok(m) => results.push((scenario.name, proxies[i].name().to_owned(), m)),
                    Err(e) => notes.push(format!("{} {}: {e}", scenario.name, proxies[i].name())),
                }
            }
        }
    }
    drop(proxies);
    drop(upstream);

    let markdown = table(&results, rounds, &notes, bench);
    print!("{markdown}");
    peregrine_bench::report::write_markdown(out_dir, started, "proxy", &markdown)
}

/// The Markdown report: per scenario and proxy, the medians over the rounds, and
/// Peregrine's ratio to each peer.
fn table(
    results: &[(&'static str, String, RunMeasurement)],
    rounds: u32,
    notes: &[String],
    bench: &Bench,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Reverse proxy: requests per proxy-CPU-second\n");
    let _ = writeln!(
        md,
        "Medians over {rounds} round(s) of {} s; one worker per proxy on the server CPU, the \
         upstream (Peregrine `/plaintext`) and the load generator on CPU {}. {}\n",
        bench.duration_s,
        bench.wrk_cpus,
        sys::MachineInfo::detect().cpu_model.unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "| scenario | proxy | req/s | req/CPU-s | kernel share | p99 / mean latency | \
         Peregrine ÷ proxy (req/CPU-s) | kernel ceiling |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|");
    for scenario in &SCENARIOS {
        let of = |server: &str| -> Vec<&RunMeasurement> {
            results
                .iter()
                .filter(|(s, n, _)| *s == scenario.name && n == server)
                .map(|r| &r.2)
                .collect()
        };
        let ours = PhaseMedians::of(&of(PEREGRINE));
        for server in [PEREGRINE, PEREGRINE_APP, NGINX, NGINX_FORWARDING, H2O] {
            let runs = of(server);
            if runs.is_empty() {
                continue;
            }
            let rps = median(runs.iter().map(|m| m.req_per_s)).unwrap_or(0.0);
            let m = PhaseMedians::of(&runs);
            let latency = match scenario.load {
                Load::H2load { .. } => {
                    median(runs.iter().filter_map(|m| m.request_time.map(|t| t.mean_us)))
                        .map_or("n/a".into(), |us| format!("mean {us:.0} µs"))
                }
                _ => median(runs.iter().filter_map(|m| m.latency.p99()))
                    .map_or("n/a".into(), |us| format!("p99 {us:.0} µs")),
            };
            let (ratio, ceiling) = match server {
                PEREGRINE => ("—".into(), "—".into()),
                _ => (m.ratio_cell(ours.req_per_cpu_s), m.ratio_cell(ours.req_per_kernel_s)),
            };
            let _ = writeln!(
                md,
                "| {} | {server} | {rps:.0} | {} | {} | {latency} | {ratio} | {ceiling} |",
                scenario.name,
                m.req_per_cpu_s.map_or("n/a".into(), |c| format!("{c:.0}")),
                m.kernel_share_cell(),
            );
        }
    }
    md.push_str(
        "\nTargets: ≥ 1.5× nginx and ≥ 1.3× h2o per proxy-CPU-second; `peregrine (app)` \
         (the upstream started by Peregrine as a hosted app) the same as `peregrine`. \
         `nginx (forwarding)` also sends `X-Forwarded-For`, `-Proto`, `-Host` and \
         `X-Request-Id`, as Peregrine does by default; the targets are set against `nginx`. \
         The kernel ceiling is the ratio Peregrine would reach if its user space cost \
         nothing (its requests per kernel-second over the proxy's per CPU-second).\n",
    );
    for note in notes {
        let _ = writeln!(md, "\n- {note}");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::nginx_proxy_conf;

    #[test]
    fn the_forwarding_peer_differs_only_by_its_forwarding_fields() {
        let bare = nginx_proxy_conf(5000, false);
        let forwarding = nginx_proxy_conf(5000, true);
        for conf in [&bare, &forwarding] {
            assert!(conf.contains("server 127.0.0.1:5000;"), "{conf}");
            assert!(!conf.contains("{{UPSTREAM}}") && !conf.contains("{{PROXY_HEADERS}}"));
        }
        assert!(!bare.contains("X-Forwarded"), "{bare}");
        for field in ["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id"] {
            assert!(forwarding.contains(&format!("proxy_set_header {field} $")), "{field}");
        }
        let extra: Vec<&str> = forwarding.lines().filter(|l| !bare.contains(l)).collect();
        assert_eq!(extra.len(), 4, "{extra:?}");
    }
}

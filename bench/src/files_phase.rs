//! `--files`: the static-file benchmark. Peregrine (`[[route]] root`), nginx (`sendfile on`,
//! `open_file_cache`) and h2o (`file.dir`) serve the same directory, one worker each on the
//! server CPU, the load generator on the other. Rounds are interleaved; the figures are
//! requests per server-CPU-second and, for the large files, server CPU seconds per GiB sent.
//!
//! The files are 1 KiB (the open-file cache's and the small-file path's cost), 1 MiB and
//! 100 MiB (the sending path's cost: splice or sendfile on cleartext, encryption on TLS).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use peregrine_bench::peers::{self, TlsFiles};
use peregrine_bench::report::{median, PhaseMedians, RunMeasurement, H2O, NGINX, PEREGRINE};
use peregrine_bench::scenario::{Load, Scenario};
use peregrine_bench::servers::{self, Launcher, NginxTemplates, Server};
use peregrine_bench::sys::{self, UtcTime};

use crate::{cli, describe, h2o_binary, measure_path, nginx_binary, peregrine_binary, Bench};

const NGINX_FILES: &str = include_str!("../peers/nginx-files.conf");
const NGINX_FILES_TLS: &str = include_str!("../peers/nginx-files-tls.conf");
const H2O_FILES: &str = include_str!("../peers/h2o-files.conf");

/// The files served: (name, size).
const FILES: [(&str, u64); 3] = [("1k.bin", 1024), ("1m.bin", 1 << 20), ("100m.bin", 100 << 20)];

/// A scenario, the path it asks for, and the response body's size.
struct FileScenario {
    scenario: Scenario,
    path: &'static str,
    size: u64,
    /// Only Peregrine serves it (the response cache).
    peregrine_only: bool,
}

const fn scenario(
    name: &'static str,
    description: &'static str,
    load: Load,
    path: &'static str,
    target: Option<f64>,
) -> FileScenario {
    FileScenario {
        scenario: Scenario {
            name,
            description,
            load,
            peer: NGINX,
            target_cpu_ratio: target,
            quick: true,
        },
        path,
        size: size_of(path),
        peregrine_only: false,
    }
}

/// `/plaintext`'s body, `Hello, World!`.
const PLAINTEXT_SIZE: u64 = 13;

const SCENARIOS: [FileScenario; 7] = [
    FileScenario {
        scenario: Scenario {
            name: "plaintext-c64",
            description: "/plaintext (fixed response), keep-alive, 64 connections",
            load: Load::Wrk { connections: 64, pipeline_depth: 1 },
            peer: NGINX,
            target_cpu_ratio: None,
            quick: true,
        },
        path: "/plaintext",
        size: PLAINTEXT_SIZE,
        peregrine_only: false,
    },
    FileScenario {
        scenario: Scenario {
            name: "cache-hit-c64",
            description: "a proxied /plaintext from the response cache, keep-alive, 64 connections",
            load: Load::Wrk { connections: 64, pipeline_depth: 1 },
            peer: NGINX,
            target_cpu_ratio: None,
            quick: true,
        },
        path: "/cached/plaintext",
        size: PLAINTEXT_SIZE,
        peregrine_only: true,
    },
    scenario(
        "files-1k-c64",
        "1 KiB file, keep-alive, 64 connections",
        Load::Wrk { connections: 64, pipeline_depth: 1 },
        "/1k.bin",
        Some(1.5),
    ),
    scenario(
        "files-1m-c16",
        "1 MiB file, keep-alive, 16 connections",
        Load::Wrk { connections: 16, pipeline_depth: 1 },
        "/1m.bin",
        None,
    ),
    scenario(
        "files-100m-c4",
        "100 MiB file, keep-alive, 4 connections",
        Load::Wrk { connections: 4, pipeline_depth: 1 },
        "/100m.bin",
        None,
    ),
    scenario(
        "files-1k-tls-c64",
        "1 KiB file over TLS, keep-alive, 64 connections",
        Load::WrkTls { connections: 64 },
        "/1k.bin",
        Some(1.5),
    ),
    scenario(
        "files-1m-tls-c16",
        "1 MiB file over TLS, keep-alive, 16 connections",
        Load::WrkTls { connections: 16 },
        "/1m.bin",
        None,
    ),
];

const fn size_of(path: &str) -> u64 {
    // `const`: the scenario table is built at compile time.
    let p = path.as_bytes();
    let mut i = 0;
    while i < FILES.len() {
        let name = FILES[i].0.as_bytes();
        if p.len() == name.len() + 1 && eq_tail(p, name) {
            return FILES[i].1;
        }
        i += 1;
    }
    0
}

/// Whether `path` is `/` followed by `name`.
const fn eq_tail(path: &[u8], name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        if path[i + 1] != name[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Writes the site: each file of pseudo-random bytes (no compression can shortcut them).
fn write_site(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in &mut block {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    for (name, size) in FILES {
        let path = dir.join(name);
        let mut content = Vec::with_capacity(size as usize);
        while (content.len() as u64) < size {
            let n = (size as usize - content.len()).min(block.len());
            content.extend_from_slice(&block[..n]);
        }
        fs::write(&path, &content).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs the file phase and writes `<stem>-files.md`.
pub(crate) fn run(cli: &cli::Cli, bench: &Bench, out_dir: &Path) -> Result<(), String> {
    let started = UtcTime::now();
    let binary = peregrine_binary(cli)?;
    let launcher: &Launcher = &bench.launcher;
    let site = bench.scratch.join("site");
    write_site(&site)?;
    let site_text = site.display().to_string();
    let mut notes: Vec<String> = Vec::new();
    let tls: Option<TlsFiles> = match bench.openssl.as_deref() {
        Some(openssl) => match peers::generate_certificate(openssl, &bench.scratch) {
            Ok(files) => Some(files),
            Err(e) => {
                notes.push(format!("no certificate ({e}): TLS scenarios skipped"));
                None
            }
        },
        None => {
            notes.push("openssl not found: TLS scenarios skipped".into());
            None
        }
    };

    // The cache's upstream: a Peregrine serving /plaintext on the load generator's CPU.
    let upstream = servers::start_peregrine(launcher, &bench.wrk_cpus, &binary, None)?;
    servers::check_plaintext(upstream.addr())?;
    let mut servers: Vec<Server> = Vec::new();
    let config = format!(
        "{}\n[cache]\ndefault_ttl = \"1h\"\n\n\
         [[route]]\npath = \"/plaintext\"\nbody = \"Hello, World!\"\n\n\
         [[route]]\npath_prefix = \"/cached/\"\nstrip_prefix = true\nupstream = \"up\"\ncache = true\n\n\
         [[route]]\npath_prefix = \"/\"\nroot = {:?}\n\n\
         [[upstream]]\nname = \"up\"\n[[upstream.server]]\naddress = \"http://{}\"\n",
        peers::peregrine_config(tls.as_ref()),
        site_text,
        upstream.addr()
    );
    match servers::start_peregrine_with(launcher, &cli.server_cpus, &binary, &config, tls.is_some())
    {
        Ok(s) => servers.push(s),
        Err(e) => return Err(format!("Peregrine did not start: {e}")),
    }
    let nginx_main = NGINX_FILES.replace("{{SITE}}", &site_text);
    let nginx_tls = NGINX_FILES_TLS.replace("{{SITE}}", &site_text);
    match nginx_binary(cli).and_then(|bin| {
        let templates = NginxTemplates { main: &nginx_main, tls: &nginx_tls };
        servers::start_nginx(launcher, &cli.server_cpus, &bin, templates, tls.as_ref())
    }) {
        Ok(s) => servers.push(s),
        Err(e) => notes.push(format!("nginx skipped: {e}")),
    }
    let h2o_conf = H2O_FILES.replace("{{SITE}}", &site_text);
    match h2o_binary(cli).and_then(|bin| {
        servers::start_h2o(launcher, &cli.server_cpus, &bin, &h2o_conf, tls.as_ref())
    }) {
        Ok(s) => servers.push(s),
        Err(e) => notes.push(format!("h2o skipped: {e}")),
    }
    for s in &servers {
        servers::check_plaintext(s.addr()).map_err(|e| format!("{}: {e}", s.name()))?;
        eprintln!("files: {} — pid {} on {}", s.name(), s.pid(), s.addr());
    }

    let rounds = cli.rounds();
    let mut results: Vec<(&'static str, String, RunMeasurement)> = Vec::new();
    for round in 1..=rounds {
        for fs in &SCENARIOS {
            let mut order: Vec<usize> = (0..servers.len())
                .filter(|&i| !fs.peregrine_only || servers[i].name() == PEREGRINE)
                .collect();
            if round % 2 == 0 {
                order.reverse();
            }
            for i in order {
                let outcome =
                    measure_path(bench, &mut servers[i], &fs.scenario, fs.path, &mut None);
                eprintln!(
                    "[files round {round}/{rounds}] {:<18} {:<9} {}",
                    fs.scenario.name,
                    servers[i].name(),
                    describe(&outcome)
                );
                match outcome {
                    Ok(m) => {
                        // wrk counts a large file still downloading when the run ends as a
                        // timeout: noted, the run kept.
                        if m.errors > 0 {
                            notes.push(format!(
                                "{} {}: {} wrk errors (timeouts at the run's end)",
                                fs.scenario.name,
                                servers[i].name(),
                                m.errors
                            ));
                        }
                        results.push((fs.scenario.name, servers[i].name().to_owned(), m))
                    }
                    Err(e) => {
                        notes.push(format!("{} {}: {e}", fs.scenario.name, servers[i].name()))
                    }
                }
            }
        }
    }
    drop(servers);
    drop(upstream);

    let markdown = table(&results, rounds, &notes, bench);
    print!("{markdown}");
    peregrine_bench::report::write_markdown(out_dir, started, "files", &markdown)
}

/// The Markdown report: per scenario and server, the medians over the rounds, Peregrine's
/// ratio to each peer per server-CPU-second, and server CPU per GiB sent.
fn table(
    results: &[(&'static str, String, RunMeasurement)],
    rounds: u32,
    notes: &[String],
    bench: &Bench,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Static files: requests per server-CPU-second, CPU per GiB\n");
    let _ = writeln!(
        md,
        "Medians over {rounds} round(s) of {} s; one worker per server on the server CPU, \
         the load generator (wrk) on CPU {}. {}\n",
        bench.duration_s,
        bench.wrk_cpus,
        sys::MachineInfo::detect().cpu_model.unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "| scenario | server | req/s | MiB/s | req/CPU-s | CPU-s per GiB | kernel share | \
         p99 latency | Peregrine ÷ server (req/CPU-s) | kernel ceiling |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for fs in &SCENARIOS {
        let name = fs.scenario.name;
        let size = fs.size as f64;
        let of = |server: &str| -> Vec<&RunMeasurement> {
            results.iter().filter(|(s, n, _)| *s == name && n == server).map(|r| &r.2).collect()
        };
        let ours = PhaseMedians::of(&of(PEREGRINE));
        for server in [PEREGRINE, NGINX, H2O] {
            let runs = of(server);
            if runs.is_empty() {
                continue;
            }
            let rps = median(runs.iter().map(|m| m.req_per_s)).unwrap_or(0.0);
            let m = PhaseMedians::of(&runs);
            let per_gib = m.req_per_cpu_s.map(|c| (1u64 << 30) as f64 / (c * size));
            let p99 = median(runs.iter().filter_map(|m| m.latency.p99()))
                .map_or("n/a".into(), |us| format!("{us:.0} µs"));
            let (ratio, ceiling) = match server {
                PEREGRINE => ("—".into(), "—".into()),
                _ => (m.ratio_cell(ours.req_per_cpu_s), m.ratio_cell(ours.req_per_kernel_s)),
            };
            let _ = writeln!(
                md,
                "| {name} | {server} | {rps:.0} | {:.0} | {} | {} | {} | {p99} | {ratio} | \
                 {ceiling} |",
                rps * size / (1 << 20) as f64,
                m.req_per_cpu_s.map_or("n/a".into(), |c| format!("{c:.0}")),
                per_gib.map_or("n/a".into(), |g| format!("{g:.3}")),
                m.kernel_share_cell(),
            );
        }
    }
    let per_cpu = |name: &str| {
        median(
            results
                .iter()
                .filter(|(s, n, _)| *s == name && n == PEREGRINE)
                .filter_map(|r| r.2.req_per_cpu_s()),
        )
    };
    if let (Some(plain), Some(hit)) = (per_cpu("plaintext-c64"), per_cpu("cache-hit-c64")) {
        let _ = writeln!(
            md,
            "\nA cache hit costs {:.2}× a fixed `/plaintext` response (server CPU per request).",
            plain / hit
        );
    }
    md.push_str(
        "\nTargets: the 1 KiB file ≥ 1.5× nginx per server-CPU-second; large files' server \
         CPU per GiB ≤ nginx's; a cache hit ≤ 1.2× a `/plaintext` response. The kernel \
         ceiling is the ratio Peregrine would reach if its user space cost nothing (its \
         requests per kernel-second over the server's per CPU-second).\n",
    );
    for note in notes {
        let _ = writeln!(md, "\n- {note}");
    }
    md
}

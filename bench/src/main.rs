//! `peregrine-bench`: starts Peregrine, nginx and h2o pinned to one core,
//! drives them with wrk (HTTP/1.1), h2load (HTTP/2: h2c and TLS) and
//! `openssl s_time` (full TLS handshakes) pinned to another, and reports
//! requests/s, requests per server-CPU-second, latency, instructions per
//! request (where `perf` can count them) and memory per idle connection, with
//! Peregrine/peer ratios (nginx for HTTP/1.1 and handshakes, h2o for HTTP/2).
//! See `bench/README.md`.

mod attack;
mod cli;
mod files_phase;
mod limits_phase;
mod proxy_phase;
mod soak;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use peregrine_bench::h2load::RequestTime;
use peregrine_bench::instructions;
use peregrine_bench::peers::{self, TlsFiles};
use peregrine_bench::perf::{self, PerfRun};
use peregrine_bench::report::{
    IdleRecord, Report, RunConfig, RunMeasurement, RunRecord, ServerInfo, H2O, NGINX, PEREGRINE,
};
use peregrine_bench::scenario::{self, Load, Scenario, PATH};
use peregrine_bench::servers::{self, Launcher, NginxTemplates, Server, TempDir};
use peregrine_bench::sys::{self, MachineInfo, UtcTime};
use peregrine_bench::wrk::Percentiles;
use peregrine_bench::{h2load, idle, plot, procstat, stime, wrk};

/// nginx config templates; placeholders are filled in per run.
const NGINX_TEMPLATES: NginxTemplates<'static> = NginxTemplates {
    main: include_str!("../peers/nginx.conf"),
    tls: include_str!("../peers/nginx-tls.conf"),
};
/// h2o config template; placeholders are filled in per run.
const H2O_TEMPLATE: &str = include_str!("../peers/h2o.conf");
/// wrk keep-alive script (only the `done` hook), written to the run's temp
/// dir for wrk to load.
const KEEPALIVE_LUA: &str = include_str!("../keepalive.lua");
/// wrk pipelining script (pipelined request and the same `done` hook).
const PIPELINE_LUA: &str = include_str!("../pipeline.lua");

/// Descriptors the harness keeps for itself (wrk pipes, /proc reads, logs)
/// when sizing the idle-connection phase to its open-files limit.
const FD_HEADROOM: u64 = 256;

/// A release build with fat LTO on a 2-core box takes minutes; this only
/// guards against a wedged build, not a slow one.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Slack on top of the run length before a load run is declared hung: the
/// tools need time to connect and to print their reports after the run.
const WRK_SLACK: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args().skip(1)) {
        Ok(Some(cli)) => cli,
        Ok(None) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Everything that owns a process lives inside `run`, so its Drop guards
    // stop the servers before we exit, on errors and panics alike.
    let outcome = if cli.soak {
        soak::run(&cli)
    } else if cli.instructions {
        run_instructions(&cli)
    } else if cli.proxy || cli.limits || cli.files {
        run_phase(&cli)
    } else {
        run(&cli)
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The crate lives in `<workspace>/bench`.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench/ has a parent").to_path_buf()
}

/// Everything a single measurement needs besides the server.
#[derive(Clone)]
struct Bench {
    wrk: PathBuf,
    /// h2load, when installed (the HTTP/2 scenarios are skipped without it).
    h2load: Option<PathBuf>,
    /// The openssl CLI, when installed (the TLS scenarios need it).
    openssl: Option<PathBuf>,
    launcher: Launcher,
    wrk_cpus: String,
    clk_tck: u64,
    duration_s: u64,
    keepalive_script: PathBuf,
    pipeline_script: PathBuf,
    /// `perf`, when it can count instructions here.
    perf: Option<PathBuf>,
    /// Scratch dir for perf's output files.
    scratch: PathBuf,
}

/// A server the harness can start, and start again: the idle-memory phase
/// measures a fresh process of each.
enum ServerKind {
    Peregrine(PathBuf),
    Nginx(PathBuf),
    H2o(PathBuf),
}

impl ServerKind {
    fn name(&self) -> &'static str {
        match self {
            ServerKind::Peregrine(_) => PEREGRINE,
            ServerKind::Nginx(_) => NGINX,
            ServerKind::H2o(_) => H2O,
        }
    }

    /// Starts the server, with a TLS listener when `tls` is given, and checks
    /// it serves `/plaintext` on its cleartext port.
    ///
    /// A Peregrine that rejects the TLS/HTTP/2 listener config (one built
    /// before those landed) is started again with only a cleartext listener,
    /// so the HTTP/1.1 scenarios still run; a note says why, and its TLS runs
    /// fail one by one with "no TLS listener".
    fn start(
        &self,
        launcher: &Launcher,
        cpus: &str,
        tls: Option<&TlsFiles>,
        notes: &mut Vec<String>,
    ) -> Result<Server, String> {
        let server = match self {
            ServerKind::Peregrine(binary) => {
                match servers::start_peregrine(launcher, cpus, binary, tls) {
                    Ok(server) => server,
                    Err(e) if tls.is_some() => {
                        let first = e.lines().next().unwrap_or_default();
                        eprintln!("peregrine: no TLS listener ({first}); retrying cleartext only");
                        notes.push(format!(
                            "Peregrine did not start with a TLS listener, so it runs with a \
                             cleartext listener only and its TLS scenarios fail: {e}"
                        ));
                        servers::start_peregrine(launcher, cpus, binary, None)?
                    }
                    Err(e) => return Err(e),
                }
            }
            ServerKind::Nginx(binary) => {
                servers::start_nginx(launcher, cpus, binary, NGINX_TEMPLATES, tls)?
            }
            ServerKind::H2o(binary) => {
                servers::start_h2o(launcher, cpus, binary, H2O_TEMPLATE, tls)?
            }
        };
        servers::check_plaintext(server.addr())?;
        Ok(server)
    }
}

/// Writes wrk's keep-alive and pipelining scripts into `dir` for wrk to load; returns
/// their paths.
fn write_wrk_scripts(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let keepalive = dir.join("keepalive.lua");
    let pipeline = dir.join("pipeline.lua");
    for (path, text) in [(&keepalive, KEEPALIVE_LUA), (&pipeline, PIPELINE_LUA)] {
        fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok((keepalive, pipeline))
}

/// `--proxy` (the reverse-proxy benchmark, `proxy_phase.rs`) or `--limits` (the per-client
/// limits' cost, `limits_phase.rs`): a run of its own beside the main one.
fn run_phase(cli: &cli::Cli) -> Result<(), String> {
    let wrk = sys::find_program("wrk", &["/usr/bin/wrk", "/usr/local/bin/wrk"])
        .ok_or("wrk not found on PATH; install it (apt-get install wrk)")?;
    let h2load = sys::find_program("h2load", &["/usr/bin/h2load", "/usr/local/bin/h2load"]);
    let _ = sys::raise_nofile_limit();
    TempDir::remove_stale();
    let scratch = TempDir::new("proxy").map_err(|e| format!("cannot create temp dir: {e}"))?;
    let (keepalive_script, pipeline_script) = write_wrk_scripts(scratch.path())?;
    let bench = Bench {
        wrk,
        h2load,
        openssl: sys::find_program("openssl", &["/usr/bin/openssl"]),
        launcher: Launcher::detect(!cli.no_pin),
        wrk_cpus: cli.wrk_cpus.clone(),
        clk_tck: procstat::clock_ticks_per_second(),
        duration_s: cli.duration_s(),
        keepalive_script,
        pipeline_script,
        perf: None,
        scratch: scratch.path().to_owned(),
    };
    let out_dir =
        cli.out.clone().unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
    if cli.files {
        files_phase::run(cli, &bench, &out_dir)
    } else if cli.limits {
        limits_phase::run(cli, &bench, &out_dir)
    } else {
        proxy_phase::run(cli, &bench, &out_dir)
    }
}

/// `--instructions`: user-space instructions per request under callgrind, for Peregrine and
/// the peers found (see `instructions.rs`), printed as a Markdown table and written beside
/// the other reports.
fn run_instructions(cli: &cli::Cli) -> Result<(), String> {
    let valgrind = instructions::find_valgrind()
        .ok_or("valgrind not found (apt-get install valgrind): no instruction counts")?;
    let h2load = sys::find_program("h2load", &["/usr/bin/h2load", "/usr/local/bin/h2load"])
        .ok_or("h2load not found (apt-get install nghttp2-client)")?;
    let launcher = Launcher::detect(!cli.no_pin);
    TempDir::remove_stale();
    let scratch =
        TempDir::new("instructions").map_err(|e| format!("cannot create temp dir: {e}"))?;
    let cpus = cli.server_cpus.clone();
    let mut servers: Vec<(String, instructions::Start)> = Vec::new();
    let mut notes = Vec::new();
    let kinds = [
        (!cli.peers_only).then(|| peregrine_binary(cli).map(ServerKind::Peregrine)),
        (!cli.no_nginx).then(|| nginx_binary(cli).map(ServerKind::Nginx)),
        (!cli.no_h2o).then(|| h2o_binary(cli).map(ServerKind::H2o)),
    ];
    for kind in kinds.into_iter().flatten() {
        match kind {
            Ok(kind) => {
                let name = kind.name().to_string();
                let cpus = cpus.clone();
                let start: instructions::Start = Box::new(move |launcher: &Launcher| {
                    kind.start(launcher, &cpus, None, &mut Vec::new())
                });
                servers.push((name, start));
            }
            Err(e) => notes.push(format!("skipped: {e}")),
        }
    }
    // The same Peregrine with the per-client limits on (issue: they may cost at most 5%),
    // set high enough never to refuse the load.
    if let Some(binary) = (!cli.peers_only).then(|| peregrine_binary(cli).ok()).flatten() {
        let cpus = cpus.clone();
        let config = format!(
            "{}\n[limits]\nmax_connections_per_ip = 100000\n\
             rate_limit = {{ requests_per_second = 1e9, burst = 100000 }}\n",
            peers::peregrine_config(None)
        );
        let start: instructions::Start = Box::new(move |launcher: &Launcher| {
            servers::start_peregrine_with(launcher, &cpus, &binary, &config, false)
        });
        servers.push((instructions::WITH_LIMITS.to_string(), start));
    }
    // The reverse proxies, in front of a Peregrine `/plaintext` run plainly (not counted).
    let upstream = match (!cli.peers_only).then(|| peregrine_binary(cli)).transpose() {
        Ok(binary) => binary
            .map(|b| servers::start_peregrine(&launcher, &cpus, &b, None).map(|s| (b, s)))
            .transpose()
            .unwrap_or_else(|e| {
                notes.push(format!("reverse proxy skipped: its upstream did not start: {e}"));
                None
            }),
        Err(_) => None,
    };
    if let Some((binary, up)) = &upstream {
        let (proxy_cpus, binary) = (cpus.clone(), binary.clone());
        let config = format!(
            "{}\n[[route]]\nupstream = \"app\"\n\n[[upstream]]\nname = \"app\"\n\
             [[upstream.server]]\naddress = \"http://{}\"\n",
            peers::peregrine_config(None),
            up.addr()
        );
        // The same with the route's cache on; the upstream sends no freshness, so the
        // cache's default_ttl keeps its answer.
        let cache_config = config.replace(
            "upstream = \"app\"\n",
            "upstream = \"app\"\ncache = true\n\n[cache]\ndefault_ttl = \"1h\"\n",
        );
        for (name, config) in
            [(instructions::PEREGRINE_PROXY, config), (instructions::PEREGRINE_CACHE, cache_config)]
        {
            let (cpus, binary) = (proxy_cpus.clone(), binary.clone());
            let start: instructions::Start = Box::new(move |launcher: &Launcher| {
                servers::start_peregrine_with(launcher, &cpus, &binary, &config, false)
            });
            servers.push((name.to_string(), start));
        }
        if let Some(Ok(nginx)) = (!cli.no_nginx).then(|| nginx_binary(cli)) {
            for (name, forwarding) in
                [(instructions::NGINX_PROXY, false), (instructions::NGINX_PROXY_FORWARDING, true)]
            {
                let (cpus, nginx) = (cpus.clone(), nginx.clone());
                let conf = proxy_phase::nginx_proxy_conf(up.addr().port(), forwarding);
                let start: instructions::Start = Box::new(move |launcher: &Launcher| {
                    let templates = NginxTemplates { main: &conf, tls: "" };
                    servers::start_nginx(launcher, &cpus, &nginx, templates, None)
                });
                servers.push((name.to_string(), start));
            }
        }
    }
    let out_dir =
        cli.out.clone().unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
    let started = UtcTime::now();
    let keep =
        cli.keep_profiles.then(|| out_dir.join(format!("{}-callgrind", started.file_stamp())));
    let counts = instructions::measure(
        &servers,
        &launcher,
        &valgrind,
        &h2load,
        scratch.path(),
        keep.as_deref(),
    );
    drop(upstream);
    let mut report = String::from(
        "## User-space instructions per request (callgrind)\n\nEach figure: (instructions of \
         a 60,000-request h2load run - those of a 20,000-request run) / 40,000, each run in a \
         fresh server process under `valgrind --tool=callgrind`, one worker or thread.\n\n",
    );
    report.push_str(&instructions::table(&counts));
    for note in &notes {
        report.push_str(&format!("\n- {note}"));
    }
    println!("{report}");
    peregrine_bench::report::write_markdown(&out_dir, started, "instructions", &report)
}

fn run(cli: &cli::Cli) -> Result<(), String> {
    let started = UtcTime::now();
    let machine = MachineInfo::detect();
    let mut notes = Vec::new();

    let wrk_bin = sys::find_program("wrk", &["/usr/bin/wrk", "/usr/local/bin/wrk"])
        .ok_or("wrk not found on PATH; install it (apt-get install wrk)")?;
    // `wrk -v` appends a copyright notice to the version; keep the version.
    let wrk_version = sys::first_output_line(&wrk_bin, &["-v"])
        .map(|v| v.split(" Copyright").next().unwrap_or_default().trim().to_owned())
        .unwrap_or_else(|| "wrk".into());
    let h2load_bin = sys::find_program("h2load", &["/usr/bin/h2load", "/usr/local/bin/h2load"]);
    let h2load_version =
        h2load_bin.as_deref().and_then(|bin| sys::first_output_line(bin, &["--version"]));
    let openssl_bin = sys::find_program("openssl", &["/usr/bin/openssl"]);
    let openssl_version =
        openssl_bin.as_deref().and_then(|bin| sys::first_output_line(bin, &["version"]));

    let mut scenarios = scenario::select(cli.quick, &cli.scenarios)?;
    if h2load_bin.is_none() && scenarios.iter().any(|s| matches!(s.load, Load::H2load { .. })) {
        notes.push(
            "h2load not found (apt-get install nghttp2-client): HTTP/2 scenarios skipped.".into(),
        );
        scenarios.retain(|s| !matches!(s.load, Load::H2load { .. }));
    }
    if openssl_bin.is_none() && scenarios.iter().any(|s| s.load.tls()) {
        notes.push(
            "openssl CLI not found: no certificate and no s_time, TLS scenarios skipped.".into(),
        );
        scenarios.retain(|s| !s.load.tls());
    }
    if scenarios.is_empty() {
        return Err("no scenario left to run (see the notes above)".into());
    }

    // Pinning: server and wrk on separate cores is the point of the setup, so
    // only fall back to unpinned with a loud note.
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut pin = !cli.no_pin;
    if pin && cpus < 2 && !cli.cpus_explicit {
        notes.push(format!(
            "Only {cpus} CPU available: servers and wrk run unpinned and compete for it."
        ));
        pin = false;
    }
    let launcher = Launcher::detect(pin);
    if pin && !launcher.pins() {
        notes.push("taskset not found (util-linux): servers and wrk run unpinned.".into());
    }
    if launcher.pins() && cli.server_cpus == cli.wrk_cpus {
        notes.push(format!("Servers and wrk share CPU {}: numbers mix both loads.", cli.wrk_cpus));
    }

    // 10,000 idle connections need as many descriptors, in the harness and
    // in the server; children inherit the raised soft limit.
    let nofile_limit = match sys::raise_nofile_limit() {
        Ok(limit) => Some(limit),
        Err(e) => {
            notes.push(format!("Could not raise the open-files limit: {e}."));
            None
        }
    };
    let perf_support = perf::Support::probe();

    let clk_tck = procstat::clock_ticks_per_second();
    let rounds = cli.rounds();
    let duration_s = cli.duration_s();
    eprintln!(
        "machine: nproc {} | {} | {}",
        machine.nproc,
        machine.kernel,
        machine.cpu_model.as_deref().unwrap_or("unknown CPU")
    );
    eprintln!(
        "load generators: {wrk_version} | {} | {}",
        h2load_version.as_deref().unwrap_or("no h2load"),
        openssl_version.as_deref().unwrap_or("no openssl")
    );
    match &perf_support {
        perf::Support::Available(_) => eprintln!("instructions: perf stat -e instructions"),
        perf::Support::Unavailable(why) => eprintln!("instructions: {why}"),
    }

    TempDir::remove_stale();
    let scratch = TempDir::new("run").map_err(|e| format!("cannot create temp dir: {e}"))?;
    let (keepalive_script, pipeline_script) = write_wrk_scripts(scratch.path())?;
    // One certificate per run, shared by every TLS listener.
    let tls = match (&openssl_bin, scenarios.iter().any(|s| s.load.tls())) {
        (Some(openssl), true) => match peers::generate_certificate(openssl, scratch.path()) {
            Ok(files) => Some(files),
            Err(e) => {
                notes.push(format!("No TLS certificate, TLS scenarios skipped: {e}"));
                scenarios.retain(|s| !s.load.tls());
                None
            }
        },
        _ => None,
    };
    // Reports go next to each other under one stem, the chart included.
    let out_dir =
        cli.out.clone().unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
    let stem = started.file_stamp();

    // The servers that can be started, in the order they go first in odd
    // rounds; then one running process of each (each a Drop guard). A peer
    // is started only when a selected scenario compares against it.
    let wants = |peer: &str| scenarios.iter().any(|s| s.peer == peer);
    let mut kinds: Vec<ServerKind> = Vec::new();
    if cli.peers_only {
        notes.push("Peregrine skipped (--peers-only).".into());
    } else {
        match peregrine_binary(cli) {
            Ok(binary) => kinds.push(ServerKind::Peregrine(binary)),
            Err(e) => {
                eprintln!("peregrine: skipped: {e}");
                notes.push(format!("Peregrine skipped: {e}"));
            }
        }
    }
    if wants(NGINX) && cli.no_nginx {
        notes.push("nginx skipped (--no-nginx); HTTP/1.1 and handshake ratios unavailable.".into());
    } else if wants(NGINX) {
        match nginx_binary(cli) {
            Ok(binary) => kinds.push(ServerKind::Nginx(binary)),
            Err(e) => {
                eprintln!("nginx: skipped: {e}");
                notes.push(format!("nginx skipped, its ratios unavailable: {e}"));
            }
        }
    }
    if wants(H2O) && cli.no_h2o {
        notes.push("h2o skipped (--no-h2o): HTTP/2 scenarios run Peregrine alone.".into());
    } else if wants(H2O) {
        match h2o_binary(cli) {
            Ok(binary) => kinds.push(ServerKind::H2o(binary)),
            Err(e) => {
                eprintln!("h2o: skipped: {e}");
                notes.push(format!(
                    "h2o skipped, HTTP/2 scenarios run Peregrine alone (no ratios): {e}"
                ));
            }
        }
    }
    let mut servers: Vec<Server> = Vec::new();
    kinds.retain(|kind| match kind.start(&launcher, &cli.server_cpus, tls.as_ref(), &mut notes) {
        Ok(server) => {
            servers.push(server);
            true
        }
        Err(e) => {
            eprintln!("{}: skipped: {e}", kind.name());
            notes.push(format!("{} skipped: {e}", kind.name()));
            false
        }
    });
    if servers.is_empty() {
        return Err("no server could be started; nothing to benchmark".into());
    }
    for server in &servers {
        eprintln!(
            "{}: {} — pid {} on {}{}{}",
            server.name(),
            server.version(),
            server.pid(),
            server.addr(),
            server.tls_addr().map(|a| format!(" and {a} (TLS)")).unwrap_or_default(),
            if launcher.pins() { format!(", CPU {}", cli.server_cpus) } else { String::new() }
        );
    }

    let bench = Bench {
        wrk: wrk_bin,
        h2load: h2load_bin,
        openssl: openssl_bin,
        launcher,
        wrk_cpus: cli.wrk_cpus.clone(),
        clk_tck,
        duration_s,
        keepalive_script,
        pipeline_script,
        perf: match &perf_support {
            perf::Support::Available(path) => Some(path.clone()),
            perf::Support::Unavailable(_) => None,
        },
        scratch: scratch.path().to_owned(),
    };
    let mut perf_error = None;

    let takes_part = |scenario: &Scenario, server: &Server| {
        server.name() == PEREGRINE || server.name() == scenario.peer
    };
    if cli.warmup_s > 0 {
        for server in &mut servers {
            // Each server warms up on the first scenario it takes part in.
            let Some(first) = scenarios.iter().find(|s| takes_part(s, server)) else { continue };
            eprintln!("warm-up: {} for {} s ({})", server.name(), cli.warmup_s, first.name);
            // No perf during warm-up: nothing is recorded, so skip its attach delay.
            let warm = Bench { duration_s: cli.warmup_s, perf: None, ..bench.clone() };
            if let Err(e) = measure(&warm, server, first, &mut None) {
                eprintln!("warm-up of {} failed: {e}", server.name());
            }
        }
    }

    let per_round: usize =
        scenarios.iter().map(|s| servers.iter().filter(|v| takes_part(s, v)).count()).sum();
    let total = rounds as usize * per_round;
    eprintln!(
        "running {total} runs × {duration_s} s ({rounds} round(s), {} scenarios, {} server(s))",
        scenarios.len(),
        servers.len()
    );
    let mut runs = Vec::with_capacity(total);
    for round in 1..=rounds {
        for scenario in &scenarios {
            // Alternate who goes first so slow drift (thermal, neighbours)
            // does not systematically favour one server.
            let mut order: Vec<usize> =
                (0..servers.len()).filter(|&i| takes_part(scenario, &servers[i])).collect();
            if round % 2 == 0 {
                order.reverse();
            }
            for i in order {
                let server = &mut servers[i];
                let outcome = measure(&bench, server, scenario, &mut perf_error);
                eprintln!(
                    "[round {round}/{rounds}] {:<16} {:<9} {}",
                    scenario.name,
                    server.name(),
                    describe(&outcome)
                );
                runs.push(RunRecord {
                    round,
                    scenario: scenario.name,
                    server: server.name().to_owned(),
                    outcome,
                });
            }
        }
    }

    // Stop the load-phase servers: the idle phase wants fresh processes, and
    // nothing else is left to measure.
    let server_infos: Vec<ServerInfo> = servers
        .iter()
        .map(|s| ServerInfo { name: s.name().to_owned(), version: s.version().to_owned() })
        .collect();
    drop(servers);
    if let Some(e) = perf_error {
        notes.push(format!("perf stat failed on some runs (instructions left out): {e}"));
    }

    let idle_connections = idle_target(cli.idle_conns(), nofile_limit, &mut notes);
    // Idle memory: every server on every path it speaks (h2o too: it is the HTTP/2 peer).
    let idle = if idle_connections == 0 {
        Vec::new()
    } else {
        measure_idle(&kinds, &bench.launcher, &cli.server_cpus, idle_connections, tls.as_ref())
    };

    let mut report = Report {
        started,
        machine,
        config: RunConfig {
            quick: cli.quick,
            rounds,
            duration_s,
            warmup_s: cli.warmup_s,
            server_cpus: cli.server_cpus.clone(),
            wrk_cpus: cli.wrk_cpus.clone(),
            pinned: bench.launcher.pins(),
            clk_tck,
            wrk_version,
            h2load_version,
            openssl_version,
            perf: perf_support,
            idle_connections,
            nofile_limit,
        },
        servers: server_infos,
        scenarios,
        runs,
        idle,
        plot_file: None,
        notes,
    };

    fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let plot_name = format!("{stem}-latency.svg");
    let title = format!("Latency percentiles, medians over {rounds} round(s) — {stem}");
    match plot::latency_svg(&report.latency_series(), &title) {
        Ok(svg) => match fs::write(out_dir.join(&plot_name), svg) {
            Ok(()) => report.plot_file = Some(plot_name),
            Err(e) => report.notes.push(format!("Latency chart not written: {e}")),
        },
        Err(e) => report.notes.push(format!("Latency chart not drawn: {e}")),
    }

    let markdown = report.to_markdown();
    print!("{markdown}");
    let md_path = out_dir.join(format!("{stem}.md"));
    let json_path = out_dir.join(format!("{stem}.json"));
    fs::write(&md_path, &markdown)
        .map_err(|e| format!("cannot write {}: {e}", md_path.display()))?;
    fs::write(&json_path, report.to_json())
        .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    match &report.plot_file {
        Some(plot) => eprintln!(
            "wrote {}, {} and {}",
            md_path.display(),
            json_path.display(),
            out_dir.join(plot).display()
        ),
        None => eprintln!("wrote {} and {}", md_path.display(), json_path.display()),
    }
    Ok(())
}

/// Idle connections to ask for: `wanted`, capped so the harness stays within
/// its open-files limit (each connection is one descriptor here).
fn idle_target(wanted: usize, nofile_limit: Option<u64>, notes: &mut Vec<String>) -> usize {
    let Some(limit) = nofile_limit else { return wanted };
    let room = usize::try_from(limit.saturating_sub(FD_HEADROOM)).unwrap_or(usize::MAX);
    if wanted > room {
        notes.push(format!(
            "Idle connections capped at {room} (of {wanted}) by the open-files limit of \
             {limit}; raise it with `ulimit -n` (hard limit) to measure more."
        ));
        room
    } else {
        wanted
    }
}

/// Memory per idle connection for each server kind, each in a fresh process
/// that is stopped again before the next one starts.
fn measure_idle(
    kinds: &[ServerKind],
    launcher: &Launcher,
    cpus: &str,
    connections: usize,
    tls: Option<&TlsFiles>,
) -> Vec<IdleRecord> {
    let mut records = Vec::new();
    for kind in kinds {
        for path in idle::Path::ALL {
            // nginx's cleartext listener has no h2c and its TLS listener no h2 here; the TLS
            // paths need the run's certificate (made when a TLS scenario is selected).
            let speaks = match kind {
                ServerKind::Nginx(_) => !matches!(path, idle::Path::H2c | idle::Path::TlsH2),
                _ => true,
            };
            if !speaks || (path.tls() && tls.is_none()) {
                continue;
            }
            eprintln!(
                "idle memory: {} over {} with {connections} connections",
                kind.name(),
                path.label()
            );
            let outcome = idle_one(kind, launcher, cpus, connections, path, tls);
            match &outcome {
                Ok(m) => eprintln!(
                    "idle memory: {:<9} {:<17} {} open, RSS {} -> {} KiB, {} B/connection{}",
                    kind.name(),
                    path.label(),
                    m.open_at_sample,
                    m.rss_before / 1024,
                    m.rss_after / 1024,
                    m.bytes_per_connection().map_or("n/a".into(), |b| format!("{b:.0}")),
                    m.stopped_by.as_deref().map(|e| format!(" (stopped: {e})")).unwrap_or_default()
                ),
                Err(e) => eprintln!("idle memory: {} {} FAILED: {e}", kind.name(), path.label()),
            }
            records.push(IdleRecord {
                server: kind.name().to_owned(),
                path: path.label(),
                outcome,
            });
        }
    }
    records
}

/// One fresh server process, measured with idle connections on `path`.
fn idle_one(
    kind: &ServerKind,
    launcher: &Launcher,
    cpus: &str,
    connections: usize,
    path: idle::Path,
    tls: Option<&TlsFiles>,
) -> Result<idle::IdleMemory, String> {
    let tls = tls.filter(|_| path.tls());
    let mut server = kind.start(launcher, cpus, tls, &mut Vec::new())?;
    let (addr, config) = match tls {
        Some(files) => {
            let addr = server.tls_addr().ok_or("the server has no TLS listener")?;
            (addr, Some(idle::tls_client_config(path, &files.certificate)?))
        }
        None => (server.addr(), None),
    };
    idle::measure(&mut server, connections, &idle::Client { path, addr, tls: config })
}

/// Builds Peregrine (unless told not to) and returns the binary to run.
fn peregrine_binary(cli: &cli::Cli) -> Result<PathBuf, String> {
    let binary = match &cli.peregrine {
        Some(path) => path.clone(),
        None => {
            let root = workspace_root();
            // Respect CARGO_TARGET_DIR like cargo itself does.
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(|dir| root.join(PathBuf::from(dir)))
                .unwrap_or_else(|| root.join("target"));
            if !cli.no_build {
                build_peregrine(&root)?;
            }
            target.join("release").join("peregrine")
        }
    };
    if !binary.is_file() {
        return Err(format!(
            "{} not found; build it with `cargo build --release -p peregrine` \
             (or pass --peregrine PATH)",
            binary.display()
        ));
    }
    Ok(binary)
}

/// `cargo build --release -p peregrine`, output forwarded to our stderr so the
/// report on stdout stays clean.
fn build_peregrine(workspace: &Path) -> Result<(), String> {
    // `cargo run` execs the harness, so this nested cargo does not wait on
    // the outer one's lock.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    eprintln!("building Peregrine: cargo build --release -p peregrine (skip with --no-build)");
    let mut child = Command::new(&cargo)
        .args(["build", "--release", "-p", "peregrine"])
        .current_dir(workspace)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .spawn()
        .map_err(|e| format!("cannot run {cargo:?}: {e}"))?;
    match sys::wait_timeout(&mut child, BUILD_TIMEOUT) {
        Ok(Some(status)) if status.success() => Ok(()),
        Ok(Some(status)) => Err(format!(
            "`cargo build --release -p peregrine` failed ({status}); fix the build or pass \
             --no-build/--peers-only"
        )),
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("`cargo build --release -p peregrine` exceeded {BUILD_TIMEOUT:?}"))
        }
        Err(e) => Err(format!("waiting for cargo: {e}")),
    }
}

fn h2o_binary(cli: &cli::Cli) -> Result<PathBuf, String> {
    match &cli.h2o {
        Some(path) => Ok(path.clone()),
        None => sys::find_program("h2o", &["/usr/bin/h2o", "/usr/local/bin/h2o"])
            .ok_or_else(|| "h2o is not installed (apt-get install h2o)".into()),
    }
}

fn nginx_binary(cli: &cli::Cli) -> Result<PathBuf, String> {
    match &cli.nginx {
        Some(path) => Ok(path.clone()),
        None => sys::find_program("nginx", &["/usr/sbin/nginx", "/usr/local/sbin/nginx"])
            .ok_or_else(|| "nginx is not installed (apt-get install nginx-light)".into()),
    }
}

/// One load run against `server`, bracketed by reads of the server's CPU time
/// (its whole process tree) and, where available, counted by `perf stat`. A
/// perf failure leaves the instruction count out (and is kept in
/// `perf_error`); it never fails the run.
fn measure(
    bench: &Bench,
    server: &mut Server,
    scenario: &Scenario,
    perf_error: &mut Option<String>,
) -> Result<RunMeasurement, String> {
    measure_path(bench, server, scenario, PATH, perf_error)
}

/// [`measure`] against `GET path` rather than `/plaintext`.
fn measure_path(
    bench: &Bench,
    server: &mut Server,
    scenario: &Scenario,
    path: &str,
    perf_error: &mut Option<String>,
) -> Result<RunMeasurement, String> {
    server.check_running()?;
    // Build the command lines first: a server without the listener the load
    // needs fails here, before any CPU time is read.
    let load = prepare_load(bench, server, scenario, path)?;

    let perf_run = bench.perf.as_deref().and_then(|perf| {
        let output = bench.scratch.join(format!("perf-{}.csv", server.pid()));
        match PerfRun::start(&bench.launcher, &bench.wrk_cpus, perf, server.pid(), &output) {
            Ok(run) => Some(run),
            Err(e) => {
                perf_error.get_or_insert(format!("cannot start perf: {e}"));
                None
            }
        }
    });
    let cpu_before = server.cpu_ticks().map_err(|e| format!("reading server CPU time: {e}"))?;
    let timeout = Duration::from_secs(bench.duration_s) + WRK_SLACK;
    let result = load.run(timeout);
    let cpu_after = server.cpu_ticks();
    let instructions = perf_run.and_then(|run| match run.finish() {
        Ok(count) => Some(count),
        Err(e) => {
            eprintln!("perf: {e}");
            perf_error.get_or_insert(e);
            None
        }
    });
    server.check_running()?;
    let cpu_after = cpu_after.map_err(|e| format!("reading server CPU time: {e}"))?;
    let stats = result?;
    Ok(RunMeasurement {
        req_per_s: stats.req_per_s,
        total_requests: stats.total_requests,
        elapsed_s: stats.elapsed_s,
        cpu_s: cpu_after.since(cpu_before).total() as f64 / bench.clk_tck as f64,
        system_s: cpu_after.since(cpu_before).system as f64 / bench.clk_tck as f64,
        latency: stats.latency,
        request_time: stats.request_time,
        instructions,
        errors: stats.errors,
    })
}

/// A load ready to run: the command line(s) and how to read their output.
enum PreparedLoad {
    Wrk(Command),
    /// h2load and the application protocol it must negotiate.
    H2load(Command, &'static str),
    /// One `s_time` process per client, run side by side.
    Handshakes(Vec<Command>),
}

/// What a load generator measured, before the server's CPU time is added.
struct LoadStats {
    req_per_s: f64,
    total_requests: u64,
    elapsed_s: f64,
    latency: Percentiles,
    request_time: Option<RequestTime>,
    errors: u64,
}

/// Builds the command line(s) for `scenario` against `server`'s matching
/// listener. Load only ever goes to 127.0.0.1.
fn prepare_load(
    bench: &Bench,
    server: &Server,
    scenario: &Scenario,
    path: &str,
) -> Result<PreparedLoad, String> {
    let no_tls = || format!("{} has no TLS listener (see Notes)", server.name());
    let url = if scenario.load.tls() {
        server.tls_url(path).ok_or_else(no_tls)?
    } else {
        server.url(path)
    };
    // Defence in depth: the servers module only hands out loopback addresses.
    if !(url.starts_with("http://127.0.0.1:") || url.starts_with("https://127.0.0.1:")) {
        return Err(format!("refusing to load a non-loopback URL: {url}"));
    }
    Ok(match scenario.load {
        Load::Wrk { connections, pipeline_depth } => {
            let depth_arg = [pipeline_depth.to_string()];
            let script = if pipeline_depth > 1 {
                (bench.pipeline_script.as_path(), &depth_arg[..])
            } else {
                (bench.keepalive_script.as_path(), &[][..])
            };
            let mut cmd = bench.launcher.command(&bench.wrk_cpus, &bench.wrk);
            cmd.args(wrk::args(&url, connections, bench.duration_s, Some(script)));
            PreparedLoad::Wrk(cmd)
        }
        Load::WrkTls { connections } => {
            let mut cmd = bench.launcher.command(&bench.wrk_cpus, &bench.wrk);
            let script = bench.keepalive_script.as_path();
            cmd.args(wrk::args(&url, connections, bench.duration_s, Some((script, &[][..]))));
            PreparedLoad::Wrk(cmd)
        }
        Load::H2load { connections, streams, tls } => {
            let h2load = bench.h2load.as_deref().ok_or("h2load is not installed")?;
            let mut cmd = bench.launcher.command(&bench.wrk_cpus, h2load);
            cmd.args(h2load::args(&url, connections, streams, bench.duration_s));
            PreparedLoad::H2load(cmd, if tls { "h2" } else { "h2c" })
        }
        Load::TlsHandshake { clients } => {
            let openssl = bench.openssl.as_deref().ok_or("openssl is not installed")?;
            let addr = server.tls_addr().ok_or_else(no_tls)?.to_string();
            let commands = (0..clients)
                .map(|_| {
                    let mut cmd = bench.launcher.command(&bench.wrk_cpus, openssl);
                    cmd.args(stime::args(&addr, path, bench.duration_s));
                    cmd
                })
                .collect();
            PreparedLoad::Handshakes(commands)
        }
    })
}

impl PreparedLoad {
    /// Runs the load (bounded by `timeout`) and reads its results.
    fn run(self, timeout: Duration) -> Result<LoadStats, String> {
        match self {
            PreparedLoad::Wrk(mut cmd) => {
                let out =
                    sys::run_with_timeout(&mut cmd, timeout).map_err(|e| format!("wrk: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "wrk failed ({}): {}{}",
                        out.status,
                        out.stderr.trim(),
                        out.stdout.trim()
                    ));
                }
                let stats = wrk::parse_output(&out.stdout)?;
                if !stats.from_hook {
                    return Err(format!(
                        "wrk printed no `{}` line: the Lua script did not run ({})",
                        wrk::HOOK_PREFIX,
                        out.stderr.trim()
                    ));
                }
                Ok(LoadStats {
                    req_per_s: stats.requests_per_sec,
                    total_requests: stats.total_requests,
                    elapsed_s: stats.elapsed_s,
                    latency: stats.latency,
                    request_time: None,
                    errors: stats.errors(),
                })
            }
            PreparedLoad::H2load(mut cmd, protocol) => {
                let out =
                    sys::run_with_timeout(&mut cmd, timeout).map_err(|e| format!("h2load: {e}"))?;
                if !out.status.success() {
                    return Err(format!("h2load failed ({}): {}", out.status, out.stderr.trim()));
                }
                let stats = h2load::parse_output(&out.stdout)?;
                if let Some(got) = stats.protocol.as_deref().filter(|&got| got != protocol) {
                    return Err(format!("h2load negotiated {got}, not {protocol}"));
                }
                if stats.done == 0 {
                    return Err(format!(
                        "h2load completed no request over {protocol} ({} failed){}",
                        stats.failed,
                        stats
                            .protocol
                            .as_ref()
                            .map_or(": no connection was established".into(), |_| {
                                format!(": the server does not answer {protocol}")
                            })
                    ));
                }
                Ok(LoadStats {
                    req_per_s: stats.requests_per_sec,
                    total_requests: stats.succeeded,
                    elapsed_s: stats.elapsed_s,
                    latency: Percentiles::default(),
                    request_time: stats.request_time,
                    errors: stats.errors(),
                })
            }
            PreparedLoad::Handshakes(commands) => {
                let started = Instant::now();
                let workers: Vec<_> = commands
                    .into_iter()
                    .map(|mut cmd| thread::spawn(move || sys::run_with_timeout(&mut cmd, timeout)))
                    .collect();
                let mut reports = Vec::new();
                let mut first_error = None;
                for worker in workers {
                    let outcome = match worker.join() {
                        Ok(Ok(out)) => stime::parse_output(&out.stdout)
                            .map_err(|e| format!("{e} ({})", out.status)),
                        Ok(Err(e)) => Err(format!("s_time: {e}")),
                        Err(_) => Err("s_time runner panicked".into()),
                    };
                    match outcome {
                        Ok(report) => reports.push(report),
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                let elapsed_s = started.elapsed().as_secs_f64();
                if let Some(e) = first_error {
                    return Err(e);
                }
                let connections = stime::combine(&reports)?;
                Ok(LoadStats {
                    req_per_s: connections as f64 / elapsed_s,
                    total_requests: connections,
                    elapsed_s,
                    latency: Percentiles::default(),
                    request_time: None,
                    errors: 0,
                })
            }
        }
    }
}

/// One progress line for stderr.
fn describe(outcome: &Result<RunMeasurement, String>) -> String {
    match outcome {
        Ok(m) => format!(
            "{:>9.0} req/s  {:>9} req/CPU-s  CPU {:>3.0}%  {}  instr/req {:>6}  errors {}",
            m.req_per_s,
            m.req_per_cpu_s().map_or("n/a".into(), |r| format!("{r:.0}")),
            m.cpu_utilisation().unwrap_or(0.0) * 100.0,
            match m.request_time {
                Some(t) => format!("mean {:>6.0} us  max {:>8.0} us", t.mean_us, t.max_us),
                None => format!(
                    "p99 {:>6} us  p99.9 {:>6} us",
                    m.latency.p99().map_or("n/a".into(), |us| format!("{us:.0}")),
                    m.latency.p999().map_or("n/a".into(), |us| format!("{us:.0}"))
                ),
            },
            m.instructions_per_request().map_or("n/a".into(), |i| format!("{i:.0}")),
            m.errors
        ),
        Err(e) => format!("FAILED: {}", e.lines().next().unwrap_or_default()),
    }
}

//! `peregrine-bench`: starts Peregrine and nginx pinned to one core, drives
//! them with wrk pinned to another, and reports requests/s, requests per
//! server-CPU-second, latency percentiles, instructions per request (where
//! `perf` can count them) and memory per idle connection, with
//! Peregrine/nginx ratios. See `bench/README.md`.

mod cli;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use peregrine_bench::perf::{self, PerfRun};
use peregrine_bench::report::{
    IdleRecord, Report, RunConfig, RunMeasurement, RunRecord, ServerInfo, NGINX, PEREGRINE,
};
use peregrine_bench::scenario::{Load, Scenario, PATH, SCENARIOS};
use peregrine_bench::servers::{self, Launcher, Server, TempDir};
use peregrine_bench::sys::{self, MachineInfo, UtcTime};
use peregrine_bench::{idle, plot, procstat, wrk};

/// nginx config template; `{{DIR}}` and `{{PORT}}` are filled in per run.
const NGINX_TEMPLATE: &str = include_str!("../peers/nginx.conf");
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

/// Slack on top of the run length before a wrk run is declared hung: wrk
/// needs time to connect and to print its report after the run.
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
    match run(&cli) {
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
}

impl ServerKind {
    fn name(&self) -> &'static str {
        match self {
            ServerKind::Peregrine(_) => PEREGRINE,
            ServerKind::Nginx(_) => NGINX,
        }
    }

    /// Starts the server and checks it serves `/plaintext`.
    fn start(&self, launcher: &Launcher, cpus: &str) -> Result<Server, String> {
        let server = match self {
            ServerKind::Peregrine(binary) => servers::start_peregrine(launcher, cpus, binary)?,
            ServerKind::Nginx(binary) => {
                servers::start_nginx(launcher, cpus, binary, NGINX_TEMPLATE)?
            }
        };
        servers::check_plaintext(server.addr())?;
        Ok(server)
    }
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
    eprintln!("load generator: {wrk_version}");
    match &perf_support {
        perf::Support::Available(_) => eprintln!("instructions: perf stat -e instructions"),
        perf::Support::Unavailable(why) => eprintln!("instructions: {why}"),
    }

    TempDir::remove_stale();
    let scratch = TempDir::new("run").map_err(|e| format!("cannot create temp dir: {e}"))?;
    let keepalive_script = scratch.path().join("keepalive.lua");
    let pipeline_script = scratch.path().join("pipeline.lua");
    for (path, text) in [(&keepalive_script, KEEPALIVE_LUA), (&pipeline_script, PIPELINE_LUA)] {
        fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    // Reports go next to each other under one stem, the chart included.
    let out_dir =
        cli.out.clone().unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
    let stem = started.file_stamp();

    // The servers that can be started, in the order they go first in odd
    // rounds; then one running process of each (each a Drop guard).
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
    if cli.no_nginx {
        notes.push("nginx skipped (--no-nginx); ratios unavailable.".into());
    } else {
        match nginx_binary(cli) {
            Ok(binary) => kinds.push(ServerKind::Nginx(binary)),
            Err(e) => {
                eprintln!("nginx: skipped: {e}");
                notes.push(format!("nginx skipped, ratios unavailable: {e}"));
            }
        }
    }
    let mut servers: Vec<Server> = Vec::new();
    kinds.retain(|kind| match kind.start(&launcher, &cli.server_cpus) {
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
            "{}: {} — pid {} on {}{}",
            server.name(),
            server.version(),
            server.pid(),
            server.addr(),
            if launcher.pins() { format!(", CPU {}", cli.server_cpus) } else { String::new() }
        );
    }

    let bench = Bench {
        wrk: wrk_bin,
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

    if cli.warmup_s > 0 {
        for server in &mut servers {
            eprintln!("warm-up: {} for {} s", server.name(), cli.warmup_s);
            // No perf during warm-up: nothing is recorded, so skip its attach delay.
            let warm = Bench { duration_s: cli.warmup_s, perf: None, ..bench.clone() };
            if let Err(e) = measure(&warm, server, &SCENARIOS[0], &mut None) {
                eprintln!("warm-up of {} failed: {e}", server.name());
            }
        }
    }

    let total = rounds as usize * SCENARIOS.len() * servers.len();
    eprintln!(
        "running {total} runs × {duration_s} s ({rounds} round(s), {} scenarios, {} server(s))",
        SCENARIOS.len(),
        servers.len()
    );
    let mut runs = Vec::with_capacity(total);
    for round in 1..=rounds {
        for scenario in &SCENARIOS {
            // Alternate who goes first so slow drift (thermal, neighbours)
            // does not systematically favour one server.
            let mut order: Vec<usize> = (0..servers.len()).collect();
            if round % 2 == 0 {
                order.reverse();
            }
            for i in order {
                let server = &mut servers[i];
                let outcome = measure(&bench, server, scenario, &mut perf_error);
                eprintln!(
                    "[round {round}/{rounds}] {:<15} {:<9} {}",
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
    let idle = if idle_connections == 0 {
        Vec::new()
    } else {
        measure_idle(&kinds, &bench.launcher, &cli.server_cpus, idle_connections)
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
            perf: perf_support,
            idle_connections,
            nofile_limit,
        },
        servers: server_infos,
        scenarios: SCENARIOS.to_vec(),
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
) -> Vec<IdleRecord> {
    kinds
        .iter()
        .map(|kind| {
            eprintln!("idle memory: {} with {connections} connections", kind.name());
            let outcome = kind
                .start(launcher, cpus)
                .and_then(|mut server| idle::measure(&mut server, connections));
            match &outcome {
                Ok(m) => eprintln!(
                    "idle memory: {:<9} {} open, RSS {} -> {} KiB, {} B/connection{}",
                    kind.name(),
                    m.open_at_sample,
                    m.rss_before / 1024,
                    m.rss_after / 1024,
                    m.bytes_per_connection().map_or("n/a".into(), |b| format!("{b:.0}")),
                    m.stopped_by.as_deref().map(|e| format!(" (stopped: {e})")).unwrap_or_default()
                ),
                Err(e) => eprintln!("idle memory: {} FAILED: {e}", kind.name()),
            }
            IdleRecord { server: kind.name().to_owned(), outcome }
        })
        .collect()
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

fn nginx_binary(cli: &cli::Cli) -> Result<PathBuf, String> {
    match &cli.nginx {
        Some(path) => Ok(path.clone()),
        None => sys::find_program("nginx", &["/usr/sbin/nginx", "/usr/local/sbin/nginx"])
            .ok_or_else(|| "nginx is not installed (apt-get install nginx-light)".into()),
    }
}

/// One load run against `server`, bracketed by reads of the server's CPU time
/// and, where available, counted by `perf stat`. A perf failure leaves the
/// instruction count out (and is kept in `perf_error`); it never fails the run.
fn measure(
    bench: &Bench,
    server: &mut Server,
    scenario: &Scenario,
    perf_error: &mut Option<String>,
) -> Result<RunMeasurement, String> {
    server.check_running()?;
    let url = server.url(PATH);
    // Defence in depth: the servers module only hands out loopback addresses.
    if !url.starts_with("http://127.0.0.1:") {
        return Err(format!("refusing to load a non-loopback URL: {url}"));
    }
    // New load kinds (h2load, with the TLS/HTTP/2 issue) get their own arm.
    let mut cmd = match scenario.load {
        Load::Wrk { connections, pipeline_depth } => {
            let depth_arg = [pipeline_depth.to_string()];
            let script = if pipeline_depth > 1 {
                (bench.pipeline_script.as_path(), &depth_arg[..])
            } else {
                (bench.keepalive_script.as_path(), &[][..])
            };
            let mut cmd = bench.launcher.command(&bench.wrk_cpus, &bench.wrk);
            cmd.args(wrk::args(&url, connections, bench.duration_s, Some(script)));
            cmd
        }
    };

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
    let out = sys::run_with_timeout(&mut cmd, timeout).map_err(|e| format!("wrk: {e}"))?;
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
    Ok(RunMeasurement {
        req_per_s: stats.requests_per_sec,
        total_requests: stats.total_requests,
        elapsed_s: stats.elapsed_s,
        cpu_s: cpu_after.saturating_sub(cpu_before) as f64 / bench.clk_tck as f64,
        latency: stats.latency,
        instructions,
        errors: stats.errors(),
    })
}

/// One progress line for stderr.
fn describe(outcome: &Result<RunMeasurement, String>) -> String {
    match outcome {
        Ok(m) => format!(
            "{:>9.0} req/s  {:>9} req/CPU-s  CPU {:>3.0}%  p99 {:>6} us  p99.9 {:>6} us  \
             instr/req {:>6}  errors {}",
            m.req_per_s,
            m.req_per_cpu_s().map_or("n/a".into(), |r| format!("{r:.0}")),
            m.cpu_utilisation().unwrap_or(0.0) * 100.0,
            m.latency.p99().map_or("n/a".into(), |us| format!("{us:.0}")),
            m.latency.p999().map_or("n/a".into(), |us| format!("{us:.0}")),
            m.instructions_per_request().map_or("n/a".into(), |i| format!("{i:.0}")),
            m.errors
        ),
        Err(e) => format!("FAILED: {}", e.lines().next().unwrap_or_default()),
    }
}

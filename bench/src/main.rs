//! `peregrine-bench`: starts Peregrine and nginx pinned to one core, drives
//! them with wrk pinned to another, and reports requests/s and requests per
//! server-CPU-second with Peregrine/nginx ratios. See `bench/README.md`.

mod cli;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use peregrine_bench::report::{Report, RunConfig, RunMeasurement, RunRecord, ServerInfo};
use peregrine_bench::scenario::{Scenario, PATH, SCENARIOS};
use peregrine_bench::servers::{self, Launcher, Server, TempDir};
use peregrine_bench::sys::{self, MachineInfo, UtcTime};
use peregrine_bench::{procstat, wrk};

/// nginx config template; `{{DIR}}` and `{{PORT}}` are filled in per run.
const NGINX_TEMPLATE: &str = include_str!("../peers/nginx.conf");
/// wrk pipelining script, written to the run's temp dir for wrk to load.
const PIPELINE_LUA: &str = include_str!("../pipeline.lua");

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
    pipeline_script: PathBuf,
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

    TempDir::remove_stale();
    let scratch = TempDir::new("run").map_err(|e| format!("cannot create temp dir: {e}"))?;
    let pipeline_script = scratch.path().join("pipeline.lua");
    fs::write(&pipeline_script, PIPELINE_LUA).map_err(|e| format!("cannot write script: {e}"))?;

    // Servers, in the order they go first in odd rounds. Each is a Drop guard.
    let mut servers: Vec<Server> = Vec::new();
    if cli.peers_only {
        notes.push("Peregrine skipped (--peers-only).".into());
    } else {
        match start_peregrine(cli, &launcher) {
            Ok(server) => servers.push(server),
            Err(e) => {
                eprintln!("peregrine: skipped: {e}");
                notes.push(format!("Peregrine skipped: {e}"));
            }
        }
    }
    if cli.no_nginx {
        notes.push("nginx skipped (--no-nginx); ratios unavailable.".into());
    } else {
        match start_nginx(cli, &launcher) {
            Ok(server) => servers.push(server),
            Err(e) => {
                eprintln!("nginx: skipped: {e}");
                notes.push(format!("nginx skipped, ratios unavailable: {e}"));
            }
        }
    }
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
        pipeline_script,
    };

    if cli.warmup_s > 0 {
        for server in &mut servers {
            eprintln!("warm-up: {} for {} s", server.name(), cli.warmup_s);
            let warm = Bench { duration_s: cli.warmup_s, ..bench.clone() };
            if let Err(e) = measure(&warm, server, &SCENARIOS[0]) {
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
                let outcome = measure(&bench, server, scenario);
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

    let report = Report {
        started,
        machine,
        config: RunConfig {
            rounds,
            duration_s,
            warmup_s: cli.warmup_s,
            server_cpus: cli.server_cpus.clone(),
            wrk_cpus: cli.wrk_cpus.clone(),
            pinned: bench.launcher.pins(),
            clk_tck,
            wrk_version,
        },
        servers: servers
            .iter()
            .map(|s| ServerInfo { name: s.name().to_owned(), version: s.version().to_owned() })
            .collect(),
        scenarios: SCENARIOS.to_vec(),
        runs,
        notes,
    };
    // Stop the servers before writing files: nothing left to measure.
    drop(servers);

    let markdown = report.to_markdown();
    print!("{markdown}");
    let out_dir =
        cli.out.clone().unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
    fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let stem = out_dir.join(started.file_stamp());
    let md_path = stem.with_extension("md");
    let json_path = stem.with_extension("json");
    fs::write(&md_path, &markdown)
        .map_err(|e| format!("cannot write {}: {e}", md_path.display()))?;
    fs::write(&json_path, report.to_json())
        .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    eprintln!("wrote {} and {}", md_path.display(), json_path.display());
    Ok(())
}

/// Builds (unless told not to) and starts Peregrine, then checks it serves
/// `/plaintext`.
fn start_peregrine(cli: &cli::Cli, launcher: &Launcher) -> Result<Server, String> {
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
    let server = servers::start_peregrine(launcher, &cli.server_cpus, &binary)?;
    servers::check_plaintext(server.addr())?;
    Ok(server)
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

fn start_nginx(cli: &cli::Cli, launcher: &Launcher) -> Result<Server, String> {
    let binary = match &cli.nginx {
        Some(path) => path.clone(),
        None => sys::find_program("nginx", &["/usr/sbin/nginx", "/usr/local/sbin/nginx"])
            .ok_or("nginx is not installed (apt-get install nginx-light)")?,
    };
    let server = servers::start_nginx(launcher, &cli.server_cpus, &binary, NGINX_TEMPLATE)?;
    servers::check_plaintext(server.addr())?;
    Ok(server)
}

/// One wrk run against `server`, bracketed by reads of the server's CPU time.
fn measure(
    bench: &Bench,
    server: &mut Server,
    scenario: &Scenario,
) -> Result<RunMeasurement, String> {
    server.check_running()?;
    let url = server.url(PATH);
    // Defence in depth: the servers module only hands out loopback addresses.
    if !url.starts_with("http://127.0.0.1:") {
        return Err(format!("refusing to load a non-loopback URL: {url}"));
    }
    let depth_arg = [scenario.pipeline_depth.to_string()];
    let script =
        (scenario.pipeline_depth > 1).then(|| (bench.pipeline_script.as_path(), &depth_arg[..]));
    let args = wrk::args(&url, scenario.connections, bench.duration_s, script);
    let mut cmd = bench.launcher.command(&bench.wrk_cpus, &bench.wrk);
    cmd.args(&args);

    let cpu_before = server.cpu_ticks().map_err(|e| format!("reading server CPU time: {e}"))?;
    let timeout = Duration::from_secs(bench.duration_s) + WRK_SLACK;
    let out = sys::run_with_timeout(&mut cmd, timeout).map_err(|e| format!("wrk: {e}"))?;
    let cpu_after = server.cpu_ticks();
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
    Ok(RunMeasurement {
        req_per_s: stats.requests_per_sec,
        total_requests: stats.total_requests,
        elapsed_s: stats.elapsed_s,
        cpu_s: cpu_after.saturating_sub(cpu_before) as f64 / bench.clk_tck as f64,
        p99_us: stats.p99_us,
        errors: stats.errors(),
    })
}

/// One progress line for stderr.
fn describe(outcome: &Result<RunMeasurement, String>) -> String {
    match outcome {
        Ok(m) => format!(
            "{:>9.0} req/s  {:>9} req/CPU-s  CPU {:>3.0}%  p99 {:>8} us  errors {}",
            m.req_per_s,
            m.req_per_cpu_s().map_or("n/a".into(), |r| format!("{r:.0}")),
            m.cpu_utilisation().unwrap_or(0.0) * 100.0,
            m.p99_us.map_or("n/a".into(), |us| format!("{us:.0}")),
            m.errors
        ),
        Err(e) => format!("FAILED: {}", e.lines().next().unwrap_or_default()),
    }
}

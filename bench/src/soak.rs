//! `--soak`: one Peregrine under a mixed load and attack for a while (default 10 minutes),
//! sampled every second, judged at the end.
//!
//! The legitimate load, all of which must succeed: wrk keep-alive and pipelined on
//! cleartext, h2load h2c and h2 over TLS, wrk with `Connection: close` over TLS (a new TLS
//! connection per request), and a client streaming 4 MiB bodies through `/echo` and checking
//! every byte. At the same time the attackers of `attack.rs` (idle connections, slowloris,
//! rapid reset, CONTINUATION and PING floods).
//!
//! It fails when a legitimate client sees an error, when RSS after the warm-up grows more
//! than 5% or ever passes the [`RSS_BUDGET`], when the server's descriptors do not return to their baseline after the load
//! stops, or when the metrics' open-connection count then disagrees with them. It writes a
//! Markdown report and an SVG of RSS and request rate over time.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peregrine_bench::plot::{self, Panel};
use peregrine_bench::servers::{self, Launcher};
use peregrine_bench::sys::{self, UtcTime};
use peregrine_bench::{h2load, peers, procstat, wrk};

use crate::attack::Attackers;
use crate::{cli, peregrine_binary, write_wrk_scripts};

/// Most RSS growth allowed between the end of the warm-up and the end of the run.
const MAX_RSS_GROWTH: f64 = 0.05;
/// The most RSS the server may reach during the soak (10,000 idle connections, the floods
/// and the load together): a documented budget, about 1.5× what a release build peaks at.
const RSS_BUDGET: u64 = 64 << 20;
/// Idle connections the attackers hold (reopening those the server closes).
const IDLE_CONNECTIONS: usize = 10_000;
/// Bytes per `/echo` exchange.
const ECHO_BYTES: usize = 4 << 20;

/// One sample.
#[derive(Debug, Clone, Copy)]
struct Sample {
    t: f64,
    rss: u64,
    fds: u64,
    responses: u64,
}

/// Runs the soak; `Err` names every check that failed.
pub(crate) fn run(cli: &cli::Cli) -> Result<(), String> {
    let seconds = cli.soak_seconds;
    let wrk_bin = sys::find_program("wrk", &["/usr/bin/wrk"]).ok_or("wrk not found")?;
    let h2load_bin = sys::find_program("h2load", &["/usr/bin/h2load"]).ok_or("h2load not found")?;
    let openssl = sys::find_program("openssl", &["/usr/bin/openssl"]).ok_or("openssl not found")?;
    let binary = peregrine_binary(cli)?;
    let _ = sys::raise_nofile_limit();
    servers::TempDir::remove_stale();
    let scratch = servers::TempDir::new("soak").map_err(|e| format!("temp dir: {e}"))?;
    let tls = peers::generate_certificate(&openssl, scratch.path())?;
    let (_, pipeline_script) = write_wrk_scripts(scratch.path())?;
    let admin = free_port()?;
    let config = format!("admin = \"127.0.0.1:{admin}\"\n{}", peers::peregrine_config(Some(&tls)));
    let launcher = Launcher::detect(!cli.no_pin);
    let mut server =
        servers::start_peregrine_with(&launcher, &cli.server_cpus, &binary, &config, true)?;
    let pid = server.pid();
    let admin = SocketAddr::from(([127, 0, 0, 1], admin));
    let plain = server.url("/plaintext");
    let tls_url = server.tls_url("/plaintext").ok_or("no TLS listener")?;
    let addr = SocketAddr::from(server.addr());
    let baseline_fds = count_fds(pid)?;
    eprintln!(
        "soak: {seconds} s against pid {pid} ({}), {baseline_fds} descriptors at rest",
        binary.display()
    );

    let started = Instant::now();
    let d = seconds.to_string();
    let spawn = |program: &Path, args: Vec<String>| -> Result<Child, String> {
        launcher
            .command(&cli.wrk_cpus, program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))
    };
    let timeout = ["--timeout".to_string(), "10s".to_string()];
    let wrk_load =
        |extra: &[&str], connections: u32, url: &str, script: Option<(&Path, &[String])>| {
            let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            args.extend(timeout.iter().cloned());
            args.extend(wrk::args(url, connections, seconds, script));
            spawn(&wrk_bin, args)
        };
    let depth = ["16".to_string()];
    let mut loads: Vec<(&str, Child)> = vec![
        ("wrk keep-alive c32", wrk_load(&[], 32, &plain, None)?),
        ("wrk pipelined ×16 c4", wrk_load(&[], 4, &plain, Some((&pipeline_script, &depth)))?),
        (
            "wrk TLS, a new connection per request c4",
            wrk_load(&["-H", "Connection: close"], 4, &tls_url, None)?,
        ),
        (
            "h2load h2c c8 m10",
            spawn(
                &h2load_bin,
                vec!["-D".into(), d.clone(), "-c8".into(), "-m10".into(), plain.clone()],
            )?,
        ),
        (
            "h2load h2 over TLS c4 m10",
            spawn(
                &h2load_bin,
                vec!["-D".into(), d.clone(), "-c4".into(), "-m10".into(), tls_url.clone()],
            )?,
        ),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let echo = Echo::start(addr, Arc::clone(&stop));
    let attackers = Attackers::start(addr, IDLE_CONNECTIONS, 100);

    // Sample every second until the load generators finish.
    let mut samples: Vec<Sample> = Vec::new();
    let end = started + Duration::from_secs(seconds);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1));
        samples.push(sample(pid, admin, started)?);
        server.check_running()?;
    }
    stop.store(true, Ordering::Relaxed);
    let attack_connections = attackers.connections.load(Ordering::Relaxed);
    attackers.stop();
    let echo = echo.finish();
    let mut errors: Vec<String> = Vec::new();
    let mut rows: Vec<String> = Vec::new();
    for (name, child) in loads.drain(..) {
        let out = child.wait_with_output().map_err(|e| format!("{name}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (done, failed, latency) = if name.starts_with("wrk") {
            let s = wrk::parse_output(&text).map_err(|e| format!("{name}: {e}\n{text}"))?;
            let p99 = s.latency.p99().map_or("n/a".into(), |us| format!("p99 {us:.0} µs"));
            (s.total_requests, s.errors(), p99)
        } else {
            let s = h2load::parse_output(&text).map_err(|e| format!("{name}: {e}\n{text}"))?;
            let mean = s.request_time.map_or("n/a".into(), |t| format!("mean {:.0} µs", t.mean_us));
            (s.done, s.errors(), mean)
        };
        rows.push(format!("| {name} | {done} | {failed} | {latency} |"));
        if failed > 0 {
            errors.push(format!("{name}: {failed} failed requests\n{text}"));
        }
    }
    rows.push(format!(
        "| /echo 4 MiB round trips, every byte checked | {} | {} |",
        echo.ok,
        echo.failed.len()
    ));
    errors.extend(echo.failed.iter().take(5).map(|e| format!("/echo: {e}")));

    // After the load: descriptors back to where they were, and the metrics agreeing.
    let quiet_deadline = Instant::now() + Duration::from_secs(20);
    let (mut fds, mut active) = (count_fds(pid)?, metric(admin, "peregrine_connections_active")?);
    while (fds != baseline_fds || active != 0) && Instant::now() < quiet_deadline {
        std::thread::sleep(Duration::from_millis(200));
        fds = count_fds(pid)?;
        active = metric(admin, "peregrine_connections_active")?;
    }
    if fds != baseline_fds {
        errors.push(format!("{fds} descriptors after the load stopped; {baseline_fds} before it"));
    }
    if active != fds.saturating_sub(baseline_fds) {
        errors.push(format!(
            "the metrics count {active} open connections, the descriptors {}",
            fds.saturating_sub(baseline_fds)
        ));
    }
    // RSS: the end of the warm-up (a fifth of the run, at least 10 s) against the end.
    let warm = ((seconds as usize) / 5).max(10).min(samples.len().saturating_sub(1));
    let around = |i: usize| -> u64 {
        let lo = i.saturating_sub(2);
        let hi = (i + 3).min(samples.len());
        let mut v: Vec<u64> = samples[lo..hi].iter().map(|s| s.rss).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let rss_warm = around(warm);
    let rss_end = around(samples.len().saturating_sub(3));
    let growth = rss_end as f64 / rss_warm.max(1) as f64 - 1.0;
    if growth > MAX_RSS_GROWTH {
        errors.push(format!(
            "RSS grew {:.1}% after the warm-up ({} → {} KiB)",
            growth * 100.0,
            rss_warm / 1024,
            rss_end / 1024
        ));
    }

    let peak_rss = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    if peak_rss > RSS_BUDGET {
        errors.push(format!(
            "RSS peaked at {} KiB, over the {} KiB budget",
            peak_rss / 1024,
            RSS_BUDGET / 1024
        ));
    }

    let stamp = UtcTime::now().file_stamp();
    let out_dir =
        cli.out.clone().unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
    fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let svg_path = out_dir.join(format!("{stamp}-soak.svg"));
    let rate: Vec<(f64, f64)> = samples
        .windows(2)
        .map(|w| {
            (w[1].t, (w[1].responses.saturating_sub(w[0].responses)) as f64 / (w[1].t - w[0].t))
        })
        .collect();
    let svg = plot::time_series_svg(
        &format!("Soak: {seconds} s of mixed load and attacks"),
        &[
            Panel {
                y_desc: "RSS (MiB)".into(),
                points: samples.iter().map(|s| (s.t, s.rss as f64 / (1 << 20) as f64)).collect(),
            },
            Panel { y_desc: "responses/s".into(), points: rate.clone() },
            Panel {
                y_desc: "open descriptors".into(),
                points: samples.iter().map(|s| (s.t, s.fds as f64)).collect(),
            },
        ],
    )?;
    fs::write(&svg_path, svg).map_err(|e| format!("{}: {e}", svg_path.display()))?;
    let mut md = String::new();
    let _ = writeln!(md, "## Soak: {seconds} s, mixed load and attacks\n");
    let _ = writeln!(
        md,
        "Binary {}; {}.\n",
        binary.display(),
        sys::MachineInfo::detect().cpu_model.unwrap_or_default()
    );
    let _ =
        writeln!(md, "| legitimate load | responses | failed | latency |\n|---|---:|---:|---:|");
    for r in &rows {
        let _ = writeln!(md, "{r}");
    }
    let peak_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let mean_rate = rate.iter().map(|r| r.1).sum::<f64>() / rate.len().max(1) as f64;
    let _ = writeln!(
        md,
        "\nAttackers ({IDLE_CONNECTIONS} idle connections, 100 slowloris, rapid reset, CONTINUATION and PING \
         floods) opened {} connections.\n\n\
         | measure | value |\n|---|---:|\n\
         | RSS at the end of the warm-up ({warm} s) | {} KiB |\n| RSS at the end | {} KiB ({:+.1}%) |\n\
         | peak RSS (budget {} KiB) | {} KiB |\n| descriptors at rest / peak / after | {baseline_fds} / {peak_fds} / {fds} |\n\
         | metrics' open connections after | {active} |\n| mean responses/s | {mean_rate:.0} |\n",
        attack_connections,
        rss_warm / 1024,
        rss_end / 1024,
        growth * 100.0,
        RSS_BUDGET / 1024,
        peak_rss / 1024,
    );
    let _ = writeln!(md, "Plot: {}\n", svg_path.display());
    match errors.is_empty() {
        true => md.push_str("Result: **pass**.\n"),
        false => {
            md.push_str("Result: **FAIL**:\n");
            for e in &errors {
                let _ = writeln!(md, "- {}", e.lines().next().unwrap_or_default());
            }
        }
    }
    let md_path = out_dir.join(format!("{stamp}-soak.md"));
    fs::write(&md_path, &md).map_err(|e| format!("{}: {e}", md_path.display()))?;
    print!("{md}");
    eprintln!("wrote {} and {}", md_path.display(), svg_path.display());
    drop(server);
    match errors.is_empty() {
        true => Ok(()),
        false => Err(errors.join("\n")),
    }
}

fn sample(pid: u32, admin: SocketAddr, started: Instant) -> Result<Sample, String> {
    Ok(Sample {
        t: started.elapsed().as_secs_f64(),
        rss: procstat::read_tree_rss_bytes(pid).map_err(|e| format!("RSS: {e}"))?,
        fds: count_fds(pid)?,
        responses: metric(admin, "peregrine_responses_total")?,
    })
}

/// The server's open descriptors.
fn count_fds(pid: u32) -> Result<u64, String> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd")).map_err(|e| format!("descriptors: {e}"))?.count()
        as u64)
}

/// The sum of every series of `name` on `/metrics`.
fn metric(admin: SocketAddr, name: &str) -> Result<u64, String> {
    let mut s = TcpStream::connect(admin).map_err(|e| format!("admin: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n")
        .map_err(|e| format!("admin: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| format!("admin: {e}"))?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// The `/echo` client: 4 MiB up and back on a keep-alive connection, every byte checked.
struct Echo {
    thread: std::thread::JoinHandle<EchoResult>,
}

struct EchoResult {
    ok: u64,
    failed: Vec<String>,
}

impl Echo {
    fn start(addr: SocketAddr, stop: Arc<AtomicBool>) -> Echo {
        let thread = std::thread::spawn(move || {
            let body: Arc<Vec<u8>> =
                Arc::new((0..ECHO_BYTES).map(|i| (i * 7 % 251) as u8).collect());
            let mut result = EchoResult { ok: 0, failed: Vec::new() };
            while !stop.load(Ordering::Relaxed) {
                match echo_once(addr, &body) {
                    Ok(()) => result.ok += 1,
                    Err(e) => result.failed.push(e),
                }
            }
            result
        });
        Echo { thread }
    }

    fn finish(self) -> EchoResult {
        self.thread.join().unwrap_or(EchoResult { ok: 0, failed: vec!["panicked".into()] })
    }
}

fn echo_once(addr: SocketAddr, body: &Arc<Vec<u8>>) -> Result<(), String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let upload = Arc::clone(body);
    // Written on a thread of its own: the server echoes while it reads.
    let sending = std::thread::spawn(move || -> std::io::Result<()> {
        let head = format!(
            "POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            upload.len()
        );
        writer.write_all(head.as_bytes())?;
        writer.write_all(&upload)
    });
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| format!("status line: {e}"))?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(format!("status line {:?}", line.trim_end()));
    }
    let mut len = None;
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(|e| format!("head: {e}"))?;
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse::<usize>().ok();
        }
    }
    let mut got = Vec::with_capacity(body.len());
    match len {
        Some(n) => {
            got.resize(n, 0);
            reader.read_exact(&mut got).map_err(|e| format!("body: {e}"))?;
        }
        None => {
            // Chunked: decode it.
            loop {
                line.clear();
                reader.read_line(&mut line).map_err(|e| format!("chunk size: {e}"))?;
                let size =
                    usize::from_str_radix(line.trim_end().split(';').next().unwrap_or(""), 16)
                        .map_err(|_| format!("chunk size {:?}", line.trim_end()))?;
                let start = got.len();
                got.resize(start + size, 0);
                reader.read_exact(&mut got[start..]).map_err(|e| format!("chunk: {e}"))?;
                line.clear();
                reader.read_line(&mut line).map_err(|e| format!("chunk end: {e}"))?;
                if size == 0 {
                    break;
                }
            }
        }
    }
    sending.join().map_err(|_| "sender panicked".to_string())?.map_err(|e| format!("send: {e}"))?;
    if got.as_slice() != body.as_slice() {
        return Err(format!("{} bytes came back, not the {} sent", got.len(), body.len()));
    }
    Ok(())
}

//! Aggregation (medians, ratios) behind the Markdown and JSON reports.
//!
//! The headline number is *requests per server-CPU-second*: total responses
//! divided by the CPU time the server process consumed. On a 2-core box wrk
//! often saturates its core before the server does, which caps requests/s for
//! every server alike; CPU cost per request still shows how much work each
//! server spends per response, and is far less sensitive to the load
//! generator and to noisy neighbours. Latency percentiles, instructions per
//! request and memory per idle connection complete the picture.
//!
//! Rendering lives in the submodules: [`markdown`] and [`json`].

mod json;
mod markdown;

use crate::h2load::RequestTime;
use crate::idle::IdleMemory;
use crate::perf;
use crate::plot;
use crate::scenario::Scenario;
use crate::sys::{MachineInfo, UtcTime};
use crate::wrk::{Percentiles, PERCENTILE_LEVELS};

/// Name under which Peregrine's runs are recorded.
pub const PEREGRINE: &str = "peregrine";
/// Name under which nginx's runs are recorded.
pub const NGINX: &str = "nginx";
/// Name under which h2o's runs are recorded.
pub const H2O: &str = "h2o";

/// The caveat every report states right after its ratios.
pub const DRIFT_NOTE: &str = "Absolute numbers on a shared 2-core machine drift by up to 2× \
between runs; the Peregrine/peer ratios measured in the same run (servers interleaved round \
by round) are what to compare.";

/// What one load run against one server measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RunMeasurement {
    /// Requests per second as the load generator measured it (wrk's
    /// `Requests/sec`, h2load's `req/s`; for handshakes, connections per
    /// second of the harness's wall clock).
    pub req_per_s: f64,
    /// Completed responses (for handshakes: connections, one request each).
    pub total_requests: u64,
    /// Run length as measured by the load generator, in seconds.
    pub elapsed_s: f64,
    /// Server CPU time (user + system, all threads) during the run, in seconds.
    pub cpu_s: f64,
    /// The part of `cpu_s` spent in the kernel (system calls, and on loopback
    /// the peer's TCP receive path too, which runs in the sender's context).
    pub system_s: f64,
    /// Latency percentiles (see [`crate::wrk::WrkStats::latency`]); all
    /// `None` for h2load and s_time, which print no percentiles.
    pub latency: Percentiles,
    /// h2load's request-time min/max/mean/sd; `None` for other tools.
    pub request_time: Option<RequestTime>,
    /// Instructions the server retired during the run (`perf stat`); `None`
    /// where perf is unavailable or failed for this run.
    pub instructions: Option<u64>,
    /// Requests that did not succeed: wrk's socket errors plus non-2xx/3xx
    /// responses; h2load's failed requests plus 3xx answers.
    pub errors: u64,
}

impl RunMeasurement {
    /// Responses per second of server CPU time; `None` if no CPU time was
    /// measured (it is sampled in clock ticks, so this needs a run ≫ 10 ms).
    pub fn req_per_cpu_s(&self) -> Option<f64> {
        (self.cpu_s > 0.0).then(|| self.total_requests as f64 / self.cpu_s)
    }

    /// The kernel's share of the server's CPU time.
    pub fn kernel_share(&self) -> Option<f64> {
        (self.cpu_s > 0.0).then(|| self.system_s / self.cpu_s)
    }

    /// Responses per second of the server's kernel time alone: what
    /// [`req_per_cpu_s`](Self::req_per_cpu_s) would be if its user space cost
    /// nothing, the ceiling no user-space work can pass.
    pub fn req_per_kernel_s(&self) -> Option<f64> {
        (self.system_s > 0.0).then(|| self.total_requests as f64 / self.system_s)
    }

    /// Server CPU time over wall time: 1.0 means one core fully busy. Well
    /// below 1.0 for a single-threaded server means the load generator, not
    /// the server, was the bottleneck.
    pub fn cpu_utilisation(&self) -> Option<f64> {
        (self.elapsed_s > 0.0).then(|| self.cpu_s / self.elapsed_s)
    }

    /// Server instructions per response.
    pub fn instructions_per_request(&self) -> Option<f64> {
        let instructions = self.instructions?;
        (self.total_requests > 0).then(|| instructions as f64 / self.total_requests as f64)
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

/// One server's idle-connection measurement, or why there is none.
#[derive(Debug, Clone)]
pub struct IdleRecord {
    /// Server name.
    pub server: String,
    /// The protocol of the idle connections ([`crate::idle::Path::label`]).
    pub path: &'static str,
    /// The measurement, or the error that prevented it.
    pub outcome: Result<IdleMemory, String>,
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
    /// `--quick` was given.
    pub quick: bool,
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
    /// `h2load --version`, when h2load was found.
    pub h2load_version: Option<String>,
    /// `openssl version`, when the openssl CLI was found.
    pub openssl_version: Option<String>,
    /// Whether instructions could be counted.
    pub perf: perf::Support,
    /// Idle connections asked for per server; 0 when the phase was skipped.
    pub idle_connections: usize,
    /// The harness's open-files soft limit after raising it, if known.
    pub nofile_limit: Option<u64>,
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
    /// Idle-connection measurements, one per server that took part.
    pub idle: Vec<IdleRecord>,
    /// File name of the latency chart, relative to the Markdown report.
    pub plot_file: Option<String>,
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
    /// Median share of the server's CPU time spent in the kernel.
    pub kernel_share: Option<f64>,
    /// Median requests per second of the server's kernel time alone.
    pub req_per_kernel_s: Option<f64>,
    /// Median of each latency percentile over the runs that have it.
    pub latency: Percentiles,
    /// Median instructions per request over the runs that have a count.
    pub instructions_per_req: Option<f64>,
    /// Median over runs of h2load's mean request time, in microseconds.
    pub mean_request_us: Option<f64>,
    /// Median over runs of h2load's request-time standard deviation.
    pub sd_request_us: Option<f64>,
    /// Largest request time h2load saw in any run (a maximum, not a median).
    pub max_request_us: Option<f64>,
    /// Median error count per run.
    pub errors_median: f64,
    /// Errors summed over all successful runs, so one bad round is not hidden
    /// by the median.
    pub errors_total: u64,
}

/// Peregrine/peer ratios of the medians for one scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratios {
    /// Ratio of median requests/s (higher is better for Peregrine).
    pub req_per_s: Option<f64>,
    /// Ratio of median requests per server-CPU-second (higher is better).
    pub req_per_cpu_s: Option<f64>,
    /// Peregrine's requests per second of its kernel time alone over the peer's
    /// requests per CPU-second: the best `req_per_cpu_s` ratio Peregrine could
    /// reach if its user space cost nothing (the kernel work staying the same).
    pub kernel_ceiling: Option<f64>,
    /// Ratio of median p99 latency (lower is better).
    pub p99: Option<f64>,
    /// Ratio of median h2load mean request time (lower is better).
    pub mean_request: Option<f64>,
    /// Ratio of median instructions per request (lower is better).
    pub instructions_per_req: Option<f64>,
}

/// The figures a phase's table (`--proxy`, `--files`) shows for one server's
/// runs, and compares Peregrine's with.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhaseMedians {
    /// Median requests per server-CPU-second.
    pub req_per_cpu_s: Option<f64>,
    /// Median requests per second of the server's kernel time alone.
    pub req_per_kernel_s: Option<f64>,
    /// Median share of the server's CPU time spent in the kernel.
    pub kernel_share: Option<f64>,
}

impl PhaseMedians {
    /// The medians over `runs`.
    pub fn of(runs: &[&RunMeasurement]) -> PhaseMedians {
        PhaseMedians {
            req_per_cpu_s: median(runs.iter().filter_map(|m| m.req_per_cpu_s())),
            req_per_kernel_s: median(runs.iter().filter_map(|m| m.req_per_kernel_s())),
            kernel_share: median(runs.iter().filter_map(|m| m.kernel_share())),
        }
    }

    /// `ours` (a figure of Peregrine's, per second) over this server's requests per
    /// CPU-second, as a table cell: `1.23×`, or `—` without both.
    pub fn ratio_cell(&self, ours: Option<f64>) -> String {
        match ratio(ours, self.req_per_cpu_s) {
            Some(r) => format!("{r:.2}×"),
            None => "—".into(),
        }
    }

    /// The kernel share as a table cell: `86%`, or `n/a`.
    pub fn kernel_share_cell(&self) -> String {
        self.kernel_share.map_or("n/a".into(), |k| format!("{:.0}%", k * 100.0))
    }
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
        let mut latency = Percentiles::default();
        for (i, slot) in latency.0.iter_mut().enumerate() {
            *slot = median(ok.iter().filter_map(|m| m.latency.0[i]));
        }
        Some(Summary {
            runs_ok: ok.len(),
            runs_failed: runs.len() - ok.len(),
            req_per_s: median(ok.iter().map(|m| m.req_per_s))?,
            req_per_cpu_s: median(ok.iter().filter_map(|m| m.req_per_cpu_s())),
            cpu_utilisation: median(ok.iter().filter_map(|m| m.cpu_utilisation())),
            kernel_share: median(ok.iter().filter_map(|m| m.kernel_share())),
            req_per_kernel_s: median(ok.iter().filter_map(|m| m.req_per_kernel_s())),
            latency,
            instructions_per_req: median(ok.iter().filter_map(|m| m.instructions_per_request())),
            mean_request_us: median(ok.iter().filter_map(|m| Some(m.request_time?.mean_us))),
            sd_request_us: median(ok.iter().filter_map(|m| Some(m.request_time?.sd_us))),
            max_request_us: ok.iter().filter_map(|m| Some(m.request_time?.max_us)).reduce(f64::max),
            errors_median: median(ok.iter().map(|m| m.errors as f64))?,
            errors_total: ok.iter().map(|m| m.errors).sum(),
        })
    }

    /// The peer `scenario` compares Peregrine with (nginx for a scenario not
    /// in the report).
    pub fn peer_of(&self, scenario: &str) -> &'static str {
        self.scenarios.iter().find(|s| s.name == scenario).map_or(NGINX, |s| s.peer)
    }

    /// Peregrine/peer ratios for `scenario`; `None` unless both have results.
    pub fn ratios(&self, scenario: &str) -> Option<Ratios> {
        let p = self.summary(scenario, PEREGRINE)?;
        let n = self.summary(scenario, self.peer_of(scenario))?;
        Some(Ratios {
            req_per_s: ratio(Some(p.req_per_s), Some(n.req_per_s)),
            req_per_cpu_s: ratio(p.req_per_cpu_s, n.req_per_cpu_s),
            kernel_ceiling: ratio(p.req_per_kernel_s, n.req_per_cpu_s),
            p99: ratio(p.latency.p99(), n.latency.p99()),
            mean_request: ratio(p.mean_request_us, n.mean_request_us),
            instructions_per_req: ratio(p.instructions_per_req, n.instructions_per_req),
        })
    }

    /// The servers that take part in `scenario`: Peregrine and its peer,
    /// those of them that were started, in report order.
    pub fn servers_in(&self, scenario: &Scenario) -> Vec<&ServerInfo> {
        self.servers.iter().filter(|s| s.name == PEREGRINE || s.name == scenario.peer).collect()
    }

    /// The idle-connection measurement of `server`, if it succeeded.
    pub fn idle_memory(&self, server: &str) -> Option<&IdleMemory> {
        let http1 = crate::idle::Path::Http1.label();
        self.idle
            .iter()
            .find(|r| r.server == server && r.path == http1)
            .and_then(|r| r.outcome.as_ref().ok())
    }

    /// Peregrine/nginx ratio of bytes per idle connection (lower is better).
    /// Only meaningful when both grew; a negative figure has no ratio.
    pub fn idle_ratio(&self) -> Option<f64> {
        let p = self.idle_memory(PEREGRINE)?.bytes_per_connection()?;
        let n = self.idle_memory(NGINX)?.bytes_per_connection()?;
        if p < 0.0 {
            return None;
        }
        ratio(Some(p), Some(n))
    }

    /// One chart line per (scenario, server) with a successful run: the
    /// median of each percentile over rounds.
    pub fn latency_series(&self) -> Vec<plot::Series> {
        let mut series = Vec::new();
        for (index, scenario) in self.scenarios.iter().enumerate() {
            for server in self.servers_in(scenario) {
                let Some(sum) = self.summary(scenario.name, &server.name) else { continue };
                let points: Vec<(f64, f64)> = PERCENTILE_LEVELS
                    .iter()
                    .zip(sum.latency.0)
                    .filter_map(|(&level, us)| Some((level, us?)))
                    .collect();
                series.push(plot::Series {
                    label: format!("{} — {}", scenario.name, server.name),
                    server: server.name.clone(),
                    scenario_index: index,
                    points,
                });
            }
        }
        series
    }

    /// The first error of `server`'s failed runs in `scenario`, first line
    /// only, escaped for a Markdown table cell.
    fn first_error(&self, scenario: &str, server: &str) -> Option<&str> {
        self.runs
            .iter()
            .filter(|r| r.scenario == scenario && r.server == server)
            .find_map(|r| r.outcome.as_ref().err())
            .map(|e| e.lines().next().unwrap_or_default())
    }

    /// How many runs `server` had in `scenario`.
    fn runs_of(&self, scenario: &str, server: &str) -> usize {
        self.runs.iter().filter(|r| r.scenario == scenario && r.server == server).count()
    }

    fn has_server(&self, name: &str) -> bool {
        self.servers.iter().any(|s| s.name == name)
    }
}

/// Writes a phase's Markdown report as `out_dir/<stamp>-<phase>.md` (creating the folder)
/// and says where on stderr.
pub fn write_markdown(
    out_dir: &std::path::Path,
    started: UtcTime,
    phase: &str,
    markdown: &str,
) -> Result<(), String> {
    std::fs::create_dir_all(out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let path = out_dir.join(format!("{}-{phase}.md", started.file_stamp()));
    std::fs::write(&path, markdown).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::scenario::SCENARIOS;

    pub(crate) fn measurement(
        req_per_s: f64,
        total: u64,
        cpu_s: f64,
        errors: u64,
    ) -> RunMeasurement {
        RunMeasurement {
            req_per_s,
            total_requests: total,
            elapsed_s: 3.0,
            cpu_s,
            system_s: cpu_s * 0.75,
            latency: Percentiles([Some(500.0), Some(700.0), Some(900.0), Some(1500.0), None]),
            request_time: None,
            instructions: Some(total * 20_000),
            errors,
        }
    }

    pub(crate) fn report(runs: Vec<RunRecord>, servers: &[&str]) -> Report {
        Report {
            started: UtcTime::from_unix(1_700_000_000),
            machine: MachineInfo {
                nproc: "2".into(),
                kernel: "Linux 6.1".into(),
                cpu_model: Some("Test \"CPU\"".into()),
            },
            config: RunConfig {
                quick: false,
                rounds: 3,
                duration_s: 3,
                warmup_s: 1,
                server_cpus: "0".into(),
                wrk_cpus: "1".into(),
                pinned: true,
                clk_tck: 100,
                wrk_version: "wrk 4.1.0".into(),
                h2load_version: Some("h2load nghttp2/1.52.0".into()),
                openssl_version: None,
                perf: perf::Support::Unavailable("not supported on this machine".into()),
                idle_connections: 10_000,
                nofile_limit: Some(20_000),
            },
            servers: servers
                .iter()
                .map(|s| ServerInfo { name: (*s).into(), version: format!("{s} 1.0") })
                .collect(),
            scenarios: SCENARIOS.to_vec(),
            runs,
            idle: Vec::new(),
            plot_file: None,
            notes: vec!["a note\nwith two lines".into()],
        }
    }

    pub(crate) fn run(
        round: u32,
        server: &str,
        outcome: Result<RunMeasurement, String>,
    ) -> RunRecord {
        RunRecord { round, scenario: "keepalive-c64", server: server.into(), outcome }
    }

    pub(crate) fn idle(opened: usize, before: u64, after: u64) -> IdleMemory {
        IdleMemory {
            target: 10_000,
            opened,
            open_at_sample: opened,
            rss_before: before,
            rss_after: after,
            stopped_by: None,
        }
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
        let mut slow = measurement(120.0, 360, 3.0, 4);
        slow.latency.0[3] = Some(3000.0);
        slow.instructions = None;
        let runs = vec![
            run(1, PEREGRINE, Ok(measurement(200.0, 600, 2.0, 0))),
            run(1, NGINX, Ok(measurement(100.0, 300, 3.0, 0))),
            run(2, NGINX, Ok(slow)),
            run(2, PEREGRINE, Err("wrk timed out".into())),
            run(3, PEREGRINE, Ok(measurement(240.0, 720, 2.0, 0))),
            run(3, NGINX, Ok(measurement(80.0, 240, 3.0, 0))),
        ];
        let r = report(runs, &[PEREGRINE, NGINX]);
        let p = r.summary("keepalive-c64", PEREGRINE).unwrap();
        assert_eq!((p.runs_ok, p.runs_failed), (2, 1));
        assert_eq!(p.req_per_s, 220.0);
        assert_eq!(p.req_per_cpu_s, Some(330.0));
        assert_eq!(p.instructions_per_req, Some(20_000.0));
        let n = r.summary("keepalive-c64", NGINX).unwrap();
        assert_eq!(n.req_per_cpu_s, Some(100.0));
        assert_eq!(n.errors_total, 4);
        assert_eq!(n.errors_median, 0.0);
        // Median of 1500, 3000, 1500; a missing p99.9 stays missing.
        assert_eq!(n.latency.p99(), Some(1500.0));
        assert_eq!(n.latency.p999(), None);
        // The run without a perf count is left out, not counted as zero.
        assert_eq!(n.instructions_per_req, Some(20_000.0));
        let ratios = r.ratios("keepalive-c64").unwrap();
        assert_eq!(ratios.req_per_s, Some(2.2));
        assert_eq!(ratios.req_per_cpu_s, Some(3.3));
        // A quarter of each run's CPU time was user space: 440 per kernel-second
        // (the median of 400 and 480) over nginx's 100 per CPU-second.
        assert_eq!(p.kernel_share, Some(0.75));
        assert_eq!(p.req_per_kernel_s, Some(440.0));
        assert_eq!(ratios.kernel_ceiling, Some(4.4));
        assert_eq!(ratios.p99, Some(1.0));
        assert_eq!(ratios.instructions_per_req, Some(1.0));
        assert!(r.ratios("pipeline16-c64").is_none());
    }

    #[test]
    fn phase_medians_give_the_ratio_and_the_kernel_ceiling_cells() {
        let ours = [&measurement(200.0, 600, 2.0, 0), &measurement(240.0, 720, 2.0, 0)];
        let theirs = [&measurement(100.0, 300, 3.0, 0)];
        let (ours, theirs) = (PhaseMedians::of(&ours), PhaseMedians::of(&theirs));
        assert_eq!(ours.req_per_cpu_s, Some(330.0));
        assert_eq!(ours.req_per_kernel_s, Some(440.0));
        assert_eq!(theirs.ratio_cell(ours.req_per_cpu_s), "3.30×");
        assert_eq!(theirs.ratio_cell(ours.req_per_kernel_s), "4.40×");
        assert_eq!(theirs.kernel_share_cell(), "75%");
        assert_eq!(PhaseMedians::default().ratio_cell(Some(1.0)), "—");
        assert_eq!(PhaseMedians::default().kernel_share_cell(), "n/a");
    }

    #[test]
    fn h2_ratios_are_over_h2o_not_nginx() {
        let h2 = |server: &str, m| RunRecord {
            round: 1,
            scenario: "h2c-c64-m100",
            server: server.into(),
            outcome: Ok(m),
        };
        let timed = |mean_us| {
            let mut m = measurement(100.0, 300, 1.0, 0);
            m.request_time = Some(RequestTime { min_us: 1.0, max_us: 9.0, mean_us, sd_us: 2.0 });
            m
        };
        let runs = vec![
            h2(PEREGRINE, timed(400.0)),
            h2(H2O, timed(800.0)),
            // An nginx run in an h2 scenario must not become the denominator.
            h2(NGINX, measurement(100.0, 30, 1.0, 0)),
        ];
        let r = report(runs, &[PEREGRINE, NGINX, H2O]);
        assert_eq!(r.peer_of("h2c-c64-m100"), H2O);
        let ratios = r.ratios("h2c-c64-m100").unwrap();
        assert_eq!(ratios.req_per_cpu_s, Some(1.0));
        assert_eq!(ratios.mean_request, Some(0.5));
        let h2c = SCENARIOS.iter().find(|s| s.name == "h2c-c64-m100").unwrap();
        let names: Vec<&str> = r.servers_in(h2c).iter().map(|s| &*s.name).collect();
        assert_eq!(names, [PEREGRINE, H2O]);
    }

    #[test]
    fn idle_ratio_needs_both_servers_and_growth() {
        let mut r = report(vec![], &[PEREGRINE, NGINX]);
        r.idle = vec![
            IdleRecord {
                server: PEREGRINE.into(),
                path: "HTTP/1.1",
                outcome: Ok(idle(1000, 0, 2_000_000)),
            },
            IdleRecord {
                server: NGINX.into(),
                path: "HTTP/1.1",
                outcome: Ok(idle(1000, 0, 8_000_000)),
            },
        ];
        assert_eq!(r.idle_ratio(), Some(0.25));
        r.idle[1].outcome = Err("nginx died".into());
        assert_eq!(r.idle_ratio(), None);
        r.idle[1].outcome = Ok(idle(1000, 0, 8_000_000));
        r.idle[0].outcome = Ok(idle(1000, 5_000_000, 4_000_000));
        assert_eq!(r.idle_ratio(), None);
    }

    #[test]
    fn latency_series_per_scenario_and_server() {
        let runs = vec![
            run(1, PEREGRINE, Ok(measurement(200.0, 600, 2.0, 0))),
            run(1, NGINX, Err("boom".into())),
        ];
        let series = report(runs, &[PEREGRINE, NGINX]).latency_series();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].label, "keepalive-c64 — peregrine");
        assert_eq!(series[0].points, [(50.0, 500.0), (75.0, 700.0), (90.0, 900.0), (99.0, 1500.0)]);
    }
}

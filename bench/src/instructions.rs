//! Instructions per request, counted by callgrind (`--instructions`).
//!
//! On these 2-core VMs wall-clock figures move by ±10% between runs and `perf stat` counters
//! are not exposed; user-space instructions counted by valgrind's callgrind do not move at
//! all. Each server runs under `valgrind --tool=callgrind` twice per scenario, in a fresh
//! process each time, once for [`SHORT`] and once for [`LONG`] requests from h2load; the
//! difference of the two totals divided by the difference of the request counts is the cost
//! of a request, start-up and shutdown cancelling out. The count is the same on a busy or an
//! idle machine, so Peregrine's figure can be held against nginx's and h2o's measured the same
//! way in the same run.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::servers::{Launcher, Server};
use crate::sys;

/// Requests in the short run.
pub const SHORT: u64 = 20_000;
/// Requests in the long run.
pub const LONG: u64 = 60_000;
/// Bound on one h2load run against a server slowed down ~50× by callgrind.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// One load shape, and the peer it is compared with.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Shown in the report.
    pub name: &'static str,
    /// The Peregrine run measured: `peregrine`, or [`PEREGRINE_PROXY`].
    pub ours: &'static str,
    /// `nginx` or `h2o`, or [`NGINX_PROXY`].
    pub peer: &'static str,
    /// h2load's options besides `-n` and the URL.
    pub h2load: &'static [&'static str],
}

/// Peregrine as a reverse proxy in front of a Peregrine `/plaintext` (itself not counted).
pub const PEREGRINE_PROXY: &str = "peregrine proxy";
/// nginx as a reverse proxy (`proxy_pass`, upstream keep-alive) in front of the same.
pub const NGINX_PROXY: &str = "nginx proxy";
/// The same nginx also sending what Peregrine's proxy sends by default: `X-Forwarded-For`,
/// `-Proto`, `-Host` and `X-Request-Id` (`proxy_set_header`), so the two do the same work.
pub const NGINX_PROXY_FORWARDING: &str = "nginx proxy, forwarding fields";
/// The same Peregrine proxy with its route's response cache on: after the first request,
/// every request is a cache hit.
pub const PEREGRINE_CACHE: &str = "peregrine cache";

/// The three scenarios of the request-path targets, the reverse proxy's (against nginx
/// as the issue configures it, and against nginx doing the same forwarding work; Peregrine's
/// count is shared), and the response cache's (a hit against a fixed `/plaintext`, whose
/// count it shares with the first).
pub const SCENARIOS: [Scenario; 6] = [
    Scenario {
        name: "HTTP/1.1 keep-alive, -c16 -m1",
        ours: "peregrine",
        peer: "nginx",
        h2load: &["--h1", "-c16", "-m1"],
    },
    Scenario {
        name: "HTTP/1.1 pipelined x16, -c16 -m16",
        ours: "peregrine",
        peer: "nginx",
        h2load: &["--h1", "-c16", "-m16"],
    },
    Scenario {
        name: "h2c, -c16 -m100",
        ours: "peregrine",
        peer: "h2o",
        h2load: &["-c16", "-m100"],
    },
    Scenario {
        name: "reverse proxy, HTTP/1.1 keep-alive, -c16 -m1",
        ours: PEREGRINE_PROXY,
        peer: NGINX_PROXY,
        h2load: &["--h1", "-c16", "-m1"],
    },
    Scenario {
        name: "reverse proxy, both sending X-Forwarded-For/-Proto/-Host and X-Request-Id, \
               HTTP/1.1 keep-alive, -c16 -m1",
        ours: PEREGRINE_PROXY,
        peer: NGINX_PROXY_FORWARDING,
        h2load: &["--h1", "-c16", "-m1"],
    },
    Scenario {
        name: "response-cache hit against /plaintext, HTTP/1.1 keep-alive, -c16 -m1",
        ours: PEREGRINE_CACHE,
        peer: "peregrine",
        h2load: &["--h1", "-c16", "-m1"],
    },
];

/// A server's count for one scenario.
#[derive(Debug, Clone)]
pub struct Count {
    /// The scenario's name.
    pub scenario: &'static str,
    /// The server's name.
    pub server: String,
    /// Instructions per request, or why there is none.
    pub per_request: Result<f64, String>,
}

/// A `Launcher` for one run: `valgrind --tool=callgrind` writing to `out`. Peregrine runs
/// its epoll driver (`PEREGRINE_IO=epoll`, ignored by the peers): valgrind does not emulate
/// io_uring, and epoll is what the peers use too.
fn under_callgrind(launcher: &Launcher, valgrind: &Path, out: &Path) -> Launcher {
    let mut arg = OsString::from("--callgrind-out-file=");
    arg.push(out);
    launcher.clone().wrapped(vec![
        "env".into(),
        "PEREGRINE_IO=epoll".into(),
        valgrind.as_os_str().into(),
        "--tool=callgrind".into(),
        "--quiet".into(),
        arg,
    ])
}

/// The total instruction count (`summary:` or `totals:` line) of a callgrind output file.
pub fn total_instructions(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("summary:").or_else(|| l.strip_prefix("totals:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Instructions per request from two runs' totals.
pub fn per_request(short_total: u64, long_total: u64) -> Option<f64> {
    let extra = long_total.checked_sub(short_total)?;
    Some(extra as f64 / (LONG - SHORT) as f64)
}

/// One run: starts the server with `start` (given the launcher to use), sends `n` requests
/// with h2load, stops it and returns callgrind's total.
fn one_run(
    start: &dyn Fn(&Launcher) -> Result<Server, String>,
    launcher: &Launcher,
    valgrind: &Path,
    h2load: &Path,
    scenario: &Scenario,
    n: u64,
    scratch: &Path,
) -> Result<u64, String> {
    let out = scratch.join(format!("callgrind-{n}.out"));
    let _ = fs::remove_file(&out);
    let mut server = start(&under_callgrind(launcher, valgrind, &out))?;
    let url = server.url("/plaintext");
    let mut load = Command::new(h2load);
    load.args(["-n", &n.to_string()]).args(scenario.h2load).arg(&url);
    let result = sys::run_with_timeout(&mut load, LOAD_TIMEOUT)
        .map_err(|e| format!("h2load: {e}"))
        .and_then(|o| {
            let want = format!("{n} succeeded, 0 failed, 0 errored");
            if o.stdout.contains(&want) {
                Ok(())
            } else {
                Err(format!("h2load did not get {want}: {}", o.stdout.trim()))
            }
        });
    server.stop();
    result?;
    let text = fs::read_to_string(&out).map_err(|e| format!("no callgrind output: {e}"))?;
    total_instructions(&text).ok_or_else(|| "no total in the callgrind output".into())
}

/// Copies the profile of the `n`-request run into `dir` as `<scenario>--<server>.out`, for
/// `callgrind_annotate`.
fn keep_profile(scratch: &Path, n: u64, dir: &Path, scenario: &str, server: &str) {
    let to = dir.join(format!("{}--{}.out", file_word(scenario), file_word(server)));
    let moved = fs::create_dir_all(dir)
        .and_then(|()| fs::copy(scratch.join(format!("callgrind-{n}.out")), &to));
    match moved {
        Ok(_) => eprintln!("instructions: profile kept in {}", to.display()),
        Err(e) => eprintln!("instructions: cannot keep the profile in {}: {e}", to.display()),
    }
}

/// `name` as one file-name word: lower-case letters and digits, each run of anything else
/// one `-` ("reverse proxy, HTTP/1.1" becomes "reverse-proxy-http-1-1").
fn file_word(name: &str) -> String {
    let mut word = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c.to_ascii_lowercase());
        } else if !word.is_empty() && !word.ends_with('-') {
            word.push('-');
        }
    }
    word.trim_end_matches('-').to_owned()
}

/// The name of the Peregrine run with the per-client limits on (measured on the first
/// scenario only: the request path is the same on the others).
pub const WITH_LIMITS: &str = "peregrine, per-client limits on";

/// Starts one server process with the launcher it is given.
pub type Start = Box<dyn Fn(&Launcher) -> Result<Server, String>>;

/// Counts each server of `servers` (name, start function) on each scenario it runs: the
/// scenario's own Peregrine run and its peer.
pub fn measure(
    servers: &[(String, Start)],
    launcher: &Launcher,
    valgrind: &Path,
    h2load: &Path,
    scratch: &Path,
    keep: Option<&Path>,
) -> Vec<Count> {
    let mut counts = Vec::new();
    for scenario in &SCENARIOS {
        for (name, start) in servers {
            let first = scenario.name == SCENARIOS[0].name;
            let limits_run = name == WITH_LIMITS && first;
            if !(name == scenario.ours || name == scenario.peer || limits_run) {
                continue;
            }
            // A server already counted in the same shape (the cache row's `/plaintext`).
            let same_shape = |c: &&Count| {
                c.server == *name
                    && SCENARIOS.iter().any(|s| s.name == c.scenario && s.h2load == scenario.h2load)
            };
            if let Some(done) = counts.iter().find(same_shape).cloned() {
                counts.push(Count { scenario: scenario.name, ..done });
                continue;
            }
            eprintln!("instructions: {name}, {} ({SHORT} and {LONG} requests)", scenario.name);
            let run = |n| one_run(start.as_ref(), launcher, valgrind, h2load, scenario, n, scratch);
            let per = run(SHORT).and_then(|short| {
                let long = run(LONG)?;
                if let Some(dir) = keep {
                    keep_profile(scratch, LONG, dir, scenario.name, name);
                }
                per_request(short, long).ok_or_else(|| "the long run counted less".to_string())
            });
            match &per {
                Ok(v) => eprintln!("instructions: {name}: {v:.0} per request"),
                Err(e) => eprintln!("instructions: {name}: FAILED: {e}"),
            }
            counts.push(Count { scenario: scenario.name, server: name.clone(), per_request: per });
        }
    }
    counts
}

/// The Markdown table: one row per scenario, Peregrine beside its peer, and their ratio.
pub fn table(counts: &[Count]) -> String {
    let mut out =
        String::from("| scenario | Peregrine | peer | Peregrine / peer |\n|---|---:|---:|---:|\n");
    let cell = |c: Option<&Count>| match c.map(|c| &c.per_request) {
        Some(Ok(v)) => format!("{v:.0}"),
        Some(Err(e)) => format!("failed: {e}"),
        None => "—".into(),
    };
    for s in &SCENARIOS {
        let limited = counts.iter().find(|c| c.scenario == s.name && c.server == WITH_LIMITS);
        let ours = counts.iter().find(|c| c.scenario == s.name && c.server == s.ours);
        let peer = counts.iter().find(|c| c.scenario == s.name && c.server == s.peer);
        let ratio = match (ours.map(|c| &c.per_request), peer.map(|c| &c.per_request)) {
            (Some(Ok(a)), Some(Ok(b))) if *b > 0.0 => format!("{:.2}", a / b),
            _ => "—".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {}: {} | {ratio} |\n",
            s.name,
            cell(ours),
            s.peer,
            cell(peer)
        ));
        if let Some(limited) = limited {
            let more = match (ours.map(|c| &c.per_request), &limited.per_request) {
                (Some(Ok(off)), Ok(on)) if *off > 0.0 => {
                    format!("{:+.1}% against limits off", (on / off - 1.0) * 100.0)
                }
                _ => "—".into(),
            };
            out.push_str(&format!(
                "| {}, per-client limits on | {} | — | {more} |\n",
                s.name,
                cell(Some(limited))
            ));
        }
    }
    out
}

/// valgrind, when installed.
pub fn find_valgrind() -> Option<PathBuf> {
    sys::find_program("valgrind", &["/usr/bin/valgrind"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_are_one_word_each() {
        assert_eq!(
            file_word("reverse proxy, HTTP/1.1 keep-alive, -c16 -m1"),
            "reverse-proxy-http-1-1-keep-alive-c16-m1"
        );
        assert_eq!(file_word("peregrine, per-client limits on"), "peregrine-per-client-limits-on");
    }

    #[test]
    fn reads_the_total_and_divides_the_difference() {
        let text = "version: 1\ncmd: x\nevents: Ir\nsummary: 123456\n";
        assert_eq!(total_instructions(text), Some(123_456));
        assert_eq!(total_instructions("totals: 99\n"), Some(99));
        assert_eq!(total_instructions("events: Ir\n"), None);
        assert_eq!(per_request(1_000_000, 1_000_000 + 40_000 * 5_000), Some(5_000.0));
        assert_eq!(per_request(10, 5), None);
    }

    #[test]
    fn table_puts_peregrine_beside_its_peer() {
        let counts = vec![
            Count {
                scenario: SCENARIOS[0].name,
                server: "peregrine".into(),
                per_request: Ok(6000.0),
            },
            Count { scenario: SCENARIOS[0].name, server: "nginx".into(), per_request: Ok(4000.0) },
            Count {
                scenario: SCENARIOS[2].name,
                server: "peregrine".into(),
                per_request: Err("x".into()),
            },
        ];
        let t = table(&counts);
        assert!(t.contains("| HTTP/1.1 keep-alive, -c16 -m1 | 6000 | nginx: 4000 | 1.50 |"), "{t}");
        assert!(t.contains("| h2c, -c16 -m100 | failed: x | h2o: — | — |"), "{t}");
    }
}

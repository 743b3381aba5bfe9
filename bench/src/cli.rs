//! Command-line options (hand-parsed: std only, and there are few of them).

use std::path::PathBuf;

/// Usage text for `--help`.
pub const USAGE: &str = "\
peregrine-bench: Peregrine vs nginx (HTTP/1.1, TLS handshakes) and h2o (HTTP/2)
load benchmark (wrk, h2load, openssl s_time; 127.0.0.1 only)

USAGE:
    cargo run -p peregrine-bench --release -- [OPTIONS]

OPTIONS:
    --quick              1 round of 3 s runs over a subset of the scenarios, 2,000 idle
                         connections: about a minute (explicit options still win)
    --scenario LIST      only the scenarios whose names start with one of these
                         (comma-separated, repeatable), e.g. h2c,tls-handshake
    --rounds N           rounds over all scenarios [default: 5]
    --duration SECS      seconds per wrk run [default: 9]
    --idle-conns N       idle keep-alive connections per server for the memory
                         measurement [default: 10000; 0 = skip]
    --warmup SECS        unrecorded warm-up per server before round 1 [default: 1; 0 = none]
    --peregrine PATH     Peregrine binary [default: <workspace>/target/release/peregrine];
                         giving a path also skips the build
    --no-build           do not run `cargo build --release -p peregrine` first
    --peers-only         skip Peregrine; benchmark the peers (nginx, h2o) alone
    --nginx PATH         nginx binary [default: nginx on PATH, else /usr/sbin/nginx]
    --no-nginx           skip nginx (no HTTP/1.1 or handshake ratios)
    --h2o PATH           h2o binary [default: h2o on PATH, else /usr/bin/h2o]
    --no-h2o             skip h2o (no HTTP/2 ratios)
    --server-cpu LIST    CPUs the servers are pinned to, taskset -c syntax [default: 0]
    --wrk-cpu LIST       CPUs the load generators are pinned to [default: 1]
    --no-pin             do not pin anything
    --out DIR            where reports go [default: bench/results]
    --instructions       only count user-space instructions per request with valgrind's
                         callgrind (Peregrine, nginx, h2o; h2load runs of 20,000 and 60,000
                         requests, the difference divided out) and print that table
    --keep-profiles      with --instructions: keep each long run's callgrind profile in
                         <out>/<time>-callgrind/, for callgrind_annotate
    --proxy              only the reverse-proxy benchmark: Peregrine, nginx and h2o as
                         proxies (one worker each) in front of one upstream, and Peregrine
                         hosting that upstream program as an [[app]]; wrk c64/c256 and
                         h2load h2c -m100, requests per proxy-CPU-second
    --soak [SECS]        only the soak: one Peregrine for SECS [default: 600] under wrk
                         keep-alive and pipelined, h2load h2c and TLS, new TLS connections
                         and 4 MiB /echo round trips, while attackers (idle connections,
                         slowloris, rapid reset, CONTINUATION and PING floods) run; fails
                         on any legitimate error, RSS growth past 5% after warm-up, or
                         descriptors not back at rest; writes a report and an SVG
    --files              only the static-file benchmark: Peregrine (`root`), nginx
                         (sendfile, open_file_cache) and h2o serving one directory, one
                         worker each: 1 KiB and 1 MiB files with wrk keep-alive (cleartext
                         and TLS), a 100 MiB file (server CPU per GiB sent)
    --limits             only the per-client limits' wall-clock cost: the same Peregrine
                         with them off and on, wrk c64/c256, requests per server-CPU-second
    -h, --help           this text
";

/// Parsed options; see [`USAGE`].
#[derive(Debug, Clone, PartialEq)]
pub struct Cli {
    /// `--quick`.
    pub quick: bool,
    /// `--instructions`: the callgrind count only.
    pub instructions: bool,
    /// `--keep-profiles`: keep the callgrind profiles `--instructions` counted.
    pub keep_profiles: bool,
    /// `--proxy`: the reverse-proxy benchmark only.
    pub proxy: bool,
    /// `--limits`: the per-client limits' cost only.
    pub limits: bool,
    /// `--files`: the static-file benchmark only.
    pub files: bool,
    /// `--soak`: the soak only.
    pub soak: bool,
    /// `--soak`'s length in seconds.
    pub soak_seconds: u64,
    /// `--rounds`, if given.
    pub rounds: Option<u32>,
    /// `--duration`, if given.
    pub duration_s: Option<u64>,
    /// `--idle-conns`, if given.
    pub idle_conns: Option<usize>,
    /// `--warmup`.
    pub warmup_s: u64,
    /// `--peregrine`, if given.
    pub peregrine: Option<PathBuf>,
    /// `--no-build`.
    pub no_build: bool,
    /// `--peers-only`.
    pub peers_only: bool,
    /// `--nginx`, if given.
    pub nginx: Option<PathBuf>,
    /// `--no-nginx`.
    pub no_nginx: bool,
    /// `--h2o`, if given.
    pub h2o: Option<PathBuf>,
    /// `--no-h2o`.
    pub no_h2o: bool,
    /// `--scenario` filters (name prefixes); empty runs the default set.
    pub scenarios: Vec<String>,
    /// `--server-cpu`.
    pub server_cpus: String,
    /// `--wrk-cpu`.
    pub wrk_cpus: String,
    /// Whether `--server-cpu` or `--wrk-cpu` was given explicitly.
    pub cpus_explicit: bool,
    /// `--no-pin`.
    pub no_pin: bool,
    /// `--out`, if given.
    pub out: Option<PathBuf>,
}

impl Default for Cli {
    fn default() -> Self {
        Cli {
            quick: false,
            instructions: false,
            keep_profiles: false,
            proxy: false,
            limits: false,
            files: false,
            soak: false,
            soak_seconds: 600,
            rounds: None,
            duration_s: None,
            idle_conns: None,
            warmup_s: 1,
            peregrine: None,
            no_build: false,
            peers_only: false,
            nginx: None,
            no_nginx: false,
            h2o: None,
            no_h2o: false,
            scenarios: Vec::new(),
            server_cpus: "0".into(),
            wrk_cpus: "1".into(),
            cpus_explicit: false,
            no_pin: false,
            out: None,
        }
    }
}

// The defaults put a full run at about 13 minutes on a 2-core machine: 5
// rounds × 8 scenarios × 2 servers × 9 s of load (12 min), plus warm-up and
// the idle-memory phase. Five rounds give the median two runs of slack on each
// side against a noisy neighbour; 9 s keeps the 10 ms CPU-tick resolution
// below 0.2% of a run. `--quick` is one 3 s round over 6 of the 8 scenarios:
// a smoke test of about a minute, with numbers to match. `--scenario` narrows
// a full run to the part being worked on.
impl Cli {
    /// Rounds to run: explicit, else 1 with `--quick`, else 5.
    pub fn rounds(&self) -> u32 {
        self.rounds.unwrap_or(if self.quick { 1 } else { 5 })
    }

    /// Seconds per run: explicit, else 3 with `--quick`, else 9.
    pub fn duration_s(&self) -> u64 {
        self.duration_s.unwrap_or(if self.quick { 3 } else { 9 })
    }

    /// Idle connections per server: explicit, else 2,000 with `--quick`,
    /// else 10,000. Fewer in quick mode because opening and closing 10,000
    /// sockets twice takes a good part of a minute's budget.
    pub fn idle_conns(&self) -> usize {
        self.idle_conns.unwrap_or(if self.quick { 2_000 } else { 10_000 })
    }
}

/// Parses the arguments after the program name. `Ok(None)` means `--help`.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Cli>, String> {
    let mut cli = Cli::default();
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" => cli.quick = true,
            "--instructions" => cli.instructions = true,
            "--keep-profiles" => cli.keep_profiles = true,
            "--proxy" => cli.proxy = true,
            "--limits" => cli.limits = true,
            "--files" => cli.files = true,
            "--soak" => {
                cli.soak = true;
                // An optional length right after it.
                let next = inline.clone().or_else(|| args.peek().cloned());
                if let Some(secs) = next.as_deref().and_then(|v| v.parse::<u64>().ok()) {
                    if inline.is_none() {
                        args.next();
                    }
                    cli.soak_seconds = secs.max(20);
                }
            }
            "--no-build" => cli.no_build = true,
            "--peers-only" => cli.peers_only = true,
            "--no-nginx" => cli.no_nginx = true,
            "--no-h2o" => cli.no_h2o = true,
            "--h2o" => cli.h2o = Some(value(&flag)?.into()),
            "--scenario" => {
                let v = value(&flag)?;
                cli.scenarios.extend(v.split(',').filter(|f| !f.is_empty()).map(str::to_owned));
            }
            "--no-pin" => cli.no_pin = true,
            "--rounds" => cli.rounds = Some(positive(&flag, &value(&flag)?)?),
            "--duration" => cli.duration_s = Some(positive(&flag, &value(&flag)?)?),
            "--idle-conns" => {
                let v = value(&flag)?;
                cli.idle_conns =
                    Some(v.parse().map_err(|_| format!("{flag}: not a number: {v:?}"))?);
            }
            "--warmup" => {
                let v = value(&flag)?;
                cli.warmup_s = v.parse().map_err(|_| format!("{flag}: not a number: {v:?}"))?;
            }
            "--peregrine" => cli.peregrine = Some(value(&flag)?.into()),
            "--nginx" => cli.nginx = Some(value(&flag)?.into()),
            "--out" => cli.out = Some(value(&flag)?.into()),
            "--server-cpu" => {
                cli.server_cpus = cpu_list(&flag, value(&flag)?)?;
                cli.cpus_explicit = true;
            }
            "--wrk-cpu" => {
                cli.wrk_cpus = cpu_list(&flag, value(&flag)?)?;
                cli.cpus_explicit = true;
            }
            _ => return Err(format!("unknown argument {arg:?}; see --help")),
        }
    }
    if cli.keep_profiles && !cli.instructions {
        return Err("--keep-profiles goes with --instructions".into());
    }
    if cli.peers_only && cli.no_nginx && cli.no_h2o {
        return Err("--peers-only with --no-nginx and --no-h2o leaves nothing to benchmark".into());
    }
    Ok(Some(cli))
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(flag: &str, v: &str) -> Result<T, String> {
    match v.parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err(format!("{flag}: expected a positive number, got {v:?}")),
    }
}

/// Only what `taskset -c` accepts (digits, `,`, `-`), so a typo fails here
/// with a clear message instead of as a confusing wrk/server failure.
fn cpu_list(flag: &str, v: String) -> Result<String, String> {
    if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == ',' || c == '-') {
        Ok(v)
    } else {
        Err(format!("{flag}: expected a CPU list such as 0 or 2-3, got {v:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Option<Cli>, String> {
        parse(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn defaults_and_quick() {
        let cli = parse_strs(&[]).unwrap().unwrap();
        assert_eq!((cli.rounds(), cli.duration_s(), cli.idle_conns()), (5, 9, 10_000));
        let cli = parse_strs(&["--quick"]).unwrap().unwrap();
        assert_eq!((cli.rounds(), cli.duration_s(), cli.idle_conns()), (1, 3, 2_000));
        let cli = parse_strs(&["--quick", "--rounds", "2", "--duration=5", "--idle-conns", "0"])
            .unwrap()
            .unwrap();
        assert_eq!((cli.rounds(), cli.duration_s(), cli.idle_conns()), (2, 5, 0));
    }

    #[test]
    fn paths_and_cpus() {
        let cli = parse_strs(&["--peregrine", "/x/peregrine", "--server-cpu=2", "--wrk-cpu", "3"])
            .unwrap()
            .unwrap();
        assert_eq!(cli.peregrine, Some(PathBuf::from("/x/peregrine")));
        assert_eq!((cli.server_cpus.as_str(), cli.wrk_cpus.as_str()), ("2", "3"));
        assert!(cli.cpus_explicit);
    }

    #[test]
    fn peers_and_scenarios() {
        let cli = parse_strs(&["--h2o", "/opt/h2o", "--scenario", "h2c,tls", "--scenario=keep"])
            .unwrap()
            .unwrap();
        assert_eq!(cli.h2o, Some(PathBuf::from("/opt/h2o")));
        assert_eq!(cli.scenarios, ["h2c", "tls", "keep"]);
        assert!(parse_strs(&["--no-h2o"]).unwrap().unwrap().no_h2o);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse_strs(&["--rounds", "0"]).is_err());
        assert!(parse_strs(&["--duration"]).is_err());
        assert!(parse_strs(&["--idle-conns", "-1"]).is_err());
        assert!(parse_strs(&["--server-cpu", "0; rm -rf /"]).is_err());
        assert!(parse_strs(&["--keep-profiles"]).is_err(), "only with --instructions");
        assert!(parse_strs(&["--instructions", "--keep-profiles"]).unwrap().unwrap().keep_profiles);
        assert!(parse_strs(&["--frobnicate"]).is_err());
        assert!(parse_strs(&["--peers-only", "--no-nginx", "--no-h2o"]).is_err());
        assert!(parse_strs(&["--peers-only", "--no-nginx"]).is_ok());
        assert_eq!(parse_strs(&["--help"]).unwrap(), None);
    }
}

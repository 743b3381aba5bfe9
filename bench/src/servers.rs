//! Starting, probing and stopping the servers under test.
//!
//! Every server runs as a direct child of the harness, pinned with `taskset`,
//! inside its own temp dir, and is stopped when its [`Server`] is dropped —
//! on normal exit and while unwinding from a panic. Where util-linux's
//! `setpriv` is available the child also gets `PDEATHSIG=KILL`, so it dies with
//! the harness even if the harness is killed outright. On Ctrl+C the terminal
//! signals the whole foreground process group, servers and wrk included,
//! because the children are not detached from it.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::peers::{self, TlsFiles};
use crate::procstat;
use crate::report::{H2O, NGINX, PEREGRINE};
use crate::sys;

/// How long a server gets to bind and report (or accept on) its port.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a server gets to exit after SIGTERM before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The body every server must return for `GET /plaintext`.
pub const PLAINTEXT_BODY: &str = "Hello, World!";

/// Builds commands that run a program pinned to a CPU set.
#[derive(Debug, Clone, Default)]
pub struct Launcher {
    taskset: Option<PathBuf>,
    setpriv: Option<PathBuf>,
    /// A program (and its options) that runs the server, e.g. valgrind.
    wrapper: Vec<std::ffi::OsString>,
}

impl Launcher {
    /// Looks up `taskset` (when `pin` is set) and a `setpriv` that supports
    /// `--pdeathsig`. Either may be missing; commands then run unpinned or
    /// without the parent-death signal.
    pub fn detect(pin: bool) -> Self {
        let taskset = if pin { sys::find_program("taskset", &["/usr/bin/taskset"]) } else { None };
        let setpriv = sys::find_program("setpriv", &["/usr/bin/setpriv"]).filter(|p| {
            sys::run_with_timeout(Command::new(p).arg("--help"), Duration::from_secs(5))
                .map(|out| out.stdout.contains("--pdeathsig"))
                .unwrap_or(false)
        });
        Launcher { taskset, setpriv, wrapper: Vec::new() }
    }

    /// The same launcher, running programs under `wrapper` (a program and its options,
    /// which must run the server in its own process, as valgrind does).
    pub fn wrapped(self, wrapper: Vec<std::ffi::OsString>) -> Self {
        Launcher { wrapper, ..self }
    }

    /// Whether commands are actually pinned.
    pub fn pins(&self) -> bool {
        self.taskset.is_some()
    }

    /// `[setpriv --pdeathsig KILL] [taskset -c CPUS] PROGRAM`. Both wrappers
    /// `exec` the next program, so the spawned child's PID is the PID of
    /// `program` itself — the one whose `/proc/PID/stat` we read.
    pub fn command(&self, cpus: &str, program: &Path) -> Command {
        let mut chain: Vec<std::ffi::OsString> = Vec::new();
        if let Some(setpriv) = &self.setpriv {
            chain.extend([setpriv.as_os_str().into(), "--pdeathsig".into(), "KILL".into()]);
        }
        if let Some(taskset) = &self.taskset {
            chain.extend([taskset.as_os_str().into(), "-c".into(), cpus.into()]);
        }
        chain.extend(self.wrapper.iter().cloned());
        chain.push(program.as_os_str().into());
        let mut cmd = Command::new(&chain[0]);
        cmd.args(&chain[1..]);
        cmd
    }
}

/// A directory under the system temp dir, removed (recursively) on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh, uniquely named directory.
    pub fn new(label: &str) -> io::Result<Self> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let path = std::env::temp_dir()
            .join(format!("peregrine-bench-{label}-{}-{nanos}", std::process::id()));
        fs::create_dir(&path)?;
        Ok(TempDir(path))
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Removes temp dirs left by earlier harness runs that were killed
    /// (Ctrl+C, SIGKILL) before their Drop guards ran. Only dirs whose owning
    /// PID (embedded in the name) no longer exists are touched.
    pub fn remove_stale() {
        let Ok(entries) = fs::read_dir(std::env::temp_dir()) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(owner) = name.to_str().and_then(stale_dir_owner) else { continue };
            if !Path::new(&format!("/proc/{owner}")).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// PID embedded in a `peregrine-bench-LABEL-PID-NANOS` directory name.
fn stale_dir_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("peregrine-bench-")?;
    let mut parts = rest.rsplit('-');
    let _nanos: u128 = parts.next()?.parse().ok()?;
    parts.next()?.parse().ok()
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running server under test. Dropping it stops the process.
#[derive(Debug)]
pub struct Server {
    name: String,
    version: String,
    child: Child,
    addr: SocketAddrV4,
    tls_addr: Option<SocketAddrV4>,
    log: PathBuf,
    /// Count the server's own process only, not its descendants (see [`Server::cpu_ticks`]).
    own_cpu_only: bool,
    // Declared last so it is removed only after `Drop::drop` stopped the process.
    _dir: TempDir,
}

impl Server {
    /// Display name, e.g. `peregrine` or `nginx`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same server under another display name (a second Peregrine set-up in a table).
    pub fn named(mut self, name: &str) -> Server {
        self.name = name.into();
        self
    }

    /// Counts only the server's own CPU time: its descendants are not part of what is
    /// measured (Peregrine hosting the upstream program as an app).
    pub fn own_cpu_only(mut self) -> Server {
        self.own_cpu_only = true;
        self
    }

    /// Version string for the report.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// PID of the server process (not a wrapper: see [`Launcher::command`]).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The loopback address of its cleartext listener (HTTP/1.1, and h2c
    /// where the server speaks it).
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// The loopback address of its TLS listener, if it has one.
    pub fn tls_addr(&self) -> Option<SocketAddrV4> {
        self.tls_addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `https://127.0.0.1:PORT{path}` on the TLS listener, if there is one.
    pub fn tls_url(&self, path: &str) -> Option<String> {
        self.tls_addr.map(|addr| format!("https://{addr}{path}"))
    }

    /// CPU time (user and system, all threads) consumed so far by the server
    /// and its descendants, in clock ticks. The descendants matter for h2o,
    /// whose private-key operations run in a forked helper (neverbleed);
    /// Peregrine and nginx (`master_process off`) are single processes. With
    /// [`own_cpu_only`](Self::own_cpu_only), the server's process alone.
    pub fn cpu_ticks(&self) -> io::Result<procstat::CpuTicks> {
        match self.own_cpu_only {
            true => procstat::read_cpu_ticks(self.pid()),
            false => procstat::read_tree_cpu_ticks(self.pid()),
        }
    }

    /// `Ok` while the process runs; otherwise its exit status and log tail.
    pub fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); last log lines:\n{}",
                self.name,
                log_tail(&self.log, 20)
            )),
            Err(e) => Err(format!("cannot poll {}: {e}", self.name)),
        }
    }

    /// Stops the process: SIGTERM, then SIGKILL after a short grace period.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // std can only SIGKILL; ask politely first via kill(1) so servers that
        // clean up on SIGTERM get to, but never wait unboundedly.
        let asked =
            sys::find_program("kill", &["/bin/kill", "/usr/bin/kill"]).is_some_and(|kill| {
                sys::run_with_timeout(
                    Command::new(kill).args(["-TERM", &self.pid().to_string()]),
                    Duration::from_secs(2),
                )
                .is_ok_and(|out| out.status.success())
            });
        if asked && matches!(sys::wait_timeout(&mut self.child, STOP_GRACE), Ok(Some(_))) {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts Peregrine as `peregrine --config FILE --threads 1` pinned to
/// `cpus`, the config holding a cleartext listener and, with `tls`, a TLS one
/// (see [`peers::peregrine_config`]), and waits (bounded) for one
/// `listening on http://127.0.0.1:PORT` line, then (with `tls`) one
/// `listening on https://127.0.0.1:PORT` line on stdout.
pub fn start_peregrine(
    launcher: &Launcher,
    cpus: &str,
    binary: &Path,
    tls: Option<&TlsFiles>,
) -> Result<Server, String> {
    start_peregrine_with(launcher, cpus, binary, &peers::peregrine_config(tls), tls.is_some())
}

/// Starts Peregrine as [`start_peregrine`] does, with `config_text` as its config file
/// (whose listeners are a cleartext one, then a TLS one when `tls`).
pub fn start_peregrine_with(
    launcher: &Launcher,
    cpus: &str,
    binary: &Path,
    config_text: &str,
    tls: bool,
) -> Result<Server, String> {
    let dir = TempDir::new("peregrine").map_err(|e| format!("cannot create temp dir: {e}"))?;
    let log = dir.path().join("stderr.log");
    let stderr = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let config = dir.path().join("peregrine.toml");
    fs::write(&config, config_text)
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let mut child = launcher
        .command(cpus, binary)
        .arg("--config")
        .arg(&config)
        .args(["--threads", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let stdout = child.stdout.take().expect("stdout was piped");
    let mut server = Server {
        name: PEREGRINE.into(),
        version: binary.display().to_string(),
        child,
        addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        tls_addr: None,
        log,
        own_cpu_only: false,
        _dir: dir,
    };

    // Forward stdout lines to us until we have the address, then keep
    // draining so a chatty server never blocks on a full pipe. The thread ends
    // when the server exits and its stdout closes.
    let (lines_tx, lines_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = lines_tx.send(line);
        }
    });

    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut seen = Vec::new();
    let (mut http, mut https) = (None, None);
    while http.is_none() || (tls && https.is_none()) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(remaining) {
            Ok(line) => {
                match parse_listening_line(&line) {
                    Some((Scheme::Http, addr)) => http = http.or(Some(addr)),
                    Some((Scheme::Https, addr)) => https = https.or(Some(addr)),
                    None => {}
                }
                if seen.len() < 20 {
                    seen.push(line);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "peregrine printed no `listening on http{}://127.0.0.1:PORT` line within \
                     {STARTUP_TIMEOUT:?}; stdout so far: {seen:?}; stderr tail:\n{}",
                    if http.is_some() { "s" } else { "" },
                    log_tail(&server.log, 20)
                ));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed: the process is exiting. Give it a moment so
                // the exit status is available for the message.
                let _ = sys::wait_timeout(&mut server.child, Duration::from_secs(1));
                let exited = server.check_running().err().unwrap_or_default();
                return Err(format!(
                    "peregrine closed stdout before reporting its addresses; stdout: {seen:?}; \
                     {exited}"
                ));
            }
        }
    }
    server.addr = http.expect("loop ends with an http address");
    server.tls_addr = https;
    server.version = version_of_peregrine(binary);
    Ok(server)
}

fn version_of_peregrine(binary: &Path) -> String {
    sys::first_output_line(binary, &["--version"])
        .filter(|v| v.to_ascii_lowercase().contains("peregrine"))
        .unwrap_or_else(|| format!("peregrine ({})", binary.display()))
}

/// Which kind of listener a `listening on` line announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `listening on http://…`: cleartext.
    Http,
    /// `listening on https://…`: TLS.
    Https,
}

/// Extracts the scheme and address from Peregrine's
/// `listening on http[s]://127.0.0.1:PORT` line. Tolerates log prefixes and
/// trailing text (e.g. ANSI colour codes); ignores the admin listener's line;
/// returns `None` for anything but a 127.0.0.1 address with a non-zero port,
/// because the harness must never send load anywhere else.
pub fn parse_listening_line(line: &str) -> Option<(Scheme, SocketAddrV4)> {
    const MARKER: &str = "listening on http";
    let at = line.find(MARKER)?;
    if line[..at].trim_end().ends_with("admin") {
        return None;
    }
    let rest = &line[at + MARKER.len()..];
    let (scheme, rest) = match rest.strip_prefix("s://") {
        Some(rest) => (Scheme::Https, rest),
        None => (Scheme::Http, rest.strip_prefix("://")?),
    };
    let end =
        rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')).unwrap_or(rest.len());
    let addr: SocketAddrV4 = rest[..end].parse().ok()?;
    (*addr.ip() == Ipv4Addr::LOCALHOST && addr.port() != 0).then_some((scheme, addr))
}

/// The nginx config templates: `bench/peers/nginx.conf` and the TLS server
/// block inserted into it, `bench/peers/nginx-tls.conf`.
#[derive(Debug, Clone, Copy)]
pub struct NginxTemplates<'a> {
    /// The whole config.
    pub main: &'a str,
    /// The TLS `server` block.
    pub tls: &'a str,
}

/// Starts nginx from `templates` pinned to `cpus`: renders the config (with
/// a TLS port when `tls` is given) into a temp dir, validates it with
/// `nginx -t`, starts it in the foreground and waits (bounded) until its
/// ports accept.
pub fn start_nginx(
    launcher: &Launcher,
    cpus: &str,
    binary: &Path,
    templates: NginxTemplates<'_>,
    tls: Option<&TlsFiles>,
) -> Result<Server, String> {
    let dir = TempDir::new("nginx").map_err(|e| format!("cannot create temp dir: {e}"))?;
    let (port, tls_port) = two_ports()?;
    let conf = dir.path().join("nginx.conf");
    let text = peers::nginx_config(
        templates.main,
        templates.tls,
        dir.path(),
        port,
        tls.map(|files| (files, tls_port)),
    );
    fs::write(&conf, text).map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    let error_log = dir.path().join("error.log");
    // `-p` (prefix) and `-e` (startup error log) keep nginx away from its
    // compiled-in /etc and /var paths, which matters when running as root.
    let mut prefix = dir.path().as_os_str().to_owned();
    prefix.push("/");
    let nginx_args = [
        "-p".as_ref(),
        prefix.as_os_str(),
        "-e".as_ref(),
        error_log.as_os_str(),
        "-c".as_ref(),
        conf.as_os_str(),
    ];

    let test = sys::run_with_timeout(
        Command::new(binary).arg("-t").args(nginx_args),
        Duration::from_secs(10),
    )
    .map_err(|e| format!("`nginx -t` failed to run: {e}"))?;
    if !test.status.success() {
        return Err(format!("`nginx -t` rejected the config:\n{}", test.stderr.trim()));
    }

    let version = sys::first_output_line(binary, &["-v"])
        .map(|v| v.trim_start_matches("nginx version: ").to_owned())
        .unwrap_or_else(|| "nginx".into());
    let log = dir.path().join("stderr.log");
    let stderr = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let child = launcher
        .command(cpus, binary)
        .args(nginx_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let mut server = Server {
        name: NGINX.into(),
        version,
        child,
        addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
        tls_addr: tls.map(|_| SocketAddrV4::new(Ipv4Addr::LOCALHOST, tls_port)),
        log: error_log,
        own_cpu_only: false,
        _dir: dir,
    };
    wait_until_accepting(&mut server)?;
    Ok(server)
}

/// Starts h2o from `template` (`bench/peers/h2o.conf`) pinned to `cpus`:
/// renders the config and the 13-byte `plaintext.txt` it serves into a temp
/// dir, validates it with `h2o -t`, starts it in the foreground and waits
/// (bounded) until its ports accept.
pub fn start_h2o(
    launcher: &Launcher,
    cpus: &str,
    binary: &Path,
    template: &str,
    tls: Option<&TlsFiles>,
) -> Result<Server, String> {
    let dir = TempDir::new("h2o").map_err(|e| format!("cannot create temp dir: {e}"))?;
    let (port, tls_port) = two_ports()?;
    let body = dir.path().join("plaintext.txt");
    fs::write(&body, PLAINTEXT_BODY)
        .map_err(|e| format!("cannot write {}: {e}", body.display()))?;
    let conf = dir.path().join("h2o.conf");
    let user = sys::running_as_root().then_some("root");
    let text =
        peers::h2o_config(template, dir.path(), port, tls.map(|files| (files, tls_port)), user);
    fs::write(&conf, text).map_err(|e| format!("cannot write {}: {e}", conf.display()))?;

    let test = sys::run_with_timeout(
        Command::new(binary).arg("-t").arg("-c").arg(&conf),
        Duration::from_secs(10),
    )
    .map_err(|e| format!("`h2o -t` failed to run: {e}"))?;
    if !test.status.success() {
        return Err(format!(
            "`h2o -t` rejected the config:\n{}{}",
            test.stdout.trim(),
            test.stderr.trim()
        ));
    }
    // `h2o --version` prints `h2o version 2.2.5` and then its libraries.
    let version = sys::first_output_line(binary, &["--version"])
        .map(|v| v.replace(" version ", " "))
        .unwrap_or_else(|| "h2o".into());
    let log = dir.path().join("stderr.log");
    let stderr = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let child = launcher
        .command(cpus, binary)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let mut server = Server {
        name: H2O.into(),
        version,
        child,
        addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
        tls_addr: tls.map(|_| SocketAddrV4::new(Ipv4Addr::LOCALHOST, tls_port)),
        log: dir.path().join("error.log"),
        own_cpu_only: false,
        _dir: dir,
    };
    wait_until_accepting(&mut server)?;
    Ok(server)
}

/// Two distinct free loopback ports (cleartext, TLS).
fn two_ports() -> Result<(u16, u16), String> {
    // Hold the first listener while asking for the second, so they differ.
    let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| Ok((l.local_addr()?.port(), l)))
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    let second = free_loopback_port().map_err(|e| format!("cannot find a free port: {e}"))?;
    Ok((first.0, second))
}

/// A currently free TCP port on 127.0.0.1, found by binding port 0 and
/// releasing it. Racy in principle; fine on a benchmark machine.
pub fn free_loopback_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// Waits (bounded) until every listener of `server` accepts connections.
fn wait_until_accepting(server: &mut Server) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    for addr in [Some(server.addr), server.tls_addr].into_iter().flatten() {
        wait_for_port(server, SocketAddr::V4(addr), deadline)?;
    }
    Ok(())
}

fn wait_for_port(server: &mut Server, addr: SocketAddr, deadline: Instant) -> Result<(), String> {
    loop {
        server.check_running()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not accept on {addr} within {STARTUP_TIMEOUT:?}; log tail:\n{}",
                server.name,
                log_tail(&server.log, 20)
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Sends one `GET /plaintext` and checks for a 200 with the expected body, so
/// a misrouted server (e.g. answering 404 quickly) is never benchmarked.
pub fn check_plaintext(addr: SocketAddrV4) -> Result<(), String> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(stream, "GET /plaintext HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write to {addr}: {e}"))?;

    // Read until EOF or until the body has arrived, whichever is first; a
    // server that ignores `Connection: close` must not stall the harness.
    let deadline = Instant::now() + timeout;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && response.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read from {addr}: {e}")),
        }
        if plaintext_response_ok(&response) {
            break;
        }
    }
    if plaintext_response_ok(&response) {
        Ok(())
    } else {
        let shown: String = String::from_utf8_lossy(&response).chars().take(300).collect();
        Err(format!(
            "GET /plaintext on {addr} did not return 200 {PLAINTEXT_BODY:?}; got {shown:?}"
        ))
    }
}

/// Whether `response` holds a complete `200` answer to `GET /plaintext`: a
/// status line, a header block and the expected body.
pub fn plaintext_response_ok(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    head.starts_with("HTTP/1.1 200") && body.contains(PLAINTEXT_BODY)
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_line() {
        let want = Some((Scheme::Http, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40123)));
        assert_eq!(parse_listening_line("listening on http://127.0.0.1:40123"), want);
        assert_eq!(
            parse_listening_line(
                "2026-01-01T00:00:00Z  INFO peregrine: listening on http://127.0.0.1:40123\x1b[0m"
            ),
            want
        );
        assert_eq!(parse_listening_line("listening on http://127.0.0.1:40123/"), want);
        assert_eq!(
            parse_listening_line("listening on https://127.0.0.1:8443"),
            Some((Scheme::Https, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8443)))
        );
        // The admin listener is not a place to send load.
        assert_eq!(parse_listening_line("admin listening on http://127.0.0.1:9090"), None);
        assert_eq!(parse_listening_line("listening on httpx://127.0.0.1:1"), None);
    }

    #[test]
    fn refuses_non_loopback_or_unbound_addresses() {
        assert_eq!(parse_listening_line("listening on http://10.0.0.1:80"), None);
        assert_eq!(parse_listening_line("listening on http://0.0.0.0:80"), None);
        assert_eq!(parse_listening_line("listening on http://127.0.0.1:0"), None);
        assert_eq!(parse_listening_line("starting up"), None);
    }

    #[test]
    fn recognises_plaintext_response() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
        assert!(plaintext_response_ok(ok));
        assert!(!plaintext_response_ok(b"HTTP/1.1 404 Not Found\r\n\r\nHello, World!"));
        assert!(!plaintext_response_ok(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello"));
    }

    #[test]
    fn finds_owner_of_temp_dirs() {
        assert_eq!(stale_dir_owner("peregrine-bench-nginx-9212-1795311739761807583"), Some(9212));
        assert_eq!(stale_dir_owner("peregrine-bench-run-1-2"), Some(1));
        assert_eq!(stale_dir_owner("peregrine-bench-nginx-x-2"), None);
        assert_eq!(stale_dir_owner("other-nginx-1-2"), None);
        let dir = TempDir::new("test").unwrap();
        let owner = stale_dir_owner(dir.path().file_name().unwrap().to_str().unwrap());
        assert_eq!(owner, Some(std::process::id()));
    }

    #[test]
    fn free_ports_are_nonzero_and_distinct() {
        assert_ne!(free_loopback_port().unwrap(), 0);
        let (a, b) = two_ports().unwrap();
        assert!(a != 0 && b != 0 && a != b);
    }

    #[test]
    fn launcher_exec_chain_keeps_pid() {
        // The PID we spawn must be the program's own, through both wrappers.
        let launcher = Launcher::detect(true);
        let child = launcher
            .command("0", Path::new("/bin/sh"))
            .args(["-c", "echo $$"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run /bin/sh");
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pid.to_string());
    }
}

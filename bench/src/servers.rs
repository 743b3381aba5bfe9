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

use crate::procstat;
use crate::report::{NGINX, PEREGRINE};
use crate::sys;

/// How long a server gets to bind and report (or accept on) its port.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a server gets to exit after SIGTERM before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The body both servers must return for `GET /plaintext`.
pub const PLAINTEXT_BODY: &str = "Hello, World!";

/// Builds commands that run a program pinned to a CPU set.
#[derive(Debug, Clone, Default)]
pub struct Launcher {
    taskset: Option<PathBuf>,
    setpriv: Option<PathBuf>,
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
        Launcher { taskset, setpriv }
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
    log: PathBuf,
    // Declared last so it is removed only after `Drop::drop` stopped the process.
    _dir: TempDir,
}

impl Server {
    /// Display name, e.g. `peregrine` or `nginx`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Version string for the report.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// PID of the server process (not a wrapper: see [`Launcher::command`]).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The loopback address it listens on.
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// CPU time (user + system, all threads) consumed so far, in clock ticks.
    pub fn cpu_ticks(&self) -> io::Result<u64> {
        procstat::read_cpu_ticks(self.pid())
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

/// Starts Peregrine as `peregrine --listen 127.0.0.1:0 --threads 1` pinned to
/// `cpus`, and waits (bounded) for its `listening on http://127.0.0.1:PORT`
/// line on stdout.
pub fn start_peregrine(launcher: &Launcher, cpus: &str, binary: &Path) -> Result<Server, String> {
    let dir = TempDir::new("peregrine").map_err(|e| format!("cannot create temp dir: {e}"))?;
    let log = dir.path().join("stderr.log");
    let stderr = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let mut child = launcher
        .command(cpus, binary)
        .args(["--listen", "127.0.0.1:0", "--threads", "1"])
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
        log,
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
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(remaining) {
            Ok(line) => {
                if let Some(addr) = parse_listening_line(&line) {
                    server.addr = addr;
                    break;
                }
                if seen.len() < 20 {
                    seen.push(line);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "peregrine printed no `listening on http://127.0.0.1:PORT` line within \
                     {STARTUP_TIMEOUT:?}; stdout so far: {seen:?}; stderr tail:\n{}",
                    log_tail(&server.log, 20)
                ));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed: the process is exiting. Give it a moment so
                // the exit status is available for the message.
                let _ = sys::wait_timeout(&mut server.child, Duration::from_secs(1));
                let exited = server.check_running().err().unwrap_or_default();
                return Err(format!(
                    "peregrine closed stdout before reporting its address; stdout: {seen:?}; {exited}"
                ));
            }
        }
    }
    server.version = version_of_peregrine(binary);
    Ok(server)
}

fn version_of_peregrine(binary: &Path) -> String {
    sys::first_output_line(binary, &["--version"])
        .filter(|v| v.to_ascii_lowercase().contains("peregrine"))
        .unwrap_or_else(|| format!("peregrine ({})", binary.display()))
}

/// Extracts the address from Peregrine's `listening on http://127.0.0.1:PORT`
/// line. Tolerates log prefixes and trailing text (e.g. ANSI colour codes);
/// returns `None` for anything but a 127.0.0.1 address with a non-zero port,
/// because the harness must never send load anywhere else.
pub fn parse_listening_line(line: &str) -> Option<SocketAddrV4> {
    const MARKER: &str = "listening on http://";
    let rest = &line[line.find(MARKER)? + MARKER.len()..];
    let end =
        rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')).unwrap_or(rest.len());
    let addr: SocketAddrV4 = rest[..end].parse().ok()?;
    (*addr.ip() == Ipv4Addr::LOCALHOST && addr.port() != 0).then_some(addr)
}

/// Starts nginx from `template` (see `bench/peers/nginx.conf`) pinned to
/// `cpus`: renders the config into a temp dir, validates it with `nginx -t`,
/// starts it in the foreground and waits (bounded) until the port accepts.
pub fn start_nginx(
    launcher: &Launcher,
    cpus: &str,
    binary: &Path,
    template: &str,
) -> Result<Server, String> {
    let dir = TempDir::new("nginx").map_err(|e| format!("cannot create temp dir: {e}"))?;
    let port = free_loopback_port().map_err(|e| format!("cannot find a free port: {e}"))?;
    let conf = dir.path().join("nginx.conf");
    fs::write(&conf, render_nginx_conf(template, dir.path(), port))
        .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
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
        log: error_log,
        _dir: dir,
    };
    wait_until_accepting(&mut server)?;
    Ok(server)
}

/// Fills the `{{DIR}}` and `{{PORT}}` placeholders of the nginx template.
pub fn render_nginx_conf(template: &str, dir: &Path, port: u16) -> String {
    template.replace("{{DIR}}", &dir.display().to_string()).replace("{{PORT}}", &port.to_string())
}

/// A currently free TCP port on 127.0.0.1, found by binding port 0 and
/// releasing it. Racy in principle; fine on a benchmark machine.
pub fn free_loopback_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

fn wait_until_accepting(server: &mut Server) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let addr = SocketAddr::V4(server.addr);
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
        let want = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40123);
        assert_eq!(parse_listening_line("listening on http://127.0.0.1:40123"), Some(want));
        assert_eq!(
            parse_listening_line(
                "2026-01-01T00:00:00Z  INFO peregrine: listening on http://127.0.0.1:40123\x1b[0m"
            ),
            Some(want)
        );
        assert_eq!(parse_listening_line("listening on http://127.0.0.1:40123/"), Some(want));
    }

    #[test]
    fn refuses_non_loopback_or_unbound_addresses() {
        assert_eq!(parse_listening_line("listening on http://10.0.0.1:80"), None);
        assert_eq!(parse_listening_line("listening on http://0.0.0.0:80"), None);
        assert_eq!(parse_listening_line("listening on http://127.0.0.1:0"), None);
        assert_eq!(parse_listening_line("starting up"), None);
    }

    #[test]
    fn renders_nginx_template() {
        let template = include_str!("../peers/nginx.conf");
        let conf = render_nginx_conf(template, Path::new("/tmp/x"), 8081);
        assert!(!conf.contains("{{"), "unfilled placeholder in:\n{conf}");
        assert!(conf.contains("listen 127.0.0.1:8081;"));
        assert!(conf.contains("pid /tmp/x/nginx.pid;"));
        assert!(conf.contains("master_process off;"));
        assert!(conf.contains("keepalive_requests 10000000;"));
        // The idle-memory phase holds 10,000 connections.
        assert!(conf.contains("worker_rlimit_nofile 65536;"));
        assert!(conf.contains("worker_connections 20000;"));
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
    fn free_port_is_nonzero() {
        assert_ne!(free_loopback_port().unwrap(), 0);
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

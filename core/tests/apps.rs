//! App hosting with real processes: the `peregrine` binary starts `examples/hosted_app.rs`
//! (built by `cargo test` with the other examples), forwards to it with its pairing token,
//! restarts it after a crash, stops restarting past the rapid-fail limit, kills a start that
//! takes too long, takes it offline while `app_offline.htm` exists, restarts it on SIGHUP
//! under load without losing a request, captures its output, and never leaves it running
//! after Peregrine is gone (SIGTERM, or `kill -9`).

#[path = "support/load.rs"]
mod load;
#[path = "support/process.rs"]
mod process;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use process::Proc;

/// The example app, built by `cargo test` next to this test's directory.
fn app_exe() -> PathBuf {
    let deps = std::env::current_exe().expect("test path");
    let dir = deps.parent().and_then(Path::parent).expect("target dir");
    let exe = dir.join("examples").join(format!("hosted_app{}", std::env::consts::EXE_SUFFIX));
    assert!(
        exe.exists(),
        "{} is missing: `cargo test` builds it (or: cargo build -p peregrine --example hosted_app)",
        exe.display()
    );
    exe
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "peregrine-apps-{name}-{}-{}",
            std::process::id(),
            nanos()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// A running Peregrine, its listener and its admin listener.
struct Server {
    proc: Proc,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Server {
    /// `peregrine --app <hosted_app>` with `env` for the app (inherited through Peregrine).
    fn with_app_flag(env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peregrine"));
        cmd.args(["--threads", "2", "--no-pin", "--listen", "127.0.0.1:0"])
            .args(["--admin", "127.0.0.1:0", "--app"])
            // The command is split into words as a shell would: a backslash escapes (Windows
            // takes forward slashes in paths too).
            .arg(app_exe().display().to_string().replace('\\', "/"))
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Server::spawn(cmd)
    }

    /// Peregrine with a config file whose `[[app]] name = "app"` has `app_keys` too, and a
    /// catch-all route to it.
    fn with_config(dir: &Path, app_keys: &str) -> Server {
        let exe = app_exe().display().to_string().replace('\\', "/");
        let config = format!(
            "threads = 2\npin_threads = false\nadmin = \"127.0.0.1:0\"\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\n\
             [[route]]\npath_prefix = \"/\"\napp = \"app\"\n\
             [[app]]\nname = \"app\"\ncommand = \"'{exe}'\"\n{app_keys}\n"
        );
        let path = dir.join("peregrine.toml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peregrine"));
        cmd.arg("--config").arg(&path).env("NO_COLOR", "1");
        Server::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Server {
        let mut proc = Proc::spawn(&mut cmd);
        let addr = proc.listening();
        let admin = proc.addr("admin listening on ", process::WAIT);
        Server { proc, addr, admin }
    }

    /// The value of `name{app="app"}` on `/metrics`.
    fn metric(&self, name: &str) -> u64 {
        let (_, text) = get(self.admin, "/metrics", &[]);
        let prefix = format!("{name}{{app=\"app\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"))
    }

    /// Waits (up to 10 s) until `name` reads `want`. The deadline is checked before each
    /// read, so the last read always starts after it: under Wine on a loaded machine one
    /// `/metrics` request can take seconds, and a read begun before the change landed must
    /// not be the one that fails the test.
    fn wait_metric(&self, name: &str, want: u64) {
        let deadline = Instant::now() + process::WAIT;
        loop {
            let late = Instant::now() >= deadline;
            let now = self.metric(name);
            if now == want {
                return;
            }
            assert!(!late, "{name} stayed {now}, wanted {want}; stderr: {}", self.proc.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One GET on a new connection: the status and the body.
fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    request_with(addr, "GET", path, headers)
}

/// One bodiless request on a new connection: the status and the body.
fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    request_with(addr, method, path, &[])
}

fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The app's `key=value` lines.
fn fields(body: &str) -> HashMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `GET path` answered 200 by the app: its pid and port.
fn app_answer(addr: SocketAddr, path: &str) -> (u32, u16) {
    let (status, body) = get(addr, path, &[]);
    assert_eq!(status, 200, "GET {path}: {body}");
    let f = fields(&body);
    (f["pid"].parse().expect("pid"), f["port"].parse().unwrap_or(0))
}

/// Whether something accepts connections on the loopback port.
fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Waits (up to 10 s) until nothing listens on `port` any more: the app process is gone.
fn wait_port_closed(port: u16) {
    let deadline = Instant::now() + process::WAIT;
    while port_open(port) {
        assert!(Instant::now() < deadline, "the app on port {port} is still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(target_os = "linux")]
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(") ").next().is_none_or(|rest| !rest.starts_with('Z')))
}

#[cfg(target_os = "linux")]
fn wait_gone(pid: u32) {
    let deadline = Instant::now() + process::WAIT;
    while alive(pid) {
        assert!(Instant::now() < deadline, "app process {pid} is still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_app_starts_on_the_first_request_and_gets_the_token_not_the_clients() {
    let server = Server::with_app_flag(&[]);
    // Nothing runs until a request comes.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.metric("peregrine_app_starts_total"), 0);
    assert_eq!(server.metric("peregrine_app_state"), 0);
    // The app refuses a request without the right token (400): a forged one from the client
    // is replaced with the real one.
    let (status, body) = get(server.addr, "/first", &[("MS-ASPNETCORE-TOKEN", "forged")]);
    assert_eq!(status, 200, "{body}");
    let f = fields(&body);
    assert_eq!(f["path"], "/first");
    assert_eq!(f["x-forwarded-for"], "127.0.0.1");
    assert_eq!(f["x-forwarded-proto"], "http");
    assert_eq!(f["appl_path"], "/");
    assert_eq!(server.metric("peregrine_app_starts_total"), 1);
    assert_eq!(server.metric("peregrine_app_state"), 2);
    // The same process serves the next requests.
    let pid: u32 = f["pid"].parse().unwrap();
    assert_eq!(app_answer(server.addr, "/again").0, pid);
}

#[test]
fn a_crash_is_noticed_at_once_and_the_next_request_gets_a_new_process() {
    let server = Server::with_app_flag(&[]);
    let (first, port) = app_answer(server.addr, "/");
    let (status, _) = get(server.addr, "/crash", &[]);
    assert_eq!(status, 502, "the request that crashed the app");
    // Noticed without another request.
    server.wait_metric("peregrine_app_crashes_total", 1);
    server.wait_metric("peregrine_app_state", 3);
    wait_port_closed(port);
    let stderr = server.proc.wait_stderr("exited unexpectedly");
    assert!(stderr.contains("crashes on request"), "the app's last output is logged: {stderr}");
    let (second, _) = app_answer(server.addr, "/");
    assert_ne!(first, second, "a new process");
    assert_eq!(server.metric("peregrine_app_starts_total"), 2);
}

#[test]
fn a_crash_loop_hits_the_rapid_fail_limit_and_recovers_after_the_window() {
    let dir = Scratch::new("rapid");
    let marker = dir.0.join("fail");
    std::fs::write(&marker, "").unwrap();
    let marker_text = marker.display().to_string().replace('\\', "/");
    let server = Server::with_config(
        &dir.0,
        &format!(
            "rapid_fails_per_minute = 2\nrapid_fail_window = \"3s\"\n\
             env = {{ HOSTED_APP_FAIL_WHILE = \"{marker_text}\" }}\n"
        ),
    );
    // Each request starts it once; each start fails.
    for attempt in 1..=3 {
        let (status, page) = get(server.addr, "/", &[]);
        assert_eq!(status, 502, "attempt {attempt}: {page}");
        assert!(page.contains("failed to start") && page.contains("<code>app</code>"), "{page}");
        // "exit status: 5" on Unix, "exit code: 5" on Windows.
        assert!(page.contains(": 5 before it was ready"), "the page names the exit status: {page}");
    }
    assert_eq!(server.metric("peregrine_app_failed_starts_total"), 3);
    // Three failures within the window passed the limit of two: no more starts.
    let (status, page) = get(server.addr, "/", &[]);
    assert_eq!(status, 502);
    assert!(page.contains("will not start it again"), "{page}");
    assert_eq!(server.metric("peregrine_app_starts_total"), 3, "no start while blocked");
    assert!(server.metric("peregrine_app_restarts_refused_total") >= 1);
    // Fixed, and once the window has passed, it starts again.
    std::fs::remove_file(&marker).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(server.addr, "/", &[]);
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {status} {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(server.metric("peregrine_app_state"), 2);
}

#[test]
fn a_start_past_the_startup_time_limit_is_killed_and_answered_502() {
    let dir = Scratch::new("slow");
    let log = dir.0.join("logs").join("app");
    let server = Server::with_config(
        &dir.0,
        &format!(
            "startup_time_limit = \"1s\"\nstdout_log = \"{}\"\n\
             env = {{ HOSTED_APP_START_DELAY_MS = \"30000\" }}\n",
            log.display().to_string().replace('\\', "/")
        ),
    );
    let started = Instant::now();
    let (status, page) = get(server.addr, "/", &[]);
    assert_eq!(status, 502, "{page}");
    assert!(page.contains("did not become ready within 1s"), "{page}");
    assert!(started.elapsed() < Duration::from_secs(8), "answered after {:?}", started.elapsed());
    assert!(page.contains("app_"), "the page names the log file: {page}");
    // The process is gone: its log file names its pid.
    let name = std::fs::read_dir(dir.0.join("logs"))
        .expect("log dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|n| n.ends_with(".log"))
        .expect("a log file");
    let pid: u32 = name.trim_end_matches(".log").rsplit('_').next().unwrap().parse().unwrap();
    #[cfg(target_os = "linux")]
    wait_gone(pid);
    let _ = pid;
    server.wait_metric("peregrine_app_failed_starts_total", 1);
}

#[test]
fn past_max_queued_requests_a_request_waiting_for_a_start_gets_503() {
    let dir = Scratch::new("queue");
    let server = Server::with_config(
        &dir.0,
        "max_queued_requests = 1\nenv = { HOSTED_APP_START_DELAY_MS = \"1500\" }\n",
    );
    // The first waits for the slow start; the next two find the queue full.
    let addr = server.addr;
    let first = std::thread::spawn(move || get(addr, "/first", &[]));
    server.wait_metric("peregrine_app_queued_requests", 1);
    for _ in 0..2 {
        let (status, body) = get(server.addr, "/more", &[]);
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("too many requests are waiting"), "{body}");
    }
    let (status, body) = first.join().unwrap();
    assert_eq!(status, 200, "the queued request is served once the app is ready: {body}");
    server.wait_metric("peregrine_app_queued_requests", 0);
}

#[test]
fn a_log_file_past_its_size_is_renamed_and_a_new_one_started() {
    let dir = Scratch::new("rotate");
    let log = dir.0.join("logs").join("app");
    let server = Server::with_config(
        &dir.0,
        &format!(
            "stdout_log = \"{}\"\nstdout_log_max_size = 40\n",
            log.display().to_string().replace('\\', "/")
        ),
    );
    let (pid, _) = app_answer(server.addr, "/");
    // Its start-up lines are over 40 bytes: the first file became `.1`.
    let deadline = Instant::now() + process::WAIT;
    loop {
        let names: Vec<String> = std::fs::read_dir(dir.0.join("logs"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let current = names.iter().any(|n| n.ends_with(&format!("_{pid}.log")));
        let rotated = names.iter().any(|n| n.ends_with(&format!("_{pid}.log.1")));
        if current && rotated {
            break;
        }
        assert!(Instant::now() < deadline, "no rotation: {names:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_offline_file_takes_the_app_offline_and_back() {
    let dir = Scratch::new("offline");
    let server = Server::with_config(
        &dir.0,
        // Under Wine the app gets no Ctrl+Break (no console): it is killed after this.
        &format!(
            "working_dir = \"{}\"\nshutdown_time_limit = \"2s\"\n",
            dir.0.display().to_string().replace('\\', "/")
        ),
    );
    let (first, port) = app_answer(server.addr, "/");
    let page = "<h1>Down for maintenance</h1>\n";
    std::fs::write(dir.0.join("app_offline.htm"), page).unwrap();
    let deadline = Instant::now() + process::WAIT;
    loop {
        let (status, body) = get(server.addr, "/", &[]);
        if status == 503 {
            assert_eq!(body, page);
            break;
        }
        assert!(Instant::now() < deadline, "still {status} with the offline file there");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.wait_metric("peregrine_app_state", 4);
    wait_port_closed(port);
    std::fs::remove_file(dir.0.join("app_offline.htm")).unwrap();
    let deadline = Instant::now() + process::WAIT;
    loop {
        let (status, body) = get(server.addr, "/", &[]);
        if status == 200 {
            assert_ne!(fields(&body)["pid"], first.to_string(), "a new process");
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "still offline after the file went away");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stdout_and_stderr_land_in_the_log_file_named_for_the_process() {
    let dir = Scratch::new("log");
    let log = dir.0.join("logs").join("app");
    let server = Server::with_config(
        &dir.0,
        &format!("stdout_log = \"{}\"\n", log.display().to_string().replace('\\', "/")),
    );
    let (pid, _) = app_answer(server.addr, "/");
    let deadline = Instant::now() + process::WAIT;
    loop {
        let file = std::fs::read_dir(dir.0.join("logs"))
            .expect("log dir")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(&format!("_{pid}.log")));
        let text = file.map(|f| std::fs::read_to_string(f).unwrap_or_default()).unwrap_or_default();
        if text.contains(&format!("hosted_app {pid} starting"))
            && text.contains(&format!("hosted_app {pid} writes to stderr too"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the log has: {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn at_start_runs_the_processes_before_any_request_and_spreads_requests_over_them() {
    let dir = Scratch::new("twice");
    let server = Server::with_config(&dir.0, "start = \"at_start\"\nprocesses = 2\n");
    server.wait_metric("peregrine_app_processes_ready", 2);
    assert_eq!(server.metric("peregrine_app_starts_total"), 2);
    let pids: std::collections::HashSet<u32> =
        (0..6).map(|_| app_answer(server.addr, "/").0).collect();
    assert_eq!(pids.len(), 2, "round robin over both processes: {pids:?}");
}

#[test]
fn the_admin_listener_restarts_an_app_onto_a_new_process() {
    let dir = Scratch::new("admin");
    let server = Server::with_config(&dir.0, "shutdown_time_limit = \"2s\"\n");
    let (old, old_port) = app_answer(server.addr, "/");
    assert_eq!(request(server.admin, "POST", "/apps/nope/restart").0, 404);
    assert_eq!(request(server.admin, "POST", "/apps/app/restart").0, 202);
    let deadline = Instant::now() + process::WAIT;
    loop {
        let (pid, port) = app_answer(server.addr, "/");
        if pid != old {
            assert_ne!(port, old_port);
            break;
        }
        assert!(Instant::now() < deadline, "still the old process after the restart");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The old process is stopped once it has no request left.
    wait_port_closed(old_port);
    assert_eq!(server.metric("peregrine_app_processes_ready"), 1);
}

#[cfg(target_os = "linux")]
#[test]
fn a_unix_socket_app_with_a_ready_path() {
    let dir = Scratch::new("unix");
    let server = Server::with_config(&dir.0, "listen = \"unix\"\nready_path = \"/healthz\"\n");
    let (status, body) = get(server.addr, "/over-unix", &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(fields(&body)["path"], "/over-unix");
    assert_eq!(fields(&body)["port"], "", "no TCP port: a Unix socket");
}

#[cfg(target_os = "linux")]
#[test]
fn sighup_restarts_the_app_under_load_without_losing_a_request() {
    let mut server = Server::with_app_flag(&[]);
    let (old, _) = app_answer(server.addr, "/");
    let peregrine = server.proc.child.id();
    while !process::catches_sigterm(peregrine) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let load = load::Load::start(server.addr, true);
    load.wait_for(500);
    let kill = Command::new("kill").args(["-HUP", &peregrine.to_string()]).status().unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + process::WAIT;
    loop {
        if app_answer(server.addr, "/").0 != old {
            break;
        }
        assert!(Instant::now() < deadline, "no new process after SIGHUP");
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = load.ok();
    load.wait_for(seen + 500);
    let tally = load.stop();
    assert_eq!(
        tally.failed.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "{}; stderr: {}",
        tally.describe(),
        server.proc.stderr()
    );
    wait_gone(old);
    let _ = server.proc.sigterm(peregrine);
}

#[cfg(target_os = "linux")]
#[test]
fn no_app_process_outlives_peregrine_stopped_or_killed() {
    // SIGTERM: the app is stopped after the connections drain.
    let mut server = Server::with_app_flag(&[]);
    let (pid, _) = app_answer(server.addr, "/");
    let status = server.proc.sigterm(server.proc.child.id());
    assert!(status.success(), "{status:?}");
    assert!(!alive(pid), "app process {pid} outlived a stopped Peregrine");
    // An app that ignores SIGTERM is killed after its shutdown_time_limit.
    let dir = Scratch::new("stubborn");
    let mut server = Server::with_config(
        &dir.0,
        "shutdown_time_limit = \"1s\"\nenv = { HOSTED_APP_IGNORE_TERM = \"1\" }\n",
    );
    let (pid, _) = app_answer(server.addr, "/");
    let status = server.proc.sigterm(server.proc.child.id());
    assert!(status.success(), "{status:?}");
    assert!(!alive(pid), "an app ignoring SIGTERM outlived Peregrine");
    assert!(server.proc.stderr().contains("did not stop in time"));
    // kill -9: the kernel kills the app (parent-death signal).
    let mut server = Server::with_app_flag(&[]);
    let (pid, _) = app_answer(server.addr, "/");
    server.proc.child.kill().unwrap();
    let _ = server.proc.child.wait();
    wait_gone(pid);
}

#[cfg(windows)]
#[test]
fn no_app_process_outlives_a_killed_peregrine() {
    // The job object kills the app when Peregrine's handle on it closes.
    let mut server = Server::with_app_flag(&[]);
    let (_, port) = app_answer(server.addr, "/");
    server.proc.child.kill().unwrap();
    let _ = server.proc.child.wait();
    wait_port_closed(port);
}

/// A config reload (`POST /reload`): an app whose settings are unchanged is restarted onto a
/// new process; one whose settings changed is replaced (the old process stopped); one the
/// config no longer has is stopped, and its route is gone.
#[cfg(target_os = "linux")]
#[test]
fn a_config_reload_restarts_replaces_and_removes_apps() {
    let dir = Scratch::new("reload");
    let server = Server::with_config(&dir.0, "shutdown_time_limit = \"2s\"\n");
    let path = dir.0.join("peregrine.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let reload = || {
        let (status, body) = request(server.admin, "POST", "/reload");
        assert_eq!(status, 200, "{body}; stderr: {}", server.proc.stderr());
    };
    let new_process = |old: u32| {
        let deadline = Instant::now() + process::WAIT;
        loop {
            let (pid, port) = app_answer(server.addr, "/");
            if pid != old {
                return (pid, port);
            }
            assert!(Instant::now() < deadline, "still process {old} after the reload");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // Unchanged: the same app, restarted without losing a request.
    let (first, first_port) = app_answer(server.addr, "/");
    reload();
    let (second, second_port) = new_process(first);
    wait_port_closed(first_port);

    // Changed (another setting): a new app in its place; the old one's process stops.
    std::fs::write(&path, format!("{config}max_queued_requests = 50\n")).unwrap();
    reload();
    let (_, third_port) = new_process(second);
    wait_port_closed(second_port);
    // The replaced app has left the metrics (one series per app name).
    let deadline = Instant::now() + process::WAIT;
    loop {
        let (_, text) = get(server.admin, "/metrics", &[]);
        let series = text.lines().filter(|l| l.starts_with("peregrine_app_state{")).count();
        if series == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{series} app_state series:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Gone: no route to it, and its process stops.
    let without: String = config.split("[[route]]").next().unwrap().to_string();
    std::fs::write(&path, without).unwrap();
    reload();
    assert_eq!(get(server.addr, "/for-the-app", &[]).0, 404);
    wait_port_closed(third_port);
}

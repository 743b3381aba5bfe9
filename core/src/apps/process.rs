//! Launching one process of an app: where it listens, its pairing token, its environment;
//! and asking it whether it is ready.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use super::config::AppListen;
use super::output::Output;
use super::{App, Process};
use crate::proxy::UpstreamServer;
use crate::sys::child::{self, Tie};

/// Where a process listens.
#[derive(Debug, Clone)]
pub(super) enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A process just spawned.
pub(super) struct Launched {
    pub(super) child: Child,
    pub(super) tie: Tie,
    pub(super) process: Arc<Process>,
    pub(super) target: Target,
    pub(super) output: Arc<Output>,
}

/// Spawns process `id` of `app`. The error says what went wrong, for the log and the page.
pub(super) fn launch(app: &App, id: u64) -> Result<Launched, String> {
    let config = &app.config;
    let argv = config.argv()?;
    let token = new_token();
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    if let Some(dir) = &config.working_dir {
        command.current_dir(dir);
    }
    command
        .env("ASPNETCORE_TOKEN", &token)
        .env("PEREGRINE_TOKEN", &token)
        .env("ASPNETCORE_APPL_PATH", &app.path_base)
        .env("PEREGRINE_APP_NAME", &config.name);
    let target = match config.listen {
        AppListen::Tcp => {
            let port = free_port().map_err(|e| format!("cannot find a free port: {e}"))?;
            command.env("PORT", port.to_string()).env("ASPNETCORE_PORT", port.to_string());
            // What an unmodified ASP.NET Core app binds (Kestrel reads it), unless the config
            // says otherwise.
            if !config.env.contains_key("ASPNETCORE_URLS") {
                command.env("ASPNETCORE_URLS", format!("http://127.0.0.1:{port}"));
            }
            Target::Tcp(SocketAddr::from(([127, 0, 0, 1], port)))
        }
        AppListen::Unix => {
            let path = socket_path(&config.name, id);
            // A stale file from an earlier run would make the app's bind fail.
            let _ = std::fs::remove_file(&path);
            command.env("PEREGRINE_SOCKET", &path);
            Target::Unix(path)
        }
    };
    command.envs(&config.env);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    child::prepare(&mut command);
    let mut spawned =
        command.spawn().map_err(|e| format!("cannot start `{}`: {e}", config.command))?;
    let tie = child::tie(&spawned);
    let output = Output::capture(config, &mut spawned);
    let address = match &target {
        Target::Tcp(addr) => format!("http://{addr}"),
        Target::Unix(path) => format!("unix:{}", path.display()),
    };
    let server = UpstreamServer::parse(&address).map_err(|e| e.to_string())?;
    let mut upstream = app.forwarding.clone();
    upstream.servers = vec![server];
    // The supervisor knows whether the process is up; passive health would only turn a
    // few failed requests into a window of refusals.
    upstream.max_fails = u32::MAX;
    upstream.max_retries = 0;
    let process = Arc::new(Process {
        id,
        pid: spawned.id(),
        token: http::HeaderValue::from_str(&token).expect("hex is a valid header value"),
        upstream: Arc::new(upstream),
        in_flight: AtomicUsize::new(0),
    });
    Ok(Launched { child: spawned, tie, process, target, output })
}

/// Whether the process at `target` is ready: it accepts a connection, and, with a
/// `ready_path`, answers it with 2xx. Bounded by short timeouts (the supervisor asks again).
pub(super) fn is_ready(target: &Target, ready_path: Option<&str>, token: &str) -> bool {
    const WAIT: Duration = Duration::from_millis(500);
    let request = ready_path.map(|path| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             MS-ASPNETCORE-TOKEN: {token}\r\n\r\n"
        )
    });
    match target {
        Target::Tcp(addr) => match TcpStream::connect_timeout(addr, WAIT) {
            Ok(stream) => {
                let _ = stream.set_read_timeout(Some(WAIT));
                let _ = stream.set_write_timeout(Some(WAIT));
                request.is_none_or(|r| answers_2xx(stream, &r))
            }
            Err(_) => false,
        },
        #[cfg(unix)]
        Target::Unix(path) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(stream) => {
                let _ = stream.set_read_timeout(Some(WAIT));
                let _ = stream.set_write_timeout(Some(WAIT));
                request.is_none_or(|r| answers_2xx(stream, &r))
            }
            Err(_) => false,
        },
        #[cfg(not(unix))]
        Target::Unix(_) => false,
    }
}

/// Sends `request` and reads the status line: 2xx or not.
fn answers_2xx(mut stream: impl Read + Write, request: &str) -> bool {
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < 12 {
        match stream.read(&mut head[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    head.starts_with(b"HTTP/1.") && head[8] == b' ' && head[9] == b'2'
}

/// A free loopback port: bound and released, so the app can bind it. (ANCM picks ports the
/// same way; a race with another program binding it in between shows as a failed start.)
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// A fresh random pairing token: 16 bytes from the system's secure generator, as hex.
fn new_token() -> String {
    let mut bytes = [0u8; 16];
    // The ring provider's generator reads the OS's; it fails only if the OS cannot give
    // randomness, where no TLS would work either.
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("the operating system's random number generator");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Unix socket path of process `id` of app `name`: in the temporary directory, unique
/// to this server process.
pub(super) fn socket_path(name: &str, id: u64) -> PathBuf {
    let name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .take(32)
        .collect();
    std::env::temp_dir().join(format!("peregrine-{}-{name}-{id}.sock", std::process::id()))
}

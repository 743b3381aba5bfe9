//! Launching one process of an app: where it listens, its pairing token, its environment;
//! and asking it whether it is ready.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use super::config::AppListen;
use super::output::Output;
use super::{App, Process};
use crate::proxy::{watch, UpstreamServer};
use crate::sys::child::{self, Tie};

/// A process just spawned.
pub(super) struct Launched {
    pub(super) child: Child,
    pub(super) tie: Tie,
    pub(super) process: Arc<Process>,
    /// The Unix socket it listens on (removed once it has exited), if not TCP.
    pub(super) socket_file: Option<PathBuf>,
    pub(super) output: Arc<Output>,
}

/// Spawns process `id` of `app`. The error says what went wrong, for the log and the page.
pub(super) fn launch(app: &App, id: u64) -> Result<Launched, String> {
    let config = &app.config;
    let argv = config.argv()?;
    let token = crate::tls::random_token();
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
    let (address, socket_file) = match config.listen {
        AppListen::Tcp => {
            let port = free_port().map_err(|e| format!("cannot find a free port: {e}"))?;
            command.env("PORT", port.to_string()).env("ASPNETCORE_PORT", port.to_string());
            // What an unmodified ASP.NET Core app binds (Kestrel reads it), unless the config
            // says otherwise.
            if !config.env.contains_key("ASPNETCORE_URLS") {
                command.env("ASPNETCORE_URLS", format!("http://127.0.0.1:{port}"));
            }
            (format!("http://{}", SocketAddr::from(([127, 0, 0, 1], port))), None)
        }
        AppListen::Unix => {
            let path = socket_path(&config.name, id);
            // A stale file from an earlier run would make the app's bind fail.
            let _ = std::fs::remove_file(&path);
            command.env("PEREGRINE_SOCKET", &path);
            (format!("unix:{}", path.display()), Some(path))
        }
    };
    command.envs(&config.env);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    child::prepare(&mut command);
    let mut spawned =
        command.spawn().map_err(|e| format!("cannot start `{}`: {e}", config.command))?;
    let tie = child::tie(&spawned);
    let output = Output::capture(config, &mut spawned);
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
    Ok(Launched { child: spawned, tie, process, socket_file, output })
}

/// Whether `process` is ready: it accepts a connection, and, with a `ready_path`, answers
/// it with 2xx (the proxy's active health check, with the pairing token). Bounded by short
/// timeouts: the supervisor asks again.
pub(super) fn is_ready(process: &Process, ready_path: Option<&str>) -> bool {
    const WAIT: Duration = Duration::from_millis(500);
    let server = &process.upstream.servers[0];
    match ready_path {
        None => watch::connect(server, WAIT).is_ok(),
        Some(path) => {
            let token = format!(
                "{}: {}\r\n",
                super::TOKEN_HEADER,
                process.token.to_str().unwrap_or_default()
            );
            watch::status(server, path, WAIT, &token).is_ok_and(|s| (200..300).contains(&s))
        }
    }
}

/// A free loopback port: bound and released, so the app can bind it. (ANCM picks ports the
/// same way; a race with another program binding it in between shows as a failed start.)
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
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

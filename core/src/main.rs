//! The `peregrine` binary: serves the built-in routes on an embedded default, or what a
//! config file says.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use peregrine::config::{self, Config};
use peregrine::routes::BuiltinRoutes;
use peregrine::{AccessLogTarget, IoChoice, Server, ServerConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Peregrine: a thread-per-core HTTP edge server.
///
/// With no arguments it serves http://127.0.0.1:8080 with a welcome page at /, the
/// benchmark routes /plaintext and /json, and /echo.
#[derive(Parser, Debug)]
#[command(name = "peregrine", version, about, long_about)]
struct Cli {
    /// Address to listen on, as host:port (repeatable; port 0 picks a free port). Overrides
    /// the config file's listeners. Default: 127.0.0.1:8080.
    #[arg(long = "listen", value_name = "ADDR", env = "PEREGRINE_LISTEN", value_delimiter = ',')]
    listen: Vec<String>,

    /// Reactor threads, one event loop each. Default: one per CPU.
    #[arg(long, value_name = "N", env = "PEREGRINE_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,

    /// IO driver: `auto` (Linux: io_uring, falling back to epoll where it is blocked;
    /// Windows: IOCP), `uring` or `epoll` (Linux), `iocp` (Windows).
    #[arg(long, value_name = "DRIVER", env = "PEREGRINE_IO", value_parser = parse_io)]
    io: Option<IoChoice>,

    /// TOML config file: listeners, threads, io driver, limits, fixed-response routes.
    #[arg(long, value_name = "FILE", env = "PEREGRINE_CONFIG")]
    config: Option<PathBuf>,

    /// Admin listener (host:port) serving /metrics (Prometheus), /healthz and /readyz. Off
    /// unless given here or in the config file.
    #[arg(long, value_name = "ADDR", env = "PEREGRINE_ADMIN")]
    admin: Option<String>,

    /// Access log: one JSON line per request, to this file (`-` for stdout). Off by default.
    #[arg(long, value_name = "PATH", env = "PEREGRINE_ACCESS_LOG")]
    access_log: Option<PathBuf>,

    /// Do not pin reactor threads to CPUs.
    #[arg(long)]
    no_pin: bool,

    /// Log format on stderr. The level comes from RUST_LOG (default `info`).
    #[arg(long, value_enum, env = "PEREGRINE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_io(s: &str) -> Result<IoChoice, String> {
    s.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => return usage_error(&e),
        },
        None => Config::default(),
    };
    let listen = if !cli.listen.is_empty() {
        match cli.listen.iter().map(|a| config::resolve(a)).collect::<Result<Vec<_>, _>>() {
            Ok(addrs) => addrs,
            Err(e) => return usage_error(&format!("--listen: {e}")),
        }
    } else {
        match config.listen_addrs() {
            Ok(addrs) if !addrs.is_empty() => addrs,
            Ok(_) => ServerConfig::default().listen,
            Err(e) => return usage_error(&e),
        }
    };
    let io =
        cli.io.or_else(|| config.io.as_deref().and_then(|s| s.parse().ok())).unwrap_or_default();
    let admin = match cli.admin.as_deref().or(config.admin.as_deref()) {
        Some(a) => match config::resolve(a) {
            Ok(addr) => Some(addr),
            Err(e) => return usage_error(&format!("--admin: {e}")),
        },
        None => None,
    };
    let access_log =
        cli.access_log.clone().or_else(|| config.access_log.as_ref().map(PathBuf::from)).map(|p| {
            if p.as_os_str() == "-" {
                AccessLogTarget::Stdout
            } else {
                AccessLogTarget::File(p)
            }
        });
    let server_config = ServerConfig {
        listen,
        threads: cli.threads.map(usize::from).or(config.threads),
        pin_threads: !cli.no_pin && config.pin_threads.unwrap_or(true),
        io,
        limits: config.limits.clone(),
        admin,
        access_log,
    };
    // Registered before anything starts: a SIGTERM that arrives while the server starts up is
    // queued and honoured as a graceful shutdown, instead of killing the process outright.
    #[cfg(unix)]
    let signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch signals; graceful shutdown unavailable");
            None
        }
    };
    let routes = Arc::new(config.route.clone());
    let server = match Server::start(server_config, move || BuiltinRoutes::new(&routes)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("peregrine: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        threads = server.threads(),
        driver = %server.driver(),
        reason = server.driver_reason(),
        "peregrine {} started",
        env!("CARGO_PKG_VERSION")
    );
    for addr in server.local_addrs() {
        println!("listening on http://{addr}");
    }
    if let Some(addr) = server.admin_addr() {
        println!("admin listening on http://{addr}");
    }
    if let Some(addr) = server.local_addrs().first() {
        println!(
            "try: curl http://{addr}/plaintext | wrk -t1 -c64 -d10s http://{addr}/plaintext | \
             h2load -n10000 -c16 http://{addr}/plaintext (h2c arrives with the HTTP/2 issue)"
        );
    }
    #[cfg(unix)]
    if let Some(signals) = signals {
        watch_signals(signals, server.shutdown_handle());
    }
    #[cfg(windows)]
    watch_console(server.shutdown_handle());
    server.wait();
    tracing::info!("peregrine stopped");
    ExitCode::SUCCESS
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("peregrine: error: {message}");
    ExitCode::from(2)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// SIGINT/SIGTERM start a graceful shutdown; a second one exits at once.
#[cfg(unix)]
fn watch_signals(mut signals: signal_hook::iterator::Signals, handle: peregrine::ShutdownHandle) {
    std::thread::Builder::new()
        .name("peregrine-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if handle.is_shutting_down() {
                    tracing::warn!(signal, "second signal: exiting now");
                    std::process::exit(130);
                }
                tracing::info!(signal, "graceful shutdown started");
                handle.shutdown();
            }
        })
        .expect("spawn signal thread");
}

/// Ctrl+C, Ctrl+Break and closing the console window start a graceful shutdown (Windows'
/// counterparts of SIGINT and SIGTERM); a second one exits at once.
#[cfg(windows)]
fn watch_console(handle: peregrine::ShutdownHandle) {
    let installed = peregrine_io_windows::on_console_ctrl(move || {
        if handle.is_shutting_down() {
            tracing::warn!("second console control event: exiting now");
            std::process::exit(130);
        }
        tracing::info!("console control event: graceful shutdown started");
        handle.shutdown();
    });
    if let Err(e) = installed {
        tracing::warn!(error = %e, "cannot watch Ctrl+C; graceful shutdown unavailable");
    }
}

//! The `peregrine` binary: serves the built-in routes on an embedded default, or what a
//! config file says.

mod plan;
mod reload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use peregrine::apps::Apps;
use peregrine::routes::WelcomePage;
use peregrine::upgrade::{Successor, UpgradeHandle};
use peregrine::{IoChoice, Server, StartError};

use plan::{Boot, Plan};
use reload::Reloader;

// The allocator is mimalloc everywhere. On glibc Linux it replaces `malloc` itself
// (libmimalloc-sys's `override`), and Rust's default allocator calls `malloc` for the usual
// alignments: mimalloc's fast path. The `mimalloc` crate's allocator always takes the aligned
// path (`mi_malloc_aligned`, about 50 instructions more per allocation: some 400 per HTTP/1.1
// request). Where overriding is not how mimalloc is linked (musl's static binary, Windows),
// the crate's allocator it is.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives the calling reactor thread's freed pages back to the OS (`ServerConfig::
/// release_memory`, called when a core goes quiet). The one `unsafe` outside the IO drivers:
/// the `mimalloc` crate has no safe wrapper for it.
fn release_freed_memory() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any time;
    // it only walks mimalloc's own page lists (of the calling thread's heap, and the shared
    // arenas under mimalloc's own synchronisation).
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Peregrine: a thread-per-core HTTP edge server.
///
/// With no arguments it serves http://127.0.0.1:8080 and https://127.0.0.1:8443 (with a
/// self-signed development certificate generated at start) with a welcome page at /, the
/// benchmark routes /plaintext and /json, and /echo. SIGHUP reloads the config (and the certificates).
#[derive(Parser, Debug)]
#[command(name = "peregrine", version, about, long_about)]
struct Cli {
    /// Address to listen on, as host:port (repeatable; port 0 picks a free port), or
    /// unix:/path/to.sock (Linux). Overrides the config file's listeners. Default:
    /// 127.0.0.1:8080, plus TLS on 127.0.0.1:8443.
    #[arg(long = "listen", value_name = "ADDR", env = "PEREGRINE_LISTEN", value_delimiter = ',')]
    listen: Vec<String>,

    /// TLS address to listen on, as host:port (repeatable). Uses --tls-cert and --tls-key,
    /// or a self-signed development certificate when they are not given. Overrides the
    /// config file's listeners, like --listen.
    #[arg(
        long = "tls-listen",
        value_name = "ADDR",
        env = "PEREGRINE_TLS_LISTEN",
        value_delimiter = ','
    )]
    tls_listen: Vec<String>,

    /// PEM certificate chain (leaf first) for --tls-listen.
    #[arg(long, value_name = "FILE", env = "PEREGRINE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-listen.
    #[arg(long, value_name = "FILE", env = "PEREGRINE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// PEM file of the CAs that issue client certificates (mutual TLS) for --tls-listen;
    /// clients must present one unless --tls-client-auth optional.
    #[arg(long, value_name = "FILE", env = "PEREGRINE_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,

    /// Whether --tls-listen clients must present a certificate: "required" (the default
    /// with --tls-client-ca) or "optional".
    #[arg(
        long,
        value_name = "MODE",
        env = "PEREGRINE_TLS_CLIENT_AUTH",
        requires = "tls_client_ca",
        value_parser = ["optional", "required"]
    )]
    tls_client_auth: Option<String>,

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

    /// Admin listener (host:port) serving /metrics (Prometheus), /healthz and /readyz, and
    /// taking POST /reload (the config, as SIGHUP) and POST /upgrade (the binary, as SIGUSR2).
    /// Off unless given here or in the config file.
    #[arg(long, value_name = "ADDR", env = "PEREGRINE_ADMIN")]
    admin: Option<String>,

    /// Access log: one JSON line per request, to this file (`-` for stdout). Off by default.
    #[arg(long, value_name = "PATH", env = "PEREGRINE_ACCESS_LOG")]
    access_log: Option<PathBuf>,

    /// Reverse proxy: forward every request (but the config file's fixed routes) to this
    /// upstream, `http://host:port`, `https://host:port`, `h2c://host:port` (HTTP/2, for
    /// gRPC), `h2://host:port` (HTTP/2 over TLS) or `unix:/path/to.sock`. Repeat (or
    /// separate with commas) for several servers, used in turn (all HTTP/2 or none).
    #[arg(long, value_name = "URL", env = "PEREGRINE_PROXY", value_delimiter = ',')]
    proxy: Vec<String>,

    /// Host an app: run this command (split like a shell splits words; no shell runs it)
    /// on the first request, with a free loopback port in PORT and ASPNETCORE_PORT and a
    /// pairing token in ASPNETCORE_TOKEN, restart it when it fails, and forward every
    /// request (but the config file's routes) to it. SIGHUP restarts it without losing a
    /// request.
    #[arg(long, value_name = "COMMAND", env = "PEREGRINE_APP", conflicts_with = "proxy")]
    app: Option<String>,

    /// Serve the files of this directory (GET and HEAD: index.html for directories,
    /// precompressed .br/.zst/.gz siblings, ranges, conditional requests). With --proxy or
    /// --app, files that exist are served and every other request goes upstream.
    #[arg(long, value_name = "DIR", env = "PEREGRINE_ROOT")]
    root: Option<PathBuf>,

    /// Compress the responses of --root, --proxy or --app on the fly (brotli, zstd, gzip) for
    /// clients that accept it. Off by default: see BREACH in the README.
    #[arg(long, env = "PEREGRINE_COMPRESS")]
    compress: bool,

    /// Cache the responses of --proxy or --app in memory, as HTTP caching allows
    /// (Cache-Control, Expires, Vary; see the config file's [cache] for sizes).
    #[arg(long, env = "PEREGRINE_CACHE")]
    cache: bool,

    /// Peers (CIDR, e.g. 10.0.0.0/8, or an address) whose X-Forwarded-For names the client
    /// (for the per-client rate limits and handlers' ConnectionInfo), and whose
    /// X-Forwarded-Proto, -Host and X-Request-Id --proxy passes on. Other peers' are
    /// replaced. Default: nobody.
    #[arg(long, value_name = "CIDR", env = "PEREGRINE_TRUST_PROXY", value_delimiter = ',')]
    trust_proxy: Vec<String>,

    /// Most connections one client address may hold at once (IPv6: per /64), over all
    /// cores; more are closed at accept. Default: no cap.
    #[arg(long, value_name = "N", env = "PEREGRINE_MAX_CONNECTIONS_PER_IP", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_ip: Option<u32>,

    /// Requests per second per client address (all cores together); past it 429 with
    /// Retry-After. Default: unlimited.
    #[arg(long, value_name = "N", env = "PEREGRINE_RATE_LIMIT")]
    rate_limit: Option<f64>,

    /// With --rate-limit: requests a client may send at once above the rate (default 0).
    #[arg(long, value_name = "N", env = "PEREGRINE_RATE_BURST", requires = "rate_limit")]
    rate_burst: Option<u32>,

    /// With --rate-limit: requests past the burst that wait for their turn instead of
    /// getting 429 (nginx's burst without nodelay; default 0).
    #[arg(long, value_name = "N", env = "PEREGRINE_RATE_DELAY", requires = "rate_limit")]
    rate_delay: Option<u32>,

    /// Only these client networks (CIDR or address, repeatable) may connect, on every
    /// listener. Default: everyone not denied.
    #[arg(long, value_name = "CIDR", env = "PEREGRINE_ALLOW", value_delimiter = ',')]
    allow: Vec<String>,

    /// These client networks (CIDR or address, repeatable) are refused at accept, before
    /// TLS, on every listener.
    #[arg(long, value_name = "CIDR", env = "PEREGRINE_DENY", value_delimiter = ',')]
    deny: Vec<String>,

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
    let plan = plan::load_config(&cli)
        .and_then(|config| Ok((config, Boot::new()?)))
        .and_then(|(config, boot)| Ok((Plan::build(&cli, &config, &boot)?, config, boot)));
    let (mut plan, config, boot) = match plan {
        Ok(p) => p,
        Err(e) => return usage_error(&e),
    };
    // Started by a running Peregrine's upgrade: serve the sockets it hands over.
    let server_config = &mut plan.server;
    let successor = Successor::take(&mut server_config.listen, &mut server_config.admin_socket);
    let mut successor = match successor {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
    };
    // Registered before anything starts: a SIGTERM that arrives while the server starts up is
    // queued and honoured as a graceful shutdown, instead of killing the process outright.
    #[cfg(unix)]
    let signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGUSR2,
    ]) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch signals; graceful shutdown unavailable");
            None
        }
    };
    // Hosted apps' supervisors start here (an `at_start` app's processes with them).
    let apps = match Apps::start(plan.apps.clone(), &plan.app_forwarding()) {
        Ok(a) => a,
        Err(e) => return usage_error(&e),
    };
    config.files.apply();
    let welcome = WelcomePage::default();
    let server = match Server::start(plan.server.clone(), plan.factory(&apps, &welcome)) {
        Ok(s) => s,
        // Unusable certificate files are a configuration mistake: exit 2, like a bad flag.
        Err(e @ StartError::Tls(..)) => {
            apps.stop();
            return usage_error(&e.to_string());
        }
        Err(e) => {
            apps.stop();
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
    for (addr, spec) in server.local_addrs().iter().zip(&plan.server.listen) {
        let scheme = if spec.is_tls() { "https" } else { "http" };
        match &spec.unix {
            Some(unix) => println!("listening on unix:{} ({scheme})", unix.path.display()),
            None => println!("listening on {scheme}://{addr}"),
        }
    }
    if let Some(proxy) = &plan.proxy {
        let names: Vec<&str> = proxy.servers.iter().map(|s| s.name()).collect();
        println!("proxying to {}", names.join(", "));
    }
    if let Some(command) = &cli.app {
        println!("hosting the app `{command}` (it starts on the first request)");
    }
    if let Some(dir) = &cli.root {
        println!("serving files from {}", dir.display());
    }
    // The server owns the sockets it was handed now; copies kept here would hold a listener
    // open after the server closed it.
    for spec in &mut plan.server.listen {
        spec.inherited = None;
    }
    plan.server.admin_socket = None;
    let reloader = Arc::new(Reloader::new(cli, boot, apps, &server));
    let hook = Arc::clone(&reloader);
    server.on_reload_request(move || hook.reload());
    let upgrade = Arc::new((UpgradeHandle::of(&server), server.shutdown_handle()));
    let hook = Arc::clone(&upgrade);
    server.on_upgrade_request(move || upgrade_binary(&hook.0, &hook.1));
    let overview = plan.overview(&server.local_addrs(), server.admin_addr());
    let _ = welcome.set(overview.welcome_page().into());
    for hint in overview.hints() {
        println!("{hint}");
    }
    for unix in plan.server.listen.iter().filter_map(|s| s.unix.as_ref().filter(|_| !s.is_tls())) {
        println!("try: curl --unix-socket {} http://localhost/plaintext", unix.path.display());
    }
    // Announced (and reported ready to the process this one upgrades) once `POST /reload`
    // and `POST /upgrade` are hooked (above, before any hint names the address).
    if let Some(addr) = server.admin_addr() {
        println!("admin listening on http://{addr}");
    }
    if let Some(successor) = successor.as_mut() {
        match successor.report_ready() {
            Ok(()) => {
                println!("upgraded: pid {} serves; the previous process drains", std::process::id())
            }
            Err(e) => tracing::warn!(error = %e, "cannot report to the previous process"),
        }
    }
    #[cfg(unix)]
    if let Some(signals) = signals {
        watch_signals(signals, &server, Arc::clone(&reloader), upgrade);
    }
    #[cfg(windows)]
    watch_console(server.shutdown_handle());
    server.wait();
    // After the connections have drained: the apps get their own graceful stop.
    reloader.apps().stop();
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

/// SIGINT/SIGTERM start a graceful shutdown; a second one exits at once. SIGHUP reloads the
/// config (see `reload.rs`); SIGUSR2 upgrades the binary.
#[cfg(unix)]
fn watch_signals(
    mut signals: signal_hook::iterator::Signals,
    server: &Server,
    reloader: Arc<Reloader>,
    upgrade: Arc<(UpgradeHandle, peregrine::ShutdownHandle)>,
) {
    let handle = server.shutdown_handle();
    std::thread::Builder::new()
        .name("peregrine-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == signal_hook::consts::SIGHUP {
                    let _ = reloader.reload();
                    continue;
                }
                if signal == signal_hook::consts::SIGUSR2 {
                    if !handle.is_shutting_down() {
                        let _ = upgrade_binary(&upgrade.0, &upgrade.1);
                    }
                    continue;
                }
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

/// SIGUSR2 or `POST /upgrade`: starts the binary now on disk (`PEREGRINE_UPGRADE_BINARY`
/// overrides it) with the same arguments, hands it the listening sockets, and once it
/// serves, drains and exits. If it fails, this process goes on serving.
fn upgrade_binary(
    upgrade: &UpgradeHandle,
    handle: &peregrine::ShutdownHandle,
) -> Result<String, String> {
    let binary = std::env::var_os("PEREGRINE_UPGRADE_BINARY")
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok());
    let Some(binary) = binary else {
        let why = "upgrade: cannot tell which binary to start; still serving";
        tracing::error!("{why}");
        return Err(why.into());
    };
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    tracing::info!(binary = %binary.display(), "upgrade: starting the new binary");
    match upgrade.start_successor(&binary, &args) {
        Ok(pid) => {
            tracing::info!(pid, "upgrade: the new process serves; draining this one");
            handle.shutdown();
            Ok(format!("upgraded: pid {pid} serves; pid {} drains\n", std::process::id()))
        }
        Err(e) => {
            tracing::error!(error = %e, "upgrade failed; still serving");
            Err(format!("upgrade failed: {e}"))
        }
    }
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

//! The `peregrine` binary: serves the built-in routes on an embedded default, or what a
//! config file says.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use peregrine::apps::{AppConfig, Apps};
use peregrine::config::{self, Config};
use peregrine::files::{FileOptions, FileRoute, Files};
use peregrine::overview::{ListenerView, Overview};
use peregrine::proxy::{Proxy, ProxyConfig, UpstreamServer};
use peregrine::routes::{BuiltinRoutes, RouteSettings, WelcomePage};
use peregrine::{
    AccessLogTarget, IoChoice, ListenerSpec, Server, ServerConfig, StartError, TlsSettings,
};

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
/// benchmark routes /plaintext and /json, and /echo. SIGHUP reloads TLS certificates.
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

    /// Admin listener (host:port) serving /metrics (Prometheus), /healthz and /readyz. Off
    /// unless given here or in the config file.
    #[arg(long, value_name = "ADDR", env = "PEREGRINE_ADMIN")]
    admin: Option<String>,

    /// Access log: one JSON line per request, to this file (`-` for stdout). Off by default.
    #[arg(long, value_name = "PATH", env = "PEREGRINE_ACCESS_LOG")]
    access_log: Option<PathBuf>,

    /// Reverse proxy: forward every request (but the config file's fixed routes) to this
    /// upstream, `http://host:port` or `unix:/path/to.sock`. Repeat (or separate with commas)
    /// for several servers, used in turn.
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
    let config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => return usage_error(&e),
        },
        None => Config::default(),
    };
    let (mut listen, development_cert) = match listeners(&cli, &config) {
        Ok(l) => l,
        Err(e) => return usage_error(&e),
    };
    // Whom to believe about the client: the config file's [proxy] list and --trust-proxy.
    let trusted_proxies = match config::nets(&config.proxy.trusted_proxies).and_then(|mut nets| {
        nets.extend(config::nets(&cli.trust_proxy).map_err(|e| format!("--trust-proxy: {e}"))?);
        Ok(nets)
    }) {
        Ok(nets) => nets,
        Err(e) => return usage_error(&e),
    };
    let mut limits = config.limits.clone();
    if let Err(e) = client_flags(&cli, &mut limits, &mut listen) {
        return usage_error(&e);
    }
    // Started by a running Peregrine's upgrade: serve the sockets it hands over.
    #[cfg(target_os = "linux")]
    let mut successor = match peregrine::upgrade::Successor::take(&mut listen) {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
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
    let listen_specs = listen.clone();
    let server_config = ServerConfig {
        listen,
        threads: cli.threads.map(usize::from).or(config.threads),
        pin_threads: !cli.no_pin && config.pin_threads.unwrap_or(true),
        io,
        limits,
        admin,
        access_log,
        trusted_proxies,
        release_memory: Some(release_freed_memory),
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
    let proxy = match proxy_config(&cli) {
        Ok(p) => p.map(Arc::new),
        Err(e) => return usage_error(&e),
    };
    // Upstream names resolve here, before any reactor starts.
    let groups = match upstream_groups(&config) {
        Ok(g) => Arc::new(g),
        Err(e) => return usage_error(&e),
    };
    // Hosted apps' supervisors start here (an `at_start` app's processes with them).
    let apps = match hosted_apps(&cli, &config, &server_config.trusted_proxies) {
        Ok(a) => a,
        Err(e) => return usage_error(&e),
    };
    config.files.apply();
    let root = match &cli.root {
        Some(dir) => match FileRoute::new(dir, &FileOptions::default(), &config.files) {
            Ok(route) => Some(Arc::new(route)),
            Err(e) => return usage_error(&format!("--root: {e}")),
        },
        None => None,
    };
    let routes = Arc::new(config.route.clone());
    let settings = RouteSettings::of(&config);
    let cache_fallback = cli.cache;
    let compress_fallback = cli.compress;
    if cli.compress && proxy.is_none() && cli.app.is_none() && cli.root.is_none() {
        return usage_error(
            "--compress: compresses what --root, --proxy or --app answers; give one",
        );
    }
    if cli.cache && proxy.is_none() && cli.app.is_none() {
        return usage_error("--cache: caches what --proxy or --app answers; give one of them");
    }
    let core_root = root.clone();
    let welcome = WelcomePage::default();
    let page = Arc::clone(&welcome);
    let core_proxy = proxy.clone();
    let core_apps = apps.clone();
    let app_flag = cli.app.is_some();
    let factory = move || {
        let mut routes = BuiltinRoutes::with_targets(&routes, &groups, &core_apps, &settings)
            .with_welcome(Arc::clone(&page));
        if compress_fallback {
            routes = routes.with_compression();
        }
        if cache_fallback {
            let name = if app_flag { CLI_APP } else { "proxy" };
            routes = routes.with_cache(name, Arc::clone(&settings.cache));
        }
        if let Some(root) = &core_root {
            routes = routes.with_files(Files::new(Arc::clone(root)));
        }
        match (&core_proxy, app_flag) {
            (Some(config), _) => routes.with_proxy(Proxy::new(Arc::clone(config))),
            (None, true) => match core_apps.route(CLI_APP) {
                Some(app) => routes.with_app(app),
                None => routes,
            },
            (None, false) => routes,
        }
    };
    let server = match Server::start(server_config, factory) {
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
    for (addr, spec) in server.local_addrs().iter().zip(&listen_specs) {
        let scheme = if spec.is_tls() { "https" } else { "http" };
        match &spec.unix {
            Some(unix) => println!("listening on unix:{} ({scheme})", unix.path.display()),
            None => println!("listening on {scheme}://{addr}"),
        }
    }
    if let Some(addr) = server.admin_addr() {
        println!("admin listening on http://{addr}");
    }
    if let Some(proxy) = &proxy {
        let names: Vec<&str> = proxy.servers.iter().map(|s| s.name()).collect();
        println!("proxying to {}", names.join(", "));
    }
    if let Some(command) = &cli.app {
        println!("hosting the app `{command}` (it starts on the first request)");
    }
    if let Some(dir) = &cli.root {
        println!("serving files from {}", dir.display());
    }
    let overview = Overview {
        listeners: server
            .local_addrs()
            .iter()
            .zip(&listen_specs)
            .filter(|(_, spec)| spec.unix.is_none())
            .map(|(addr, spec)| ListenerView::new(*addr, spec, development_cert))
            .collect(),
        admin: server.admin_addr(),
        fixed_routes: config
            .route
            .iter()
            .filter(|r| !r.is_proxy())
            .filter_map(|r| r.path.clone())
            .collect(),
    };
    let _ = welcome.set(overview.welcome_page().into());
    for hint in overview.hints() {
        println!("{hint}");
    }
    for unix in listen_specs.iter().filter_map(|s| s.unix.as_ref().filter(|_| !s.is_tls())) {
        println!("try: curl --unix-socket {} http://localhost/plaintext", unix.path.display());
    }
    #[cfg(target_os = "linux")]
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
        watch_signals(signals, &server, apps.clone());
    }
    #[cfg(windows)]
    watch_console(server.shutdown_handle());
    server.wait();
    // After the connections have drained: the apps get their own graceful stop.
    apps.stop();
    tracing::info!("peregrine stopped");
    ExitCode::SUCCESS
}

/// The listeners: from the flags, else the config file, else the embedded default; and
/// whether their TLS listeners use the generated development certificate.
fn listeners(cli: &Cli, config: &Config) -> Result<(Vec<ListenerSpec>, bool), String> {
    let inherited = inherited_sockets()?;
    if cli.listen.is_empty() && cli.tls_listen.is_empty() {
        let mut from_file = config.listeners()?;
        if !inherited.is_empty() {
            let names: Vec<Option<String>> =
                config.listener.iter().map(|l| l.name.clone()).collect();
            attach_inherited(&mut from_file, &names, inherited)?;
            return Ok((from_file, false));
        }
        if !from_file.is_empty() {
            return Ok((from_file, false));
        }
        let tls = development_certificate()?;
        return Ok((
            vec![
                SocketAddr::from(([127, 0, 0, 1], 8080)).into(),
                ListenerSpec::tls(SocketAddr::from(([127, 0, 0, 1], 8443)), tls),
            ],
            true,
        ));
    }
    let mut specs = Vec::new();
    let mut development = false;
    for a in &cli.listen {
        let spec = match a.strip_prefix("unix:") {
            Some(path) => ListenerSpec::unix(
                config::unix_socket(path, None, None).map_err(|e| format!("--listen: {e}"))?,
            ),
            None => config::resolve(a).map_err(|e| format!("--listen: {e}"))?.into(),
        };
        specs.push(spec);
    }
    if !cli.tls_listen.is_empty() {
        let mut tls = match (&cli.tls_cert, &cli.tls_key) {
            (Some(cert), Some(key)) => TlsSettings::from_files(cert, key),
            _ => {
                development = true;
                development_certificate()?
            }
        };
        let mode = cli
            .tls_client_ca
            .as_ref()
            .map(|_| cli.tls_client_auth.as_deref().unwrap_or("required"));
        tls.client_auth = config::client_auth(mode, cli.tls_client_ca.as_ref(), &[])
            .map_err(|e| format!("--tls-client-ca: {e}"))?;
        for a in &cli.tls_listen {
            let addr = config::resolve(a).map_err(|e| format!("--tls-listen: {e}"))?;
            specs.push(ListenerSpec::tls(addr, tls.clone()));
        }
    }
    attach_inherited(&mut specs, &[], inherited)?;
    Ok((specs, development))
}

/// Listening sockets passed in by systemd socket activation (`LISTEN_PID` naming this
/// process, `LISTEN_FDS` descriptors from 3, named by `LISTEN_FDNAMES`). The variables are
/// removed, so processes Peregrine starts do not take them for their own.
#[cfg(target_os = "linux")]
fn inherited_sockets() -> Result<Vec<(Option<String>, peregrine::InheritedSocket)>, String> {
    const FIRST_FD: i32 = 3; // SD_LISTEN_FDS_START
    let for_us = std::env::var("LISTEN_PID").ok() == Some(std::process::id().to_string());
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let Some(count) = count.filter(|_| for_us) else { return Ok(Vec::new()) };
    let count: i32 = count.parse().map_err(|_| format!("LISTEN_FDS: `{count}` is not a count"))?;
    let names: Vec<&str> = names.split(':').collect();
    (0..count)
        .map(|i| {
            let fd = FIRST_FD + i;
            let socket = peregrine::InheritedSocket::adopt(fd)
                .map_err(|e| format!("inherited socket (descriptor {fd}): {e}"))?;
            let name = names.get(i as usize).filter(|n| !n.is_empty()).map(|n| n.to_string());
            Ok((name, socket))
        })
        .collect()
}

#[cfg(not(target_os = "linux"))]
fn inherited_sockets() -> Result<Vec<(Option<String>, peregrine::InheritedSocket)>, String> {
    Ok(Vec::new())
}

/// Serves each inherited socket with the settings of the listener named like it (`names`,
/// parallel to `specs`), else of the one with its address, else as a cleartext listener
/// serving both protocols.
fn attach_inherited(
    specs: &mut Vec<ListenerSpec>,
    names: &[Option<String>],
    inherited: Vec<(Option<String>, peregrine::InheritedSocket)>,
) -> Result<(), String> {
    let configured = specs.len();
    let mut taken = vec![false; configured];
    for (name, socket) in inherited {
        // An IP socket is matched by address, a Unix one by path.
        enum Place {
            Ip(SocketAddr),
            Unix(PathBuf),
        }
        let place = match socket.unix_path() {
            Some(path) => Place::Unix(path),
            None => Place::Ip(socket.local_addr().map_err(|e| format!("inherited socket: {e}"))?),
        };
        let same_place = |spec: &ListenerSpec| match (&place, &spec.unix) {
            (Place::Unix(path), Some(own)) => *path == own.path,
            (Place::Ip(addr), None) => spec.address == *addr,
            _ => false,
        };
        let by_name = (0..configured)
            .find(|&i| !taken[i] && name.is_some() && names.get(i).is_some_and(|n| *n == name));
        let found =
            by_name.or_else(|| (0..configured).find(|&i| !taken[i] && same_place(&specs[i])));
        let mut spec = match found {
            Some(i) => {
                taken[i] = true;
                specs[i].clone()
            }
            None => match &place {
                Place::Ip(addr) => ListenerSpec::from(*addr),
                Place::Unix(_) => ListenerSpec::from(SocketAddr::from(([0, 0, 0, 0], 0))),
            },
        };
        // A Unix socket takes the settings of the listener named like it, at its own path.
        if let Place::Unix(path) = place {
            if spec.unix.as_ref().is_none_or(|own| own.path != path) {
                spec.unix = Some(peregrine::UnixSocket { path, mode: None, owner: None });
            }
        }
        let spec = spec.on_inherited(socket).map_err(|e| format!("inherited socket: {e}"))?;
        match found {
            Some(i) => specs[i] = spec,
            None => specs.push(spec),
        }
    }
    Ok(())
}

/// Applies the per-client flags: limits, and allow/deny lists on every listener.
fn client_flags(
    cli: &Cli,
    limits: &mut peregrine::Limits,
    listen: &mut [ListenerSpec],
) -> Result<(), String> {
    if let Some(n) = cli.max_connections_per_ip {
        limits.max_connections_per_ip = Some(n);
    }
    if let Some(rate) = cli.rate_limit {
        let limit = peregrine::RateLimit {
            requests_per_second: rate,
            burst: cli.rate_burst.unwrap_or(0),
            delayed: cli.rate_delay.unwrap_or(0),
        };
        limit.validate("--rate-limit")?;
        limits.rate_limit = Some(limit);
    }
    let allow = config::nets(&cli.allow).map_err(|e| format!("--allow: {e}"))?;
    let deny = config::nets(&cli.deny).map_err(|e| format!("--deny: {e}"))?;
    if !allow.is_empty() || !deny.is_empty() {
        for spec in listen {
            spec.allow.extend(allow.iter().copied());
            spec.deny.extend(deny.iter().copied());
        }
    }
    Ok(())
}

/// The reverse proxy `--proxy` asks for (upstream names resolved here, before any reactor
/// starts), or `None`.
fn proxy_config(cli: &Cli) -> Result<Option<ProxyConfig>, String> {
    if cli.proxy.is_empty() {
        return Ok(None);
    }
    let servers = cli
        .proxy
        .iter()
        .map(|s| UpstreamServer::parse(s).map_err(|e| format!("--proxy: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = ProxyConfig::new(servers);
    config.trusted_proxies = cli
        .trust_proxy
        .iter()
        .map(|s| config::parse_net(s).map_err(|e| format!("--trust-proxy: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(Some(config))
}

/// The name of the app `--app` hosts.
const CLI_APP: &str = "app";

/// The hosted apps: the config file's `[[app]]`s and `--app`'s, their supervisors started.
fn hosted_apps(cli: &Cli, config: &Config, trusted: &[ipnet::IpNet]) -> Result<Apps, String> {
    let mut apps: Vec<(AppConfig, String)> =
        config.app.iter().map(|a| (a.clone(), config.app_path_base(&a.name))).collect();
    if let Some(command) = &cli.app {
        if config.app.iter().any(|a| a.name == CLI_APP) {
            return Err(format!("--app: the config file already has an app named `{CLI_APP}`"));
        }
        let app = AppConfig::from_command(CLI_APP, command);
        app.validate().map_err(|e| format!("--app: {e}"))?;
        apps.push((app, "/".into()));
    }
    if apps.is_empty() {
        return Ok(Apps::default());
    }
    let mut forwarding = ProxyConfig::new(Vec::new());
    forwarding.trusted_proxies = trusted.to_vec();
    Apps::start(apps, &forwarding)
}

/// The config file's `[[upstream]]` groups, resolved.
fn upstream_groups(config: &Config) -> Result<Vec<(String, Arc<ProxyConfig>)>, String> {
    config
        .upstream
        .iter()
        .map(|u| {
            let group =
                u.proxy_config(&config.proxy).map_err(|e| format!("upstream {}: {e}", u.name))?;
            Ok((u.name.clone(), Arc::new(group)))
        })
        .collect()
}

/// A fresh self-signed certificate, announced as what it is.
fn development_certificate() -> Result<TlsSettings, String> {
    let tls = TlsSettings::development().map_err(|e| e.to_string())?;
    tracing::warn!(
        "using a self-signed development certificate for localhost, 127.0.0.1 and ::1, \
         generated at start and valid for 7 days: clients will not trust it; not for \
         production (configure [listener.tls])"
    );
    Ok(tls)
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
/// TLS certificates (a failed reload keeps the old ones and says why) and restarts the
/// hosted apps without losing a request.
#[cfg(unix)]
fn watch_signals(mut signals: signal_hook::iterator::Signals, server: &Server, apps: Apps) {
    let handle = server.shutdown_handle();
    let tls = server.tls_reload_handle();
    #[cfg(target_os = "linux")]
    let upgrade = peregrine::upgrade::UpgradeHandle::of(server);
    std::thread::Builder::new()
        .name("peregrine-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == signal_hook::consts::SIGHUP {
                    apps.restart();
                    match tls.reload() {
                        Ok(()) => {
                            tracing::info!(listeners = tls.listeners(), "TLS certificates reloaded")
                        }
                        Err(e) => tracing::error!(
                            error = %e,
                            "TLS certificate reload failed; keeping the previous certificates"
                        ),
                    }
                    continue;
                }
                if signal == signal_hook::consts::SIGUSR2 {
                    #[cfg(target_os = "linux")]
                    if !handle.is_shutting_down() {
                        upgrade_binary(&upgrade, &handle);
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

/// SIGUSR2: starts the binary now on disk (`PEREGRINE_UPGRADE_BINARY` overrides it) with
/// the same arguments, hands it the listening sockets, and once it serves, drains and
/// exits. If it fails, this process goes on serving.
#[cfg(target_os = "linux")]
fn upgrade_binary(upgrade: &peregrine::upgrade::UpgradeHandle, handle: &peregrine::ShutdownHandle) {
    let binary = std::env::var_os("PEREGRINE_UPGRADE_BINARY")
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok());
    let Some(binary) = binary else {
        return tracing::error!("upgrade: cannot tell which binary to start; still serving");
    };
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    tracing::info!(binary = %binary.display(), "upgrade: starting the new binary");
    match upgrade.start_successor(&binary, &args) {
        Ok(pid) => {
            tracing::info!(pid, "upgrade: the new process serves; draining this one");
            handle.shutdown();
        }
        Err(e) => tracing::error!(error = %e, "upgrade failed; still serving"),
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

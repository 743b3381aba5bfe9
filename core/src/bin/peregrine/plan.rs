//! What the flags and the config file ask for, built into what the server runs: one
//! function for the start and for every reload, so a reload reads the config exactly as a
//! start does (the flags still override it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use peregrine::apps::{AppConfig, Apps};
use peregrine::config::{self, Config, RouteConfig};
use peregrine::files::{FileOptions, FileRoute, Files};
use peregrine::overview::{ListenerView, Overview};
use peregrine::proxy::{Proxy, ProxyConfig, UpstreamServer};
use peregrine::routes::{BuiltinRoutes, RouteSettings, WelcomePage};
use peregrine::{AccessLogTarget, InheritedSocket, ListenerSpec, ServerConfig, TlsSettings};

use crate::Cli;

/// The name of the app `--app` hosts.
pub(crate) const CLI_APP: &str = "app";

/// What the process was given once, at start: sockets passed in by systemd, and the
/// development certificate (generated once, so a reload keeps serving the same one).
pub(crate) struct Boot {
    inherited: Vec<(Option<String>, InheritedSocket)>,
    development: OnceLock<TlsSettings>,
}

impl Boot {
    pub(crate) fn new() -> Result<Boot, String> {
        Ok(Boot { inherited: inherited_sockets()?, development: OnceLock::new() })
    }

    /// The development certificate, generated on first use and announced as what it is.
    fn development_certificate(&self) -> Result<TlsSettings, String> {
        if let Some(tls) = self.development.get() {
            return Ok(tls.clone());
        }
        let tls = TlsSettings::development().map_err(|e| e.to_string())?;
        tracing::warn!(
            "using a self-signed development certificate for localhost, 127.0.0.1 and ::1, \
             generated at start and valid for 7 days: clients will not trust it; not for \
             production (configure [listener.tls])"
        );
        Ok(self.development.get_or_init(|| tls).clone())
    }
}

/// The config file named by `--config`, or the embedded default.
pub(crate) fn load_config(cli: &Cli) -> Result<Config, String> {
    match &cli.config {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    }
}

/// Everything the server and its handlers are built from.
pub(crate) struct Plan {
    pub(crate) server: ServerConfig,
    /// Whether the TLS listeners use the generated development certificate.
    development_cert: bool,
    pub(crate) proxy: Option<Arc<ProxyConfig>>,
    groups: Arc<Vec<(String, Arc<ProxyConfig>)>>,
    root: Option<Arc<FileRoute>>,
    routes: Arc<Vec<RouteConfig>>,
    settings: RouteSettings,
    /// The hosted apps' settings and path bases (`--app`'s last).
    pub(crate) apps: Vec<(AppConfig, String)>,
    compress: bool,
    cache: bool,
    app_flag: bool,
}

impl Plan {
    /// Reads `cli` over `config`. Upstream names resolve here, off the reactors.
    pub(crate) fn build(cli: &Cli, config: &Config, boot: &Boot) -> Result<Plan, String> {
        let (mut listen, development_cert) = listeners(cli, config, boot)?;
        // Whom to believe about the client: the config file's [proxy] list and --trust-proxy.
        let mut trusted_proxies = config::nets(&config.proxy.trusted_proxies)?;
        trusted_proxies
            .extend(config::nets(&cli.trust_proxy).map_err(|e| format!("--trust-proxy: {e}"))?);
        let mut limits = config.limits.clone();
        client_flags(cli, &mut limits, &mut listen)?;
        let io = cli
            .io
            .or_else(|| config.io.as_deref().and_then(|s| s.parse().ok()))
            .unwrap_or_default();
        let admin = match cli.admin.as_deref().or(config.admin.as_deref()) {
            Some(a) => Some(config::resolve(a).map_err(|e| format!("--admin: {e}"))?),
            None => None,
        };
        let access_log =
            cli.access_log.clone().or_else(|| config.access_log.as_ref().map(PathBuf::from)).map(
                |p| {
                    if p.as_os_str() == "-" {
                        AccessLogTarget::Stdout
                    } else {
                        AccessLogTarget::File(p)
                    }
                },
            );
        let server = ServerConfig {
            listen,
            threads: cli.threads.map(usize::from).or(config.threads),
            pin_threads: !cli.no_pin && config.pin_threads.unwrap_or(true),
            io,
            limits,
            admin,
            admin_socket: None,
            access_log,
            trusted_proxies,
            release_memory: Some(crate::release_freed_memory),
        };
        let proxy = proxy_config(cli)?.map(Arc::new);
        let groups = Arc::new(upstream_groups(config)?);
        let root = match &cli.root {
            Some(dir) => Some(Arc::new(
                FileRoute::new(dir, &FileOptions::default(), &config.files)
                    .map_err(|e| format!("--root: {e}"))?,
            )),
            None => None,
        };
        if cli.compress && proxy.is_none() && cli.app.is_none() && cli.root.is_none() {
            return Err(
                "--compress: compresses what --root, --proxy or --app answers; give one".into()
            );
        }
        if cli.cache && proxy.is_none() && cli.app.is_none() {
            return Err("--cache: caches what --proxy or --app answers; give one of them".into());
        }
        Ok(Plan {
            server,
            development_cert,
            proxy,
            groups,
            root,
            routes: Arc::new(config.route.clone()),
            settings: RouteSettings::of(config),
            apps: app_configs(cli, config)?,
            compress: cli.compress,
            cache: cli.cache,
            app_flag: cli.app.is_some(),
        })
    }

    /// The proxy settings hosted apps' requests are forwarded with.
    pub(crate) fn app_forwarding(&self) -> ProxyConfig {
        let mut forwarding = ProxyConfig::new(Vec::new());
        forwarding.trusted_proxies = self.server.trusted_proxies.clone();
        forwarding
    }

    /// Builds each core's router.
    pub(crate) fn factory(
        &self,
        apps: &Apps,
        page: &WelcomePage,
    ) -> impl Fn() -> BuiltinRoutes + Send + Sync + 'static {
        let (routes, groups, settings) =
            (Arc::clone(&self.routes), Arc::clone(&self.groups), self.settings.clone());
        let (root, proxy, apps, page) =
            (self.root.clone(), self.proxy.clone(), apps.clone(), Arc::clone(page));
        let (compress, cache, app_flag) = (self.compress, self.cache, self.app_flag);
        move || {
            let mut router = BuiltinRoutes::with_targets(&routes, &groups, &apps, &settings)
                .with_welcome(Arc::clone(&page));
            if compress {
                router = router.with_compression();
            }
            if cache {
                let name = if app_flag { CLI_APP } else { "proxy" };
                router = router.with_cache(name, Arc::clone(&settings.cache));
            }
            if let Some(root) = &root {
                router = router.with_files(Files::new(Arc::clone(root)));
            }
            match (&proxy, app_flag) {
                (Some(config), _) => router.with_proxy(Proxy::new(Arc::clone(config))),
                (None, true) => match apps.route(CLI_APP) {
                    Some(app) => router.with_app(app),
                    None => router,
                },
                (None, false) => router,
            }
        }
    }

    /// The welcome page's and the start banner's view of the server bound at `addrs`.
    pub(crate) fn overview(&self, addrs: &[SocketAddr], admin: Option<SocketAddr>) -> Overview {
        Overview {
            listeners: addrs
                .iter()
                .zip(&self.server.listen)
                .filter(|(_, spec)| spec.unix.is_none())
                .map(|(addr, spec)| ListenerView::new(*addr, spec, self.development_cert))
                .collect(),
            admin,
            fixed_routes: self
                .routes
                .iter()
                .filter(|r| !r.is_proxy())
                .filter_map(|r| r.path.clone())
                .collect(),
        }
    }
}

/// The listeners: from the flags, else the config file, else the embedded default; and
/// whether their TLS listeners use the generated development certificate.
fn listeners(cli: &Cli, config: &Config, boot: &Boot) -> Result<(Vec<ListenerSpec>, bool), String> {
    let inherited = boot.inherited.clone();
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
        let tls = boot.development_certificate()?;
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
                boot.development_certificate()?
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

/// The hosted apps' settings: the config file's `[[app]]`s and `--app`'s.
fn app_configs(cli: &Cli, config: &Config) -> Result<Vec<(AppConfig, String)>, String> {
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
    Ok(apps)
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

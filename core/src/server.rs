//! The server: listeners, one reactor thread per core, lifecycle.
//!
//! Each reactor thread accepts on each listening address (on Linux its own socket with
//! SO_REUSEPORT, on Windows a share of one socket; see `sys.rs`), and owns its own driver,
//! executor and timers, and its own
//! handler built by the app's factory. Nothing on the request path is shared between cores;
//! the only shared state is the connection cap (touched at accept and close) and the
//! shutdown signal.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sys::driver::{self, Driver, DriverConfig, DriverKind, DriverWaker, IoChoice};
use peregrine_limits::{ConnectionLimiter, Limit, Limits};
use socket2::SockRef;
use tracing::{debug, warn};

use crate::access_log::{self, AccessLogTarget};
use crate::admin::Admin;
use crate::clients::ClientPolicy;
use crate::conn::{self, Endpoint};
use crate::h1;
use crate::listener::{InheritedSocket, ListenerSpec};
use crate::metrics::{CoreMetrics, Metrics, Rejection};
use crate::reload::{CoreListener, CoreMessage, CoreUpdate, Live, LiveInit, Mailbox, ReloadHandle};
use crate::rt::{self, executor};
use crate::sys;
use crate::tls::{TlsError, TlsListener, TlsReloadHandle};
use crate::trust::Trusted;
use crate::Handler;

/// What to serve and how.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listeners: address, protocols, TLS or cleartext (port 0 picks a free port; see
    /// [`Server::local_addrs`]). A `SocketAddr` converts into a cleartext listener serving
    /// both protocols (`addr.into()`).
    pub listen: Vec<ListenerSpec>,
    /// Reactor threads; `None`: one per CPU this process may use.
    pub threads: Option<usize>,
    /// Pin each reactor thread to its own CPU.
    pub pin_threads: bool,
    /// IO driver choice.
    pub io: IoChoice,
    /// The hardening limits.
    pub limits: Limits,
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`); off when `None`.
    pub admin: Option<SocketAddr>,
    /// A listening socket to serve the admin listener on instead of binding `admin` (what
    /// an upgrade hands over).
    pub admin_socket: Option<InheritedSocket>,
    /// Access log (one JSON line per request); off when `None`.
    pub access_log: Option<AccessLogTarget>,
    /// Peers (proxies in front of Peregrine) whose `X-Forwarded-For` is believed: a
    /// request's client ([`ConnectionInfo::client`](crate::ConnectionInfo), what the
    /// per-client rate limits count) is then the rightmost address there that is not itself
    /// trusted. Default: nobody.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Called on a reactor thread when its core goes quiet after some activity, to give
    /// freed memory back to the OS (the `peregrine` binary passes mimalloc's collect: see
    /// `rt/quiet.rs`). `None`: nothing is called.
    pub release_memory: Option<fn()>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080)).into()],
            threads: None,
            pin_threads: true,
            io: IoChoice::Auto,
            limits: Limits::default(),
            admin: None,
            admin_socket: None,
            access_log: None,
            trusted_proxies: Vec::new(),
            release_memory: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    /// A listener could not be bound.
    Bind(SocketAddr, io::Error),
    /// A Unix socket listener could not be bound.
    BindUnix(std::path::PathBuf, io::Error),
    /// The IO driver could not be set up.
    Driver(io::Error),
    /// A configuration value is unusable.
    Config(String),
    /// The admin listener could not be bound.
    Admin(SocketAddr, io::Error),
    /// The access log could not be opened.
    AccessLog(io::Error),
    /// A TLS listener's certificates could not be loaded.
    Tls(SocketAddr, TlsError),
    /// The handler factory panicked on a core (the message, when it was a string).
    Handler {
        /// The core whose factory call panicked.
        core: usize,
        /// The panic message.
        message: String,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            StartError::BindUnix(path, e) => {
                write!(f, "cannot listen on unix:{}: {e}", path.display())
            }
            StartError::Admin(addr, e) => {
                write!(f, "cannot start the admin listener on {addr}: {e}")
            }
            StartError::AccessLog(e) => write!(f, "cannot open the access log: {e}"),
            StartError::Driver(e) => write!(f, "cannot set up the io driver: {e}"),
            StartError::Config(e) => f.write_str(e),
            StartError::Tls(addr, e) => write!(f, "TLS listener {addr}: {e}"),
            StartError::Handler { core, message } => {
                write!(f, "the handler factory panicked on core {core}: {message}")
            }
        }
    }
}

impl std::error::Error for StartError {}

/// State shared by the reactor threads and the controlling handle.
pub(crate) struct Control {
    shutting_down: AtomicBool,
    wakers: Mutex<Vec<DriverWaker>>,
    /// Per listener, a descriptor of each of its sockets: what an upgrade hands over. Closed
    /// when a shutdown starts, so the sockets close with the reactors' (new connections are
    /// refused) unless a successor holds them.
    handover: Mutex<Vec<Vec<sys::Handover>>>,
    /// The admin listener's socket, for an upgrade to hand over too.
    admin_handover: Mutex<Option<sys::Handover>>,
    /// What the admin listener's `POST /reload` and `POST /upgrade` call (the binary's
    /// config reload and binary upgrade).
    hooks: Mutex<AdminHooks>,
}

/// An action the embedder runs for the admin listener: what to answer, or why it failed.
pub(crate) type AdminHook = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// The admin listener's actions, as the embedder set them.
#[derive(Default)]
pub(crate) struct AdminHooks {
    pub(crate) reload: Option<AdminHook>,
    pub(crate) upgrade: Option<AdminHook>,
}

/// A running server.
pub struct Server {
    threads: Vec<JoinHandle<()>>,
    control: Arc<Control>,
    driver: DriverKind,
    driver_why: String,
    metrics: Metrics,
    admin: Option<Admin>,
    /// What a reload changes: listeners, limits, TLS, the access log.
    live: Arc<Live>,
}

/// A cloneable, thread-safe handle that starts a graceful shutdown.
#[derive(Clone)]
pub struct ShutdownHandle(pub(crate) Arc<Control>);

impl ShutdownHandle {
    /// Starts a graceful shutdown: stop accepting, finish in-flight requests, close idle
    /// connections, abort what remains after `shutdown_timeout`.
    pub fn shutdown(&self) {
        if !self.0.shutting_down.swap(true, Ordering::SeqCst) {
            self.0.handover.lock().expect("handover poisoned").clear();
            self.0.admin_handover.lock().expect("handover poisoned").take();
            for w in self.0.wakers.lock().expect("waker list poisoned").iter() {
                w.wake();
            }
        }
    }

    /// Whether a shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.0.is_shutting_down()
    }
}

impl Control {
    /// The admin action `pick` chooses, if the embedder set it.
    pub(crate) fn hook(&self, pick: fn(&AdminHooks) -> &Option<AdminHook>) -> Option<AdminHook> {
        pick(&self.hooks.lock().unwrap_or_else(|e| e.into_inner())).clone()
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Makes `handover` what an upgrade hands over, unless a shutdown has started (its
    /// sockets are closing: they are dropped). Checked under the lock the shutdown clears
    /// the list under, so no socket outlives a shutdown here.
    pub(crate) fn replace_handover(
        &self,
        make: impl FnOnce(&mut Vec<Vec<sys::Handover>>) -> Vec<Vec<sys::Handover>>,
    ) {
        let mut handover = self.handover.lock().expect("handover poisoned");
        if !self.is_shutting_down() {
            let new = make(&mut handover);
            *handover = new;
        }
    }
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownHandle").field("shutting_down", &self.is_shutting_down()).finish()
    }
}

impl Server {
    /// Binds the listeners and starts the reactors. Returns once every reactor runs, so
    /// [`local_addrs`](Self::local_addrs) are ready to use.
    pub fn start<F, H>(config: ServerConfig, factory: F) -> Result<Server, StartError>
    where
        F: Fn() -> H + Send + Sync + 'static,
        H: Handler,
    {
        check(&config)?;
        let cpus = driver::allowed_cpus();
        let threads = config.threads.unwrap_or(cpus.len()).max(1);
        let open_files = driver::raise_open_files_limit();
        let limiter = ConnectionLimiter::new(config.limits.effective_max_connections(open_files));

        // Each listener's sockets for every core (port 0 is resolved by the first bind).
        let clients = ClientPolicy::new(&config.limits);
        let mut addrs = Vec::new();
        let mut tls_listeners = Vec::new();
        let mut listener_clients = Vec::new();
        let mut per_core: Vec<Vec<CoreListener>> = (0..threads).map(|_| Vec::new()).collect();
        let mut handover: Vec<Vec<sys::Handover>> = Vec::new();
        for (group, spec) in config.listen.iter().enumerate() {
            // A listener with limits of its own gets tables of its own, shared by the cores.
            let own = spec
                .client_limits
                .map(|own| ClientPolicy::with(own, config.limits.ipv6_prefix_length));
            let tls = tls_listener(spec)?;
            tls_listeners.extend(tls.clone());
            let bound = bind(spec, threads)?;
            handover.push(bound.handover);
            for (core, sockets) in per_core.iter_mut().zip(bound.per_core) {
                let clients = own.clone().unwrap_or_else(|| Arc::clone(&clients));
                core.push(CoreListener {
                    group,
                    sockets: Some(sockets),
                    info: Endpoint::new(spec, tls.clone(), clients),
                });
            }
            addrs.push(bound.addr);
            listener_clients.push(own);
        }

        let control = Arc::new(Control {
            shutting_down: AtomicBool::new(false),
            wakers: Mutex::default(),
            handover: Mutex::new(handover),
            admin_handover: Mutex::new(None),
            hooks: Mutex::default(),
        });
        let core_metrics: Vec<Arc<CoreMetrics>> = (0..threads).map(|_| Arc::default()).collect();
        let access_log = match &config.access_log {
            Some(target) => Some(access_log::Writer::start(target).map_err(StartError::AccessLog)?),
            None => None,
        };
        let factory: Arc<dyn Fn() -> H + Send + Sync> = Arc::new(factory);
        let trusted = (!config.trusted_proxies.is_empty())
            .then(|| Trusted::new(config.trusted_proxies.clone()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut started =
            Started { control: Arc::clone(&control), handles: Vec::new(), access_log };
        let mut mailboxes = Vec::new();
        for (index, listeners) in per_core.into_iter().enumerate() {
            let mailbox = Arc::new(Mailbox::default());
            mailboxes.push(Arc::clone(&mailbox));
            let update = CoreUpdate {
                factory: Arc::clone(&factory),
                limits: config.limits.clone(),
                trusted: trusted.clone(),
                access_log: started.access_log.as_ref().map(access_log::Writer::core),
                listeners,
            };
            let reactor = Reactor {
                index,
                cpu: config
                    .pin_threads
                    .then(|| cpus.get(index % cpus.len().max(1)).copied())
                    .flatten(),
                driver: DriverConfig { io: config.io, ..DriverConfig::default() },
                limiter: Arc::clone(&limiter),
                control: Arc::clone(&control),
                metrics: Arc::clone(&core_metrics[index]),
                release_memory: config.release_memory,
                mailbox,
            };
            let ready = ready_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("peregrine-{index}"))
                .spawn(move || reactor.run(update, ready));
            match spawned {
                Ok(handle) => started.handles.push(handle),
                Err(e) => return Err(started.abort(&ready_rx, StartError::Driver(e))),
            }
        }
        drop(ready_tx);
        // Every reactor reports once (running, or why not) and then lets go of its sender.
        let mut driver = None;
        let mut failure = None;
        let mut wakers = vec![None; threads];
        for _ in 0..threads {
            match ready_rx.recv() {
                Ok(Ok((core, kind, why, waker))) => {
                    control.wakers.lock().expect("waker list poisoned").push(waker.clone());
                    wakers[core] = Some(waker);
                    driver = Some((kind, why));
                }
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(_) => {
                    let died = StartError::Driver(io::Error::other("reactor thread died"));
                    failure.get_or_insert(died);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            return Err(started.abort(&ready_rx, e));
        }
        let (driver, driver_why) = driver.expect("at least one reactor");
        // A shutdown requested while reactors were starting must reach them all.
        if control.shutting_down.load(Ordering::SeqCst) {
            ShutdownHandle(Arc::clone(&control)).shutdown();
        }
        let Started { handles, access_log, .. } = started;
        let admin_addr = config.admin;
        let admin_socket = config.admin_socket.clone();
        let live = Arc::new(Live::new::<H>(
            threads,
            LiveInit {
                config,
                addrs,
                listener_clients,
                open_files,
                limiter,
                clients,
                tls: tls_listeners,
                access_log,
            },
        ));
        for (mailbox, waker) in mailboxes.into_iter().zip(wakers) {
            live.add_core(mailbox, waker.expect("every core reported"));
        }
        let metrics = Metrics {
            cores: Arc::new(core_metrics),
            driver: driver.as_str(),
            limiter: Arc::clone(&live.limiter),
            clients: Arc::clone(&live.clients),
            reloads: Arc::clone(&live.stats),
        };
        let admin = match admin_addr {
            Some(addr) => {
                let handle = ShutdownHandle(Arc::clone(&control));
                let started = admin_listener(addr, admin_socket.as_ref()).and_then(|listener| {
                    let copy = sys::handover_of_std(&listener)?;
                    *control.admin_handover.lock().expect("handover poisoned") = Some(copy);
                    Admin::start(listener, metrics.clone(), handle)
                });
                match started {
                    Ok(a) => Some(a),
                    Err(e) => {
                        let server = Server {
                            threads: handles,
                            control,
                            driver,
                            driver_why,
                            metrics,
                            admin: None,
                            live,
                        };
                        server.shutdown();
                        server.wait();
                        return Err(StartError::Admin(addr, e));
                    }
                }
            }
            None => None,
        };
        Ok(Server { threads: handles, control, driver, driver_why, metrics, admin, live })
    }

    /// Per listener (in [`ServerConfig::listen`]'s order) its listening sockets, and the
    /// admin listener's, for a binary upgrade; `None` once a shutdown has started (the
    /// sockets are closing).
    pub(crate) fn handover_copies(
        control: &Arc<Control>,
    ) -> Option<std::io::Result<crate::upgrade::Handed>> {
        let handover = control.handover.lock().expect("handover poisoned");
        if control.shutting_down.load(Ordering::SeqCst) {
            return None;
        }
        let admin = control.admin_handover.lock().expect("handover poisoned");
        let copied = || -> std::io::Result<crate::upgrade::Handed> {
            Ok(crate::upgrade::Handed {
                listeners: handover
                    .iter()
                    .map(|group| group.iter().map(sys::copy_handover).collect())
                    .collect::<std::io::Result<_>>()?,
                admin: admin.as_ref().map(sys::copy_handover).transpose()?,
            })
        };
        Some(copied())
    }

    /// The server's control block (for the upgrade handle).
    pub(crate) fn control(&self) -> Arc<Control> {
        Arc::clone(&self.control)
    }

    /// What a reload changes (for the upgrade handle, which holds reloads off).
    pub(crate) fn live(&self) -> Arc<Live> {
        Arc::clone(&self.live)
    }

    /// Reads every TLS listener's certificate and key files again (what SIGHUP does in the
    /// binary): new handshakes use the new certificates, established connections keep
    /// theirs, and a listener whose new files fail to load keeps its old certificates (the
    /// error says which file and why).
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        self.tls_reload_handle().reload()
    }

    /// A thread-safe handle for [`reload_tls`](Self::reload_tls).
    pub fn tls_reload_handle(&self) -> TlsReloadHandle {
        TlsReloadHandle(Arc::clone(&self.live.tls))
    }

    /// A thread-safe handle that reloads the whole config (see [`ReloadHandle::reload`]).
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle { live: Arc::clone(&self.live), control: Arc::clone(&self.control) }
    }

    /// Makes the admin listener's `POST /reload` call `hook`, which reloads the config the
    /// way the embedder reads it (the binary: the config file, as SIGHUP does) and returns
    /// the answer's text, or why nothing changed (a 400 with that text).
    pub fn on_reload_request(
        &self,
        hook: impl Fn() -> Result<String, String> + Send + Sync + 'static,
    ) {
        self.control.hooks.lock().unwrap_or_else(|e| e.into_inner()).reload = Some(Arc::new(hook));
    }

    /// Makes the admin listener's `POST /upgrade` call `hook`, which upgrades the binary
    /// (the `peregrine` binary: as SIGUSR2 does; on Windows this is the way) and returns the
    /// answer's text, or why the old process goes on serving (a 500 with that text).
    pub fn on_upgrade_request(
        &self,
        hook: impl Fn() -> Result<String, String> + Send + Sync + 'static,
    ) {
        self.control.hooks.lock().unwrap_or_else(|e| e.into_inner()).upgrade = Some(Arc::new(hook));
    }

    /// The addresses bound now, one per configured listener, in order (a reload may change
    /// them).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.live.addrs()
    }

    /// The IO driver the reactors run.
    pub fn driver(&self) -> DriverKind {
        self.driver
    }

    /// Why that driver was chosen.
    pub fn driver_reason(&self) -> &str {
        &self.driver_why
    }

    /// The admin listener's bound address, if it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// The server's metrics (what the admin listener's `/metrics` renders).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Reactor threads.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// A handle to start a graceful shutdown from anywhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.control))
    }

    /// Starts a graceful shutdown (see [`ShutdownHandle::shutdown`]).
    pub fn shutdown(&self) {
        self.shutdown_handle().shutdown();
    }

    /// Waits until every reactor has stopped, then stops the admin listener and writes out
    /// the access log.
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(admin) = self.admin.as_mut() {
            admin.stop();
        }
        self.live.finish_logs();
        // The hooks hold handles on this server's state: let go of them with it.
        *self.control.hooks.lock().unwrap_or_else(|e| e.into_inner()) = AdminHooks::default();
    }
}

/// A reactor's report once it runs: its index, driver, and waker; or why it could not start.
type Report = Result<(usize, DriverKind, String, DriverWaker), StartError>;
type Ready = mpsc::Sender<Report>;

/// What a start has set running so far, so that every failure after the first reactor
/// spawned is undone the same way.
struct Started {
    control: Arc<Control>,
    handles: Vec<std::thread::JoinHandle<()>>,
    access_log: Option<access_log::Writer>,
}

impl Started {
    /// Stops whatever started: waits for every spawned reactor to report (so each running
    /// one has its waker registered), shuts them down, joins them (their listening sockets
    /// close with them) and closes the access log. Returns `error` for the caller.
    fn abort(mut self, ready: &mpsc::Receiver<Report>, error: StartError) -> StartError {
        // Reports not yet read: a reactor still starting registers its waker now, so the
        // shutdown below reaches it. Each reactor reports once; a reactor thread that died
        // without reporting has dropped its sender, which ends the loop.
        while let Ok(report) = ready.recv_timeout(Duration::from_secs(10)) {
            if let Ok((_, _, _, waker)) = report {
                self.control.wakers.lock().expect("waker list poisoned").push(waker);
            }
        }
        ShutdownHandle(Arc::clone(&self.control)).shutdown();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
        if let Some(w) = self.access_log.as_mut() {
            w.finish();
        }
        error
    }
}

/// The admin listener's socket: the one handed over, or bound now.
fn admin_listener(
    addr: SocketAddr,
    inherited: Option<&InheritedSocket>,
) -> io::Result<std::net::TcpListener> {
    // The one handed over, if it is at the configured address (an upgrade may bring a
    // config that moved the admin listener).
    let handed = inherited.and_then(|s| s.0.first()).filter(|s| {
        let bound = socket2::SockRef::from(&***s).local_addr().ok().and_then(|a| a.as_socket());
        bound.is_some_and(|b| b == addr || (addr.port() == 0 && b.ip() == addr.ip()))
    });
    match handed {
        Some(socket) => Ok(std::net::TcpListener::from(socket.try_clone()?)),
        None => std::net::TcpListener::bind(addr),
    }
}

/// Checks what a start and a reload both need of a config.
pub(crate) fn check(config: &ServerConfig) -> Result<(), StartError> {
    config.limits.validate().map_err(StartError::Config)?;
    if config.listen.is_empty() {
        return Err(StartError::Config("no listen address".into()));
    }
    match config.listen.iter().find(|spec| !spec.protocols.http1 && !spec.protocols.h2) {
        Some(spec) => Err(StartError::Config(format!("listener {}: no protocol", spec.address))),
        None => Ok(()),
    }
}

/// A listener's TLS state (its certificates loaded), when it runs TLS.
pub(crate) fn tls_listener(spec: &ListenerSpec) -> Result<Option<Arc<TlsListener>>, StartError> {
    match &spec.tls {
        Some(settings) => TlsListener::new(settings.clone(), spec.protocols)
            .map(|l| Some(Arc::new(l)))
            .map_err(|e| StartError::Tls(spec.address, e)),
        None => Ok(None),
    }
}

/// One listener's sockets for every core.
pub(crate) struct Bound {
    /// The address bound (port 0 resolved).
    pub(crate) addr: SocketAddr,
    /// Each core's sockets.
    pub(crate) per_core: Vec<Vec<sys::Listener>>,
    /// Each distinct socket, kept for handing over in an upgrade.
    pub(crate) handover: Vec<sys::Handover>,
}

/// Binds `spec` for `threads` cores: a socket of its own per core (`SO_REUSEPORT`), or its
/// inherited or Unix socket shared by them.
pub(crate) fn bind(spec: &ListenerSpec, threads: usize) -> Result<Bound, StartError> {
    // A Unix socket is bound once and shared by the reactors, as an inherited one is.
    #[cfg(unix)]
    let bound_unix = match (&spec.unix, &spec.inherited) {
        (Some(unix), None) => Some(InheritedSocket(vec![Arc::new(
            sys::bind_unix(unix).map_err(|e| StartError::BindUnix(unix.path.clone(), e))?,
        )])),
        _ => None,
    };
    #[cfg(not(unix))]
    let bound_unix: Option<InheritedSocket> = None;
    let shared = spec.inherited.as_ref().or(bound_unix.as_ref());
    let (addr, per_core) = match shared {
        Some(socket) => sys::share_listeners(&socket.0, threads).map(|l| (spec.address, l)),
        None => sys::bind_listeners(spec.address, threads)
            .map(|(addr, l)| (addr, l.into_iter().map(|l| vec![l]).collect())),
    }
    .map_err(|e| StartError::Bind(spec.address, e))?;
    let handover = match shared {
        Some(socket) => sys::handover_of_shared(&socket.0),
        None => sys::handover_of_bound(&per_core),
    }
    .map_err(|e| StartError::Bind(spec.address, e))?;
    Ok(Bound { addr, per_core, handover })
}

/// One core's share of the server.
struct Reactor {
    index: usize,
    cpu: Option<usize>,
    driver: DriverConfig,
    limiter: Arc<ConnectionLimiter>,
    control: Arc<Control>,
    metrics: Arc<CoreMetrics>,
    /// `ServerConfig::release_memory`.
    release_memory: Option<fn()>,
    /// Reload messages.
    mailbox: Arc<Mailbox>,
}

/// A listening socket's accept state on one core.
struct Listener {
    /// What its accepts complete with (unique on this core).
    token: usize,
    /// The configured listener it belongs to (several sockets may, when inherited).
    group: usize,
    fd: sys::Listener,
    endpoint: Rc<Endpoint>,
    op: Option<driver::OpId>,
    /// After an error such as EMFILE, accept again only from this time (nginx backs off too).
    retry_at: Option<Instant>,
}

impl Listener {
    /// Closes the socket through the driver, which forgets the descriptor with it: the epoll
    /// driver keeps per-descriptor state that would otherwise outlive the number, for the
    /// next socket the kernel gives it to. (On Windows each core holds a share of one
    /// socket, which the last share closes.)
    fn close(self) {
        #[cfg(unix)]
        rt::io::close_detached(self.fd);
        #[cfg(windows)]
        drop(self);
    }
}

/// Closes the listeners whose accept has ended (shutting down: a cancelled accept may still
/// hand over a connection, which is served).
fn close_finished(listeners: &mut Vec<Listener>) {
    let mut i = 0;
    while i < listeners.len() {
        if listeners[i].op.is_none() {
            listeners.swap_remove(i).close();
        } else {
            i += 1;
        }
    }
}

/// Makes `current` the listeners of `new`, in its order: a group new to this core brings
/// its sockets; a kept group keeps its sockets (and their pending accepts) and takes the
/// new settings; a group no longer configured has its accepts cancelled and its sockets
/// closed.
fn switch_listeners(current: &mut Vec<Listener>, new: Vec<CoreListener>, tokens: &mut usize) {
    let mut old = std::mem::take(current);
    for l in new {
        let endpoint = Rc::new(l.info);
        match l.sockets {
            Some(sockets) => {
                for fd in sockets {
                    *tokens += 1;
                    current.push(Listener {
                        token: *tokens,
                        group: l.group,
                        fd,
                        endpoint: Rc::clone(&endpoint),
                        op: None,
                        retry_at: None,
                    });
                }
            }
            None => {
                let (mut kept, rest): (Vec<_>, Vec<_>) =
                    old.into_iter().partition(|k| k.group == l.group);
                old = rest;
                for k in &mut kept {
                    k.endpoint = Rc::clone(&endpoint);
                }
                current.extend(kept);
            }
        }
    }
    for gone in old {
        if let Some(op) = gone.op {
            rt::cancel(op);
        }
        gone.close();
    }
}

/// Starts an accept on each listener without one (not backing off after an error).
fn arm_accepts(listeners: &mut [Listener]) {
    for l in listeners.iter_mut() {
        if l.op.is_none() && l.retry_at.is_none_or(|t| rt::now() >= t) {
            l.retry_at = None;
            l.op = Some(rt::accept(sys::raw(&l.fd), l.token));
        }
    }
}

/// What a reactor builds from a [`CoreUpdate`]: the handler, the settings new connections
/// get, and the listeners.
type Prepared<H> = (Rc<H>, Rc<h1::Settings>, Vec<CoreListener>);

/// Calls the factory with panic isolation and builds the per-core settings.
fn prepare<H: Handler>(core: usize, update: CoreUpdate<H>) -> Result<Prepared<H>, StartError> {
    let factory = &update.factory;
    let handler =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| factory())).map_err(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(not a string)".into());
            StartError::Handler { core, message }
        })?;
    let settings = h1::Settings::new(update.limits, update.access_log, update.trusted);
    crate::access_log::set_enabled(settings.access_log.is_some());
    Ok((Rc::new(handler), Rc::new(settings), update.listeners))
}

/// How long to pause accepting after an accept error (EMFILE, ENFILE, ENOBUFS...).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl Reactor {
    fn run<H: Handler>(self, update: CoreUpdate<H>, ready: Ready) {
        if let Some(cpu) = self.cpu {
            if let Err(e) = driver::pin_current_thread(cpu) {
                warn!(cpu, error = %e, "could not pin reactor thread");
            }
        }
        let driver = match Driver::new(&self.driver) {
            Ok(d) => d,
            Err(e) => {
                let _ = ready.send(Err(StartError::Driver(e)));
                return;
            }
        };
        let info = (self.index, driver.kind(), driver.why().to_string(), driver.waker());
        rt::install(driver);
        crate::metrics::install(Arc::clone(&self.metrics));
        let (mut handler, mut settings, first) = match prepare(self.index, update) {
            Ok(prepared) => prepared,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let mut listeners = Vec::new();
        let mut tokens = 0;
        switch_listeners(&mut listeners, first, &mut tokens);
        arm_accepts(&mut listeners);
        let _ = ready.send(Ok(info));
        // Reported: the start must not wait on this sender any longer.
        drop(ready);
        debug!(core = self.index, cpu = ?self.cpu, "reactor running");
        // A reload prepared here, waiting for every core to agree.
        let mut pending: Option<Prepared<H>> = None;

        let live = Rc::new(std::cell::Cell::new(0usize));
        let mut accepted = Vec::new();
        let mut hard_deadline: Option<Instant> = None;
        let mut quiet = rt::quiet::QuietRelease::new(self.release_memory);
        loop {
            let ran = rt::run_tasks();
            for message in self.mailbox.take() {
                let Ok(message) = message.downcast::<CoreMessage<H>>() else { continue };
                match *message {
                    CoreMessage::Prepare(_, reply) if hard_deadline.is_some() => {
                        let why = "reload: the server is shutting down".into();
                        let _ = reply.send(Err(StartError::Config(why)));
                    }
                    CoreMessage::Prepare(update, reply) => {
                        let answer = match prepare(self.index, *update) {
                            Ok(prepared) => {
                                pending = Some(prepared);
                                Ok(())
                            }
                            Err(e) => Err(e),
                        };
                        let _ = reply.send(answer);
                    }
                    CoreMessage::Commit(done) => {
                        if let Some((h, s, l)) = pending.take().filter(|_| hard_deadline.is_none())
                        {
                            handler = h;
                            settings = s;
                            switch_listeners(&mut listeners, l, &mut tokens);
                            arm_accepts(&mut listeners);
                            debug!(core = self.index, "reloaded");
                        }
                        let _ = done.send(());
                    }
                    CoreMessage::Abort => pending = None,
                }
            }
            if hard_deadline.is_none() && self.control.shutting_down.load(Ordering::SeqCst) {
                // Stop accepting and close the listening sockets, so new connections are
                // refused instead of waiting in a backlog nobody reads. A socket whose accept
                // is being cancelled closes when the cancellation completes: a connection
                // accepted meanwhile (an io_uring accept already done, an `AcceptEx` that
                // already took a client) is served, not reset.
                for l in &listeners {
                    if let Some(op) = l.op {
                        rt::cancel(op);
                    }
                }
                close_finished(&mut listeners);
                rt::begin_shutdown();
                hard_deadline = Some(rt::now() + settings.limits.shutdown_timeout);
                rt::run_tasks(); // idle connections see the shutdown (and close after DRAIN_GRACE)
            }
            if let Some(deadline) = hard_deadline {
                if live.get() == 0 && listeners.is_empty() {
                    break;
                }
                if rt::now() >= deadline {
                    warn!(
                        core = self.index,
                        connections = live.get(),
                        "shutdown_timeout passed; aborting connections"
                    );
                    break;
                }
            }
            let retry = listeners.iter().filter_map(|l| l.retry_at).min();
            let log_due = settings.access_log.as_ref().and_then(|l| l.flush_due());
            let max_wait = [hard_deadline, retry, log_due, quiet.deadline()]
                .into_iter()
                .flatten()
                .min()
                .map(|t| t.saturating_duration_since(rt::now()));
            match rt::poll_io(max_wait, &mut accepted) {
                Ok(completions) => quiet.after_turn(ran + completions > 0, rt::now()),
                Err(e) => {
                    warn!(error = %e, "io driver failed; stopping this reactor");
                    break;
                }
            }
            if let Some(log) = &settings.access_log {
                log.maybe_flush(rt::now());
            }
            for (token, result, more) in accepted.drain(..) {
                let index = listeners.iter().position(|l| l.token == token);
                if let Some(l) = index.map(|i| &mut listeners[i]) {
                    if !more {
                        l.op = None;
                    }
                }
                let Some(endpoint) = index.map(|i| Rc::clone(&listeners[i].endpoint)) else {
                    continue; // a late accept of a listener a reload closed
                };
                match result {
                    Ok(fd) => {
                        let socket = SockRef::from(&fd);
                        let _ = socket.set_tcp_nodelay(true);
                        // At the cap, the connection idle the longest on this core is
                        // closed to admit the new one (admission under pressure): a flood
                        // of idle connections cannot lock active clients out.
                        let permit = self.limiter.try_acquire().or_else(|| {
                            rt::timer::with(|t| t.fire_oldest_idle()).then(|| {
                                debug!(
                                    "max_connections reached; closing the oldest idle connection"
                                );
                                crate::metrics::count(|m| m.idle_evicted());
                                self.limiter.acquire_over()
                            })
                        });
                        match permit {
                            Some(permit) => {
                                // A syscall, made only when something reads the client's
                                // address: the access log, the handler's ConnectionInfo,
                                // the PROXY protocol's trust, the per-client limits.
                                let wants_peer = settings.access_log.is_some()
                                    || handler.wants_connection_info()
                                    || endpoint.wants_peer();
                                let peer = wants_peer
                                    .then(|| socket.peer_addr().ok()?.as_socket())
                                    .flatten();
                                let admitted = conn::Admitted::new(permit, &live, &endpoint);
                                executor::spawn(conn::serve(
                                    fd,
                                    endpoint,
                                    Rc::clone(&handler),
                                    Rc::clone(&settings),
                                    admitted,
                                    peer,
                                ));
                            }
                            None if endpoint.tls.is_some() => {
                                // Closed before TLS: a 503 would cost a whole handshake.
                                debug!(
                                    limit = self.limiter.max(),
                                    "max_connections reached; closing a TLS connection"
                                );
                                crate::metrics::count(|m| {
                                    m.rejected(Rejection::Limit(Limit::MaxConnections))
                                });
                                executor::spawn(rt::io::close(fd));
                            }
                            None => {
                                debug!(
                                    limit = self.limiter.max(),
                                    "max_connections reached; answering 503"
                                );
                                executor::spawn(h1::reject_over_capacity(fd));
                            }
                        }
                    }
                    Err(e) if driver::is_canceled(&e) => {}
                    Err(e) => {
                        warn!(error = %e, "accept failed; pausing accepts briefly");
                        if let Some(l) = index.map(|i| &mut listeners[i]) {
                            l.retry_at = Some(rt::now() + ACCEPT_BACKOFF);
                        }
                    }
                }
            }
            match hard_deadline {
                None => arm_accepts(&mut listeners),
                // Shutting down: a listener closes once its cancelled accept has ended.
                Some(_) => close_finished(&mut listeners),
            }
        }
        self.mailbox.close();
        // The driver goes next, and forgets every descriptor with it: a plain drop closes
        // these at once (a close submitted to an io_uring now would run only as the ring is
        // torn down).
        drop(listeners);
        drop(pending);
        drop(handler);
        rt::teardown();
        if let Some(log) = &settings.access_log {
            log.flush(Instant::now());
        }
        debug!(core = self.index, "reactor stopped");
    }
}

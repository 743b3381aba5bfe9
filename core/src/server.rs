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
use peregrine_limits::{AccessList, ConnectionLimiter, Limit, Limits};
use socket2::SockRef;
use tracing::{debug, warn};

use crate::access_log::{self, AccessLogTarget};
use crate::admin::Admin;
use crate::clients::ClientPolicy;
use crate::conn::{self, Endpoint};
use crate::h1;
use crate::listener::{InheritedSocket, ListenerSpec, Protocols};
use crate::metrics::{CoreMetrics, Metrics, Rejection};
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
    #[cfg(unix)]
    handover: Mutex<Vec<Vec<sys::OwnedSocket>>>,
}

/// A running server.
pub struct Server {
    addrs: Vec<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
    control: Arc<Control>,
    driver: DriverKind,
    driver_why: String,
    metrics: Metrics,
    admin: Option<Admin>,
    access_log: Option<access_log::Writer>,
    tls: TlsReloadHandle,
}

/// A cloneable, thread-safe handle that starts a graceful shutdown.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Control>);

impl ShutdownHandle {
    /// Starts a graceful shutdown: stop accepting, finish in-flight requests, close idle
    /// connections, abort what remains after `shutdown_timeout`.
    pub fn shutdown(&self) {
        if !self.0.shutting_down.swap(true, Ordering::SeqCst) {
            #[cfg(unix)]
            self.0.handover.lock().expect("handover poisoned").clear();
            for w in self.0.wakers.lock().expect("waker list poisoned").iter() {
                w.wake();
            }
        }
    }

    /// Whether a shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.0.shutting_down.load(Ordering::SeqCst)
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
        config.limits.validate().map_err(StartError::Config)?;
        if config.listen.is_empty() {
            return Err(StartError::Config("no listen address".into()));
        }
        let cpus = driver::allowed_cpus();
        let threads = config.threads.unwrap_or(cpus.len()).max(1);
        let open_files = driver::raise_open_files_limit();
        let limiter = ConnectionLimiter::new(config.limits.effective_max_connections(open_files));

        // Each thread's listener per address (port 0 is resolved by the first bind).
        let mut addrs = Vec::new();
        let mut per_thread: Vec<Vec<(sys::Listener, ListenerInfo)>> =
            (0..threads).map(|_| Vec::new()).collect();
        let mut tls_listeners = Vec::new();
        let clients = ClientPolicy::new(&config.limits);
        #[cfg(unix)]
        let mut handover: Vec<Vec<sys::OwnedSocket>> = Vec::new();
        for spec in &config.listen {
            // A listener with limits of its own gets tables of its own, shared by the cores.
            let listener_clients = match spec.client_limits {
                Some(own) => ClientPolicy::with(own, config.limits.ipv6_prefix_length),
                None => Arc::clone(&clients),
            };
            if !spec.protocols.http1 && !spec.protocols.h2 {
                return Err(StartError::Config(format!("listener {}: no protocol", spec.address)));
            }
            let tls = match &spec.tls {
                Some(settings) => {
                    let l = TlsListener::new(settings.clone(), spec.protocols)
                        .map_err(|e| StartError::Tls(spec.address, e))?;
                    let l = Arc::new(l);
                    tls_listeners.push(Arc::clone(&l));
                    Some(l)
                }
                None => None,
            };
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
            let (addr, listeners) = match shared {
                Some(socket) => sys::share_listeners(&socket.0, threads).map(|l| (spec.address, l)),
                None => sys::bind_listeners(spec.address, threads)
                    .map(|(addr, l)| (addr, l.into_iter().map(|l| vec![l]).collect())),
            }
            .map_err(|e| StartError::Bind(spec.address, e))?;
            // One descriptor of each distinct socket, kept for handing over in an upgrade.
            #[cfg(unix)]
            {
                let distinct: std::io::Result<Vec<_>> = match shared {
                    Some(socket) => socket.0.iter().map(|s| s.try_clone()).collect(),
                    None => listeners.iter().flatten().map(|l| l.try_clone()).collect(),
                };
                handover.push(distinct.map_err(|e| StartError::Bind(spec.address, e))?);
            }
            for (sockets, reactor_listeners) in per_thread.iter_mut().zip(listeners) {
                for listener in reactor_listeners {
                    let info = ListenerInfo {
                        protocols: spec.protocols,
                        tls: tls.clone(),
                        proxy_protocol: (!spec.proxy_protocol_from.is_empty())
                            .then(|| Trusted::new(spec.proxy_protocol_from.clone())),
                        access: AccessList::new(spec.allow.clone(), spec.deny.clone()),
                        clients: Arc::clone(&listener_clients),
                    };
                    sockets.push((listener, info));
                }
            }
            addrs.push(addr);
        }

        let control = Arc::new(Control {
            shutting_down: AtomicBool::new(false),
            wakers: Mutex::default(),
            #[cfg(unix)]
            handover: Mutex::new(handover),
        });
        let core_metrics: Vec<Arc<CoreMetrics>> = (0..threads).map(|_| Arc::default()).collect();
        let access_log = match &config.access_log {
            Some(target) => Some(access_log::Writer::start(target).map_err(StartError::AccessLog)?),
            None => None,
        };
        let factory = Arc::new(factory);
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut started =
            Started { control: Arc::clone(&control), handles: Vec::new(), access_log };
        for (index, listeners) in per_thread.into_iter().enumerate() {
            let reactor = Reactor {
                index,
                cpu: config
                    .pin_threads
                    .then(|| cpus.get(index % cpus.len().max(1)).copied())
                    .flatten(),
                listeners,
                limits: config.limits.clone(),
                trusted: (!config.trusted_proxies.is_empty())
                    .then(|| Trusted::new(config.trusted_proxies.clone())),
                driver: DriverConfig { io: config.io, ..DriverConfig::default() },
                limiter: Arc::clone(&limiter),
                control: Arc::clone(&control),
                metrics: Arc::clone(&core_metrics[index]),
                access_log: started.access_log.as_ref().map(access_log::Writer::core),
                release_memory: config.release_memory,
            };
            let factory = Arc::clone(&factory);
            let ready = ready_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("peregrine-{index}"))
                .spawn(move || reactor.run(move || factory(), ready));
            match spawned {
                Ok(handle) => started.handles.push(handle),
                Err(e) => return Err(started.abort(&ready_rx, StartError::Driver(e))),
            }
        }
        drop(ready_tx);
        // Every reactor reports once (running, or why not) and then lets go of its sender.
        let mut driver = None;
        let mut failure = None;
        for _ in 0..threads {
            match ready_rx.recv() {
                Ok(Ok((kind, why, waker))) => {
                    control.wakers.lock().expect("waker list poisoned").push(waker);
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
        let metrics = Metrics {
            cores: Arc::new(core_metrics),
            driver: driver.as_str(),
            max_connections: limiter.max(),
            clients: Arc::clone(&clients),
        };
        let admin = match config.admin {
            Some(addr) => {
                let handle = ShutdownHandle(Arc::clone(&control));
                match Admin::start(addr, metrics.clone(), handle) {
                    Ok(a) => Some(a),
                    Err(e) => return Err(started.abort(&ready_rx, StartError::Admin(addr, e))),
                }
            }
            None => None,
        };
        let Started { handles, access_log, .. } = started;
        Ok(Server {
            addrs,
            threads: handles,
            control,
            driver,
            driver_why,
            metrics,
            admin,
            access_log,
            tls: TlsReloadHandle(Arc::new(tls_listeners)),
        })
    }

    /// Per listener (in [`ServerConfig::listen`]'s order), inheritable copies of its
    /// listening sockets, for a binary upgrade; `None` once a shutdown has started (the
    /// sockets are closing).
    #[cfg(target_os = "linux")]
    pub(crate) fn handover_copies(
        control: &Arc<Control>,
    ) -> Option<std::io::Result<Vec<Vec<sys::OwnedSocket>>>> {
        let handover = control.handover.lock().expect("handover poisoned");
        if control.shutting_down.load(Ordering::SeqCst) {
            return None;
        }
        Some(
            handover
                .iter()
                .map(|group| group.iter().map(driver::inheritable_copy).collect())
                .collect(),
        )
    }

    /// The server's control block (for the upgrade handle).
    #[cfg(target_os = "linux")]
    pub(crate) fn control(&self) -> Arc<Control> {
        Arc::clone(&self.control)
    }

    /// Reads every TLS listener's certificate and key files again (what SIGHUP does in the
    /// binary): new handshakes use the new certificates, established connections keep
    /// theirs, and a listener whose new files fail to load keeps its old certificates (the
    /// error says which file and why).
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        self.tls.reload()
    }

    /// A thread-safe handle for [`reload_tls`](Self::reload_tls).
    pub fn tls_reload_handle(&self) -> TlsReloadHandle {
        self.tls.clone()
    }

    /// The addresses actually bound, one per configured listener, in order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
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
        if let Some(log) = self.access_log.as_mut() {
            log.finish();
        }
    }
}

type Ready = mpsc::Sender<Result<(DriverKind, String, DriverWaker), StartError>>;

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
    fn abort(
        mut self,
        ready: &mpsc::Receiver<Result<(DriverKind, String, DriverWaker), StartError>>,
        error: StartError,
    ) -> StartError {
        // Reports not yet read: a reactor still starting registers its waker now, so the
        // shutdown below reaches it. Each reactor reports once; a reactor thread that died
        // without reporting has dropped its sender, which ends the loop.
        while let Ok(report) = ready.recv_timeout(Duration::from_secs(10)) {
            if let Ok((_, _, waker)) = report {
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

/// A listener's protocols and TLS state, given to every core.
struct ListenerInfo {
    protocols: Protocols,
    tls: Option<Arc<TlsListener>>,
    proxy_protocol: Option<Trusted>,
    access: AccessList,
    clients: Arc<ClientPolicy>,
}

/// One core's share of the server.
struct Reactor {
    index: usize,
    cpu: Option<usize>,
    listeners: Vec<(sys::Listener, ListenerInfo)>,
    limits: Limits,
    /// `ServerConfig::trusted_proxies`, when any.
    trusted: Option<Trusted>,
    driver: DriverConfig,
    limiter: Arc<ConnectionLimiter>,
    control: Arc<Control>,
    metrics: Arc<CoreMetrics>,
    access_log: Option<access_log::CoreLog>,
    /// `ServerConfig::release_memory`.
    release_memory: Option<fn()>,
}

/// A listener's accept state on one core.
struct Listener {
    fd: sys::Listener,
    endpoint: Rc<Endpoint>,
    op: Option<driver::OpId>,
    /// After an error such as EMFILE, accept again only from this time (nginx backs off too).
    retry_at: Option<Instant>,
}

/// How long to pause accepting after an accept error (EMFILE, ENFILE, ENOBUFS...).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl Reactor {
    fn run<H: Handler>(self, make_handler: impl FnOnce() -> H, ready: Ready) {
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
        let info = (driver.kind(), driver.why().to_string(), driver.waker());
        rt::install(driver);
        crate::metrics::install(Arc::clone(&self.metrics));
        let handler = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(make_handler)) {
            Ok(h) => Rc::new(h),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(not a string)".into());
                let _ = ready.send(Err(StartError::Handler { core: self.index, message }));
                return;
            }
        };
        let settings =
            Rc::new(h1::Settings::new(self.limits.clone(), self.access_log, self.trusted));
        let mut listeners: Vec<Listener> = self
            .listeners
            .into_iter()
            .map(|(fd, info)| Listener {
                fd,
                endpoint: Rc::new(Endpoint {
                    protocols: info.protocols,
                    tls: info.tls,
                    proxy_protocol: info.proxy_protocol,
                    access: info.access,
                    clients: info.clients,
                }),
                op: None,
                retry_at: None,
            })
            .collect();
        for (i, l) in listeners.iter_mut().enumerate() {
            l.op = Some(rt::accept(sys::raw(&l.fd), i));
        }
        let _ = ready.send(Ok(info));
        // Reported: the start must not wait on this sender any longer.
        drop(ready);
        debug!(core = self.index, cpu = ?self.cpu, "reactor running");

        let live = Rc::new(std::cell::Cell::new(0usize));
        let mut accepted = Vec::new();
        let mut hard_deadline: Option<Instant> = None;
        let mut quiet = rt::quiet::QuietRelease::new(self.release_memory);
        loop {
            let ran = rt::run_tasks();
            if hard_deadline.is_none() && self.control.shutting_down.load(Ordering::SeqCst) {
                // Stop accepting and close the listening sockets now, so new connections are
                // refused instead of waiting in a backlog nobody reads.
                for l in listeners.drain(..) {
                    if let Some(op) = l.op {
                        rt::cancel(op);
                    }
                }
                rt::begin_shutdown();
                hard_deadline = Some(rt::now() + self.limits.shutdown_timeout);
                rt::run_tasks(); // let idle connections see the shutdown and close
            }
            if let Some(deadline) = hard_deadline {
                if live.get() == 0 {
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
            for (index, result, more) in accepted.drain(..) {
                if let Some(l) = listeners.get_mut(index) {
                    if !more {
                        l.op = None;
                    }
                }
                let Some(endpoint) = listeners.get(index).map(|l| Rc::clone(&l.endpoint)) else {
                    continue; // a late accept of a listener closed by shutdown
                };
                match result {
                    Ok(fd) if hard_deadline.is_none() => {
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
                    Ok(_) => {} // accepted during shutdown: dropped (closed)
                    Err(e) if driver::is_canceled(&e) => {}
                    Err(e) => {
                        warn!(error = %e, "accept failed; pausing accepts briefly");
                        if let Some(l) = listeners.get_mut(index) {
                            l.retry_at = Some(rt::now() + ACCEPT_BACKOFF);
                        }
                    }
                }
            }
            if hard_deadline.is_none() {
                for (i, l) in listeners.iter_mut().enumerate() {
                    if l.op.is_none() && l.retry_at.is_none_or(|t| rt::now() >= t) {
                        l.retry_at = None;
                        l.op = Some(rt::accept(sys::raw(&l.fd), i));
                    }
                }
            }
        }
        drop(listeners);
        drop(handler);
        rt::teardown();
        if let Some(log) = &settings.access_log {
            log.flush(Instant::now());
        }
        debug!(core = self.index, "reactor stopped");
    }
}

//! Config reload: a running server takes a new [`ServerConfig`] and handler factory without a
//! restart (what the binary does on SIGHUP and on the admin listener's `POST /reload`).
//!
//! ```text
//!  ReloadHandle::reload ── validate, bind new listeners, load TLS, open the access log
//!     │   (any failure: nothing has changed; what was opened is closed again)
//!     ├─► every core: Prepare (build the new handler, per-core settings)  ─► Ok / Err
//!     │   all Ok: Commit ─► each core swaps handler, settings and listeners at once
//!     └── any Err: Abort ─► each core drops what it prepared
//! ```
//!
//! Two phases so that a factory that panics on one core changes no core. A connection
//! keeps the handler and settings (limits, access log, trusted proxies) it was accepted
//! with until it closes: it holds its own `Rc`s of them. Listeners are matched by place
//! (address, or Unix socket path): one in both configs keeps its sockets (and its backlog)
//! and takes the new settings; a new one is bound; one no longer configured stops
//! accepting and closes. What a running server cannot change (`threads`, `io`,
//! `pin_threads`, `admin`) is reported back, to take effect on the next start or upgrade.
//!
//! A core hands the old config's access log lines over when the last connection of that
//! config closes (or every 32 KiB), not every second as it does the current one's.

use std::any::{Any, TypeId};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use peregrine_limits::{ConnectionLimiter, Limits};

use crate::access_log::{self, AccessLogTarget, CoreLog};
use crate::clients::ClientPolicy;
use crate::conn::Endpoint;
use crate::listener::ListenerSpec;
use crate::server::{self, Control, ServerConfig, StartError};
use crate::sys::{self, driver::DriverWaker};
use crate::tls::TlsListener;
use crate::trust::Trusted;

/// How long a reload waits for every core to prepare, and then to switch.
const PREPARE_WITHIN: Duration = Duration::from_secs(10);

/// Reload counts, and how the last one went (on `/metrics`).
#[derive(Debug)]
pub(crate) struct ReloadStats {
    succeeded: AtomicU64,
    failed: AtomicU64,
    last_ok: AtomicBool,
    /// Unix time of the last successful reload (of the start, before any).
    last_success: AtomicU64,
}

impl Default for ReloadStats {
    fn default() -> Self {
        ReloadStats {
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_ok: AtomicBool::new(true),
            last_success: AtomicU64::new(unix_now()),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl ReloadStats {
    fn record(&self, ok: bool) {
        self.last_ok.store(ok, Ordering::Relaxed);
        if ok {
            self.succeeded.fetch_add(1, Ordering::Relaxed);
            self.last_success.store(unix_now(), Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn render(&self, out: &mut String) {
        let ok = self.succeeded.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        crate::metrics::metric(
            out,
            "peregrine_config_reloads_total",
            "counter",
            "Config reloads, by result.",
            &[("result=\"ok\"", ok), ("result=\"failed\"", failed)],
        );
        crate::metrics::metric(
            out,
            "peregrine_config_last_reload_successful",
            "gauge",
            "Whether the last config reload succeeded (1 before any).",
            &[("", u64::from(self.last_ok.load(Ordering::Relaxed)))],
        );
        crate::metrics::metric(
            out,
            "peregrine_config_last_reload_success_timestamp_seconds",
            "gauge",
            "Unix time of the last successful config reload (of the start, before any).",
            &[("", self.last_success.load(Ordering::Relaxed))],
        );
    }
}

/// A core's inbox for reload messages, looked at once per reactor turn (one relaxed load
/// when empty).
#[derive(Default)]
pub(crate) struct Mailbox {
    waiting: AtomicBool,
    messages: Mutex<Letters>,
}

#[derive(Default)]
struct Letters {
    queue: Vec<Box<dyn Any + Send>>,
    /// The core has left its loop: messages are dropped at once (their reply channels with
    /// them, so a reload waiting on this core learns it at once).
    closed: bool,
}

impl Mailbox {
    fn post(&self, message: Box<dyn Any + Send>, waker: &DriverWaker) {
        let mut letters = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        if letters.closed {
            return;
        }
        letters.queue.push(message);
        drop(letters);
        self.waiting.store(true, Ordering::Release);
        waker.wake();
    }

    /// The core is leaving its loop: what is queued (a reload's sockets and log handles
    /// among it) is dropped, and so is everything posted later.
    pub(crate) fn close(&self) {
        let mut letters = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        letters.closed = true;
        letters.queue.clear();
    }

    /// The messages posted since the last call, oldest first.
    pub(crate) fn take(&self) -> Vec<Box<dyn Any + Send>> {
        // A plain load on every reactor turn; the read-modify-write only when there is mail.
        if !self.waiting.load(Ordering::Relaxed) || !self.waiting.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut self.messages.lock().unwrap_or_else(|e| e.into_inner()).queue)
    }
}

/// A message to one core. `H` is the server's handler type (checked before sending).
pub(crate) enum CoreMessage<H> {
    /// Build this core's share of a reload and answer whether it could.
    Prepare(Box<CoreUpdate<H>>, mpsc::Sender<Result<(), StartError>>),
    /// Every core prepared: switch over, and say so.
    Commit(mpsc::Sender<()>),
    /// Some core could not: drop what was prepared.
    Abort,
}

/// One core's share of a reload (of the start, too: the reactor starts from one).
pub(crate) struct CoreUpdate<H> {
    pub(crate) factory: Arc<dyn Fn() -> H + Send + Sync>,
    pub(crate) limits: Limits,
    pub(crate) trusted: Option<Trusted>,
    pub(crate) access_log: Option<CoreLog>,
    /// In the config's order.
    pub(crate) listeners: Vec<CoreListener>,
}

/// A listener on one core: its sockets when new to the core (`None`: it keeps the sockets
/// it has for this group), and its settings.
pub(crate) struct CoreListener {
    pub(crate) group: usize,
    pub(crate) sockets: Option<Vec<sys::Listener>>,
    pub(crate) info: Endpoint,
}

/// A configured listener of the running server.
struct LiveListener {
    group: usize,
    spec: ListenerSpec,
    addr: SocketAddr,
    /// Its own per-client tables, when it has its own limits.
    clients: Option<Arc<ClientPolicy>>,
}

/// What the running server's config is now, and the handles a reload swaps.
pub(crate) struct Live {
    handler: TypeId,
    threads: usize,
    open_files: u64,
    cores: Mutex<Vec<(Arc<Mailbox>, DriverWaker)>>,
    state: Mutex<LiveState>,
    pub(crate) stats: Arc<ReloadStats>,
    pub(crate) limiter: Arc<ConnectionLimiter>,
    pub(crate) clients: Arc<ArcSwap<ClientPolicy>>,
    pub(crate) tls: Arc<Mutex<Vec<Arc<TlsListener>>>>,
}

/// The running config and what a reload replaces (behind [`Live`]'s lock).
pub(crate) struct LiveState {
    config: ServerConfig,
    listeners: Vec<LiveListener>,
    next_group: usize,
    access_log: Option<access_log::Writer>,
    /// Writers of earlier configs: each ends once the connections that log to it close.
    retired_logs: Vec<access_log::Writer>,
}

/// What the server's start hands over to [`Live::new`].
pub(crate) struct LiveInit {
    pub(crate) config: ServerConfig,
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) listener_clients: Vec<Option<Arc<ClientPolicy>>>,
    pub(crate) open_files: u64,
    pub(crate) limiter: Arc<ConnectionLimiter>,
    pub(crate) clients: Arc<ClientPolicy>,
    pub(crate) tls: Vec<Arc<TlsListener>>,
    pub(crate) access_log: Option<access_log::Writer>,
}

/// `config` as kept for comparing and matching later: without the sockets its specs were
/// given (the cores and the handover list own those; a copy here would keep a socket open
/// after its listener closed).
fn without_sockets(mut config: ServerConfig) -> ServerConfig {
    for spec in &mut config.listen {
        spec.inherited = None;
    }
    config.admin_socket = None;
    config
}

impl Live {
    pub(crate) fn new<H: 'static>(threads: usize, started: LiveInit) -> Live {
        let started = LiveInit { config: without_sockets(started.config), ..started };
        let listeners = started
            .config
            .listen
            .iter()
            .zip(started.addrs)
            .zip(started.listener_clients)
            .enumerate()
            .map(|(group, ((spec, addr), clients))| LiveListener {
                group,
                spec: spec.clone(),
                addr,
                clients,
            })
            .collect::<Vec<_>>();
        Live {
            handler: TypeId::of::<H>(),
            threads,
            open_files: started.open_files,
            cores: Mutex::default(),
            state: Mutex::new(LiveState {
                config: started.config,
                next_group: listeners.len(),
                listeners,
                access_log: started.access_log,
                retired_logs: Vec::new(),
            }),
            stats: Arc::default(),
            limiter: started.limiter,
            clients: Arc::new(ArcSwap::new(started.clients)),
            tls: Arc::new(Mutex::new(started.tls)),
        }
    }

    pub(crate) fn add_core(&self, mailbox: Arc<Mailbox>, waker: DriverWaker) {
        self.cores.lock().unwrap_or_else(|e| e.into_inner()).push((mailbox, waker));
    }

    /// The addresses bound now, one per configured listener, in order.
    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        self.lock().listeners.iter().map(|l| l.addr).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds reloads off (an upgrade holds this while it hands the listeners over, so the
    /// successor, which matches sockets to its listeners by position, gets the set the
    /// config file it reads describes).
    pub(crate) fn hold(&self) -> std::sync::MutexGuard<'_, LiveState> {
        self.lock()
    }

    /// Waits for every access log line handed over so far to be written (after the cores
    /// stopped).
    pub(crate) fn finish_logs(&self) {
        let mut state = self.lock();
        if let Some(w) = state.access_log.as_mut() {
            w.finish();
        }
        for w in state.retired_logs.iter_mut() {
            w.finish();
        }
    }
}

/// Reloads a running server (see the module docs). Cloneable and thread-safe, for a signal
/// thread or the admin listener.
#[derive(Clone)]
pub struct ReloadHandle {
    pub(crate) live: Arc<Live>,
    pub(crate) control: Arc<Control>,
}

impl std::fmt::Debug for ReloadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadHandle").finish_non_exhaustive()
    }
}

/// What a successful reload could not change in a running server.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Settings that differ from the running ones but take effect only on the next start
    /// (or binary upgrade): `threads`, `io`, `pin_threads`, `admin`. (`release_memory`
    /// is the start's.)
    pub needs_restart: Vec<&'static str>,
}

impl ReloadHandle {
    /// Switches the server to `config` and `factory`: new connections get them, open ones
    /// keep what they started with. On error nothing has changed. The handler type must be
    /// the one the server started with.
    pub fn reload<F, H>(&self, config: ServerConfig, factory: F) -> Result<Reloaded, StartError>
    where
        F: Fn() -> H + Send + Sync + 'static,
        H: crate::Handler,
    {
        let result = self.apply(config, Arc::new(factory));
        self.live.stats.record(result.is_ok());
        result
    }

    /// The addresses bound now, one per configured listener, in order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.live.addrs()
    }

    /// Counts a reload that failed before it reached [`reload`](Self::reload) (a config
    /// file that does not parse), for the metrics.
    pub fn record_failure(&self) {
        self.live.stats.record(false);
    }

    fn apply<H: crate::Handler>(
        &self,
        config: ServerConfig,
        factory: Arc<dyn Fn() -> H + Send + Sync>,
    ) -> Result<Reloaded, StartError> {
        let live = &self.live;
        if TypeId::of::<H>() != live.handler {
            return Err(StartError::Config("reload: not the handler type the server runs".into()));
        }
        server::check(&config)?;
        let mut state = live.lock();
        if self.control.is_shutting_down() {
            return Err(StartError::Config("reload: the server is shutting down".into()));
        }
        let needs_restart = needs_restart(&config, &state.config);
        // The per-client tables carry over when their limits do (their counts stay right).
        let clients = if same_client_limits(&config.limits, &state.config.limits) {
            live.clients.load_full()
        } else {
            ClientPolicy::new(&config.limits)
        };
        let (mut planned, next_group) = plan_listeners(&state, &config, live.threads)?;
        let access_log = match &config.access_log {
            Some(target) => Some(open_log(target)?),
            None => None,
        };

        // Phase one: every core builds its handler and settings; any failure aborts all.
        let cores = live.cores.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let trusted = (!config.trusted_proxies.is_empty())
            .then(|| Trusted::new(config.trusted_proxies.clone()));
        let (reply_tx, reply_rx) = mpsc::channel();
        for (core, (mailbox, waker)) in cores.iter().enumerate() {
            let listeners = planned
                .iter_mut()
                .zip(&config.listen)
                .map(|(p, spec)| CoreListener {
                    group: p.group,
                    sockets: p.sockets.as_mut().map(|b| std::mem::take(&mut b.per_core[core])),
                    info: Endpoint::new(
                        spec,
                        p.tls.clone(),
                        p.clients.clone().unwrap_or_else(|| Arc::clone(&clients)),
                    ),
                })
                .collect();
            let update = CoreUpdate {
                factory: Arc::clone(&factory),
                limits: config.limits.clone(),
                trusted: trusted.clone(),
                access_log: access_log.as_ref().map(access_log::Writer::core),
                listeners,
            };
            let message = CoreMessage::Prepare(Box::new(update), reply_tx.clone());
            mailbox.post(Box::new(message), waker);
        }
        drop(reply_tx);
        if let Err(e) = await_answers(&reply_rx, cores.len()) {
            for (mailbox, waker) in &cores {
                mailbox.post(Box::new(CoreMessage::<H>::Abort), waker);
            }
            return Err(e);
        }

        // Phase two: switch. Shared state first, so a scrape after this reads the new caps.
        live.limiter.set_max(config.limits.effective_max_connections(live.open_files));
        live.clients.store(clients);
        *live.tls.lock().unwrap_or_else(|e| e.into_inner()) =
            planned.iter().filter_map(|p| p.tls.clone()).collect();
        self.control.replace_handover(|old| {
            planned
                .iter_mut()
                .map(|p| match (&mut p.sockets, p.kept) {
                    (Some(bound), _) => std::mem::take(&mut bound.handover),
                    (None, Some(i)) => old.get_mut(i).map(std::mem::take).unwrap_or_default(),
                    (None, None) => Vec::new(),
                })
                .collect()
        });
        // Returns once every core serves the new config.
        let (done_tx, done_rx) = mpsc::channel();
        for (mailbox, waker) in &cores {
            mailbox.post(Box::new(CoreMessage::<H>::Commit(done_tx.clone())), waker);
        }
        drop(done_tx);
        let deadline = std::time::Instant::now() + PREPARE_WITHIN;
        for _ in 0..cores.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if done_rx.recv_timeout(left).is_err() {
                // A core that left its loop meanwhile (a shutdown began) dropped its part.
                tracing::warn!("reload: a core did not confirm the switch");
                break;
            }
        }
        let config = without_sockets(config);
        state.listeners = config
            .listen
            .iter()
            .zip(&planned)
            .map(|(spec, p)| LiveListener {
                group: p.group,
                spec: spec.clone(),
                addr: p.addr,
                clients: p.clients.clone(),
            })
            .collect();
        state.next_group = next_group;
        if let Some(mut old_log) = std::mem::replace(&mut state.access_log, access_log) {
            old_log.retire();
            state.retired_logs.push(old_log);
        }
        state.retired_logs.retain(|w| !w.is_finished());
        state.config = config;
        Ok(Reloaded { needs_restart })
    }
}

/// What differs in `new` but only a restart can change.
fn needs_restart(new: &ServerConfig, old: &ServerConfig) -> Vec<&'static str> {
    [
        ("threads", new.threads != old.threads),
        ("io", new.io != old.io),
        ("pin_threads", new.pin_threads != old.pin_threads),
        ("admin", new.admin != old.admin),
    ]
    .into_iter()
    .filter_map(|(key, differs)| differs.then_some(key))
    .collect()
}

/// Whether the per-client tables of `a` and `b` are the same.
fn same_client_limits(a: &Limits, b: &Limits) -> bool {
    a.max_connections_per_ip == b.max_connections_per_ip
        && a.rate_limit == b.rate_limit
        && a.ipv6_prefix_length == b.ipv6_prefix_length
}

/// The new config's listeners: each one at a running listener's place keeps it (its group,
/// address and per-client tables, when its limits are unchanged); the others are bound now.
/// TLS state is built for every TLS listener (its files read again). Returns them with the
/// next unused group number.
fn plan_listeners(
    state: &LiveState,
    config: &ServerConfig,
    threads: usize,
) -> Result<(Vec<Planned>, usize), StartError> {
    let ipv6 = config.limits.ipv6_prefix_length;
    let same_ipv6 = ipv6 == state.config.limits.ipv6_prefix_length;
    // Exact places first (an address, a path), then a port 0 takes what is left: so a
    // port 0 cannot claim the listener another new spec names by its bound port.
    let mut taken = vec![false; state.listeners.len()];
    let mut kept_by: Vec<Option<usize>> = vec![None; config.listen.len()];
    for wildcard in [false, true] {
        for (k, spec) in config.listen.iter().enumerate() {
            let is_wildcard = spec.unix.is_none() && spec.address.port() == 0;
            if kept_by[k].is_some() || is_wildcard != wildcard {
                continue;
            }
            kept_by[k] = (0..state.listeners.len()).find(|&i| {
                let l = &state.listeners[i];
                !taken[i] && same_place(&l.spec, l.addr, spec)
            });
            if let Some(i) = kept_by[k] {
                taken[i] = true;
            }
        }
    }
    let mut next_group = state.next_group;
    let mut planned = Vec::new();
    for (spec, kept) in config.listen.iter().zip(kept_by) {
        let running = kept.map(|i| &state.listeners[i]);
        let (group, addr, sockets) = match running {
            Some(l) => (l.group, l.addr, None),
            None => {
                let bound = server::bind(spec, threads)?;
                next_group += 1;
                (next_group - 1, bound.addr, Some(bound))
            }
        };
        let clients = spec.client_limits.map(|own| {
            running
                .filter(|l| l.spec.client_limits == Some(own) && same_ipv6)
                .and_then(|l| l.clients.clone())
                .unwrap_or_else(|| ClientPolicy::with(own, ipv6))
        });
        let tls = server::tls_listener(spec)?;
        planned.push(Planned { group, addr, kept, sockets, tls, clients });
    }
    Ok((planned, next_group))
}

/// Waits for `cores` answers to a prepare: the first error, or one for a core that does
/// not answer in time.
fn await_answers(
    answers: &mpsc::Receiver<Result<(), StartError>>,
    cores: usize,
) -> Result<(), StartError> {
    let mut failure = None;
    for _ in 0..cores {
        match answers.recv_timeout(PREPARE_WITHIN) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                let why = "reload: a core did not answer; nothing changed".into();
                return Err(failure.unwrap_or(StartError::Config(why)));
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

/// A listener of the new config: the group it is (kept or new), its bound address, and
/// what it needs from this reload.
struct Planned {
    group: usize,
    addr: SocketAddr,
    /// The index of the running listener it keeps.
    kept: Option<usize>,
    sockets: Option<server::Bound>,
    tls: Option<Arc<TlsListener>>,
    clients: Option<Arc<ClientPolicy>>,
}

/// Whether `new` names the place `running` (bound at `bound`) listens on: the same Unix
/// socket path, or the same address as configured or as bound (a port 0 resolved).
fn same_place(running: &ListenerSpec, bound: SocketAddr, new: &ListenerSpec) -> bool {
    match (&running.unix, &new.unix) {
        (Some(a), Some(b)) => a.path == b.path,
        (None, None) => new.address == running.address || new.address == bound,
        _ => false,
    }
}

/// Opens the access log (a reload opens it again even when unchanged, so a rotated file
/// is let go of, as nginx's reopen does).
fn open_log(target: &AccessLogTarget) -> Result<access_log::Writer, StartError> {
    access_log::Writer::start(target).map_err(StartError::AccessLog)
}

//! Application hosting, in the ASP.NET Core Module's out-of-process model: Peregrine starts
//! the user's app process, passes it a loopback port and a pairing token, proxies requests
//! to it, restarts it when it fails, and takes it offline when asked.
//!
//! ```text
//!  core 0..n: AppRoute::call ── state (ArcSwap, one load per request) ──┐
//!     │  a ready process? ──► this core's Proxy for it (token added) ──►│ app process(es)
//!     │  none: ask for a start (one message), wait for the state to change (bounded)
//!     ▼                                                                 │
//!  supervisor thread (one per app): spawn, readiness, exits, rapid-fail window,
//!     offline file, zero-downtime restart, graceful stop; publishes each new state
//! ```
//!
//! The supervisor runs off the reactors and is the only writer of an app's state; reactors
//! read it with one atomic load per request and tell the supervisor only "start, please"
//! (once per start, not per request). Each process gets a [`Proxy`](crate::proxy::Proxy) of
//! its own on each core (its own keep-alive pool), made when a core first sends it a request
//! and dropped once the process has left the state, so a restarted app never receives a
//! request on a connection to its predecessor.

mod config;
pub(crate) mod metrics;
mod output;
mod process;
mod route;
mod supervisor;

pub use config::{AppConfig, AppListen, StartMode};
pub use route::AppRoute;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::proxy::ProxyConfig;

/// The field carrying a process's pairing token on every request Peregrine forwards to it
/// (what ASP.NET Core's IIS integration checks); a client's own is replaced.
pub(crate) const TOKEN_HEADER: http::HeaderName =
    http::HeaderName::from_static("ms-aspnetcore-token");

/// The server's hosted apps, shared by every core's router and the supervisors.
#[derive(Clone, Default)]
pub struct Apps {
    apps: Arc<Vec<Arc<App>>>,
}

impl Apps {
    /// Starts a supervisor thread for each app (an `at_start` app's processes start now).
    /// `path_base` gives each app's `ASPNETCORE_APPL_PATH`; `forwarding` the proxy settings
    /// its requests are forwarded with (trusted proxies, timeouts).
    pub fn start(
        configs: Vec<(AppConfig, String)>,
        forwarding: &ProxyConfig,
    ) -> Result<Apps, String> {
        let mut apps = Vec::new();
        for (config, path_base) in configs {
            if let Err(e) = config.validate() {
                Apps { apps: Arc::new(apps) }.stop();
                return Err(format!("app {}: {e}", config.name));
            }
            let (tx, rx) = std::sync::mpsc::channel();
            let app = Arc::new(App {
                path_base,
                forwarding: forwarding.clone(),
                state: ArcSwap::from_pointee(AppState::stopped()),
                commands: tx,
                start_requested: AtomicBool::new(false),
                queued: AtomicU32::new(0),
                metrics: metrics::AppMetrics::default(),
                thread: Mutex::new(None),
                config,
            });
            let for_thread = Arc::clone(&app);
            let thread = std::thread::Builder::new()
                .name(format!("peregrine-app-{}", app.config.name))
                .spawn(move || supervisor::run(for_thread, rx))
                .map_err(|e| {
                    Apps { apps: Arc::new(apps.clone()) }.stop();
                    format!("app {}: cannot start its supervisor: {e}", app.config.name)
                })?;
            *app.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
            hosted().push(Arc::clone(&app));
            apps.push(app);
        }
        Ok(Apps { apps: Arc::new(apps) })
    }

    /// The apps of a new config (a reload): an app whose settings and forwarding are
    /// unchanged is kept as it runs (the same supervisor and processes); the others start
    /// now. Returns the new set, the apps started for it (to stop if the reload fails) and
    /// the running apps it leaves out (to stop once it is in place).
    pub fn reconcile(
        &self,
        configs: Vec<(AppConfig, String)>,
        forwarding: &ProxyConfig,
    ) -> Result<Reconciled, String> {
        let same = |app: &App, config: &AppConfig, path_base: &str| {
            app.config == *config
                && app.path_base == path_base
                && app.forwarding.trusted_proxies == forwarding.trusted_proxies
        };
        let (mut kept, mut fresh) = (Vec::new(), Vec::new());
        for (config, path_base) in configs {
            match self.apps.iter().find(|a| same(a, &config, &path_base)) {
                Some(app) => kept.push(Arc::clone(app)),
                None => fresh.push((config, path_base)),
            }
        }
        let started = Apps::start(fresh, forwarding)?;
        let removed = self
            .apps
            .iter()
            .filter(|a| !kept.iter().any(|k| Arc::ptr_eq(a, k)))
            .cloned()
            .collect::<Vec<_>>();
        let all = kept.iter().chain(started.apps.iter()).cloned().collect::<Vec<_>>();
        Ok(Reconciled {
            apps: Apps { apps: Arc::new(all) },
            kept: Apps { apps: Arc::new(kept) },
            started,
            removed: Apps { apps: Arc::new(removed) },
        })
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// This core's router for the app named `name`.
    pub fn route(&self, name: &str) -> Option<AppRoute> {
        self.apps.iter().find(|a| a.config.name == name).map(|a| AppRoute::new(Arc::clone(a)))
    }

    /// Restarts every running app without losing a request: new processes start, and once
    /// they are ready they take the new requests while the old ones finish theirs and stop.
    pub fn restart(&self) {
        for app in self.apps.iter() {
            app.restart();
        }
    }

    /// Stops every app gracefully (SIGTERM or Ctrl+Break, then a kill after its
    /// `shutdown_time_limit`) and waits for their supervisors.
    pub fn stop(&self) {
        for app in self.apps.iter() {
            let _ = app.commands.send(supervisor::Command::Stop);
        }
        for app in self.apps.iter() {
            let thread = app.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        }
        hosted().retain(|h| !self.apps.iter().any(|a| Arc::ptr_eq(a, h)));
    }
}

/// [`Apps::reconcile`]'s answer.
pub struct Reconciled {
    /// The apps of the new config.
    pub apps: Apps,
    /// Those of them that were running already (a reload restarts them).
    pub kept: Apps,
    /// Those started for it.
    pub started: Apps,
    /// The running apps it no longer has.
    pub removed: Apps,
}

/// One hosted app: its settings, its published state, and the way to its supervisor.
pub(crate) struct App {
    pub(crate) config: AppConfig,
    /// `ASPNETCORE_APPL_PATH`.
    path_base: String,
    /// The proxy settings each process's forwarding starts from.
    forwarding: ProxyConfig,
    /// Written by the supervisor only; read once per request.
    state: ArcSwap<AppState>,
    commands: Sender<supervisor::Command>,
    /// A start was asked for and the supervisor has not taken the request yet.
    start_requested: AtomicBool,
    /// Requests waiting for a start.
    queued: AtomicU32,
    metrics: metrics::AppMetrics,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Every app hosted by this process, for `/metrics` and the admin listener.
static HOSTED: Mutex<Vec<Arc<App>>> = Mutex::new(Vec::new());

/// The apps hosted by this process.
pub(crate) fn hosted() -> std::sync::MutexGuard<'static, Vec<Arc<App>>> {
    HOSTED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Restarts the hosted app named `name` without losing a request (the admin listener's
/// `POST /apps/NAME/restart`); `false` when there is none.
pub(crate) fn restart_hosted(name: &str) -> bool {
    let apps = hosted();
    let found: Vec<&Arc<App>> = apps.iter().filter(|a| a.config.name == name).collect();
    for app in &found {
        app.restart();
    }
    !found.is_empty()
}

impl App {
    /// Asks the supervisor for a zero-downtime restart.
    fn restart(&self) {
        let _ = self.commands.send(supervisor::Command::Restart);
    }

    /// Asks the supervisor to start the app (once, however many requests ask).
    fn request_start(&self) {
        if !self.start_requested.swap(true, Ordering::AcqRel) {
            let _ = self.commands.send(supervisor::Command::Start);
        }
    }
}

/// What requests need to know of an app, published by its supervisor on each change.
pub(crate) struct AppState {
    pub(crate) phase: Phase,
    /// The processes taking new requests.
    pub(crate) ready: Vec<Arc<Process>>,
    /// Starts that failed so far: a request waiting for a start sees it fail when this grows.
    pub(crate) failed_starts: u64,
    /// The latest failure, for the error page.
    pub(crate) last_failure: Option<Arc<Failure>>,
}

impl AppState {
    fn stopped() -> AppState {
        AppState { phase: Phase::Stopped, ready: Vec::new(), failed_starts: 0, last_failure: None }
    }
}

/// Where an app stands.
#[derive(Clone)]
pub(crate) enum Phase {
    /// Not running; the next request starts it.
    Stopped,
    /// A process is starting.
    Starting,
    /// At least one process is ready.
    Running,
    /// It failed; the next request starts it again unless the rapid-fail limit blocks that.
    Failed,
    /// The offline file exists: requests get 503 with its contents.
    Offline(Bytes),
}

impl Phase {
    /// The value of the `peregrine_app_state` gauge.
    pub(crate) fn code(&self) -> u64 {
        match self {
            Phase::Stopped => 0,
            Phase::Starting => 1,
            Phase::Running => 2,
            Phase::Failed => 3,
            Phase::Offline(_) => 4,
        }
    }
}

/// Why an app's latest process failed.
#[derive(Debug)]
pub(crate) struct Failure {
    /// What happened, e.g. "exited with exit status: 3 before it was ready".
    pub(crate) what: String,
    /// No restart before this (the rapid-fail limit was passed).
    pub(crate) blocked_until: Option<Instant>,
    /// Where its output was written, if anywhere.
    pub(crate) log: Option<std::path::PathBuf>,
}

impl Failure {
    /// Whether restarts are refused at `now`.
    pub(crate) fn blocks(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|t| now < t)
    }
}

/// A ready process, as the cores see it.
pub(crate) struct Process {
    /// Unique within its app, never reused.
    pub(crate) id: u64,
    pub(crate) pid: u32,
    /// Sent in [`TOKEN_HEADER`] on every request to it.
    pub(crate) token: http::HeaderValue,
    /// How to forward to it.
    pub(crate) upstream: Arc<ProxyConfig>,
    /// Requests forwarded to it whose responses have not ended: a restart waits for them
    /// before stopping it.
    pub(crate) in_flight: AtomicUsize,
}

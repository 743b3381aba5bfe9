//! An app's supervisor: one thread per app, the only writer of its state. It wakes on a
//! message (start, restart, stop) or every [`TICK`] to notice exits, readiness, timeouts
//! and the offline file, and publishes a new [`AppState`] whenever anything changed.

use std::collections::VecDeque;
use std::process::Child;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{error, info, warn};

use super::config::{AppListen, StartMode};
use super::output::Output;
use super::process;
use super::{App, AppState, Failure, Phase, Process};
use crate::sys::child::{self, Tie};

/// How often the supervisor looks at its processes: an exit is noticed within this.
const TICK: Duration = Duration::from_millis(20);
/// How often the offline file is looked for.
const OFFLINE_EVERY: Duration = Duration::from_millis(250);
/// The largest offline page served (the rest is cut).
const MAX_OFFLINE_PAGE: u64 = 1 << 20;
/// Lines of a failed process's output written to the server's log when it has no log file.
const TAIL_LINES: usize = 20;
/// How long a failed process's output may take to be read to its end before it is reported.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

/// What the cores and the server ask of a supervisor.
pub(super) enum Command {
    /// A request is waiting for the app.
    Start,
    /// Replace the running processes without losing a request.
    Restart,
    /// Stop every process and end the thread.
    Stop,
}

/// One process and what the supervisor does with it.
struct Supervised {
    process: Arc<Process>,
    child: Child,
    _tie: Tie,
    /// Its Unix socket, removed once it has exited.
    socket_file: Option<std::path::PathBuf>,
    output: Arc<Output>,
    /// Processes of one generation serve together; a restart starts the next generation.
    generation: u64,
    role: Role,
    started: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Starting,
    Ready,
    /// Replaced: takes no new request; asked to stop once its requests have ended.
    Draining {
        since: Instant,
    },
    /// Asked to stop; killed at `kill_at`.
    Stopping {
        kill_at: Instant,
    },
    /// Killed; waiting to be reaped.
    Killed,
}

struct Supervisor {
    app: Arc<App>,
    procs: Vec<Supervised>,
    /// The ids of the processes started so far (unique in this server process: a reload
    /// may run a new app of the same name beside this one, and the ids name socket files).
    ids: Vec<u64>,
    /// The generation new processes join.
    generation: u64,
    /// The generation whose ready processes take requests (behind `generation` during a
    /// restart, until the new one is ready).
    serving: u64,
    /// Failures within the rapid-fail window.
    failures: VecDeque<Instant>,
    failed_starts: u64,
    last_failure: Option<Arc<Failure>>,
    blocked_until: Option<Instant>,
    /// A start was asked for and not yet made.
    want_start: bool,
    /// An `at_start` app restarts after a failure no sooner than this (backing off).
    start_after: Option<Instant>,
    offline: Option<Bytes>,
    next_offline_check: Instant,
    /// Something changed since the state was last published.
    dirty: bool,
}

/// The supervisor thread's body.
pub(super) fn run(app: Arc<App>, commands: Receiver<Command>) {
    let at_start = app.config.start == StartMode::AtStart;
    let mut s = Supervisor {
        app,
        procs: Vec::new(),
        ids: Vec::new(),
        generation: 0,
        serving: 0,
        failures: VecDeque::new(),
        failed_starts: 0,
        last_failure: None,
        blocked_until: None,
        want_start: at_start,
        start_after: None,
        offline: None,
        next_offline_check: Instant::now(),
        dirty: true,
    };
    loop {
        match commands.recv_timeout(TICK) {
            Ok(Command::Start) => {
                s.app.start_requested.store(false, Ordering::Release);
                s.want_start = true;
            }
            Ok(Command::Restart) => s.restart(),
            Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => return s.stop_all(),
            Err(RecvTimeoutError::Timeout) => {}
        }
        s.turn(Instant::now());
    }
}

impl Supervisor {
    fn turn(&mut self, now: Instant) {
        if now >= self.next_offline_check {
            self.next_offline_check = now + OFFLINE_EVERY;
            self.check_offline(now);
        }
        self.reap(now);
        self.check_starting(now);
        self.finish_restart(now);
        // The cores must see who serves now before a replaced process is asked to stop.
        self.publish_if_changed(now);
        self.wind_down(now);
        self.maybe_start(now);
        self.publish_if_changed(now);
    }

    fn publish_if_changed(&mut self, now: Instant) {
        if self.dirty {
            self.dirty = false;
            self.publish(now);
        }
    }

    /// Notices processes that exited.
    fn reap(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.procs.len() {
            let status = match self.procs[i].child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => {
                    i += 1;
                    continue;
                }
                Err(e) => {
                    warn!(app = %self.app.config.name, error = %e, "cannot query an app process");
                    i += 1;
                    continue;
                }
            };
            let p = self.procs.swap_remove(i);
            self.dirty = true;
            if let Some(path) = &p.socket_file {
                let _ = std::fs::remove_file(path);
            }
            match p.role {
                Role::Draining { .. } | Role::Stopping { .. } | Role::Killed => {
                    info!(app = %self.app.config.name, pid = p.process.pid, %status, "app process stopped");
                }
                Role::Starting => {
                    self.failed_start(&p, now, format!("exited with {status} before it was ready"));
                }
                Role::Ready => {
                    self.app.metrics.crashes.add(1);
                    self.failed(&p, now, format!("exited unexpectedly with {status}"));
                }
            }
        }
    }

    /// Promotes processes that became ready; kills those past `startup_time_limit`.
    fn check_starting(&mut self, now: Instant) {
        let app = Arc::clone(&self.app);
        let config = &app.config;
        let limit = config.startup_time_limit;
        let mut timed_out = Vec::new();
        for p in self.procs.iter_mut().filter(|p| p.role == Role::Starting) {
            if process::is_ready(&p.process, config.ready_path.as_deref()) {
                p.role = Role::Ready;
                let took = now.saturating_duration_since(p.started);
                app.metrics.start_time.observe(took.as_micros() as u64);
                info!(app = %config.name, pid = p.process.pid, ms = took.as_millis() as u64, "app process ready");
                self.dirty = true;
            } else if now.saturating_duration_since(p.started) > limit {
                let _ = child::kill(&mut p.child);
                p.role = Role::Killed;
                timed_out.push((p.process.pid, Arc::clone(&p.output)));
            }
        }
        for (pid, output) in timed_out {
            let what = format!("did not become ready within {}", humantime::format_duration(limit));
            self.note_failed_start(pid, &output, now, what);
        }
    }

    /// A restart's new generation is ready: it takes the requests, the old one drains.
    fn finish_restart(&mut self, now: Instant) {
        if self.serving == self.generation {
            return;
        }
        let want = self.app.config.processes as usize;
        let new: Vec<&Supervised> =
            self.procs.iter().filter(|p| p.generation == self.generation).collect();
        if new.iter().filter(|p| p.role == Role::Ready).count() < want {
            if new.is_empty() {
                // The new generation failed: the old one goes on serving.
                error!(app = %self.app.config.name, "restart failed; the running processes go on serving");
                self.generation = self.serving;
            }
            return;
        }
        for p in &mut self.procs {
            if p.generation == self.serving && matches!(p.role, Role::Ready | Role::Starting) {
                p.role = Role::Draining { since: now };
            }
        }
        info!(app = %self.app.config.name, "restarted: new processes serve, the old ones drain");
        self.serving = self.generation;
        self.dirty = true;
    }

    /// Asks drained processes to stop, and kills those past `shutdown_time_limit`.
    fn wind_down(&mut self, now: Instant) {
        let limit = self.app.config.shutdown_time_limit;
        for p in &mut self.procs {
            match p.role {
                Role::Draining { since } => {
                    // Pairs with the fence in `AppRoute::claim`: the state without this
                    // process was published before this read, so a core that counts a
                    // request on it after the read sees that state and lets it go.
                    std::sync::atomic::fence(Ordering::SeqCst);
                    let idle = p.process.in_flight.load(Ordering::SeqCst) == 0;
                    if idle || now.saturating_duration_since(since) > limit {
                        let _ = child::ask_to_stop(&p.child);
                        p.role = Role::Stopping { kill_at: now + limit };
                    }
                }
                Role::Stopping { kill_at } if now >= kill_at => {
                    warn!(app = %self.app.config.name, pid = p.process.pid, "app process did not stop in time; killing it");
                    let _ = child::kill(&mut p.child);
                    p.role = Role::Killed;
                }
                _ => {}
            }
        }
    }

    /// Starts the processes the app is missing, when they are wanted and allowed.
    fn maybe_start(&mut self, now: Instant) {
        let live = self
            .procs
            .iter()
            .filter(|p| {
                p.generation == self.generation && matches!(p.role, Role::Starting | Role::Ready)
            })
            .count();
        let want = self.app.config.processes as usize;
        // Once any process of the set runs, the set is kept whole.
        if live >= want || !(self.want_start || live > 0) || self.offline.is_some() {
            return;
        }
        if self.blocked_until.is_some_and(|t| now < t) {
            self.want_start = false;
            return;
        }
        if self.start_after.is_some_and(|t| now < t) {
            return;
        }
        self.want_start = false;
        for _ in live..want {
            self.spawn(now);
        }
    }

    fn spawn(&mut self, now: Instant) {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.ids.push(id);
        self.dirty = true;
        match process::launch(&self.app, id) {
            Ok(l) => {
                self.app.metrics.starts.add(1);
                info!(app = %self.app.config.name, pid = l.process.pid, "app process started");
                self.procs.push(Supervised {
                    process: l.process,
                    child: l.child,
                    _tie: l.tie,
                    socket_file: l.socket_file,
                    output: l.output,
                    generation: self.generation,
                    role: Role::Starting,
                    started: now,
                });
            }
            Err(what) => {
                self.failed_starts += 1;
                self.app.metrics.failed_starts.add(1);
                error!(app = %self.app.config.name, "app failed to start: {what}");
                self.record_failure(now, what, None);
            }
        }
    }

    /// Zero-downtime restart: a new generation starts; [`finish_restart`] swaps it in.
    fn restart(&mut self) {
        let serving =
            self.procs.iter().any(|p| p.generation == self.serving && p.role == Role::Ready);
        if !serving || self.serving != self.generation || self.offline.is_some() {
            info!(app = %self.app.config.name, "restart asked for: nothing running to replace");
            return;
        }
        info!(app = %self.app.config.name, "restarting: starting new processes");
        self.generation += 1;
        let now = Instant::now();
        for _ in 0..self.app.config.processes {
            self.spawn(now);
        }
    }

    /// The offline file appeared (stop the app, serve the page) or went away.
    fn check_offline(&mut self, now: Instant) {
        let path = self.app.config.offline_path();
        let page = std::fs::File::open(&path).ok().map(|f| {
            let mut bytes = Vec::new();
            let _ = std::io::Read::read_to_end(
                &mut std::io::Read::take(f, MAX_OFFLINE_PAGE),
                &mut bytes,
            );
            Bytes::from(bytes)
        });
        match (&self.offline, page) {
            (None, Some(page)) => {
                info!(app = %self.app.config.name, file = %path.display(), "offline file found: taking the app offline");
                for p in &mut self.procs {
                    match p.role {
                        Role::Ready => p.role = Role::Draining { since: now },
                        Role::Starting => {
                            let _ = child::kill(&mut p.child);
                            p.role = Role::Killed;
                        }
                        _ => {}
                    }
                }
                self.generation += 1;
                self.serving = self.generation;
                self.want_start = false;
                self.offline = Some(page);
                self.dirty = true;
            }
            (Some(old), Some(page)) if *old != page => {
                self.offline = Some(page);
                self.dirty = true;
            }
            (Some(_), None) => {
                info!(app = %self.app.config.name, "offline file removed: the app starts on demand again");
                self.offline = None;
                self.want_start = self.app.config.start == StartMode::AtStart;
                self.dirty = true;
            }
            _ => {}
        }
    }

    fn failed_start(&mut self, p: &Supervised, now: Instant, what: String) {
        let output = Arc::clone(&p.output);
        self.note_failed_start(p.process.pid, &output, now, what);
    }

    fn note_failed_start(&mut self, pid: u32, output: &Output, now: Instant, what: String) {
        self.failed_starts += 1;
        self.app.metrics.failed_starts.add(1);
        self.report(pid, output, &what);
        self.record_failure(now, what, output.log_path.clone());
        // A failed replacement leaves the serving generation alone.
        if self.generation != self.serving
            && !self
                .procs
                .iter()
                .any(|p| p.generation == self.generation && p.role == Role::Starting)
        {
            for p in &mut self.procs {
                if p.generation == self.generation && p.role == Role::Ready {
                    let _ = child::ask_to_stop(&p.child);
                    p.role = Role::Stopping { kill_at: now + self.app.config.shutdown_time_limit };
                }
            }
            error!(app = %self.app.config.name, "restart failed; the running processes go on serving");
            self.generation = self.serving;
        }
    }

    fn failed(&mut self, p: &Supervised, now: Instant, what: String) {
        self.report(p.process.pid, &p.output, &what);
        self.record_failure(now, what, p.output.log_path.clone());
    }

    /// Logs a failure with the process's last output when it has no log file.
    fn report(&self, pid: u32, output: &Output, what: &str) {
        output.drain(OUTPUT_DRAIN);
        match &output.log_path {
            Some(log) => {
                error!(app = %self.app.config.name, pid, log = %log.display(), "app process {what}")
            }
            None => {
                let lines = output.last_lines(TAIL_LINES);
                error!(
                    app = %self.app.config.name,
                    pid,
                    "app process {what}; its last output:\n{}",
                    lines.join("\n")
                );
            }
        }
    }

    /// Counts a failure in the rapid-fail window; past the limit, restarts stop until the
    /// window has passed.
    fn record_failure(&mut self, now: Instant, what: String, log: Option<std::path::PathBuf>) {
        let window = self.app.config.rapid_fail_window;
        self.failures.push_back(now);
        while self.failures.front().is_some_and(|&t| now.saturating_duration_since(t) > window) {
            self.failures.pop_front();
        }
        if self.failures.len() > self.app.config.rapid_fails_per_minute as usize {
            let until = self.failures[0] + window;
            if self.blocked_until.is_none_or(|t| t < until) {
                error!(
                    app = %self.app.config.name,
                    failures = self.failures.len(),
                    "rapid-fail limit passed: no restart for {}",
                    humantime::format_duration(until.saturating_duration_since(now))
                );
            }
            self.blocked_until = Some(until);
        }
        self.last_failure =
            Some(Arc::new(Failure { what, blocked_until: self.blocked_until, log }));
        self.dirty = true;
        if self.app.config.start == StartMode::AtStart {
            // Restarted without a request, after 250 ms doubled per failure in the window.
            let doublings = (self.failures.len() as u32).saturating_sub(1).min(7);
            self.start_after = Some(now + Duration::from_millis(250 << doublings));
            self.want_start = true;
        }
    }

    fn publish(&mut self, now: Instant) {
        let ready: Vec<Arc<Process>> = self
            .procs
            .iter()
            .filter(|p| p.generation == self.serving && p.role == Role::Ready)
            .map(|p| Arc::clone(&p.process))
            .collect();
        let blocked = self.blocked_until.is_some_and(|t| now < t);
        if !blocked && self.blocked_until.is_some() {
            self.blocked_until = None;
        }
        let phase = if let Some(page) = &self.offline {
            Phase::Offline(page.clone())
        } else if !ready.is_empty() {
            Phase::Running
        } else if blocked {
            Phase::Failed
        } else if self.procs.iter().any(|p| p.role == Role::Starting) {
            Phase::Starting
        } else if self.last_failure.is_some() {
            Phase::Failed
        } else {
            Phase::Stopped
        };
        self.app.state.store(Arc::new(AppState {
            phase,
            ready,
            failed_starts: self.failed_starts,
            last_failure: self.last_failure.clone(),
        }));
    }

    /// Stops every process: asked first, killed after `shutdown_time_limit`.
    fn stop_all(mut self) {
        let limit = self.app.config.shutdown_time_limit;
        for p in &self.procs {
            let _ = child::ask_to_stop(&p.child);
        }
        let deadline = Instant::now() + limit;
        while !self.procs.is_empty() && Instant::now() < deadline {
            std::thread::sleep(TICK);
            self.procs.retain_mut(|p| matches!(p.child.try_wait(), Ok(None)));
        }
        for p in &mut self.procs {
            warn!(app = %self.app.config.name, pid = p.process.pid, "app process did not stop in time; killing it");
            let _ = child::kill(&mut p.child);
            let _ = p.child.wait();
        }
        self.procs.clear();
        if let AppListen::Unix = self.app.config.listen {
            for id in &self.ids {
                let _ = std::fs::remove_file(process::socket_path(&self.app.config.name, *id));
            }
        }
        self.dirty = true;
        self.publish(Instant::now());
        info!(app = %self.app.config.name, "app stopped");
    }
}

//! Per-app series on `/metrics`: state, starts, crashes, failed starts, restarts refused by
//! the rapid-fail limit, requests waiting for a start, and the start time.

use super::App;
use crate::metrics::{metric_owned, Counter, Histogram};

/// One app's counters (written by its supervisor, but for `refused_starts`).
#[derive(Default)]
pub(crate) struct AppMetrics {
    pub(crate) starts: Counter,
    pub(crate) crashes: Counter,
    pub(crate) failed_starts: Counter,
    /// Requests that would have started the app, refused by the rapid-fail limit (counted
    /// by every core).
    pub(crate) refused_starts: std::sync::atomic::AtomicU64,
    /// Spawn to ready.
    pub(crate) start_time: Histogram,
}

/// Writes the app series (nothing when no app is hosted).
pub(crate) fn render(out: &mut String) {
    let apps = super::hosted();
    if apps.is_empty() {
        return;
    }
    let label = |a: &App| format!("app=\"{}\"", a.config.name);
    let series = |f: &dyn Fn(&App) -> u64| -> Vec<(String, u64)> {
        apps.iter().map(|a| (label(a), f(a))).collect()
    };
    metric_owned(
        out,
        "peregrine_app_state",
        "gauge",
        "0 stopped, 1 starting, 2 running, 3 failed, 4 offline.",
        &series(&|a| a.state.load().phase.code()),
    );
    metric_owned(
        out,
        "peregrine_app_processes_ready",
        "gauge",
        "Processes taking requests.",
        &series(&|a| a.state.load().ready.len() as u64),
    );
    metric_owned(
        out,
        "peregrine_app_starts_total",
        "counter",
        "Processes started.",
        &series(&|a| a.metrics.starts.get()),
    );
    metric_owned(
        out,
        "peregrine_app_crashes_total",
        "counter",
        "Ready processes that exited on their own.",
        &series(&|a| a.metrics.crashes.get()),
    );
    metric_owned(
        out,
        "peregrine_app_failed_starts_total",
        "counter",
        "Starts that failed (exit before ready, startup_time_limit, spawn error).",
        &series(&|a| a.metrics.failed_starts.get()),
    );
    metric_owned(
        out,
        "peregrine_app_restarts_refused_total",
        "counter",
        "Requests that would have started the app, answered 502 by the rapid-fail limit.",
        &series(&|a| a.metrics.refused_starts.load(std::sync::atomic::Ordering::Relaxed)),
    );
    metric_owned(
        out,
        "peregrine_app_queued_requests",
        "gauge",
        "Requests waiting for the app to start.",
        &series(&|a| u64::from(a.queued.load(std::sync::atomic::Ordering::Relaxed))),
    );
    let name = "peregrine_app_start_seconds";
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} Time from spawn to ready.\n# TYPE {name} histogram");
    for a in apps.iter() {
        Histogram::render(out, name, &label(a), &[&a.metrics.start_time]);
    }
}

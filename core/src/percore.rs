//! What one reactor core owns, in one place: a single thread-local holding each module's
//! per-core state. Tasks never hold a reference to it across an await; each module reaches
//! only its own field, through the accessor next to it here (smoltcp passes its context in;
//! a thread-per-core runtime's context is the thread).
//!
//! Ownership, field by field: the runtime (`rt`) owns the driver and op table, the clock, the
//! shutdown flag, the timers, the run queue and the buffer pools; `date` owns the cached
//! `Date`; `answer_start` the start of the last fixed answer's head; `conn` owns the count of
//! TLS handshakes running; `metrics` owns the handle to this core's counters. The reactor's
//! teardown (`rt::teardown`) empties what holds tasks before the thread ends, so nothing
//! reaches back here while the thread-local is being destroyed.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use async_task::Runnable;
use bytes::BytesMut;

use crate::answer_start::AnswerStarts;
use crate::date::DateCache;
use crate::metrics::CoreMetrics;
use crate::rt::timer::Timers;
use crate::rt::Core;
use crate::sys::driver::SendBuf;

/// One core's state. See the module doc for who owns which field.
pub(crate) struct PerCore {
    /// `rt`: the IO driver and its op table (`None` until the reactor installs them).
    pub(crate) reactor: RefCell<Option<Core>>,
    /// `rt`: the time of this reactor turn.
    pub(crate) now: Cell<Option<Instant>>,
    /// `rt`: a graceful shutdown has begun.
    pub(crate) shutting_down: Cell<bool>,
    /// `rt::timer`: every timer of this core.
    pub(crate) timers: RefCell<Timers>,
    /// `rt::executor`: tasks ready to run.
    pub(crate) queue: RefCell<VecDeque<Runnable>>,
    /// `rt::io`: spare receive/output buffers.
    pub(crate) buffers: RefCell<Vec<BytesMut>>,
    /// `rt::io`: spare send lists.
    pub(crate) send_lists: RefCell<Vec<SendBuf>>,
    /// `rt::blocking`: this core's inbox and the tasks waiting on disk jobs.
    pub(crate) blocking: crate::rt::blocking::Waiters,
    /// `date`: the cached `Date` value.
    pub(crate) date: RefCell<DateCache>,
    /// `answer_start`: the start of the last fixed answer's head, per protocol.
    pub(crate) answer_starts: RefCell<AnswerStarts>,
    /// `conn`: TLS handshakes running (capped per core).
    pub(crate) tls_handshakes: Cell<usize>,
    /// `metrics`: this core's counters.
    pub(crate) metrics: OnceCell<Arc<CoreMetrics>>,
    /// `access_log`: this core writes an access log (its settings have one).
    pub(crate) access_log: Cell<bool>,
}

impl PerCore {
    const fn new() -> PerCore {
        PerCore {
            reactor: RefCell::new(None),
            now: Cell::new(None),
            shutting_down: Cell::new(false),
            timers: RefCell::new(Timers::new()),
            queue: RefCell::new(VecDeque::new()),
            buffers: RefCell::new(Vec::new()),
            send_lists: RefCell::new(Vec::new()),
            blocking: crate::rt::blocking::Waiters::new(),
            date: RefCell::new(DateCache::new()),
            answer_starts: RefCell::new(AnswerStarts::new()),
            tls_handshakes: Cell::new(0),
            metrics: OnceCell::new(),
            access_log: Cell::new(false),
        }
    }
}

thread_local! {
    static PER_CORE: PerCore = const { PerCore::new() };
}

/// Runs `f` with this core's state.
pub(crate) fn with<R>(f: impl FnOnce(&PerCore) -> R) -> R {
    PER_CORE.with(f)
}

/// Like [`with`], but `None` once the thread-local is gone (drops during thread exit).
pub(crate) fn try_with<R>(f: impl FnOnce(&PerCore) -> R) -> Option<R> {
    PER_CORE.try_with(f).ok()
}

//! The per-core runtime: a completion driver, an executor and timers, one of each per
//! reactor thread, kept in the core's state (`percore`) so tasks never hold a reference to
//! them across an await.
//!
//! One turn of a reactor ([`run_tasks`], then [`poll_io`]):
//! 1. run the tasks that are queued (bounded: what was queued when the turn began);
//! 2. hand submissions to the kernel and wait for completions, no longer than the next
//!    timer (not at all if tasks are still queued);
//! 3. file completions into their op slots (waking their tasks) or pass accepts up;
//! 4. read the clock once, refresh the cached `Date`, fire due timers.

pub(crate) mod blocking;
pub(crate) mod executor;
pub(crate) mod io;
pub(crate) mod quiet;
pub(crate) mod timer;

use crate::sys::{OwnedSocket, RawSocket};
use std::time::{Duration, Instant};

use crate::percore;
use crate::sys::driver::{Driver, OpId, Outcome};

/// A core's driver and its op table (its field in `percore`).
pub(crate) struct Core {
    driver: Driver,
    ops: io::Ops,
}

/// Tokens at or above this are listener accepts; below are op-table slots.
pub(crate) const ACCEPT_TOKEN_BASE: u64 = 1 << 62;

/// Boxes the future `make` builds, in memory allocated before it is built: a future built
/// on the stack and then boxed is copied whole (every byte of its largest state, several
/// KiB for a request's exchange), which cost a `memcpy` of that size per request.
#[inline(always)]
pub(crate) fn boxed<F: std::future::Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    let slot = Box::<F>::new_uninit();
    Box::into_pin(Box::write(slot, make()))
}

/// Stores `cx`'s waker in `slot` unless the one there already wakes the same task (no
/// clone, no refcount traffic on the common re-poll).
pub(crate) fn store_waker(slot: &mut Option<std::task::Waker>, cx: &std::task::Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// Installs this thread's driver.
pub(crate) fn install(driver: Driver) {
    blocking::install(driver.waker());
    percore::with(|p| *p.reactor.borrow_mut() = Some(Core { driver, ops: io::Ops::default() }));
    percore::with(|p| p.now.set(Some(Instant::now())));
    crate::date::refresh();
}

pub(crate) fn with_driver<R>(f: impl FnOnce(&mut Driver, &mut io::Ops) -> R) -> R {
    percore::with(|p| {
        let mut core = p.reactor.borrow_mut();
        let core = core.as_mut().expect("no reactor on this thread");
        f(&mut core.driver, &mut core.ops)
    })
}

/// Like [`with_driver`], but does nothing during teardown.
pub(crate) fn try_with_driver(f: impl FnOnce(&mut Driver, &mut io::Ops)) {
    percore::try_with(|p| {
        if let Ok(mut core) = p.reactor.try_borrow_mut() {
            if let Some(core) = core.as_mut() {
                f(&mut core.driver, &mut core.ops);
            }
        }
    });
}

/// The time at the start of this reactor turn (the clock is read once per turn).
pub(crate) fn now() -> Instant {
    percore::with(|p| match p.now.get() {
        Some(t) => t,
        None => {
            let t = Instant::now();
            p.now.set(Some(t));
            t
        }
    })
}

/// Whether this core has begun a graceful shutdown.
pub(crate) fn shutting_down() -> bool {
    percore::with(|p| p.shutting_down.get())
}

/// How long a connection with no request in flight still waits for one once a graceful
/// shutdown has begun: a client in a request loop sends its next one within this, and a
/// client that has just connected is sending its first (closing under it would fail that
/// request). One that is truly idle is closed after it, so a shutdown waits at most this
/// long for idle clients.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Starts accepting on `listener`; completions come back through [`turn`]'s `on_accept`.
pub(crate) fn accept(listener: RawSocket, index: usize) -> OpId {
    with_driver(|d, _| d.accept(listener, ACCEPT_TOKEN_BASE + index as u64))
}

/// Cancels an operation (e.g. a listener's accept).
pub(crate) fn cancel(op: OpId) {
    try_with_driver(|d, _| d.cancel(op));
}

/// What an accept completion carried: the listener index, the connection or error, and
/// whether the accept is still armed.
pub(crate) type AcceptEvent = (usize, std::io::Result<OwnedSocket>, bool);

/// First half of a reactor turn: runs the tasks queued now. Returns how many ran.
pub(crate) fn run_tasks() -> usize {
    executor::run_queued()
}

/// Second half of a reactor turn: waits for IO (no longer than the next timer or
/// `max_wait`, and not at all if tasks are queued), files completions, fires timers.
/// Returns how many completions arrived.
pub(crate) fn poll_io(
    max_wait: Option<Duration>,
    accepted: &mut Vec<AcceptEvent>,
) -> std::io::Result<usize> {
    let timeout = if executor::has_queued() {
        Some(Duration::ZERO)
    } else {
        let timer = timer::with(|t| t.next_deadline()).map(|d| d.saturating_duration_since(now()));
        match (timer, max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    };
    let mut completions = 0;
    percore::with(|p| {
        let mut core = p.reactor.borrow_mut();
        let Core { driver, ops } = core.as_mut().expect("no reactor on this thread");
        driver.wait(timeout, &mut |completion| {
            completions += 1;
            if completion.token >= ACCEPT_TOKEN_BASE {
                if let Outcome::Accepted { result, more } = completion.outcome {
                    accepted.push(((completion.token - ACCEPT_TOKEN_BASE) as usize, result, more));
                }
            } else {
                ops.complete(completion);
            }
        })
    })?;
    blocking::deliver();
    let t = Instant::now();
    percore::with(|p| p.now.set(Some(t)));
    crate::date::refresh();
    timer::with(|timers| timers.fire_due(t));
    Ok(completions)
}

/// Begins this core's graceful shutdown: idle connections are woken to close.
pub(crate) fn begin_shutdown() {
    percore::with(|p| p.shutting_down.set(true));
    timer::with(|t| t.fire_idle());
}

/// Tears the runtime down: drops every task (aborting its connection), then the driver,
/// which cancels what is still in flight and waits for the kernel to let go of buffers.
pub(crate) fn teardown() {
    for _ in 0..8 {
        // Dropping a waker of a detached task can reschedule it once so it can be dropped.
        let wakers: Vec<_> = percore::with(|p| {
            p.reactor.borrow_mut().as_mut().map(|core| core.ops.take_wakers()).unwrap_or_default()
        });
        drop(wakers);
        drop(timer::with(|t| t.clear()));
        if executor::drop_queued() == 0 {
            break;
        }
    }
    let core = percore::with(|p| p.reactor.borrow_mut().take());
    drop(core);
}

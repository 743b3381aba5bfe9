//! Work that may block on the disk (opening and statting files, reading pages that may not be
//! in the page cache) runs on a small pool of threads shared by every core, never on a
//! reactor: one cold file must not stall the other connections of its core.
//!
//! ```text
//!   core task ── run(job) ──► pool queue ──► pool thread runs job, keeps the result,
//!       ▲                                    pushes the waiter's index to the core's inbox,
//!       │                                    wakes the core's driver
//!       └── woken by the core's next turn (deliver) ◄──┘
//! ```
//!
//! The result comes back through a shared cell; the core is told which waiter to wake
//! through its inbox, because tasks' wakers are core-local (`async_task::spawn_local`) and
//! must never be fired from another thread.
//!
//! The pool starts its threads on first use (a server that serves no files starts none),
//! up to [`set_threads`]' count (default [`DEFAULT_THREADS`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use slab::Slab;

use crate::percore;
use crate::sys::driver::DriverWaker;

/// Pool threads when the config says nothing: enough to overlap a few cold reads per core
/// on a small machine (nginx's `aio threads` default is 32 for the whole server).
pub const DEFAULT_THREADS: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

/// The shared pool: a queue and the threads that drain it.
struct Pool {
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
    /// Threads started so far.
    started: AtomicUsize,
}

static POOL: Pool = Pool {
    queue: Mutex::new(VecDeque::new()),
    ready: Condvar::new(),
    started: AtomicUsize::new(0),
};
static THREADS: AtomicUsize = AtomicUsize::new(DEFAULT_THREADS);

/// Sets how many threads the pool may start (before it is first used).
pub fn set_threads(n: usize) {
    THREADS.store(n.max(1), Ordering::Relaxed);
}

impl Pool {
    fn submit(&'static self, job: Job) {
        let idle_enough = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.push_back(job);
            queue.len() <= 1
        };
        let started = self.started.load(Ordering::Relaxed);
        if !idle_enough || started == 0 {
            self.grow();
        }
        self.ready.notify_one();
    }

    /// Starts one more thread, unless the pool is at its size.
    fn grow(&'static self) {
        let limit = THREADS.load(Ordering::Relaxed);
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        if n >= limit {
            self.started.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let spawned = std::thread::Builder::new()
            .name(format!("peregrine-disk-{n}"))
            .stack_size(256 * 1024)
            .spawn(move || self.work());
        if spawned.is_err() {
            self.started.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn work(&self) {
        let delay = test_delay();
        loop {
            let job = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    match queue.pop_front() {
                        Some(job) => break job,
                        None => queue = self.ready.wait(queue).unwrap_or_else(|e| e.into_inner()),
                    }
                }
            };
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
            // A panicking job loses only its own result (its waiter then sees the job gone).
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        }
    }
}

/// Debug builds only: `PEREGRINE_TEST_DISK_DELAY_MS` delays every disk job, standing in for a
/// slow disk in the tests that prove a reactor keeps serving while its files wait.
fn test_delay() -> Option<std::time::Duration> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let ms: u64 = std::env::var("PEREGRINE_TEST_DISK_DELAY_MS").ok()?.parse().ok()?;
    Some(std::time::Duration::from_millis(ms))
}

/// One core's inbox: the waiters whose jobs finished, and how to wake the core.
pub(crate) struct Inbox {
    done: Mutex<Vec<usize>>,
    pending: AtomicBool,
    waker: DriverWaker,
}

impl Inbox {
    fn post(&self, index: usize) {
        self.done.lock().unwrap_or_else(|e| e.into_inner()).push(index);
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }
}

/// This core's side: its inbox and the wakers of the tasks waiting on jobs.
pub(crate) struct Waiters {
    inbox: OnceLock<Arc<Inbox>>,
    wakers: std::cell::RefCell<Slab<Option<Waker>>>,
}

impl Waiters {
    pub(crate) const fn new() -> Waiters {
        Waiters { inbox: OnceLock::new(), wakers: std::cell::RefCell::new(Slab::new()) }
    }
}

/// Sets this core's inbox up (when its driver is installed).
pub(crate) fn install(waker: DriverWaker) {
    let inbox = Arc::new(Inbox { done: Mutex::new(Vec::new()), pending: false.into(), waker });
    percore::with(|p| {
        let _ = p.blocking.inbox.set(inbox);
    });
}

/// Wakes the tasks whose jobs finished (once per reactor turn; one atomic load when none).
pub(crate) fn deliver() {
    percore::with(|p| {
        let Some(inbox) = p.blocking.inbox.get() else { return };
        // A plain load first: most turns have nothing, and a swap is a locked instruction.
        if !inbox.pending.load(Ordering::Acquire) || !inbox.pending.swap(false, Ordering::AcqRel) {
            return;
        }
        let done = std::mem::take(&mut *inbox.done.lock().unwrap_or_else(|e| e.into_inner()));
        let mut wakers = p.blocking.wakers.borrow_mut();
        for index in done {
            if let Some(w) = wakers.get_mut(index).and_then(Option::take) {
                w.wake();
            }
        }
    });
}

/// The result cell a job fills.
type Cell<T> = Arc<Mutex<Option<T>>>;

/// Runs `job` on the pool; resolves to its result. `None` if the job panicked.
pub(crate) fn run<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Blocking<T> {
    let (inbox, index) = percore::with(|p| {
        let inbox = Arc::clone(p.blocking.inbox.get().expect("no reactor on this thread"));
        (inbox, p.blocking.wakers.borrow_mut().insert(None))
    });
    let cell: Cell<T> = Arc::new(Mutex::new(None));
    let shared = Arc::clone(&cell);
    let finished = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&finished);
    POOL.submit(Box::new(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        if let Ok(out) = out {
            *shared.lock().unwrap_or_else(|e| e.into_inner()) = Some(out);
        }
        flag.store(true, Ordering::Release);
        inbox.post(index);
    }));
    Blocking { index: Some(index), cell, finished }
}

/// A job running on the pool (see [`run`]). Dropping it before the end does not stop the
/// job; its result is dropped when it comes.
pub(crate) struct Blocking<T> {
    index: Option<usize>,
    cell: Cell<T>,
    finished: Arc<AtomicBool>,
}

impl<T> Future for Blocking<T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let index = self.index.expect("Blocking polled after completion");
        if self.finished.load(Ordering::Acquire) {
            let out = self.cell.lock().unwrap_or_else(|e| e.into_inner()).take();
            self.index = None;
            percore::with(|p| p.blocking.wakers.borrow_mut().try_remove(index));
            return Poll::Ready(out);
        }
        percore::with(|p| {
            if let Some(slot) = p.blocking.wakers.borrow_mut().get_mut(index) {
                crate::rt::store_waker(slot, cx);
            }
        });
        Poll::Pending
    }
}

impl<T> Drop for Blocking<T> {
    fn drop(&mut self) {
        if let Some(index) = self.index {
            // The index may be reused at once: a late post then wakes its new owner once,
            // which re-polls and waits again (a spurious wake, never a lost one).
            percore::try_with(|p| {
                if let Ok(mut wakers) = p.blocking.wakers.try_borrow_mut() {
                    wakers.try_remove(index);
                }
            });
        }
    }
}

//! A single-threaded executor: one run queue per core, tasks built by `async-task`.
//!
//! Tasks never leave their core, so they may hold `!Send` state (`Rc`, `RefCell`) and the
//! queue needs no lock. A waker fired from this core pushes onto the queue; nothing wakes a
//! task from another core (cross-core signals go through the driver's waker instead).

use std::future::Future;

use async_task::Runnable;

use crate::percore;

/// Spawns a task on this core's executor; it runs on the next turn.
pub(crate) fn spawn<F: Future<Output = ()> + 'static>(future: F) {
    let schedule = |runnable: Runnable| percore::with(|p| p.queue.borrow_mut().push_back(runnable));
    // `spawn_local` checks that the task is polled and dropped on this thread only.
    let (runnable, task) = async_task::spawn_local(future, schedule);
    runnable.schedule();
    task.detach();
}

/// Spawns a task on this core's executor and polls it once right away, from inside the
/// caller's own poll: for a task that takes over from the caller (a connection's protocol
/// loop after its handshake), so the hand-over costs no reactor turn.
pub(crate) fn spawn_now<F: Future<Output = ()> + 'static>(future: F) {
    let schedule = |runnable: Runnable| percore::with(|p| p.queue.borrow_mut().push_back(runnable));
    let (runnable, task) = async_task::spawn_local(future, schedule);
    task.detach();
    runnable.run();
}

/// Runs the tasks queued when the call starts; tasks they wake run on the next turn, so one
/// busy connection cannot starve the driver. Returns how many ran.
pub(crate) fn run_queued() -> usize {
    let n = percore::with(|p| p.queue.borrow().len());
    for _ in 0..n {
        let Some(runnable) = percore::with(|p| p.queue.borrow_mut().pop_front()) else { break };
        runnable.run();
    }
    n
}

/// Whether tasks are waiting to run.
pub(crate) fn has_queued() -> bool {
    percore::with(|p| !p.queue.borrow().is_empty())
}

/// Drops every queued task without running it (teardown: a dropped runnable cancels its
/// task, dropping its future).
pub(crate) fn drop_queued() -> usize {
    let drained: Vec<Runnable> = percore::with(|p| p.queue.borrow_mut().drain(..).collect());
    let n = drained.len();
    drop(drained);
    n
}

//! Per-core timers with lazy re-arming.
//!
//! A connection owns one [`Timer`] for its whole life and moves its deadline on every request
//! (keep-alive, headers, body rate, send rate). Pushing a heap entry per move would leave one
//! stale entry per request for up to 130 s (millions under load), so the heap holds at most
//! the *earliest* time each timer may fire; moving a deadline later only updates the entry,
//! and when the stale heap entry pops, the timer is re-pushed at its real deadline (nginx's
//! lazy timer idea). Moving a deadline earlier pushes a new entry.

use crate::percore;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use slab::Slab;

#[derive(Default)]
struct Entry {
    deadline: Option<Instant>,
    /// The time of this entry's live heap record, if any.
    scheduled: Option<Instant>,
    fired: bool,
    /// Fired by a graceful shutdown while the owner waits idle.
    idle: bool,
    waker: Option<Waker>,
    generation: u64,
}

pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    entries: Slab<Entry>,
    next_generation: u64,
}

impl Timers {
    /// No timers (a core's field in `percore`).
    pub(crate) const fn new() -> Timers {
        Timers { heap: BinaryHeap::new(), entries: Slab::new(), next_generation: 0 }
    }

    fn schedule(&mut self, id: usize, at: Instant) {
        let e = &mut self.entries[id];
        if e.scheduled.is_none_or(|s| at < s) {
            e.scheduled = Some(at);
            self.heap.push(Reverse((at, id, e.generation)));
        }
    }

    /// The earliest time something may fire (possibly a stale record: waking for it is
    /// harmless).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Fires every timer whose deadline is at or before `now`.
    pub(crate) fn fire_due(&mut self, now: Instant) {
        while let Some(&Reverse((at, id, generation))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            let Some(e) = self.entries.get_mut(id) else { continue };
            if e.generation != generation || e.scheduled != Some(at) {
                continue; // superseded record
            }
            e.scheduled = None;
            match e.deadline {
                Some(d) if d <= now => {
                    e.fired = true;
                    e.deadline = None;
                    if let Some(w) = e.waker.take() {
                        w.wake();
                    }
                }
                Some(d) => self.schedule(id, d),
                None => {}
            }
        }
    }

    /// Fires every timer whose owner said it is idle (graceful shutdown).
    pub(crate) fn fire_idle(&mut self) {
        for (_, e) in self.entries.iter_mut() {
            if e.idle {
                e.fired = true;
                if let Some(w) = e.waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// Fires the idle timer due soonest (the connection idle the longest, as every idle wait
    /// runs for the same keep-alive timeout); false when no owner waits idle. Admission
    /// under pressure: a new connection takes that one's place.
    pub(crate) fn fire_oldest_idle(&mut self) -> bool {
        let oldest = self
            .entries
            .iter_mut()
            .filter(|(_, e)| e.idle && !e.fired)
            .min_by_key(|(_, e)| e.deadline);
        let Some((_, e)) = oldest else { return false };
        e.fired = true;
        if let Some(w) = e.waker.take() {
            w.wake();
        }
        true
    }

    /// Drops every stored waker (teardown).
    pub(crate) fn clear(&mut self) -> Vec<Waker> {
        self.entries.iter_mut().filter_map(|(_, e)| e.waker.take()).collect()
    }
}

pub(crate) fn with<R>(f: impl FnOnce(&mut Timers) -> R) -> R {
    percore::with(|p| f(&mut p.timers.borrow_mut()))
}

/// One resettable deadline, owned by a task.
#[derive(Debug)]
pub(crate) struct Timer {
    id: usize,
}

impl Timer {
    pub(crate) fn new() -> Timer {
        with(|t| {
            t.next_generation += 1;
            let generation = t.next_generation;
            Timer { id: t.entries.insert(Entry { generation, ..Entry::default() }) }
        })
    }

    /// Sets the deadline (`None`: never). Clears a previous firing.
    pub(crate) fn set(&self, deadline: Option<Instant>) {
        with(|t| {
            let e = &mut t.entries[self.id];
            e.deadline = deadline;
            e.fired = false;
            if let Some(d) = deadline {
                t.schedule(self.id, d);
            }
        })
    }

    /// Marks the owner as idle (a graceful shutdown fires idle timers at once).
    pub(crate) fn set_idle(&self, idle: bool) {
        with(|t| t.entries[self.id].idle = idle)
    }

    /// Ready once the deadline has passed (or an idle timer was fired by shutdown).
    pub(crate) fn poll_fired(&self, cx: &mut Context<'_>) -> Poll<()> {
        with(|t| {
            let e = &mut t.entries[self.id];
            if e.fired {
                Poll::Ready(())
            } else {
                crate::rt::store_waker(&mut e.waker, cx);
                Poll::Pending
            }
        })
    }
}

impl Timer {
    /// Runs `op` until it finishes (`Some`) or this timer passes `deadline` (`None`; `op` is
    /// then dropped, which cancels it). The deadline is cleared afterwards.
    pub(crate) fn run_until<F: Future>(
        &self,
        op: F,
        deadline: Option<Instant>,
    ) -> RunUntil<&Timer, F> {
        RunUntil { timer: self, op, deadline, armed: false }
    }
}

pin_project_lite::pin_project! {
    /// [`Timer::run_until`]'s future. A named type rather than an `async fn`: an async wrapper
    /// keeps its argument and the awaited copy side by side (rust-lang/rust#62958), so every
    /// layer of deadline-wrapping doubled the size of a connection's idle future.
    pub(crate) struct RunUntil<T, F> {
        timer: T,
        #[pin]
        op: F,
        deadline: Option<Instant>,
        armed: bool,
    }
}

impl<F> RunUntil<Timer, F> {
    /// The timer this wait owns.
    pub(crate) fn timer(&self) -> &Timer {
        &self.timer
    }
}

impl<T: std::borrow::Borrow<Timer>, F: Future> Future for RunUntil<T, F> {
    type Output = Option<F::Output>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let timer = this.timer.borrow();
        if !*this.armed {
            *this.armed = true;
            timer.set(*this.deadline);
        }
        if let Poll::Ready(r) = this.op.poll(cx) {
            timer.set(None);
            return Poll::Ready(Some(r));
        }
        if this.deadline.is_some() && timer.poll_fired(cx).is_ready() {
            timer.set(None);
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

/// Runs `op` until `deadline` with a timer of its own (for code without a connection timer).
pub(crate) fn timeout<F: Future>(deadline: Instant, op: F) -> RunUntil<Timer, F> {
    RunUntil { timer: Timer::new(), op, deadline: Some(deadline), armed: false }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // During teardown the timer table may already be borrowed or gone.
        percore::try_with(|p| {
            if let Ok(mut t) = p.timers.try_borrow_mut() {
                if t.entries.contains(self.id) {
                    t.entries.remove(self.id);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;
    use std::time::Duration;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn moving_a_deadline_later_does_not_grow_the_heap() {
        let t0 = Instant::now();
        let timer = Timer::new();
        for i in 1..1000u64 {
            timer.set(Some(t0 + Duration::from_secs(130) + Duration::from_millis(i)));
        }
        assert_eq!(with(|t| t.heap.len()), 1);
    }

    #[test]
    fn fires_at_the_latest_deadline_not_the_first() {
        let t0 = Instant::now();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let timer = Timer::new();
        timer.set(Some(t0 + Duration::from_secs(1)));
        timer.set(Some(t0 + Duration::from_secs(5)));
        assert!(timer.poll_fired(&mut cx).is_pending());
        with(|t| t.fire_due(t0 + Duration::from_secs(2)));
        assert!(timer.poll_fired(&mut cx).is_pending(), "fired at the superseded deadline");
        assert_eq!(with(|t| t.next_deadline()), Some(t0 + Duration::from_secs(5)));
        with(|t| t.fire_due(t0 + Duration::from_secs(5)));
        assert!(timer.poll_fired(&mut cx).is_ready());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn moving_a_deadline_earlier_fires_early() {
        let t0 = Instant::now();
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        let timer = Timer::new();
        timer.set(Some(t0 + Duration::from_secs(10)));
        timer.set(Some(t0 + Duration::from_secs(1)));
        with(|t| t.fire_due(t0 + Duration::from_secs(1)));
        assert!(timer.poll_fired(&mut cx).is_ready());
    }

    #[test]
    fn idle_timers_fire_on_shutdown_and_busy_ones_do_not() {
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        let (idle, busy) = (Timer::new(), Timer::new());
        idle.set_idle(true);
        assert!(idle.poll_fired(&mut cx).is_pending());
        with(|t| t.fire_idle());
        assert!(idle.poll_fired(&mut cx).is_ready());
        assert!(busy.poll_fired(&mut cx).is_pending());
    }
}

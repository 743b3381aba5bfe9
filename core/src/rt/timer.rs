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
use std::num::NonZeroU64;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

/// A time as the heap keeps it: nanoseconds after the table's base, plus one. Every waiting
/// connection has a heap record, so its size is part of what an idle connection costs: a
/// record of a `Tick` and two `u32`s is half of one with an `Instant` and two words. Entries
/// keep `Instant`s, so moving a deadline (several times per request) converts nothing; only
/// a push onto the heap does.
type Tick = NonZeroU64;

#[derive(Default)]
struct Entry {
    deadline: Option<Instant>,
    /// The time of this entry's live heap record, if any.
    scheduled: Option<Instant>,
    waker: Option<Waker>,
    generation: u32,
    fired: bool,
    /// Fired by a graceful shutdown while the owner waits idle.
    idle: bool,
}

pub(crate) struct Timers {
    /// Earliest first: (time, entry, the entry's generation).
    heap: BinaryHeap<Reverse<(Tick, u32, u32)>>,
    entries: Slab<Entry>,
    /// Entries no [`Timer`] owns, kept with their heap records: the next timer made takes
    /// one over. A request's own deadline (`timeout`, made and dropped per request) then
    /// moves a record that is already there instead of pushing one, and the heap stays as
    /// large as the timers alive at once rather than growing with the request rate times
    /// the timeout (a dropped timer's record could otherwise only leave at its time).
    spare: Vec<usize>,
    next_generation: u32,
    /// What ticks count from: set at first use, an hour early, so no deadline computed from a
    /// slightly stale "now" falls before it.
    base: Option<Instant>,
}

impl Timers {
    /// No timers (a core's field in `percore`).
    pub(crate) const fn new() -> Timers {
        Timers {
            heap: BinaryHeap::new(),
            entries: Slab::new(),
            spare: Vec::new(),
            next_generation: 0,
            base: None,
        }
    }

    fn base(&mut self) -> Instant {
        *self.base.get_or_insert_with(|| {
            let now = Instant::now();
            now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
        })
    }

    /// `t` as a tick (a time before the base counts as the base: already due).
    fn tick(&mut self, t: Instant) -> Tick {
        let nanos = t.saturating_duration_since(self.base()).as_nanos();
        NonZeroU64::new(u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1).expect("plus one")
    }

    /// The time `tick` stands for.
    fn instant(&self, tick: Tick) -> Instant {
        let base = self.base.expect("a tick implies a base");
        base + Duration::from_nanos(tick.get() - 1)
    }

    fn schedule(&mut self, id: usize, at: Instant) {
        let e = &mut self.entries[id];
        if e.scheduled.is_none_or(|s| at < s) {
            e.scheduled = Some(at);
            let generation = e.generation;
            let tick = self.tick(at);
            self.heap.push(Reverse((tick, id as u32, generation)));
        }
    }

    /// The earliest time something may fire (possibly a stale record: waking for it is
    /// harmless).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _, _))| self.instant(*t))
    }

    /// Fires every timer whose deadline is at or before `now`.
    pub(crate) fn fire_due(&mut self, now: Instant) {
        if self.heap.is_empty() {
            return;
        }
        let now_tick = self.tick(now);
        while let Some(&Reverse((tick, id, generation))) = self.heap.peek() {
            if tick > now_tick {
                break;
            }
            self.heap.pop();
            let id = id as usize;
            let Some(scheduled) = self.entries.get(id).and_then(|e| e.scheduled) else { continue };
            let live = self.entries[id].generation == generation && self.tick(scheduled) == tick;
            if !live {
                continue; // superseded record
            }
            let e = &mut self.entries[id];
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
            if let Some(id) = t.spare.pop() {
                // Reset when it was given up (see `Drop`); its heap record, if any, is kept.
                return Timer { id };
            }
            t.next_generation = t.next_generation.wrapping_add(1);
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

impl<T: std::borrow::Borrow<Timer>, F: Future> Future for RunUntil<T, F> {
    type Output = Option<F::Output>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let timer = this.timer.borrow();
        // The operation first: one that is ready at once (a receive or send made on the
        // spot) never arms the timer.
        if let Poll::Ready(r) = this.op.poll(cx) {
            if *this.armed {
                timer.set(None);
            }
            return Poll::Ready(Some(r));
        }
        if !*this.armed {
            *this.armed = true;
            timer.set(*this.deadline);
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
                if let Some(e) = t.entries.get_mut(self.id) {
                    // Kept for the next timer, with its heap record (see `Timers::spare`).
                    e.deadline = None;
                    e.waker = None;
                    e.fired = false;
                    e.idle = false;
                    t.spare.push(self.id);
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
    fn timers_made_and_dropped_per_request_do_not_grow_the_heap() {
        let t0 = Instant::now();
        let before = with(|t| t.heap.len());
        for i in 1..1000u64 {
            let timer = Timer::new();
            timer.set(Some(t0 + Duration::from_secs(60) + Duration::from_millis(i)));
        }
        assert!(with(|t| t.heap.len()) <= before + 1);
        // A taken-over entry starts clean: no deadline, not fired.
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let timer = Timer::new();
        with(|t| t.fire_due(t0 + Duration::from_secs(120)));
        assert!(timer.poll_fired(&mut Context::from_waker(&waker)).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
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

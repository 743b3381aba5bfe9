//! Flow-control windows (RFC 9113 §5.2, §6.9).

use crate::h2::error::{go_away, reset, Error, Reason};
use crate::h2::frame::StreamId;

/// The largest window a WINDOW_UPDATE may produce, 2^31 − 1 (§6.9.1).
pub(crate) const MAX_WINDOW: i64 = (1 << 31) - 1;

/// The initial window of every stream and of the connection before SETTINGS (§6.9.2).
pub(crate) const DEFAULT_WINDOW: u32 = 65_535;

/// A send window: what the peer lets us send. Signed because a SETTINGS change can shrink it
/// below zero (§6.9.2: "can become negative").
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendWindow(i64);

impl SendWindow {
    pub(crate) fn new(size: u32) -> SendWindow {
        SendWindow(i64::from(size))
    }

    /// Bytes that may be sent now.
    pub(crate) fn available(&self) -> usize {
        self.0.max(0) as usize
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.0 -= n as i64;
    }

    /// A WINDOW_UPDATE for `id` (zero: the connection). Past 2^31 − 1 is FLOW_CONTROL_ERROR:
    /// a stream error on a stream, a connection error on the connection (§6.9.1).
    pub(crate) fn grow(&mut self, id: StreamId, increment: u32) -> Result<(), Error> {
        let next = self.0 + i64::from(increment);
        if next > MAX_WINDOW {
            let e = "window above 2^31-1";
            return Err(if id.is_zero() {
                go_away(Reason::FLOW_CONTROL_ERROR, e)
            } else {
                reset(id, Reason::FLOW_CONTROL_ERROR, e)
            });
        }
        self.0 = next;
        Ok(())
    }

    /// A change of SETTINGS_INITIAL_WINDOW_SIZE by `delta` (§6.9.2). Overflow is a
    /// connection error FLOW_CONTROL_ERROR.
    pub(crate) fn adjust(&mut self, delta: i64) -> Result<(), Error> {
        let next = self.0 + delta;
        if next > MAX_WINDOW {
            return Err(go_away(
                Reason::FLOW_CONTROL_ERROR,
                "SETTINGS pushed a window past 2^31-1",
            ));
        }
        self.0 = next;
        Ok(())
    }
}

/// A receive window: what the peer may still send, plus what the application has consumed
/// but we have not yet announced with WINDOW_UPDATE.
///
/// Pacing: a WINDOW_UPDATE goes out once at least half the initial window has been released,
/// so a steady upload costs one small frame per half window instead of one per DATA frame,
/// and the peer is never stalled by more than half a window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecvWindow {
    /// Bytes the peer may still send.
    open: i64,
    /// Released by the application, not yet announced.
    unannounced: u32,
    /// The window we aim to keep open.
    target: u32,
}

impl RecvWindow {
    /// A window that starts at `initial` (what the peer already assumes) and is kept at
    /// `target` by WINDOW_UPDATEs.
    pub(crate) fn new(initial: u32, target: u32) -> RecvWindow {
        RecvWindow { open: i64::from(initial), unannounced: 0, target }
    }

    /// Counts `n` received bytes; `false` if the peer sent more than the window allowed.
    pub(crate) fn receive(&mut self, n: usize) -> bool {
        if n as i64 > self.open {
            return false;
        }
        self.open -= n as i64;
        true
    }

    /// The application consumed `n` bytes. Returns the increment to announce now, if pacing
    /// says it is time.
    pub(crate) fn release(&mut self, n: usize) -> Option<u32> {
        self.unannounced = self.unannounced.saturating_add(n as u32);
        let deficit = i64::from(self.target) - self.open;
        let want = (self.unannounced as i64).min(deficit.max(0));
        if want > 0
            && (want >= i64::from(self.target / 2) || self.open < i64::from(self.target / 4))
        {
            self.unannounced -= want as u32;
            self.open += want;
            return Some(want as u32);
        }
        None
    }

    /// Raises the window straight to its target (the connection window at start: the
    /// peer assumes 65,535 until told otherwise). Returns the increment to announce.
    pub(crate) fn open_to_target(&mut self) -> Option<u32> {
        let want = i64::from(self.target) - self.open;
        (want > 0).then(|| {
            self.open += want;
            want as u32
        })
    }
}

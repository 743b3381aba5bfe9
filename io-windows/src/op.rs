//! The driver's vocabulary. The OS-neutral part (operation ids, send buffers, completions,
//! settings) is one source shared with `peregrine-io-linux` (`driver-api/op.rs`); what is
//! Windows' own is here: the owned socket type and the cancellation error.

use std::io;

/// The socket type completions hand over.
pub(crate) use std::os::windows::io::OwnedSocket;
use windows_sys::Win32::Foundation::ERROR_OPERATION_ABORTED;

#[path = "../../driver-api/op.rs"]
mod shared;

pub use shared::{Completion, DriverConfig, OpId, Outcome, SendBuf, MAX_SEND_CHUNKS};

/// Whether `e` is the error of a cancelled operation (`ERROR_OPERATION_ABORTED`, which is
/// also `WSA_OPERATION_ABORTED`: Windows' ECANCELED).
pub fn is_canceled(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ERROR_OPERATION_ABORTED as i32)
}

/// The error a cancelled operation completes with.
pub(crate) fn canceled() -> io::Error {
    io::Error::from_raw_os_error(ERROR_OPERATION_ABORTED as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancellation_is_recognised() {
        assert!(is_canceled(&canceled()));
        assert!(!is_canceled(&io::Error::from(io::ErrorKind::ConnectionReset)));
    }
}

//! Zero-downtime binary upgrade (Linux), nginx's `USR2` in Peregrine's shape.
//!
//! ```text
//!   old: SIGUSR2 ─► copies of every listening socket (each listener's whole SO_REUSEPORT
//!        group), made inheritable ─► start the binary now on disk, same arguments, with
//!        PEREGRINE_UPGRADE_FDS naming them and PEREGRINE_UPGRADE_READY a socket to report on
//!   new: adopts the sockets instead of binding (listener i takes group i), starts, says
//!        "ready" ─► old: graceful shutdown (stops accepting, drains, exits)
//! ```
//!
//! The sockets themselves are handed over, not re-bound: connections queued in their
//! backlogs are accepted by the new process, and none is refused while both run. A new
//! binary that exits, or does not report ready within [`READY_TIMEOUT`], is stopped and
//! the old process goes on serving.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::listener::{InheritedSocket, ListenerSpec};
use crate::sys::driver;
use crate::Server;

/// Listener `i`'s sockets: `i:fd,fd;j:fd`.
const FDS_VAR: &str = "PEREGRINE_UPGRADE_FDS";
/// The socket the new process reports on.
const READY_VAR: &str = "PEREGRINE_UPGRADE_READY";
/// How long the old process waits for the new one to report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an upgrade did not happen (the old process goes on serving).
#[derive(Debug)]
pub enum UpgradeError {
    /// The sockets could not be prepared, or the binary not started.
    Start(io::Error),
    /// The new process ended, or was stopped, before it reported ready.
    NotReady(String),
}

impl std::fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpgradeError::Start(e) => write!(f, "cannot start the new binary: {e}"),
            UpgradeError::NotReady(why) => write!(f, "the new binary did not take over: {why}"),
        }
    }
}

impl std::error::Error for UpgradeError {}

/// Starts upgrades of one server: thread-safe, for a signal thread. It holds no socket of
/// its own: the server's descriptors close when its shutdown starts, so a server that stops
/// refuses new connections.
pub struct UpgradeHandle {
    control: std::sync::Arc<crate::server::Control>,
}

impl UpgradeHandle {
    /// The handle for `server`.
    pub fn of(server: &Server) -> UpgradeHandle {
        UpgradeHandle { control: server.control() }
    }

    /// Starts `binary` with `args` as the server's successor and waits until it reports
    /// ready. `Ok(pid)`: it serves on the same sockets; begin the server's graceful
    /// shutdown.
    pub fn start_successor(
        &self,
        binary: &Path,
        args: &[std::ffi::OsString],
    ) -> Result<u32, UpgradeError> {
        let copies = Server::handover_copies(&self.control)
            .ok_or_else(|| UpgradeError::NotReady("the server is shutting down".into()))?
            .map_err(UpgradeError::Start)?;
        start_successor(copies, binary, args)
    }
}

/// Starts the successor with `listeners`: inheritable copies of the sockets, closed here
/// once the child has its own.
fn start_successor(
    listeners: Vec<Vec<OwnedFd>>,
    binary: &Path,
    args: &[std::ffi::OsString],
) -> Result<u32, UpgradeError> {
    let groups: Vec<String> = listeners
        .iter()
        .enumerate()
        .map(|(i, sockets)| {
            let fds: Vec<String> = sockets.iter().map(|s| s.as_raw_fd().to_string()).collect();
            format!("{i}:{}", fds.join(","))
        })
        .collect();
    let (mut ours, pair_end) = UnixStream::pair().map_err(UpgradeError::Start)?;
    let theirs = driver::inheritable_copy(&pair_end).map_err(UpgradeError::Start)?;
    // Only the child may hold the other end: its exit must read as EOF here.
    drop(pair_end);
    let mut child = Command::new(binary)
        .args(args)
        .env(FDS_VAR, groups.join(";"))
        .env(READY_VAR, theirs.as_raw_fd().to_string())
        .spawn()
        .map_err(UpgradeError::Start)?;
    drop(listeners);
    drop(theirs);
    ours.set_read_timeout(Some(READY_TIMEOUT)).map_err(UpgradeError::Start)?;
    let mut word = [0u8; 5];
    let outcome = match ours.read_exact(&mut word) {
        Ok(()) if &word == b"ready" => return Ok(child.id()),
        Ok(()) => "it reported something else than ready".to_string(),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => "it exited".to_string(),
        Err(e) => format!("no report within {READY_TIMEOUT:?} ({e})"),
    };
    let _ = child.kill();
    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
    Err(UpgradeError::NotReady(format!("{outcome}; {status}")))
}

/// In a process started by [`start_successor`]: the handed-over sockets, given to the
/// listeners (by position: the same arguments give the same listeners), and the report.
pub struct Successor {
    ready: Option<UnixStream>,
}

impl Successor {
    /// Adopts what the old process handed over, if this process is a successor; the
    /// variables are removed, so processes started later do not take them for their own.
    pub fn take(listeners: &mut [ListenerSpec]) -> Result<Option<Successor>, String> {
        let fds = std::env::var(FDS_VAR).ok();
        let ready = std::env::var(READY_VAR).ok();
        std::env::remove_var(FDS_VAR);
        std::env::remove_var(READY_VAR);
        let (Some(fds), Some(ready)) = (fds, ready) else { return Ok(None) };
        for group in fds.split(';').filter(|g| !g.is_empty()) {
            let (index, list) =
                group.split_once(':').ok_or_else(|| format!("{FDS_VAR}: bad group `{group}`"))?;
            let index: usize = index.parse().map_err(|_| format!("{FDS_VAR}: `{group}`"))?;
            let fds: Vec<i32> = list
                .split(',')
                .map(|fd| fd.parse().map_err(|_| format!("{FDS_VAR}: `{group}`")))
                .collect::<Result<_, _>>()?;
            let socket = InheritedSocket::adopt_group(&fds)
                .map_err(|e| format!("handed-over socket {fds:?}: {e}"))?;
            let Some(spec) = listeners.get_mut(index) else {
                return Err(format!(
                    "handed-over sockets for listener {index}, which is not configured"
                ));
            };
            *spec = spec.clone().on_inherited(socket).map_err(|e| e.to_string())?;
        }
        let fd: i32 = ready.parse().map_err(|_| format!("{READY_VAR}: `{ready}`"))?;
        let ready = driver::adopt_inherited(fd).map_err(|e| format!("{READY_VAR}: {e}"))?;
        Ok(Some(Successor { ready: Some(UnixStream::from(ready)) }))
    }

    /// Tells the old process this one serves: it then drains and exits.
    pub fn report_ready(&mut self) -> io::Result<()> {
        match self.ready.take() {
            Some(mut stream) => stream.write_all(b"ready"),
            None => Ok(()),
        }
    }
}

//! Zero-downtime binary upgrade, nginx's `USR2` in Peregrine's shape (Linux: SIGUSR2;
//! every OS: `POST /upgrade` on the admin listener).
//!
//! ```text
//!   old: copies of every listening socket (each listener's whole SO_REUSEPORT group on
//!        Linux, its one socket on Windows) and the admin listener's ─► start the binary now
//!        on disk with the same arguments, and hand it the sockets
//!   new: adopts the sockets instead of binding (listener i takes group i), starts, says
//!        "ready" ─► old: graceful shutdown (stops accepting, drains, exits)
//! ```
//!
//! The sockets themselves are handed over, not re-bound: connections queued in their
//! backlogs are accepted by the new process, and none is refused while both run. A new
//! binary that exits, or does not report ready within [`READY_TIMEOUT`], is stopped and
//! the old process goes on serving. How the sockets travel is each OS's own (`fds.rs`:
//! inherited descriptors; `wsa.rs`: `WSADuplicateSocketW` over a loopback connection).

#[cfg(target_os = "linux")]
mod fds;
#[cfg(target_os = "linux")]
use fds as carrier;
#[cfg(windows)]
mod wsa;
#[cfg(windows)]
use wsa as carrier;

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use crate::listener::{InheritedSocket, ListenerSpec};
use crate::sys::{Handover, OwnedSocket};
use crate::Server;

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

/// What the old process hands over: per listener (in the config's order) its sockets, and
/// the admin listener's.
pub(crate) struct Handed {
    pub(crate) listeners: Vec<Vec<Handover>>,
    pub(crate) admin: Option<Handover>,
}

/// Starts upgrades of one server: thread-safe, for a signal thread or the admin listener.
/// It holds no socket of its own: the server's close when its shutdown starts, so a server
/// that stops refuses new connections.
pub struct UpgradeHandle {
    control: Arc<crate::server::Control>,
    live: Arc<crate::reload::Live>,
}

impl UpgradeHandle {
    /// The handle for `server`.
    pub fn of(server: &Server) -> UpgradeHandle {
        UpgradeHandle { control: server.control(), live: server.live() }
    }

    /// Starts `binary` with `args` as the server's successor and waits until it reports
    /// ready. `Ok(pid)`: it serves on the same sockets; begin the server's graceful
    /// shutdown.
    pub fn start_successor(
        &self,
        binary: &Path,
        args: &[std::ffi::OsString],
    ) -> Result<u32, UpgradeError> {
        // No reload while the sockets go over (see `Live::hold`).
        let _no_reload = self.live.hold();
        let handed = Server::handover_copies(&self.control)
            .ok_or_else(|| UpgradeError::NotReady("the server is shutting down".into()))?
            .map_err(UpgradeError::Start)?;
        carrier::start_successor(handed, binary, args)
    }
}

/// Waits for the successor's "ready" on `report`; stops it if anything else comes.
fn await_ready(mut report: impl Read, child: Child) -> Result<u32, UpgradeError> {
    let mut word = [0u8; 5];
    let outcome = match report.read_exact(&mut word) {
        Ok(()) if &word == b"ready" => return Ok(child.id()),
        Ok(()) => "it reported something else than ready".to_string(),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => "it exited".to_string(),
        Err(e) => format!("no report within {READY_TIMEOUT:?} ({e})"),
    };
    Err(stop(child, outcome))
}

/// Stops a successor that did not take over, and says why.
fn stop(mut child: Child, why: String) -> UpgradeError {
    let _ = child.kill();
    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
    UpgradeError::NotReady(format!("{why}; {status}"))
}

/// In a process started by an upgrade: the handed-over sockets, given to the listeners
/// (by position: the same arguments give the same listeners), and the report.
pub struct Successor {
    ready: Option<Box<dyn Write + Send>>,
}

impl Successor {
    /// Adopts what the old process handed over, if this process is a successor: its
    /// listeners' sockets into `listeners`, its admin listener's into `admin`. The means of
    /// the handover are removed from the environment, so processes started later do not
    /// take them for their own.
    pub fn take(
        listeners: &mut [ListenerSpec],
        admin: &mut Option<InheritedSocket>,
    ) -> Result<Option<Successor>, String> {
        let Some((handed, ready)) = carrier::take()? else { return Ok(None) };
        for (index, sockets) in handed.into_iter() {
            let socket = InheritedSocket(sockets.into_iter().map(Arc::new).collect());
            match index {
                Group::Admin => *admin = Some(socket),
                Group::Listener(i) => {
                    let Some(spec) = listeners.get_mut(i) else {
                        return Err(format!(
                            "handed-over sockets for listener {i}, which is not configured"
                        ));
                    };
                    *spec = spec.clone().on_inherited(socket).map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(Some(Successor { ready: Some(ready) }))
    }

    /// Tells the old process this one serves: it then drains and exits.
    pub fn report_ready(&mut self) -> io::Result<()> {
        match self.ready.take() {
            Some(mut stream) => stream.write_all(b"ready").and_then(|()| stream.flush()),
            None => Ok(()),
        }
    }
}

/// Which of the old process's sockets a handed-over group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Listener(usize),
    Admin,
}

impl Group {
    fn name(self) -> String {
        match self {
            Group::Listener(i) => i.to_string(),
            Group::Admin => "admin".into(),
        }
    }

    fn parse(s: &str) -> Option<Group> {
        match s {
            "admin" => Some(Group::Admin),
            _ => s.parse().ok().map(Group::Listener),
        }
    }
}

/// The groups of `handed`, named.
fn groups(handed: &Handed) -> impl Iterator<Item = (Group, &Handover)> {
    let listeners = handed
        .listeners
        .iter()
        .enumerate()
        .flat_map(|(i, group)| group.iter().map(move |s| (Group::Listener(i), s)));
    listeners.chain(handed.admin.iter().map(|s| (Group::Admin, s)))
}

/// The two variables an upgrade starts its successor with, taken out of the environment
/// (so processes started later do not take them for their own); `None` unless both are set.
fn take_vars(first: &str, second: &str) -> Option<(String, String)> {
    let values = (std::env::var(first).ok(), std::env::var(second).ok());
    std::env::remove_var(first);
    std::env::remove_var(second);
    match values {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    }
}

/// Handed-over sockets, gathered by group (in the order they came).
type Received = Vec<(Group, Vec<OwnedSocket>)>;

/// What a successor takes: its sockets, and the stream to report ready on.
type Taken = (Received, Box<dyn Write + Send>);

fn receive(received: &mut Received, group: Group, socket: OwnedSocket) {
    match received.iter_mut().find(|(g, _)| *g == group) {
        Some((_, sockets)) => sockets.push(socket),
        None => received.push((group, vec![socket])),
    }
}

//! Linux: the sockets travel as inherited descriptors. The successor is started with
//! `PEREGRINE_UPGRADE_FDS` naming them (`0:5,6;1:7;admin:8`: group, then descriptors) and
//! `PEREGRINE_UPGRADE_READY` one end of a socket pair to report on.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;

use super::{
    await_ready, groups, receive, take_vars, Group, Handed, Received, Taken, UpgradeError,
    READY_TIMEOUT,
};
use crate::sys::driver;

/// The handed-over descriptors, by group.
const FDS_VAR: &str = "PEREGRINE_UPGRADE_FDS";
/// The socket the new process reports on.
const READY_VAR: &str = "PEREGRINE_UPGRADE_READY";

/// Starts the successor with inheritable copies of the sockets, closed here once the child
/// has its own.
pub(super) fn start_successor(
    handed: Handed,
    binary: &Path,
    args: &[std::ffi::OsString],
) -> Result<u32, UpgradeError> {
    let copies = groups(&handed)
        .map(|(group, socket)| Ok((group, driver::inheritable_copy(socket)?)))
        .collect::<io::Result<Vec<_>>>()
        .map_err(UpgradeError::Start)?;
    drop(handed);
    let mut named: Vec<(Group, Vec<String>)> = Vec::new();
    for (group, fd) in &copies {
        match named.iter_mut().find(|(g, _)| g == group) {
            Some((_, fds)) => fds.push(fd.as_raw_fd().to_string()),
            None => named.push((*group, vec![fd.as_raw_fd().to_string()])),
        }
    }
    let fds: Vec<String> =
        named.iter().map(|(group, fds)| format!("{}:{}", group.name(), fds.join(","))).collect();
    let (ours, pair_end) = UnixStream::pair().map_err(UpgradeError::Start)?;
    let theirs = driver::inheritable_copy(&pair_end).map_err(UpgradeError::Start)?;
    // Only the child may hold the other end: its exit must read as EOF here.
    drop(pair_end);
    let child = Command::new(binary)
        .args(args)
        .env(FDS_VAR, fds.join(";"))
        .env(READY_VAR, theirs.as_raw_fd().to_string())
        .spawn()
        .map_err(UpgradeError::Start)?;
    drop(copies);
    drop(theirs);
    ours.set_read_timeout(Some(READY_TIMEOUT)).map_err(UpgradeError::Start)?;
    await_ready(ours, child)
}

/// The sockets handed to this process, and the stream to report on; `None` when it was
/// not started by an upgrade.
pub(super) fn take() -> Result<Option<Taken>, String> {
    let Some((fds, ready)) = take_vars(FDS_VAR, READY_VAR) else { return Ok(None) };
    let mut received = Received::new();
    for entry in fds.split(';').filter(|g| !g.is_empty()) {
        let bad = || format!("{FDS_VAR}: bad group `{entry}`");
        let (group, list) = entry.split_once(':').ok_or_else(bad)?;
        let group = Group::parse(group).ok_or_else(bad)?;
        for fd in list.split(',') {
            let fd: i32 = fd.parse().map_err(|_| bad())?;
            let socket = driver::adopt_inherited_listener(fd)
                .map_err(|e| format!("handed-over socket {fd}: {e}"))?;
            receive(&mut received, group, socket);
        }
    }
    let fd: i32 = ready.parse().map_err(|_| format!("{READY_VAR}: `{ready}`"))?;
    let ready = driver::adopt_inherited(fd).map_err(|e| format!("{READY_VAR}: {e}"))?;
    Ok(Some((received, Box::new(UnixStream::from(ready)))))
}

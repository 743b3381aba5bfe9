//! The one module of core that knows which OS it runs on: it picks the IO driver crate and
//! names the socket handle types, and binds listeners the way each OS spreads connections
//! across cores. Everything else in core uses these names and never asks.
//!
//! - Linux: `peregrine-io-linux` (io_uring, or epoll), sockets are file descriptors, and each
//!   reactor gets its own listening socket per address with SO_REUSEPORT (the kernel spreads
//!   connections across them).
//! - Windows: `peregrine-io-windows` (IOCP), sockets are `SOCKET` handles, and one listening
//!   socket per address, with SO_EXCLUSIVEADDRUSE, is shared by every reactor: the driver's
//!   accept thread hands its connections round-robin to the reactors' completion ports
//!   (Windows has no SO_REUSEPORT balancing; see io-windows' `sys/acceptor.rs`).

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

#[cfg(target_os = "linux")]
pub(crate) use peregrine_io_linux as driver;
#[cfg(windows)]
pub(crate) use peregrine_io_windows as driver;

#[cfg(unix)]
pub(crate) use std::os::fd::{OwnedFd as OwnedSocket, RawFd as RawSocket};
#[cfg(windows)]
pub(crate) use std::os::windows::io::{OwnedSocket, RawSocket};

/// A reactor's handle on one listening socket: its own socket on Linux, a share of the one
/// socket on Windows.
#[cfg(unix)]
pub(crate) type Listener = OwnedSocket;
/// A reactor's handle on one listening socket: its own socket on Linux, a share of the one
/// socket on Windows.
#[cfg(windows)]
pub(crate) type Listener = std::sync::Arc<OwnedSocket>;

/// A listening socket as kept for an upgrade to hand over: a descriptor of its own on
/// Linux; on Windows the socket itself (duplicated for the new process when handed over).
#[cfg(unix)]
pub(crate) type Handover = OwnedSocket;
/// A listening socket as kept for an upgrade to hand over: a descriptor of its own on
/// Linux; on Windows the socket itself (duplicated for the new process when handed over).
#[cfg(windows)]
pub(crate) type Handover = std::sync::Arc<OwnedSocket>;

/// What to keep for handing over shared (inherited, Unix) sockets.
pub(crate) fn handover_of_shared(
    sockets: &[std::sync::Arc<OwnedSocket>],
) -> io::Result<Vec<Handover>> {
    #[cfg(unix)]
    return sockets.iter().map(|s| s.try_clone()).collect();
    #[cfg(windows)]
    return Ok(sockets.to_vec());
}

/// What to keep for handing over the sockets [`bind_listeners`] bound for the cores.
pub(crate) fn handover_of_bound(per_core: &[Vec<Listener>]) -> io::Result<Vec<Handover>> {
    #[cfg(unix)]
    return per_core.iter().flatten().map(|l| l.try_clone()).collect();
    // One socket, shared by every core.
    #[cfg(windows)]
    return Ok(per_core.first().and_then(|l| l.first()).cloned().into_iter().collect());
}

/// Another handle on a kept socket, for one upgrade to hand over.
pub(crate) fn copy_handover(handover: &Handover) -> io::Result<Handover> {
    #[cfg(unix)]
    return handover.try_clone();
    #[cfg(windows)]
    return Ok(std::sync::Arc::clone(handover));
}

/// What to keep for handing over the admin listener's socket.
pub(crate) fn handover_of_std(listener: &std::net::TcpListener) -> io::Result<Handover> {
    let copy = listener.try_clone()?;
    #[cfg(unix)]
    return Ok(OwnedSocket::from(copy));
    #[cfg(windows)]
    return Ok(std::sync::Arc::new(OwnedSocket::from(copy)));
}

/// The raw handle of an open file, for the driver's file sends.
#[cfg(unix)]
pub(crate) fn raw_file(file: &std::fs::File) -> std::os::fd::RawFd {
    std::os::fd::AsRawFd::as_raw_fd(file)
}

/// The raw handle of an open file, for the driver's file sends.
#[cfg(windows)]
pub(crate) fn raw_file(file: &std::fs::File) -> std::os::windows::io::RawHandle {
    std::os::windows::io::AsRawHandle::as_raw_handle(file)
}

/// The raw handle of a socket, for driver operations.
pub(crate) fn raw(socket: &OwnedSocket) -> RawSocket {
    raw_of(socket)
}

/// The raw handle of any socket-like value (a `socket2::Socket` before it becomes owned).
#[cfg(unix)]
pub(crate) fn raw_of(socket: &impl std::os::fd::AsRawFd) -> RawSocket {
    socket.as_raw_fd()
}

/// The raw handle of any socket-like value (a `socket2::Socket` before it becomes owned).
#[cfg(windows)]
pub(crate) fn raw_of(socket: &impl std::os::windows::io::AsRawSocket) -> RawSocket {
    socket.as_raw_socket()
}

/// Binds `addr` for `reactors` reactors and returns each one's listener and the bound
/// address (port 0 resolved by the first bind).
pub(crate) fn bind_listeners(
    addr: SocketAddr,
    reactors: usize,
) -> io::Result<(SocketAddr, Vec<Listener>)> {
    #[cfg(unix)]
    {
        let mut addr = addr;
        let mut out = Vec::with_capacity(reactors);
        for _ in 0..reactors {
            let socket = bind(addr)?;
            if addr.port() == 0 {
                addr = bound_addr(&socket)?;
            }
            out.push(socket.into());
        }
        Ok((addr, out))
    }
    #[cfg(windows)]
    {
        let socket = bind(addr)?;
        let addr = bound_addr(&socket)?;
        let shared = std::sync::Arc::new(OwnedSocket::from(socket));
        Ok((addr, (0..reactors).map(|_| std::sync::Arc::clone(&shared)).collect()))
    }
}

/// Shares inherited listening sockets among `reactors` reactors: each socket goes to at
/// least one reactor and each reactor gets at least one socket (on Linux its own descriptor
/// of it, a `dup`). Returns each reactor's sockets.
pub(crate) fn share_listeners(
    sockets: &[std::sync::Arc<OwnedSocket>],
    reactors: usize,
) -> io::Result<Vec<Vec<Listener>>> {
    let mut out: Vec<Vec<Listener>> = (0..reactors).map(|_| Vec::new()).collect();
    for i in 0..sockets.len().max(reactors) {
        let socket = &sockets[i % sockets.len()];
        #[cfg(unix)]
        let listener = socket.try_clone()?;
        #[cfg(windows)]
        let listener = std::sync::Arc::clone(socket);
        out[i % reactors].push(listener);
    }
    Ok(out)
}

/// Binds and listens on a Unix domain socket: a file left by a server that is gone is
/// replaced, never one a live server accepts on, nor a file that is not a socket; then its
/// mode and owner are set. One socket, shared by every reactor ([`share_listeners`]).
#[cfg(unix)]
pub(crate) fn bind_unix(unix: &crate::UnixSocket) -> io::Result<OwnedSocket> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let path = &unix.path;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process accepts on this socket",
                ));
            }
            std::fs::remove_file(path)?; // stale: nothing accepts on it
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    socket.listen(4096)?;
    if let Some(mode) = unix.mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    if let Some((uid, gid)) = unix.owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(socket.into())
}

fn bound_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket.local_addr()?.as_socket().ok_or_else(|| io::ErrorKind::Other.into())
}

/// Binds one listening socket: SO_REUSEPORT on Linux (one per reactor), SO_EXCLUSIVEADDRUSE
/// on Windows (where SO_REUSEADDR would let another socket steal the port).
fn bind(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    {
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
    }
    #[cfg(windows)]
    driver::set_exclusive_address_use(&socket)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    // The kernel caps this at net.core.somaxconn (SOMAXCONN on Windows).
    socket.listen(4096)?;
    Ok(socket)
}

/// Supervised child processes (app hosting): how each OS ties a child to the server's life
/// and asks it to stop.
///
/// - Linux: a process group of its own, `PR_SET_PDEATHSIG` = `SIGKILL` (the child dies with
///   the thread that spawned it, even when the server is `kill -9`ed), `SIGTERM` to the group
///   to stop, `SIGKILL` to the group to kill.
/// - Windows: a console process group of its own (Ctrl+Break to stop) and a job object that
///   kills the child and its descendants when the server's handle on it closes.
pub(crate) mod child {
    use std::io;
    use std::process::{Child, Command};

    use super::driver;

    /// What keeps a child tied to the server: hold it as long as the child runs.
    #[derive(Debug)]
    pub(crate) struct Tie {
        #[cfg(windows)]
        _job: Option<driver::ChildJob>,
    }

    /// Prepares `command` for a supervised child.
    pub(crate) fn prepare(command: &mut Command) {
        driver::supervise_child(command);
    }

    /// Ties a just-spawned `child` to the server.
    pub(crate) fn tie(child: &Child) -> Tie {
        #[cfg(windows)]
        {
            let job = driver::contain_child(child)
                .map_err(|e| tracing::warn!(error = %e, pid = child.id(), "cannot put the app process in a job object; it may outlive a killed server"))
                .ok();
            Tie { _job: job }
        }
        #[cfg(not(windows))]
        {
            let _ = child;
            Tie {}
        }
    }

    /// Asks `child` (and what it started) to stop gracefully.
    pub(crate) fn ask_to_stop(child: &Child) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        return driver::signal_child_group(child.id(), driver::ChildSignal::Terminate);
        #[cfg(windows)]
        return driver::interrupt_child(child.id());
    }

    /// Kills `child` (on Linux its whole group: what it started too).
    pub(crate) fn kill(child: &mut Child) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if driver::signal_child_group(child.id(), driver::ChildSignal::Kill).is_ok() {
            return Ok(());
        }
        child.kill()
    }
}

//! Windows: a socket is handed to another process by `WSADuplicateSocketW`, which needs
//! that process's id, so the successor is started first and asks for its sockets over a
//! loopback connection: `PEREGRINE_UPGRADE_ADDR` says where, and it proves itself with
//! `PEREGRINE_UPGRADE_TOKEN` (random, in its environment alone). The old process answers
//! with one line per socket (`group:base64 of the WSAPROTOCOL_INFOW`, then `end`); the
//! successor reports "ready" on the same connection.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::READY_TIMEOUT;
use super::{
    await_ready, groups, receive, stop, take_vars, Group, Handed, Received, Taken, UpgradeError,
};
use crate::sys::driver;

/// Where the old process waits for the successor's call.
const ADDR_VAR: &str = "PEREGRINE_UPGRADE_ADDR";
/// What the successor says first.
const TOKEN_VAR: &str = "PEREGRINE_UPGRADE_TOKEN";
/// How long one line of the exchange may take.
const LINE_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the successor, waits for its call, duplicates each socket for it, and waits for
/// its report.
pub(super) fn start_successor(
    handed: Handed,
    binary: &Path,
    args: &[std::ffi::OsString],
) -> Result<u32, UpgradeError> {
    let calls = call_listener().map_err(UpgradeError::Start)?;
    calls.set_nonblocking(true).map_err(UpgradeError::Start)?;
    let token = crate::tls::random_token();
    let child = Command::new(binary)
        .args(args)
        .env(ADDR_VAR, calls.local_addr().map_err(UpgradeError::Start)?.to_string())
        .env(TOKEN_VAR, &token)
        .spawn()
        .map_err(UpgradeError::Start)?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let (child, stream) = match answer_call(&calls, child, &token, &handed, deadline) {
        Ok(answered) => answered,
        Err((child, why)) => return Err(stop(child, why)),
    };
    drop(handed);
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    stream.set_read_timeout(Some(left)).map_err(UpgradeError::Start)?;
    await_ready(stream, child)
}

/// A loopback listener for the successor's call, bound with `SO_EXCLUSIVEADDRUSE` so no
/// other program can take its port over and hear the token.
fn call_listener() -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    driver::set_exclusive_address_use(&socket)?;
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(8)?;
    Ok(socket.into())
}

/// Waits for the successor's call (while it runs, until `deadline`) and sends it its
/// sockets. On failure the child comes back to be stopped, with why.
fn answer_call(
    calls: &TcpListener,
    mut child: Child,
    token: &str,
    handed: &Handed,
    deadline: Instant,
) -> Result<(Child, TcpStream), (Child, String)> {
    let mut stream = loop {
        match calls.accept() {
            Ok((stream, _)) => match heard_token(&stream, token) {
                Ok(true) => break stream,
                _ => continue, // not our successor: ignored
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err((child, format!("it exited ({status})")));
                }
                if Instant::now() >= deadline {
                    return Err((child, format!("it did not call within {READY_TIMEOUT:?}")));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err((child, format!("waiting for its call: {e}"))),
        }
    };
    let mut text = String::new();
    for (group, socket) in groups(handed) {
        match driver::duplicate_socket(&**socket, child.id()) {
            Ok(info) => {
                let info = base64::engine::general_purpose::STANDARD.encode(info);
                text.push_str(&format!("{}:{info}\n", group.name()));
            }
            Err(e) => return Err((child, format!("cannot duplicate a socket for it: {e}"))),
        }
    }
    text.push_str("end\n");
    match stream.write_all(text.as_bytes()) {
        Ok(()) => Ok((child, stream)),
        Err(e) => Err((child, format!("cannot send it its sockets: {e}"))),
    }
}

/// Whether the first line on `stream` is `token`.
fn heard_token(stream: &TcpStream, token: &str) -> io::Result<bool> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(LINE_TIMEOUT))?;
    // The successor sends this line alone and then waits for the answer: nothing after it
    // is lost with the buffer.
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end() == token)
}

/// The sockets handed to this process, and the stream to report on; `None` when it was
/// not started by an upgrade.
pub(super) fn take() -> Result<Option<Taken>, String> {
    let Some((addr, token)) = take_vars(ADDR_VAR, TOKEN_VAR) else { return Ok(None) };
    let failed = |e: io::Error| format!("upgrade handover from {addr}: {e}");
    let mut stream = TcpStream::connect(&addr).map_err(failed)?;
    stream.set_read_timeout(Some(LINE_TIMEOUT)).map_err(failed)?;
    stream.write_all(format!("{token}\n").as_bytes()).map_err(failed)?;
    let mut reader = BufReader::new(stream);
    let mut received = Received::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(failed)?;
        let line = line.trim_end();
        if line == "end" {
            break;
        }
        let bad = || format!("upgrade handover: bad line `{line}`");
        let (group, info) = line.split_once(':').ok_or_else(bad)?;
        let group = Group::parse(group).ok_or_else(bad)?;
        let info = base64::engine::general_purpose::STANDARD.decode(info).map_err(|_| bad())?;
        let socket = driver::socket_from_duplicate(&info).map_err(failed)?;
        receive(&mut received, group, socket);
    }
    Ok(Some((received, Box::new(reader.into_inner()))))
}

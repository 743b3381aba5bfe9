//! The admin listener: `/metrics` (Prometheus text), `/healthz` (live) and `/readyz` (ready;
//! turns 503 as soon as a graceful shutdown starts, so a load balancer stops sending before
//! connections drain), `POST /reload` and `POST /upgrade` (what the embedder set with
//! `Server::on_reload_request` / `on_upgrade_request`), `POST /cache/purge` (the response cache: one key, or everything),
//! and `POST /apps/NAME/restart` (a hosted app's zero-downtime restart,
//! on every OS; SIGHUP does it for every app on Linux).
//!
//! It runs on its own thread with a plain blocking socket, away from the reactors: scrapes
//! and probes are a handful of requests a second, and keeping them off the data path means
//! a flood on the public listeners cannot starve health checks, nor the reverse. One request
//! per connection, with short timeouts, so a stuck client cannot hold it for long.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::ShutdownHandle;

/// How long the admin listener waits on one client.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request head it reads.
const MAX_HEAD: usize = 8 * 1024;

/// A running admin listener.
pub(crate) struct Admin {
    pub(crate) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Closed when the thread ends.
    ended: std::sync::mpsc::Receiver<()>,
}

impl Admin {
    /// Serves on `listener` (bound to the configured address, or handed over by the
    /// process this one upgraded).
    pub(crate) fn start(
        listener: TcpListener,
        metrics: Metrics,
        shutdown: ShutdownHandle,
    ) -> io::Result<Admin> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let (end, ended) = std::sync::mpsc::channel::<()>();
        let thread =
            std::thread::Builder::new().name("peregrine-admin".into()).spawn(move || {
                let _end = end;
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let _ = serve(stream, &metrics, &shutdown);
                    }
                }
            })?;
        Ok(Admin { addr, stop, thread: Some(thread), ended })
    }

    /// Stops the listener thread and waits for it.
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own. After an upgrade the
        // successor accepts on the same socket and may take it instead: the thread is then
        // left blocked (the process is about to exit) rather than waited for.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let ended = self.ended.recv_timeout(Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            if ended.is_err_and(|e| e == std::sync::mpsc::RecvTimeoutError::Disconnected) {
                let _ = t.join();
            }
        }
    }
}

/// The purge `POST /cache/purge[?host=H&path=P]` asks for: one key (`path` with its query,
/// percent-encoded in the parameter), or everything when neither is given.
fn cache_purge(query: &[u8]) -> Option<crate::cache::Purge> {
    let query = std::str::from_utf8(query.strip_prefix(b"?").unwrap_or(query)).ok()?;
    let (mut host, mut path) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=')?;
        let v = percent_encoding::percent_decode_str(v).decode_utf8().ok()?.into_owned();
        match k {
            "host" => host = Some(v),
            "path" => path = Some(v),
            _ => return None,
        }
    }
    match (host, path) {
        (None, None) => Some(crate::cache::Purge::All),
        (Some(host), Some(path)) if path.starts_with('/') => {
            Some(crate::cache::Purge::Key { host, path })
        }
        _ => None,
    }
}

fn serve(mut stream: TcpStream, metrics: &Metrics, shutdown: &ShutdownHandle) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let (status, content_type, body) = match (method, path) {
        (b"GET" | b"HEAD", b"/metrics") => {
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics.render())
        }
        (b"GET" | b"HEAD", b"/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        (b"GET" | b"HEAD", b"/readyz") if shutdown.is_shutting_down() => {
            ("503 Service Unavailable", "text/plain", "shutting down\n".to_string())
        }
        (b"GET" | b"HEAD", b"/readyz") => ("200 OK", "text/plain", "ready\n".to_string()),
        (b"POST", path) if path.starts_with(b"/apps/") && path.ends_with(b"/restart") => {
            let name = &path[b"/apps/".len()..path.len() - b"/restart".len()];
            match crate::apps::restart_hosted(&String::from_utf8_lossy(name)) {
                true => ("202 Accepted", "text/plain", "restarting\n".to_string()),
                false => ("404 Not Found", "text/plain", "no such app\n".to_string()),
            }
        }
        (b"POST", b"/reload") => match shutdown.0.hook(|h| &h.reload) {
            Some(hook) => match hook() {
                Ok(done) => ("200 OK", "text/plain", done),
                Err(why) => ("400 Bad Request", "text/plain", format!("{why}\n")),
            },
            None => ("404 Not Found", "text/plain", "no reload here\n".to_string()),
        },
        (b"POST", b"/upgrade") => match shutdown.0.hook(|h| &h.upgrade) {
            Some(hook) => match hook() {
                Ok(done) => ("200 OK", "text/plain", done),
                Err(why) => ("500 Internal Server Error", "text/plain", format!("{why}\n")),
            },
            None => ("404 Not Found", "text/plain", "no upgrade here\n".to_string()),
        },
        (b"POST", path) if path == b"/cache/purge" || path.starts_with(b"/cache/purge?") => {
            match cache_purge(&path[b"/cache/purge".len()..]) {
                Some(purge) => {
                    crate::cache::purge(purge);
                    ("202 Accepted", "text/plain", "purged\n".to_string())
                }
                None => (
                    "400 Bad Request",
                    "text/plain",
                    "give host and path, or neither (everything)\n".to_string(),
                ),
            }
        }
        (b"GET" | b"HEAD", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "method not allowed\n".to_string()),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         connection: close\r\ncache-control: no-store\r\n\r\n",
        body.len()
    );
    if method != b"HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes())
}

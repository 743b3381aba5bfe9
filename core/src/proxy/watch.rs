//! The upstream watcher: one thread per upstream group, off the reactors, that runs the
//! active health checks and resolves host names again. What it finds reaches the cores
//! through the group's shared state: an up/down flag per server (read with a relaxed load
//! when a server is picked) and the server's address (read per connect).
//!
//! A check is a plain blocking `GET` (TLS for `https://` servers, verified like the proxy's
//! own connections) with `Connection: close`, bounded by the check's timeout; the server is
//! up when the status is the expected one. A server goes down after `fall` failed checks in a
//! row and up again after `rise` good ones. The thread ends when the group's config is
//! dropped (the server stopped).

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{ProxyConfig, UpstreamServer};

/// An active health check of a group's servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path requested, e.g. `/healthz`.
    pub path: String,
    /// Time between checks of a server.
    pub interval: Duration,
    /// Longest a check may take (connect, request, status line).
    pub timeout: Duration,
    /// The status meaning healthy; `None`: any 2xx or 3xx.
    pub expect_status: Option<u16>,
    /// Failed checks in a row that mark a server down.
    pub fall: u32,
    /// Good checks in a row that mark a down server up.
    pub rise: u32,
}

impl HealthCheck {
    /// `GET path` every 5 s with a 2 s timeout; 2 failures mark a server down, 2 successes
    /// up again; any 2xx or 3xx is healthy.
    pub fn new(path: &str) -> HealthCheck {
        HealthCheck {
            path: path.to_string(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            expect_status: None,
            fall: 2,
            rise: 2,
        }
    }
}

/// Starts the group's watcher if it has anything to do (checks, or names to resolve
/// again); once per group, from the first core's proxy.
pub(crate) fn start(config: &Arc<ProxyConfig>) {
    let resolves =
        config.resolve_every.is_some() && config.servers.iter().any(|s| s.resolvable.is_some());
    if config.health_check.is_none() && !resolves {
        return;
    }
    if config.watching.set(()).is_err() {
        return; // another core started it
    }
    let weak = Arc::downgrade(config);
    let spawned = std::thread::Builder::new()
        .name("peregrine-upstream-watch".into())
        .spawn(move || run(weak));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the upstream health checker");
    }
}

fn run(weak: Weak<ProxyConfig>) {
    let mut streak: Vec<i64> = Vec::new(); // >0: good checks in a row, <0: failures
    let mut next_resolve = Instant::now();
    loop {
        let Some(config) = weak.upgrade() else { return };
        let now = Instant::now();
        if let Some(check) = &config.health_check {
            streak.resize(config.servers.len(), 0);
            for (i, server) in config.servers.iter().enumerate() {
                let ok = probe(server, check);
                streak[i] = match (ok, streak[i]) {
                    (true, n) if n > 0 => n + 1,
                    (true, _) => 1,
                    (false, n) if n < 0 => n - 1,
                    (false, _) => -1,
                };
                let flag = &config.health_board()[i];
                let up = flag.load(Ordering::Relaxed);
                if up && -streak[i] >= i64::from(check.fall.max(1)) {
                    tracing::warn!(upstream = server.name(), "health check failing: marked down");
                    flag.store(false, Ordering::Relaxed);
                } else if !up && streak[i] >= i64::from(check.rise.max(1)) {
                    tracing::info!(upstream = server.name(), "health check passing: marked up");
                    flag.store(true, Ordering::Relaxed);
                }
            }
        }
        if let Some(every) = config.resolve_every {
            if now >= next_resolve {
                for server in &config.servers {
                    match server.resolve_again() {
                        Ok(true) => tracing::info!(
                            upstream = server.name(),
                            addr = ?server.addr().as_socket(),
                            "upstream address changed"
                        ),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(
                            upstream = server.name(),
                            error = %e,
                            "cannot resolve the upstream again; keeping its address"
                        ),
                    }
                }
                next_resolve = now + every;
            }
        }
        let pause = config
            .health_check
            .as_ref()
            .map(|c| c.interval)
            .into_iter()
            .chain(config.resolve_every)
            .min()
            .unwrap_or(Duration::from_secs(1));
        drop(config);
        std::thread::sleep(pause);
    }
}

/// One check of `server`: true when it answered `check.path` with the expected status.
fn probe(server: &UpstreamServer, check: &HealthCheck) -> bool {
    match status_of(server, check) {
        Ok(status) => match check.expect_status {
            Some(want) => status == want,
            None => (200..400).contains(&status),
        },
        Err(e) => {
            tracing::debug!(upstream = server.name(), error = %e, "health check failed");
            false
        }
    }
}

fn status_of(server: &UpstreamServer, check: &HealthCheck) -> std::io::Result<u16> {
    status(server, &check.path, check.timeout, "")
}

/// A connection to `server` within `timeout` (over TCP or a Unix socket).
pub(crate) fn connect(
    server: &UpstreamServer,
    timeout: Duration,
) -> std::io::Result<socket2::Socket> {
    let addr = server.addr();
    let stream = socket2::Socket::new(addr.domain(), socket2::Type::STREAM, None)?;
    stream.connect_timeout(&addr, timeout)?;
    Ok(stream)
}

/// The status `server` answers `GET path` with, each step within `timeout`; `extra_headers`
/// (whole `Name: value\r\n` lines) go with the request. Also app hosting's readiness check.
pub(crate) fn status(
    server: &UpstreamServer,
    path: &str,
    timeout: Duration,
    extra_headers: &str,
) -> std::io::Result<u16> {
    let host = server.host_header();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: peregrine-health-check\r\n\
         {extra_headers}Connection: close\r\n\r\n"
    );
    let mut stream = connect(server, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = [0u8; 64];
    let n = match &server.tls {
        None => {
            stream.write_all(request.as_bytes())?;
            read_some(&mut stream, &mut head)?
        }
        Some(tls) => {
            let conn = rustls::ClientConnection::new(Arc::clone(&tls.config), tls.name.clone())
                .map_err(std::io::Error::other)?;
            let mut tls = rustls::StreamOwned::new(conn, stream);
            tls.write_all(request.as_bytes())?;
            read_some(&mut tls, &mut head)?
        }
    };
    parse_status(&head[..n]).ok_or_else(|| std::io::Error::other("no HTTP status line"))
}

/// Reads until the status line's code is in (12 bytes) or the peer stops.
fn read_some(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < 12 {
        match r.read(&mut buf[n..])? {
            0 => break,
            m => n += m,
        }
    }
    Ok(n)
}

/// The code of an `HTTP/1.x NNN` status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_status;

    #[test]
    fn reads_the_status_code() {
        assert_eq!(parse_status(b"HTTP/1.1 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(parse_status(b"HTTP/1.0 200 OK"), Some(200));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2"), None);
    }
}

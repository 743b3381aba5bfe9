//! Upstream connections and the per-core keep-alive pool.
//!
//! Each core's proxy handler owns its pool (handlers are per core), so taking and returning
//! a connection is a `Vec` push and pop: no lock, no cross-core traffic. Idle connections are
//! capped per server and closed after `idle_timeout`; the newest idle connection is reused
//! first (the oldest are the likeliest to have been closed by the upstream).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;

use super::metrics::ServerMetrics;
use crate::rt;
use crate::sys::{self, OwnedSocket, RawSocket};
use crate::transport::Transport;

/// One connection to an upstream server: the socket and the bytes read past the last
/// response. Dropping it closes the socket (through the driver).
pub(crate) struct Conn {
    fd: Option<OwnedSocket>,
    /// The byte stream over it: cleartext, or TLS to an `https://` server. Shared with a
    /// request body still being sent.
    pub(crate) transport: Rc<Transport>,
    /// Its server's counters (a close is counted there).
    metrics: Arc<ServerMetrics>,
    /// Received bytes not yet parsed.
    pub(crate) buf: BytesMut,
    /// Whether it came from the pool (a failure before any response byte may then be the
    /// upstream having closed it while idle, and is retried once).
    pub(crate) reused: bool,
    /// It began with a PROXY protocol header naming one client: never pooled.
    pub(crate) private: bool,
}

impl Conn {
    /// A freshly connected socket.
    pub(crate) fn new(fd: OwnedSocket, transport: Transport, metrics: Arc<ServerMetrics>) -> Conn {
        let transport = Rc::new(transport);
        Conn {
            fd: Some(fd),
            transport,
            metrics,
            buf: BytesMut::new(),
            reused: false,
            private: false,
        }
    }

    /// The socket, its transport and the bytes received past the last response (a tunnel
    /// takes them all). It leaves the pool's accounting: counted closed now.
    pub(crate) fn into_parts(self) -> (OwnedSocket, Rc<Transport>, BytesMut) {
        let (fd, transport, buf, metrics) = self.into_counted_parts();
        metrics.conn_closed();
        (fd, transport, buf)
    }

    /// The socket, its transport, the bytes received past the last response, and its
    /// server's counters: the new owner (an HTTP/2 connection's driver) counts it open until
    /// it calls `conn_closed` there.
    pub(crate) fn into_counted_parts(
        mut self,
    ) -> (OwnedSocket, Rc<Transport>, BytesMut, Arc<ServerMetrics>) {
        let fd = self.fd.take().expect("a live connection has its socket");
        (fd, Rc::clone(&self.transport), std::mem::take(&mut self.buf), Arc::clone(&self.metrics))
    }

    /// The socket's raw handle, for driver operations.
    pub(crate) fn raw(&self) -> RawSocket {
        sys::raw(self.fd.as_ref().expect("a live connection has its socket"))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            self.metrics.conn_closed();
            rt::io::close_detached(fd);
        }
    }
}

struct Idle {
    conn: Conn,
    /// When it stops being worth reusing (`None`: a timeout too long to reach): a deadline,
    /// so that each take and put compares two instants instead of subtracting them.
    until: Option<Instant>,
}

/// The idle connections of one core, per upstream server.
pub(crate) struct Pool {
    idle: RefCell<Vec<VecDeque<Idle>>>,
    /// Each server's counters (the idle gauge).
    metrics: Vec<Arc<ServerMetrics>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    /// A pool for `servers` servers, keeping at most `max_idle` per server for
    /// `idle_timeout`.
    pub(crate) fn new(
        metrics: Vec<Arc<ServerMetrics>>,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Pool {
        Pool {
            idle: RefCell::new((0..metrics.len()).map(|_| VecDeque::new()).collect()),
            metrics,
            max_idle,
            idle_timeout,
        }
    }

    /// The newest idle connection to `server` that has not timed out.
    pub(crate) fn take(&self, server: usize, now: Instant) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(server)?;
        self.expire(list, now);
        let conn = list.pop_back();
        self.metrics[server].set_idle(list.len());
        let mut conn = conn?.conn;
        conn.reused = true;
        Some(conn)
    }

    /// Keeps `conn` for reuse (closing the oldest idle one when the server's list is full).
    pub(crate) fn put(&self, server: usize, conn: Conn, now: Instant) {
        if self.max_idle == 0 || !conn.buf.is_empty() || conn.private {
            return; // stray bytes after a response: the connection is not clean
        }
        let mut idle = self.idle.borrow_mut();
        let Some(list) = idle.get_mut(server) else { return };
        self.expire(list, now);
        if list.len() >= self.max_idle {
            list.pop_front();
        }
        conn.transport.shed_buffers();
        list.push_back(Idle { conn, until: now.checked_add(self.idle_timeout) });
        self.metrics[server].set_idle(list.len());
    }

    fn expire(&self, list: &mut VecDeque<Idle>, now: Instant) {
        while list.front().is_some_and(|i| i.until.is_some_and(|until| now >= until)) {
            list.pop_front();
        }
    }
}

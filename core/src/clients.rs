//! Per-client fairness at the edge: the policy of `peregrine_limits` (connections and
//! request rate per client address, allow/deny lists), asked at the two places it applies.
//!
//! - A new connection (`conn::serve`, once the client is known: the socket's peer, or the
//!   client a PROXY protocol header names), before any TLS or HTTP: a denied address or one
//!   over `max_connections_per_ip` is closed at once.
//! - A request (the HTTP/1 and HTTP/2 exchanges, before the handler is called): over
//!   `rate_limit` it is answered `429` with `Retry-After`.
//!
//! The tables are shared by every core (created once per server); see `limits::clients`
//! for their memory bound and what a hash collision does.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Response, StatusCode};
use peregrine_limits::{
    ClientConnections, ClientKey, ClientLimits, ClientPermit, ClientRates, Limit, Limits,
    RateLimit, RateVerdict,
};

use crate::metrics::Rejection;
use crate::{rt, Body};

/// The server's per-client tables.
#[derive(Debug)]
pub(crate) struct ClientPolicy {
    connections: Option<Arc<ClientConnections>>,
    rates: Option<Arc<ClientRates>>,
    ipv6_prefix: u8,
}

impl ClientPolicy {
    /// The tables `limits` asks for (none when its per-client limits are off).
    pub(crate) fn new(limits: &Limits) -> Arc<ClientPolicy> {
        let own = ClientLimits {
            max_connections_per_ip: limits.max_connections_per_ip,
            rate_limit: limits.rate_limit,
        };
        ClientPolicy::with(own, limits.ipv6_prefix_length)
    }

    /// The tables `limits` asks for (a listener's own).
    pub(crate) fn with(limits: ClientLimits, ipv6_prefix: u8) -> Arc<ClientPolicy> {
        Arc::new(ClientPolicy {
            connections: limits.max_connections_per_ip.map(ClientConnections::new),
            rates: limits.rate_limit.map(|r| ClientRates::new(r, Instant::now())),
            ipv6_prefix,
        })
    }

    /// Whether any per-client table is on (connections or rate).
    pub(crate) fn is_active(&self) -> bool {
        self.connections.is_some() || self.rates.is_some()
    }

    /// The client key of `ip`.
    pub(crate) fn key(&self, ip: IpAddr) -> ClientKey {
        ClientKey::new(ip, self.ipv6_prefix)
    }

    /// Admits a connection from `ip`: its permit (held for the connection's life), or
    /// `Err` when the client already holds `max_connections_per_ip`.
    pub(crate) fn admit_connection(&self, ip: IpAddr) -> Result<Option<ClientPermit>, ()> {
        match &self.connections {
            None => Ok(None),
            Some(table) => table.try_acquire(self.key(ip)).map(Some).ok_or(()),
        }
    }

    /// Connections counted against `max_connections_per_ip` and the clients holding them,
    /// when that cap is on (for the metrics).
    pub(crate) fn connection_counts(&self) -> Option<(u64, u64)> {
        let table = self.connections.as_ref()?;
        Some((table.counted(), table.addresses()))
    }

    /// What the listener's `rate_limit` says of a request from `peer`, decided at once (a
    /// request to serve now needs no future); a delay is waited out by [`Admission::wait`].
    pub(crate) fn check(&self, peer: Option<IpAddr>) -> Admission {
        let (Some(rates), Some(ip)) = (self.rates.as_ref(), peer) else { return Admission::Now };
        check(rates, self.key(ip), ip)
    }
}

/// A request rate table for one route (shared by the cores through its config).
pub(crate) fn route_rates(limit: RateLimit) -> Arc<ClientRates> {
    ClientRates::new(limit, Instant::now())
}

/// What a rate limit says of a request, decided at once.
pub(crate) enum Admission {
    /// Serve it now.
    Now,
    /// Serve it after this wait (one of the `delayed`).
    After(Duration),
    /// Answer this `429` (counted, and logged with the address).
    Refused(Response<Body>),
}

impl Admission {
    /// Waits out an [`Admission::After`]: `None` to serve the request, or the `429`.
    pub(crate) async fn wait(self) -> Option<Response<Body>> {
        match self {
            Admission::Now => None,
            Admission::After(wait) => {
                // Waits on the connection's task, as nginx's delayed requests do.
                rt::timer::timeout(rt::now() + wait, std::future::pending::<()>()).await;
                None
            }
            Admission::Refused(too_many) => Some(too_many),
        }
    }
}

/// Applies `rates` to a request from `ip` (counted as `key`), without waiting.
pub(crate) fn check(rates: &ClientRates, key: ClientKey, ip: IpAddr) -> Admission {
    match rates.check(key, rt::now()) {
        RateVerdict::Now => Admission::Now,
        RateVerdict::After(wait) => Admission::After(wait),
        RateVerdict::Refused(wait) => {
            tracing::debug!(%ip, retry_after = ?wait, "rate_limit: answering 429");
            crate::metrics::count(|m| m.rejected(Rejection::Limit(Limit::RateLimit)));
            Admission::Refused(too_many_requests(wait))
        }
    }
}

/// Applies `rates` to a request from `ip` (counted as `key`): `None` to serve it (after its
/// wait, if it has one), or the `429` to answer.
pub(crate) async fn admit(
    rates: &ClientRates,
    key: ClientKey,
    ip: IpAddr,
) -> Option<Response<Body>> {
    check(rates, key, ip).wait().await
}

/// `429 Too Many Requests` with `Retry-After` in whole seconds (rounded up; at least 1).
fn too_many_requests(wait: Duration) -> Response<Body> {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut r = Response::new(Body::from("429 Too Many Requests\n"));
    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    r.headers_mut().insert(header::CONTENT_TYPE, crate::handler::content_type::TEXT);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    r
}

/// `403 Forbidden`, for a route's deny list.
pub(crate) fn forbidden() -> Response<Body> {
    crate::metrics::count(|m| m.rejected(Rejection::Denied));
    let mut r = Response::new(Body::from("403 Forbidden\n"));
    *r.status_mut() = StatusCode::FORBIDDEN;
    r.headers_mut().insert(header::CONTENT_TYPE, crate::handler::content_type::TEXT);
    r
}

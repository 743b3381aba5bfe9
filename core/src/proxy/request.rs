//! The request as it leaves for the upstream: its head rewritten and encoded once (each
//! attempt, on any server, sends the same bytes), the body in memory or still streaming, and
//! what the attempt loop needs besides (the balancing key, the upgrade asked for).

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request};
use peregrine_protocols::h1::{encode_request_head, BodyFraming};

use super::config::RouteOptions;
use super::{forward, h1, websocket, Balance, ProxyError, Shared};
use crate::exchange::{ConnectProtocol, ConnectionInfo};
use crate::{Body, BodyError};

/// A request ready to send upstream.
pub(crate) struct Outgoing {
    pub(crate) method: Method,
    /// The encoded request head.
    pub(crate) head: Bytes,
    pub(crate) framing: BodyFraming,
    /// A body already in memory, sent with the head (and again on a retry).
    pub(crate) in_memory: Option<Bytes>,
    /// A body still to stream (taken by the attempt that sends it).
    pub(crate) body: Option<Body>,
    /// The protocol an HTTP/1.1 upgrade asks for (a WebSocket).
    pub(crate) upgrade: Option<HeaderValue>,
    /// The hash key of the hashing balancers.
    pub(crate) key: Option<Vec<u8>>,
    /// The request id sent upstream (and logged); `None` if a route's edits removed it.
    pub(crate) request_id: Option<HeaderValue>,
    /// The client's connection (for a PROXY protocol header to the upstream).
    pub(crate) info: ConnectionInfo,
    /// An HTTP/2 WebSocket (extended CONNECT) sent upstream as an HTTP/1.1 upgrade.
    pub(crate) bridge: Option<Bridge>,
}

/// What a WebSocket over HTTP/2 keeps for after the upstream's `101`.
pub(crate) struct Bridge {
    /// The `Sec-WebSocket-Key` sent upstream, which its `Sec-WebSocket-Accept` must answer.
    pub(crate) key: HeaderValue,
    /// The stream's request body: the client's side of the tunnel.
    pub(crate) from_client: Body,
}

/// How much a buffered request body may hold when the route sets no limit of its own.
const BUFFERING_DEFAULT_MAX: u64 = 16 * 1024 * 1024;

/// `request` with its whole body read into memory (the route's `request_buffering`),
/// bounded by the route's `max_request_body_size`.
pub(crate) async fn buffered(
    request: Request<Body>,
    options: &RouteOptions,
) -> Result<Request<Body>, ProxyError> {
    if request.body().is_in_memory() {
        return Ok(request);
    }
    let limit = options.max_request_body_size.unwrap_or(BUFFERING_DEFAULT_MAX);
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect(usize::try_from(limit).unwrap_or(usize::MAX))
        .await
        .map_err(ProxyError::ClientBody)?;
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Moves what is kept beside the map into it, `host` first, then the forwarding fields: for
/// a map edited by name or encoded on its own. (Not kept in [`forward::Added`]: a larger
/// `Added` cost about 60 instructions a proxied request in copies.)
pub(crate) fn merge_kept(
    headers: &mut http::HeaderMap,
    host: &mut Option<HeaderValue>,
    added: &mut forward::Added,
) {
    if let Some(host) = host.take() {
        headers.insert(header::HOST, host);
    }
    std::mem::take(added).into_map(headers);
}

/// A request rewritten for the upstream (forwarding rules, the route's options), before
/// either protocol encodes it.
pub(crate) struct Rewritten {
    pub(crate) method: Method,
    pub(crate) uri: http::Uri,
    /// The host an HTTP/2 request (or an absolute-form target) names, sent as `Host`: kept
    /// beside the map, as `added` is (the map of such a request has no `Host`, and one more
    /// field would grow it: about 550 instructions a proxied request). `None` when the map
    /// holds the request's own `Host`, or once it was merged in ([`merge_kept`]).
    pub(crate) host: Option<HeaderValue>,
    pub(crate) headers: http::HeaderMap,
    /// The forwarding fields, sent after `headers`.
    pub(crate) added: forward::Added,
    pub(crate) body: Body,
    pub(crate) upgrade: Option<HeaderValue>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) info: ConnectionInfo,
    pub(crate) bridge: Option<Bridge>,
    /// The client accepts trailers (`TE: trailers`, which HTTP/2 upstreams such as gRPC
    /// servers ask for; the field itself is hop-by-hop and was removed).
    pub(crate) te_trailers: bool,
}

impl Rewritten {
    /// The request-target: the path and query, with the route's prefix stripped.
    pub(crate) fn target<'a>(&'a self, options: &RouteOptions) -> std::borrow::Cow<'a, str> {
        let target = self.uri.path_and_query().map_or("/", |p| p.as_str());
        match &options.strip_prefix {
            Some(prefix) => {
                let rest = target.strip_prefix(prefix.trim_end_matches('/')).unwrap_or(target);
                if rest.starts_with('/') {
                    std::borrow::Cow::Borrowed(rest)
                } else {
                    std::borrow::Cow::Owned(format!("/{rest}"))
                }
            }
            None => std::borrow::Cow::Borrowed(target),
        }
    }
}

/// Rewrites `request` for the upstream and encodes its HTTP/1.1 head.
pub(crate) fn prepare(
    shared: &Rc<Shared>,
    request: Request<Body>,
    options: &RouteOptions,
    connection: Option<&ConnectionInfo>,
) -> Result<Outgoing, ProxyError> {
    // Borrowed where it lies, not moved out of the `Result` by `?`: the rewritten request is
    // several hundred bytes, and that copy was a hundred instructions a proxied request.
    let mut rewritten = rewrite(shared, request, options, connection);
    let Ok(r) = &mut rewritten else {
        return Err(rewritten.err().expect("not Ok"));
    };
    let framing = match r.body.exact_len() {
        Some(0) => BodyFraming::Empty,
        Some(n) => BodyFraming::Length(n),
        None => BodyFraming::Chunked,
    };
    let mut head = BytesMut::new();
    encode_request_head(
        &r.method,
        &r.target(options),
        r.host.as_ref(),
        &r.headers,
        r.added.iter(),
        framing,
        &mut head,
    );
    let head = head.freeze();
    // Moved out once encoded (a fresh id's copy would allocate); a trusted proxy's is copied.
    let request_id = r
        .added
        .take(&forward::X_REQUEST_ID)
        .or_else(|| r.headers.get(&forward::X_REQUEST_ID).cloned());
    // A body already in memory goes with the head, and can be sent again on a retry.
    let in_memory = if r.body.is_in_memory() { r.body.take_full() } else { None };
    Ok(Outgoing {
        method: std::mem::take(&mut r.method),
        head,
        framing,
        in_memory,
        body: Some(std::mem::take(&mut r.body)),
        upgrade: r.upgrade.take(),
        key: r.key.take(),
        request_id,
        info: r.info,
        bridge: r.bridge.take(),
    })
}

/// Rewrites `request` for the upstream: the forwarding rules and the route's options.
/// `connection` describes the client (else the request's extension does).
pub(crate) fn rewrite(
    shared: &Rc<Shared>,
    request: Request<Body>,
    options: &RouteOptions,
    connection: Option<&ConnectionInfo>,
) -> Result<Rewritten, ProxyError> {
    let config = &shared.config;
    let (parts, mut body) = request.into_parts();
    // A WebSocket over HTTP/2 (RFC 8441) goes upstream as the HTTP/1.1 upgrade it stands
    // for (§5): a GET with a fresh key, no body; the stream's DATA is the tunnel's, which no
    // body limit applies to.
    let websocket = parts.method == Method::CONNECT
        && parts.extensions.get::<ConnectProtocol>().is_some_and(|p| p.is("websocket"));
    let limit = if websocket { None } else { options.max_request_body_size };
    if let (Some(max), Some(len)) = (limit, body.exact_len()) {
        if len > max {
            return Err(ProxyError::ClientBody(BodyError::TooLarge { limit: max }));
        }
    }
    if let Some(max) = limit {
        if body.exact_len().is_none() {
            body = h1::capped(body, max);
        }
    }
    let method = if websocket { Method::GET } else { parts.method };
    let info = connection
        .or_else(|| parts.extensions.get::<ConnectionInfo>())
        .copied()
        .unwrap_or_default();
    let mut headers = parts.headers;
    // The hash key, for the hashing methods (an allocation only for them).
    let key: Option<Vec<u8>> = match &config.balance {
        Balance::ClientIp => {
            let ip = info.peer.map(|p| crate::trust::canonical(p.ip()));
            ip.map(|ip| forward::ip_text(ip, &mut [0; 48]).to_vec())
        }
        Balance::Header(name) => headers.get(name).map(|v| v.as_bytes().to_vec()),
        Balance::RoundRobin | Balance::LeastRequests => None,
    };
    // HTTP/2's `:authority` (or an absolute-form target) is the host; it becomes `Host`
    // (an HTTP/1.1 request's own `Host` stays where it is).
    let from_target = parts.uri.authority().map(|a| HeaderValue::from_str(a.as_str()).ok());
    let host_from_target = from_target.is_some();
    let host = from_target.unwrap_or_else(|| headers.get(header::HOST).cloned());
    // An HTTP/1.1 upgrade (a WebSocket) keeps its Upgrade field: the one hop-by-hop field
    // that must cross, for a tunnel to follow a 101.
    let upgrade = match parts.version {
        _ if websocket => Some(HeaderValue::from_static("websocket")),
        http::Version::HTTP_11 => forward::upgrade_requested(&headers),
        _ => None,
    };
    // Only an HTTP/2 group sends `te: trailers` on (HTTP/1.1 drops TE as hop-by-hop), so
    // only it looks.
    let http2 = config.servers.first().is_some_and(|s| s.http2);
    let te_trailers = http2
        && headers.get_all(header::TE).iter().any(|v| {
            let asks = |t: &str| t.trim().eq_ignore_ascii_case("trailers");
            v.to_str().is_ok_and(|v| v.split(',').any(asks))
        });
    let client = forward::Client { peer: info.peer, tls: info.tls, host: host.clone() };
    let mut added = forward::request_fields(
        &mut headers,
        &client,
        &shared.trusted,
        config.forwarded_header,
        &shared.peer_text,
        config.client_cert_header.as_ref(),
    );
    if let Some(protocol) = &upgrade {
        headers.insert(header::UPGRADE, protocol.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let mut host = host.filter(|_| host_from_target);
    if host.is_some() && headers.contains_key(header::HOST) {
        // An absolute-form target beside a `Host` (or an HTTP/2 request that also sent one):
        // the target's authority replaces the field, in place.
        headers.insert(header::HOST, host.take().expect("checked"));
    }
    let bridge = websocket.then(|| {
        let key = websocket::new_key();
        headers.insert(header::SEC_WEBSOCKET_KEY, key.clone());
        Bridge { key, from_client: std::mem::take(&mut body) }
    });
    // What follows edits the map by name, so the forwarding fields join it first (a route
    // may set or remove them; the certificate field is the configuration's to name).
    let cert_field = config.client_cert_header.as_ref();
    if cert_field.is_some_and(|name| added.holds(name)) || !options.request_headers.is_empty() {
        merge_kept(&mut headers, &mut host, &mut added);
    }
    if let Some(name) = &config.client_cert_header {
        forward::client_certificate(&mut headers, name, parts.extensions.get());
    }
    options.request_headers.apply(&mut headers);
    Ok(Rewritten {
        method,
        uri: parts.uri,
        host,
        headers,
        added,
        body,
        upgrade,
        key,
        info,
        bridge,
        te_trailers,
    })
}

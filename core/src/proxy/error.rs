//! Why forwarding failed, and the answer each failure gets: the standard statuses with a
//! short body and no internal details.

use std::io;

use http::header;
use http::{Response, StatusCode};
use peregrine_protocols::h1::ResponseError;

use super::metrics;
use crate::{Body, BodyError};

/// Why forwarding failed; each becomes a status for the client.
#[derive(Debug)]
pub(crate) enum ProxyError {
    /// No server to try: all are skipped after failing.
    NoServer,
    /// The connect failed (refused, unreachable).
    Connect(io::Error),
    /// The upstream took too long (connect, response head, or a body read or write).
    Timeout,
    /// Writing the request failed.
    Send(io::Error),
    /// Reading the response failed.
    Recv(io::Error),
    /// The upstream closed the connection before a response head.
    Closed,
    /// The upstream's response head broke a rule.
    BadResponse(ResponseError),
    /// The client's request body failed (too large, malformed, too slow, or gone).
    ClientBody(BodyError),
    /// An HTTP/2 upstream reset the stream (or lost the connection) before its response
    /// head.
    StreamReset(peregrine_protocols::h2::Reason),
    /// A WebSocket over HTTP/2 (extended CONNECT) to an HTTP/2 upstream group, which would
    /// need RFC 8441 toward the upstream too (`501`).
    UpgradeUnsupported,
    /// The upstream's `101` to a WebSocket the proxy opened for an HTTP/2 client does not
    /// answer the proxy's `Sec-WebSocket-Key`.
    WebSocketAccept,
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyError::NoServer => f.write_str("no upstream server available"),
            ProxyError::Connect(e) => write!(f, "connect failed: {e}"),
            ProxyError::Timeout => f.write_str("upstream timed out"),
            ProxyError::Send(e) => write!(f, "sending the request failed: {e}"),
            ProxyError::Recv(e) => write!(f, "reading the response failed: {e}"),
            ProxyError::Closed => f.write_str("upstream closed the connection"),
            ProxyError::BadResponse(e) => write!(f, "{e}"),
            ProxyError::ClientBody(e) => write!(f, "client request body: {e}"),
            ProxyError::StreamReset(reason) => write!(f, "upstream reset the stream: {reason:?}"),
            ProxyError::WebSocketAccept => {
                f.write_str("upstream's Sec-WebSocket-Accept does not answer the key")
            }
            ProxyError::UpgradeUnsupported => {
                f.write_str("a WebSocket over HTTP/2 to an HTTP/2 upstream is not supported")
            }
        }
    }
}

impl From<ResponseError> for ProxyError {
    fn from(e: ResponseError) -> Self {
        ProxyError::BadResponse(e)
    }
}

impl ProxyError {
    /// The status the client gets.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoServer => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpgradeUnsupported => StatusCode::NOT_IMPLEMENTED,
            ProxyError::ClientBody(e) => e.status().unwrap_or(StatusCode::BAD_REQUEST),
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The metrics' name for this failure, when an upstream server had a part in it.
    pub(crate) fn failure(&self) -> Option<metrics::Failure> {
        use metrics::Failure;
        Some(match self {
            ProxyError::Connect(_) => Failure::Connect,
            ProxyError::Timeout => Failure::Timeout,
            ProxyError::Send(_) => Failure::Send,
            ProxyError::Recv(_) | ProxyError::StreamReset(_) => Failure::Recv,
            ProxyError::Closed => Failure::Closed,
            ProxyError::BadResponse(_) | ProxyError::WebSocketAccept => Failure::BadResponse,
            ProxyError::NoServer | ProxyError::ClientBody(_) | ProxyError::UpgradeUnsupported => {
                return None
            }
        })
    }

    /// Whether the upstream server is to blame (counts toward skipping it).
    pub(crate) fn blames_server(&self) -> bool {
        !matches!(
            self,
            ProxyError::ClientBody(_) | ProxyError::NoServer | ProxyError::UpgradeUnsupported
        )
    }
}

/// A short plain-text answer for a failed forward: the status and its reason, nothing
/// about the upstream.
pub(crate) fn error_response(status: StatusCode) -> Response<Body> {
    let text = format!("{} {}\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, crate::handler::content_type::TEXT);
    r
}

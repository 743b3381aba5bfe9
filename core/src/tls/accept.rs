//! The server side of a TLS handshake: read the ClientHello with rustls' `Acceptor`, choose
//! the ALPN answer from the listener's protocols, then let rustls finish the handshake.
//!
//! ALPN policy (RFC 7301 §3.2), per listener:
//! 1. the client offers `h2` and the listener serves h2: `h2`;
//! 2. else, the listener serves HTTP/1: `http/1.1` if offered, otherwise no ALPN at all
//!    (an old client, or one offering only protocols we lack, still gets HTTP/1.1);
//! 3. else (an h2-only listener, `h2` not offered): a fatal `no_application_protocol` alert.

use crate::sys::RawSocket;
use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use rustls::server::{Acceptor, ServerConfig, UnbufferedServerConnection};

use super::config::{TlsListener, ALPN_H2, ALPN_HTTP11};
use crate::conn::Protocol;
use crate::listener::Protocols;
use crate::rt;
use crate::transport::Transport;

/// A fatal `no_application_protocol` (120) alert as a plaintext TLS record: content type 21
/// (alert), legacy version 3.3, length 2, level 2 (fatal), description 120. Sent before
/// any key is agreed, so in the clear for TLS 1.2 and 1.3 alike (RFC 8446 §6).
const NO_APPLICATION_PROTOCOL: [u8; 7] = [21, 3, 3, 0, 2, 2, 120];

/// What rustls is told to answer in the ServerHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alpn {
    H2,
    Http11,
    None,
}

/// Applies the policy in the module doc to a client's ALPN offer (`None`: no extension).
fn choose(protocols: Protocols, offered: Option<&[&[u8]]>) -> Option<Alpn> {
    let offers = |id: &[u8]| offered.is_some_and(|o| o.contains(&id));
    if protocols.h2 && offers(ALPN_H2) {
        Some(Alpn::H2)
    } else if protocols.http1 && offers(ALPN_HTTP11) {
        Some(Alpn::Http11)
    } else if protocols.http1 {
        Some(Alpn::None)
    } else {
        None
    }
}

/// Runs the server side of a handshake on `fd`. The caller bounds it in time (dropping it
/// cancels whatever is in flight).
pub(crate) async fn handshake(
    fd: RawSocket,
    listener: &TlsListener,
    initial: BytesMut,
) -> io::Result<(Transport, Protocol)> {
    let mut acceptor = Acceptor::default();
    // Bytes already received (after a PROXY protocol header) are the ClientHello's start.
    // The acceptor reads a copy: the session chosen below processes the ClientHello again
    // from `raw`, which keeps every byte received.
    let mut have_initial = !initial.is_empty();
    let mut raw = initial;
    let mut fed = 0;
    let accepted = loop {
        if !std::mem::take(&mut have_initial) {
            let (back, result) = rt::io::recv(fd, raw).await;
            raw = back;
            if result? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        while fed < raw.len() {
            let n = acceptor.read_tls(&mut &raw[fed..])?;
            if n == 0 {
                break;
            }
            fed += n;
        }
        match acceptor.accept() {
            Ok(None) => continue,
            Ok(Some(accepted)) => break accepted,
            Err((e, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                send_all(fd, out).await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    };
    let hello = accepted.client_hello();
    let offered: Option<Vec<&[u8]>> = hello.alpn().map(Iterator::collect);
    let Some(alpn) = choose(listener.protocols, offered.as_deref()) else {
        send_all(fd, NO_APPLICATION_PROTOCOL.to_vec()).await;
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "client offered no ALPN protocol this listener serves",
        ));
    };
    let configs = listener.configs();
    let config: Arc<ServerConfig> = Arc::clone(match alpn {
        Alpn::H2 => &configs.h2,
        Alpn::Http11 => &configs.http11,
        Alpn::None => &configs.none,
    });
    drop(accepted);
    let conn = UnbufferedServerConnection::new(config)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let transport = Transport::tls(fd, conn, raw);
    transport.complete_handshake().await?;
    let protocol = match transport.alpn_protocol().as_deref() {
        Some(ALPN_H2) => Protocol::Http2,
        _ => Protocol::Http1,
    };
    Ok((transport, protocol))
}

/// Best effort: sends `bytes` (an alert) before the connection is closed.
async fn send_all(fd: RawSocket, bytes: Vec<u8>) {
    let mut buf = crate::sys::driver::SendBuf::new();
    buf.push(bytes.into());
    while !buf.is_empty() {
        let (result, back) = rt::io::send(fd, buf).await;
        buf = back;
        match result {
            Ok(n) if n > 0 => buf.advance(n),
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: Protocols = Protocols { http1: true, h2: true };
    const H1: Protocols = Protocols { http1: true, h2: false };
    const H2: Protocols = Protocols { http1: false, h2: true };

    #[test]
    fn alpn_policy() {
        let both: &[&[u8]] = &[b"h2", b"http/1.1"];
        let h11: &[&[u8]] = &[b"http/1.1"];
        let other: &[&[u8]] = &[b"spdy/3", b"h3"];
        assert_eq!(choose(BOTH, Some(both)), Some(Alpn::H2));
        assert_eq!(choose(BOTH, Some(h11)), Some(Alpn::Http11));
        assert_eq!(choose(BOTH, Some(other)), Some(Alpn::None));
        assert_eq!(choose(BOTH, None), Some(Alpn::None));
        assert_eq!(choose(H1, Some(both)), Some(Alpn::Http11));
        assert_eq!(choose(H1, None), Some(Alpn::None));
        assert_eq!(choose(H2, Some(both)), Some(Alpn::H2));
        assert_eq!(choose(H2, Some(h11)), None);
        assert_eq!(choose(H2, None), None);
    }
}

//! What one listener serves: its address, its protocols, and TLS or cleartext.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::sys::OwnedSocket;
use crate::tls::TlsSettings;

/// Listening sockets this process was given instead of binding them (systemd socket
/// activation: one; a running Peregrine handing over during an upgrade: its whole
/// `SO_REUSEPORT` group, so no connection queued on any of them is lost). Every socket gets
/// at least one reactor accepting from it.
#[derive(Debug, Clone)]
pub struct InheritedSocket(pub(crate) Vec<Arc<OwnedSocket>>);

impl InheritedSocket {
    /// Adopts the listening socket at descriptor `fd`, checked to be open and listening.
    #[cfg(target_os = "linux")]
    pub fn adopt(fd: i32) -> io::Result<InheritedSocket> {
        crate::sys::driver::adopt_inherited_listener(fd).map(|s| InheritedSocket(vec![Arc::new(s)]))
    }

    /// The path of the Unix domain socket it is, if it is one (bound to a path).
    pub fn unix_path(&self) -> Option<std::path::PathBuf> {
        #[cfg(unix)]
        {
            let addr = socket2::SockRef::from(&*self.0[0]).local_addr().ok()?;
            addr.as_pathname().map(|p| p.to_path_buf())
        }
        #[cfg(not(unix))]
        None
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        socket2::SockRef::from(&*self.0[0])
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))
    }
}

/// The HTTP versions a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols {
    /// HTTP/1.1 (and 1.0).
    pub http1: bool,
    /// HTTP/2: by ALPN `h2` over TLS, by prior knowledge (h2c) on cleartext.
    pub h2: bool,
}

impl Protocols {
    /// HTTP/1.1 and HTTP/2 (the default).
    pub const BOTH: Protocols = Protocols { http1: true, h2: true };
    /// HTTP/1.1 only.
    pub const HTTP1: Protocols = Protocols { http1: true, h2: false };
    /// HTTP/2 only.
    pub const H2: Protocols = Protocols { http1: false, h2: true };
}

impl Default for Protocols {
    fn default() -> Self {
        Protocols::BOTH
    }
}

/// One listener.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    /// Where to listen (port 0 picks a free port; see `Server::local_addrs`).
    pub address: SocketAddr,
    /// What it serves.
    pub protocols: Protocols,
    /// TLS settings; `None`: cleartext.
    pub tls: Option<TlsSettings>,
    /// Peers (networks) whose connections start with a PROXY protocol header (v1 or v2),
    /// which is then required and read before anything else; from other peers a header is
    /// never parsed. Empty: no PROXY protocol.
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
    /// Client networks let in (empty: every one not denied).
    pub allow: Vec<ipnet::IpNet>,
    /// Client networks refused at accept, before TLS (deny wins over allow).
    pub deny: Vec<ipnet::IpNet>,
    /// This listener's own per-client limits (`None`: the server's, from `Limits`).
    pub client_limits: Option<peregrine_limits::ClientLimits>,
    /// A socket to serve instead of binding `address` (which is then its address).
    pub inherited: Option<InheritedSocket>,
    /// A Unix domain socket to listen on instead of `address` (which is then unused).
    pub unix: Option<UnixSocket>,
}

/// A Unix domain socket listener: its path, and who may connect to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocket {
    /// The socket file. One left behind by a server that is gone (nothing accepts on it) is
    /// replaced; one a live server listens on, or a file that is not a socket, is an error.
    pub path: std::path::PathBuf,
    /// Permission bits of the socket file, e.g. `0o660` (connecting needs write permission);
    /// `None`: what the umask leaves.
    pub mode: Option<u32>,
    /// Numeric user and group to own the socket file; `None`: the server's.
    pub owner: Option<(u32, u32)>,
}

impl ListenerSpec {
    /// A TLS listener serving both protocols (chosen by ALPN).
    pub fn tls(address: SocketAddr, tls: TlsSettings) -> ListenerSpec {
        ListenerSpec {
            address,
            protocols: Protocols::BOTH,
            tls: Some(tls),
            proxy_protocol_from: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            client_limits: None,
            inherited: None,
            unix: None,
        }
    }

    /// A cleartext listener on a Unix domain socket, serving both protocols.
    pub fn unix(socket: UnixSocket) -> ListenerSpec {
        ListenerSpec {
            unix: Some(socket),
            ..ListenerSpec::from(SocketAddr::from(([0, 0, 0, 0], 0)))
        }
    }

    /// The same listener, served on `socket` (inherited) instead of binding its address.
    pub fn on_inherited(self, socket: InheritedSocket) -> io::Result<ListenerSpec> {
        let address = match (&self.unix, socket.local_addr()) {
            (_, Ok(address)) => address,
            // A Unix socket has no IP address: the path says where it is.
            (Some(_), Err(_)) => self.address,
            (None, Err(e)) => return Err(e),
        };
        Ok(ListenerSpec { address, inherited: Some(socket), ..self })
    }

    /// The same listener with other protocols.
    pub fn with_protocols(self, protocols: Protocols) -> ListenerSpec {
        ListenerSpec { protocols, ..self }
    }

    /// The same listener, expecting a PROXY protocol header from peers in `from`.
    pub fn with_proxy_protocol(self, from: Vec<ipnet::IpNet>) -> ListenerSpec {
        ListenerSpec { proxy_protocol_from: from, ..self }
    }

    /// The same listener, letting in only `allow` (empty: everyone) minus `deny`.
    pub fn with_access(self, allow: Vec<ipnet::IpNet>, deny: Vec<ipnet::IpNet>) -> ListenerSpec {
        ListenerSpec { allow, deny, ..self }
    }

    /// Whether it runs TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// A cleartext listener serving both protocols.
impl From<SocketAddr> for ListenerSpec {
    fn from(address: SocketAddr) -> ListenerSpec {
        ListenerSpec {
            address,
            protocols: Protocols::BOTH,
            tls: None,
            proxy_protocol_from: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            client_limits: None,
            inherited: None,
            unix: None,
        }
    }
}

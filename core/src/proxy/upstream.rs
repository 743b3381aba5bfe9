//! Upstream servers: parsing their addresses (`http://host:port`, `unix:/path`) and
//! resolving host names. Resolution happens when the config is loaded, on the thread that
//! loads it, never on a reactor: the request path only ever sees socket addresses.

use std::fmt;
use std::net::ToSocketAddrs;
use std::path::PathBuf;

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use socket2::SockAddr;

/// One upstream server, resolved.
#[derive(Clone)]
pub struct UpstreamServer {
    /// As the user wrote it, for logs and metrics.
    pub(crate) name: String,
    /// The same, shared by every access log line that names it.
    pub(crate) shared_name: std::sync::Arc<str>,
    /// Where to connect: resolved at load, and again every `resolve_every` when the server
    /// is named by a host name (the watcher thread swaps it; cores read it per connect).
    addr: Arc<arc_swap::ArcSwap<SockAddr>>,
    /// `host:port` to resolve again, when the address came from a host name.
    pub(crate) resolvable: Option<String>,
    /// The `Host` an active health check sends (the authority; `localhost` for a Unix
    /// socket).
    host: String,
    /// Share of the requests, relative to the group's other servers.
    pub(crate) weight: u32,
    /// Used only when every other server is being skipped.
    pub(crate) backup: bool,
    /// TLS to this server (`https://`), verified.
    pub(crate) tls: Option<UpstreamTls>,
    /// Spoken to in HTTP/2 (`h2c://` with prior knowledge, `h2://` over TLS): many requests
    /// multiplexed on one connection, trailers passed through (gRPC).
    pub(crate) http2: bool,
}

/// How to speak TLS to an upstream server: the verifying client config and the name its
/// certificate must carry (also sent as SNI).
#[derive(Clone)]
pub(crate) struct UpstreamTls {
    pub(crate) config: Arc<rustls::ClientConfig>,
    pub(crate) name: ServerName<'static>,
}

impl fmt::Debug for UpstreamServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl UpstreamServer {
    /// Parses and resolves an upstream address: `http://host:port` (port 80 when left out),
    /// `h2c://host:port` (HTTP/2 with prior knowledge, for gRPC services; 80),
    /// `h2://host:port` (HTTP/2 over TLS, agreed by ALPN, verified as `https://` is; 443),
    /// `https://host:port` (443; the certificate verified against the system's roots for
    /// the host's name, see [`with_ca_pem`](Self::with_ca_pem)), `host:port`, or
    /// `unix:/path/to.sock`. A host name resolves to its first address.
    pub fn parse(spec: &str) -> Result<UpstreamServer, UpstreamError> {
        let name = spec.to_string();
        let shared_name: Arc<str> = name.as_str().into();
        if let Some(path) = spec.strip_prefix("unix:") {
            let path = PathBuf::from(path.trim_start_matches("//"));
            if path.as_os_str().is_empty() {
                return Err(UpstreamError::Invalid(name));
            }
            let addr =
                SockAddr::unix(&path).map_err(|e| UpstreamError::Resolve(name.clone(), e))?;
            let addr = Arc::new(arc_swap::ArcSwap::from_pointee(addr));
            return Ok(UpstreamServer {
                name,
                shared_name,
                addr,
                resolvable: None,
                host: "localhost".into(),
                weight: 1,
                backup: false,
                tls: None,
                http2: false,
            });
        }
        let (rest, https, http2) = match spec.split_once("://") {
            Some(("http", rest)) => (rest, false, false),
            Some(("https", rest)) => (rest, true, false),
            Some(("h2c", rest)) => (rest, false, true),
            Some(("h2", rest)) => (rest, true, true),
            Some((scheme, _)) => return Err(UpstreamError::UnsupportedScheme(scheme.to_string())),
            None => (spec, false, false),
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || authority.contains('@') {
            return Err(UpstreamError::Invalid(name));
        }
        let with_port = match (has_port(authority), https) {
            (true, _) => authority.to_string(),
            (false, true) => format!("{authority}:443"),
            (false, false) => format!("{authority}:80"),
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| UpstreamError::Resolve(name.clone(), e))?
            .next()
            .ok_or_else(|| {
                UpstreamError::Resolve(name.clone(), std::io::ErrorKind::NotFound.into())
            })?;
        let tls = match https {
            true => Some(UpstreamTls {
                config: with_alpn(system_roots()?, http2),
                name: server_name(authority, &name)?,
            }),
            false => None,
        };
        let host_is_literal =
            authority.trim_start_matches('[').starts_with(|c: char| c.is_ascii_digit())
                || authority.starts_with('[');
        let resolvable = (!host_is_literal).then_some(with_port);
        let addr = Arc::new(arc_swap::ArcSwap::from_pointee(SockAddr::from(addr)));
        let host = authority.to_string();
        Ok(UpstreamServer {
            name,
            shared_name,
            addr,
            resolvable,
            host,
            weight: 1,
            backup: false,
            tls,
            http2,
        })
    }

    /// Verifies this server's certificate against the CA certificates in `pem` (PEM text)
    /// instead of the system's roots: for a private CA. No effect on a cleartext server.
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<UpstreamServer, UpstreamError> {
        if let Some(tls) = &mut self.tls {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| UpstreamError::Ca(e.to_string()))?;
                roots.add(cert).map_err(|e| UpstreamError::Ca(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(UpstreamError::Ca("no certificate in the CA file".into()));
            }
            tls.config = with_alpn(client_config(roots)?, self.http2);
        }
        Ok(self)
    }

    /// The `Host` an active health check sends.
    pub(crate) fn host_header(&self) -> &str {
        &self.host
    }

    /// Where to connect now.
    pub(crate) fn addr(&self) -> Arc<SockAddr> {
        self.addr.load_full()
    }

    /// Resolves the host name again (on the watcher thread); true when the address changed.
    pub(crate) fn resolve_again(&self) -> std::io::Result<bool> {
        let Some(host) = &self.resolvable else { return Ok(false) };
        let found = host.to_socket_addrs()?.next().ok_or(std::io::ErrorKind::NotFound)?;
        let found = SockAddr::from(found);
        if self.addr().as_socket() == found.as_socket() {
            return Ok(false);
        }
        self.addr.store(Arc::new(found));
        Ok(true)
    }

    /// The address as the user wrote it.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The name an upstream's certificate must carry: the authority's host.
fn server_name(authority: &str, spec: &str) -> Result<ServerName<'static>, UpstreamError> {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    ServerName::try_from(host.to_string()).map_err(|_| UpstreamError::Invalid(spec.to_string()))
}

/// A client config verifying against the system's trusted roots, loaded once per process
/// (when the config is loaded, never on a reactor). A system without any leaves the store
/// empty, with a warning: every `https://` upstream then fails verification (502) unless it
/// names its own CA.
fn system_roots() -> Result<Arc<rustls::ClientConfig>, UpstreamError> {
    static SYSTEM: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    "no trusted root certificates found on this system: https:// upstreams \
                     will fail verification unless they name a CA (tls_ca)"
                );
            }
            client_config(roots).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(UpstreamError::Ca)
}

/// `config` offering the protocol the server is spoken to in by ALPN: `h2` for an HTTP/2
/// server (`h2://`), else `http/1.1` as `config` already does.
fn with_alpn(config: Arc<rustls::ClientConfig>, http2: bool) -> Arc<rustls::ClientConfig> {
    if !http2 {
        return config;
    }
    let mut h2 = (*config).clone();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(h2)
}

/// A verifying TLS client config (ring, TLS 1.2 and 1.3, ALPN `http/1.1`).
fn client_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, UpstreamError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Ca(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Whether an authority ends in `:port` (an IPv6 literal's colons are inside brackets).
fn has_port(authority: &str) -> bool {
    if authority.starts_with('[') {
        authority.contains("]:")
    } else {
        authority.contains(':')
    }
}

/// Why an upstream address was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum UpstreamError {
    /// Not `http://`, `unix:` or a bare `host:port`.
    UnsupportedScheme(String),
    /// Not an address at all.
    Invalid(String),
    /// The host name did not resolve.
    Resolve(String, std::io::Error),
    /// The CA certificates to verify an `https://` server with could not be loaded.
    Ca(String),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::UnsupportedScheme(s) => {
                write!(
                    f,
                    "upstream scheme `{s}` is not supported (use http://host:port, https://host:port or unix:/path)"
                )
            }
            UpstreamError::Invalid(s) => {
                write!(f, "`{s}` is not an upstream address (use http://host:port, https://host:port or unix:/path)")
            }
            UpstreamError::Resolve(s, e) => write!(f, "upstream `{s}` did not resolve: {e}"),
            UpstreamError::Ca(e) => write!(f, "upstream TLS: {e}"),
        }
    }
}

impl std::error::Error for UpstreamError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_a_user_writes() {
        let a = UpstreamServer::parse("http://127.0.0.1:5000").unwrap();
        assert_eq!(a.addr().as_socket(), Some("127.0.0.1:5000".parse().unwrap()));
        let b = UpstreamServer::parse("127.0.0.1:81/").unwrap();
        assert_eq!(b.addr().as_socket(), Some("127.0.0.1:81".parse().unwrap()));
        let c = UpstreamServer::parse("http://[::1]").unwrap();
        assert_eq!(c.addr().as_socket(), Some("[::1]:80".parse().unwrap()));
        let tls = UpstreamServer::parse("https://127.0.0.1").unwrap();
        assert_eq!(tls.addr().as_socket(), Some("127.0.0.1:443".parse().unwrap()));
        let h2 = UpstreamServer::parse("h2c://127.0.0.1:50051").unwrap();
        assert!(h2.http2 && !a.http2 && h2.tls.is_none());
        let h2_tls = UpstreamServer::parse("h2://127.0.0.1").unwrap();
        assert!(h2_tls.http2);
        assert_eq!(h2_tls.addr().as_socket(), Some("127.0.0.1:443".parse().unwrap()));
        assert_eq!(h2_tls.tls.unwrap().config.alpn_protocols, vec![b"h2".to_vec()]);
        let tls_alpn = &tls.tls.as_ref().unwrap().config.alpn_protocols;
        assert_eq!(tls_alpn, &vec![b"http/1.1".to_vec()]);
        assert_eq!(h2.addr().as_socket(), Some("127.0.0.1:50051".parse().unwrap()));
        assert!(
            a.resolvable.is_none() && c.resolvable.is_none(),
            "literals are not resolved again"
        );
        let d = UpstreamServer::parse("http://localhost:9").unwrap();
        assert_eq!(d.resolvable.as_deref(), Some("localhost:9"));
        assert!(d.addr().as_socket().is_some_and(|a| a.ip().is_loopback() && a.port() == 9));
        #[cfg(unix)]
        assert_eq!(
            UpstreamServer::parse("unix:/run/app.sock")
                .unwrap()
                .addr()
                .as_pathname()
                .map(std::path::Path::to_path_buf),
            Some(std::path::PathBuf::from("/run/app.sock"))
        );
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        assert!(matches!(
            UpstreamServer::parse("ftp://x:1"),
            Err(UpstreamError::UnsupportedScheme(s)) if s == "ftp"
        ));
        assert!(matches!(UpstreamServer::parse("http://a:1/path"), Err(UpstreamError::Invalid(_))));
        assert!(matches!(UpstreamServer::parse("unix:"), Err(UpstreamError::Invalid(_))));
        assert!(matches!(
            UpstreamServer::parse("http://no-such-host.invalid:80"),
            Err(UpstreamError::Resolve(..))
        ));
    }
}

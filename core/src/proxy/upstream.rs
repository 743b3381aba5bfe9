//! Upstream servers: parsing their addresses (`http://host:port`, `unix:/path`) and
//! resolving host names. Resolution happens when the config is loaded, on the thread that
//! loads it, never on a reactor: the request path only ever sees socket addresses.

use std::fmt;
use std::net::ToSocketAddrs;
use std::path::PathBuf;

use socket2::SockAddr;

/// One upstream server, resolved.
#[derive(Clone)]
pub struct UpstreamServer {
    /// As the user wrote it, for logs and metrics.
    pub(crate) name: String,
    /// The same, shared by every access log line that names it.
    pub(crate) shared_name: std::sync::Arc<str>,
    /// Where to connect.
    pub(crate) addr: SockAddr,
    /// Share of the requests, relative to the group's other servers.
    pub(crate) weight: u32,
    /// Used only when every other server is being skipped.
    pub(crate) backup: bool,
}

impl fmt::Debug for UpstreamServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl UpstreamServer {
    /// Parses and resolves an upstream address: `http://host:port` (port 80 when left out),
    /// `host:port`, or `unix:/path/to.sock`. A host name resolves to its first address.
    pub fn parse(spec: &str) -> Result<UpstreamServer, UpstreamError> {
        let name = spec.to_string();
        if let Some(path) = spec.strip_prefix("unix:") {
            let path = PathBuf::from(path.trim_start_matches("//"));
            if path.as_os_str().is_empty() {
                return Err(UpstreamError::Invalid(name));
            }
            let addr =
                SockAddr::unix(&path).map_err(|e| UpstreamError::Resolve(name.clone(), e))?;
            let shared_name = name.as_str().into();
            return Ok(UpstreamServer { name, shared_name, addr, weight: 1, backup: false });
        }
        let rest = match spec.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => return Err(UpstreamError::UnsupportedScheme(scheme.to_string())),
            None => spec,
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || authority.contains('@') {
            return Err(UpstreamError::Invalid(name));
        }
        let with_port =
            if has_port(authority) { authority.to_string() } else { format!("{authority}:80") };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| UpstreamError::Resolve(name.clone(), e))?
            .next()
            .ok_or_else(|| {
                UpstreamError::Resolve(name.clone(), std::io::ErrorKind::NotFound.into())
            })?;
        let shared_name = name.as_str().into();
        Ok(UpstreamServer { name, shared_name, addr: addr.into(), weight: 1, backup: false })
    }

    /// The address as the user wrote it.
    pub fn name(&self) -> &str {
        &self.name
    }
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
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::UnsupportedScheme(s) => {
                write!(
                    f,
                    "upstream scheme `{s}` is not supported (use http://host:port or unix:/path)"
                )
            }
            UpstreamError::Invalid(s) => {
                write!(f, "`{s}` is not an upstream address (use http://host:port or unix:/path)")
            }
            UpstreamError::Resolve(s, e) => write!(f, "upstream `{s}` did not resolve: {e}"),
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
        assert_eq!(a.addr.as_socket(), Some("127.0.0.1:5000".parse().unwrap()));
        let b = UpstreamServer::parse("127.0.0.1:81/").unwrap();
        assert_eq!(b.addr.as_socket(), Some("127.0.0.1:81".parse().unwrap()));
        let c = UpstreamServer::parse("http://[::1]").unwrap();
        assert_eq!(c.addr.as_socket(), Some("[::1]:80".parse().unwrap()));
        let d = UpstreamServer::parse("http://localhost:9").unwrap();
        assert!(d.addr.as_socket().is_some_and(|a| a.ip().is_loopback() && a.port() == 9));
        #[cfg(unix)]
        assert_eq!(
            UpstreamServer::parse("unix:/run/app.sock").unwrap().addr.as_pathname(),
            Some(std::path::Path::new("/run/app.sock"))
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

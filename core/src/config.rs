//! The TOML config file.
//!
//! ```toml
//! threads = 2                 # default: one per CPU
//! io = "auto"                 # auto | uring | epoll
//! pin_threads = true
//! admin = "127.0.0.1:9090"    # /metrics, /healthz, /readyz; off when absent
//! access_log = "-"            # JSON lines to stdout, or a file path; off when absent
//!
//! [[listener]]
//! address = "127.0.0.1:8080"
//! protocols = ["http1", "h2"]  # default: both (h2 by prior knowledge on cleartext)
//!
//! [[listener]]
//! address = "127.0.0.1:8443"
//! [listener.tls]              # absent: cleartext
//! certificate = "/path/cert.pem"   # chain, leaf first: the default certificate
//! key = "/path/key.pem"
//! [[listener.tls.sni]]        # any number: chosen by the client's SNI server name
//! server_name = "example.com"
//! certificate = "/path/example.pem"
//! key = "/path/example.key"
//!
//! [limits]                    # any field of peregrine_limits::Limits
//! keep_alive_timeout = "130s"
//!
//! [[route]]                   # a fixed response, matched on the exact path
//! path = "/healthz"
//! status = 200
//! body = "ok"
//! content_type = "text/plain"
//!
//! [[route]]                   # the reverse proxy: see `proxy::config` for every key
//! path_prefix = "/"
//! upstream = "app"
//!
//! [[upstream]]
//! name = "app"
//! [[upstream.server]]
//! address = "http://127.0.0.1:5000"
//!
//! [[app]]                     # a hosted app: see `apps::config` for every key
//! name = "api"
//! command = "dotnet Api.dll"
//! ```
//!
//! Unknown keys are errors: a misspelt limit must not silently fall back to its default.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use crate::sys::driver::IoChoice;
use peregrine_limits::Limits;
use serde::Deserialize;

use crate::{
    CertSource, ClientAuth, ClientAuthMode, ListenerSpec, Protocols, SniCertificate, TlsSettings,
    UnixSocket,
};

mod route;
pub use route::RouteConfig;

/// The whole config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listeners, in order.
    pub listener: Vec<ListenerConfig>,
    /// Reactor threads; default one per CPU.
    pub threads: Option<usize>,
    /// `auto`, `uring` or `epoll`.
    pub io: Option<String>,
    /// Pin reactor threads to CPUs (default true).
    pub pin_threads: Option<bool>,
    /// Admin listener address (`/metrics`, `/healthz`, `/readyz`); off when absent.
    pub admin: Option<String>,
    /// Access log path, or `-` for standard output; off when absent.
    pub access_log: Option<String>,
    /// Hardening limits.
    pub limits: Limits,
    /// Routes, first match wins: fixed responses, or forwarding to an upstream.
    pub route: Vec<RouteConfig>,
    /// Settings shared by every upstream (whom to trust).
    pub proxy: crate::proxy::config::ProxySection,
    /// Named groups of upstream servers.
    pub upstream: Vec<crate::proxy::config::UpstreamConfig>,
    /// Hosted applications: processes Peregrine starts, supervises and forwards to.
    pub app: Vec<crate::apps::AppConfig>,
    /// Static file settings shared by every `root` route (the open-file cache, the disk pool).
    pub files: crate::files::FilesSection,
    /// The response cache's settings (routes opt in with `cache = true`).
    pub cache: crate::cache::CacheSection,
    /// On-the-fly compression's settings (routes opt in with `compress = true`).
    pub compression: crate::compress::CompressionSection,
}

/// One listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `host:port` (port 0 picks a free port), or `unix:/path/to.sock` (Linux).
    pub address: String,
    /// A Unix socket's permission bits, in octal (`"0660"`).
    pub socket_mode: Option<String>,
    /// A Unix socket's numeric owner, `"uid:gid"`.
    pub socket_owner: Option<String>,
    /// The name of a socket systemd passes in (`FileDescriptorName=` of the socket unit,
    /// seen in `LISTEN_FDNAMES`): this listener's settings then apply to that socket. An
    /// inherited socket without a matching name takes the listener with its address.
    pub name: Option<String>,
    /// `http1` and/or `h2`; default both.
    pub protocols: Option<Vec<String>>,
    /// TLS; absent: cleartext.
    pub tls: Option<TlsConfig>,
    /// Peers (CIDR or address) whose connections start with a PROXY protocol header (v1 or
    /// v2, required from them); never parsed from anyone else. Absent: off.
    #[serde(default)]
    pub proxy_protocol_from: Vec<String>,
    /// Client networks let in (absent: everyone not denied).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Client networks refused at accept, before TLS (deny wins over allow).
    #[serde(default)]
    pub deny: Vec<String>,
    /// `[listener.limits]`: this listener's own `max_connections_per_ip` and `rate_limit`,
    /// in place of `[limits]`'.
    pub limits: Option<peregrine_limits::ClientLimits>,
}

/// A listener's TLS section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first: the default certificate.
    pub certificate: PathBuf,
    /// PEM private key of the default certificate.
    pub key: PathBuf,
    /// More certificates, chosen by SNI server name.
    #[serde(default)]
    pub sni: Vec<SniConfig>,
    /// Client certificates (mutual TLS): `none` (default), `optional` or `required`.
    pub client_auth: Option<String>,
    /// PEM file of the CAs that issue client certificates (with `client_auth`).
    pub client_ca: Option<PathBuf>,
    /// PEM certificate revocation lists for client certificates.
    #[serde(default)]
    pub client_crls: Vec<PathBuf>,
}

/// One SNI certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniConfig {
    /// The DNS name (or `*.example.com`).
    pub server_name: String,
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl ListenerConfig {
    /// The Unix socket this listener binds, when its address is `unix:/path`.
    fn unix_socket(&self) -> Result<Option<UnixSocket>, String> {
        let Some(path) = self.address.strip_prefix("unix:") else {
            if self.socket_mode.is_some() || self.socket_owner.is_some() {
                return Err("socket_mode, socket_owner: only for a unix:/path address".into());
            }
            return Ok(None);
        };
        unix_socket(path, self.socket_mode.as_deref(), self.socket_owner.as_deref()).map(Some)
    }

    /// The IP address, or the unspecified one for a Unix socket.
    fn resolved(&self) -> Result<SocketAddr, String> {
        match self.address.starts_with("unix:") {
            true => Ok(SocketAddr::from(([0, 0, 0, 0], 0))),
            false => resolve(&self.address),
        }
    }

    /// The protocols, checked.
    fn protocols(&self) -> Result<Protocols, String> {
        let Some(names) = &self.protocols else { return Ok(Protocols::BOTH) };
        let mut p = Protocols { http1: false, h2: false };
        for name in names {
            match name.as_str() {
                "http1" | "http/1.1" => p.http1 = true,
                "h2" => p.h2 = true,
                other => {
                    return Err(format!("unknown protocol `{other}` (use \"http1\" or \"h2\")"))
                }
            }
        }
        if !p.http1 && !p.h2 {
            return Err("must name at least one protocol".into());
        }
        Ok(p)
    }

    /// The TLS settings (files are read when the server starts).
    fn tls_settings(&self) -> Result<Option<TlsSettings>, String> {
        let Some(tls) = self.tls.as_ref() else { return Ok(None) };
        Ok(Some(TlsSettings {
            certificate: CertSource::Files {
                certificate: tls.certificate.clone(),
                key: tls.key.clone(),
            },
            sni: tls
                .sni
                .iter()
                .map(|s| SniCertificate {
                    server_name: s.server_name.clone(),
                    certificate: CertSource::Files {
                        certificate: s.certificate.clone(),
                        key: s.key.clone(),
                    },
                })
                .collect(),
            client_auth: client_auth(
                tls.client_auth.as_deref(),
                tls.client_ca.as_ref(),
                &tls.client_crls,
            )?,
        }))
    }
}

/// A Unix socket listener from its path (`unix:` removed) and its optional octal mode and
/// numeric `uid:gid` owner (config file or CLI).
pub fn unix_socket(
    path: &str,
    mode: Option<&str>,
    owner: Option<&str>,
) -> Result<UnixSocket, String> {
    if cfg!(not(unix)) {
        return Err("address: unix sockets are not supported on this system".into());
    }
    let path = path.trim_start_matches("//");
    if !path.starts_with('/') {
        return Err(format!("address: `unix:{path}` needs an absolute path"));
    }
    let mode = match mode {
        Some(m) => Some(
            u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| format!("socket_mode: `{m}` is not an octal mode like \"0660\""))?,
        ),
        None => None,
    };
    let owner = match owner {
        Some(o) => {
            let ids = o.split_once(':').and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
            Some(ids.ok_or_else(|| format!("socket_owner: `{o}` is not a numeric uid:gid"))?)
        }
        None => None,
    };
    Ok(UnixSocket { path: path.into(), mode, owner })
}

/// Client certificate settings from their three parts (config file or CLI): a mode other
/// than `none` needs a CA file, and a CA file needs a mode.
pub fn client_auth(
    mode: Option<&str>,
    ca: Option<&PathBuf>,
    crls: &[PathBuf],
) -> Result<Option<ClientAuth>, String> {
    let mode = match mode {
        None | Some("none") => None,
        Some(m) => Some(ClientAuthMode::parse(m)?),
    };
    match (mode, ca) {
        (None, None) if crls.is_empty() => Ok(None),
        (None, _) => {
            Err("client_ca and client_crls need client_auth (\"optional\" or \"required\")".into())
        }
        (Some(_), None) => {
            Err("client_auth needs client_ca (the PEM file of the client CAs)".into())
        }
        (Some(mode), Some(ca)) => {
            Ok(Some(ClientAuth { mode, ca: ca.clone(), crls: crls.to_vec() }))
        }
    }
}

impl Config {
    /// Reads and validates a config file. The error is one line naming the file, the line,
    /// the field and the problem.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        Config::parse(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| one_line(text, &e))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot check.
    pub fn validate(&self) -> Result<(), String> {
        self.limits.validate()?;
        self.files.validate().map_err(|e| format!("files.{e}"))?;
        self.cache.validate().map_err(|e| format!("cache.{e}"))?;
        if self.threads == Some(0) {
            return Err("threads must be at least 1".into());
        }
        if let Some(io) = &self.io {
            io.parse::<IoChoice>().map_err(|e| format!("io: {e}"))?;
        }
        if let Some(a) = &self.admin {
            resolve(a).map_err(|e| format!("admin: {e}"))?;
        }
        for (i, l) in self.listener.iter().enumerate() {
            l.resolved().map_err(|e| format!("listener[{i}].address: {e}"))?;
            l.unix_socket().map_err(|e| format!("listener[{i}].{e}"))?;
            l.protocols().map_err(|e| format!("listener[{i}].protocols: {e}"))?;
            nets(&l.proxy_protocol_from)
                .map_err(|e| format!("listener[{i}].proxy_protocol_from: {e}"))?;
            nets(&l.allow).map_err(|e| format!("listener[{i}].allow: {e}"))?;
            nets(&l.deny).map_err(|e| format!("listener[{i}].deny: {e}"))?;
            if let Some(own) = &l.limits {
                if own.max_connections_per_ip == Some(0) {
                    return Err(format!(
                        "listener[{i}].limits.max_connections_per_ip must be greater than 0"
                    ));
                }
                if let Some(rate) = &own.rate_limit {
                    rate.validate(&format!("listener[{i}].limits.rate_limit"))?;
                }
            }
            for (j, sni) in l.tls.iter().flat_map(|t| t.sni.iter()).enumerate() {
                if sni.server_name.trim().is_empty() {
                    return Err(format!("listener[{i}].tls.sni[{j}].server_name: empty"));
                }
            }
        }
        for (i, u) in self.upstream.iter().enumerate() {
            if self.upstream[..i].iter().any(|o| o.name == u.name) {
                return Err(format!("upstream[{i}].name: `{}` is used twice", u.name));
            }
            u.proxy_config(&self.proxy).map_err(|e| format!("upstream[{i}] ({}): {e}", u.name))?;
        }
        for (i, a) in self.app.iter().enumerate() {
            if self.app[..i].iter().any(|o| o.name == a.name) {
                return Err(format!("app[{i}].name: `{}` is used twice", a.name));
            }
            a.validate().map_err(|e| format!("app[{i}] ({}).{e}", a.name))?;
        }
        for (i, r) in self.route.iter().enumerate() {
            r.validate(&self.upstream, &self.app).map_err(|e| format!("route[{i}].{e}"))?;
        }
        Ok(())
    }

    /// The `ASPNETCORE_APPL_PATH` of app `name`: the path prefix of the first route to it
    /// that does not strip it (`/` when there is none).
    pub fn app_path_base(&self, name: &str) -> String {
        self.route
            .iter()
            .filter(|r| r.app.as_deref() == Some(name) && !r.strip_prefix)
            .find_map(|r| r.path_prefix.as_deref())
            .map(|p| p.trim_end_matches('/'))
            .filter(|p| !p.is_empty())
            .unwrap_or("/")
            .to_string()
    }

    /// The IP listeners' addresses, resolved (Unix socket listeners left out).
    pub fn listen_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        self.listener
            .iter()
            .filter(|l| !l.address.starts_with("unix:"))
            .map(|l| resolve(&l.address))
            .collect()
    }

    /// The listeners: resolved addresses, protocols, TLS settings.
    pub fn listeners(&self) -> Result<Vec<ListenerSpec>, String> {
        self.listener
            .iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(ListenerSpec {
                    address: l.resolved().map_err(|e| format!("listener[{i}].address: {e}"))?,
                    protocols: l
                        .protocols()
                        .map_err(|e| format!("listener[{i}].protocols: {e}"))?,
                    tls: l.tls_settings().map_err(|e| format!("listener[{i}].tls: {e}"))?,
                    proxy_protocol_from: nets(&l.proxy_protocol_from)
                        .map_err(|e| format!("listener[{i}].proxy_protocol_from: {e}"))?,
                    allow: nets(&l.allow).map_err(|e| format!("listener[{i}].allow: {e}"))?,
                    deny: nets(&l.deny).map_err(|e| format!("listener[{i}].deny: {e}"))?,
                    client_limits: l.limits,
                    inherited: None,
                    unix: l.unix_socket().map_err(|e| format!("listener[{i}].{e}"))?,
                })
            })
            .collect()
    }
}

/// Resolves `host:port` (an IP literal, or a name such as `localhost`).
pub fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = address.parse() {
        return Ok(addr);
    }
    address
        .to_socket_addrs()
        .map_err(|e| format!("`{address}` is not a host:port address ({e})"))?
        .next()
        .ok_or_else(|| format!("`{address}` resolves to no address"))
}

/// Turns a TOML error into one line: where, which line of the file, and what.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
            format!("line {line_no} (`{line}`): {message}")
        }
        None => message,
    }
}

/// A list of networks (see [`parse_net`]).
pub fn nets(list: &[String]) -> Result<Vec<ipnet::IpNet>, String> {
    list.iter().map(|n| parse_net(n)).collect()
}

/// A network for a trust list: CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address.
pub fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{s}` is not an address or a CIDR network"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_parses() {
        let c = Config::parse(
            "threads = 2\nio = \"auto\"\n[[listener]]\naddress = \"127.0.0.1:0\"\n\
             [limits]\nkeep_alive_timeout = \"5s\"\n[[route]]\npath = \"/hi\"\nbody = \"hi\"\n",
        )
        .unwrap();
        assert_eq!(c.threads, Some(2));
        assert_eq!(c.limits.keep_alive_timeout, std::time::Duration::from_secs(5));
        assert_eq!(c.route[0].status, 200);
        assert_eq!(c.listen_addrs().unwrap()[0].port(), 0);
    }

    #[test]
    fn errors_are_one_line_and_name_the_field() {
        let e = Config::parse("threads = 2\n[limits]\nkeep_alive_timeot = \"5s\"\n").unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("keep_alive_timeot") && e.contains("line 3"), "{e}");
        let e = Config::parse("threads = \"many\"\n").unwrap_err();
        assert!(e.contains("threads") && !e.contains('\n'), "{e}");
        let e = Config::parse("io = \"kqueue\"\n").unwrap_err();
        assert!(e.starts_with("io:"), "{e}");
        let e = Config::parse("[[route]]\npath = \"x\"\n").unwrap_err();
        assert!(e.contains("route[0].path"), "{e}");
        let e = Config::parse("[[listener]]\naddress = \"nope\"\n").unwrap_err();
        assert!(e.contains("listener[0].address"), "{e}");
        let e = Config::parse("[[listener]]\naddress = \"127.0.0.1:0\"\nprotocols = [\"h3\"]\n")
            .unwrap_err();
        assert!(e.contains("listener[0].protocols") && e.contains("h3"), "{e}");
        let e = Config::parse(
            "[[listener]]\naddress = \"127.0.0.1:0\"\n[listener.tls]\ncertificate = \"c\"\n",
        )
        .unwrap_err();
        assert!(e.contains("key"), "{e}");
    }

    #[test]
    fn file_cache_and_compression_keys_are_checked() {
        let err = |text: &str| Config::parse(text).unwrap_err();
        let e = err("[[route]]\npath_prefix = \"/\"\nroot = \"/nonexistent/peregrine\"\n");
        assert!(e.contains("route[0]") && e.contains("root"), "{e}");
        let e = err("[[route]]\npath = \"/x\"\nbody = \"x\"\ncache = true\n");
        assert!(e.contains("route[0].cache"), "{e}");
        let e = err("[[route]]\npath = \"/x\"\nindex = [\"a.html\"]\n");
        assert!(e.contains("need root"), "{e}");
        let dir = std::env::temp_dir().display().to_string().replace('\\', "/");
        let e = err(&format!("[[route]]\npath = \"/x\"\nroot = \"{dir}\"\n"));
        assert!(e.contains("path_prefix"), "{e}");
        let e =
            err(&format!("[[route]]\npath_prefix = \"/\"\nroot = \"{dir}\"\nindex = [\"a/b\"]\n"));
        assert!(e.contains("index"), "{e}");
        assert!(err("[files]\ndisk_threads = 0\n").contains("files.disk_threads"));
        assert!(err("[files]\nmax_ranges = 0\n").contains("files.max_ranges"));
        assert!(err("[cache]\nstatuses = [42]\n").contains("cache.statuses"));
        assert!(err("[cache]\nstatus_header = \"x cache\"\n").contains("cache.status_header"));
        assert!(err("[compression]\ncodings = [\"deflate\"]\n").contains("deflate"));
    }

    #[test]
    fn tls_listener_with_sni_parses() {
        let c = Config::parse(
            "[[listener]]\naddress = \"127.0.0.1:8443\"\nprotocols = [\"h2\"]\n\
             [listener.tls]\ncertificate = \"/c.pem\"\nkey = \"/k.pem\"\n\
             [[listener.tls.sni]]\nserver_name = \"example.com\"\ncertificate = \"/e.pem\"\n\
             key = \"/e.key\"\n\
             [[listener]]\naddress = \"127.0.0.1:8080\"\n",
        )
        .unwrap();
        let l = c.listeners().unwrap();
        assert_eq!(l[0].protocols, Protocols::H2);
        let tls = l[0].tls.as_ref().expect("tls");
        assert!(
            matches!(&tls.certificate, CertSource::Files { key, .. } if key == Path::new("/k.pem"))
        );
        assert_eq!(tls.sni[0].server_name, "example.com");
        assert_eq!(l[1].protocols, Protocols::BOTH);
        assert!(l[1].tls.is_none());
    }

    #[test]
    fn the_sample_config_parses_with_its_h2_table() {
        let c = Config::parse(include_str!("../../deploy/peregrine.toml")).unwrap();
        assert_eq!(c.limits.h2, peregrine_limits::H2Limits::default());
        let c = Config::parse(
            "[limits.h2]\nkeep_alive_ping_interval = \"30s\"\n\
             client_resets = { max = 5, window = \"1s\" }\n",
        )
        .unwrap();
        assert_eq!(c.limits.h2.keep_alive_ping_interval, Some(std::time::Duration::from_secs(30)));
        assert_eq!(c.limits.h2.client_resets.max, 5);
        let e = Config::parse("[limits.h2]\nmax_frame_size = 10\n").unwrap_err();
        assert!(e.contains("max_frame_size"), "{e}");
    }

    #[test]
    fn proxy_routes_and_upstreams_parse() {
        let c = Config::parse(
            r#"
            [proxy]
            trusted_proxies = ["10.0.0.0/8", "192.168.1.1"]
            [[route]]
            host = "*.example.com"
            path_prefix = "/api/"
            upstream = "app"
            strip_prefix = true
            request_headers = { set = { "x-a" = "1" }, remove = ["cookie"] }
            idle_timeout = "5s"
            [[upstream]]
            name = "app"
            connect_timeout = "2s"
            balance = "header:x-user"
            resolve_every = "30s"
            health_check = { path = "/healthz", interval = "1s", expect_status = 204 }
            [[upstream.server]]
            address = "http://127.0.0.1:5000"
            weight = 3
            [[upstream.server]]
            address = "unix:/run/app.sock"
            backup = true
            "#,
        )
        .unwrap();
        let group = c.upstream[0].proxy_config(&c.proxy).unwrap();
        assert_eq!(group.connect_timeout, std::time::Duration::from_secs(2));
        assert_eq!(group.trusted_proxies.len(), 2);
        assert_eq!(group.resolve_every, Some(std::time::Duration::from_secs(30)));
        let check = group.health_check.unwrap();
        assert_eq!(
            (check.path.as_str(), check.expect_status, check.fall),
            ("/healthz", Some(204), 2)
        );
        assert_eq!(group.balance, crate::proxy::Balance::Header("x-user".parse().unwrap()));
        assert!(c.route[0].is_proxy());
        // A group speaks one protocol.
        let mixed = Config::parse(
            "[[upstream]]\nname = \"g\"\n[[upstream.server]]\naddress = \"h2c://127.0.0.1:1\"\n\
             [[upstream.server]]\naddress = \"http://127.0.0.1:2\"\n",
        );
        let e = mixed.unwrap_err().to_string();
        assert!(e.contains("upstream[0] (g): servers: a group speaks one protocol"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn unix_socket_listeners_parse_and_their_mistakes_name_their_key() {
        let c = Config::parse(
            "[[listener]]\naddress = \"unix:/run/p.sock\"\nsocket_mode = \"0660\"\n\
             socket_owner = \"0:33\"\n[[listener]]\naddress = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        let l = c.listeners().unwrap();
        let unix = l[0].unix.as_ref().expect("a unix listener");
        assert_eq!(unix.path, Path::new("/run/p.sock"));
        assert_eq!((unix.mode, unix.owner), (Some(0o660), Some((0, 33))));
        assert!(l[1].unix.is_none());
        assert_eq!(c.listen_addrs().unwrap().len(), 1, "IP listeners only");
        let unix = |keys: &str| format!("[[listener]]\naddress = \"unix:/p.sock\"\n{keys}");
        for (text, needle) in [
            ("[[listener]]\naddress = \"unix:p.sock\"\n".to_string(), "needs an absolute path"),
            (unix("socket_mode = \"0999\"\n"), "listener[0].socket_mode"),
            (unix("socket_owner = \"www:www\"\n"), "listener[0].socket_owner"),
            (
                "[[listener]]\naddress = \"127.0.0.1:0\"\nsocket_mode = \"0600\"\n".into(),
                "only for a unix",
            ),
        ] {
            let e = Config::parse(&text).unwrap_err();
            assert!(e.contains(needle), "{text}\n=> {e}\n(wanted {needle})");
        }
    }

    #[test]
    fn apps_parse_and_their_mistakes_name_their_key() {
        let c = Config::parse(
            "[[route]]\npath_prefix = \"/api/\"\napp = \"api\"\n\
             [[app]]\nname = \"api\"\ncommand = \"dotnet 'My App.dll'\"\nargs = [\"--x\"]\n\
             start = \"at_start\"\nprocesses = 2\nstartup_time_limit = \"30s\"\n",
        )
        .unwrap();
        let app = &c.app[0];
        assert_eq!(app.argv().unwrap(), ["dotnet", "My App.dll", "--x"]);
        assert_eq!(app.start, crate::apps::StartMode::AtStart);
        assert_eq!(app.startup_time_limit, std::time::Duration::from_secs(30));
        assert_eq!(app.shutdown_time_limit, std::time::Duration::from_secs(10));
        assert_eq!(c.app_path_base("api"), "/api");
        assert!(c.route[0].is_proxy());
        let app = "[[app]]\nname = \"a\"\ncommand = \"run\"\n";
        for (text, needle) in [
            ("[[route]]\napp = \"nope\"\n".to_string(), "route[0].app: no [[app]] named `nope`"),
            (
                format!("[[route]]\napp = \"a\"\nupstream = \"a\"\n{app}"),
                "route[0].app and upstream",
            ),
            ("[[app]]\nname = \"a\"\ncommand = \"run 'unclosed\"\n".into(), "app[0] (a).command"),
            ("[[app]]\nname = \"a\"\ncommand = \"\"\n".into(), "app[0] (a).command: empty"),
            (format!("{app}processes = 0\n"), "processes must be at least 1"),
            (format!("{app}start = \"later\"\n"), "later"),
            (format!("{app}ready_path = \"x\"\n"), "ready_path"),
            (format!("{app}{app}"), "app[1].name: `a` is used twice"),
        ] {
            let e = Config::parse(&text).unwrap_err();
            assert!(e.contains(needle), "{text}\n=> {e}\n(wanted {needle})");
        }
    }

    #[test]
    fn proxy_mistakes_name_their_key() {
        let up =
            "[[upstream]]\nname = \"app\"\n[[upstream.server]]\naddress = \"http://127.0.0.1:1\"\n";
        for (text, needle) in [
            ("[[route]]\nupstream = \"nope\"\n", "route[0].upstream: no [[upstream]] named `nope`"),
            ("[[route]]\npath = \"/a\"\npath_prefix = \"/b\"\nupstream = \"app\"\n", "route[0].path and path_prefix"),
            ("[[route]]\nupstream = \"app\"\nstrip_prefix = true\n", "route[0].strip_prefix: needs path_prefix"),
            ("[[route]]\nupstream = \"app\"\nrequest_headers = { remove = [\"bad name\"] }\n", "route[0].request_headers"),
            ("[[route]]\nbody = \"x\"\n", "route[0].path: a fixed response needs an exact path"),
            ("[[route]]\nhost = \"a/b\"\nupstream = \"app\"\n", "route[0].host"),
            ("[[upstream]]\nname = \"x\"\nserver = []\n", "needs at least one"),
            ("[[upstream]]\nname = \"x\"\n[[upstream.server]]\naddress = \"ftp://a:1\"\n", "server[0].address"),
            ("[[upstream]]\nname = \"x\"\n[[upstream.server]]\naddress = \"http://a:1\"\nweigth = 2\n", "weigth"),
            ("[proxy]\ntrusted_proxies = [\"ten\"]\n", "trusted_proxies"),
            ("[[upstream]]\nname = \"x\"\nbalance = \"random\"\n[[upstream.server]]\naddress = \"http://127.0.0.1:1\"\n", "balance: `random`"),
            ("[[upstream]]\nname = \"x\"\nhealth_check = { path = \"h\" }\n[[upstream.server]]\naddress = \"http://127.0.0.1:1\"\n", "health_check.path"),
        ] {
            let text = if text.starts_with("[[route]]") || text.starts_with("[proxy]") {
                format!("{text}{up}")
            } else {
                text.to_string()
            };
            let e = Config::parse(&text).unwrap_err();
            assert!(e.contains(needle), "{text}\n=> {e}\n(wanted {needle})");
        }
    }
}

//! The proxy's part of the config file: `[proxy]` (whom to trust), `[[upstream]]` groups of
//! servers, and the per-route forwarding options a `[[route]]` with `upstream = "..."` takes.
//!
//! ```toml
//! [proxy]
//! trusted_proxies = ["10.0.0.0/8"]   # their X-Forwarded-* / X-Request-Id are believed
//! forwarded_header = true            # also send RFC 7239 Forwarded
//!
//! [[upstream]]
//! name = "app"
//! connect_timeout = "5s"             # all optional; defaults shown
//! response_header_timeout = "60s"
//! idle_timeout = "60s"
//! keepalive_timeout = "60s"
//! max_idle = 1024                    # idle connections kept per server, per core
//! balance = "round_robin"            # or least_requests, client_ip, header:NAME
//! health_check = { path = "/healthz", interval = "5s", timeout = "2s", fall = 2, rise = 2 }
//! resolve_every = "30s"              # resolve host names again (default: at start only)
//! send_proxy_protocol = "v2"         # a PROXY header per upstream connection (not pooled)
//! client_cert_header = "MS-ASPNETCORE-CLIENTCERT"  # a mutual-TLS client's certificate
//!                                    # (base64 DER); "" to not forward it
//! max_fails = 3                      # failures in a row before a server is skipped
//! fail_timeout = "10s"               # ... for this long
//! max_retries = 1                    # other servers an idempotent request is sent to
//! tls_ca = "/etc/peregrine/app-ca.pem"  # https:// servers: verify with this CA, not the
//!                                    # system's roots
//! [[upstream.server]]
//! address = "http://127.0.0.1:5000"  # or https://, h2c://, h2:// (HTTP/2 over TLS), unix:/path
//! weight = 2                         # default 1
//! [[upstream.server]]
//! address = "http://127.0.0.1:5001"
//! backup = true                      # used only when every other server is skipped
//!
//! [[route]]
//! host = "*.example.com"             # optional: exact, or a wildcard for subdomains
//! path_prefix = "/api/"              # or path = "/exact"; neither: every path
//! upstream = "app"
//! strip_prefix = true                # /api/users reaches the app as /users
//! request_headers = { set = { "x-env" = "prod" }, remove = ["cookie"] }
//! response_headers = { set = { "x-frame-options" = "DENY" }, remove = ["server"] }
//! max_request_body_size = 1048576    # tighter than [limits] for this route
//! request_buffering = true           # read the whole body first (in memory, up to the
//!                                    # route's max_request_body_size, 16 MiB by default)
//! response_header_timeout = "5s"     # overrides the upstream's
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::{Balance, HealthCheck, ProxyConfig, ProxyProtocolVersion, UpstreamServer};

/// `[proxy]`: settings every upstream group shares.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxySection {
    /// Peers (CIDR or address) whose forwarded fields are believed.
    pub trusted_proxies: Vec<String>,
    /// Also send RFC 7239 `Forwarded`.
    pub forwarded_header: bool,
}

/// `[[upstream]]`: a named group of servers and how to talk to them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The name routes use.
    pub name: String,
    /// The servers, at least one.
    pub server: Vec<ServerConfig>,
    /// See [`ProxyConfig::connect_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// See [`ProxyConfig::response_header_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub response_header_timeout: Option<Duration>,
    /// See [`ProxyConfig::idle_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// See [`ProxyConfig::keepalive_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub keepalive_timeout: Option<Duration>,
    /// See [`ProxyConfig::max_idle_per_server`].
    pub max_idle: Option<usize>,
    /// See [`ProxyConfig::max_fails`].
    pub max_fails: Option<u32>,
    /// See [`ProxyConfig::max_retries`].
    pub max_retries: Option<u32>,
    /// See [`ProxyConfig::fail_timeout`].
    #[serde(default, with = "humantime_serde")]
    pub fail_timeout: Option<Duration>,
    /// PEM file of the CA(s) that sign the `https://` servers' certificates, instead of the
    /// system's trusted roots.
    pub tls_ca: Option<std::path::PathBuf>,
    /// `round_robin` (default), `least_requests`, `client_ip`, or `header:NAME`.
    pub balance: Option<String>,
    /// An active health check, run off the reactors.
    pub health_check: Option<HealthCheckConfig>,
    /// How often host names are resolved again (absent: only at start).
    #[serde(default, with = "humantime_serde")]
    pub resolve_every: Option<Duration>,
    /// `v1` or `v2`: a PROXY protocol header naming the client starts each upstream
    /// connection (which then serves that one request: not pooled).
    pub send_proxy_protocol: Option<String>,
    /// The field that carries a mutual-TLS client's certificate upstream (default
    /// `MS-ASPNETCORE-CLIENTCERT`; `""`: not forwarded).
    pub client_cert_header: Option<String>,
}

/// `health_check = { path = "/healthz", ... }` of an `[[upstream]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path requested.
    pub path: String,
    /// Time between checks (default 5 s).
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Longest a check may take (default 2 s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// The healthy status (default: any 2xx or 3xx).
    pub expect_status: Option<u16>,
    /// Failed checks in a row that mark a server down (default 2).
    pub fall: Option<u32>,
    /// Good checks in a row that mark it up again (default 2).
    pub rise: Option<u32>,
}

/// `[[upstream.server]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `http://host:port` or `unix:/path`.
    pub address: String,
    /// Share of the requests, relative to the other servers (default 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// Used only when every other server is being skipped.
    #[serde(default)]
    pub backup: bool,
}

fn one() -> u32 {
    1
}

/// Header edits of a route, one direction.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderEdits {
    /// Fields to set (replacing any the message has).
    pub set: BTreeMap<String, String>,
    /// Fields to remove.
    pub remove: Vec<String>,
}

impl HeaderEdits {
    /// The edits as typed names and values; the error names the bad one.
    pub(crate) fn build(&self) -> Result<Edits, String> {
        let name = |n: &str| {
            HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("`{n}` is not a header name"))
        };
        let set = self
            .set
            .iter()
            .map(|(n, v)| {
                let value = HeaderValue::from_str(v)
                    .map_err(|_| format!("the value of `{n}` is not a valid header value"))?;
                Ok((name(n)?, value))
            })
            .collect::<Result<_, String>>()?;
        let remove = self.remove.iter().map(|n| name(n)).collect::<Result<_, _>>()?;
        Ok(Edits { set, remove })
    }
}

/// Typed header edits.
#[derive(Debug, Clone, Default)]
pub(crate) struct Edits {
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl Edits {
    /// Whether there is nothing to edit.
    pub(crate) fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// Applies the edits: removals first, then the fields set.
    pub(crate) fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// What one route changes about forwarding.
#[derive(Debug, Clone, Default)]
pub struct RouteOptions {
    /// The path prefix to strip from the target, if any.
    pub(crate) strip_prefix: Option<String>,
    pub(crate) request_headers: Edits,
    pub(crate) response_headers: Edits,
    pub(crate) max_request_body_size: Option<u64>,
    /// Read the whole request body before forwarding (see `request_buffering`).
    pub(crate) request_buffering: bool,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) response_header_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
}

impl RouteOptions {
    /// The forwarding options of `route`; the error names the bad key.
    pub(crate) fn of(route: &crate::config::RouteConfig) -> Result<RouteOptions, String> {
        Ok(RouteOptions {
            strip_prefix: route.strip_prefix.then(|| route.path_prefix.clone()).flatten(),
            request_headers: route
                .request_headers
                .build()
                .map_err(|e| format!("request_headers: {e}"))?,
            response_headers: route
                .response_headers
                .build()
                .map_err(|e| format!("response_headers: {e}"))?,
            max_request_body_size: route.max_request_body_size,
            request_buffering: route.request_buffering,
            connect_timeout: route.connect_timeout,
            response_header_timeout: route.response_header_timeout,
            idle_timeout: route.idle_timeout,
        })
    }
}

impl UpstreamConfig {
    /// The group as a [`ProxyConfig`], its servers resolved (here, off the reactors).
    pub fn proxy_config(&self, section: &ProxySection) -> Result<ProxyConfig, String> {
        if self.server.is_empty() {
            return Err("needs at least one [[upstream.server]]".into());
        }
        let ca = match &self.tls_ca {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| format!("tls_ca: {}: {e}", path.display()))?)
            }
            None => None,
        };
        let mut servers = Vec::with_capacity(self.server.len());
        for (i, s) in self.server.iter().enumerate() {
            let mut server = UpstreamServer::parse(&s.address)
                .map_err(|e| format!("server[{i}].address: {e}"))?;
            if let Some(pem) = &ca {
                server = server.with_ca_pem(pem).map_err(|e| format!("tls_ca: {e}"))?;
            }
            if s.weight == 0 {
                return Err(format!("server[{i}].weight: must be at least 1"));
            }
            server.weight = s.weight;
            server.backup = s.backup;
            servers.push(server);
        }
        if servers.iter().all(|s| s.backup) {
            return Err("every server is a backup: at least one must not be".into());
        }
        if servers.iter().any(|s| s.http2 != servers[0].http2) {
            return Err("servers: a group speaks one protocol (all HTTP/2 or none)".into());
        }
        let mut config = ProxyConfig::new(servers);
        config.trusted_proxies = section
            .trusted_proxies
            .iter()
            .map(|s| crate::config::parse_net(s))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("[proxy] trusted_proxies: {e}"))?;
        config.forwarded_header = section.forwarded_header;
        let d = ProxyConfig::new(Vec::new());
        config.connect_timeout = self.connect_timeout.unwrap_or(d.connect_timeout);
        config.response_header_timeout =
            self.response_header_timeout.unwrap_or(d.response_header_timeout);
        config.idle_timeout = self.idle_timeout.unwrap_or(d.idle_timeout);
        config.keepalive_timeout = self.keepalive_timeout.unwrap_or(d.keepalive_timeout);
        config.max_idle_per_server = self.max_idle.unwrap_or(d.max_idle_per_server);
        config.max_fails = self.max_fails.unwrap_or(d.max_fails);
        config.max_retries = self.max_retries.unwrap_or(d.max_retries);
        config.fail_timeout = self.fail_timeout.unwrap_or(d.fail_timeout);
        config.resolve_every = self.resolve_every;
        config.send_proxy_protocol = match self.send_proxy_protocol.as_deref() {
            None => None,
            Some("v1") => Some(ProxyProtocolVersion::V1),
            Some("v2") => Some(ProxyProtocolVersion::V2),
            Some(other) => return Err(format!("send_proxy_protocol: `{other}` (use v1 or v2)")),
        };
        match self.client_cert_header.as_deref() {
            None => {}
            Some("") => config.client_cert_header = None,
            Some(name) => {
                let name = http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("client_cert_header: `{name}` is not a field name"))?;
                config.client_cert_header = Some(name);
            }
        }
        if let Some(h) = &self.health_check {
            if !h.path.starts_with('/') {
                return Err(format!("health_check.path: `{}` must start with `/`", h.path));
            }
            let d = HealthCheck::new(&h.path);
            config.health_check = Some(HealthCheck {
                path: h.path.clone(),
                interval: h.interval.unwrap_or(d.interval),
                timeout: h.timeout.unwrap_or(d.timeout),
                expect_status: h.expect_status,
                fall: h.fall.unwrap_or(d.fall),
                rise: h.rise.unwrap_or(d.rise),
            });
        }
        config.balance = match self.balance.as_deref() {
            None | Some("round_robin") => Balance::RoundRobin,
            Some("least_requests") => Balance::LeastRequests,
            Some("client_ip") => Balance::ClientIp,
            Some(other) => match other.strip_prefix("header:") {
                Some(name) => Balance::Header(
                    HeaderName::from_bytes(name.trim().as_bytes())
                        .map_err(|_| format!("balance: `{name}` is not a header name"))?,
                ),
                None => {
                    return Err(format!(
                        "balance: `{other}` (use round_robin, least_requests, client_ip or \
                         header:NAME)"
                    ))
                }
            },
        };
        Ok(config)
    }
}

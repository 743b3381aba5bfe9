//! `[[route]]`: where requests go, first match wins. A fixed response, or forwarding to an
//! `[[upstream]]` with the route's options; and who may use it (allow/deny, a rate).

use serde::Deserialize;

use super::nets;

/// A route: where requests matching its host and path go. First match wins. It answers
/// with a fixed response (`status`, `body`, `content_type`) or forwards to an upstream
/// group (`upstream`, with the forwarding keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Matches this exact request path, e.g. `/healthz`.
    pub path: Option<String>,
    /// Matches paths under this prefix, e.g. `/api/` (neither `path` nor `path_prefix`:
    /// every path).
    pub path_prefix: Option<String>,
    /// Matches this host (the `Host` field or HTTP/2 `:authority`, port ignored): exact, or
    /// `*.example.com` for its subdomains. Absent: every host.
    pub host: Option<String>,
    /// Forwards to the `[[upstream]]` of this name.
    pub upstream: Option<String>,
    /// Forwards to the hosted `[[app]]` of this name (started on demand).
    pub app: Option<String>,
    /// With `path_prefix`: removes the prefix from the target sent upstream.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Fields set on / removed from requests sent upstream.
    #[serde(default)]
    pub request_headers: crate::proxy::config::HeaderEdits,
    /// Fields set on / removed from responses sent back.
    #[serde(default)]
    pub response_headers: crate::proxy::config::HeaderEdits,
    /// A request body limit for this route, below `[limits] max_request_body_size`.
    pub max_request_body_size: Option<u64>,
    /// Read the whole request body before forwarding (nginx's `proxy_request_buffering`):
    /// the upstream gets a Content-Length, a slow client does not hold an upstream
    /// connection, and the request can be retried. In memory, up to the route's
    /// `max_request_body_size` (16 MiB when unset); past it, `413`.
    #[serde(default)]
    pub request_buffering: bool,
    /// Overrides the upstream's `connect_timeout`.
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<std::time::Duration>,
    /// Overrides the upstream's `response_header_timeout`.
    #[serde(default, with = "humantime_serde")]
    pub response_header_timeout: Option<std::time::Duration>,
    /// Overrides the upstream's `idle_timeout`.
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<std::time::Duration>,
    /// Client networks this route serves (absent: everyone not denied); others get `403`.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Client networks this route refuses with `403` (deny wins over allow).
    #[serde(default)]
    pub deny: Vec<String>,
    /// Requests per second per client on this route (IPv6 grouped by /64), shared by all
    /// cores; past it `429` with `Retry-After`.
    pub rate_limit: Option<peregrine_limits::RateLimit>,
    /// The route's rate table, made once and shared by every core's router.
    #[serde(skip)]
    rates: std::sync::OnceLock<std::sync::Arc<peregrine_limits::ClientRates>>,
    /// Caches this route's upstream or app responses (see `[cache]`).
    #[serde(default)]
    pub cache: bool,
    /// Compresses this route's responses on the fly for clients that accept it (see
    /// `[compression]`; off by default because of BREACH: see the README).
    #[serde(default)]
    pub compress: bool,
    /// Serves the files of this directory (GET and HEAD). With `upstream` or `app` too,
    /// files that exist are served and other requests go there (nginx's `try_files`).
    pub root: Option<String>,
    /// With `root`: index files tried for a path ending in `/` (default `["index.html"]`).
    pub index: Option<Vec<String>>,
    /// With `root`: precompressed siblings served by `Accept-Encoding` (default
    /// `["br", "zstd", "gzip"]`: `x.br`, `x.zst`, `x.gz`).
    pub precompressed: Option<Vec<crate::content_coding::Coding>>,
    /// With `root`: the `Cache-Control` of its files (default none).
    pub cache_control: Option<String>,
    /// With `root`: serve dot-files (default false: they are as missing).
    #[serde(default)]
    pub show_hidden: bool,
    /// With `root`: follow symlinks out of the root (default false: they are as missing).
    #[serde(default)]
    pub symlinks_outside_root: bool,
    /// The route's file server settings, made once and shared by every core's router.
    #[serde(skip)]
    file_route: std::sync::OnceLock<Option<std::sync::Arc<crate::files::FileRoute>>>,
    /// Fixed response: status code (default 200).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Fixed response: body (default empty).
    #[serde(default)]
    pub body: String,
    /// Fixed response: Content-Type (default `text/plain`).
    #[serde(default = "default_content_type")]
    pub content_type: String,
}

impl RouteConfig {
    /// A fixed response at an exact path (what embedders and tests build by hand).
    pub fn fixed(path: &str, status: u16, body: &str) -> RouteConfig {
        RouteConfig {
            path: Some(path.into()),
            path_prefix: None,
            host: None,
            upstream: None,
            app: None,
            strip_prefix: false,
            request_headers: Default::default(),
            response_headers: Default::default(),
            max_request_body_size: None,
            request_buffering: false,
            connect_timeout: None,
            response_header_timeout: None,
            idle_timeout: None,
            allow: Vec::new(),
            deny: Vec::new(),
            rate_limit: None,
            rates: std::sync::OnceLock::new(),
            cache: false,
            compress: false,
            root: None,
            index: None,
            precompressed: None,
            cache_control: None,
            show_hidden: false,
            symlinks_outside_root: false,
            file_route: std::sync::OnceLock::new(),
            status,
            body: body.into(),
            content_type: default_content_type(),
        }
    }

    /// The route's allow/deny list.
    pub(crate) fn access(&self) -> peregrine_limits::AccessList {
        // Validated at load: a bad network cannot get here from a config file.
        let list = |v: &[String]| nets(v).unwrap_or_default();
        peregrine_limits::AccessList::new(list(&self.allow), list(&self.deny))
    }

    /// The route's rate table, shared by every core (made on first use).
    pub(crate) fn rates(&self) -> Option<std::sync::Arc<peregrine_limits::ClientRates>> {
        let limit = self.rate_limit?;
        Some(std::sync::Arc::clone(self.rates.get_or_init(|| crate::clients::route_rates(limit))))
    }

    /// The file server of a route with `root`, shared by every core (made on first use; the
    /// root was checked when the config was validated, so `None` only without `root` or
    /// when the root has gone since).
    pub(crate) fn file_route(
        &self,
        section: &crate::files::FilesSection,
    ) -> Option<std::sync::Arc<crate::files::FileRoute>> {
        let root = self.root.as_ref()?;
        self.file_route
            .get_or_init(|| {
                crate::files::FileRoute::new(root, &self.file_options(), section)
                    .map_err(|e| tracing::error!("route root: {e}"))
                    .ok()
                    .map(std::sync::Arc::new)
            })
            .clone()
    }

    /// The file serving options of a route with `root`.
    pub fn file_options(&self) -> crate::files::FileOptions {
        let defaults = crate::files::FileOptions::default();
        crate::files::FileOptions {
            index: self.index.clone().unwrap_or(defaults.index),
            precompressed: self.precompressed.clone().unwrap_or(defaults.precompressed),
            cache_control: self.cache_control.clone(),
            show_hidden: self.show_hidden,
            symlinks_outside_root: self.symlinks_outside_root,
        }
    }

    /// Whether this route forwards (to an upstream or an app) rather than answering itself.
    pub fn is_proxy(&self) -> bool {
        self.upstream.is_some() || self.app.is_some()
    }

    /// The forwarding options of a proxy route.
    pub fn route_options(&self) -> Result<crate::proxy::RouteOptions, String> {
        crate::proxy::RouteOptions::of(self)
    }

    pub(super) fn validate(
        &self,
        upstreams: &[crate::proxy::config::UpstreamConfig],
        apps: &[crate::apps::AppConfig],
    ) -> Result<(), String> {
        nets(&self.allow).map_err(|e| format!("allow: {e}"))?;
        nets(&self.deny).map_err(|e| format!("deny: {e}"))?;
        if let Some(rate) = &self.rate_limit {
            rate.validate("rate_limit")?;
        }
        if self.path.is_some() && self.path_prefix.is_some() {
            return Err("path and path_prefix: give one, not both".into());
        }
        for (key, p) in [("path", &self.path), ("path_prefix", &self.path_prefix)] {
            if let Some(p) = p {
                if !p.starts_with('/') {
                    return Err(format!("{key}: `{p}` must start with `/`"));
                }
            }
        }
        if let Some(host) = &self.host {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            if bare.is_empty() || bare.contains(['*', '/', ' ']) {
                return Err(format!("host: `{host}` is not a host name or `*.domain` wildcard"));
            }
        }
        if let Some(name) = &self.app {
            if self.upstream.is_some() {
                return Err("app and upstream: give one, not both".into());
            }
            if !apps.iter().any(|a| &a.name == name) {
                return Err(format!("app: no [[app]] named `{name}`"));
            }
        }
        if let Some(name) = &self.upstream {
            if !upstreams.iter().any(|u| &u.name == name) {
                return Err(format!("upstream: no [[upstream]] named `{name}`"));
            }
        }
        let file_keys = self.index.is_some()
            || self.precompressed.is_some()
            || self.cache_control.is_some()
            || self.show_hidden
            || self.symlinks_outside_root;
        if file_keys && self.root.is_none() {
            return Err("index, precompressed, cache_control, show_hidden and \
                        symlinks_outside_root need root"
                .into());
        }
        if self.cache && !self.is_proxy() {
            return Err(
                "cache: caches an upstream's or app's responses; set upstream or app".into()
            );
        }
        if let Some(root) = &self.root {
            crate::files::FileRoute::new(root, &self.file_options(), &Default::default())?;
            if self.path.is_some() {
                return Err("root: serves a tree; match it with path_prefix, not path".into());
            }
        }
        match self.upstream.as_ref().or(self.app.as_ref()) {
            _ if self.root.is_some() && !self.is_proxy() => {}
            Some(_) => {
                if self.strip_prefix && self.path_prefix.is_none() {
                    return Err("strip_prefix: needs path_prefix".into());
                }
                self.route_options()?;
            }
            None => {
                if self.path.is_none() {
                    return Err(
                        "path: a fixed response needs an exact path (or set upstream)".into()
                    );
                }
                if !(100..=999).contains(&self.status) {
                    return Err(format!("status: {} is not a valid status code", self.status));
                }
                if http::HeaderValue::from_str(&self.content_type).is_err() {
                    return Err("content_type: not a valid header value".into());
                }
            }
        }
        Ok(())
    }
}

fn default_status() -> u16 {
    200
}

fn default_content_type() -> String {
    "text/plain".into()
}

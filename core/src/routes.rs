//! The built-in routes of the `peregrine` binary: a welcome page, the benchmark routes, an
//! echo route, fixed responses from the config file, the reverse proxy (`--proxy`) and
//! hosted apps (`--app`).

use std::future::Future;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};

use crate::apps::{AppRoute, Apps};
use crate::cache::{CacheSection, ResponseCache};
use crate::compress::{self, CompressionSection};
use crate::config::RouteConfig;
use crate::files::{Files, FilesSection};
use crate::handler::{content_type, Answer, Fixed, Head};
use crate::proxy::{Proxy, ProxyConfig, RouteOptions};
use crate::rt;
use crate::{clients, ConnectionInfo};
use crate::{Body, Handler};
use peregrine_limits::{AccessList, ClientKey, ClientRates};

/// The welcome page, shared by every core's handler: filled in once the server has bound
/// its listeners (see [`crate::overview::Overview::welcome_page`]).
pub type WelcomePage = Arc<OnceLock<Bytes>>;

/// Where a route sends its requests.
enum Action {
    Fixed(Fixed),
    /// An upstream group (index into the handler's proxies) and the route's options.
    Proxy(usize, RouteOptions),
    /// A hosted app (index into the handler's apps) and the route's options.
    App(usize, RouteOptions),
    /// Files from a root (index into the handler's file servers), then, for requests no
    /// file answers, the upstream or app of the same route (a `Proxy` or `App`), if any.
    Files(usize, Option<Box<Action>>),
}

/// Where requests no configured route answers go, when not to the built-in routes.
enum Fallback {
    Proxy(Proxy),
    App(AppRoute),
}

/// The config file's sections routes read besides their own keys, shared by every core.
#[derive(Debug, Clone, Default)]
pub struct RouteSettings {
    /// `[files]`: for routes with `root`.
    pub files: FilesSection,
    /// `[cache]`: for routes with `cache = true`.
    pub cache: Arc<CacheSection>,
    /// `[compression]`: for routes with `compress = true`.
    pub compression: Arc<CompressionSection>,
}

impl RouteSettings {
    /// The sections of `config`.
    pub fn of(config: &crate::config::Config) -> RouteSettings {
        RouteSettings {
            files: config.files.clone(),
            cache: Arc::new(config.cache.clone()),
            compression: Arc::new(config.compression.clone()),
        }
    }
}

/// How a route matches a request's path.
enum PathMatch {
    Any,
    Exact(String),
    Prefix(String),
}

/// One configured route.
struct Route {
    /// Exact host, or `.example.com` for `*.example.com`; lowercase.
    host: Option<String>,
    path: PathMatch,
    action: Action,
    /// Which clients it serves (`403` for the others).
    access: AccessList,
    /// Its per-client request rate, shared by every core.
    rates: Option<Arc<ClientRates>>,
    /// This core's cache of its upstream's or app's responses (`cache = true`).
    cache: Option<ResponseCache>,
    /// Its responses are compressed on the fly (`compress = true`).
    compress: bool,
}

impl Route {
    /// Whether the route has an allow/deny list or per-client rates to apply.
    fn checks_clients(&self) -> bool {
        !self.access.is_open() || self.rates.is_some()
    }

    /// The `403` or `429` for the client `info` names, when this route refuses it (a
    /// delayed request waits its turn here).
    async fn refuses(&self, info: Option<&ConnectionInfo>) -> Option<Response<Body>> {
        let ip = info?.client?;
        if !self.access.permits(ip) {
            return Some(clients::forbidden());
        }
        let rates = self.rates.as_ref()?;
        // Routes group IPv6 clients by /64, the default of `[limits] ipv6_prefix_length`.
        clients::admit(rates, ClientKey::new(ip, 64), ip).await
    }

    /// Whether the route takes a request for `path`, whose host `host` gives (asked only
    /// when the route names one: most do not, and finding the host costs a field lookup).
    fn matches<'r>(&self, path: &[u8], host: impl FnOnce() -> Option<&'r str>) -> bool {
        let path_ok = match &self.path {
            PathMatch::Any => true,
            PathMatch::Exact(p) => path == p.as_bytes(),
            PathMatch::Prefix(p) => path.starts_with(p.as_bytes()),
        };
        let Some(want) = self.host.as_deref().filter(|_| path_ok) else { return path_ok };
        let Some(have) = host() else { return false };
        match want.strip_prefix('.') {
            // `.example.com`: any subdomain, not the domain itself.
            Some(domain) => {
                let Some(dot) = have.len().checked_sub(domain.len() + 1) else { return false };
                dot > 0
                    && have.as_bytes()[dot] == b'.'
                    && have[dot + 1..].eq_ignore_ascii_case(domain)
            }
            None => have.eq_ignore_ascii_case(want),
        }
    }
}

/// The binary's handler: the config file's routes in order (fixed responses, or forwarding
/// to an upstream group), then the reverse proxy when `--proxy` set one (every other request
/// goes upstream), else the built-in routes.
#[derive(Clone)]
pub struct BuiltinRoutes {
    routes: Rc<Vec<Route>>,
    proxies: Rc<Vec<Proxy>>,
    apps: Rc<Vec<AppRoute>>,
    files: Rc<Vec<Files>>,
    welcome: WelcomePage,
    /// `--root`: files first for requests no configured route answers.
    fallback_files: Option<Files>,
    fallback: Option<Rc<Fallback>>,
    /// `--cache`: the fallback's responses are cached.
    fallback_cache: Option<Rc<ResponseCache>>,
    /// How responses are compressed, for the routes (or fallback) that ask.
    compression: Arc<CompressionSection>,
    /// `--compress`: the fallback's (files', proxy's, app's) responses are compressed.
    compress_fallback: bool,
}

impl BuiltinRoutes {
    /// Routes for `routes` with fixed responses only (a route naming an upstream is
    /// skipped: see [`with_upstreams`](Self::with_upstreams)). Validated when the config
    /// was loaded.
    pub fn new(routes: &[RouteConfig]) -> BuiltinRoutes {
        BuiltinRoutes::with_upstreams(routes, &[])
    }

    /// Routes for `routes`, with this core's proxy for each named upstream group (`groups`
    /// shared by every core; the proxies are built here, per core).
    pub fn with_upstreams(
        routes: &[RouteConfig],
        groups: &[(String, Arc<ProxyConfig>)],
    ) -> BuiltinRoutes {
        BuiltinRoutes::with_targets(routes, groups, &Apps::default(), &RouteSettings::default())
    }

    /// Routes for `routes`, with this core's proxy for each named upstream group and this
    /// core's router for each hosted app its routes name.
    /// Routes with `root` get this core's file server (`files`: the `[files]` settings).
    pub fn with_targets(
        routes: &[RouteConfig],
        groups: &[(String, Arc<ProxyConfig>)],
        hosted: &Apps,
        settings: &RouteSettings,
    ) -> BuiltinRoutes {
        let proxies: Vec<Proxy> = groups.iter().map(|(_, c)| Proxy::new(Arc::clone(c))).collect();
        let mut apps: Vec<(String, AppRoute)> = Vec::new();
        let mut files: Vec<Files> = Vec::new();
        let routes = routes
            .iter()
            .filter_map(|r| {
                let forward = match (&r.upstream, &r.app) {
                    (Some(name), _) => {
                        let group = groups.iter().position(|(n, _)| n == name)?;
                        Some(Action::Proxy(group, r.route_options().ok()?))
                    }
                    (None, Some(name)) => {
                        let index = match apps.iter().position(|(n, _)| n == name) {
                            Some(i) => i,
                            None => {
                                apps.push((name.clone(), hosted.route(name)?));
                                apps.len() - 1
                            }
                        };
                        Some(Action::App(index, r.route_options().ok()?))
                    }
                    (None, None) => None,
                };
                let action = match (r.file_route(&settings.files), forward) {
                    (Some(route), then) => {
                        files.push(Files::new(route));
                        Action::Files(files.len() - 1, then.map(Box::new))
                    }
                    (None, Some(forward)) => forward,
                    (None, None) => Action::Fixed(Fixed {
                        status: StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK),
                        content_type: HeaderValue::from_str(&r.content_type)
                            .unwrap_or(HeaderValue::from_static("text/plain")),
                        body: Bytes::from(r.body.clone()),
                    }),
                };
                let path = match (&r.path, &r.path_prefix) {
                    (Some(p), _) => PathMatch::Exact(p.clone()),
                    (None, Some(p)) => PathMatch::Prefix(p.clone()),
                    (None, None) => PathMatch::Any,
                };
                let host = r.host.as_ref().map(|h| {
                    let h = h.to_ascii_lowercase();
                    match h.strip_prefix("*.") {
                        Some(domain) => format!(".{domain}"),
                        None => h,
                    }
                });
                let cache = r.cache.then(|| {
                    let name = r.upstream.as_ref().or(r.app.as_ref()).map_or("", String::as_str);
                    ResponseCache::new(name, Arc::clone(&settings.cache))
                });
                Some(Route {
                    host,
                    path,
                    action,
                    access: r.access(),
                    rates: r.rates(),
                    cache,
                    compress: r.compress,
                })
            })
            .collect();
        BuiltinRoutes {
            routes: Rc::new(routes),
            proxies: Rc::new(proxies),
            apps: Rc::new(apps.into_iter().map(|(_, a)| a).collect()),
            files: Rc::new(files),
            welcome: WelcomePage::default(),
            fallback_files: None,
            fallback: None,
            fallback_cache: None,
            compression: Arc::clone(&settings.compression),
            compress_fallback: false,
        }
    }

    /// Compresses the responses of the fallback (`--root`, `--proxy`, `--app`) for clients
    /// that accept it (`--compress`).
    pub fn with_compression(self) -> BuiltinRoutes {
        BuiltinRoutes { compress_fallback: true, ..self }
    }

    /// Whether any route (or the fallback) compresses.
    fn compresses(&self) -> bool {
        self.compress_fallback
            || (!self.routes.is_empty() && self.routes.iter().any(|r| r.compress))
    }

    /// Caches the responses of the proxy or app every request no configured route answers
    /// goes to (`--cache`), this core's cache labelled `name`.
    pub fn with_cache(self, name: &str, section: Arc<CacheSection>) -> BuiltinRoutes {
        let cache = Rc::new(ResponseCache::new(name, section));
        BuiltinRoutes { fallback_cache: Some(cache), ..self }
    }

    /// Serves the files of `files` for every request no configured route answers (`--root`),
    /// before the proxy or app fallback when there is one (the others get `404`).
    pub fn with_files(self, files: Files) -> BuiltinRoutes {
        BuiltinRoutes { fallback_files: Some(files), ..self }
    }

    /// Sends every request no configured route answers to `proxy` (this core's).
    pub fn with_proxy(self, proxy: Proxy) -> BuiltinRoutes {
        BuiltinRoutes { fallback: Some(Rc::new(Fallback::Proxy(proxy))), ..self }
    }

    /// Sends every request no configured route answers to a hosted app (`--app`).
    pub fn with_app(self, app: AppRoute) -> BuiltinRoutes {
        BuiltinRoutes { fallback: Some(Rc::new(Fallback::App(app))), ..self }
    }

    /// Serves `welcome` at `/` (until it is set, a page without the listeners).
    pub fn with_welcome(self, welcome: WelcomePage) -> BuiltinRoutes {
        BuiltinRoutes { welcome, ..self }
    }

    /// The first route matching `request`.
    fn route(&self, request: &Request<Body>) -> Option<&Route> {
        let path = request.uri().path().as_bytes();
        self.route_for(path, || crate::exchange::request_host(request))
    }

    /// [`route`](Self::route) from a request's path and host (found only if a route asks).
    fn route_for<'a>(&self, path: &[u8], host: impl FnOnce() -> Option<&'a str>) -> Option<&Route> {
        if self.routes.is_empty() {
            return None;
        }
        let mut host = Some(host);
        let mut found = None;
        self.routes.iter().find(|r| {
            r.matches(path, || *found.get_or_insert_with(|| host.take().and_then(|h| h())))
        })
    }
}

/// Where a request is forwarded: a route's upstream or app, or the fallback's.
#[derive(Clone, Copy)]
enum Forward<'a> {
    /// A route's `Proxy` or `App` action, with the route (for its cache).
    Route(&'a Route, &'a Action),
    Fallback(&'a Fallback),
}

impl BuiltinRoutes {
    /// Sends `request` upstream or to the app, with the client's `connection` (passed along,
    /// not put into the request's extensions: the map costs three allocations a request).
    /// Boxed: the router's future, which every request builds and moves (a `/plaintext` as
    /// much as a proxied request), then holds a pointer rather than the forwarding future
    /// and the request it carries.
    fn send<'a>(
        &'a self,
        to: Forward<'a>,
        request: Request<Body>,
        connection: Option<&'a ConnectionInfo>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + 'a>> {
        match to {
            // One box each: the proxy's forwarding inline in it, the app's own box as it is.
            Forward::Route(_, Action::Proxy(group, options)) => {
                rt::boxed(|| self.proxies[*group].forward_inline(request, options, connection))
            }
            Forward::Route(_, Action::App(app, options)) => {
                self.apps[*app].call_with(request, options, connection)
            }
            Forward::Fallback(Fallback::Proxy(proxy)) => {
                rt::boxed(|| proxy.forward_inline(request, &crate::proxy::NO_OPTIONS, connection))
            }
            Forward::Fallback(Fallback::App(app)) => {
                app.call_with(request, &crate::proxy::NO_OPTIONS, connection)
            }
            Forward::Route(_, Action::Fixed(_) | Action::Files(..)) => {
                unreachable!("only forwarding actions")
            }
        }
    }
}

impl Handler for BuiltinRoutes {
    fn wants_connection_info(&self) -> bool {
        // Only the proxy, apps and the routes' allow/deny lists and rates read it.
        self.fallback.is_some() || !self.routes.is_empty()
    }

    #[inline]
    fn call(&self, request: Request<Body>) -> impl Future<Output = Response<Body>> {
        self.call_with(request, None)
    }

    /// A fixed route's answer, a built-in one when no route matches and nothing is behind
    /// the routes, or a cache hit of a forwarding route (or of the fallback): only where
    /// `call_with` would answer the same and nothing else runs first (no client checks on
    /// the route, no compression, no files tried first).
    fn answer(&self, head: &Head<'_>) -> Option<Answer> {
        match self.route_for(head.path_bytes(), || head.host()) {
            Some(route) if route.checks_clients() || route.compress => None,
            Some(route) => match &route.action {
                Action::Fixed(f) => Some(Answer::Fixed(f.clone())),
                // A forwarding route's cache hit; a miss goes the whole way.
                Action::Proxy(..) | Action::App(..) => route.cache.as_ref()?.fresh_hit(head),
                Action::Files(..) => None,
            },
            None if self.compress_fallback || self.fallback_files.is_some() => None,
            None => match self.fallback {
                None => self.builtin_answer(head.path_bytes()).map(Answer::Fixed),
                Some(_) => self.fallback_cache.as_deref()?.fresh_hit(head),
            },
        }
    }

    /// `connection` never goes into the request's extensions: the proxy and apps take it as
    /// an argument, and a cache hit, a file or a fixed answer do not read it, so no request
    /// pays for the extension map (three allocations).
    async fn call_with(
        &self,
        request: Request<Body>,
        connection: Option<&ConnectionInfo>,
    ) -> Response<Body> {
        // One `async fn` (a labelled block, not a second `async fn` awaited here): a nested
        // one would hold its future inside this one's, and every request would pay for
        // moving both.
        // Found once: it decides compression and the answer.
        let route = self.route(&request);
        let coding = if self.compresses() {
            let on = route.map_or(self.compress_fallback, |r| r.compress);
            on.then(|| compress::negotiate(request.method(), request.headers(), &self.compression))
                .flatten()
        } else {
            None
        };
        let response = 'answer: {
            if let Some(route) = route.filter(|r| r.checks_clients()) {
                let info = connection.or_else(|| request.extensions().get());
                // Boxed: most routes have no such checks, and their future need not hold it.
                if let Some(refused) = rt::boxed(|| route.refuses(info)).await {
                    break 'answer refused;
                }
            }
            let (request, to) = match route.map(|r| (r, &r.action)) {
                Some((_, Action::Fixed(f))) => break 'answer f.clone().into_response(),
                Some((route, Action::Files(index, then))) => {
                    match rt::boxed(|| self.files[*index].serve(request)).await {
                        Ok(response) => break 'answer response,
                        Err((request, miss)) => match then.as_deref() {
                            Some(then) => (request, Forward::Route(route, then)),
                            None => break 'answer miss.response(),
                        },
                    }
                }
                Some((route, action)) => (request, Forward::Route(route, action)),
                None => {
                    let request = match &self.fallback_files {
                        Some(files) => match rt::boxed(|| files.serve(request)).await {
                            Ok(response) => break 'answer response,
                            Err((request, miss)) if self.fallback.is_none() => {
                                drop(request);
                                break 'answer miss.response();
                            }
                            Err((request, _)) => request,
                        },
                        None => request,
                    };
                    match self.fallback.as_deref() {
                        Some(fallback) => (request, Forward::Fallback(fallback)),
                        None => break 'answer self.builtin(request),
                    }
                }
            };
            // Through the cache of the route (or of the fallback) if there is one; a hit costs
            // no future of its own.
            let cache = match to {
                Forward::Route(route, _) => route.cache.as_ref(),
                Forward::Fallback(_) => self.fallback_cache.as_deref(),
            };
            let miss = match cache.map(|cache| (cache, cache.hit(&request))) {
                Some((_, Ok(hit))) => break 'answer hit,
                Some((cache, Err(miss))) => Some((cache, miss)),
                None => None,
            };
            match miss {
                Some((cache, miss)) => {
                    rt::boxed(|| cache.fetch(request, miss, |r| self.send(to, r, connection))).await
                }
                None => self.send(to, request, connection).await,
            }
        };
        match coding {
            Some(coding) => compress::apply(response, coding, &self.compression),
            None => response,
        }
    }
}

impl BuiltinRoutes {
    /// The built-in routes: the welcome page, the benchmark routes and `/echo`.
    fn builtin(&self, request: Request<Body>) -> Response<Body> {
        if let Some(answer) = self.builtin_answer(request.uri().path().as_bytes()) {
            return answer.into_response();
        }
        // `/echo`: streams the request body straight back, with its length when known.
        let body = request.into_body();
        let len = body.exact_len();
        let mut r = Response::new(Body::from_stream(body, len));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        r
    }

    /// The built-in routes' fixed answers: all of them but `/echo` (`None`).
    fn builtin_answer(&self, path: &[u8]) -> Option<Fixed> {
        let (status, content_type, body) = match path {
            b"/plaintext" => {
                (StatusCode::OK, content_type::TEXT, Bytes::from_static(b"Hello, World!"))
            }
            b"/json" => (
                StatusCode::OK,
                content_type::JSON,
                Bytes::from_static(br#"{"message":"Hello, World!"}"#),
            ),
            b"/echo" => return None,
            b"/" => {
                let page = self.welcome.get().cloned().unwrap_or_else(|| {
                    let empty = crate::overview::Overview {
                        listeners: Vec::new(),
                        admin: None,
                        fixed_routes: Vec::new(),
                    };
                    Bytes::from(empty.welcome_page())
                });
                (StatusCode::OK, content_type::HTML, page)
            }
            _ => (StatusCode::NOT_FOUND, content_type::TEXT, Bytes::from_static(b"Not Found\n")),
        };
        Some(Fixed { status, content_type, body })
    }
}

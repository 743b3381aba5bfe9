//! The built-in routes of the `peregrine` binary: a welcome page, the benchmark routes, an
//! echo route, fixed responses from the config file, and the reverse proxy (`--proxy`).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};

use crate::config::RouteConfig;
use crate::proxy::Proxy;
use crate::{Body, Handler};

/// The welcome page, shared by every core's handler: filled in once the server has bound
/// its listeners (see [`crate::overview::Overview::welcome_page`]).
pub type WelcomePage = Arc<OnceLock<Bytes>>;

/// A fixed response.
#[derive(Clone)]
struct Fixed {
    status: StatusCode,
    content_type: HeaderValue,
    body: Bytes,
}

/// The binary's handler: fixed routes from the config first, then the reverse proxy when
/// one is set (every other request goes upstream), else the built-in routes.
#[derive(Clone)]
pub struct BuiltinRoutes {
    fixed: Rc<HashMap<String, Fixed>>,
    welcome: WelcomePage,
    proxy: Option<Rc<Proxy>>,
}

impl BuiltinRoutes {
    /// Routes for `config` (validated when the config was loaded).
    pub fn new(routes: &[RouteConfig]) -> BuiltinRoutes {
        let fixed = routes
            .iter()
            .map(|r| {
                let fixed = Fixed {
                    status: StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK),
                    content_type: HeaderValue::from_str(&r.content_type)
                        .unwrap_or(HeaderValue::from_static("text/plain")),
                    body: Bytes::from(r.body.clone()),
                };
                (r.path.clone(), fixed)
            })
            .collect();
        BuiltinRoutes { fixed: Rc::new(fixed), welcome: WelcomePage::default(), proxy: None }
    }

    /// Sends every request no fixed route answers to `proxy` (this core's).
    pub fn with_proxy(self, proxy: Proxy) -> BuiltinRoutes {
        BuiltinRoutes { proxy: Some(Rc::new(proxy)), ..self }
    }

    /// Serves `welcome` at `/` (until it is set, a page without the listeners).
    pub fn with_welcome(self, welcome: WelcomePage) -> BuiltinRoutes {
        BuiltinRoutes { welcome, ..self }
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response<Body> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

impl Handler for BuiltinRoutes {
    async fn call(&self, request: Request<Body>) -> Response<Body> {
        if let Some(f) = self.fixed.get(request.uri().path()) {
            let mut r = Response::new(Body::from(f.body.clone()));
            *r.status_mut() = f.status;
            r.headers_mut().insert(header::CONTENT_TYPE, f.content_type.clone());
            return r;
        }
        if let Some(proxy) = &self.proxy {
            return proxy.call(request).await;
        }
        match request.uri().path() {
            "/plaintext" => respond(StatusCode::OK, "text/plain", "Hello, World!"),
            "/json" => {
                respond(StatusCode::OK, "application/json", r#"{"message":"Hello, World!"}"#)
            }
            "/echo" => {
                // Streams the request body straight back, with its length when known.
                let body = request.into_body();
                let len = body.exact_len();
                let mut r = Response::new(Body::from_stream(body, len));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                r
            }
            "/" => {
                let page = self.welcome.get().cloned().unwrap_or_else(|| {
                    let empty = crate::overview::Overview {
                        listeners: Vec::new(),
                        admin: None,
                        fixed_routes: Vec::new(),
                    };
                    Bytes::from(empty.welcome_page())
                });
                respond(StatusCode::OK, "text/html; charset=utf-8", page)
            }
            _ => respond(StatusCode::NOT_FOUND, "text/plain", "Not Found\n"),
        }
    }
}

//! The request side of app hosting: one [`AppRoute`] per app per core. It reads the app's
//! state once per request, forwards to a ready process through this core's proxy for it,
//! and otherwise asks for a start and waits (bounded), or answers 502/503 itself.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};

use super::{App, AppState, Failure, Phase, Process, TOKEN_HEADER};
use crate::handler::{content_type, respond};
use crate::overview::escape;
use crate::proxy::{metrics::ServerMetrics, Proxy, RouteOptions};
use crate::{rt, Body, BodyChunk, ConnectionInfo};

/// How often a request waiting for a start looks at the app's state again.
const WAIT_STEP: Duration = Duration::from_millis(10);

/// One core's way to an app (build one per core: it holds this core's proxies).
pub struct AppRoute {
    app: Arc<App>,
    /// This core's proxy per process, by process id.
    proxies: RefCell<Vec<(u64, Rc<Proxy>)>>,
    /// The state `proxies` was last pruned against.
    pruned_for: Cell<usize>,
    /// Round robin over the ready processes.
    next: Cell<usize>,
    /// This core's upstream series for the app, shared by its processes' proxies.
    metrics: Vec<Arc<ServerMetrics>>,
}

impl AppRoute {
    pub(super) fn new(app: Arc<App>) -> AppRoute {
        let metrics = vec![crate::proxy::metrics::register(&format!("app:{}", app.config.name))];
        AppRoute {
            app,
            proxies: RefCell::new(Vec::new()),
            pruned_for: Cell::new(0),
            next: Cell::new(0),
            metrics,
        }
    }

    /// Answers `request` for the app, forwarding with a route's `options`.
    /// `connection` describes the client (else the request's extension does).
    pub fn call_with<'a>(
        &'a self,
        request: Request<Body>,
        options: &'a RouteOptions,
        connection: Option<&'a ConnectionInfo>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + 'a>> {
        // Boxed, as the proxy's forwarding is: inline, this future (its start wait and its
        // forwarding) would make the router's future, made for every request of every
        // route, that much larger to lay out and move.
        crate::rt::boxed(|| self.serve(request, options, connection))
    }

    async fn serve(
        &self,
        request: Request<Body>,
        options: &RouteOptions,
        connection: Option<&ConnectionInfo>,
    ) -> Response<Body> {
        let state = self.app.state.load_full();
        if let Some(claim) = self.claim(&state) {
            return self.forward(claim, request, options, connection).await;
        }
        if let Some(answer) = self.refusal(&state, rt::now()) {
            return answer;
        }
        // Nothing ready: ask for a start and wait, within the queue's bounds.
        let config = &self.app.config;
        let Some(_queued) = Queued::enter(&self.app) else {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the application is starting; too many requests are waiting for it\n",
            );
        };
        let failed_before = state.failed_starts;
        self.app.request_start();
        // A little past the supervisor's own verdict at `startup_time_limit` (it kills the
        // process then, and this request gets the failure page rather than a bare 503).
        let deadline = rt::now() + config.startup_time_limit + Duration::from_secs(2);
        loop {
            let step = (rt::now() + WAIT_STEP).min(deadline);
            let _ = rt::timer::timeout(step, std::future::pending::<()>()).await;
            let state = self.app.state.load_full();
            if let Some(claim) = self.claim(&state) {
                return self.forward(claim, request, options, connection).await;
            }
            let now = rt::now();
            if let Some(answer) = self.refusal(&state, now) {
                return answer;
            }
            if state.failed_starts > failed_before {
                return self.failure_page(state.last_failure.as_deref());
            }
            if now >= deadline {
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the application did not start in time\n",
                );
            }
        }
    }

    /// The answer when the app cannot take requests and a start would not help: offline, or
    /// blocked by the rapid-fail limit.
    fn refusal(&self, state: &AppState, now: Instant) -> Option<Response<Body>> {
        match &state.phase {
            Phase::Offline(page) => Some(offline(page.clone())),
            Phase::Failed => match state.last_failure.as_deref() {
                Some(f) if f.blocks(now) => {
                    self.app.metrics.refused_starts.fetch_add(1, Ordering::Relaxed);
                    Some(self.failure_page(Some(f)))
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// The next ready process (round robin), with the request counted on it. The count is
    /// taken, then the state read again: a process a restart has just replaced is let go
    /// (the supervisor stops a replaced process only once it counts no request, after
    /// publishing the state without it), so no request reaches a process being stopped.
    fn claim(&self, state: &Arc<AppState>) -> Option<InFlight> {
        let mut state = Arc::clone(state);
        loop {
            let ready = &state.ready;
            if ready.is_empty() {
                return None;
            }
            let i = self.next.get() % ready.len();
            self.next.set(i.wrapping_add(1));
            let claim = InFlight::new(Arc::clone(&ready[i]));
            std::sync::atomic::fence(Ordering::SeqCst);
            let now = self.app.state.load_full();
            if Arc::ptr_eq(&now, &state) || now.ready.iter().any(|p| p.id == claim.0.id) {
                return Some(claim);
            }
            state = now;
        }
    }

    async fn forward(
        &self,
        claim: InFlight,
        mut request: Request<Body>,
        options: &RouteOptions,
        connection: Option<&ConnectionInfo>,
    ) -> Response<Body> {
        let process = &claim.0;
        let proxy = self.proxy_for(process);
        // Replaces any the client sent: only Peregrine may speak for the pairing.
        request.headers_mut().insert(TOKEN_HEADER, process.token.clone());
        let guard = claim;
        let mut response = proxy.forward_with(request, options, connection).await;
        let body = std::mem::take(response.body_mut());
        *response.body_mut() = match body.exact_len() {
            Some(0) => body,
            _ if body.is_tunnel() => body,
            len => Body::from_stream(Guarded { body, _guard: guard }, len),
        };
        response
    }

    /// This core's proxy for `process`, made on its first request; proxies of processes no
    /// longer in the state are dropped (with their pooled connections) when it changes.
    fn proxy_for(&self, process: &Arc<Process>) -> Rc<Proxy> {
        let state = self.app.state.load();
        let key = Arc::as_ptr(&*state) as usize;
        let mut proxies = self.proxies.borrow_mut();
        if self.pruned_for.get() != key {
            self.pruned_for.set(key);
            proxies.retain(|(id, _)| state.ready.iter().any(|p| p.id == *id));
        }
        if let Some((_, proxy)) = proxies.iter().find(|(id, _)| *id == process.id) {
            return Rc::clone(proxy);
        }
        let proxy =
            Rc::new(Proxy::with_metrics(Arc::clone(&process.upstream), self.metrics.clone()));
        proxies.push((process.id, Rc::clone(&proxy)));
        proxy
    }

    /// 502: the "application failed to start" page (ANCM's 502.5), or a bare 502 when the
    /// app's `error_page` is off.
    fn failure_page(&self, failure: Option<&Failure>) -> Response<Body> {
        let config = &self.app.config;
        if !config.error_page {
            return plain(StatusCode::BAD_GATEWAY, "502 Bad Gateway\n");
        }
        let name = escape(&config.name);
        let what = failure.map_or("failed".to_string(), |f| escape(&f.what));
        let log = match failure.and_then(|f| f.log.as_ref()) {
            Some(path) => format!("<p>Its output is in <code>{}</code>.</p>", escape(&path.display().to_string())),
            None => "<p>Its last lines of output are in Peregrine's log (set <code>stdout_log</code> to keep all of it).</p>".to_string(),
        };
        let retry = match failure.and_then(|f| f.blocked_until) {
            Some(until) if until > rt::now() => format!(
                "<p>It failed more than {} times within {}: Peregrine will not start it again for {} s.</p>",
                config.rapid_fails_per_minute,
                humantime::format_duration(config.rapid_fail_window),
                until.saturating_duration_since(rt::now()).as_secs() + 1
            ),
            _ => "<p>The next request starts it again.</p>".to_string(),
        };
        let page = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>502 Bad Gateway: application failed to start</title></head>\n\
             <body><h1>502 Bad Gateway</h1><h2>The application <code>{name}</code> failed to start</h2>\n\
             <p>Its process {what}.</p>{log}{retry}\n\
             <p>Turn this page off in production with <code>error_page = false</code>.</p></body></html>\n"
        );
        respond(StatusCode::BAD_GATEWAY, content_type::HTML, page)
    }
}

/// 503 with the offline file's contents.
fn offline(page: Bytes) -> Response<Body> {
    respond(StatusCode::SERVICE_UNAVAILABLE, content_type::HTML, page)
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    respond(status, content_type::TEXT, text)
}

/// A request waiting for a start, counted against `max_queued_requests` while it lives.
struct Queued<'a>(&'a App);

impl<'a> Queued<'a> {
    fn enter(app: &'a App) -> Option<Queued<'a>> {
        let before = app.queued.fetch_add(1, Ordering::AcqRel);
        let queued = Queued(app);
        (before < app.config.max_queued_requests).then_some(queued)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request counted in flight on its process until its response ends (a restart drains
/// on it).
struct InFlight(Arc<Process>);

impl InFlight {
    fn new(process: Arc<Process>) -> InFlight {
        process.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(process)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted in flight until it ends.
struct Guarded {
    body: Body,
    _guard: InFlight,
}

impl futures_core::Stream for Guarded {
    type Item = BodyChunk;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BodyChunk>> {
        self.get_mut().body.poll_chunk(cx)
    }
}

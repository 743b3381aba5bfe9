//! Peregrine: a thread-per-core HTTP edge server.
//!
//! One reactor per core, each with its own listening socket (SO_REUSEPORT), its own
//! completion driver (io_uring, or epoll where io_uring is blocked), a small executor and
//! timers; no locks and no cross-core traffic on the request path. The codecs are sans-IO
//! (`peregrine-protocols`), the limits are one documented policy (`peregrine-limits`).
//!
//! Embedding, the way an ASP.NET Core app embeds Kestrel: give a handler factory; each core
//! builds its own handler, so handlers may hold `!Send` state and never lock.
//!
//! ```no_run
//! use peregrine::{Body, Server, ServerConfig};
//! use http::{Request, Response};
//!
//! let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
//! let config = ServerConfig { listen: vec![addr.into()], ..Default::default() };
//! let server = Server::start(config, || {
//!     |_req: Request<Body>| async { Response::new(Body::from("hello")) }
//! })
//! .unwrap();
//! println!("listening on http://{}", server.local_addrs()[0]);
//! server.wait();
//! ```
#![forbid(unsafe_code)]

mod access_log;
mod admin;
mod answer_start;
pub mod apps;
mod body;
pub mod cache;
mod clients;
pub mod compress;
pub mod config;
mod conn;
pub mod content_coding;
mod date;
mod exchange;
pub mod files;
mod h1;
mod h2;
mod handler;
mod listener;
mod metrics;
pub mod overview;
mod percore;
pub mod proxy;
mod reload;
pub mod routes;
mod rt;
mod server;
mod sys;
mod tls;
mod transport;
mod trust;
mod tunnel;
#[cfg(any(target_os = "linux", windows))]
pub mod upgrade;

pub use access_log::AccessLogTarget;
pub use body::{Body, BodyChunk, BodyError};
pub use exchange::{ClientCertificates, ConnectProtocol, ConnectionInfo};
pub use handler::{Answer, CacheHit, Fixed, Handler, Head};
pub use listener::{InheritedSocket, ListenerSpec, Protocols, UnixSocket};
pub use metrics::Metrics;
pub use peregrine_limits::{Limits, MinDataRate, RateLimit};
pub use reload::{ReloadHandle, Reloaded};
pub use server::{Server, ServerConfig, ShutdownHandle, StartError};
pub use sys::driver::{DriverKind, IoChoice};
pub use tls::{
    CertSource, ClientAuth, ClientAuthMode, SniCertificate, TlsError, TlsReloadHandle, TlsSettings,
};

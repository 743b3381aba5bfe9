//! The load shapes the harness runs, and which peer each compares against.
//!
//! A scenario names a [`Load`] (how the load is generated) and a peer (the
//! server Peregrine is compared with). HTTP/1.1 keep-alive and pipelining
//! compare against nginx; HTTP/2 (h2c prior knowledge and h2 over TLS with
//! ALPN) against h2o, the HTTP/2 server nginx's HTTP/2 module is usually
//! measured against; full TLS handshakes against nginx again. Adding a load
//! kind means a variant here and an arm in `main.rs`'s `measure`, the one
//! place that turns a load into a command line.

use crate::report::{H2O, NGINX};

/// How a scenario's load is generated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// `wrk -t1` against `http://127.0.0.1:PORT/plaintext`.
    Wrk {
        /// Concurrent keep-alive connections (`wrk -c`).
        connections: u32,
        /// Requests per write; 1 is plain keep-alive (`keepalive.lua`), more
        /// uses `pipeline.lua`.
        pipeline_depth: u32,
    },
    /// `h2load -t1` over HTTP/2: h2c with prior knowledge on the cleartext
    /// port, or h2 negotiated by ALPN on the TLS port.
    H2load {
        /// Concurrent connections (`h2load -c`).
        connections: u32,
        /// Concurrent streams per connection (`h2load -m`).
        streams: u32,
        /// `https://` (TLS, ALPN h2) rather than `http://` (h2c).
        tls: bool,
    },
    /// `wrk -t1` keep-alive over TLS (`https://`, HTTP/1.1): one handshake per connection,
    /// then requests (the file scenarios' TLS shape).
    WrkTls {
        /// Concurrent keep-alive connections (`wrk -c`).
        connections: u32,
    },
    /// `openssl s_time -new`: a full TLS handshake, one HTTP/1.0 request and
    /// a close per connection, never resuming a session.
    TlsHandshake {
        /// Concurrent `s_time` processes; each runs one connection at a time.
        clients: u32,
    },
}

impl Load {
    /// Concurrent connections the load keeps open.
    pub fn connections(&self) -> u32 {
        match *self {
            Load::Wrk { connections, .. } | Load::H2load { connections, .. } => connections,
            Load::TlsHandshake { clients } => clients,
            Load::WrkTls { connections } => connections,
        }
    }

    /// Requests in flight per connection: the pipeline depth for wrk, the
    /// stream count for h2load, 1 for handshakes.
    pub fn pipeline_depth(&self) -> u32 {
        match *self {
            Load::Wrk { pipeline_depth, .. } => pipeline_depth,
            Load::H2load { streams, .. } => streams,
            Load::TlsHandshake { .. } | Load::WrkTls { .. } => 1,
        }
    }

    /// Whether the load goes to the server's TLS listener.
    pub fn tls(&self) -> bool {
        match *self {
            Load::Wrk { .. } => false,
            Load::H2load { tls, .. } => tls,
            Load::TlsHandshake { .. } | Load::WrkTls { .. } => true,
        }
    }

    /// The load generator's name, for the report.
    pub fn tool(&self) -> &'static str {
        match self {
            Load::Wrk { .. } => "wrk",
            Load::H2load { .. } => "h2load",
            Load::TlsHandshake { .. } => "openssl s_time",
            Load::WrkTls { .. } => "wrk",
        }
    }
}

/// One load shape against `GET /plaintext`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    /// Short identifier used in reports and JSON keys.
    pub name: &'static str,
    /// One-line description for the report.
    pub description: &'static str,
    /// How the load is generated.
    pub load: Load,
    /// Name of the server Peregrine is compared with ([`NGINX`] or [`H2O`]).
    pub peer: &'static str,
    /// Goal for Peregrine/peer requests per server-CPU-second; `None` where
    /// the scenario is recorded without a goal.
    pub target_cpu_ratio: Option<f64>,
    /// Whether `--quick` runs it.
    pub quick: bool,
}

/// Path every scenario requests; every server answers it with `Hello, World!`.
pub const PATH: &str = "/plaintext";

/// The scenarios, in report order.
///
/// Keep-alive at two concurrency levels shows whether per-connection overhead
/// grows with connection count; pipelining removes most syscall and wake-up
/// cost per request, which is where a batching io_uring server should pull far
/// ahead, hence the much higher target. HTTP/2 runs a light (16 × 10 streams)
/// and a heavy (64 × 100 streams, h2o's and Peregrine's stream limit) shape,
/// each in cleartext and over TLS; `--quick` keeps one of each transport. The
/// handshake scenario has no target: the issue asks for it to be recorded.
pub const SCENARIOS: [Scenario; 8] = [
    Scenario {
        name: "keepalive-c64",
        description: "keep-alive, 64 connections",
        load: Load::Wrk { connections: 64, pipeline_depth: 1 },
        peer: NGINX,
        target_cpu_ratio: Some(1.5),
        quick: true,
    },
    Scenario {
        name: "keepalive-c256",
        description: "keep-alive, 256 connections",
        load: Load::Wrk { connections: 256, pipeline_depth: 1 },
        peer: NGINX,
        target_cpu_ratio: Some(1.5),
        quick: true,
    },
    Scenario {
        name: "pipeline16-c64",
        description: "pipelined x16, 64 connections",
        load: Load::Wrk { connections: 64, pipeline_depth: 16 },
        peer: NGINX,
        target_cpu_ratio: Some(20.0),
        quick: true,
    },
    Scenario {
        name: "h2c-c16-m10",
        description: "h2c, 16 connections × 10 streams",
        load: Load::H2load { connections: 16, streams: 10, tls: false },
        peer: H2O,
        target_cpu_ratio: Some(1.3),
        quick: true,
    },
    Scenario {
        name: "h2c-c64-m100",
        description: "h2c, 64 connections × 100 streams",
        load: Load::H2load { connections: 64, streams: 100, tls: false },
        peer: H2O,
        target_cpu_ratio: Some(1.3),
        quick: false,
    },
    Scenario {
        name: "h2-tls-c16-m10",
        description: "h2 over TLS, 16 connections × 10 streams",
        load: Load::H2load { connections: 16, streams: 10, tls: true },
        peer: H2O,
        target_cpu_ratio: Some(1.3),
        quick: false,
    },
    Scenario {
        name: "h2-tls-c64-m100",
        description: "h2 over TLS, 64 connections × 100 streams",
        load: Load::H2load { connections: 64, streams: 100, tls: true },
        peer: H2O,
        target_cpu_ratio: Some(1.3),
        quick: true,
    },
    Scenario {
        name: "tls-handshake-c4",
        description: "TLS 1.3 full handshake + 1 request per connection, 4 clients",
        load: Load::TlsHandshake { clients: 4 },
        peer: NGINX,
        target_cpu_ratio: None,
        quick: true,
    },
];

/// The scenarios to run: all, or those marked `quick`, narrowed to `only`
/// (exact names or name prefixes) when it is non-empty. Errors name a filter
/// that matches nothing, so a typo does not silently run zero scenarios.
pub fn select(quick: bool, only: &[String]) -> Result<Vec<Scenario>, String> {
    for filter in only {
        if !SCENARIOS.iter().any(|s| s.name.starts_with(filter.as_str())) {
            let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
            return Err(format!("no scenario matches {filter:?}; scenarios: {}", names.join(", ")));
        }
    }
    Ok(SCENARIOS
        .iter()
        .filter(|s| {
            if only.is_empty() {
                !quick || s.quick
            } else {
                only.iter().any(|f| s.name.starts_with(f.as_str()))
            }
        })
        .copied()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_peers_known() {
        for (i, s) in SCENARIOS.iter().enumerate() {
            assert!(SCENARIOS[..i].iter().all(|o| o.name != s.name), "duplicate {}", s.name);
            assert!(s.peer == NGINX || s.peer == H2O);
            // HTTP/2 compares with h2o; HTTP/1 and handshakes with nginx.
            assert_eq!(matches!(s.load, Load::H2load { .. }), s.peer == H2O, "{}", s.name);
        }
    }

    #[test]
    fn selection() {
        assert_eq!(select(false, &[]).unwrap().len(), SCENARIOS.len());
        let quick = select(true, &[]).unwrap();
        assert!(quick.len() < SCENARIOS.len());
        // Quick mode still covers every load kind and both h2 transports.
        assert!(quick.iter().any(|s| matches!(s.load, Load::H2load { tls: false, .. })));
        assert!(quick.iter().any(|s| matches!(s.load, Load::H2load { tls: true, .. })));
        assert!(quick.iter().any(|s| matches!(s.load, Load::TlsHandshake { .. })));
        let h2c = select(true, &["h2c".into()]).unwrap();
        assert_eq!(h2c.iter().map(|s| s.name).collect::<Vec<_>>(), ["h2c-c16-m10", "h2c-c64-m100"]);
        assert!(select(false, &["nope".into()]).unwrap_err().contains("nope"));
    }
}

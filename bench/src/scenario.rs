//! The load shapes the harness runs against every server.
//!
//! A scenario names a [`Load`]: how the load is generated. Today every load is
//! HTTP/1.1 cleartext driven by `wrk`. h2load scenarios (HTTP/2 over TLS, with
//! h2o as a second peer) arrive with Peregrine's TLS/HTTP/2 support: they become
//! a new [`Load`] variant, and the match in `main.rs`'s `measure` that turns a
//! load into a command line is the one place that has to learn about it.

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
}

impl Load {
    /// Concurrent connections the load keeps open.
    pub fn connections(&self) -> u32 {
        match *self {
            Load::Wrk { connections, .. } => connections,
        }
    }

    /// Requests in flight per connection (1 without pipelining).
    pub fn pipeline_depth(&self) -> u32 {
        match *self {
            Load::Wrk { pipeline_depth, .. } => pipeline_depth,
        }
    }

    /// The load generator's name, for the report.
    pub fn tool(&self) -> &'static str {
        match self {
            Load::Wrk { .. } => "wrk",
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
    /// Goal for Peregrine/nginx requests per server-CPU-second.
    pub target_cpu_ratio: f64,
}

/// Path every scenario requests; both servers answer it with `Hello, World!`.
pub const PATH: &str = "/plaintext";

/// The scenarios, in report order.
///
/// Keep-alive at two concurrency levels shows whether per-connection overhead
/// grows with connection count; pipelining removes most syscall and wake-up
/// cost per request, which is where a batching io_uring server should pull far
/// ahead, hence the much higher target.
pub const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "keepalive-c64",
        description: "keep-alive, 64 connections",
        load: Load::Wrk { connections: 64, pipeline_depth: 1 },
        target_cpu_ratio: 1.5,
    },
    Scenario {
        name: "keepalive-c256",
        description: "keep-alive, 256 connections",
        load: Load::Wrk { connections: 256, pipeline_depth: 1 },
        target_cpu_ratio: 1.5,
    },
    Scenario {
        name: "pipeline16-c64",
        description: "pipelined x16, 64 connections",
        load: Load::Wrk { connections: 64, pipeline_depth: 16 },
        target_cpu_ratio: 20.0,
    },
];

//! The load shapes the harness runs against every server.

/// One load shape: a `wrk` configuration against `GET /plaintext`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    /// Short identifier used in reports and JSON keys.
    pub name: &'static str,
    /// One-line description for the report.
    pub description: &'static str,
    /// Concurrent keep-alive connections (`wrk -c`).
    pub connections: u32,
    /// Requests per write; 1 is plain keep-alive, more uses `pipeline.lua`.
    pub pipeline_depth: u32,
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
        connections: 64,
        pipeline_depth: 1,
        target_cpu_ratio: 1.5,
    },
    Scenario {
        name: "keepalive-c256",
        description: "keep-alive, 256 connections",
        connections: 256,
        pipeline_depth: 1,
        target_cpu_ratio: 1.5,
    },
    Scenario {
        name: "pipeline16-c64",
        description: "pipelined x16, 64 connections",
        connections: 64,
        pipeline_depth: 16,
        target_cpu_ratio: 20.0,
    },
];

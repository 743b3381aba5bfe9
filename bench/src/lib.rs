//! Peregrine's load-benchmark harness.
//!
//! The `peregrine-bench` binary (`src/main.rs`) starts Peregrine and, when
//! installed, nginx and h2o on one pinned core each, drives them with `wrk`,
//! `h2load` and `openssl s_time` from another core, and reports requests per second *and requests per server-CPU-second*
//! side by side. This library holds the pieces the binary is made of, kept apart
//! so the parsers can be unit-tested against captured real output:
//!
//! - [`wrk`]: building `wrk` command lines and parsing its output and the
//!   Lua `done` hook's latency line;
//! - [`h2load`]: `h2load` command lines (HTTP/2, h2c and TLS) and its report;
//! - [`stime`]: full TLS handshakes with `openssl s_time -new` and its report;
//! - [`peers`]: the servers' config files (Peregrine, nginx, h2o) and the
//!   run's self-signed certificate;
//! - [`procstat`]: a process's CPU time (`/proc/PID/stat`) and resident
//!   memory (`/proc/PID/status`);
//! - [`perf`]: instructions per request with `perf stat`, where supported;
//! - [`idle`]: memory per idle keep-alive connection;
//! - [`servers`]: starting, probing and stopping the servers under test;
//! - [`scenario`]: the fixed set of load shapes;
//! - [`report`]: medians, ratios, and the Markdown/JSON report;
//! - [`plot`]: the latency-percentile chart (SVG);
//! - [`sys`]: bounded child-process waits, limits, signals, machine facts,
//!   timestamps.
//!
//! See `bench/README.md` for how to run it and how to read the numbers.

pub mod h2load;
pub mod idle;
pub mod instructions;
pub mod peers;
pub mod perf;
pub mod plot;
pub mod procstat;
pub mod report;
pub mod scenario;
pub mod servers;
pub mod stime;
pub mod sys;
pub mod wrk;

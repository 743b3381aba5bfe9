//! Peregrine's load-benchmark harness.
//!
//! The `peregrine-bench` binary (`src/main.rs`) starts Peregrine and, when
//! installed, nginx on one pinned core each, drives them with `wrk` from another
//! core, and reports requests per second *and requests per server-CPU-second*
//! side by side. This library holds the pieces the binary is made of, kept apart
//! so the parsers can be unit-tested against captured real output:
//!
//! - [`wrk`]: building `wrk` command lines and parsing its `--latency` output;
//! - [`procstat`]: reading a process's CPU time from `/proc/PID/stat`;
//! - [`servers`]: starting, probing and stopping the servers under test;
//! - [`scenario`]: the fixed set of load shapes;
//! - [`report`]: medians, ratios, and the Markdown/JSON report;
//! - [`sys`]: bounded child-process waits, machine facts, timestamps.
//!
//! See `bench/README.md` for how to run it and how to read the numbers.

pub mod procstat;
pub mod report;
pub mod scenario;
pub mod servers;
pub mod sys;
pub mod wrk;

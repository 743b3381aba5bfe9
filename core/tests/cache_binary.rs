//! `peregrine --proxy URL --cache` on real child processes: the upstream is another
//! Peregrine; the cache's hits, a purge from the admin listener and the metrics are checked
//! from outside, as an operator would.
#![cfg(unix)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

#[path = "support/process.rs"]
mod process;
use process::Proc;

fn spawn(args: &[&str]) -> Proc {
    Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_peregrine"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1"),
    )
}

/// One request on its own connection; the whole response as text.
fn http(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn x_cache(response: &str) -> Option<&str> {
    response.lines().find_map(|l| l.strip_prefix("x-cache: "))
}

#[test]
fn cache_flag_serves_hits_and_the_admin_listener_purges_and_counts_them() {
    let mut upstream = spawn(&["--listen", "127.0.0.1:0", "--threads", "1"]);
    let up = upstream.listening();
    let config = std::env::temp_dir().join(format!("peregrine-cache-{}.toml", std::process::id()));
    // The upstream's /plaintext says nothing about caching: a default lifetime stores it.
    std::fs::write(&config, "[cache]\ndefault_ttl = \"60s\"\n").unwrap();
    let mut proxy = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--admin",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
        "--proxy",
        &format!("http://{up}"),
        "--cache",
    ]);
    let a = proxy.listening();
    let admin = proxy.addr("admin listening on ", Duration::from_secs(10));

    let first = http(a, "GET", "/plaintext");
    assert!(first.ends_with("Hello, World!"), "{first}");
    assert_eq!(x_cache(&first), Some("MISS"));
    assert_eq!(x_cache(&http(a, "GET", "/plaintext")), Some("HIT"));
    assert_eq!(x_cache(&http(a, "GET", "/plaintext")), Some("HIT"));

    let purged = http(admin, "POST", "/cache/purge?host=app.test&path=%2Fplaintext");
    assert!(purged.starts_with("HTTP/1.1 202"), "{purged}");
    assert_eq!(x_cache(&http(a, "GET", "/plaintext")), Some("MISS"));
    assert_eq!(x_cache(&http(a, "GET", "/plaintext")), Some("HIT"));
    assert!(http(admin, "POST", "/cache/purge").starts_with("HTTP/1.1 202"));
    assert_eq!(x_cache(&http(a, "GET", "/plaintext")), Some("MISS"));
    assert!(http(admin, "POST", "/cache/purge?path=/x").starts_with("HTTP/1.1 400"));

    let metrics = http(admin, "GET", "/metrics");
    for series in [
        "peregrine_cache_requests_total{cache=\"proxy\",outcome=\"hit\"} 3",
        "peregrine_cache_requests_total{cache=\"proxy\",outcome=\"miss\"} 3",
        "peregrine_cache_stored_total{cache=\"proxy\"} 3",
        "peregrine_cache_entries{cache=\"proxy\"} 1",
    ] {
        assert!(metrics.contains(series), "no `{series}` in:\n{metrics}");
    }
    let (pp, up_pid) = (proxy.child.id(), upstream.child.id());
    proxy.sigterm(pp);
    upstream.sigterm(up_pid);
    let _ = std::fs::remove_file(&config);

    // --cache needs something to cache.
    let mut alone = spawn(&["--listen", "127.0.0.1:0", "--cache"]);
    assert_eq!(alone.exit_within(Duration::from_secs(10)).and_then(|s| s.code()), Some(2));
}

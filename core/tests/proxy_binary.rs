//! The `peregrine` binary as a reverse proxy (`--proxy`), in front of another `peregrine`
//! process whose `/echo` streams bodies back: a 1 GiB body crosses both ways at once with
//! the proxy's memory bounded, and the `--proxy` flags are checked.

#[path = "support/process.rs"]
mod process;

use std::process::Command;

use process::Proc;

fn peregrine(args: &[&str]) -> Proc {
    Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_peregrine"))
            .args(args)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1"),
    )
}

/// The proxy's peak resident memory, from /proc (Linux).
#[cfg(target_os = "linux")]
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn a_gigabyte_streams_through_both_ways_in_bounded_memory() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    const TOTAL: u64 = 1 << 30;
    // Both processes accept a body this large (the default limit is 30 MB, as Kestrel's).
    // In cargo's scratch folder for tests, not the system's temp dir: nothing is left there.
    let config = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("peregrine-proxy-{}.toml", std::process::id()));
    std::fs::write(&config, "[limits]\nmax_request_body_size = 2147483648\n").unwrap();
    let config = config.to_str().unwrap();
    let common = ["--listen", "127.0.0.1:0", "--threads", "1", "--no-pin", "--config", config];
    let mut app = peregrine(&common);
    let app_addr = app.listening();
    let upstream = format!("http://{app_addr}");
    let mut proxy = peregrine(&[&common[..], &["--proxy", &upstream]].concat());
    let proxy_addr = proxy.listening();
    let before = peak_rss_kib(proxy.child.id());

    let mut stream = TcpStream::connect(proxy_addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let head = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {TOTAL}\r\n\r\n");
        writer.write_all(head.as_bytes()).unwrap();
        let block = vec![b'x'; 1 << 20];
        for _ in 0..TOTAL >> 20 {
            writer.write_all(&block).unwrap();
        }
    });
    // Read the head, then count the body bytes as they come back.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {TOTAL}")), "{head}");
    let mut received: u64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    while received < TOTAL {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the response ended after {received} bytes");
        assert!(buf[..n].iter().all(|&b| b == b'x'));
        received += n as u64;
    }
    sender.join().unwrap();
    let peak = peak_rss_kib(proxy.child.id());
    eprintln!("proxy peak RSS: {before} KiB before, {peak} KiB after 1 GiB each way");
    // Back-pressure both ways: the proxy holds a few buffers per direction, never the body.
    assert!(
        peak < before + 64 * 1024,
        "proxy peak RSS grew from {before} KiB to {peak} KiB while streaming 1 GiB"
    );
}

#[test]
fn proxy_flags_are_checked() {
    for (args, needle) in [
        (vec!["--proxy", "ftp://x:1"], "upstream scheme `ftp` is not supported"),
        (vec!["--proxy", "http://127.0.0.1:1", "--trust-proxy", "ten"], "--trust-proxy"),
        (vec!["--trust-proxy", "not-a-network"], "--trust-proxy"),
    ] {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend(args);
        let mut p = peregrine(&all);
        let status = p.exit_within(process::WAIT).expect("exits");
        assert_eq!(status.code(), Some(2), "{all:?}");
        assert!(p.final_stderr().contains(needle), "{all:?}: {}", p.final_stderr());
    }
}

#[test]
fn the_proxy_announces_its_upstream() {
    let mut p = peregrine(&["--listen", "127.0.0.1:0", "--proxy", "http://127.0.0.1:9"]);
    assert!(p.line_starting("proxying to http://127.0.0.1:9", process::WAIT).is_some());
}

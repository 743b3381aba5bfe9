//! `peregrine --root`: the flag on a real child process, and a slow disk that must not stall
//! the core. The slow disk is the debug build's `PEREGRINE_TEST_DISK_DELAY_MS`, which holds
//! every job of the disk pool (opens, stats, reads) for that long: where a blocking disk
//! would block the pool thread, never the reactor.
#![cfg(unix)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

#[path = "support/process.rs"]
mod process;
use process::Proc;

fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peregrine"));
    cmd.args(args).env("RUST_LOG", "info").env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn(&mut cmd)
}

fn site(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("peregrine-files-bin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), b"<p>root index</p>").unwrap();
    std::fs::write(dir.join("slow.txt"), b"worth the wait").unwrap();
    dir
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one whole response (the test's requests close the connection).
fn read_all(mut s: TcpStream) -> String {
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn root_flag_serves_a_directory_and_a_missing_root_is_a_usage_error() {
    let dir = site("flag");
    let mut p =
        spawn(&["--listen", "127.0.0.1:0", "--threads", "1", "--root", dir.to_str().unwrap()], &[]);
    let addr = p.listening();
    assert!(p.line_starting("serving files from", Duration::from_secs(5)).is_some());
    let mut s = connect(addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let r = read_all(s);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.ends_with("<p>root index</p>"), "{r}");
    let mut s = connect(addr);
    s.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    assert!(read_all(s).starts_with("HTTP/1.1 404"), "--root serves only the directory");
    let pid = p.child.id();
    p.sigterm(pid);

    let mut p = spawn(&["--listen", "127.0.0.1:0", "--root", "/nonexistent/peregrine"], &[]);
    let status = p.exit_within(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(2));
    assert!(p.final_stderr().contains("--root"), "the error names the flag");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One connection waits on a cold file while another, on the same (only) core, is served.
fn a_slow_disk_does_not_stall_the_core(io: &str) {
    let dir = site(&format!("slow-{io}"));
    let config = dir.join("peregrine.toml");
    std::fs::write(&config, "[[route]]\npath = \"/ping\"\nbody = \"pong\"\n").unwrap();
    let mut p = spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--io",
            io,
            "--config",
            config.to_str().unwrap(),
            "--root",
            dir.to_str().unwrap(),
        ],
        &[("PEREGRINE_TEST_DISK_DELAY_MS", "3000")],
    );
    let addr = p.listening();
    let mut slow = connect(addr);
    slow.write_all(b"GET /slow.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut fast = connect(addr);
    fast.write_all(b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let r = read_all(fast);
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("pong"), "{r}");
    // The file's answer has not come yet: the core served /ping while its disk job waited.
    slow.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let pending =
        matches!(slow.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(pending, "the file was answered before /ping: the disk delay did not apply");
    slow.set_nonblocking(false).unwrap();
    let r = read_all(slow);
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("worth the wait"), "{r}");
    let pid = p.child.id();
    p.sigterm(pid);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_slow_disk_does_not_stall_the_core_uring() {
    a_slow_disk_does_not_stall_the_core("uring");
}

#[test]
fn a_slow_disk_does_not_stall_the_core_epoll() {
    a_slow_disk_does_not_stall_the_core("epoll");
}

//! Listening sockets Peregrine does not bind itself, and ports it shares: systemd socket
//! activation (`systemd-socket-activate`, Debian's systemd) handing the binary its socket,
//! matched to a config listener by name or served as a cleartext default; two Peregrine
//! processes serving one port (SO_REUSEPORT); and Unix domain socket listeners (HTTP/1.1,
//! h2c and TLS with curl `--unix-socket`, the file's mode, a stale file replaced, a live one
//! or a regular file refused).
#![cfg(target_os = "linux")]

mod common;
#[path = "support/process.rs"]
mod process;

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use common::tls::{self, TempDir};
use process::Proc;

/// A port free a moment ago (systemd-socket-activate needs a fixed one).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts the binary under `systemd-socket-activate` on 127.0.0.1:`port`, the socket named
/// `web`, with `args`. The launcher listens (awaited here), then execs Peregrine with
/// `LISTEN_FDS` on the first connection, which waits in the socket's backlog meanwhile.
fn activated(port: u16, args: &[&str]) -> Proc {
    let launcher = Proc::spawn(
        Command::new("systemd-socket-activate")
            .args(["-l", &format!("127.0.0.1:{port}"), "--fdname=web"])
            .arg(env!("CARGO_BIN_EXE_peregrine"))
            .args(["--threads", "2", "--no-pin"])
            .args(args)
            .env("NO_COLOR", "1"),
    );
    launcher.wait_stderr("Listening on");
    launcher
}

#[test]
fn an_activated_socket_is_served_with_defaults_and_nothing_else_is_bound() {
    let port = free_port();
    let mut server = activated(port, &[]);
    let url = format!("http://127.0.0.1:{port}/plaintext");
    assert_eq!(curl(&[&url]), "Hello, World!");
    assert_eq!(curl(&["--http2-prior-knowledge", &url]), "Hello, World!", "h2c too");
    // The embedded default's listeners (8080, 8443) were not added: the one listening line
    // names the inherited socket.
    let line = server.line_starting("listening on ", process::WAIT).expect("listening line");
    assert_eq!(line, format!("listening on http://127.0.0.1:{port}"));
    assert!(
        server.line_starting("listening on ", Duration::from_millis(300)).is_none(),
        "a second listener was bound"
    );
}

#[test]
fn an_activated_socket_takes_the_settings_of_the_listener_named_like_it() {
    let port = free_port();
    let dir = TempDir::new("activation");
    let (cert, key) = dir.write_leaf("server", tls::localhost());
    let ca = dir.write("ca.pem", &tls::ca_pem());
    // The listener's own address is a placeholder: the name matches it to the socket.
    let config = dir.write(
        "peregrine.toml",
        &format!(
            "[[listener]]\nname = \"web\"\naddress = \"127.0.0.1:1\"\n\
             [listener.tls]\ncertificate = {cert:?}\nkey = {key:?}\n"
        ),
    );
    let _server = activated(port, &["--config", config.to_str().unwrap()]);
    let url = format!("https://localhost:{port}/plaintext");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let body = curl(&["--cacert", ca.to_str().unwrap(), "--resolve", &resolve, &url]);
    assert_eq!(body, "Hello, World!", "served with the named listener's TLS");
}

/// The responses a server has sent, from its admin listener.
fn requests_served(admin: SocketAddr) -> u64 {
    let text = curl(&[&format!("http://{admin}/metrics")]);
    text.lines()
        .filter(|l| l.starts_with("peregrine_responses_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn two_processes_share_one_port_and_both_serve() {
    let port = free_port();
    let start = || {
        let mut p = Proc::spawn(
            Command::new(env!("CARGO_BIN_EXE_peregrine"))
                .args(["--threads", "1", "--no-pin", "--listen", &format!("127.0.0.1:{port}")])
                .args(["--admin", "127.0.0.1:0"])
                .env("NO_COLOR", "1"),
        );
        let admin = p.addr("admin listening on ", process::WAIT);
        (p, admin)
    };
    let (_a, admin_a) = start();
    let (_b, admin_b) = start();
    // A new connection per request: the kernel spreads connections by their addresses.
    let url = format!("http://127.0.0.1:{port}/plaintext");
    for _ in 0..40 {
        assert_eq!(curl(&["-H", "Connection: close", &url]), "Hello, World!");
    }
    let (a, b) = (requests_served(admin_a), requests_served(admin_b));
    assert_eq!(a + b, 40, "every request was served once");
    assert!(a > 0 && b > 0, "one process served everything: {a} and {b}");
}

/// Waits (bounded) for `line_prefix` on the server's stdout.
fn wait_line(server: &mut Proc, line_prefix: &str) -> String {
    server
        .line_starting(line_prefix, process::WAIT)
        .unwrap_or_else(|| panic!("no {line_prefix:?} line; stderr: {}", server.stderr()))
}

#[test]
fn unix_socket_listeners_serve_http1_h2c_and_tls_with_their_mode() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = TempDir::new("unix");
    let (cert, key) = dir.write_leaf("server", tls::localhost());
    let ca = dir.write("ca.pem", &tls::ca_pem());
    let plain = dir.0.join("plain.sock");
    // Giving the file away takes root (chown).
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    let owner = if root { "socket_owner = \"65532:65533\"\n" } else { "" };
    let secure = dir.0.join("tls.sock");
    // A socket file left by a server that is gone: replaced.
    drop(std::os::unix::net::UnixListener::bind(&plain).unwrap());
    assert!(plain.exists());
    let config = dir.write(
        "peregrine.toml",
        &format!(
            "threads = 2\npin_threads = false\n\
             [[listener]]\naddress = \"unix:{}\"\nsocket_mode = \"0600\"\n\
             {owner}\
             [[listener]]\naddress = \"unix:{}\"\n\
             [listener.tls]\ncertificate = {cert:?}\nkey = {key:?}\n",
            plain.display(),
            secure.display()
        ),
    );
    let mut server =
        Proc::spawn(Command::new(env!("CARGO_BIN_EXE_peregrine")).arg("--config").arg(&config));
    assert_eq!(
        wait_line(&mut server, "listening on unix:"),
        format!("listening on unix:{} (http)", plain.display())
    );
    wait_line(&mut server, &format!("listening on unix:{} (https)", secure.display()));
    let meta = std::fs::metadata(&plain).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket_mode");
    if root {
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.gid()), (65532, 65533), "socket_owner");
    }

    let unix = plain.to_str().unwrap();
    assert_eq!(curl(&["--unix-socket", unix, "http://localhost/plaintext"]), "Hello, World!");
    let h2 = curl(&[
        "--http2-prior-knowledge",
        "--unix-socket",
        unix,
        "-w",
        " %{http_version}",
        "http://localhost/plaintext",
    ]);
    assert_eq!(h2, "Hello, World! 2", "h2c over the Unix socket");
    let tls = curl(&[
        "--unix-socket",
        secure.to_str().unwrap(),
        "--cacert",
        ca.to_str().unwrap(),
        "-w",
        " %{http_version}",
        "https://localhost/plaintext",
    ]);
    assert_eq!(tls, "Hello, World! 2", "h2 by ALPN over TLS over the Unix socket");

    // A second server cannot take a socket a live one accepts on...
    let out = Command::new(env!("CARGO_BIN_EXE_peregrine"))
        .args(["--listen", &format!("unix:{unix}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another process accepts on this socket"), "{err}");
    // ...nor remove a file that is not a socket.
    let file = dir.write("not-a-socket", "keep me");
    let out = Command::new(env!("CARGO_BIN_EXE_peregrine"))
        .args(["--listen", &format!("unix:{}", file.display())])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    let status = server.sigterm(server.child.id());
    assert!(status.success());
}

#[test]
fn an_activated_unix_socket_takes_the_settings_of_the_listener_named_like_it() {
    let dir = TempDir::new("activated-unix");
    let (cert, key) = dir.write_leaf("server", tls::localhost());
    let ca = dir.write("ca.pem", &tls::ca_pem());
    let path = dir.0.join("web.sock");
    // The listener's own address is a placeholder: the name matches it to the socket.
    let config = dir.write(
        "peregrine.toml",
        &format!(
            "[[listener]]\nname = \"web\"\naddress = \"127.0.0.1:1\"\n\
             [listener.tls]\ncertificate = {cert:?}\nkey = {key:?}\n"
        ),
    );
    let mut launcher = Proc::spawn(
        Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(&path)
            .arg("--fdname=web")
            .arg(env!("CARGO_BIN_EXE_peregrine"))
            .args(["--threads", "2", "--no-pin", "--config", config.to_str().unwrap()])
            .env("NO_COLOR", "1"),
    );
    launcher.wait_stderr("Listening on");
    let body = curl(&[
        "--unix-socket",
        path.to_str().unwrap(),
        "--cacert",
        ca.to_str().unwrap(),
        "https://localhost/plaintext",
    ]);
    assert_eq!(body, "Hello, World!", "served with the named listener's TLS");
    let line = wait_line(&mut launcher, "listening on ");
    assert_eq!(line, format!("listening on unix:{} (https)", path.display()));
}

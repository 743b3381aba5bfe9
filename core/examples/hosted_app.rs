//! A small HTTP/1.1 app to try app hosting with, and the one the app-hosting tests run:
//!
//! ```text
//! cargo build -p peregrine --example hosted_app
//! peregrine --listen 127.0.0.1:8080 --app target/debug/examples/hosted_app
//! curl http://127.0.0.1:8080/
//! ```
//!
//! It listens where Peregrine says (`PORT` on 127.0.0.1, or the Unix socket in
//! `PEREGRINE_SOCKET`), refuses requests without the pairing token (`MS-ASPNETCORE-TOKEN` equal
//! to `ASPNETCORE_TOKEN`, as ASP.NET Core's IIS integration does), and answers with its pid and
//! what it was told. `GET /crash` makes it exit with status 3; `GET /slow` answers after
//! 200 ms. For the tests' failure cases, environment variables make it start slowly
//! (`HOSTED_APP_START_DELAY_MS`), exit at once (`HOSTED_APP_EXIT_AT_START=CODE`, or with 5
//! while the file `HOSTED_APP_FAIL_WHILE` exists), or ignore SIGTERM
//! (`HOSTED_APP_IGNORE_TERM=1`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

fn main() {
    let pid = std::process::id();
    let var = |name: &str| std::env::var(name).ok();
    println!("hosted_app {pid} starting");
    eprintln!("hosted_app {pid} writes to stderr too");
    if let Some(code) = var("HOSTED_APP_EXIT_AT_START").and_then(|c| c.parse().ok()) {
        println!("hosted_app {pid} exits at start with {code}");
        std::process::exit(code);
    }
    if let Some(file) = var("HOSTED_APP_FAIL_WHILE") {
        if std::path::Path::new(&file).exists() {
            println!("hosted_app {pid} fails at start: {file} exists");
            std::process::exit(5);
        }
    }
    #[cfg(unix)]
    if var("HOSTED_APP_IGNORE_TERM").as_deref() == Some("1") {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGTERM, flag).expect("SIGTERM");
    }
    if let Some(ms) = var("HOSTED_APP_START_DELAY_MS").and_then(|m| m.parse().ok()) {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let token = var("ASPNETCORE_TOKEN").unwrap_or_default();
    #[cfg(unix)]
    if let Some(path) = var("PEREGRINE_SOCKET") {
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind the socket");
        println!("hosted_app {pid} listening on unix:{path}");
        for stream in listener.incoming().map_while(Result::ok) {
            let token = token.clone();
            std::thread::spawn(move || serve(stream, &token));
        }
        return;
    }
    let port: u16 = var("PORT").and_then(|p| p.parse().ok()).expect("PORT");
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind PORT");
    println!("hosted_app {pid} listening on 127.0.0.1:{port}");
    for stream in listener.incoming().map_while(Result::ok) {
        let token = token.clone();
        std::thread::spawn(move || serve(stream, &token));
    }
}

/// Answers requests on one connection until it closes.
fn serve<S: Read + Write>(stream: S, token: &str) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("/").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, text) =
            if headers.get("ms-aspnetcore-token").map(String::as_str) != Some(token) {
                ("400 Bad Request", "bad or missing pairing token\n".to_string())
            } else {
                match path.as_str() {
                    "/crash" => {
                        println!("hosted_app {} crashes on request", std::process::id());
                        std::process::exit(3);
                    }
                    "/slow" => {
                        std::thread::sleep(Duration::from_millis(200));
                        ("200 OK", describe(&path, &headers))
                    }
                    _ => ("200 OK", describe(&path, &headers)),
                }
            };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if reader.get_mut().write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// What the app knows about itself and the request, one `key=value` per line.
fn describe(path: &str, headers: &HashMap<String, String>) -> String {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let header = |name: &str| headers.get(name).cloned().unwrap_or_default();
    format!(
        "pid={}\nport={}\npath={path}\nappl_path={}\nx-forwarded-for={}\nx-forwarded-proto={}\n",
        std::process::id(),
        var("PORT"),
        var("ASPNETCORE_APPL_PATH"),
        header("x-forwarded-for"),
        header("x-forwarded-proto"),
    )
}

//! Operations: the admin listener (`/metrics`, `/healthz`, `/readyz`) and the access log.

mod common;

use std::time::Duration;

use common::{config, Client, TestHandler};
use peregrine::routes::BuiltinRoutes;
use peregrine::{AccessLogTarget, IoChoice, Limits, Server};

fn start_with_admin(limits: Limits, access_log: Option<AccessLogTarget>) -> Server {
    let mut cfg = config(IoChoice::Auto, limits);
    cfg.admin = Some("127.0.0.1:0".parse().unwrap());
    cfg.access_log = access_log;
    Server::start(cfg, TestHandler::new).expect("server starts")
}

fn admin_get(server: &Server, path: &str) -> common::RawResponse {
    let addr = server.admin_addr().expect("admin listener runs");
    common::request(addr, format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n").as_bytes())
}

/// The value of an unlabelled or exactly-labelled sample in Prometheus text.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// `/metrics` once the gauge `series` reads 0, or after about a second (closes and stream
/// ends land asynchronously); the caller asserts on the text.
fn metrics_once_zero(server: &Server, series: &str) -> String {
    let mut text = String::new();
    for _ in 0..50 {
        text = admin_get(server, "/metrics").text();
        if sample(&text, series) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    text
}

#[test]
fn health_and_readiness_follow_the_shutdown() {
    let server = start_with_admin(Limits::default(), None);
    let health = admin_get(&server, "/healthz");
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    assert_eq!(admin_get(&server, "/readyz").status, 200);
    // An in-flight request keeps the server draining while we probe it.
    let mut c = Client::connect(common::addr(&server));
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab");
    std::thread::sleep(Duration::from_millis(100));
    server.shutdown();
    let ready = admin_get(&server, "/readyz");
    assert_eq!(ready.status, 503, "readyz must fail once a shutdown starts");
    assert_eq!(admin_get(&server, "/healthz").status, 200, "still alive while draining");
    c.send(b"cd");
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (200, "abcd"));
    common::wait_within(server, Duration::from_secs(5));
}

#[test]
fn metrics_count_requests_rejections_and_connections() {
    let limits = Limits { max_request_header_count: 3, ..Limits::default() };
    let server = start_with_admin(limits, None);
    let addr = common::addr(&server);
    for _ in 0..3 {
        assert_eq!(
            common::request(addr, b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n").status,
            200
        );
    }
    let r = common::request(addr, b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
    assert_eq!(r.status, 431);
    // The connections' closes land asynchronously; poll briefly for the final counts.
    let text = metrics_once_zero(&server, "peregrine_connections_active");
    assert_eq!(sample(&text, "peregrine_connections_accepted_total"), 4, "{text}");
    assert_eq!(sample(&text, "peregrine_connections_active"), 0, "{text}");
    assert_eq!(sample(&text, "peregrine_responses_total{protocol=\"http/1.1\",code=\"2xx\"}"), 3);
    assert_eq!(sample(&text, "peregrine_responses_total{protocol=\"http/1.1\",code=\"4xx\"}"), 1);
    assert_eq!(sample(&text, "peregrine_rejections_total{reason=\"max_request_header_count\"}"), 1);
    assert_eq!(sample(&text, "peregrine_request_duration_seconds_count"), 3);
    assert!(sample(&text, "peregrine_sent_bytes_total") > 3 * 13);
    let driver = server.driver().to_string();
    assert!(text.contains(&format!("peregrine_io_driver{{driver=\"{driver}\"}} 1")), "{text}");
    assert_eq!(admin_get(&server, "/nope").status, 404);
    common::finish(server);
}

/// HTTP/2 streams answered on the connection task (no task of their own) and streams that
/// went to `call` are counted in and out alike: none stays active once all are answered.
#[test]
fn h2_streams_answered_either_way_leave_none_active() {
    let mut cfg = config(IoChoice::Auto, Limits::default());
    cfg.admin = Some("127.0.0.1:0".parse().unwrap());
    let server = Server::start(cfg, || BuiltinRoutes::new(&[])).expect("server starts");
    let addr = common::addr(&server);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = common::h2c(addr).await;
        // Answered from the head: `/plaintext` and a 404; called: `/echo` with a body.
        for (path, body, status) in
            [("/plaintext", None, 200), ("/nowhere", None, 404), ("/echo", Some("abc"), 200)]
        {
            for _ in 0..5 {
                let mut client = client.clone().ready().await.unwrap();
                let method = if body.is_some() { "POST" } else { "GET" };
                let request = http::Request::builder()
                    .method(method)
                    .uri(format!("http://x{path}"))
                    .body(())
                    .unwrap();
                let (response, mut send) = client.send_request(request, body.is_none()).unwrap();
                if let Some(b) = body {
                    send.send_data(bytes::Bytes::from_static(b.as_bytes()), true).unwrap();
                }
                let response = response.await.unwrap();
                assert_eq!(response.status().as_u16(), status, "{path}");
                let mut body = response.into_body();
                while let Some(chunk) = body.data().await {
                    body.flow_control().release_capacity(chunk.unwrap().len()).unwrap();
                }
            }
        }
    });
    let text = metrics_once_zero(&server, "peregrine_h2_streams_active");
    assert_eq!(sample(&text, "peregrine_h2_streams_active"), 0, "{text}");
    assert_eq!(sample(&text, "peregrine_connections_by_protocol_total{protocol=\"h2\"}"), 1);
    // Responses are counted by status class under one label for both protocols.
    assert_eq!(sample(&text, "peregrine_responses_total{protocol=\"http/1.1\",code=\"2xx\"}"), 10);
    assert_eq!(sample(&text, "peregrine_responses_total{protocol=\"http/1.1\",code=\"4xx\"}"), 5);
    common::finish(server);
}

#[test]
fn access_log_writes_one_json_line_per_request() {
    let path = std::env::temp_dir().join(format!("peregrine-ops-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let server = start_with_admin(Limits::default(), Some(AccessLogTarget::File(path.clone())));
    let addr = common::addr(&server);
    assert_eq!(
        common::request(addr, b"GET /plaintext?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").status,
        200
    );
    assert_eq!(common::request(addr, b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n").status, 404);
    common::shutdown_and_wait(server, Duration::from_secs(5));
    let text = std::fs::read_to_string(&path).expect("access log written");
    let _ = std::fs::remove_file(&path);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("{\"time\":\"") && lines[0].ends_with('}'), "{}", lines[0]);
    assert!(lines[0].contains("\"peer\":\"127.0.0.1:"), "{}", lines[0]);
    assert!(
        lines[0].contains(
            r#""method":"GET","target":"/plaintext?x=1","protocol":"HTTP/1.1","status":200,"bytes":13,"#
        ),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(
            r#""method":"GET","target":"/missing","protocol":"HTTP/1.1","status":404,"bytes":10,"#
        ),
        "{}",
        lines[1]
    );
}

#[test]
fn binary_prints_its_admin_address_and_serves_probes() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_peregrine"))
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--threads", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("admin listening on http://") {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let admin = rx.recv_timeout(Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    let admin: std::net::SocketAddr = admin.expect("no `admin listening on` line").parse().unwrap();
    // The child is gone: it printed a bound address, which is what this test checks; probes
    // against a running admin listener are covered above.
    assert_ne!(admin.port(), 0);
}

#[test]
fn admin_listener_sheds_oversized_and_stalled_clients() {
    use std::io::{Read, Write};
    let server = start_with_admin(Limits::default(), None);
    let admin = server.admin_addr().unwrap();
    // A head past 8 KiB is dropped without an answer.
    let mut big = std::net::TcpStream::connect(admin).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ =
        big.write_all(format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000)).as_bytes());
    let mut got = Vec::new();
    let _ = big.read_to_end(&mut got);
    assert!(got.is_empty(), "answered an oversized head: {:?}", String::from_utf8_lossy(&got));
    // A client that stalls mid-request holds the one-at-a-time listener for its 2 s timeout at
    // most: a probe behind it is still answered.
    let mut stalled = std::net::TcpStream::connect(admin).unwrap();
    stalled.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let start = std::time::Instant::now();
    assert_eq!(admin_get(&server, "/healthz").status, 200);
    assert!(start.elapsed() < Duration::from_secs(4), "probe waited {:?}", start.elapsed());
    drop(stalled);
    common::finish(server);
}

//! The response cache over real sockets: a scripted upstream (`common::upstream`, which
//! records every request it gets) behind the binary's router with `cache = true`, raw
//! HTTP/1.1 clients in front. What reaches the upstream is the proof of a hit.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::upstream::{self, ok, Reply, Upstream};
use common::{addr, RawResponse};
use peregrine::{IoChoice, Server};

/// A server routing everything to `up` through the cache (`[cache]` keys `cache_keys`).
fn cached(up: &Upstream, cache_keys: &str) -> Server {
    let toml = format!(
        "[cache]\n{cache_keys}\n[[upstream]]\nname = \"app\"\n[[upstream.server]]\n\
         address = \"http://{}\"\n[[route]]\nupstream = \"app\"\ncache = true\n",
        up.addr
    );
    common::routed(IoChoice::Auto, &toml, false)
}

fn get(a: SocketAddr, path: &str, headers: &str) -> RawResponse {
    common::request(a, format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n{headers}\r\n").as_bytes())
}

/// How many requests for `path` reached the upstream.
fn upstream_saw(up: &Upstream, path: &str) -> usize {
    up.seen().iter().filter(|s| s.target() == path).count()
}

fn stop(server: Server) {
    common::shutdown_and_wait(server, Duration::from_secs(10));
}

/// The upstream: answers by path, numbering its answers so a cached one shows.
fn scripted() -> Upstream {
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    upstream::start(move |seen| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = seen.target().split('?').next().unwrap_or("").to_string();
        let body = format!("answer {i}");
        match path.as_str() {
            "/fresh" => ok(&body, "cache-control: max-age=60\r\netag: \"v1\"\r\n"),
            "/short" => ok(&body, "cache-control: max-age=1\r\n"),
            "/none" => ok(&body, ""),
            "/no-store" => ok(&body, "cache-control: no-store, max-age=60\r\n"),
            "/private" => ok(&body, "cache-control: private, max-age=60\r\n"),
            "/no-cache" => ok(&body, "cache-control: no-cache\r\n"),
            "/cookie" => ok(&body, "cache-control: max-age=60\r\nset-cookie: s=1\r\n"),
            "/vary-star" => ok(&body, "cache-control: max-age=60\r\nvary: *\r\n"),
            "/public" => ok(&body, "cache-control: public, max-age=60\r\n"),
            "/vary" => {
                let lang = seen.header("accept-language").unwrap_or_default();
                ok(&format!("{body} {lang}"), "cache-control: max-age=60\r\nvary: accept-language\r\n")
            }
            "/missing" => Reply::Bytes(
                format!(
                    "HTTP/1.1 404 Not Found\r\ncache-control: max-age=60\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            ),
            "/error" => Reply::Bytes(
                b"HTTP/1.1 500 Oops\r\ncache-control: max-age=60\r\ncontent-length: 4\r\n\r\nfail"
                    .to_vec(),
            ),
            "/slow" => Reply::After(
                Duration::from_millis(500),
                Box::new(ok(&body, "cache-control: max-age=60\r\n")),
            ),
            "/big" => ok(&"x".repeat(4000), "cache-control: max-age=60\r\n"),
            "/huge" => ok(&body, "cache-control: max-age=18446744073709551616\r\n"),
            "/huge-age" => ok(&body, "cache-control: max-age=60\r\nage: 99999999999999999999\r\n"),
            _ => ok(&body, ""),
        }
    })
}

#[test]
fn fresh_responses_are_served_from_memory_with_age_and_validators() {
    let up = scripted();
    let server = cached(&up, "");
    let a = addr(&server);
    let first = get(a, "/fresh", "");
    assert_eq!((first.status, first.header("x-cache")), (200, Some("MISS")));
    std::thread::sleep(Duration::from_millis(1100));
    let second = get(a, "/fresh", "");
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.body, first.body, "the stored answer");
    let age = |r: &common::RawResponse| r.header("age").unwrap().parse::<u64>().unwrap();
    assert!(age(&second) >= 1);
    assert_eq!(second.header("etag"), Some("\"v1\""));
    // The start of a hit's head is kept with the entry, and follows its `Age`.
    let third = get(a, "/fresh", "");
    assert!(age(&third) >= age(&second));
    std::thread::sleep(Duration::from_millis(1100));
    let fourth = get(a, "/fresh", "");
    assert!(age(&fourth) > age(&third), "{} then {}", age(&third), age(&fourth));
    assert_eq!(fourth.headers.iter().filter(|(n, _)| n == "age").count(), 1);
    assert_eq!(fourth.body, first.body);
    assert_eq!(upstream_saw(&up, "/fresh"), 1);
    // HEAD is answered from GET's entry, with its length.
    let mut c = common::Client::connect(a);
    c.send(b"HEAD /fresh HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let h = c.read_head();
    assert_eq!((h.status, h.header("x-cache")), (200, Some("HIT")));
    assert_eq!(h.header("content-length"), Some(first.body.len().to_string().as_str()));
    // Conditional requests are answered by the cache.
    let r = get(a, "/fresh", "If-None-Match: \"v1\"\r\n");
    assert_eq!((r.status, r.header("x-cache")), (304, Some("HIT")));
    assert_eq!(upstream_saw(&up, "/fresh"), 1);
    // Another query is another key; the host is part of the key.
    assert_eq!(get(a, "/fresh?page=2", "").header("x-cache"), Some("MISS"));
    let other_host = common::request(a, b"GET /fresh HTTP/1.1\r\nHost: other.test\r\n\r\n");
    assert_eq!(other_host.header("x-cache"), Some("MISS"));
    // A 404 with freshness is stored too; a 500 is not.
    get(a, "/missing", "");
    assert_eq!(get(a, "/missing", "").header("x-cache"), Some("HIT"));
    get(a, "/error", "");
    assert_eq!(get(a, "/error", "").header("x-cache"), Some("MISS"));
    assert_eq!(upstream_saw(&up, "/error"), 2);
    stop(server);
}

/// Delta-seconds past any clock's range count as 2^31 (RFC 9111 §1.2.2): a `max-age` too
/// large for a u64 is stored and served, and an `Age` past every lifetime is never fresh;
/// neither fails the request.
#[test]
fn delta_seconds_beyond_any_clock_are_capped_not_failed() {
    let up = scripted();
    let server = cached(&up, "");
    let a = addr(&server);
    assert_eq!(get(a, "/huge", "").status, 200);
    let hit = get(a, "/huge", "");
    assert_eq!((hit.status, hit.header("x-cache")), (200, Some("HIT")));
    assert_eq!(upstream_saw(&up, "/huge"), 1);
    for _ in 0..2 {
        let r = get(a, "/huge-age", "");
        assert_eq!((r.status, r.header("x-cache")), (200, Some("MISS")), "{r:?}");
    }
    assert_eq!(upstream_saw(&up, "/huge-age"), 2);
    stop(server);
}

#[test]
fn responses_and_requests_that_may_not_be_cached_are_not() {
    let up = scripted();
    let server = cached(&up, "");
    let a = addr(&server);
    for path in ["/none", "/no-store", "/private", "/no-cache", "/cookie", "/vary-star"] {
        get(a, path, "");
        let second = get(a, path, "");
        assert_eq!(second.header("x-cache"), Some("MISS"), "{path} was served from the cache");
        assert_eq!(upstream_saw(&up, path), 2, "{path}");
    }
    // Requests: Authorization (unless the answer says public), no-store, POST, Range.
    get(a, "/fresh", "Authorization: Bearer x\r\n");
    get(a, "/fresh", "Authorization: Bearer x\r\n");
    assert_eq!(upstream_saw(&up, "/fresh"), 2, "an authorized answer without public was stored");
    get(a, "/public", "Authorization: Bearer x\r\n");
    assert_eq!(get(a, "/public", "").header("x-cache"), Some("HIT"));
    let r = get(a, "/public", "Cache-Control: no-store\r\n");
    assert_eq!(r.header("x-cache"), Some("BYPASS"));
    let post =
        common::request(a, b"POST /public HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post.header("x-cache"), Some("BYPASS"));
    assert_eq!(get(a, "/public", "Range: bytes=0-1\r\n").header("x-cache"), Some("BYPASS"));
    // no-cache from the client refreshes the entry.
    let refreshed = get(a, "/public", "Cache-Control: no-cache\r\n");
    assert_eq!(refreshed.header("x-cache"), Some("MISS"));
    assert_eq!(get(a, "/public", "").body, refreshed.body);
    stop(server);
}

#[test]
fn vary_keys_expiry_and_size_limits() {
    let up = scripted();
    let server = cached(&up, "max_entry_size = 1000");
    let a = addr(&server);
    let en = get(a, "/vary", "Accept-Language: en\r\n");
    let fr = get(a, "/vary", "Accept-Language: fr\r\n");
    assert_ne!(en.body, fr.body);
    assert_eq!(get(a, "/vary", "Accept-Language: en\r\n").body, en.body);
    assert_eq!(get(a, "/vary", "Accept-Language: fr\r\n").body, fr.body);
    assert_eq!(get(a, "/vary", "Accept-Language: fr\r\n").header("x-cache"), Some("HIT"));
    assert_eq!(upstream_saw(&up, "/vary"), 2, "one upstream request per variant");
    // Expiry: max-age=1 is fresh, then expired.
    get(a, "/short", "");
    assert_eq!(get(a, "/short", "").header("x-cache"), Some("HIT"));
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(get(a, "/short", "").header("x-cache"), Some("EXPIRED"));
    // Larger than max_entry_size: passed through whole, not stored.
    let big = get(a, "/big", "");
    assert_eq!(big.body.len(), 4000);
    assert_eq!(get(a, "/big", "").header("x-cache"), Some("MISS"));
    stop(server);
}

#[test]
fn fifty_concurrent_misses_send_one_upstream_request() {
    let up = scripted();
    let server = cached(&up, "");
    let a = addr(&server);
    let clients: Vec<_> =
        (0..50).map(|_| std::thread::spawn(move || get(a, "/slow", ""))).collect();
    let answers: Vec<RawResponse> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(answers.iter().all(|r| r.status == 200 && r.body == answers[0].body));
    assert_eq!(upstream_saw(&up, "/slow"), 1, "collapsed misses went upstream more than once");
    stop(server);
}

#[test]
fn a_miss_waits_no_longer_than_lock_timeout_for_another_fetch() {
    let up = scripted();
    let server = cached(&up, "lock_timeout = \"100ms\"");
    let a = addr(&server);
    // The first fetch of /slow takes 500 ms; the second request gives up waiting after
    // 100 ms and goes upstream itself.
    let first = std::thread::spawn(move || get(a, "/slow", ""));
    std::thread::sleep(Duration::from_millis(50));
    let second = get(a, "/slow", "");
    assert_eq!((second.status, second.header("x-cache")), (200, Some("MISS")));
    assert_eq!(first.join().unwrap().status, 200);
    assert_eq!(upstream_saw(&up, "/slow"), 2, "the second miss did not go upstream itself");
    stop(server);
}

/// Purging everything would reach the other tests' caches in this process: that is
/// `cache_binary.rs`'s (through the admin listener of a child process).
#[test]
fn a_purged_key_is_fetched_again_and_the_others_stay() {
    let up = scripted();
    let server = cached(&up, "");
    let a = addr(&server);
    let on = |path: &str| {
        common::request(a, format!("GET {path} HTTP/1.1\r\nHost: purge.test\r\n\r\n").as_bytes())
    };
    on("/fresh");
    on("/public");
    assert_eq!(on("/fresh").header("x-cache"), Some("HIT"));
    peregrine::cache::purge(peregrine::cache::Purge::Key {
        host: "PURGE.test".into(),
        path: "/fresh".into(),
    });
    assert_eq!(on("/fresh").header("x-cache"), Some("MISS"));
    assert_eq!(on("/public").header("x-cache"), Some("HIT"), "only that key went");
    stop(server);
}

/// Over HTTP/2, where a hit is answered from the stream's decoded head (no `Request` built):
/// the stored answer, `Vary` selected by the request's fields, a conditional `304`, HEAD.
#[test]
fn hits_over_http2_are_answered_from_the_head() {
    let up = scripted();
    let server = cached(&up, "");
    let a = addr(&server);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = common::h2c(a).await;
        let fetch = |method: &str, path: &str, fields: &[(&str, &str)]| {
            let mut client = client.clone();
            let mut request =
                http::Request::builder().method(method).uri(format!("http://app.test{path}"));
            for (name, value) in fields {
                request = request.header(*name, *value);
            }
            let request = request.body(()).unwrap();
            async move {
                client = client.ready().await.unwrap();
                let (response, _) = client.send_request(request, true).unwrap();
                let (parts, mut body) = response.await.unwrap().into_parts();
                let mut bytes = Vec::new();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.unwrap();
                    body.flow_control().release_capacity(chunk.len()).unwrap();
                    bytes.extend_from_slice(&chunk);
                }
                let cache = parts.headers.get("x-cache").map(|v| v.to_str().unwrap().to_owned());
                (parts.status.as_u16(), cache, bytes)
            }
        };
        let first = fetch("GET", "/fresh", &[]).await;
        assert_eq!((first.0, first.1.as_deref()), (200, Some("MISS")));
        let again = fetch("GET", "/fresh", &[]).await;
        assert_eq!((again.1.as_deref(), &again.2), (Some("HIT"), &first.2));
        let head = fetch("HEAD", "/fresh", &[]).await;
        assert_eq!((head.0, head.1.as_deref(), head.2.len()), (200, Some("HIT"), 0));
        let not_modified = fetch("GET", "/fresh", &[("if-none-match", "\"v1\"")]).await;
        assert_eq!((not_modified.0, not_modified.1.as_deref()), (304, Some("HIT")));
        assert_eq!(upstream_saw(&up, "/fresh"), 1);
        let en = fetch("GET", "/vary", &[("accept-language", "en")]).await;
        let fr = fetch("GET", "/vary", &[("accept-language", "fr")]).await;
        assert_ne!(en.2, fr.2);
        let en_again = fetch("GET", "/vary", &[("accept-language", "en")]).await;
        assert_eq!((en_again.1.as_deref(), &en_again.2), (Some("HIT"), &en.2));
        assert_eq!(upstream_saw(&up, "/vary"), 2, "one upstream request per variant");
    });
    stop(server);
}

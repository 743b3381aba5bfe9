//! Static files over real sockets: a directory on disk behind the binary's router
//! (`[[route]] root`), raw HTTP/1.1 requests (so nothing normalises the paths sent), curl
//! over HTTP/1.1, h2c and TLS for the large downloads.

mod common;

#[cfg(unix)]
use std::io::{Read, Write};
use std::net::SocketAddr;
#[cfg(unix)]
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use common::{addr, Client, RawResponse};
use peregrine::{IoChoice, Limits, Server};

/// A directory tree for one test, removed when dropped.
struct Site(PathBuf);

impl Site {
    fn new(name: &str) -> Site {
        let dir =
            std::env::temp_dir().join(format!("peregrine-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("public")).unwrap();
        Site(dir)
    }

    /// The served root.
    fn root(&self) -> PathBuf {
        self.0.join("public")
    }

    /// Writes `content` at `relative` under the root.
    fn put(&self, relative: &str, content: &[u8]) -> PathBuf {
        let path = self.root().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server running the binary's router over `toml` on driver `io` (TLS when `tls`).
fn serve_config(io: IoChoice, toml: &str, tls: bool) -> Server {
    common::routed(io, toml, tls)
}

/// A server for `site` with the route keys `extra` (and `[files]` keys `files`).
fn serve(io: IoChoice, site: &Site, extra: &str, files: &str) -> Server {
    let root = site.root().display().to_string().replace('\\', "/");
    serve_config(
        io,
        &format!("[files]\n{files}\n[[route]]\npath_prefix = \"/\"\nroot = \"{root}\"\n{extra}\n"),
        false,
    )
}

/// Stops a server and waits for it (the file routes serve no `/plaintext` to health-check).
fn stop(server: Server) {
    common::shutdown_and_wait(server, Duration::from_secs(10));
}

fn get(addr: SocketAddr, path: &str, headers: &str) -> RawResponse {
    common::request(addr, format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes())
}

fn head(addr: SocketAddr, path: &str) -> RawResponse {
    let mut c = Client::connect(addr);
    c.send(format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    c.read_head()
}

both_drivers!(validators_and_conditional_requests);

fn validators_and_conditional_requests(io: IoChoice) {
    let site = Site::new(&format!("cond-{io:?}"));
    site.put("index.html", b"<h1>home</h1>\n");
    site.put("app.js", b"console.log(1)\n");
    site.put("data.unknownext", b"\x00\x01");
    let server = serve(io, &site, "cache_control = \"public, max-age=60\"", "");
    let a = addr(&server);

    let r = get(a, "/", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"<h1>home</h1>\n");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
    let etag = r.header("etag").expect("etag").to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "a strong tag: {etag}");
    let modified = r.header("last-modified").expect("last-modified").to_string();
    assert_eq!(get(a, "/index.html", "").header("etag"), Some(etag.as_str()));
    assert_eq!(
        get(a, "/app.js", "").header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        get(a, "/data.unknownext", "").header("content-type"),
        Some("application/octet-stream")
    );

    // HEAD: the same head, no body.
    let h = head(a, "/index.html");
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("14"));
    assert_eq!(h.header("etag"), Some(etag.as_str()));

    // 304s carry the validators and no body; 412s for failed If-Match/If-Unmodified-Since.
    let inm = get(a, "/index.html", &format!("If-None-Match: \"other\", {etag}\r\n"));
    assert_eq!(inm.status, 304);
    assert_eq!(inm.header("etag"), Some(etag.as_str()));
    assert!(inm.body.is_empty());
    assert_eq!(get(a, "/index.html", "If-None-Match: \"other\"\r\n").status, 200);
    assert_eq!(get(a, "/index.html", &format!("If-Modified-Since: {modified}\r\n")).status, 304);
    let old = "Thu, 01 Jan 1998 00:00:00 GMT";
    assert_eq!(get(a, "/index.html", &format!("If-Modified-Since: {old}\r\n")).status, 200);
    assert_eq!(get(a, "/index.html", "If-Match: \"other\"\r\n").status, 412);
    assert_eq!(get(a, "/index.html", &format!("If-Match: {etag}\r\n")).status, 200);
    assert_eq!(get(a, "/index.html", &format!("If-Unmodified-Since: {old}\r\n")).status, 412);

    // Missing files, other methods.
    assert_eq!(get(a, "/nope.html", "").status, 404);
    let post =
        common::request(a, b"POST /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    stop(server);
}

/// The parts of a `multipart/byteranges` body: (Content-Range, bytes).
fn multipart(r: &RawResponse) -> Vec<(String, Vec<u8>)> {
    let ct = r.header("content-type").unwrap();
    let boundary = ct.split("boundary=").nth(1).expect("a boundary");
    let delimiter = format!("--{boundary}");
    let body = &r.body;
    let mut parts = Vec::new();
    let mut rest: &[u8] = body;
    loop {
        let at = find(rest, delimiter.as_bytes()).expect("a delimiter");
        rest = &rest[at + delimiter.len()..];
        if rest.starts_with(b"--") {
            return parts;
        }
        let head_end = find(rest, b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .expect("a part's Content-Range")
            .to_string();
        rest = &rest[head_end + 4..];
        let end = find(rest, format!("\r\n{delimiter}").as_bytes()).unwrap();
        parts.push((range, rest[..end].to_vec()));
        rest = &rest[end + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

both_drivers!(range_requests);

fn range_requests(io: IoChoice) {
    let site = Site::new(&format!("ranges-{io:?}"));
    let small: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    // Larger than the in-memory cache's files: served from the descriptor (spliced on
    // io_uring, sent by TransmitFile on IOCP, in more than one call: over 1 MiB).
    let large: Vec<u8> = (0..1_500_000u32).map(|i| (i % 241) as u8).collect();
    site.put("small.bin", &small);
    site.put("large.bin", &large);
    let server = serve(io, &site, "", "max_ranges = 4");
    let a = addr(&server);
    for (path, content) in [("/small.bin", &small), ("/large.bin", &large)] {
        let len = content.len();
        let r = get(a, path, "Range: bytes=10-19\r\n");
        assert_eq!(r.status, 206, "{path}");
        assert_eq!(r.header("content-range"), Some(format!("bytes 10-19/{len}").as_str()));
        assert_eq!(r.body, &content[10..20]);
        let r = get(a, path, "Range: bytes=-5\r\n");
        assert_eq!(r.body, &content[len - 5..]);
        let r = get(a, path, "Range: bytes=990-\r\n");
        assert_eq!(r.body, &content[990..]);

        let r = get(a, path, "Range: bytes=0-3, 500-503, 900-909\r\n");
        assert_eq!(r.status, 206);
        assert!(r.header("content-type").unwrap().starts_with("multipart/byteranges"));
        let parts = multipart(&r);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], (format!("bytes 0-3/{len}"), content[0..4].to_vec()));
        assert_eq!(parts[1], (format!("bytes 500-503/{len}"), content[500..504].to_vec()));
        assert_eq!(parts[2], (format!("bytes 900-909/{len}"), content[900..910].to_vec()));

        let r = get(a, path, &format!("Range: bytes={len}-\r\n"));
        assert_eq!(r.status, 416);
        assert_eq!(r.header("content-range"), Some(format!("bytes */{len}").as_str()));
        // Overlapping ranges are refused; more than max_ranges get the whole file.
        assert_eq!(get(a, path, "Range: bytes=0-10, 5-20\r\n").status, 416);
        let many = get(a, path, "Range: bytes=0-0,2-2,4-4,6-6,8-8\r\n");
        assert_eq!((many.status, many.body.len()), (200, len));
        // Malformed ranges are ignored.
        assert_eq!(get(a, path, "Range: bytes=z-1\r\n").status, 200);

        // If-Range: the current tag (or date) gets the range, a stale one the whole file.
        let etag = get(a, path, "").header("etag").unwrap().to_string();
        let modified = get(a, path, "").header("last-modified").unwrap().to_string();
        let r = get(a, path, &format!("Range: bytes=0-1\r\nIf-Range: {etag}\r\n"));
        assert_eq!((r.status, r.body.len()), (206, 2));
        let r = get(a, path, &format!("Range: bytes=0-1\r\nIf-Range: {modified}\r\n"));
        assert_eq!((r.status, r.body.len()), (206, 2));
        let r = get(a, path, "Range: bytes=0-1\r\nIf-Range: \"stale\"\r\n");
        assert_eq!((r.status, r.body.len()), (200, len));
    }
    stop(server);
}

#[test]
fn precompressed_siblings_are_chosen_by_accept_encoding() {
    let site = Site::new("precompressed");
    site.put("app.css", b"body { color: red }\n");
    site.put("app.css.br", b"BROTLI BYTES");
    site.put("app.css.gz", b"GZIP BYTES");
    site.put("plain.txt", b"plain\n");
    let server = serve(IoChoice::Auto, &site, "", "");
    let a = addr(&server);
    let r = get(a, "/app.css", "Accept-Encoding: gzip, deflate, br\r\n");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"BROTLI BYTES"[..]));
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    let br_tag = r.header("etag").unwrap().to_string();
    let r = get(a, "/app.css", "Accept-Encoding: gzip, br;q=0.5\r\n");
    assert_eq!(
        (r.body.as_slice(), r.header("content-encoding")),
        (&b"GZIP BYTES"[..], Some("gzip"))
    );
    assert_ne!(r.header("etag").unwrap(), br_tag, "each representation has its own tag");
    let r = get(a, "/app.css", "Accept-Encoding: zstd\r\n");
    assert_eq!(
        (r.body.as_slice(), r.header("content-encoding")),
        (&b"body { color: red }\n"[..], None)
    );
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    let r = get(a, "/app.css", "");
    assert_eq!(r.body, b"body { color: red }\n");
    // 304 for the representation the client has.
    let r = get(a, "/app.css", &format!("Accept-Encoding: br\r\nIf-None-Match: {br_tag}\r\n"));
    assert_eq!(r.status, 304);
    // The sibling itself stays reachable, and a file without siblings does not vary.
    assert_eq!(get(a, "/app.css.gz", "").body, b"GZIP BYTES");
    assert_eq!(get(a, "/plain.txt", "Accept-Encoding: br\r\n").header("vary"), None);
    stop(server);
}

#[test]
fn directories_redirect_to_their_slash_and_serve_their_index() {
    let site = Site::new("dirs");
    site.put("docs/index.html", b"docs index");
    site.put("empty/readme.txt", b"no index here");
    let server = serve(IoChoice::Auto, &site, "", "");
    let a = addr(&server);
    let r = get(a, "/docs", "");
    assert_eq!((r.status, r.header("location")), (308, Some("/docs/")));
    let r = get(a, "/docs?page=2", "");
    assert_eq!(r.header("location"), Some("/docs/?page=2"));
    assert_eq!(get(a, "/docs/", "").body, b"docs index");
    // No listing: a directory without an index is missing.
    assert_eq!(get(a, "/empty/", "").status, 404);
    assert_eq!(get(a, "/docs/index.html/", "").status, 404);
    stop(server);
}

/// Known traversal and confusion payloads (raw request targets, sent as they are).
const PAYLOADS: &[&str] = &[
    "/../secret.txt",
    "/../../secret.txt",
    "/a/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/%2e%2e%2fsecret.txt",
    "/..%2fsecret.txt",
    "/..%5csecret.txt",
    "/%2e%2e%5csecret.txt",
    "/..\\secret.txt",
    "/.%2e/secret.txt",
    "/%252e%252e/secret.txt",
    "/..%252fsecret.txt",
    "/%c0%ae%c0%ae/secret.txt",
    "/%uff0e%uff0e/secret.txt",
    "/..%00/secret.txt",
    "/index.html%00.txt",
    "/....//secret.txt",
    "/..;/secret.txt",
    "/C:/secret.txt",
    "/c:%5csecret.txt",
    "/public/../../secret.txt",
    "/inside.txt::$DATA",
    "/inside.txt.",
    "/inside.txt%20",
    "/CON",
    "/aux.txt",
    "/.env",
    "/.git/config",
    "/sub/.htpasswd",
    "/escape",
    "/escape-dir/secret.txt",
    "//secret.txt",
];

both_drivers!(traversal_payloads_never_read_outside_the_root);

fn traversal_payloads_never_read_outside_the_root(io: IoChoice) {
    let site = Site::new(&format!("traversal-{io:?}"));
    std::fs::write(site.0.join("secret.txt"), b"TOP SECRET").unwrap();
    site.put("inside.txt", b"inside");
    site.put(".env", b"TOP SECRET env");
    site.put(".git/config", b"TOP SECRET git");
    site.put("sub/.htpasswd", b"TOP SECRET htpasswd");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(site.0.join("secret.txt"), site.root().join("escape")).unwrap();
        std::os::unix::fs::symlink(&site.0, site.root().join("escape-dir")).unwrap();
        std::os::unix::fs::symlink(site.root().join("inside.txt"), site.root().join("link"))
            .unwrap();
    }
    let server = serve(io, &site, "", "");
    let a = addr(&server);
    for payload in PAYLOADS {
        let mut c = Client::connect(a);
        c.send(
            format!("GET {payload} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let raw = c.read_to_eof_within(Duration::from_secs(5));
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains("TOP SECRET"), "{payload} read a file it must not:\n{text}");
        let status = common::first_status(&raw).unwrap_or(0);
        assert!(
            matches!(status, 400 | 404),
            "{payload}: expected 400 or 404, got {status}:\n{text}"
        );
    }
    // A symlink inside the root is served as its target.
    #[cfg(unix)]
    assert_eq!(get(a, "/link", "").body, b"inside");
    assert_eq!(get(a, "/inside.txt", "").body, b"inside");
    stop(server);
}

#[test]
fn dot_files_and_outside_symlinks_are_served_when_the_route_says_so() {
    let site = Site::new("shown");
    site.put(".well-known/security.txt", b"Contact: x");
    std::fs::write(site.0.join("shared.txt"), b"shared").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(site.0.join("shared.txt"), site.root().join("shared")).unwrap();
    let server =
        serve(IoChoice::Auto, &site, "show_hidden = true\nsymlinks_outside_root = true", "");
    let a = addr(&server);
    assert_eq!(get(a, "/.well-known/security.txt", "").body, b"Contact: x");
    #[cfg(unix)]
    assert_eq!(get(a, "/shared", "").body, b"shared");
    // Still no way up from the root by path.
    assert_eq!(get(a, "/../shared.txt", "").status, 400);
    stop(server);
}

#[test]
fn a_file_changed_on_disk_is_seen_after_the_revalidation_time() {
    let site = Site::new("revalidate");
    site.put("v.txt", b"version one");
    site.put("big.bin", &vec![1u8; 100_000]);
    let server = serve(IoChoice::Auto, &site, "", "revalidate_after = \"300ms\"");
    let a = addr(&server);
    assert_eq!(get(a, "/v.txt", "").body, b"version one");
    let big = get(a, "/big.bin", "").header("etag").unwrap().to_string();
    // Replaced (another inode) and rewritten in place (another length and time). Windows
    // (Wine) cannot rename over a file another handle has open, so there it is rewritten.
    if cfg!(unix) {
        let tmp = site.0.join("v.tmp");
        std::fs::write(&tmp, b"version two, longer").unwrap();
        std::fs::rename(&tmp, site.root().join("v.txt")).unwrap();
    } else {
        site.put("v.txt", b"version two, longer");
    }
    std::thread::sleep(Duration::from_millis(20));
    site.put("big.bin", &vec![2u8; 100_001]);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(get(a, "/v.txt", "").body, b"version two, longer");
    let r = get(a, "/big.bin", "");
    assert_eq!((r.body.len(), r.body[0]), (100_001, 2));
    assert_ne!(r.header("etag").unwrap(), big);
    // A deleted file is gone after the same time. (Wine keeps a deleted file's name while a
    // handle is open, as Windows did before POSIX delete semantics became its default.)
    if cfg!(unix) {
        std::fs::remove_file(site.root().join("v.txt")).unwrap();
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(get(a, "/v.txt", "").status, 404);
    }
    stop(server);
}

#[test]
fn files_first_then_the_upstream_for_the_rest() {
    let site = Site::new("try-files");
    site.put("static.txt", b"from disk");
    let upstream = Server::start(common::config(IoChoice::Auto, Limits::default()), || {
        |req: http::Request<peregrine::Body>| async move {
            http::Response::new(peregrine::Body::from(format!(
                "from the app: {}",
                req.uri().path()
            )))
        }
    })
    .unwrap();
    let root = site.root().display().to_string().replace('\\', "/");
    let toml = format!(
        "[[upstream]]\nname = \"app\"\n[[upstream.server]]\naddress = \"http://{}\"\n\
         [[route]]\npath_prefix = \"/\"\nroot = \"{root}\"\nupstream = \"app\"\n",
        addr(&upstream)
    );
    let server = serve_config(IoChoice::Auto, &toml, false);
    let a = addr(&server);
    assert_eq!(get(a, "/static.txt", "").body, b"from disk");
    assert_eq!(get(a, "/api/users", "").body, b"from the app: /api/users");
    let post =
        common::request(a, b"POST /static.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post.body, b"from the app: /static.txt");
    stop(server);
    stop(upstream);
}

#[cfg(unix)]
/// A file of `len` bytes whose content repeats a 1 MiB + 7 block of pseudo-random bytes: a
/// period no power-of-two offset error can hide behind.
fn big_file(path: &Path, len: u64) -> Vec<u8> {
    let mut block = vec![0u8; (1 << 20) + 7];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for b in &mut block {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
    block
}

#[cfg(unix)]
/// Downloads `url` with curl (`args` first) and checks every byte against the repeating
/// `block`; returns the length read.
fn download_and_check(args: &[&str], url: &str, block: &[u8]) -> u64 {
    let mut child = std::process::Command::new("curl")
        .args(["-sS", "--fail", "-k"])
        .args(args)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl runs (./test.sh installs it)");
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut at: u64 = 0;
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        // Compared a block-aligned slice at a time (memcmp), byte positions only on failure.
        let mut done = 0;
        while done < n {
            let offset = ((at + done as u64) % block.len() as u64) as usize;
            let take = (n - done).min(block.len() - offset);
            if buf[done..done + take] != block[offset..offset + take] {
                let i = (0..take).find(|&i| buf[done + i] != block[offset + i]).unwrap();
                panic!("{url} {args:?}: byte {} differs from the file's", at + (done + i) as u64);
            }
            done += take;
        }
        at += n as u64;
    }
    assert!(child.wait().unwrap().success(), "curl {args:?} {url} failed");
    at
}

#[cfg(unix)]
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// 1 GiB over HTTP/1.1 (spliced from the page cache on io_uring), h2c and TLS (read on the
/// disk pool), each byte checked, with the server's memory (this process: the server runs
/// in it, curl outside) bounded whatever the file's size.
#[cfg(unix)]
#[test]
fn a_1_gib_file_downloads_whole_over_h1_h2_and_tls_in_bounded_memory() {
    const LEN: u64 = 1 << 30;
    let site = Site::new("gib");
    let block = big_file(&site.root().join("gib.bin"), LEN);
    let plain = serve(IoChoice::Auto, &site, "", "");
    let root = site.root().display().to_string();
    let tls = serve_config(
        IoChoice::Auto,
        &format!("[[route]]\npath_prefix = \"/\"\nroot = \"{root}\"\n"),
        true,
    );
    let before = peak_rss_kib();
    let url = format!("http://{}/gib.bin", addr(&plain));
    let https = format!("https://{}/gib.bin", addr(&tls));
    assert_eq!(download_and_check(&["--http1.1"], &url, &block), LEN);
    assert_eq!(download_and_check(&["--http2-prior-knowledge"], &url, &block), LEN);
    assert_eq!(download_and_check(&["--http1.1"], &https, &block), LEN);
    assert_eq!(download_and_check(&["--http2"], &https, &block), LEN);
    if let (Some(before), Some(after)) = (before, peak_rss_kib()) {
        let grew = after.saturating_sub(before);
        assert!(grew < 64 * 1024, "the server's peak RSS grew {grew} KiB serving 4 GiB");
    }
    stop(plain);
    stop(tls);
}

/// A response read from disk piece by piece over TLS keeps its connection for the next
/// request (the watch for a client leaving, dropped after each streamed response, once cut
/// the TLS stream).
#[cfg(unix)]
#[test]
fn tls_connections_stay_open_after_a_file_streamed_from_disk() {
    let site = Site::new("tls-keepalive");
    site.put("big.bin", &vec![7u8; 300_000]);
    let root = site.root().display().to_string();
    let server = serve_config(
        IoChoice::Auto,
        &format!("[[route]]\npath_prefix = \"/\"\nroot = \"{root}\"\n"),
        true,
    );
    let url = format!("https://{}/big.bin", addr(&server));
    let out = std::process::Command::new("curl")
        .args(["-sk", "--http1.1", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects} "])
        .args([&url, &url])
        .output()
        .expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1 0 ", "the second request reconnected");
    stop(server);
}

/// The same rules over HTTP/2 (h2c and TLS), with curl as the client: ranges, a 304 from
/// the tag, a precompressed sibling, a redirect.
#[cfg(unix)]
#[test]
fn http2_clients_get_the_same_ranges_validators_and_representations() {
    let site = Site::new("h2");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    site.put("f.bin", &content);
    site.put("app.css", b"body{}");
    site.put("app.css.gz", b"GZ");
    site.put("dir/index.html", b"x");
    let root = site.root().display().to_string();
    let toml = format!("[[route]]\npath_prefix = \"/\"\nroot = \"{root}\"\n");
    let plain = serve_config(IoChoice::Auto, &toml, false);
    let tls = serve_config(IoChoice::Auto, &toml, true);
    let curl = |args: &[&str]| -> (String, Vec<u8>) {
        let out = std::process::Command::new("curl")
            .args(["-sk", "-D", "-"])
            .args(args)
            .output()
            .expect("curl runs");
        let split = out.stdout.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        (String::from_utf8_lossy(&out.stdout[..split]).to_lowercase(), out.stdout[split..].to_vec())
    };
    for (base, flag) in [
        (format!("http://{}", addr(&plain)), "--http2-prior-knowledge"),
        (format!("https://{}", addr(&tls)), "--http2"),
    ] {
        let (head, body) = curl(&[flag, "-r", "100-199", &format!("{base}/f.bin")]);
        assert!(head.starts_with("http/2 206"), "{head}");
        assert!(head.contains("content-range: bytes 100-199/200000"), "{head}");
        assert_eq!(body, &content[100..200]);
        let (head, _) = curl(&[flag, &format!("{base}/f.bin")]);
        let etag = head.lines().find_map(|l| l.strip_prefix("etag: ")).unwrap().trim().to_string();
        let (head, body) =
            curl(&[flag, "-H", &format!("if-none-match: {etag}"), &format!("{base}/f.bin")]);
        assert!(head.starts_with("http/2 304") && body.is_empty(), "{head}");
        let (head, body) = curl(&[flag, "-H", "accept-encoding: gzip", &format!("{base}/app.css")]);
        assert!(head.contains("content-encoding: gzip") && head.contains("vary: accept-encoding"));
        assert_eq!(body, b"GZ");
        let (head, _) = curl(&[flag, &format!("{base}/dir")]);
        assert!(head.starts_with("http/2 308") && head.contains("location: /dir/"), "{head}");
    }
    stop(plain);
    stop(tls);
}

/// The epoll driver (no splice) reads the file on the disk pool: a large file still arrives
/// whole over HTTP/1.1.
#[cfg(unix)]
#[test]
fn epoll_sends_large_files_read_on_the_disk_pool() {
    let site = Site::new("epoll-large");
    let block = big_file(&site.root().join("f.bin"), 64 << 20);
    let server = serve(IoChoice::Epoll, &site, "", "");
    let url = format!("http://{}/f.bin", addr(&server));
    assert_eq!(download_and_check(&["--http1.1"], &url, &block), 64 << 20);
    let r = get(addr(&server), "/f.bin", "Range: bytes=5000000-5000009\r\n");
    assert_eq!(r.body, &block[5_000_000 % block.len()..][..10]);
    stop(server);
}

//! On-the-fly compression over real sockets: files and proxied responses behind routes with
//! `compress = true`, raw HTTP/1.1 clients, and every body decoded back (flate2, brotli and
//! zstd's decoders) and compared with what was served.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use common::upstream::{self, ok};
use common::{addr, RawResponse};
use peregrine::{IoChoice, Server};

fn serve(toml: &str) -> Server {
    common::routed(IoChoice::Auto, toml, false)
}

fn get(a: SocketAddr, path: &str, headers: &str) -> RawResponse {
    common::request(a, format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes())
}

fn decode(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => flate2::read::GzDecoder::new(body).read_to_end(&mut out).map(drop),
        "br" => brotli::Decompressor::new(body, 4096).read_to_end(&mut out).map(drop),
        "zstd" => zstd::stream::read::Decoder::new(body).unwrap().read_to_end(&mut out).map(drop),
        other => panic!("unknown coding {other}"),
    }
    .unwrap_or_else(|e| panic!("{coding} body does not decode: {e}"));
    out
}

struct Site(std::path::PathBuf);

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn site(name: &str) -> Site {
    let dir =
        std::env::temp_dir().join(format!("peregrine-compress-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let json: String =
        (0..3000).map(|i| format!("{{\"id\":{i},\"name\":\"item {i}\"}},")).collect();
    std::fs::write(dir.join("data.json"), format!("[{}]", json.trim_end_matches(','))).unwrap();
    // Over the in-memory size, so it is read from disk as it is compressed.
    let text: String = (0..20_000).map(|i| format!("line {i} of a long text file\n")).collect();
    std::fs::write(dir.join("big.txt"), text).unwrap();
    std::fs::write(dir.join("small.txt"), b"tiny").unwrap();
    std::fs::write(dir.join("image.png"), vec![0x89u8; 4000]).unwrap();
    std::fs::write(dir.join("app.css"), "body { color: red }\n".repeat(200)).unwrap();
    std::fs::write(dir.join("app.css.br"), b"PRECOMPRESSED").unwrap();
    Site(dir)
}

fn files_route(site: &Site, compress: bool) -> String {
    let root = site.0.display().to_string().replace('\\', "/");
    format!("[[route]]\npath_prefix = \"/\"\nroot = \"{root}\"\ncompress = {compress}\n")
}

#[test]
fn files_are_compressed_with_the_coding_the_client_prefers() {
    let site = site("on");
    let server = serve(&files_route(&site, true));
    let a = addr(&server);
    for file in ["data.json", "big.txt"] {
        let original = std::fs::read(site.0.join(file)).unwrap();
        let plain = get(a, &format!("/{file}"), "");
        assert_eq!(plain.body, original, "no Accept-Encoding: as it is");
        let strong = plain.header("etag").unwrap().to_string();
        for coding in ["gzip", "br", "zstd"] {
            let r = get(a, &format!("/{file}"), &format!("Accept-Encoding: {coding}\r\n"));
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-encoding"), Some(coding), "{file}");
            assert_eq!(r.header("vary"), Some("accept-encoding"));
            assert_eq!(r.header("content-length"), None);
            assert_eq!(r.header("accept-ranges"), None);
            assert_eq!(r.header("etag"), Some(format!("W/{strong}").as_str()));
            assert!(r.body.len() < original.len() / 3, "{file} {coding}: {} bytes", r.body.len());
            assert_eq!(decode(coding, &r.body), original, "{file} {coding}");
        }
        let r = get(a, &format!("/{file}"), "Accept-Encoding: gzip;q=0.5, br;q=0.1, zstd;q=0\r\n");
        assert_eq!(r.header("content-encoding"), Some("gzip"), "q-values decide");
        // A range is served from the file as it is.
        let r = get(a, &format!("/{file}"), "Accept-Encoding: gzip\r\nRange: bytes=0-9\r\n");
        assert_eq!((r.status, r.header("content-encoding")), (206, None));
        // The weak tag validates the compressed representation.
        let r = get(
            a,
            &format!("/{file}"),
            &format!("Accept-Encoding: gzip\r\nIf-None-Match: W/{strong}\r\n"),
        );
        assert_eq!(r.status, 304);
    }
    // Too small, not compressible, or precompressed already: as they are.
    let r = get(a, "/small.txt", "Accept-Encoding: gzip\r\n");
    assert_eq!((r.header("content-encoding"), r.body.as_slice()), (None, &b"tiny"[..]));
    assert_eq!(get(a, "/image.png", "Accept-Encoding: gzip\r\n").header("content-encoding"), None);
    let r = get(a, "/app.css", "Accept-Encoding: br\r\n");
    assert_eq!(
        (r.header("content-encoding"), r.body.as_slice()),
        (Some("br"), &b"PRECOMPRESSED"[..])
    );
    common::shutdown_and_wait(server, Duration::from_secs(10));
}

#[test]
fn routes_without_compress_send_bodies_as_they_are() {
    let site = site("off");
    let server = serve(&files_route(&site, false));
    let r = get(addr(&server), "/data.json", "Accept-Encoding: gzip, br, zstd\r\n");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, std::fs::read(site.0.join("data.json")).unwrap());
    common::shutdown_and_wait(server, Duration::from_secs(10));
}

#[test]
fn proxied_responses_are_compressed_unless_they_say_no_transform() {
    let text = "proxied text, compressible because it repeats. ".repeat(100);
    let body = text.clone();
    let up = upstream::start(move |seen| {
        match seen.target() {
        "/no-transform" => {
            ok(&body, "content-type: text/plain\r\ncache-control: no-transform\r\n")
        }
        "/chunked" => common::upstream::Reply::Bytes(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
                 {:x}\r\n{body}\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len(),
                body.len()
            )
            .into_bytes(),
        ),
        _ => ok(&body, "content-type: text/plain\r\n"),
    }
    });
    let server = serve(&format!(
        "[[upstream]]\nname = \"app\"\n[[upstream.server]]\naddress = \"http://{}\"\n\
         [[route]]\nupstream = \"app\"\ncompress = true\n",
        up.addr
    ));
    let a = addr(&server);
    let r = get(a, "/text", "Accept-Encoding: zstd\r\n");
    assert_eq!(r.header("content-encoding"), Some("zstd"));
    assert_eq!(decode("zstd", &r.body), text.as_bytes());
    let r = get(a, "/chunked", "Accept-Encoding: br\r\n");
    assert_eq!(decode("br", &r.body), format!("{text}{text}").as_bytes());
    let r = get(a, "/no-transform", "Accept-Encoding: gzip\r\n");
    assert_eq!((r.header("content-encoding"), r.body.len()), (None, text.len()));
    common::shutdown_and_wait(server, Duration::from_secs(10));
}

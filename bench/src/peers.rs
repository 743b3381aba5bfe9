//! Config files for the servers under test, and the run's TLS certificate.
//!
//! Every server gets the same listeners, all on 127.0.0.1: a cleartext port
//! (HTTP/1.1; h2c prior knowledge where the server speaks it) and, when a
//! certificate could be made, a TLS port using that one certificate. The
//! renderers are pure functions of their inputs, so the tests can read the
//! exact text each server is started with.
//!
//! How the `/plaintext` answers compare (all `200`, body `Hello, World!`):
//! - Peregrine: its built-in route; `content-type: text/plain`, `date`,
//!   `content-length`, `server`.
//! - nginx: `return 200 "Hello, World!"` with `default_type text/plain`;
//!   `content-type`, `date`, `content-length`, `server: nginx` (tokens off).
//! - h2o: `file.file` on a 13-byte file (h2o 2.2 has no fixed-response
//!   handler short of mruby, which would run an interpreter per request);
//!   `content-type: text/plain`, `date`, `content-length`, plus
//!   `last-modified` and `accept-ranges: bytes` that the others do not send.
//!   `file.etag: OFF` drops its ETag and `send-server-name: OFF` its `server`
//!   header. Over HTTP/2 HPACK makes the extra headers a few bytes each.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::sys;

/// The certificate and key every TLS listener of a run uses.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    /// PEM certificate (self-signed, for `localhost` and `127.0.0.1`).
    pub certificate: PathBuf,
    /// PEM PKCS#8 private key.
    pub key: PathBuf,
}

/// `openssl req` arguments for a self-signed ECDSA P-256 certificate valid
/// for `localhost` and `127.0.0.1`, one day, unencrypted key. P-256 is the
/// curve every server here signs with fastest and what real sites deploy.
pub fn certificate_args(cert: &Path, key: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout",
    ]
    .map(str::to_owned)
    .to_vec();
    args.push(key.display().to_string());
    args.push("-out".into());
    args.push(cert.display().to_string());
    args
}

/// Generates the run's certificate into `dir` with the `openssl` CLI.
pub fn generate_certificate(openssl: &Path, dir: &Path) -> Result<TlsFiles, String> {
    let files = TlsFiles { certificate: dir.join("cert.pem"), key: dir.join("key.pem") };
    let out = sys::run_with_timeout(
        Command::new(openssl).args(certificate_args(&files.certificate, &files.key)),
        Duration::from_secs(20),
    )
    .map_err(|e| format!("openssl req: {e}"))?;
    if !out.status.success() || !files.certificate.is_file() || !files.key.is_file() {
        return Err(format!("openssl req failed ({}): {}", out.status, out.stderr.trim()));
    }
    Ok(files)
}

/// A TOML basic string: quotes and backslashes escaped.
fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Peregrine's config: a cleartext listener (HTTP/1.1 and h2c prior
/// knowledge) and, with `tls`, a TLS listener (ALPN h2 and http/1.1), both
/// on 127.0.0.1 port 0. Peregrine prints one `listening on` line per
/// listener, in this order.
///
/// `protocols` is left at its default (both): a Peregrine built before the
/// key existed rejects unknown keys, and the cleartext-only config must stay
/// one it accepts, for the HTTP/1.1 scenarios to run on it.
pub fn peregrine_config(tls: Option<&TlsFiles>) -> String {
    let mut conf = String::from(
        "# Written by peregrine-bench. Listeners speak HTTP/1.1 and HTTP/2 (the default).\n\
         [[listener]]\n\
         address = \"127.0.0.1:0\"\n",
    );
    if let Some(tls) = tls {
        conf.push_str(&format!(
            "\n[[listener]]\n\
             address = \"127.0.0.1:0\"\n\
             [listener.tls]\n\
             certificate = {}\n\
             key = {}\n",
            toml_str(&tls.certificate.display().to_string()),
            toml_str(&tls.key.display().to_string())
        ));
    }
    conf
}

/// Fills the nginx template (`bench/peers/nginx.conf`): `{{DIR}}`,
/// `{{PORT}}`, and `{{TLS_SERVER}}` with the TLS server block
/// (`bench/peers/nginx-tls.conf`) when `tls` is given, else nothing.
pub fn nginx_config(
    template: &str,
    tls_template: &str,
    dir: &Path,
    port: u16,
    tls: Option<(&TlsFiles, u16)>,
) -> String {
    let tls_server = match tls {
        Some((files, tls_port)) => tls_template
            .replace("{{TLS_PORT}}", &tls_port.to_string())
            .replace("{{CERT}}", &files.certificate.display().to_string())
            .replace("{{KEY}}", &files.key.display().to_string()),
        None => String::new(),
    };
    template
        .replace("{{TLS_SERVER}}", tls_server.trim_end())
        .replace("{{DIR}}", &dir.display().to_string())
        .replace("{{PORT}}", &port.to_string())
}

/// Fills the h2o template (`bench/peers/h2o.conf`): `{{DIR}}`, `{{PORT}}`,
/// `{{USER}}` (a `user:` line when running as root, which h2o would
/// otherwise drop to `nobody`, unable to read the run's files), and
/// `{{TLS_LISTEN}}` with a TLS `listen` entry when `tls` is given.
pub fn h2o_config(
    template: &str,
    dir: &Path,
    port: u16,
    tls: Option<(&TlsFiles, u16)>,
    root_user: Option<&str>,
) -> String {
    let tls_listen = match tls {
        Some((files, tls_port)) => format!(
            "listen:\n  host: 127.0.0.1\n  port: {tls_port}\n  ssl:\n    certificate-file: {}\n    \
             key-file: {}\n    ocsp-update-interval: 0\n",
            files.certificate.display(),
            files.key.display()
        ),
        None => String::new(),
    };
    let user = root_user.map(|u| format!("user: {u}\n")).unwrap_or_default();
    template
        .replace("{{TLS_LISTEN}}\n", &tls_listen)
        .replace("{{USER}}\n", &user)
        .replace("{{DIR}}", &dir.display().to_string())
        .replace("{{PORT}}", &port.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> TlsFiles {
        TlsFiles { certificate: "/tmp/r/cert.pem".into(), key: "/tmp/r/key.pem".into() }
    }

    #[test]
    fn peregrine_config_has_both_listeners_in_order() {
        let conf = peregrine_config(Some(&files()));
        let clear = conf.find("[[listener]]").unwrap();
        let tls = conf.rfind("[[listener]]").unwrap();
        assert!(clear < tls);
        assert!(!conf[..tls].contains("[listener.tls]"));
        assert!(conf[tls..].contains(
            "[listener.tls]\ncertificate = \"/tmp/r/cert.pem\"\nkey = \"/tmp/r/key.pem\"\n"
        ));
        assert_eq!(conf.matches("address = \"127.0.0.1:0\"").count(), 2);
        assert!(!conf.contains("protocols"));
        let plain = peregrine_config(None);
        assert_eq!(plain.matches("[[listener]]").count(), 1);
        assert!(!plain.contains("tls"));
        assert_eq!(toml_str(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn nginx_config_with_and_without_tls() {
        let template = include_str!("../peers/nginx.conf");
        let tls = include_str!("../peers/nginx-tls.conf");
        let conf = nginx_config(template, tls, Path::new("/tmp/x"), 8081, Some((&files(), 8443)));
        assert!(!conf.contains("{{"), "unfilled placeholder in:\n{conf}");
        assert!(conf.contains("listen 127.0.0.1:8081;"));
        assert!(conf.contains("listen 127.0.0.1:8443 ssl;"));
        assert!(conf.contains("ssl_certificate /tmp/r/cert.pem;"));
        assert!(conf.contains("ssl_certificate_key /tmp/r/key.pem;"));
        assert!(conf.contains("ssl_protocols TLSv1.3;"));
        assert!(conf.contains("pid /tmp/x/nginx.pid;"));
        assert!(conf.contains("master_process off;"));
        assert!(conf.contains("keepalive_requests 10000000;"));
        // The idle-memory phase holds 10,000 connections.
        assert!(conf.contains("worker_rlimit_nofile 65536;"));
        assert!(conf.contains("worker_connections 20000;"));
        // Both servers answer /plaintext the same way.
        assert_eq!(conf.matches("return 200 \"Hello, World!\";").count(), 2);
        let plain = nginx_config(template, tls, Path::new("/tmp/x"), 8081, None);
        assert!(!plain.contains("{{") && !plain.contains("ssl"), "{plain}");
    }

    #[test]
    fn h2o_config_with_and_without_tls() {
        let template = include_str!("../peers/h2o.conf");
        let conf = h2o_config(template, Path::new("/tmp/h"), 9081, Some((&files(), 9443)), None);
        assert!(!conf.contains("{{"), "unfilled placeholder in:\n{conf}");
        assert!(conf.contains("num-threads: 1\n"));
        assert!(conf.contains("listen:\n  host: 127.0.0.1\n  port: 9081\n"));
        assert!(conf.contains(
            "listen:\n  host: 127.0.0.1\n  port: 9443\n  ssl:\n    certificate-file: \
             /tmp/r/cert.pem\n    key-file: /tmp/r/key.pem\n"
        ));
        assert!(conf.contains("file.file: /tmp/h/plaintext.txt"));
        assert!(conf.contains("file.etag: OFF"));
        assert!(!conf.contains("user:"));
        let root = h2o_config(template, Path::new("/tmp/h"), 9081, None, Some("root"));
        assert!(root.contains("\nuser: root\n"));
        assert!(!root.contains("ssl:") && !root.contains("9443"));
    }

    #[test]
    fn certificate_command() {
        let args = certificate_args(Path::new("/d/c.pem"), Path::new("/d/k.pem"));
        let line = args.join(" ");
        assert!(line.starts_with("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"));
        assert!(line.contains("subjectAltName=DNS:localhost,IP:127.0.0.1"));
        assert!(line.ends_with("-keyout /d/k.pem -out /d/c.pem"));
    }

    #[test]
    fn generates_a_usable_certificate_when_openssl_exists() {
        // Skipped, not failed, without the openssl CLI (it is optional).
        let Some(openssl) = sys::find_program("openssl", &["/usr/bin/openssl"]) else { return };
        let dir = crate::servers::TempDir::new("cert-test").unwrap();
        let files = generate_certificate(&openssl, dir.path()).unwrap();
        let text = std::fs::read_to_string(&files.certificate).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----"));
        let out = sys::run_with_timeout(
            Command::new(&openssl).args(["x509", "-noout", "-text", "-in"]).arg(&files.certificate),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(out.stdout.contains("IP Address:127.0.0.1"), "{}", out.stdout);
        assert!(out.stdout.contains("prime256v1") || out.stdout.contains("P-256"));
    }
}

//! Client certificates (mutual TLS) over real sockets, with an openssl-made client CA, client
//! certificates and curl as the client: `required`, `optional` and absent client auth, valid,
//! missing and foreign certificates, the verified certificate reaching a handler (HTTP/1.1
//! and HTTP/2) and an upstream (and a client's forged field never reaching one), and the
//! binary's flags and config errors.
#![cfg(not(windows))] // openssl and curl are Linux tools here

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use common::tls::{self, TempDir};
use common::upstream;
use common::TestHandler;
use peregrine::proxy::{Proxy, ProxyConfig, UpstreamServer};
use peregrine::{ClientAuth, ClientAuthMode, IoChoice, Limits, ListenerSpec, Server, ServerConfig};

/// An openssl-made client PKI in a temp directory.
struct Pki {
    dir: TempDir,
    /// The client CA's certificate (what the server trusts).
    ca: PathBuf,
    /// A client certificate the CA issued, its key, and its DER as base64.
    client: (PathBuf, PathBuf),
    client_b64: String,
    /// A client certificate from a CA the server does not trust.
    foreign: (PathBuf, PathBuf),
    /// The server certificate's CA, for curl.
    server_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A P-256 key pair.
const EC_KEY: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

/// Issues `{file}.pem` and `{file}.key` in `d`: a client certificate for `cn`, signed by the
/// test CA (`ca.pem`, `ca.key`) with `client.ext`'s client-auth extensions.
fn issue_client(d: &Path, file: &str, cn: &str) {
    let (key, csr, pem) = (format!("{file}.key"), format!("{file}.csr"), format!("{file}.pem"));
    let request = [&["req"][..], &EC_KEY, &["-keyout", &key, "-out", &csr]].concat();
    openssl(d, &[&request[..], &["-subj", &format!("/CN={cn}")]].concat());
    let sign = ["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key"];
    let out = ["-CAcreateserial", "-out", &pem, "-days", "2", "-extfile", "client.ext"];
    openssl(d, &[&sign[..], &out].concat());
}

fn pki() -> Pki {
    let dir = TempDir::new("mtls");
    let d = dir.0.clone();
    let ec = EC_KEY;
    let ca = [&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem"]].concat();
    openssl(&d, &[&ca[..], &["-days", "2", "-subj", "/CN=Peregrine test client CA"]].concat());
    std::fs::write(
        d.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    issue_client(&d, "client", "alice");
    openssl(&d, &["x509", "-in", "client.pem", "-outform", "DER", "-out", "client.der"]);
    let foreign =
        [&["req", "-x509"][..], &ec, &["-keyout", "foreign.key", "-out", "foreign.pem"]].concat();
    openssl(&d, &[&foreign[..], &["-days", "2", "-subj", "/CN=mallory"]].concat());
    let der = std::fs::read(d.join("client.der")).unwrap();
    let server_ca = dir.write("server-ca.pem", &tls::ca_pem());
    Pki {
        ca: d.join("ca.pem"),
        client: (d.join("client.pem"), d.join("client.key")),
        client_b64: base64::engine::general_purpose::STANDARD.encode(der),
        foreign: (d.join("foreign.pem"), d.join("foreign.key")),
        server_ca,
        dir,
    }
}

/// A one-core TLS server with `mode` client auth, answering with `factory`'s handler.
fn start<H: peregrine::Handler>(
    pki: &Pki,
    mode: Option<ClientAuthMode>,
    factory: impl Fn() -> H + Send + Sync + 'static,
) -> Server {
    let mut settings = tls::localhost_settings();
    settings.client_auth =
        mode.map(|mode| ClientAuth { mode, ca: pki.ca.clone(), crls: Vec::new() });
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig {
        listen: vec![ListenerSpec::tls(any, settings)],
        threads: Some(1),
        pin_threads: false,
        io: IoChoice::Auto,
        limits: Limits::default(),
        ..ServerConfig::default()
    };
    Server::start(config, factory).unwrap_or_else(|e| panic!("start: {e}"))
}

/// curl over https to `path`, presenting `cert` (certificate, key) if given. `Ok(body)`, or
/// `Err(stderr)` when the transfer failed (a refused handshake).
fn curl(
    pki: &Pki,
    server: &Server,
    path: &str,
    cert: Option<&(PathBuf, PathBuf)>,
    extra: &[&str],
) -> Result<String, String> {
    let port = server.local_addrs()[0].port();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--cacert"]).arg(&pki.server_ca);
    cmd.args(["--resolve", &format!("localhost:{port}:127.0.0.1")]);
    if let Some((c, k)) = cert {
        cmd.arg("--cert").arg(c).arg("--key").arg(k);
    }
    cmd.args(extra).arg(format!("https://localhost:{port}{path}"));
    let out = cmd.output().expect("run curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn stop(server: Server) {
    common::shutdown_and_wait(server, std::time::Duration::from_secs(10));
}

#[test]
fn required_client_auth_serves_a_valid_certificate_and_shows_it_to_the_handler() {
    let pki = pki();
    let server = start(&pki, Some(ClientAuthMode::Required), TestHandler::new);
    let seen = curl(&pki, &server, "/client-cert", Some(&pki.client), &["--http1.1"]);
    assert_eq!(seen.as_deref(), Ok(pki.client_b64.as_str()), "HTTP/1.1");
    let seen = curl(&pki, &server, "/client-cert", Some(&pki.client), &["--http2"]);
    assert_eq!(seen.as_deref(), Ok(pki.client_b64.as_str()), "HTTP/2");
    stop(server);
}

#[test]
fn required_client_auth_refuses_a_missing_or_foreign_certificate() {
    let pki = pki();
    let server = start(&pki, Some(ClientAuthMode::Required), TestHandler::new);
    let none = curl(&pki, &server, "/client-cert", None, &[]);
    assert!(none.is_err(), "served without a certificate: {none:?}");
    let foreign = curl(&pki, &server, "/client-cert", Some(&pki.foreign), &[]);
    assert!(foreign.is_err(), "served a certificate of an untrusted CA: {foreign:?}");
    // The refusals cost the server nothing: a good client is served next.
    let seen = curl(&pki, &server, "/client-cert", Some(&pki.client), &[]);
    assert_eq!(seen.as_deref(), Ok(pki.client_b64.as_str()));
    stop(server);
}

#[test]
fn optional_client_auth_serves_clients_without_one_but_not_with_a_bad_one() {
    let pki = pki();
    let server = start(&pki, Some(ClientAuthMode::Optional), TestHandler::new);
    assert_eq!(curl(&pki, &server, "/client-cert", None, &[]).as_deref(), Ok("none"));
    let seen = curl(&pki, &server, "/client-cert", Some(&pki.client), &[]);
    assert_eq!(seen.as_deref(), Ok(pki.client_b64.as_str()));
    let foreign = curl(&pki, &server, "/client-cert", Some(&pki.foreign), &[]);
    assert!(foreign.is_err(), "served a certificate of an untrusted CA: {foreign:?}");
    stop(server);
}

/// Issues a second client certificate, `bob`, and a CRL (openssl's `ca`) revoking alice's:
/// returns bob's (certificate, key) and the CRL's path.
fn revoke_alice(pki: &Pki) -> ((PathBuf, PathBuf), PathBuf) {
    let d = &pki.dir.0;
    issue_client(d, "bob", "bob");
    std::fs::write(d.join("index.txt"), "").unwrap();
    std::fs::write(d.join("crlnumber"), "01\n").unwrap();
    std::fs::write(
        d.join("ca.cnf"),
        "[ca]\ndefault_ca = own\n[own]\ndatabase = index.txt\ncrlnumber = crlnumber\n\
         default_md = sha256\ndefault_crl_days = 2\n",
    )
    .unwrap();
    let ca = ["-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.pem"];
    openssl(d, &[&["ca"][..], &ca, &["-revoke", "client.pem"]].concat());
    openssl(d, &[&["ca"][..], &ca, &["-gencrl", "-out", "client.crl"]].concat());
    ((d.join("bob.pem"), d.join("bob.key")), d.join("client.crl"))
}

#[test]
fn a_revoked_certificate_is_refused_and_others_are_served() {
    let pki = pki();
    let (bob, crl) = revoke_alice(&pki);
    let mut settings = tls::localhost_settings();
    settings.client_auth =
        Some(ClientAuth { mode: ClientAuthMode::Required, ca: pki.ca.clone(), crls: vec![crl] });
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig {
        listen: vec![ListenerSpec::tls(any, settings)],
        threads: Some(1),
        pin_threads: false,
        ..ServerConfig::default()
    };
    let server = Server::start(config, TestHandler::new).unwrap();
    let alice = curl(&pki, &server, "/client-cert", Some(&pki.client), &[]);
    assert!(alice.is_err(), "served a revoked certificate: {alice:?}");
    let seen = curl(&pki, &server, "/client-cert", Some(&bob), &[]);
    assert!(seen.as_ref().is_ok_and(|b| b != "none"), "{seen:?}");
    stop(server);
}

#[test]
fn without_client_auth_no_certificate_is_asked_for_or_seen() {
    let pki = pki();
    let server = start(&pki, None, TestHandler::new);
    // curl offers its certificate only when asked: the handler sees none.
    let seen = curl(&pki, &server, "/client-cert", Some(&pki.client), &[]);
    assert_eq!(seen.as_deref(), Ok("none"));
    stop(server);
}

#[test]
fn the_proxy_forwards_the_verified_certificate_and_drops_a_forged_one() {
    let pki = pki();
    let up = upstream::start(|_| upstream::ok("ok", ""));
    let server = UpstreamServer::parse(&format!("http://{}", up.addr)).unwrap();
    let config = Arc::new(ProxyConfig::new(vec![server]));
    let proxy =
        start(&pki, Some(ClientAuthMode::Optional), move || Proxy::new(Arc::clone(&config)));
    let forged = ["-H", "MS-ASPNETCORE-CLIENTCERT: Zm9yZ2Vk"];
    assert_eq!(curl(&pki, &proxy, "/a", Some(&pki.client), &forged).as_deref(), Ok("ok"));
    assert_eq!(curl(&pki, &proxy, "/b", None, &forged).as_deref(), Ok("ok"));
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("ms-aspnetcore-clientcert"), Some(pki.client_b64.clone()));
    assert_eq!(seen[1].header("ms-aspnetcore-clientcert"), None, "a client's own field crossed");
    stop(proxy);
}

#[test]
fn the_binary_takes_client_auth_flags_and_refuses_half_a_config() {
    let pki = pki();
    let (cert, key) = pki.dir.write_leaf("server", tls::localhost());
    // --tls-client-ca alone means required.
    let mut child = Command::new(env!("CARGO_BIN_EXE_peregrine"))
        .args(["--threads", "1", "--no-pin", "--tls-listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--tls-client-ca")
        .arg(&pki.ca)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start peregrine");
    let port = {
        use std::io::BufRead;
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let line = out
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("listening on https://"))
            .expect("listening line");
        line.rsplit(':').next().unwrap().trim().parse::<u16>().unwrap()
    };
    let url = format!("https://localhost:{port}/plaintext");
    let run = |cert: Option<&(PathBuf, PathBuf)>| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "10", "--cacert"]).arg(&pki.server_ca);
        cmd.args(["--resolve", &format!("localhost:{port}:127.0.0.1")]);
        if let Some((c, k)) = cert {
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
        }
        cmd.arg(&url).output().expect("run curl")
    };
    let with = run(Some(&pki.client));
    assert!(with.status.success(), "{}", String::from_utf8_lossy(&with.stderr));
    assert_eq!(String::from_utf8_lossy(&with.stdout), "Hello, World!");
    assert!(!run(None).status.success(), "served without a certificate");
    let _ = child.kill();
    let _ = child.wait();

    // A config file asking for client auth without a CA is refused at start, naming it.
    let toml = pki.dir.write(
        "half.toml",
        &format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\n[listener.tls]\ncertificate = {:?}\n\
             key = {:?}\nclient_auth = \"required\"\n",
            cert, key
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_peregrine"))
        .arg("--config")
        .arg(&toml)
        .output()
        .expect("run peregrine");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("client_auth needs client_ca"), "{err}");
}

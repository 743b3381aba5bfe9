//! Test PKI and TLS clients: a CA generated once per test binary (rcgen), leaf certificates
//! it signs written to temp files, and sync rustls clients that verify against that CA.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use peregrine::{CertSource, TlsSettings};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A TLS client stream.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Peregrine test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    })
}

/// The test CA's certificate, as PEM (what a client given a CA file would read).
pub fn ca_pem() -> String {
    ca().cert.pem()
}

/// A leaf certificate signed by the test CA, as PEM, with its DER for comparisons.
#[derive(Clone)]
pub struct Leaf {
    /// Chain PEM (the leaf alone).
    pub cert_pem: String,
    /// PKCS#8 key PEM.
    pub key_pem: String,
    /// The leaf's DER, to compare with what a client was shown.
    pub der: CertificateDer<'static>,
}

/// Issues a leaf for `names` (DNS names or IP literals).
pub fn leaf(names: &[&str]) -> Leaf {
    let key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, names[0].clone());
    let ca = ca();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("sign leaf");
    Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
}

/// The leaf for `localhost` and `127.0.0.1` every TLS test server uses by default.
pub fn localhost() -> &'static Leaf {
    static LEAF: OnceLock<Leaf> = OnceLock::new();
    LEAF.get_or_init(|| leaf(&["localhost", "127.0.0.1"]))
}

/// TLS settings serving [`localhost`] from memory.
pub fn localhost_settings() -> TlsSettings {
    let l = localhost();
    TlsSettings {
        certificate: CertSource::Pem { certificate: l.cert_pem.clone(), key: l.key_pem.clone() },
        sni: Vec::new(),
        client_auth: None,
    }
}

/// A directory of PEM files for one test, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("peregrine-tls-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// Writes `text` to `name` in the directory; returns the path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path
    }

    /// Writes a leaf's certificate and key as `<name>.pem` / `<name>.key`.
    pub fn write_leaf(&self, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        (
            self.write(&format!("{name}.pem"), &leaf.cert_pem),
            self.write(&format!("{name}.key"), &leaf.key_pem),
        )
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A client config trusting the test CA, offering `alpn` (empty: no ALPN extension).
pub fn client_config(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca().cert.der().clone()).expect("add CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Connects and completes a handshake (bounded by 5 s socket timeouts), verifying the
/// server's certificate for `server_name` against the test CA.
pub fn connect(addr: SocketAddr, server_name: &str, alpn: &[&[u8]]) -> io::Result<TlsStream> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let conn = ClientConnection::new(client_config(alpn), name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

//! What a TLS listener is configured with, and loading it: PEM files (or PEM text) into
//! rustls' `CertifiedKey`, with errors that name the file and the problem.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;

/// How long a generated development certificate is valid (see [`TlsSettings::development`]).
const DEVELOPMENT_VALIDITY: time::Duration = time::Duration::days(7);

/// A listener's TLS settings: the default certificate, and more chosen by SNI.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Served to clients that send no SNI name, or a name no [`sni`](Self::sni) entry has.
    pub certificate: CertSource,
    /// Certificates chosen by the client's SNI server name (exact, case-insensitive, or a
    /// `*.example.com` wildcard entry matching one label).
    pub sni: Vec<SniCertificate>,
    /// Client certificates (mutual TLS); `None`: none are asked for.
    pub client_auth: Option<ClientAuth>,
}

/// Client certificates (mutual TLS): whether one is required, and what it must chain to.
/// A verified chain reaches handlers as a [`ClientCertificates`](crate::ClientCertificates)
/// request extension, and the proxy forwards its leaf to upstreams.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// Whether a client without a certificate may finish the handshake.
    pub mode: ClientAuthMode,
    /// PEM file of the CA certificates that issue client certificates.
    pub ca: PathBuf,
    /// PEM files of certificate revocation lists: a revoked certificate fails the handshake.
    pub crls: Vec<PathBuf>,
}

/// [`ClientAuth::mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// A client may present a certificate; one that does must present a valid one.
    Optional,
    /// A client must present a valid certificate, or the handshake fails.
    Required,
}

impl ClientAuthMode {
    /// Parses `optional` or `required` (the CLI's and the config file's spelling).
    pub fn parse(s: &str) -> Result<ClientAuthMode, String> {
        match s {
            "optional" => Ok(ClientAuthMode::Optional),
            "required" => Ok(ClientAuthMode::Required),
            other => {
                Err(format!("unknown client_auth `{other}` (use \"optional\" or \"required\")"))
            }
        }
    }
}

impl ClientAuth {
    /// The verifier rustls runs on client certificates: the CA file's certificates as roots,
    /// the CRLs, and whether a client may present none.
    pub(crate) fn verifier(
        &self,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
        let ca_name = self.ca.display().to_string();
        let pem = read(&self.ca)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| TlsError::BadPem(ca_name.clone(), e.to_string()))?;
            roots.add(cert).map_err(|e| TlsError::Unusable(ca_name.clone(), e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(TlsError::NoCertificate(ca_name));
        }
        let mut crls = Vec::new();
        for path in &self.crls {
            let name = path.display().to_string();
            let pem = read(path)?;
            for crl in CertificateRevocationListDer::pem_slice_iter(&pem) {
                crls.push(crl.map_err(|e| TlsError::BadPem(name.clone(), e.to_string()))?);
            }
        }
        let builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
                .with_crls(crls);
        let builder = match self.mode {
            ClientAuthMode::Optional => builder.allow_unauthenticated(),
            ClientAuthMode::Required => builder,
        };
        builder.build().map_err(|e| TlsError::Unusable(ca_name, e.to_string()))
    }
}

/// A certificate served for one SNI server name.
#[derive(Debug, Clone)]
pub struct SniCertificate {
    /// The DNS name, e.g. `example.com` or `*.example.com`.
    pub server_name: String,
    /// The certificate chain and key for it.
    pub certificate: CertSource,
}

/// Where a certificate chain (leaf first) and its private key come from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// PEM files, read at start and again on every reload.
    Files {
        /// The chain, leaf first.
        certificate: PathBuf,
        /// The private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// PEM text held in memory (the development certificate; a reload keeps it).
    Pem {
        /// The chain, leaf first.
        certificate: String,
        /// The private key.
        key: String,
    },
}

impl TlsSettings {
    /// One certificate from PEM files, no SNI entries.
    pub fn from_files(certificate: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsSettings {
        TlsSettings {
            certificate: CertSource::Files { certificate: certificate.into(), key: key.into() },
            sni: Vec::new(),
            client_auth: None,
        }
    }

    /// A self-signed development certificate for `localhost`, `127.0.0.1` and `::1`,
    /// generated now (like Kestrel's development certificate). Clients do not trust it: for
    /// local tests only, never for production. Valid for seven days from an
    /// hour ago (for clocks a little behind): a new one is made at every start, so a short
    /// life costs nothing and a leaked key soon stops mattering.
    pub fn development() -> Result<TlsSettings, TlsError> {
        let generate = || -> Result<(String, String), rcgen::Error> {
            let names = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
            let mut params = rcgen::CertificateParams::new(names)?;
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::hours(1);
            params.not_after = now + DEVELOPMENT_VALIDITY;
            let key = rcgen::KeyPair::generate()?;
            let cert = params.self_signed(&key)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (certificate, key) = generate().map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(TlsSettings {
            certificate: CertSource::Pem { certificate, key },
            sni: Vec::new(),
            client_auth: None,
        })
    }
}

/// Why TLS settings could not be loaded. Each names the file (or "inline PEM") at fault.
#[derive(Debug)]
pub enum TlsError {
    /// A file is missing or unreadable.
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    NoCertificate(String),
    /// The key file holds no private key block.
    NoKey(String),
    /// A PEM file is malformed.
    BadPem(String, String),
    /// The certificate or key cannot be used (unsupported key type, invalid DER).
    Unusable(String, String),
    /// The private key does not belong to the certificate's public key.
    KeyMismatch {
        /// The certificate file.
        certificate: String,
        /// The key file.
        key: String,
    },
    /// An SNI server name is not a valid DNS name.
    BadServerName(String),
    /// The development certificate could not be generated.
    Generate(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, error } if error.kind() == io::ErrorKind::NotFound => {
                write!(f, "{}: file not found", path.display())
            }
            TlsError::Read { path, error } => write!(f, "{}: cannot read: {error}", path.display()),
            TlsError::NoCertificate(p) => write!(f, "{p}: no PEM certificate in it"),
            TlsError::NoKey(p) => write!(f, "{p}: no PEM private key in it"),
            TlsError::BadPem(p, e) => write!(f, "{p}: malformed PEM: {e}"),
            TlsError::Unusable(p, e) => write!(f, "{p}: {e}"),
            TlsError::KeyMismatch { certificate, key } => {
                write!(f, "{key}: private key does not match the certificate in {certificate}")
            }
            TlsError::BadServerName(n) => write!(f, "`{n}` is not a valid SNI server name"),
            TlsError::Generate(e) => write!(f, "cannot generate a development certificate: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl CertSource {
    /// Reads and checks the chain and key: PEM parsing, a supported key, and a key that
    /// matches the leaf certificate (checked here so a mistake fails at start or reload, not
    /// at the first handshake).
    pub(crate) fn load(&self, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
        let (cert_pem, key_pem, cert_name, key_name) = match self {
            CertSource::Files { certificate, key } => (
                read(certificate)?,
                read(key)?,
                certificate.display().to_string(),
                key.display().to_string(),
            ),
            CertSource::Pem { certificate, key } => (
                certificate.clone().into_bytes(),
                key.clone().into_bytes(),
                "inline PEM certificate".to_string(),
                "inline PEM key".to_string(),
            ),
        };
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::BadPem(cert_name.clone(), e.to_string()))?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(cert_name));
        }
        let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
            Ok(k) => k,
            Err(pem::Error::NoItemsFound) => return Err(TlsError::NoKey(key_name)),
            Err(e) => return Err(TlsError::BadPem(key_name, e.to_string())),
        };
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::Unusable(key_name.clone(), e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            Ok(()) => Ok(Arc::new(certified)),
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err(TlsError::KeyMismatch { certificate: cert_name, key: key_name })
            }
            // The key type cannot report its public key: nothing to compare, accept it.
            Err(rustls::Error::InconsistentKeys(_)) => Ok(Arc::new(certified)),
            Err(e) => Err(TlsError::Unusable(cert_name, e.to_string())),
        }
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read { path: path.clone(), error })
}

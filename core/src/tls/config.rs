//! rustls server configs for one listener: the SNI certificate resolver, the three ALPN
//! variants, and the swap that makes a certificate reload take effect for new handshakes
//! without a lock on the handshake path.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, StoresServerSessions};
use rustls::sign::CertifiedKey;

use super::settings::{TlsError, TlsSettings};
use crate::listener::Protocols;

/// The ALPN protocol id of HTTP/2 over TLS (RFC 9113 §3.2).
pub(crate) const ALPN_H2: &[u8] = b"h2";
/// The ALPN protocol id of HTTP/1.1 (RFC 7301 §6).
pub(crate) const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The one crypto provider: ring (no aws-lc; see the workspace `Cargo.toml`).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// Picks a certificate by the client's SNI name, with a default for everything else.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    /// Lowercased names; wildcard entries are stored as `*.example.com`.
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls has already checked the name's syntax and lowercased nothing: do it here.
        let Some(name) = hello.server_name() else { return Some(Arc::clone(&self.default)) };
        let name = name.to_ascii_lowercase();
        let wildcard = name.split_once('.').map(|(_, parent)| format!("*.{parent}"));
        let found = self.by_name.get(&name).or_else(|| wildcard.and_then(|w| self.by_name.get(&w)));
        Some(Arc::clone(found.unwrap_or(&self.default)))
    }
}

/// One listener's rustls configs, one per ALPN answer. Choosing the answer before rustls
/// sees the ClientHello (see `accept`) gives the listener's policy exactly: rustls on its own
/// would refuse a client whose ALPN offer has no overlap, where an HTTP/1 listener should
/// serve it HTTP/1.1 anyway.
pub(crate) struct Configs {
    /// ALPN `h2`.
    pub(crate) h2: Arc<ServerConfig>,
    /// ALPN `http/1.1`.
    pub(crate) http11: Arc<ServerConfig>,
    /// No ALPN in the ServerHello (a client that offered none of ours, or no ALPN at all).
    pub(crate) none: Arc<ServerConfig>,
}

impl Configs {
    fn build(settings: &TlsSettings) -> Result<Configs, TlsError> {
        let provider = provider();
        let default = settings.certificate.load(&provider)?;
        let mut by_name = HashMap::new();
        for entry in &settings.sni {
            let name = entry.server_name.trim().to_ascii_lowercase();
            let bare = name.strip_prefix("*.").unwrap_or(&name);
            if rustls::pki_types::DnsName::try_from(bare).is_err() || bare.is_empty() {
                return Err(TlsError::BadServerName(entry.server_name.clone()));
            }
            by_name.insert(name, entry.certificate.load(&provider)?);
        }
        let resolver = Arc::new(SniResolver { default, by_name });
        // One session cache for the three variants, so a resumed session finds its entry
        // whichever variant the resumption handshake gets.
        let sessions: Arc<dyn StoresServerSessions> =
            rustls::server::ServerSessionMemoryCache::new(1024);
        let client_verifier = match &settings.client_auth {
            Some(auth) => Some(auth.verifier(&provider)?),
            None => None,
        };
        let make = |alpn: &[u8]| -> Result<Arc<ServerConfig>, TlsError> {
            let config = ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| TlsError::Unusable("TLS versions".into(), e.to_string()))?;
            let config = match &client_verifier {
                Some(verifier) => config.with_client_cert_verifier(Arc::clone(verifier)),
                None => config.with_no_client_auth(),
            };
            let mut config = config.with_cert_resolver(resolver.clone());
            config.session_storage = Arc::clone(&sessions);
            if !alpn.is_empty() {
                config.alpn_protocols = vec![alpn.to_vec()];
            }
            Ok(Arc::new(config))
        };
        Ok(Configs { h2: make(ALPN_H2)?, http11: make(ALPN_HTTP11)?, none: make(b"")? })
    }
}

/// A TLS listener's certificates, shared by every core and replaced whole on reload.
pub(crate) struct TlsListener {
    settings: TlsSettings,
    pub(crate) protocols: Protocols,
    current: ArcSwap<Configs>,
}

impl TlsListener {
    /// Loads the certificates (every error names its file).
    pub(crate) fn new(
        settings: TlsSettings,
        protocols: Protocols,
    ) -> Result<TlsListener, TlsError> {
        let configs = Configs::build(&settings)?;
        Ok(TlsListener { settings, protocols, current: ArcSwap::from_pointee(configs) })
    }

    /// The configs for a new handshake: a lock-free load (no mutex, no contention with a
    /// reload in progress).
    pub(crate) fn configs(&self) -> Arc<Configs> {
        self.current.load_full()
    }

    /// Reads the files again. On success new handshakes use the new certificates (open
    /// connections keep theirs); on failure nothing changes.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let configs = Configs::build(&self.settings)?;
        self.current.store(Arc::new(configs));
        Ok(())
    }
}

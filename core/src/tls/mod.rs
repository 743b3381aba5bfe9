//! TLS termination with rustls (ring provider; TLS 1.2 and 1.3 only) and ALPN.
//!
//! - [`settings`]: the public settings (certificate sources, SNI entries) and loading PEM
//!   into rustls keys, with errors that name the file;
//! - [`config`]: per listener, the SNI certificate resolver and the rustls configs, swapped
//!   whole on reload (lock-free loads on the handshake path);
//! - [`accept`]: one handshake: ClientHello, ALPN choice, the rest of the handshake;
//! - [`stream`]: the record layer over a socket (rustls' unbuffered API).
//!
//! The encrypted byte stream itself is `crate::transport::Transport`.

pub(crate) mod accept;
pub(crate) mod config;
mod settings;
pub(crate) mod stream;

use std::sync::Arc;

pub use settings::{CertSource, ClientAuth, ClientAuthMode, SniCertificate, TlsError, TlsSettings};

pub(crate) use config::TlsListener;

/// A fresh random token (an app's pairing token, an upgrade's call-back token): 16 bytes
/// from the system's secure generator (through the ring provider), as hex. Panics only if
/// the OS cannot give randomness, where no TLS would work either.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("the operating system's random number generator");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reloads every TLS listener's certificates from their files (see
/// [`Server::reload_tls`](crate::Server::reload_tls)). Cloneable and thread-safe, for a
/// signal-handling thread.
#[derive(Clone)]
pub struct TlsReloadHandle(pub(crate) Arc<std::sync::Mutex<Vec<Arc<TlsListener>>>>);

impl TlsReloadHandle {
    /// Reads every TLS listener's certificate and key files again. A listener whose files
    /// load keeps serving the new certificates to new handshakes; one whose files fail keeps
    /// its old certificates. Established connections are never touched. Returns the first
    /// error (all listeners are tried).
    pub fn reload(&self) -> Result<(), TlsError> {
        let mut first_error = None;
        for listener in self.listeners_now() {
            if let Err(e) = listener.reload() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// How many listeners run TLS.
    pub fn listeners(&self) -> usize {
        self.listeners_now().len()
    }

    fn listeners_now(&self) -> Vec<Arc<TlsListener>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl std::fmt::Debug for TlsReloadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloadHandle").field("listeners", &self.listeners()).finish()
    }
}

//! TLS for both listeners (rustls, TLS 1.2 and 1.3, no OpenSSL): the certificate and
//! key loaded from PEM files, reloaded on SIGHUP, and a fresh server session per
//! accepted connection.
//!
//! One `ServerConfig` lives for the whole process; its certificate resolver hands
//! every new handshake whatever pair was loaded last, so a reload never touches a
//! live connection. A pair that fails to load (missing, a directory, empty, a key
//! that does not sign for the certificate) is an error at start and, on reload, is
//! logged while the old pair stays. Session tickets are sealed with a key kept in the
//! data dir ([`tickets`]), so clients resume across a restart. This module never does
//! socket I/O.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::ring;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub mod tickets;

/// The first byte of every TLS connection: a handshake record.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// What a client speaking plain HTTP to a TLS port gets before the socket closes.
pub const PLAIN_REFUSAL: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 46\r\nConnection: close\r\n\r\nthis port speaks TLS: use https:// or wss://\r\n";

/// Why a certificate/key pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    KeyFile(#[from] crate::secret_file::SecretFileError),
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key in it ({detail})")]
    NoKey { path: PathBuf, detail: String },
    #[error("{path}: the private key cannot be used: {detail}")]
    BadKey { path: PathBuf, detail: String },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS setup: {0}")]
    Setup(#[from] rustls::Error),
    #[error("the session ticket key: {0}")]
    TicketKey(#[from] tickets::TicketKeyError),
}

/// The pair being served now, and where to reload it from.
#[derive(Debug)]
struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

/// natter's TLS side: one config for every listener, reloadable.
#[derive(Debug, Clone)]
pub struct Tls {
    config: Arc<ServerConfig>,
    store: Arc<CertStore>,
}

impl Tls {
    /// Loads the pair; any problem is an error (natter never falls back to plain).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Tls, TlsError> {
        let pair = load_pair(cert_path, key_path)?;
        let store = Arc::new(CertStore {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(pair)),
        });
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(store.clone());
        // Both listeners speak HTTP/1.1 (the WebSocket upgrade is an HTTP/1.1 request).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls { config: Arc::new(config), store })
    }

    /// Seals session tickets with the key in `dir` (made there if missing), so that
    /// a restarted natter resumes the sessions this one issued.
    pub fn with_persistent_tickets(self, dir: &Path) -> Result<Tls, TlsError> {
        let mut config = ServerConfig::clone(&self.config);
        config.ticketer = Arc::new(tickets::Tickets::in_dir(dir)?);
        Ok(Tls { config: Arc::new(config), store: self.store })
    }

    /// Loads the files again. On success new handshakes use the new pair; on failure
    /// the old pair stays and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = load_pair(&self.store.cert_path, &self.store.key_path)?;
        *self.store.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
        Ok(())
    }

    /// A server session for one accepted connection.
    pub fn session(&self) -> Result<ServerConnection, rustls::Error> {
        ServerConnection::new(self.config.clone())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

/// Reads a full-chain certificate and its key, and checks that they belong together.
fn load_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(cert_path)?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&cert_pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path.to_owned() });
    }
    // The key is a secret: refused when others may write it (at start and on SIGHUP).
    let key_pem = crate::secret_file::read(key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::NoKey { path: key_path.to_owned(), detail: e.to_string() })?;
    let signer = ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::BadKey { path: key_path.to_owned(), detail: e.to_string() })?;
    let pair = CertifiedKey::new(chain, signer);
    match pair.keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch { cert: cert_path.to_owned(), key: key_path.to_owned() })
        }
        // `Unknown`: the key type cannot say; the first handshake will.
        _ => Ok(pair),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.key_pair.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a");
        let (_, other_key) = write_pair(dir.path(), "b");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(Tls::load(&cert, &key).is_ok());
        assert!(matches!(Tls::load(dir.path(), &key), Err(TlsError::Read { .. })), "a directory");
        assert!(matches!(Tls::load(&dir.path().join("none"), &key), Err(TlsError::Read { .. })));
        assert!(matches!(Tls::load(&empty, &key), Err(TlsError::NoCertificate { .. })));
        assert!(matches!(Tls::load(&cert, &empty), Err(TlsError::NoKey { .. })));
        assert!(matches!(Tls::load(&cert, &other_key), Err(TlsError::Mismatch { .. })));
    }

    #[test]
    fn a_bad_reload_keeps_the_old_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a");
        let tls = Tls::load(&cert, &key).unwrap();
        let before = tls.store.current.read().unwrap().clone();
        std::fs::write(&cert, "garbage").unwrap();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.store.current.read().unwrap()), "old pair kept");
        write_pair(dir.path(), "a");
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.store.current.read().unwrap()), "new pair served");
    }
}

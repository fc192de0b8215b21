//! TLS session tickets that outlive the process. A restarted or upgraded natter
//! resumes the sessions its predecessor issued, so ten thousand clients coming back
//! at once skip the certificate signature and the chain check (RFC 8446 §2.2).
//!
//! The master key is 32 random bytes in `<data-dir>/tls-ticket.key` (made, mode 0600,
//! on the first start with TLS; read with the secret-file checks after that). Ticket
//! keys are derived from it per [`PERIOD_SECS`] (HMAC-SHA256 of the period number),
//! and a ticket opens in its own period and the next only: a ticket is good for at
//! most two periods. Tickets are sealed with ChaCha20-Poly1305 under a random nonce.
//! Whoever reads the key file can open tickets made with it, so it is guarded like
//! the TLS private key; several instances behind one name share one copy.
//!
//! No socket I/O; the only file it touches is the key file, once, at start.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// How long one derived ticket key seals new tickets.
pub const PERIOD_SECS: u64 = 6 * 3600;
/// The file under the data dir.
pub const KEY_FILE: &str = "tls-ticket.key";
const MASTER_LEN: usize = 32;
/// period (8 bytes) ‖ nonce ‖ sealed ticket ‖ tag.
const HEADER_LEN: usize = 8 + NONCE_LEN;

/// Why the ticket key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TicketKeyError {
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Read(#[from] crate::secret_file::SecretFileError),
    #[error("{path}: {len} bytes, want {MASTER_LEN}: delete it to make a new one (resumed sessions start afresh)")]
    Length { path: PathBuf, len: usize },
    #[error("no random bytes for the ticket key")]
    Random,
}

/// Seals and opens tickets with keys derived from the master key.
pub struct Tickets {
    master: hmac::Key,
    random: SystemRandom,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tickets")
    }
}

impl Tickets {
    /// The master key in `dir`, made there first if there is none.
    pub fn in_dir(dir: &Path) -> Result<Tickets, TicketKeyError> {
        let path = dir.join(KEY_FILE);
        let random = SystemRandom::new();
        if !path.exists() {
            std::fs::create_dir_all(dir).map_err(|source| TicketKeyError::Write { path: dir.to_owned(), source })?;
            let mut key = [0u8; MASTER_LEN];
            random.fill(&mut key).map_err(|_| TicketKeyError::Random)?;
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(&key).and_then(|()| f.sync_all()));
            match written {
                Ok(()) => {}
                // Another process made it first: read theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(TicketKeyError::Write { path, source }),
            }
        }
        let bytes = crate::secret_file::read(&path)?;
        if bytes.len() != MASTER_LEN {
            return Err(TicketKeyError::Length { path, len: bytes.len() });
        }
        Ok(Tickets { master: hmac::Key::new(hmac::HMAC_SHA256, &bytes), random })
    }

    fn key(&self, period: u64) -> Option<LessSafeKey> {
        let tag = hmac::sign(&self.master, &period.to_be_bytes());
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &tag.as_ref()[..32]).ok()?;
        Some(LessSafeKey::new(unbound))
    }

    fn seal_at(&self, plain: &[u8], period: u64) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + CHACHA20_POLY1305.tag_len());
        out.extend_from_slice(&period.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        let aad = Aad::from(period.to_be_bytes());
        self.key(period)?.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad, &mut body).ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    fn open_at(&self, cipher: &[u8], now_period: u64) -> Option<Vec<u8>> {
        let (period, rest) = cipher.split_first_chunk::<8>()?;
        let period = u64::from_be_bytes(*period);
        if period != now_period && period + 1 != now_period {
            return None;
        }
        let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
        let mut body = sealed.to_vec();
        let aad = Aad::from(period.to_be_bytes());
        let plain = self.key(period)?.open_in_place(Nonce::assume_unique_for_key(*nonce), aad, &mut body).ok()?;
        Some(plain.to_vec())
    }
}

fn period_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / PERIOD_SECS)
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    /// What clients are told: a ticket made late in a period still opens through
    /// the next one, so one period is a safe promise.
    fn lifetime(&self) -> u32 {
        PERIOD_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal_at(plain, period_now())
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open_at(cipher, period_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_second_process_opens_the_first_ones_tickets() {
        let dir = tempfile::tempdir().unwrap();
        let first = Tickets::in_dir(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key file is private");
        let ticket = first.encrypt(b"session state").unwrap();
        let second = Tickets::in_dir(dir.path()).unwrap();
        assert_eq!(second.decrypt(&ticket).as_deref(), Some(&b"session state"[..]), "same key after a restart");
        let other = Tickets::in_dir(tempfile::tempdir().unwrap().path()).unwrap();
        assert_eq!(other.decrypt(&ticket), None, "another data dir's key opens nothing");
    }

    #[test]
    fn tickets_expire_after_the_next_period_and_resist_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tickets::in_dir(dir.path()).unwrap();
        let ticket = t.seal_at(b"s", 100).unwrap();
        assert!(t.open_at(&ticket, 100).is_some() && t.open_at(&ticket, 101).is_some());
        assert!(t.open_at(&ticket, 102).is_none(), "two periods later it is refused");
        assert!(t.open_at(&ticket, 99).is_none(), "a ticket from the future is refused");
        let mut forged = ticket.clone();
        forged[7] ^= 1; // claims another period: the key and the AAD no longer match
        assert!(t.open_at(&forged, 101).is_none());
        let mut flipped = ticket.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(t.open_at(&flipped, 100).is_none());
        assert!(t.open_at(&ticket[..10], 100).is_none(), "too short");
    }

    #[test]
    fn a_bad_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, b"short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(Tickets::in_dir(dir.path()), Err(TicketKeyError::Length { len: 5, .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(Tickets::in_dir(dir.path()), Err(TicketKeyError::Read(_))), "world-writable refused");
    }
}

//! API keys: who may call `/api/v1/`. Read from `--api-key-file`, one key a line
//! (optionally followed by its rights: ` impersonate`, ` moderate`, ` admin`), and read again whenever the file changes,
//! so keys are rotated by editing the file: add the new key, move callers over,
//! delete the old one. The file is a secret (crate::secret_file): while its group or
//! others may write it, it is refused at start and not read again. Only SHA-256
//! digests are kept in memory, and a key is known in logs by its id (`key-` + 8 hex
//! digits of its digest), never by itself.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::secret_file;

/// Shortest key accepted: an API key is a bearer secret.
pub const MIN_KEY_CHARS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("the API key file: {0}")]
    Read(#[from] crate::secret_file::SecretFileError),
    #[error("API key file {0}, line {1}: {2}")]
    Line(PathBuf, usize, String),
    #[error("API key file {0} holds no key")]
    Empty(PathBuf),
}

/// One accepted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// `key-` + the first 8 hex digits of the key's SHA-256: safe to log.
    pub id: String,
    digest: [u8; 32],
    /// May post with a `from.id` used as it is (a real user's id); other keys' `from`
    /// ids are put under `api:`, so they can never be taken for a user's.
    pub impersonate: bool,
    /// May delete any message (`DELETE .../messages/{seq}`), as a moderator may.
    pub moderate: bool,
    /// May ban and unban users, read the audit log and use the admin console (and do
    /// all a `moderate` key may).
    pub admin: bool,
}

/// The keys of the file, re-read when its modification time changes.
#[derive(Debug)]
pub struct ApiKeys {
    path: PathBuf,
    loaded: Mutex<(Option<SystemTime>, Vec<ApiKey>)>,
    /// Re-reads since the last [`ApiKeys::take_reloads`], in words, for the audit log.
    reloads: Mutex<Vec<String>>,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn parse(path: &Path, text: &str) -> Result<Vec<ApiKey>, ApiKeyError> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| ApiKeyError::Line(path.to_owned(), i + 1, why.to_owned());
        let mut words = line.split_whitespace();
        let key = words.next().expect("a non-blank line has a word");
        let (mut impersonate, mut moderate, mut admin) = (false, false, false);
        for right in words {
            let flag = match right {
                "impersonate" => &mut impersonate,
                "moderate" => &mut moderate,
                "admin" => &mut admin,
                _ => return Err(bad("after the key only `impersonate`, `moderate` and `admin` may follow")),
            };
            if std::mem::replace(flag, true) {
                return Err(bad(&format!("`{right}` twice")));
            }
        }
        if key.chars().count() < MIN_KEY_CHARS || !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(bad(&format!("a key is at least {MIN_KEY_CHARS} printable ASCII characters")));
        }
        let digest = digest(key);
        let id = format!("key-{}", &hex::encode(digest)[..8]);
        keys.push(ApiKey { id, digest, impersonate, moderate: moderate || admin, admin });
    }
    if keys.is_empty() {
        return Err(ApiKeyError::Empty(path.to_owned()));
    }
    Ok(keys)
}

impl ApiKeys {
    /// Reads the file; a missing, unreadable or empty file is an error at start.
    pub fn load(path: &Path) -> Result<ApiKeys, ApiKeyError> {
        let text = secret_file::read_to_string(path)?;
        let keys = parse(path, &text)?;
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(ApiKeys { path: path.to_owned(), loaded: Mutex::new((mtime, keys)), reloads: Mutex::default() })
    }

    /// The key an `Authorization: Bearer <key>` header names, if it is one of ours.
    pub fn check(&self, authorization: Option<&str>) -> Option<ApiKey> {
        let presented = authorization?.strip_prefix("Bearer ")?.trim();
        let wanted = digest(presented);
        self.refresh();
        let loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        // Digests are compared, so the time taken says nothing about the key itself.
        loaded.1.iter().find(|k| k.digest == wanted).cloned()
    }

    /// Re-reads the file when it changed. A file that no longer parses, or that others
    /// may now write, keeps the old keys (logged): a typo while rotating must not lock
    /// every backend out, and a writable file must not let anyone in.
    fn refresh(&self) {
        let mtime = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if mtime == loaded.0 {
            return;
        }
        loaded.0 = mtime;
        // A file others may now write is refused like one that no longer parses.
        match secret_file::read_to_string(&self.path).map_err(ApiKeyError::from).and_then(|t| parse(&self.path, &t)) {
            Ok(keys) => {
                log::info!("api: key file re-read, {} key(s)", keys.len());
                self.reloaded(format!("{} key(s)", keys.len()));
                loaded.1 = keys;
            }
            Err(e) => {
                log::warn!("api: {e}; keeping the previous keys");
                self.reloaded(format!("refused, previous keys kept: {e}"));
            }
        }
    }

    fn reloaded(&self, what: String) {
        let mut reloads = self.reloads.lock().unwrap_or_else(PoisonError::into_inner);
        if reloads.len() < 100 {
            reloads.push(what);
        }
    }

    /// The re-reads of the file since the last call (for the audit log).
    pub fn take_reloads(&self) -> Vec<String> {
        std::mem::take(&mut *self.reloads.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A key for other modules' unit tests.
#[cfg(test)]
pub(crate) fn tests_key(impersonate: bool) -> ApiKey {
    ApiKey { id: "key-test".into(), digest: [0; 32], impersonate, moderate: false, admin: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_with_flags_comments_and_errors() {
        let p = Path::new("k");
        let keys = parse(p, "# backend\nabcdefghijklmnop\n\nqrstuvwxyz0123456789 impersonate\n").unwrap();
        assert_eq!(keys.len(), 2);
        assert!(!keys[0].impersonate && keys[1].impersonate);
        assert!(keys[0].id.starts_with("key-") && keys[0].id.len() == 12);
        assert!(!keys[0].id.contains("abcdefgh"), "the id never shows the key");
        assert!(matches!(parse(p, "short\n"), Err(ApiKeyError::Line(_, 1, _))));
        assert!(matches!(parse(p, "abcdefghijklmnop root\n"), Err(ApiKeyError::Line(_, 1, _))));
        let admin = parse(p, "abcdefghijklmnop admin\n").unwrap();
        assert!(admin[0].admin && admin[0].moderate, "an admin key may do what a moderate key may");
        assert!(matches!(parse(p, "abcdefghijklmnop moderate moderate\n"), Err(ApiKeyError::Line(_, 1, _))));
        let both = parse(p, "abcdefghijklmnop moderate impersonate\nqrstuvwxyz0123456789 moderate\n").unwrap();
        assert!(both[0].moderate && both[0].impersonate && both[1].moderate && !both[1].impersonate);
        assert!(!keys[0].moderate && !keys[1].moderate);
        assert!(matches!(parse(p, "# nothing\n"), Err(ApiKeyError::Empty(_))));
    }
}

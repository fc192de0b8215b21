//! Reading the files that hold secrets: the JWT secret, the API keys, the webhook
//! secret and the TLS private key.
//!
//! Whoever can write such a file can change the secret (an API key file is read
//! again whenever it changes, so a writable one lets anyone add an `impersonate`
//! key), so a file that its group or others may write is refused, at start and at
//! every reload. One that others (not its group: `root:natter 0640` is the usual way
//! to share it with the service) may read is used, with a warning. The mode is read
//! from the opened file, so the bytes read are those of the file checked. No chat
//! logic, and no import of the rest of natter.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a secret file was not read.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} may be written by its group or others (mode {mode:04o}), so anyone could change the secret in it: \
         `chmod go-w` it (0600, or 0640 with a group of natter's)"
    )]
    Writable { path: PathBuf, mode: u32 },
}

/// The whole file, once its mode is safe.
pub fn read(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    let failed = |source| SecretFileError::Read { path: path.to_owned(), source };
    let mut file = File::open(path).map_err(failed)?;
    let mode = file.metadata().map_err(failed)?.permissions().mode() & 0o7777;
    check(path, mode)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(failed)?;
    Ok(bytes)
}

/// The whole file as text, once its mode is safe.
pub fn read_to_string(path: &Path) -> Result<String, SecretFileError> {
    String::from_utf8(read(path)?).map_err(|e| SecretFileError::Read {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })
}

fn check(path: &Path, mode: u32) -> Result<(), SecretFileError> {
    if mode & 0o022 != 0 {
        return Err(SecretFileError::Writable { path: path.to_owned(), mode });
    }
    if mode & 0o004 != 0 {
        log::warn!("{} may be read by any user on this machine (mode {mode:04o}): `chmod o-r` it", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with_mode(dir: &Path, mode: u32) -> PathBuf {
        let path = dir.join(format!("secret-{mode:o}"));
        std::fs::write(&path, "a secret").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn files_others_may_write_are_refused_and_readable_ones_are_read() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o666, 0o662, 0o620, 0o660, 0o777] {
            let path = file_with_mode(dir.path(), mode);
            assert!(matches!(read(&path), Err(SecretFileError::Writable { .. })), "{mode:o}");
        }
        for mode in [0o600, 0o400, 0o640, 0o644] {
            assert_eq!(read_to_string(&file_with_mode(dir.path(), mode)).unwrap(), "a secret", "{mode:o}");
        }
        assert!(matches!(read(&dir.path().join("none")), Err(SecretFileError::Read { .. })));
    }
}

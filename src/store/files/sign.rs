//! Signed, expiring file URLs: `/files/ID?room=ROOM&exp=UNIX_S&sig=HMAC`. The HMAC
//! (SHA-256, with the server's file secret) binds the file, the room it is fetched
//! for and the expiry, so a URL that leaks stops working when it expires, and cannot
//! be turned into one for another file, room or time.
//!
//! Pure functions: no files, no sockets, no chat state.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Where files are fetched on the WebSocket listener.
pub const FILES_PATH: &str = "/files/";

/// Hex characters of the HMAC kept in a URL (128 bits).
const SIG_CHARS: usize = 32;

fn mac(secret: &[u8], id: &str, room: &str, exp: u64) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    m.update(format!("natter file\0{id}\0{room}\0{exp}").as_bytes());
    hex::encode(m.finalize().into_bytes())[..SIG_CHARS].to_owned()
}

/// The path and query of file `id` fetched for `room`, valid until `exp` (Unix seconds).
pub fn url(secret: &[u8], id: &str, room: &str, exp: u64) -> String {
    let sig = mac(secret, id, room, exp);
    let room_q: String = form_urlencoded::byte_serialize(room.as_bytes()).collect();
    format!("{FILES_PATH}{id}?room={room_q}&exp={exp}&sig={sig}")
}

/// Why a file URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadUrl {
    #[error("the link is incomplete")]
    Incomplete,
    #[error("the link expired: ask for a new one")]
    Expired,
    #[error("the link's signature is wrong")]
    Forged,
}

/// Checks a URL's parts at time `now` (Unix seconds).
pub fn verify(secret: &[u8], id: &str, room: &str, exp: u64, sig: &str, now: u64) -> Result<(), BadUrl> {
    if exp < now {
        return Err(BadUrl::Expired);
    }
    let want = mac(secret, id, room, exp);
    // Constant time: the comparison must not tell how much of a guess was right.
    let same = want.len() == sig.len() && want.bytes().zip(sig.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    same.then_some(()).ok_or(BadUrl::Forged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_bind_file_room_and_expiry() {
        let s = b"secret";
        let u = url(s, "f1", "p.team room", 100);
        assert!(u.starts_with("/files/f1?room=p.team+room&exp=100&sig="), "{u}");
        let sig = u.rsplit_once("sig=").unwrap().1;
        assert_eq!(verify(s, "f1", "p.team room", 100, sig, 99), Ok(()));
        assert_eq!(verify(s, "f1", "p.team room", 100, sig, 101), Err(BadUrl::Expired));
        assert_eq!(verify(s, "f2", "p.team room", 100, sig, 99), Err(BadUrl::Forged));
        assert_eq!(verify(s, "f1", "lobby", 100, sig, 99), Err(BadUrl::Forged));
        assert_eq!(verify(s, "f1", "p.team room", 200, sig, 99), Err(BadUrl::Forged));
        assert_eq!(verify(b"other", "f1", "p.team room", 100, sig, 99), Err(BadUrl::Forged));
    }
}

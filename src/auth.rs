//! Token authentication: verifying the HS256 JWTs that token mode requires, minting
//! them for tests and scripts (`natter token`), and loading the shared secret.
//!
//! Also the [`Identity`] the handshake settles on.
//!
//! Any backend that signs `{sub, exp, name?}` with HS256 and the same secret can issue
//! tokens. Errors never contain the token itself.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::access::{Access, Role, RoomPatterns};
use crate::protocol::UserId;

/// Who is on the other end of a connection, fixed at the handshake.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Stable user id (`sub` in token mode, derived from the name in open mode).
    pub id: UserId,
    /// Display name.
    pub name: String,
    /// Whether `nick` is allowed (open mode only).
    pub can_rename: bool,
    /// The rooms the user may join and the user's role.
    pub access: Access,
    /// The id outlives this connection (a token's `sub`, or an open-mode key), so
    /// others may name it in `dm` and `invite` while the user is away.
    pub lasting: bool,
}

/// Shortest secret accepted: HS256 is only as strong as its key.
pub const MIN_SECRET_BYTES: usize = 32;

/// The claims natter reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Display name (the `sub` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Rooms the user may join: exact names and `prefix*` patterns (see [`Access`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<serde_json::Value>,
    /// `"mod"` for a moderator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Claims {
    /// The rights the token gives; an unusable `rooms` or `role` claim refuses it.
    pub fn access(&self) -> Result<Access, String> {
        let rooms = self.rooms.as_ref().map(RoomPatterns::from_claim).transpose()?;
        Ok(Access { rooms, role: Role::from_claim(self.role.as_deref())? })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("no JWT secret: set NATTER_JWT_SECRET or --jwt-secret-file")]
    NoSecret,
    #[error("the JWT secret is {0} bytes; at least {MIN_SECRET_BYTES} are required")]
    ShortSecret(usize),
    #[error("the JWT secret file: {0}")]
    SecretFile(#[from] crate::secret_file::SecretFileError),
}

pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Checks signature, algorithm, `exp` and `nbf` (with `leeway_s` of clock skew).
pub fn verify(token: &str, secret: &[u8], leeway_s: u64) -> Result<Claims, AuthError> {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = leeway_s;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "sub"]);
    let claims = decode::<Claims>(token, &DecodingKey::from_secret(secret), &v)
        .map(|d| d.claims)
        .map_err(|e| AuthError::Invalid(e.kind_description()))?;
    // A user id others can name in `dm` and `invite`, and put in logs.
    let bad_sub = claims.sub.is_empty()
        || claims.sub.chars().nth(crate::protocol::MAX_USER_ID_CHARS).is_some()
        || claims.sub.chars().any(char::is_control);
    if bad_sub {
        let why = format!("`sub` must be 1-{} characters, none a control", crate::protocol::MAX_USER_ID_CHARS);
        return Err(AuthError::Invalid(why));
    }
    Ok(claims)
}

trait KindDescription {
    fn kind_description(&self) -> String;
}

impl KindDescription for jsonwebtoken::errors::Error {
    fn kind_description(&self) -> String {
        use jsonwebtoken::errors::ErrorKind::*;
        match self.kind() {
            ExpiredSignature => "expired".into(),
            ImmatureSignature => "not valid yet (nbf)".into(),
            InvalidSignature => "bad signature".into(),
            InvalidAlgorithm => "algorithm is not HS256".into(),
            MissingRequiredClaim(c) => format!("missing claim `{c}`"),
            other => format!("malformed ({other:?})"),
        }
    }
}

/// What a minted token says besides `sub` and its lifetime.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub name: Option<String>,
    /// `rooms` claim entries (`team-*`, `support`).
    pub rooms: Option<Vec<String>>,
    pub role: Option<String>,
}

/// Signs a token for `sub` valid for `ttl_s` seconds.
pub fn mint(secret: &[u8], sub: &str, grants: &Grants, ttl_s: u64) -> String {
    let claims = Claims {
        sub: sub.to_owned(),
        exp: now_s() + ttl_s,
        name: grants.name.clone(),
        nbf: None,
        rooms: grants.rooms.as_ref().map(|r| serde_json::json!(r)),
        role: grants.role.clone(),
    };
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret))
        .expect("HS256 signing with an in-memory key cannot fail")
}

/// The secret from a file (trailing newline trimmed) or from the environment value.
pub fn load_secret(file: Option<&Path>, env: Option<String>) -> Result<Vec<u8>, AuthError> {
    let secret = match (file, env) {
        (Some(path), _) => {
            let mut bytes = crate::secret_file::read(path)?;
            while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                bytes.pop();
            }
            bytes
        }
        (None, Some(value)) => value.into_bytes(),
        (None, None) => return Err(AuthError::NoSecret),
    };
    if secret.len() < MIN_SECRET_BYTES {
        return Err(AuthError::ShortSecret(secret.len()));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn minted_tokens_verify() {
        let grants =
            Grants { name: Some("Alice".into()), rooms: Some(vec!["team-*".into()]), role: Some("mod".into()) };
        let t = mint(SECRET, "alice", &grants, 60);
        let c = verify(&t, SECRET, 0).unwrap();
        assert_eq!((c.sub.as_str(), c.name.as_deref()), ("alice", Some("Alice")));
        let access = c.access().unwrap();
        assert!(access.is_mod() && access.rooms.is_some());
    }

    #[test]
    fn bad_tokens_are_rejected_without_echoing_them() {
        let t = mint(SECRET, "alice", &Grants::default(), 60);
        let e = verify(&t, b"another-secret-another-secret-xx", 0).unwrap_err().to_string();
        assert!(e.contains("bad signature") && !e.contains(&t), "{e}");
        assert!(verify("garbage", SECRET, 0).is_err());
        let expired = encode(
            &Header::new(Algorithm::HS256),
            &Claims { sub: "a".into(), exp: now_s() - 100, name: None, nbf: None, rooms: None, role: None },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(verify(&expired, SECRET, 0).unwrap_err().to_string().contains("expired"));
        assert!(verify(&expired, SECRET, 200).is_ok(), "leeway covers small skew");
        let early = encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "a".into(),
                exp: now_s() + 100,
                name: None,
                nbf: Some(now_s() + 50),
                rooms: None,
                role: None,
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(verify(&early, SECRET, 0).is_err());
    }

    #[test]
    fn secrets_must_be_long_enough() {
        assert!(matches!(load_secret(None, Some("short".into())), Err(AuthError::ShortSecret(5))));
        assert!(matches!(load_secret(None, None), Err(AuthError::NoSecret)));
        assert!(load_secret(None, Some(String::from_utf8(SECRET.to_vec()).unwrap())).is_ok());
    }
}

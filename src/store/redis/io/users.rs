//! Frames for a user's connections on every instance: what `redis-io` publishes on
//! the users channel ([`ToUser`]) for the other instances, while this instance's
//! connections get them with the answer ([`UserFrames`]). Shared by the access and
//! DM requests; never touches rooms or sockets.

use bytes::Bytes;

use crate::protocol::wire;
use crate::protocol::UserId;
use crate::store::redis::RedisStore;

/// A frame for a user's connections on every instance (the users channel's payload).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ToUser {
    /// The user's id.
    pub to: String,
    /// The frame's JSON.
    pub frame: String,
}

/// Frames for users' connections: (whose, frame).
pub type UserFrames = Vec<(UserId, Bytes)>;

/// Publishes `frame` for `to`'s connections on the other instances; this
/// instance's are staged with the answer.
pub(super) fn tell(store: &mut RedisStore, to: &str, frame: &Bytes) {
    let json = wire::payload(frame);
    let message = ToUser { to: to.to_owned(), frame: String::from_utf8_lossy(&json).into_owned() };
    let payload = serde_json::to_vec(&message).expect("a user frame always serializes");
    if let Err(e) = store.tell_user(&payload) {
        log::warn!("redis: could not tell {to}'s other instances: {e}");
    }
}

//! Redis mode's private rooms, DM rooms, invitations, kicks and read-only rooms, the
//! dispatcher's side: it asks `redis-io` (whose half is `store::redis::io::access`)
//! and stages what comes back, never waiting on Redis.
//!
//! Each instance applies a delivered moderation event to its own connections (a kicked
//! user's leave the room; in open mode the addresses they come from are recorded in
//! Redis, which every instance's joins are checked against) and to its read-only
//! cache, which posts are checked against.
//! `dm`/`invited` frames go to the user's connections here with the answer, and come
//! from the other instances through the users channel ([`ToUser`]).

use crate::delivery::outbox::ConnId;
use crate::dispatcher::tags::Request;
use crate::dispatcher::Dispatcher;
use crate::protocol::wire;
use crate::protocol::{ProtocolError, RoomName, User, UserId};
use crate::store::audit::AuditEntry;
use crate::store::redis::io::{split_msg_json, ToUser, UserFrames};
use crate::store::AccessChange;

/// Another instance's erasure, as the users channel carries it (store/redis/io/admin.rs).
#[derive(serde::Deserialize)]
struct Erased {
    #[serde(rename = "type")]
    kind: String,
    uid: String,
    keep: bool,
}

/// A moderation event as delivered from a room's stream.
#[derive(serde::Deserialize)]
struct Delivered {
    #[serde(rename = "type")]
    kind: String,
    event: Option<String>,
    user: Option<DeliveredUser>,
    read_only: Option<bool>,
    ts: Option<u64>,
    minutes: Option<u64>,
}

#[derive(serde::Deserialize)]
struct DeliveredUser {
    id: String,
}

impl Dispatcher {
    /// A new connection: Redis remembers a lasting user, and tells the connection of
    /// every DM room it has (the answer is `ClusterEvent::Welcome`).
    pub(crate) fn cluster_welcome(&mut self, conn: ConnId, uid: &UserId, name: &str, lasting: bool) {
        let max_dms = self.cfg.max_dms_per_conn;
        self.backend.tell_cluster(|| Request::Welcome {
            conn,
            uid: uid.clone(),
            name: name.to_owned(),
            lasting,
            max_dms,
        });
    }

    /// `dm {user}` in Redis mode: the pair is recorded there, both users' connections
    /// on every instance are told.
    pub(crate) fn cluster_dm(&mut self, conn: ConnId, me: User, other: &str) {
        let other_name = self.local_name(other);
        let other = UserId::from(other);
        let rate = self.cfg.dm_open_rate;
        self.backend.tell_cluster(|| Request::Dm { conn, me, other, other_name, rate });
    }

    /// `invite {room, user}` in Redis mode: Redis's owner of the room decides.
    pub(crate) fn cluster_invite(&mut self, conn: ConnId, room: &RoomName, by: User, is_mod: bool, user: &str) {
        let user_name = self.local_name(user);
        let (room, user) = (room.clone(), UserId::from(user));
        self.backend.tell_cluster(|| Request::Invite { conn, room, by, is_mod, user, user_name });
    }

    /// Appends a moderator's `system` event (JSON with seq 0) that sets `field` of the
    /// room's access to `value`; every instance applies it when it delivers it. Its
    /// `audit` entry is written once the event is stored, by `redis-io`.
    pub(crate) fn cluster_moderate(
        &mut self,
        conn: ConnId,
        room: RoomName,
        by: UserId,
        json: &[u8],
        fact: (String, String),
        (what, audit): (&'static str, AuditEntry),
    ) {
        let (prefix, suffix) = split_msg_json(json);
        let (field, value) = fact;
        let audit = Some((audit, self.audit_keep_ms()));
        self.backend.tell_cluster(|| Request::Moderate {
            conn,
            room,
            uid: by,
            prefix,
            suffix,
            field,
            value,
            what,
            audit,
        });
    }

    /// The name of a user connected here.
    fn local_name(&self, uid: &str) -> Option<String> {
        self.user_conns.of(uid).first().and_then(|c| self.clients.get(c)).map(|c| c.name.clone())
    }

    /// The answer to a `dm`, `invite`, `kick` or `mode`: the frames for users' local
    /// connections, or the error.
    pub(super) fn on_told(&mut self, conn: ConnId, result: Result<UserFrames, ProtocolError>) {
        match result {
            Ok(frames) => {
                for (user, frame) in frames {
                    self.stage_user(&user, &frame);
                }
            }
            Err(e) => self.reply_error(conn, &e),
        }
    }

    /// Another instance's frame for a user: staged to the user's connections here.
    pub(super) fn on_user_frame(&mut self, json: &[u8]) {
        // Another instance's erasure: never a frame for clients.
        if let Ok(Erased { kind, uid, keep }) = serde_json::from_slice::<Erased>(json) {
            if kind == "erased" {
                let held = self.rooms.keys().cloned().collect();
                return self.anonymize_rings(&uid, keep, held);
            }
        }
        let Ok(ToUser { to, frame }) = serde_json::from_slice::<ToUser>(json) else {
            return log::warn!("redis: skipping a user frame that does not parse");
        };
        self.stage_user(&to, &wire::text_frame(frame.as_bytes()));
    }

    /// A moderation event delivered from the room's stream: a kicked user's
    /// connections here leave the room (after the event was staged to them); a
    /// read-only change reaches the cache posts are checked against.
    pub(super) fn apply_delivered_moderation(&mut self, room: &RoomName, json: &[u8]) {
        let Ok(e) = serde_json::from_slice::<Delivered>(json) else { return };
        if e.kind != "system" {
            return;
        }
        match (e.event.as_deref(), e.user, e.read_only) {
            (Some("kick"), Some(user), _) => {
                // Every instance covers the addresses its own connections of the user
                // come from (open mode): only it knows them.
                let addrs = self.kick_addresses_of(&user.id);
                if let (false, Some(ts), Some(minutes)) = (addrs.is_empty(), e.ts, e.minutes) {
                    let until = ts.saturating_add(minutes.saturating_mul(60_000));
                    log::info!("moderation: {room} refuses {addrs:?} (where {} connects from) until {until}", user.id);
                    let room = room.clone();
                    self.backend.tell_cluster(|| Request::KickAddresses { room, addrs, until });
                }
                self.remove_user_from_room(&user.id, room)
            }
            (Some("read_only"), _, Some(on)) => {
                self.moderation.apply(&AccessChange::ReadOnly { room: room.to_string(), on });
            }
            _ => {}
        }
    }
}

//! Server-wide bans and the audit log, as the dispatcher keeps them.
//!
//! A ban ([`crate::bans`]) closes the user's connections here at once (1008 `banned
//! from this server`), is stored (SQLite's `bans` table in the batch's transaction, or
//! Redis's `{p}:bans` through `redis-io`, which every instance polls), and is checked
//! by every connection thread at connect through the shared table. In open mode it
//! also covers the addresses the user is connected from (as a kick does).
//!
//! Every moderator and admin action is recorded ([`Dispatcher::record`]): in the
//! batch's transaction locally, or handed to `redis-io`; the dispatcher never waits
//! for either beyond the commit it makes anyway.

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::Sender;
use serde_json::{json, Value};

use super::backend::Backend;
use super::state::now_ms;
use super::tags::Request;
use super::Dispatcher;
use crate::bans::{Ban, Bans};
use crate::delivery::outbox::ConnId;
use crate::protocol::{ApiResult, CloseReason, ErrorCode, ProtocolError, RoomName};
use crate::store::audit::AuditEntry;
use crate::store::redis::io::{AdminRequest, ApiRead};
use crate::store::AccessChange;

/// Who acts, for the audit log: a user id or an API key's id, and their address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    pub id: String,
    pub addr: String,
}

impl Dispatcher {
    /// The table connection threads check at connect (kept current by this thread).
    pub fn bans(&self) -> Arc<Bans> {
        self.bans.clone()
    }

    /// A moderator's connection as an actor.
    pub(super) fn actor_of(&self, id: ConnId) -> Actor {
        self.clients
            .get(&id)
            .map(|c| Actor { id: c.uid.to_string(), addr: c.conn.peer.ip().to_string() })
            .unwrap_or_default()
    }

    /// Records an action in the audit log (and the process log): in this batch's
    /// transaction locally, or handed to `redis-io`. An action whose own store is Redis's
    /// append (a kick, a mode change) takes its [`Self::audit_entry`] along instead, so
    /// that it is written only once the action is stored.
    pub(super) fn record(&mut self, by: &Actor, action: &str, target: &str, room: &str, detail: String) {
        let entry = self.audit_entry(by, action, target, room, detail);
        self.record_entry(entry);
    }

    /// Writes an entry made by [`Self::audit_entry`] (see [`Self::record`]).
    pub(super) fn record_entry(&mut self, entry: AuditEntry) {
        let keep_ms = self.audit_keep_ms();
        match &mut self.backend {
            Backend::Local(local) => {
                local.store.audit(entry);
                self.audit_pending = true;
            }
            Backend::Redis(cluster) => cluster.io.send(Request::Admin(AdminRequest::Audit { entry, keep_ms })),
        }
    }

    /// An action's audit entry, now (and its line in the process log).
    pub(super) fn audit_entry(&self, by: &Actor, action: &str, target: &str, room: &str, detail: String) -> AuditEntry {
        log::info!("audit: {} ({}) {action} {target} {room} {detail}", by.id, by.addr);
        AuditEntry {
            id: 0,
            ts: now_ms(),
            actor: by.id.clone(),
            action: action.into(),
            target: target.into(),
            room: room.into(),
            detail,
            addr: by.addr.clone(),
        }
    }

    /// How old an audit entry may get (`--audit-retention-days`), in ms.
    pub(super) fn audit_keep_ms(&self) -> Option<u64> {
        self.cfg.audit_retention_days.map(|d| d * 86_400_000)
    }

    /// Answers an API call once what it changed is stored: after this batch's commit
    /// locally (Redis-mode calls are answered by `redis-io`).
    pub(super) fn answer_after_commit(&mut self, reply: Sender<ApiResult>, answer: ApiResult) {
        match self.backend {
            Backend::Local(_) => self.api_replies.push((reply, answer)),
            Backend::Redis(_) => {
                let _ = reply.send(answer);
            }
        }
    }

    /// Closes every connection of `uid` here with `reason`; how many.
    pub(super) fn close_user(&mut self, uid: &str, reason: CloseReason) -> usize {
        let conns: Vec<_> = self.clients.values().filter(|c| &*c.uid == uid).map(|c| c.conn.clone()).collect();
        for conn in &conns {
            log::info!("closing connection {} of {uid}: {}", conn.id, reason.label());
            self.close_conn(conn, reason);
        }
        conns.len()
    }

    /// `POST /api/v1/users/{id}/ban`: in force here at once, for every instance once
    /// stored; the caller is answered after that.
    pub(super) fn ban(&mut self, uid: &str, ms: u64, reason: String, by: Actor, reply: Sender<ApiResult>) {
        let now = now_ms();
        let addrs = self.kick_addresses_of(uid);
        let until = now + ms;
        let minutes = (ms as f64 / 60_000.0 * 100.0).round() / 100.0;
        let ban = Ban { user: uid.to_owned(), until, reason: reason.clone(), by: by.id.clone(), at: now, addrs };
        self.bans.set(ban.clone(), now);
        let closed = self.close_user(uid, CloseReason::Banned);
        let detail =
            if reason.is_empty() { format!("{minutes} minute(s)") } else { format!("{minutes} minute(s): {reason}") };
        self.record(&by, "ban", uid, "", detail);
        let answer =
            json!({ "user": uid, "until": until, "reason": reason, "closed": closed, "addresses": ban.addrs.len() });
        match &self.backend {
            Backend::Local(_) => {
                self.change_access(AccessChange::Ban(ban));
                self.api_replies.push((reply, Ok(answer)));
            }
            Backend::Redis(cluster) => {
                cluster.io.send(Request::Admin(AdminRequest::Ban { ban, reply, answer }));
                // The other instances close theirs too (they poll the bans first).
                cluster.io.send(Request::Disconnect { uid: uid.into() });
            }
        }
    }

    /// `DELETE /api/v1/users/{id}/ban`: the user may connect again.
    pub(super) fn unban(&mut self, uid: &str, by: Actor, reply: Sender<ApiResult>) {
        let lifted = self.bans.lift(uid, now_ms()).is_some();
        if lifted {
            self.record(&by, "unban", uid, "", String::new());
        }
        let answer = json!({ "user": uid, "lifted": lifted });
        match &self.backend {
            Backend::Local(_) => {
                if lifted {
                    self.change_access(AccessChange::Unban { user: uid.to_owned() });
                }
                self.api_replies.push((reply, Ok(answer)));
            }
            Backend::Redis(cluster) => {
                cluster.io.send(Request::Admin(AdminRequest::Unban { user: uid.to_owned(), reply, answer }))
            }
        }
    }

    /// Redis mode: the cluster's bans as `redis-io` read them. Users newly banned
    /// elsewhere are closed here, and (open mode) their addresses here covered.
    pub(super) fn on_bans(&mut self, bans: Vec<Ban>) {
        for ban in self.bans.replace(bans, now_ms()) {
            let addrs = self.kick_addresses_of(&ban.user);
            self.bans.cover(&ban.user, &addrs);
            self.close_user(&ban.user, CloseReason::Banned);
        }
    }
}

/// Connections one instance writes to Redis for the others' consoles at most.
const MAX_ONLINE_SHARED: usize = 10_000;

/// Rooms one admin room list holds at most (the busiest first when there are more).
const MAX_ADMIN_ROOMS: usize = 500;

impl Dispatcher {
    /// The admin console's room list: rooms in memory here whose name contains `q`,
    /// with members, head, last activity and whether private. DM rooms are only
    /// counted: their names say nothing and their messages are never shown.
    pub(super) fn admin_rooms(&self, q: &str) -> Value {
        let mut dms = 0;
        let mut rooms: Vec<Value> = Vec::new();
        for (name, r) in &self.rooms {
            if crate::access::is_dm(name) {
                dms += 1;
                continue;
            }
            if !name.as_str().contains(q) {
                continue;
            }
            let last = r
                .history
                .get(r.history.head())
                .and_then(|m| serde_json::from_slice::<Value>(&m.json()).ok().and_then(|v| v["ts"].as_u64()));
            rooms.push(json!({
                "room": name,
                "users": r.present.len() + r.remote.len(),
                "head": r.history.head(),
                "last_activity": last,
                "private": self.privacy.is_private(name),
                "read_only": self.moderation.is_read_only(name),
            }));
        }
        rooms.sort_by(|a, b| {
            b["users"].as_u64().cmp(&a["users"].as_u64()).then(a["room"].as_str().cmp(&b["room"].as_str()))
        });
        let total = rooms.len();
        rooms.truncate(MAX_ADMIN_ROOMS);
        json!({ "rooms": rooms, "matching": total, "dm_rooms": dms, "in_memory": self.rooms.len() })
    }

    /// Redis mode: every third of the presence TTL, this instance's connections are
    /// written to Redis for the other instances' consoles (they expire with the TTL, so
    /// a crashed instance's users leave the list).
    pub(super) fn publish_online(&mut self, now: std::time::Instant) {
        if !matches!(self.backend, Backend::Redis(_))
            || now.duration_since(self.last_online) < self.cfg.redis_presence_ttl / 3
        {
            return;
        }
        self.last_online = now;
        let mut users = self.local_users(&self.instance_label);
        users.truncate(MAX_ONLINE_SHARED);
        let json = serde_json::to_vec(&users).expect("values serialize");
        let ttl = self.cfg.redis_presence_ttl;
        self.backend.tell_cluster(|| Request::Online { json, ttl });
    }

    /// The console's users in Redis mode: this instance's connections, and every other
    /// instance's as it last wrote them to Redis (`redis-io` reads them and answers).
    pub(super) fn cluster_admin_users(&mut self, instance: &str, reply: Sender<ApiResult>) {
        let label = if self.instance_label.is_empty() { instance } else { &self.instance_label };
        let local = self.local_users(label);
        self.backend.tell_cluster(|| Request::Api(ApiRead::Users { local }, reply));
    }

    /// One entry per connection here, with its transport and address.
    fn local_users(&self, instance: &str) -> Vec<Value> {
        self.clients
            .values()
            .map(|c| {
                let rooms: Vec<&str> =
                    c.rooms.iter().filter(|r| !crate::access::is_dm(r)).map(RoomName::as_str).collect();
                json!({
                    "id": &*c.uid,
                    "name": c.name,
                    "instance": instance,
                    "transport": if c.conn.sse().is_some() { "sse" } else { "websocket" },
                    "addr": c.conn.peer.ip().to_string(),
                    "rooms": rooms,
                    "moderator": c.access.is_mod(),
                })
            })
            .collect()
    }

    /// The admin console's users online (single-instance mode; Redis mode:
    /// [`Self::cluster_admin_users`]): every connection here, and users other instances
    /// have in rooms held here.
    pub(super) fn admin_users(&self, instance: &str) -> Value {
        let mut users = self.local_users(instance);
        let mut elsewhere: HashMap<&str, (&str, Vec<&str>)> = HashMap::new();
        for (name, r) in self.rooms.iter().filter(|(n, _)| !crate::access::is_dm(n)) {
            for (uid, user) in &r.remote {
                elsewhere.entry(uid).or_insert((user, Vec::new())).1.push(name.as_str());
            }
        }
        for (uid, (name, rooms)) in elsewhere {
            users.push(json!({ "id": uid, "name": name, "instance": null, "transport": null, "addr": null, "rooms": rooms, "moderator": false }));
        }
        users.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()).then(a["id"].as_str().cmp(&b["id"].as_str())));
        json!({ "users": users, "connections": self.clients.len() })
    }

    /// `POST /api/v1/rooms/{room}/kick {user, minutes}` by an admin key.
    pub(super) fn api_kick(&mut self, room: RoomName, user: &str, minutes: u64, by: Actor) -> ApiResult {
        self.bring_back(&room)?;
        let who = (crate::protocol::UserId::from(by.id.as_str()), "admin".to_owned());
        self.kick_as(None, who, &by, room.clone(), user, minutes)?;
        Ok(json!({ "room": room, "user": user, "minutes": minutes }))
    }

    /// `POST /api/v1/rooms/{room}/mode {read_only}` by an admin key.
    pub(super) fn api_mode(&mut self, room: RoomName, read_only: bool, by: Actor) -> ApiResult {
        if !self.bring_back(&room)? {
            return Err(ProtocolError::new(ErrorCode::NotFound, format!("no room `{room}`")));
        }
        let who = (crate::protocol::UserId::from(by.id.as_str()), "admin".to_owned());
        self.set_mode_as(None, who, &by, room.clone(), read_only)?;
        Ok(json!({ "room": room, "read_only": read_only }))
    }
}

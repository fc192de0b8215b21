//! Presence: who is in a room, and the `system` join/leave/nick events that announce
//! changes. A user is present while at least one of their connections is a member;
//! arrivals and departures are announced once per user, and only in rooms small
//! enough to afford it ([`super::state::Room::announces`]).

use std::sync::Arc;

use super::state::{now_ms, Presence};
use super::tags::Request;
use super::Dispatcher;
use crate::delivery::outbox::ConnId;
use crate::protocol::wire::{self, Frame};
use crate::protocol::{RoomName, ServerMsg, SystemEvent, UserRef};
use crate::webhooks::Event;

impl Dispatcher {
    /// The one place a `system` event frame is built.
    pub(super) fn system_frame(
        room: &RoomName,
        event: SystemEvent,
        user: UserRef<'_>,
        old_name: Option<&str>,
    ) -> Frame {
        wire::encode(&ServerMsg::System { room: room.as_str(), event, user, ts: now_ms(), old_name })
    }

    /// Makes `id` a member of `room`, announcing the user's arrival to the others when
    /// this is the user's first connection there.
    pub(super) fn add_member(&mut self, id: ConnId, room: &RoomName) {
        let (Some(client), Some(r)) = (self.clients.get(&id), self.rooms.get_mut(room)) else { return };
        let (uid, name) = (client.uid.clone(), client.name.clone());
        r.add(id, client.conn.clone());
        let p = r.present.entry(uid.clone()).or_insert(Presence { connections: 0, name: name.clone() });
        p.connections += 1;
        let first = p.connections == 1;
        let announce = first && r.announces(self.cfg.presence_limit);
        if first {
            self.webhooks.stage(&Event::Join { room: room.as_str(), uid: &uid, user: &name });
        }
        if announce {
            let frame = Self::system_frame(room, SystemEvent::Join, UserRef { id: &uid, name: &name }, None);
            self.stage_room(room, &frame, Some(id));
            self.backend.publish(room, &frame);
        }
    }

    /// Takes `id` out of `room`'s members and presence, announcing a leave when it
    /// was the user's last connection there.
    pub(super) fn remove_member(&mut self, id: ConnId, room: &RoomName) {
        let (Some(client), Some(r)) = (self.clients.get(&id), self.rooms.get_mut(room)) else { return };
        let uid: Arc<str> = client.uid.clone();
        if !r.remove(id) {
            return;
        }
        let last_here = r.members.is_empty();
        let Some(p) = r.present.get_mut(&uid) else { return };
        p.connections -= 1;
        if p.connections == 0 {
            // Judged with the leaver still counted, as its join was.
            let announce = r.announces(self.cfg.presence_limit);
            let name = r.present.remove(&uid).map(|p| p.name).unwrap_or_default();
            self.backend.tell_cluster(|| Request::Leave { room: room.clone(), uid: uid.clone() });
            self.webhooks.stage(&Event::Leave { room: room.as_str(), uid: &uid, user: &name });
            if announce {
                let frame = Self::system_frame(room, SystemEvent::Leave, UserRef { id: &uid, name: &name }, None);
                self.stage_room(room, &frame, None);
                self.backend.publish(room, &frame);
            }
        }
        if last_here {
            self.cluster_room_empty(room);
        }
    }
}

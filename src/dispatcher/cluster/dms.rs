//! Redis mode's blocks, closed DMs and DM rate, the dispatcher's side: it asks
//! `redis-io` (whose half is `store::redis::io::dms`) and stages what comes back
//! (as `ClusterEvent::Told`), never waiting on Redis.

use crate::delivery::outbox::ConnId;
use crate::dispatcher::tags::{AckTo, Request};
use crate::dispatcher::Dispatcher;
use crate::protocol::{RoomName, UserId};
use crate::store::redis::io::DmRequest;

impl Dispatcher {
    /// A message this instance stored in DM room `room` (its JSON): Redis opens the
    /// room again for whoever of the two closed it.
    pub(super) fn reopen_after_post(&mut self, ack: &AckTo, room: &RoomName, json: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Poster<'a> {
            #[serde(borrow)]
            uid: std::borrow::Cow<'a, str>,
        }
        let Ok(p) = serde_json::from_slice::<Poster>(json) else { return };
        let conn = match ack {
            AckTo::Conn(conn) => *conn,
            AckTo::Api(_) => 0, // no connection to tell of a failure
        };
        let room = room.clone();
        let poster = UserId::from(&*p.uid);
        self.backend.tell_cluster(|| Request::Dms(DmRequest::Reopen { conn, room, poster }));
    }

    pub(crate) fn cluster_block(&mut self, conn: ConnId, uid: UserId, user: &str, on: bool) {
        let user = UserId::from(user);
        self.backend.tell_cluster(|| Request::Dms(DmRequest::Block { conn, uid, user, on }));
    }

    pub(crate) fn cluster_close_dm(&mut self, conn: ConnId, uid: UserId, room: &RoomName) {
        let room = room.clone();
        self.backend.tell_cluster(|| Request::Dms(DmRequest::Close { conn, uid, room }));
    }
}

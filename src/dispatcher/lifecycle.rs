//! The socket lifecycle as the dispatcher drives it: registering and forgetting
//! connections, retrying sockets that were full, the heartbeat pings, closing slow
//! consumers with a grace period, and closing everyone at shutdown.
//!
//! The dispatcher never waits on a client here either: flushes are non-blocking, and a
//! client that does not take its close frame is cut at a deadline.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::Client;
use super::tags::Request;
use super::{Dispatcher, CLOSE_GRACE, SHUTDOWN_GRACE};
use crate::auth::Identity;
use crate::delivery::fanout::Out;
use crate::delivery::outbox::{self, Conn, ConnId, Flush, LINGER};
use crate::delivery::writer::ShardEvent;
use crate::protocol::CloseReason;
use crate::ratelimit::TokenBucket;

impl Dispatcher {
    pub(super) fn register(&mut self, conn: Arc<Conn>, user: Identity) {
        self.metrics.connections.fetch_add(1, Relaxed);
        self.heartbeat.add(conn.id);
        self.user_conns.add(&user.id, conn.id);
        self.welcome_user(&conn, &user);
        let client = Client {
            conn: conn.clone(),
            uid: user.id,
            name: user.name,
            can_rename: user.can_rename,
            access: user.access,
            rooms: vec![],
            creates: TokenBucket::per_minute(self.cfg.room_creates_per_min, self.cfg.room_creates_per_min),
        };
        self.clients.insert(conn.id, client);
    }

    /// Removes a connection from every room and from the dispatcher's books.
    pub(super) fn forget(&mut self, id: ConnId) {
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        let uid = client.uid.clone();
        for room in client.rooms.clone() {
            let r = self.rooms.get(&room);
            if r.is_some_and(|r| r.members.contains_key(&id)) {
                self.remove_member(id, &room);
            } else if !r.is_some_and(|r| r.present.contains_key(&uid)) {
                // Gone while its Redis join was in flight: take back the presence it set.
                self.backend.tell_cluster(|| Request::Leave { room: room.clone(), uid: uid.clone() });
            }
            self.release_room(id, &room);
        }
        self.user_conns.remove(&uid, id);
        self.clients.remove(&id);
        self.blocked.remove(&id);
        self.metrics.connections.fetch_sub(1, Relaxed);
    }

    pub(super) fn on_shard_event(&mut self, ev: ShardEvent) {
        match ev {
            ShardEvent::Blocked(conn) => {
                if self.clients.contains_key(&conn.id) {
                    self.blocked.insert(conn.id, conn);
                }
            }
            ShardEvent::Slow(conn) => self.close_conn(&conn, CloseReason::SlowConsumer),
        }
    }

    /// Sends a close frame (dropping the backlog when the client is too slow for it),
    /// removes the connection from its rooms, and watches it until it is gone.
    pub(super) fn close_conn(&mut self, conn: &Arc<Conn>, reason: CloseReason) {
        conn.set_reason(reason);
        let (code, text) = reason.close_frame().expect("dispatcher closes always send a frame");
        if !conn.close(code, text, reason == CloseReason::SlowConsumer) {
            return;
        }
        log::info!("closing connection {} ({}): {}", conn.id, conn.peer, reason.label());
        let rooms = self.clients.get_mut(&conn.id).map(|c| std::mem::take(&mut c.rooms)).unwrap_or_default();
        for room in rooms {
            self.remove_member(conn.id, &room);
            self.release_room(conn.id, &room);
        }
        self.blocked.remove(&conn.id);
        conn.flush();
        self.closing.push((conn.clone(), Instant::now() + CLOSE_GRACE, false));
    }

    pub(super) fn on_tick(&mut self) {
        let now = Instant::now();
        self.retry_blocked();
        self.drive_closing(now);
        let clients = &self.clients;
        for id in self.heartbeat.due(now, |id| clients.contains_key(&id)) {
            self.staged.push(Out::One(clients[&id].conn.clone(), self.ping.clone()));
        }
        self.publish_online(now);
        // Connection threads write too (pongs, errors); catch any backlog they left.
        if now.duration_since(self.last_sweep) >= Duration::from_secs(1) {
            self.last_sweep = now;
            for c in self.clients.values() {
                if c.conn.backlog() > 0 {
                    self.blocked.insert(c.conn.id, c.conn.clone());
                }
            }
        }
    }

    fn retry_blocked(&mut self) {
        if self.blocked.is_empty() {
            return;
        }
        let conns: Vec<Arc<Conn>> = self.blocked.values().cloned().collect();
        let fds: Vec<i32> = conns.iter().map(|c| c.raw_fd()).collect();
        for i in outbox::wait_writable(&fds, Duration::ZERO) {
            let conn = &conns[i];
            if conn.flush() != Flush::Pending {
                self.blocked.remove(&conn.id);
            }
        }
    }

    /// Moves closing connections along: once the close frame is out, the client gets
    /// `LINGER` to answer before the socket is cut (which also ends its thread); a
    /// client that never takes the close frame is cut at its deadline.
    fn drive_closing(&mut self, now: Instant) {
        self.closing.retain_mut(|(conn, deadline, flushed)| {
            if now >= *deadline {
                conn.abort();
                return false;
            }
            if *flushed {
                return true;
            }
            match conn.flush() {
                Flush::Pending => true,
                Flush::Done => {
                    conn.shutdown_write();
                    *flushed = true;
                    *deadline = now + LINGER;
                    true
                }
                Flush::Failed => false,
            }
        });
    }

    /// Shutdown: close frame to everyone, a short grace for them to drain, then cut.
    pub(super) fn close_all(&mut self, reason: CloseReason) {
        let (code, text) = reason.close_frame().expect("shutdown sends a frame");
        // Anything staged by the last batch was never committed: do not send it.
        self.staged.clear();
        let conns: Vec<Arc<Conn>> = self.clients.values().map(|c| c.conn.clone()).collect();
        for conn in &conns {
            conn.set_reason(reason);
            conn.close(code, text, false);
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut pending: Vec<&Arc<Conn>> = conns.iter().collect();
        while !pending.is_empty() && Instant::now() < deadline {
            pending.retain(|c| c.flush() == Flush::Pending);
            if !pending.is_empty() {
                let fds: Vec<i32> = pending.iter().map(|c| c.raw_fd()).collect();
                outbox::wait_writable(&fds, Duration::from_millis(50));
            }
        }
        for conn in &conns {
            conn.shutdown_write();
        }
        log::info!("dispatcher: closed {} connections", conns.len());
    }
}

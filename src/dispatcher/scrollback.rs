//! Reading history: resume (`join` with `since`, local mode; Redis mode resumes in
//! `cluster`), scroll-back (`history`) and `search`, answered from the room's ring
//! when it holds the answer and otherwise by the store's reader threads (SQLite or
//! Redis, [`Backend::read`]), whose answers come back as [`super::Command::Store`].
//!
//! A scroll-back page the store answered is written to its socket at once
//! ([`fanout::send_answer`]), not staged behind the writer shards' broadcast passes
//! (a pass over thousands of sockets takes tens of ms): it holds only messages older
//! than the ring's oldest when it was asked, whose live frames left long before, and an
//! answer has no place in the room's order. Pages from the ring are staged as before,
//! and so are a store's pages to a connection with permessage-deflate: a writer shard
//! compresses them, never the dispatcher.
//!
//! Ordering: a client resuming from the store is not a member of the room until the
//! answer arrives; it then gets the stored messages up to `upto` (the seq before the
//! ring's oldest when it asked), the ring's messages after that, and becomes a member,
//! so live delivery continues at exactly the next seq: no live message comes before
//! the history that covers it, none is missed, none comes twice.

use bytes::Bytes;
use serde_json::{json, Value};

use super::backend::Backend;
use super::joined::JoinReply;
use super::tags::ReadFor;
use super::Dispatcher;
use crate::delivery::fanout::{self, Out};
use crate::delivery::outbox::{ConnId, Flush};
use crate::protocol::wire::{self, HistoryMeta};
use crate::protocol::{CloseReason, ErrorCode, ProtocolError, RoomName, MAX_SEQ};
use crate::store::read::{Answer, Page, Query};

fn busy(reference: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::Unavailable, "history reads are queued too deep; retry")
        .with_ref(Some(reference.into()))
}

impl Dispatcher {
    /// A joining client's resume the ring cannot cover: asks the readers for the rest.
    /// Returns false when the readers could not take it (the caller answers from the ring).
    pub(super) fn resume_from_store(&mut self, conn: ConnId, room: &RoomName, since: u64) -> bool {
        self.read_more(conn, room, since, Vec::new(), true).is_ok()
    }

    /// Asks the readers for `room`'s stored messages after `since` up to the ring's
    /// start; gives `got` back when they cannot take it.
    fn read_more(
        &self,
        conn: ConnId,
        room: &RoomName,
        since: u64,
        got: Vec<Bytes>,
        complete: bool,
    ) -> Result<(), Vec<Bytes>> {
        let Some(r) = self.rooms.get(room) else { return Err(got) };
        let upto = r.history.oldest().map_or(r.history.head(), |o| o - 1);
        let Backend::Local(local) = &self.backend else { return Err(got) };
        let limit = self.cfg.max_resume.saturating_sub(got.len()).max(1);
        let query = Query::After { room: room.clone(), since, upto, limit };
        let tag = ReadFor::Join { conn, room: room.clone(), since, upto, got, complete };
        local.readers.ask(tag, query).map_err(|t| match t {
            ReadFor::Join { got, .. } => got,
            _ => Vec::new(),
        })
    }

    /// `history {room, before, limit}`: from the ring when it proves the answer, else
    /// from the store.
    pub(super) fn scroll_back(
        &mut self,
        id: ConnId,
        room: RoomName,
        before: u64,
        limit: usize,
    ) -> Result<(), ProtocolError> {
        self.require_member_of(id, &room, "history")?;
        self.settle(&room);
        let r = &self.rooms[&room];
        if let Some(msgs) = r.history.before(before, limit) {
            let json: Vec<Bytes> = msgs.iter().map(|m| m.json()).collect();
            let meta = HistoryMeta { before: Some(before), ..HistoryMeta::default() };
            self.stage_pages(id, &room, meta, &json);
            return Ok(());
        }
        let query = Query::Before { room: room.clone(), before: self.delivered_below(&room, before), limit };
        self.backend.read(ReadFor::Before { conn: id, room, before }, query).map_err(|_| busy("history"))
    }

    /// `search {room, q, before?, limit}`: always the store (SQLite's FTS index, or a
    /// scan of the Redis stream).
    pub(super) fn search(
        &mut self,
        id: ConnId,
        room: RoomName,
        q: String,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(), ProtocolError> {
        self.require_member_of(id, &room, "search")?;
        let below = self.delivered_below(&room, before.unwrap_or(MAX_SEQ + 1));
        let query = Query::Search { room: room.clone(), q: q.clone(), before: below, limit };
        self.backend.read(ReadFor::Search { conn: id, room, q, before }, query).map_err(|_| busy("search"))
    }

    /// `before`, lowered in Redis mode to just past what this instance has delivered in
    /// the room: Redis may already hold messages its reader has not brought here, and
    /// they come live; an answer never holds one. (A local store holds only committed
    /// messages, which were delivered with their batch.)
    fn delivered_below(&self, room: &RoomName, before: u64) -> u64 {
        let live = self.rooms.get(room).and_then(|r| r.live_head);
        live.map_or(before, |live| before.min(live + 1))
    }

    fn require_member_of(&self, id: ConnId, room: &RoomName, reference: &str) -> Result<(), ProtocolError> {
        if self.clients[&id].rooms.contains(room) {
            return Ok(());
        }
        Err(ProtocolError::new(ErrorCode::NotJoined, format!("join `{room}` first")).with_ref(Some(reference.into())))
    }

    pub(super) fn on_store_answer(&mut self, answer: Answer<ReadFor>) {
        let result = answer.result;
        match answer.tag {
            ReadFor::Join { conn, room, since, upto, got, complete } => {
                let page = result.ok();
                self.finish_resume(conn, room, since, upto, (got, complete), page)
            }
            ReadFor::Before { conn, room, before } => match result {
                Ok(page) => {
                    let json: Vec<Bytes> = page.messages.into_iter().map(|m| m.json).collect();
                    let meta = HistoryMeta { complete: page.complete, before: Some(before), ..HistoryMeta::default() };
                    self.send_pages(conn, &room, meta, &json);
                }
                Err(message) => {
                    let e = ProtocolError::new(ErrorCode::Unavailable, message).with_ref(Some("history".into()));
                    self.reply_error(conn, &e);
                }
            },
            ReadFor::Api { reply, room, head } => {
                let answer = result
                    .map(|page| {
                        let messages: Vec<Value> =
                            page.messages.iter().filter_map(|m| serde_json::from_slice(&m.json).ok()).collect();
                        json!({ "room": room, "head": head, "messages": messages, "complete": page.complete })
                    })
                    .map_err(|message| ProtocolError::new(ErrorCode::Unavailable, message));
                let _ = reply.send(answer);
            }
            ReadFor::Search { conn, room, q, before } => match result {
                Ok(page) => self.stage_search(conn, &room, &q, before, page),
                Err(message) => {
                    let e = ProtocolError::new(ErrorCode::Unavailable, message).with_ref(Some("search".into()));
                    self.reply_error(conn, &e);
                }
            },
        }
    }

    /// The store's part of a resume arrived: joined, the history pages, membership.
    /// If the ring moved on past `upto` meanwhile, the gap is read too (it is stored).
    fn finish_resume(
        &mut self,
        conn: ConnId,
        room: RoomName,
        since: u64,
        upto: u64,
        (mut got, mut complete): (Vec<Bytes>, bool),
        page: Option<Page>,
    ) {
        let Some(client) = self.clients.get(&conn) else { return };
        if !client.rooms.contains(&room) {
            return; // left before the answer came
        }
        let Some(r) = self.rooms.get(&room) else { return };
        match page {
            Some(page) => {
                complete &= page.complete;
                got.extend(page.messages.into_iter().map(|m| m.json));
            }
            None => complete = false,
        }
        let later = r.history.since(upto.max(since));
        if !later.complete && got.len() < self.cfg.max_resume {
            match self.read_more(conn, &room, upto.max(since), got, complete) {
                Ok(()) => return,
                Err(back) => (got, complete) = (back, false),
            }
        }
        let r = &self.rooms[&room];
        let later = r.history.since(upto.max(since));
        if !later.complete {
            got.clear(); // the ring does not join up with what was read: send the ring
        }
        complete &= later.complete;
        got.extend(later.messages.iter().map(|m| m.json()));
        let seq_of = |j: &Bytes| serde_json::from_slice::<crate::protocol::StoredMsgRecord>(j).ok().map(|m| m.seq);
        let first = (!complete).then(|| got.first().and_then(seq_of).unwrap_or(r.history.head() + 1));
        self.stage_join(conn, &room, HistoryMeta { complete, first, ..HistoryMeta::default() }, &got);
    }

    /// The `joined` frame's facts for `room` now.
    pub(super) fn join_reply(&self, room: &RoomName, complete: bool, user: &str) -> JoinReply<'_> {
        let r = &self.rooms[room];
        JoinReply {
            head: r.history.head(),
            epoch: r.epoch.as_deref(),
            users: r.users(self.cfg.presence_limit),
            users_total: r.present.len(),
            complete,
            read_seq: self.reads.get(user, room),
            mentions_unread: self.reads.unread_mentions(user, room),
            private: self.privacy.is_private(room),
            title: self.privacy.title(room),
            read_only: self.moderation.is_read_only(room),
        }
    }

    /// Makes `conn` a member (if not yet: the others hear of it), then stages
    /// `joined` (listing it) and the history pages, before any later room frame.
    pub(super) fn stage_join(&mut self, conn: ConnId, room: &RoomName, meta: HistoryMeta, json: &[Bytes]) {
        let Some(c) = self.clients.get(&conn) else { return };
        let (conn_arc, uid) = (c.conn.clone(), c.uid.clone());
        if !self.rooms.get(room).is_some_and(|r| r.members.contains_key(&conn)) {
            self.add_member(conn, room);
        }
        let frames = self.join_reply(room, meta.complete, &uid).frames(room, meta, json, self.cfg.max_frame_bytes);
        for f in frames {
            self.staged.push(Out::Answer(conn_arc.clone(), f));
        }
    }

    fn stage_pages(&mut self, conn: ConnId, room: &RoomName, meta: HistoryMeta, json: &[Bytes]) {
        let Some(c) = self.clients.get(&conn) else { return };
        let conn_arc = c.conn.clone();
        for f in wire::history_pages(room.as_str(), meta, json, self.cfg.max_frame_bytes) {
            self.staged.push(Out::Answer(conn_arc.clone(), f));
        }
    }

    /// A store-answered scroll-back page, written now (see the module doc); a socket it
    /// fills is retried on the tick like one a writer shard left full.
    fn send_pages(&mut self, conn: ConnId, room: &RoomName, meta: HistoryMeta, json: &[Bytes]) {
        let Some(c) = self.clients.get(&conn) else { return };
        let conn_arc = c.conn.clone();
        let frames = wire::history_pages(room.as_str(), meta, json, self.cfg.max_frame_bytes);
        if conn_arc.deflate().is_some() {
            // Compressed by a writer shard: the dispatcher never compresses.
            self.staged.extend(frames.into_iter().map(|f| Out::Answer(conn_arc.clone(), f)));
            return;
        }
        match fanout::send_answer(&conn_arc, frames) {
            Ok((backlog, _)) if backlog > self.cfg.max_backlog_bytes => {
                self.close_conn(&conn_arc, CloseReason::SlowConsumer)
            }
            Ok((_, Flush::Pending)) => {
                self.blocked.insert(conn, conn_arc);
            }
            Ok(_) | Err(_) => {}
        }
    }

    /// A search answer in one frame: matches past the frame limit are left for the
    /// next page (`complete:false`; the client asks again with `before`).
    fn stage_search(&mut self, conn: ConnId, room: &RoomName, q: &str, before: Option<u64>, page: Page) {
        let Some(c) = self.clients.get(&conn) else { return };
        let conn_arc = c.conn.clone();
        let budget = self.cfg.max_frame_bytes.saturating_sub(256 + q.len() * 6);
        let (mut size, mut kept) = (0, 0);
        for m in &page.messages {
            if kept > 0 && size + m.json.len() + 1 > budget {
                break;
            }
            size += m.json.len() + 1;
            kept += 1;
        }
        let complete = page.complete && kept == page.messages.len();
        let msgs = page.messages[..kept].iter().map(|m| &m.json[..]);
        self.staged.push(Out::Answer(conn_arc, wire::search_frame(room.as_str(), q, before, complete, msgs)));
    }
}

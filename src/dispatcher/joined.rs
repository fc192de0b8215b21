//! What a joining client is told, in either mode: the `joined` frame (head, epoch,
//! presence, read marker, unread mentions) and then the `history` pages ([`JoinReply::frames`]).
//!
//! A leaf: it imports nothing of the dispatcher.

use bytes::Bytes;

use crate::protocol::wire::{self, Frame, HistoryMeta};
use crate::protocol::{RoomName, ServerMsg, UserRef};

/// What a joining client is told: the room's head, epoch and presence, then its history.
pub struct JoinReply<'a> {
    pub head: u64,
    pub epoch: Option<&'a str>,
    pub users: Vec<UserRef<'a>>,
    pub users_total: usize,
    pub complete: bool,
    pub read_seq: u64,
    /// Mentions of the user above `read_seq`, up to `head`.
    pub mentions_unread: u32,
    pub private: bool,
    /// A private room's title.
    pub title: Option<&'a str>,
    pub read_only: bool,
}

impl JoinReply<'_> {
    /// The `joined` frame and the `history` pages, to be staged in this order after
    /// every earlier frame of the room: the history then precedes the live messages
    /// after it. No page is larger than about `max_bytes`.
    pub fn frames(self, room: &RoomName, meta: HistoryMeta, messages: &[Bytes], max_bytes: usize) -> Vec<Frame> {
        let joined = wire::encode(&ServerMsg::Joined {
            room: room.as_str(),
            head: self.head,
            epoch: self.epoch,
            users: self.users,
            users_total: self.users_total,
            read_seq: self.read_seq,
            mentions_unread: self.mentions_unread,
            private: self.private,
            title: self.title,
            read_only: self.read_only,
        });
        let meta = HistoryMeta { complete: self.complete, ..meta };
        let mut frames = vec![joined];
        frames.extend(wire::history_pages(room.as_str(), meta, messages, max_bytes));
        frames
    }
}

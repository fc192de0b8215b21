//! The tags the dispatcher sends with work it hands to another thread — a store's
//! reader threads, Redis mode's `redis-io`, an API caller waiting — and gets back with
//! the answer, so it knows where the answer goes: [`AckTo`] for a post's ack,
//! [`ReadFor`] for a history read; and [`Request`]/[`ClusterEvent`], `redis-io`'s
//! request and answer types with these tags filled in.
//!
//! A leaf: it imports nothing of the dispatcher, so every file of it may use these.

use bytes::Bytes;
use crossbeam_channel::Sender;

use crate::delivery::outbox::ConnId;
use crate::protocol::{ApiResult, RoomName, User};
use crate::store::redis::io;

/// Where the answer to a post goes once the store holds the message.
#[derive(Debug)]
pub enum AckTo {
    /// A WebSocket client: an `ack` frame, if it gave an id.
    Conn(ConnId),
    /// An API caller waiting for `{seq, dup}`.
    Api(Sender<ApiResult>),
}

/// A message to store, whoever posts it (a client or the server API), and where its
/// answer goes.
pub struct NewPost<'a> {
    pub poster: &'a User,
    pub ack: AckTo,
    pub room: RoomName,
    pub text: &'a str,
    pub msg_id: Option<String>,
    /// The message this one answers (its frame quotes it).
    pub reply_to: Option<u64>,
    /// Files the message carries, described by the file store.
    pub files: &'a [crate::protocol::FileDesc],
    /// The users it mentions (checked: each is in the room).
    pub mentions: &'a [String],
}

/// What a reader's answer is for.
#[derive(Debug)]
pub enum ReadFor {
    /// A joining client's resume: stored messages in `(since, upto]`, after `got`
    /// (what earlier reads of the same resume returned).
    Join { conn: ConnId, room: RoomName, since: u64, upto: u64, got: Vec<Bytes>, complete: bool },
    /// A scroll-back page.
    Before { conn: ConnId, room: RoomName, before: u64 },
    /// A search.
    Search { conn: ConnId, room: RoomName, q: String, before: Option<u64> },
    /// A server API history page, answered straight to the caller.
    Api { reply: Sender<ApiResult>, room: RoomName, head: u64 },
}

/// What the dispatcher asks of `redis-io`.
pub type Request = io::Request<ConnId, AckTo>;

/// What `redis-io` answers the dispatcher.
pub type ClusterEvent = io::ClusterEvent<ConnId, AckTo>;

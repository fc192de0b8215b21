//! What the benches share: the one typical chat message they all measure with.

// Each bench uses part of this module.
#![allow(dead_code)]

use natter::protocol::ServerMsg;

/// The text of the typical message: about eighty bytes.
pub const TEXT: &str = "hello, this is a typical chat message of about eighty bytes in length!!";

/// A typical `msg` with the given seq.
pub fn sample_msg(seq: u64) -> ServerMsg<'static> {
    ServerMsg::Msg {
        room: "lobby",
        seq,
        id: Some("c-0123456789"),
        ts: 1_790_000_000_000,
        user: "alice",
        uid: "u-alice",
        text: TEXT,
        files: &[],
    }
}

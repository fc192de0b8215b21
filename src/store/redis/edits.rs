//! Edits, deletions and reactions in Redis: [`RedisStore::change`] stores an `edit`,
//! `delete` or `react` event through the append script, which checks the change and
//! rewrites the message's body in the same step (a reaction as
//! [`crate::store::reactions::set`] does); [`edited`] and [`deleted`] make the same rewrite of a copy
//! (the dispatcher's rings), byte for byte what the script writes.
//!
//! The rewrite relies on how natter writes these JSONs: `text` is the last field of a
//! `msg` and of an `edit` event (an edited message adds `edited` after it). The first
//! `,"text":` is that field: inside a JSON string a `"` is always escaped, so the bytes
//! `,"` never occur there. Never decides who may change what on its own: the script
//! checks the rule the dispatcher states for local mode.

use bytes::Bytes;

use super::store::Post;
use super::{Appended, ChangeOf, RedisStore, RedisStoreError};
use crate::protocol::RoomName;
use crate::store::Refused;

impl RedisStore {
    /// Stores the event `prefix seq suffix` (an `edit` with its `text` last, or a
    /// `delete`) by `uid` and rewrites the message it changes, atomically: the message
    /// must be a `msg` of `room` that is not deleted, by `uid` (or, for a delete by a
    /// moderator, anyone's). Dedup and retries as [`RedisStore::append`].
    pub fn change(
        &mut self,
        room: &RoomName,
        uid: &str,
        client_id: Option<&str>,
        prefix: &[u8],
        suffix: &[u8],
        change: &ChangeOf,
    ) -> Result<Result<Appended, Refused>, RedisStoreError> {
        let post = Post { room, uid, client_id, prefix, suffix, access: None, guard_read_only: false };
        let (code, seq) = self.run_append(&post, Some(change))?;
        Ok(match code {
            3 => Err(Refused::Missing),
            4 => Err(Refused::NotYours),
            5 => Err(Refused::Deleted),
            7 => Err(Refused::Full),
            // A reaction the toggle took off: the event says so.
            8 => {
                let off = reaction_off(suffix);
                Ok(Post { suffix: &off, ..post }.appended(1, seq))
            }
            _ => Ok(post.appended(code, seq)),
        })
    }
}

/// A `react` event's suffix (ending `"on":true}`) as the script stores it when the
/// toggle took the reaction off: `false}` in place of `true}`.
pub fn reaction_off(suffix: &[u8]) -> Vec<u8> {
    let kept = suffix.strip_suffix(b"true}").unwrap_or(suffix);
    [kept, b"false}"].concat()
}

/// Where `json`'s `text` field starts (see the module doc).
fn text_at(json: &[u8]) -> Option<usize> {
    const TEXT: &[u8] = br#","text":"#;
    json.windows(TEXT.len()).position(|w| w == TEXT)
}

/// Message `original` as the `edit` event `event` (made at `ts`) leaves it: the event's
/// text and `"edited":ts` in place of its own text. `None` when either has no text.
pub fn edited(original: &[u8], event: &[u8], ts: u64) -> Option<Bytes> {
    let (kept, text) = (text_at(original)?, text_at(event)?);
    let text = event.get(text..event.len().checked_sub(1)?)?;
    Some([&original[..kept], text, b",\"edited\":", ts.to_string().as_bytes(), b"}"].concat().into())
}

/// A message or `edit` event deleted: no text, `"deleted":true`. `None` when it has no
/// text (already deleted).
pub fn deleted(json: &[u8]) -> Option<Bytes> {
    Some([&json[..text_at(json)?], b",\"deleted\":true}"].concat().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_replaces_the_text_and_marks_the_time() {
        let msg = br#"{"type":"msg","room":"r","seq":1,"ts":1,"user":"a,\"text\":","uid":"u","text":"old, \"text\":"}"#;
        let edit = br#"{"type":"edit","room":"r","seq":2,"of":1,"ts":5,"user":"a","uid":"u","text":"new"}"#;
        let once = edited(msg, edit, 5).unwrap();
        assert_eq!(
            &once[..],
            br#"{"type":"msg","room":"r","seq":1,"ts":1,"user":"a,\"text\":","uid":"u","text":"new","edited":5}"#
        );
        let again = br#"{"type":"edit","room":"r","seq":3,"of":1,"ts":9,"user":"a","uid":"u","text":"newer"}"#;
        assert!(edited(&once, again, 9).unwrap().ends_with(br#""uid":"u","text":"newer","edited":9}"#));
        serde_json::from_slice::<serde_json::Value>(&once).expect("still JSON");
    }

    #[test]
    fn a_deletion_leaves_no_text_and_happens_once() {
        let msg = br#"{"type":"msg","room":"r","seq":1,"ts":1,"user":"a","uid":"u","text":"secret","edited":3}"#;
        let gone = deleted(msg).unwrap();
        assert_eq!(&gone[..], br#"{"type":"msg","room":"r","seq":1,"ts":1,"user":"a","uid":"u","deleted":true}"#);
        assert_eq!(deleted(&gone), None);
    }
}

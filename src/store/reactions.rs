//! A message's reactions in its stored JSON, and the one rewrite that changes them.
//!
//! A `msg` carries `"reactions":{"👍":["u-a","u-b"],"🎉":["u-c"]}` (emoji → the ids of
//! the users who reacted, in the order they did; an emoji nobody holds any more is
//! dropped, the field with the last one) just before its `text`, so that Redis mode's
//! byte rewrites of an edit or deletion (which cut at `,"text":`) keep it. SQLite mode
//! rewrites a message through `serde_json::Value` on an edit, which may move the field:
//! [`set`] finds it wherever it is and puts it back before `text`.
//!
//! Both stores and the rings make this rewrite; Redis's append script makes it in Lua
//! (`scripts.rs`), byte for byte as [`set`] does, which is why the field is plain: an
//! emoji and a user id that may react hold none of `"` `\` `[` `]` `{` `}` `,` and no
//! control character ([`plain`]), so they need no escaping and the field parses with
//! a pattern. Never decides who may react: the dispatcher (or the script) checks that.

pub use crate::protocol::{plain, valid_emoji};

/// Distinct emoji a message holds at most.
pub const MAX_EMOJI_PER_MSG: usize = 20;
/// Reactions (user and emoji pairs) a message holds at most.
pub const MAX_REACTIONS_PER_MSG: usize = 500;

const FIELD: &[u8] = br#""reactions":{"#;
const TEXT: &[u8] = br#","text":"#;

/// Why a reaction cannot be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// The message has no text (deleted) or is not a message natter wrote.
    NoText,
    /// Past [`MAX_EMOJI_PER_MSG`] or [`MAX_REACTIONS_PER_MSG`].
    Full,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The reactions `json` holds, in order, and `json` without the field.
fn split(json: &[u8]) -> (Vec<(String, Vec<String>)>, Vec<u8>) {
    let Some(at) = find(json, FIELD) else { return (Vec::new(), json.to_vec()) };
    let body = at + FIELD.len();
    let Some(len) = json[body..].iter().position(|&b| b == b'}') else { return (Vec::new(), json.to_vec()) };
    let inner = String::from_utf8_lossy(&json[body..body + len]);
    let mut list = Vec::new();
    // `"E":["u1","u2"]`, separated by commas (none inside: see the module doc).
    for entry in inner.split("],").map(|e| e.trim_end_matches(']')) {
        let Some((emoji, users)) = entry.split_once(":[") else { continue };
        let users = users.split(',').map(|u| u.trim_matches('"').to_owned()).filter(|u| !u.is_empty()).collect();
        list.push((emoji.trim_matches('"').to_owned(), users));
    }
    // Take the field out with one comma next to it (before it when there is one).
    let end = body + len + 1;
    let mut rest = json[..at].to_vec();
    if rest.last() == Some(&b',') {
        rest.pop();
        rest.extend_from_slice(&json[end..]);
    } else {
        rest.extend_from_slice(json[end..].strip_prefix(b",").unwrap_or(&json[end..]));
    }
    (list, rest)
}

/// Whether `uid` has reacted to message `json` with `emoji`.
pub fn has(json: &[u8], emoji: &str, uid: &str) -> bool {
    split(json).0.iter().any(|(e, users)| e == emoji && users.iter().any(|u| u == uid))
}

/// Message `json` with `uid`'s reaction `emoji` on (`on`) or off; unchanged bytes but
/// for the field when it already was so.
pub fn set(json: &[u8], emoji: &str, uid: &str, on: bool) -> Result<Vec<u8>, NotStored> {
    let (mut list, rest) = split(json);
    let at = find(&rest, TEXT).ok_or(NotStored::NoText)?;
    match list.iter_mut().find(|(e, _)| e == emoji) {
        Some((_, users)) => {
            if !on {
                users.retain(|u| u != uid);
            } else if !users.iter().any(|u| u == uid) {
                users.push(uid.to_owned());
            }
        }
        None if on => {
            if list.len() >= MAX_EMOJI_PER_MSG {
                return Err(NotStored::Full);
            }
            list.push((emoji.to_owned(), vec![uid.to_owned()]));
        }
        None => {}
    }
    if on && list.iter().map(|(_, u)| u.len()).sum::<usize>() > MAX_REACTIONS_PER_MSG {
        return Err(NotStored::Full);
    }
    list.retain(|(_, users)| !users.is_empty());
    let mut out = Vec::with_capacity(rest.len() + 64);
    out.extend_from_slice(&rest[..at]);
    if !list.is_empty() {
        out.extend_from_slice(b",");
        out.extend_from_slice(FIELD);
        for (i, (emoji, users)) in list.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(format!("\"{emoji}\":[\"{}\"]", users.join("\",\"")).as_bytes());
        }
        out.push(b'}');
    }
    out.extend_from_slice(&rest[at..]);
    Ok(out)
}

/// `uid`'s reaction `emoji` to message `json` toggled: the new JSON, and whether it is
/// on now.
pub fn toggle(json: &[u8], emoji: &str, uid: &str) -> Result<(Vec<u8>, bool), NotStored> {
    let on = !has(json, emoji, uid);
    set(json, emoji, uid, on).map(|j| (j, on))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = br#"{"type":"msg","room":"r","seq":1,"ts":1,"user":"a","uid":"u-a","text":"hi, \"text\":"}"#;

    #[test]
    fn reactions_go_before_the_text_and_come_off_again() {
        let (one, on) = toggle(MSG, "👍", "u-a").unwrap();
        assert!(on);
        assert_eq!(
            std::str::from_utf8(&one).unwrap(),
            r#"{"type":"msg","room":"r","seq":1,"ts":1,"user":"a","uid":"u-a","reactions":{"👍":["u-a"]},"text":"hi, \"text\":"}"#
        );
        let two = set(&one, "🎉", "u-b", true).unwrap();
        let three = set(&two, "👍", "u-b", true).unwrap();
        assert!(std::str::from_utf8(&three)
            .unwrap()
            .contains(r#""reactions":{"👍":["u-a","u-b"],"🎉":["u-b"]},"text""#));
        serde_json::from_slice::<serde_json::Value>(&three).expect("still JSON");
        let (back, on) = toggle(&set(&three, "🎉", "u-b", false).unwrap(), "👍", "u-b").unwrap();
        assert!(!on);
        assert_eq!(set(&back, "👍", "u-a", false).unwrap(), MSG);
        assert_eq!(set(MSG, "👍", "u-a", false).unwrap(), MSG, "off twice is the same");
    }

    #[test]
    fn a_reordered_message_gets_the_field_back_before_text() {
        let sorted = r#"{"edited":5,"reactions":{"é":["x"]},"room":"r","text":"t","uid":"u"}"#;
        let v = set(sorted.as_bytes(), "👍", "y", true).unwrap();
        assert_eq!(
            std::str::from_utf8(&v).unwrap(),
            r#"{"edited":5,"room":"r","reactions":{"é":["x"],"👍":["y"]},"text":"t","uid":"u"}"#
        );
        let first = br#"{"reactions":{"x":["y"]},"room":"r","text":"t"}"#;
        assert_eq!(set(first, "x", "y", false).unwrap(), br#"{"room":"r","text":"t"}"#);
    }

    #[test]
    fn bounds_and_deleted_messages_refuse() {
        let mut json = MSG.to_vec();
        for i in 0..MAX_EMOJI_PER_MSG {
            json = set(&json, &format!("é{i}"), "u", true).unwrap();
        }
        assert_eq!(set(&json, "👍", "u", true), Err(NotStored::Full));
        let gone = br#"{"type":"msg","room":"r","seq":1,"uid":"u","deleted":true}"#;
        assert_eq!(toggle(gone, "👍", "u"), Err(NotStored::NoText));
        assert!(
            valid_emoji("👍") && valid_emoji("👨‍👩‍👧") && !valid_emoji("ok") && !valid_emoji("👍 ") && !valid_emoji("\"👍")
        );
        assert!(!plain("a\"b") && plain("u-0123"));
    }
}

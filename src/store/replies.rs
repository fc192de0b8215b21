//! A reply's quote of the message it answers, as the reply carries it:
//! `"reply":{"seq":41,"uid":"u-a","user":"alice","quote":"the first 100 characters…"}`,
//! or `"reply":{"seq":41,"deleted":true}` for a deleted original, just before the
//! reply's `text` (so that Redis mode's rewrites, which cut at `,"text":`, keep it).
//! The quote is a copy made when the reply is stored, so no client has to fetch the
//! original; when the original is deleted, every stored reply's quote of it is
//! rewritten as deleted ([`unquote`]) in the same step, so its text leaves the store.
//! Never decides who may reply: the dispatcher checks membership first.

use serde::Serialize;
use serde_json::Value;

use super::Refused;

/// Characters of the original a quote keeps (then `…`).
pub const QUOTE_CHARS: usize = 100;

#[derive(Serialize)]
struct Quote<'a> {
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quote: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
}

/// The `reply` object quoting message `of`, whose stored JSON is `original` (`None`:
/// not held). `Missing` when it is not a `msg`.
pub fn quote(original: Option<&[u8]>, of: u64) -> Result<Vec<u8>, Refused> {
    let msg: Value = original.and_then(|j| serde_json::from_slice(j).ok()).ok_or(Refused::Missing)?;
    if msg["type"] != "msg" {
        return Err(Refused::Missing);
    }
    let q = match msg["text"].as_str() {
        Some(text) if msg["deleted"] != true => {
            let mut quote: String = text.chars().take(QUOTE_CHARS).collect();
            if text.chars().nth(QUOTE_CHARS).is_some() {
                quote.push('…');
            }
            Quote { seq: of, uid: msg["uid"].as_str(), user: msg["user"].as_str(), quote: Some(quote), deleted: false }
        }
        _ => Quote { seq: of, uid: None, user: None, quote: None, deleted: true },
    };
    Ok(serde_json::to_vec(&q).expect("a quote always serializes"))
}

/// What a reply carries before its quote is known (Redis mode: the I/O thread reads
/// the original and puts the quote in its place, [`fill`]).
pub fn placeholder(of: u64) -> Vec<u8> {
    format!(r#"{{"seq":{of}}}"#).into_bytes()
}

/// A `msg` JSON with `"reply":reply` put just before its `text` (the first `,"text":`
/// is the field: no string natter writes holds `,"` unescaped).
pub fn with_reply(json: &[u8], reply: &[u8]) -> Vec<u8> {
    with_field(json, "reply", reply)
}

/// A `msg` JSON with `"name":value` put just before its `text` (a reply's quote, a
/// message's `mentions`).
pub fn with_field(json: &[u8], name: &str, value: &[u8]) -> Vec<u8> {
    const TEXT: &[u8] = br#","text":"#;
    let Some(at) = json.windows(TEXT.len()).position(|w| w == TEXT) else { return json.to_vec() };
    [&json[..at], b",\"", name.as_bytes(), b"\":", value, &json[at..]].concat()
}

/// The seq a stored reply quotes (its `"reply":{"seq":N,…}`, found before its `text`,
/// where no string holds the bytes unescaped); `None` for anything else.
pub fn quoted(json: &[u8]) -> Option<u64> {
    const MARK: &[u8] = br#","reply":{"seq":"#;
    let at = json.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let digits = json[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&json[at..at + digits]).ok()?.parse().ok()
}

/// A stored reply to `of` with its quote made the deleted one (`{"seq":of,"deleted":true}`,
/// the rest byte for byte as it was); `None` when it quotes nothing of `of` or says
/// deleted already. Redis's append script makes the same rewrite in Lua.
pub fn unquote(json: &[u8], of: u64) -> Option<Vec<u8>> {
    let mark = format!(r#","reply":{{"seq":{of},"#);
    let at = json.windows(mark.len()).position(|w| w == mark.as_bytes())?;
    let start = at + r#","reply":"#.len();
    // Where the quote object ends: a JSON reader, so a `}` inside the quote is text.
    let mut objects = serde_json::Deserializer::from_slice(&json[start..]).into_iter::<serde::de::IgnoredAny>();
    objects.next()?.ok()?;
    let end = start + objects.byte_offset();
    let gone = format!(r#"{{"seq":{of},"deleted":true}}"#);
    if &json[start..end] == gone.as_bytes() {
        return None;
    }
    Some([&json[..start], gone.as_bytes(), &json[end..]].concat())
}

/// `part` (a reply's JSON or a piece of it) with its placeholder of `of` replaced by
/// `reply`; `None` when it holds none.
pub fn fill(part: &[u8], of: u64, reply: &[u8]) -> Option<Vec<u8>> {
    let mark = [b"\"reply\":".as_slice(), &placeholder(of)].concat();
    let at = part.windows(mark.len()).position(|w| w == mark.as_slice())?;
    Some([&part[..at], b"\"reply\":", reply, &part[at + mark.len()..]].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quote_keeps_the_start_and_says_deleted_for_a_deleted_original() {
        let long = format!(r#"{{"type":"msg","seq":4,"user":"al","uid":"u-a","text":"{}"}}"#, "é".repeat(150));
        let q: Value = serde_json::from_slice(&quote(Some(long.as_bytes()), 4).unwrap()).unwrap();
        assert_eq!((q["seq"].as_u64(), q["user"].as_str(), q["uid"].as_str()), (Some(4), Some("al"), Some("u-a")));
        assert_eq!(q["quote"].as_str().unwrap().chars().count(), QUOTE_CHARS + 1);
        let gone = br#"{"type":"msg","seq":4,"uid":"u-a","deleted":true}"#;
        assert_eq!(quote(Some(gone), 4).unwrap(), br#"{"seq":4,"deleted":true}"#);
        assert_eq!(quote(Some(br#"{"type":"edit","of":1}"#), 4), Err(Refused::Missing));
        assert_eq!(quote(None, 4), Err(Refused::Missing));
    }

    #[test]
    fn a_deleted_originals_quote_is_rewritten_and_nothing_else() {
        let reply = br#"{"type":"msg","seq":9,"uid":"u","reply":{"seq":4,"uid":"u-a","user":"a}\"","quote":"x},\"y\"}"},"mentions":["u-a"],"text":"ok"}"#;
        assert_eq!(quoted(reply), Some(4));
        let gone = unquote(reply, 4).unwrap();
        assert_eq!(
            &gone[..],
            br#"{"type":"msg","seq":9,"uid":"u","reply":{"seq":4,"deleted":true},"mentions":["u-a"],"text":"ok"}"#
        );
        assert_eq!(unquote(&gone, 4), None, "once");
        assert_eq!(unquote(reply, 3), None, "another original's");
        assert_eq!(quoted(br#"{"type":"msg","seq":9,"text":",\"reply\":{\"seq\":4"}"#), None);
    }

    #[test]
    fn the_reply_goes_before_the_text_and_a_placeholder_is_filled() {
        let msg = br#"{"type":"msg","seq":5,"uid":"u","text":"a,\"text\":b"}"#;
        let with = with_reply(msg, &placeholder(4));
        assert_eq!(&with[..], br#"{"type":"msg","seq":5,"uid":"u","reply":{"seq":4},"text":"a,\"text\":b"}"#);
        let filled = fill(&with, 4, br#"{"seq":4,"deleted":true}"#).unwrap();
        assert_eq!(
            &filled[..],
            br#"{"type":"msg","seq":5,"uid":"u","reply":{"seq":4,"deleted":true},"text":"a,\"text\":b"}"#
        );
        assert_eq!(fill(msg, 4, b"{}"), None);
    }
}

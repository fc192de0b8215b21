//! Reading the reader's `XREAD` replies into [`Listed`] entries, and the [`Entry`] a
//! stored message is read back as.
//!
//! Pure functions over `redis::Value`, no I/O. An entry that natter did not write
//! (an id other than `S-0`) is skipped with a warning, never fatal: one foreign entry
//! must not stop a room's delivery.

use bytes::Bytes;
use redis::Value;

use super::RedisStoreError;

/// One stored message: its seq and its `msg` JSON, exactly as sent live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub json: Bytes,
}

/// A stream entry as `XREAD` lists it: its seq, and its body when the entry holds it
/// (written by a natter from before bodies moved to the room's `msgs` hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub seq: u64,
    pub inline: Option<Bytes>,
    /// The epoch this entry starts (field `e`), on the first entry of each epoch.
    pub epoch: Option<String>,
}

/// The entries of an `XRANGE`/`XREVRANGE` reply (or one stream of `XREAD`'s), in
/// reply order.
fn entries(reply: Value) -> Result<Vec<Listed>, RedisStoreError> {
    match reply {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => Ok(items.into_iter().filter_map(entry).collect()),
        other => Err(unexpected("a stream range", &other)),
    }
}

/// The streams of an `XREAD` reply as (key, entries); nil (the block timed out) is
/// empty.
pub(crate) fn streams(reply: Value) -> Result<Vec<(String, Vec<Listed>)>, RedisStoreError> {
    streams_of(reply, entries)
}

/// An entry of the news stream: its id (where the reader reads on from) and the room
/// and seq it announces (`None` when natter did not write it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct News {
    pub id: String,
    pub room_seq: Option<(String, u64)>,
}

/// The entries of an `XREAD` reply of the news stream alone, in order; nil is empty.
pub(crate) fn news(reply: Value) -> Result<Vec<News>, RedisStoreError> {
    let list = |v| match v {
        Value::Array(items) => Ok(items.into_iter().filter_map(news_entry).collect()),
        other => Err(unexpected("a stream range", &other)),
    };
    Ok(streams_of(reply, list)?.into_iter().flat_map(|(_, news)| news).collect())
}

/// `[id, ["r", room, "s", seq]]` → the news it holds.
fn news_entry(item: Value) -> Option<News> {
    let Value::Array(parts) = item else { return None };
    let mut parts = parts.into_iter();
    let (id, fields) = (text(&parts.next()?)?, parts.next()?);
    let room = field(fields.clone(), b"r").and_then(|r| String::from_utf8(r.to_vec()).ok());
    let seq = field(fields, b"s").and_then(|s| std::str::from_utf8(&s).ok()?.parse().ok());
    Some(News { id, room_seq: room.zip(seq) })
}

/// An `XREAD` reply's streams, each list read by `list`. RESP2 answers with an array
/// of pairs, RESP3 with a map.
fn streams_of<T>(
    reply: Value,
    list: impl Fn(Value) -> Result<Vec<T>, RedisStoreError>,
) -> Result<Vec<(String, Vec<T>)>, RedisStoreError> {
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs,
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Array(kv) if kv.len() == 2 => {
                    let mut kv = kv.into_iter();
                    Ok((kv.next().unwrap_or_default(), kv.next().unwrap_or_default()))
                }
                other => Err(unexpected("an XREAD stream", &other)),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(unexpected("an XREAD reply", &other)),
    };
    pairs
        .into_iter()
        .map(|(key, items)| Ok((text(&key).ok_or_else(|| unexpected("a key", &key))?, list(items)?)))
        .collect()
}

/// `[id, [field, value, ...]]` → the entry, if natter wrote it.
fn entry(item: Value) -> Option<Listed> {
    let Value::Array(parts) = item else {
        log::warn!("skipping a stream entry that is not an array: {item:?}");
        return None;
    };
    let mut parts = parts.into_iter();
    let (id, fields) = (parts.next()?, parts.next()?);
    let Some(seq) = text(&id).as_deref().and_then(seq_of) else {
        log::warn!("skipping stream entry {id:?}: natter writes ids `seq-0`");
        return None;
    };
    let epoch = field(fields.clone(), b"e").and_then(|e| String::from_utf8(e.to_vec()).ok());
    Some(Listed { seq, inline: field(fields, b"m"), epoch })
}

/// The value of `name` in a flat `[field, value, ...]` list (or a RESP3 map).
fn field(fields: Value, name: &[u8]) -> Option<Bytes> {
    let pairs: Vec<(Value, Value)> = match fields {
        Value::Map(pairs) => pairs,
        Value::Array(flat) => {
            let mut it = flat.into_iter();
            std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
        }
        _ => return None,
    };
    pairs.into_iter().find_map(|(k, v)| match (k, v) {
        (Value::BulkString(k), Value::BulkString(v)) if k == name => Some(Bytes::from(v)),
        _ => None,
    })
}

/// `"42-0"` → 42.
pub(crate) fn seq_of(id: &str) -> Option<u64> {
    let (ms, n) = id.split_once('-')?;
    if n != "0" {
        return None;
    }
    ms.parse().ok()
}

/// A bulk or simple string as UTF-8 text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn unexpected(what: &str, got: &Value) -> RedisStoreError {
    RedisStoreError::Reply(format!("expected {what}, got {got:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn raw_entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![bulk(id), Value::Array(fields.iter().map(|f| bulk(f)).collect())])
    }

    #[test]
    fn entries_keep_reply_order_skip_what_natter_did_not_write_and_keep_inline_bodies() {
        let reply = Value::Array(vec![
            raw_entry("3-0", &["b", "1"]),
            raw_entry("4-1", &["m", "x"]),
            raw_entry("6-0", &["x", "y", "m", "{\"seq\":6}"]),
            raw_entry("7-0", &["b", "1", "e", "5f3a"]),
        ]);
        let got = entries(reply).unwrap();
        assert_eq!(got.iter().map(|e| e.epoch.as_deref()).collect::<Vec<_>>(), [None, None, Some("5f3a")]);
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 6, 7]);
        assert_eq!((got[0].inline.as_deref(), got[1].inline.as_deref()), (None, Some(&b"{\"seq\":6}"[..])));
    }

    #[test]
    fn xread_replies_name_their_streams_and_nil_is_empty() {
        assert!(streams(Value::Nil).unwrap().is_empty());
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("p:room:a:stream"),
            Value::Array(vec![raw_entry("1-0", &["b", "1"])]),
        ])]);
        let got = streams(reply).unwrap();
        assert_eq!(got[0].0, "p:room:a:stream");
        assert_eq!(got[0].1[0].seq, 1);
        assert!(streams(Value::Int(3)).is_err());
    }

    #[test]
    fn news_entries_name_room_and_seq_and_keep_their_ids() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("p:news"),
            Value::Array(vec![
                raw_entry("17-0", &["r", "lobby", "s", "5"]),
                raw_entry("17-1", &["x", "y"]),
                raw_entry("18-0", &["s", "6", "r", "b"]),
            ]),
        ])]);
        let got = news(reply).unwrap();
        let ids: Vec<&str> = got.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["17-0", "17-1", "18-0"]);
        assert_eq!(got[0].room_seq, Some(("lobby".into(), 5)));
        assert_eq!(got[1].room_seq, None);
        assert_eq!(got[2].room_seq, Some(("b".into(), 6)));
        assert!(news(Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn only_seq_dash_zero_ids_are_seqs() {
        assert_eq!(seq_of("42-0"), Some(42));
        assert_eq!(seq_of("42-1"), None);
        assert_eq!(seq_of("x-0"), None);
        assert_eq!(seq_of("42"), None);
    }
}

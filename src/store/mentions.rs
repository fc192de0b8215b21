//! Unread mentions: which stored messages mention whom, as both stores keep it, so a
//! joining user learns how many messages above their read marker mention them
//! (`mentions_unread` on `joined` and `read`).
//!
//! Bounded: per user and room only the newest [`MAX_UNREAD`] mentions above the marker
//! are counted, so a count of `MAX_UNREAD` means that many or more. Keeping the newest
//! ones is what makes the count stay exact below the bound as the marker moves: when
//! any kept mention is at or below the new marker, so is every older one that was
//! dropped. Never decides who may be mentioned: the dispatcher checks that first.

use serde::Deserialize;

/// Most unread mentions counted per user and room (a count this large means "this many
/// or more").
pub const MAX_UNREAD: usize = 100;

/// The users a stored `msg` JSON mentions, without its author (a mention of oneself is
/// never unread); empty for anything else. Cheap for a message without mentions: the
/// JSON is parsed only when it has the field (before its `text`, where no string can
/// hold the bytes unescaped).
pub fn mentioned(json: &[u8]) -> Vec<String> {
    #[derive(Deserialize)]
    struct Msg {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        uid: String,
        #[serde(default)]
        mentions: Vec<String>,
        #[serde(default)]
        deleted: bool,
    }
    const FIELD: &[u8] = br#","mentions":["#;
    if !json.windows(FIELD.len()).any(|w| w == FIELD) {
        return Vec::new();
    }
    match serde_json::from_slice::<Msg>(json) {
        Ok(m) if m.kind == "msg" && !m.deleted => m.mentions.into_iter().filter(|u| *u != m.uid).collect(),
        _ => Vec::new(),
    }
}

/// The newest unread mentions of one user in one room, oldest first, at most
/// [`MAX_UNREAD`] of them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unread(std::collections::VecDeque<u64>);

impl Unread {
    /// From stored seqs (any order), keeping the newest [`MAX_UNREAD`] above `read`.
    pub fn from_seqs(seqs: impl IntoIterator<Item = u64>, read: u64) -> Unread {
        let mut all: Vec<u64> = seqs.into_iter().filter(|s| *s > read).collect();
        all.sort_unstable();
        all.dedup();
        let skip = all.len().saturating_sub(MAX_UNREAD);
        Unread(all.into_iter().skip(skip).collect())
    }

    /// A new mention (seqs only grow: a new one is the newest).
    pub fn push(&mut self, seq: u64) {
        self.0.push_back(seq);
        if self.0.len() > MAX_UNREAD {
            self.0.pop_front();
        }
    }

    /// The marker moved to `read`: mentions at or below it are read.
    pub fn read_to(&mut self, read: u64) {
        while self.0.front().is_some_and(|s| *s <= read) {
            self.0.pop_front();
        }
    }

    /// Message `seq` was deleted (or its post taken back): it no longer counts.
    pub fn remove(&mut self, seq: u64) {
        self.0.retain(|s| *s != seq);
    }

    pub fn count(&self) -> u32 {
        self.0.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Redis mode's list of unread mention seqs ("3 7 9", as the scripts keep it) as
/// numbers.
pub fn parse_seqs(list: &str) -> Vec<u64> {
    list.split_ascii_whitespace().filter_map(|s| s.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_read_from_the_json_without_the_author() {
        let json = br#"{"type":"msg","seq":3,"uid":"u-a","mentions":["u-b","u-a","u-c"],"text":"hi"}"#;
        assert_eq!(mentioned(json), ["u-b", "u-c"]);
        assert!(mentioned(br#"{"type":"msg","uid":"u-a","text":",\"mentions\":[\"u-b\"]"}"#).is_empty());
        assert!(mentioned(br#"{"type":"msg","uid":"u-a","mentions":["u-b"],"deleted":true}"#).is_empty());
    }

    #[test]
    fn the_newest_are_kept_so_the_count_stays_exact_below_the_bound() {
        let mut u = Unread::from_seqs((1..=250).rev(), 20);
        assert_eq!(u.count() as usize, MAX_UNREAD, "capped");
        u.read_to(200);
        assert_eq!(u.count(), 50, "exact again once under the bound");
        u.push(300);
        u.remove(210);
        assert_eq!(u.count(), 50, "one more, one deleted");
        u.read_to(300);
        assert!(u.is_empty());
    }
}

//! Coming back after the server went away (`restart`): what one counted client
//! remembers of its room (the last seq it saw and that seq's epoch), when it may try
//! to connect again (natter-client.js's backoff: full jitter, the window doubling),
//! the join that resumes (`since` + `epoch`), and reading natter's frames for the
//! seq, the epoch, the acks and a resume's history pages.
//!
//! Only natter speaks `since`/`epoch`/`history`: the scenario that turns this on
//! runs against natter alone. A client keeps its slot, its ledger and its TLS
//! session store while it is away, so the same user comes back.

use crate::probe::{parse_text, Probe};
use crate::tls;
use serde::Deserialize;
use std::borrow::Cow;

/// natter-client.js's `Backoff` defaults: the first retry within 500 ms, the window
/// doubling per failed attempt, never more than 30 s.
const BASE_MS: u64 = 500;
const CAP_MS: u64 = 30_000;

/// One client's memory of its room across connections.
#[derive(Debug)]
pub struct Resume {
    /// The last seq seen in the client's room (0: none yet).
    pub seq: u64,
    /// The epoch `seq` belongs to (from `joined`).
    pub epoch: Option<Box<str>>,
    /// Process-clock time the server ended the connection, while away.
    pub away_since_ns: Option<u64>,
    /// Connects tried since the server went away.
    pub attempt: u32,
    /// The resume join went out; its history's last page has not come yet.
    pub awaiting_history: bool,
    /// This client's own TLS session store (`wss://`), so it resumes its session.
    pub tls: Option<tls::Client>,
}

impl Resume {
    pub fn new(tls: Option<tls::Client>) -> Resume {
        Resume { seq: 0, epoch: None, away_since_ns: None, attempt: 0, awaiting_history: false, tls }
    }

    /// Delay before the next connect, ns: uniform in [0, min(cap, base·2^attempt)].
    pub fn next_delay_ns(&mut self, random: u64) -> u64 {
        let ceiling_ms = CAP_MS.min(BASE_MS << self.attempt.min(16));
        self.attempt += 1;
        (random % (ceiling_ms * 1_000_000 + 1)).max(1)
    }

    /// The join that resumes: the room, `since` and (when known) `epoch`.
    pub fn join(&self, room: &str) -> String {
        match &self.epoch {
            Some(e) => format!(r#"{{"type":"join","room":"{room}","since":{},"epoch":"{e}"}}"#, self.seq),
            None => format!(r#"{{"type":"join","room":"{room}","since":{}}}"#, self.seq),
        }
    }
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    seq: Option<u64>,
    #[serde(borrow)]
    epoch: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    more: bool,
    #[serde(default)]
    reset: bool,
    #[serde(borrow, default)]
    messages: Vec<RawMsg<'a>>,
}

#[derive(Deserialize)]
struct RawMsg<'a> {
    seq: Option<u64>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

/// What a natter frame means to a resuming client.
#[derive(Debug, PartialEq)]
pub enum Natter {
    /// A live message, with its seq.
    Msg {
        seq: u64,
    },
    /// Our post is stored: the (stream, n) of its id.
    Ack {
        stream: u32,
        n: u32,
    },
    Joined {
        epoch: Option<String>,
    },
    /// One page of history: each message's seq and probe.
    History {
        messages: Vec<(u64, Option<Probe>)>,
        more: bool,
        reset: bool,
    },
    Other,
}

/// Read one text frame.
pub fn read(frame: &[u8]) -> Natter {
    let Ok(raw) = serde_json::from_slice::<Raw>(frame) else {
        return Natter::Other;
    };
    match raw.kind.as_deref() {
        Some("msg") => raw.seq.map_or(Natter::Other, |seq| Natter::Msg { seq }),
        Some("ack") => {
            raw.id.as_deref().and_then(probe_of_id).map_or(Natter::Other, |(stream, n)| Natter::Ack { stream, n })
        }
        Some("joined") => Natter::Joined { epoch: raw.epoch.map(Cow::into_owned) },
        Some("history") => Natter::History {
            messages: raw
                .messages
                .iter()
                .filter_map(|m| Some((m.seq?, m.text.as_deref().and_then(parse_text))))
                .collect(),
            more: raw.more,
            reset: raw.reset,
        },
        _ => Natter::Other,
    }
}

/// The (stream, n) of a probe's id `RUN-EPOCH-STREAM-N` ([`crate::probe::Template`]).
fn probe_of_id(id: &str) -> Option<(u32, u32)> {
    let mut parts = id.rsplit('-');
    let n = parts.next()?.parse().ok()?;
    let stream = parts.next()?.parse().ok()?;
    Some((stream, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_a_resume_needs() {
        assert_eq!(read(br#"{"type":"msg","room":"r","seq":7,"text":"lt 1 2 3"}"#), Natter::Msg { seq: 7 });
        assert_eq!(
            read(br#"{"type":"ack","id":"ab12-0-4-9","room":"r","seq":8,"dup":false}"#),
            Natter::Ack { stream: 4, n: 9 }
        );
        assert_eq!(
            read(br#"{"type":"joined","room":"r","head":3,"epoch":"e1"}"#),
            Natter::Joined { epoch: Some("e1".into()) }
        );
        let page = read(br#"{"type":"history","room":"r","messages":[{"type":"msg","seq":4,"text":"lt 1 2 3"},{"type":"msg","seq":5,"text":"hi"}],"complete":true,"more":true}"#);
        assert_eq!(
            page,
            Natter::History {
                messages: vec![(4, Some(Probe { stream: 1, n: 2, send_ns: 3 })), (5, None)],
                more: true,
                reset: false
            }
        );
        assert_eq!(read(b"not json"), Natter::Other);
    }

    #[test]
    fn backoff_widens_and_stays_under_the_cap() {
        let mut r = Resume::new(None);
        let first = r.next_delay_ns(u64::MAX);
        assert!(first <= BASE_MS * 1_000_000);
        for _ in 0..40 {
            assert!(r.next_delay_ns(u64::MAX - 1) <= CAP_MS * 1_000_000);
        }
    }

    #[test]
    fn resume_join_carries_since_and_epoch() {
        let mut r = Resume::new(None);
        assert_eq!(r.join("lobby0"), r#"{"type":"join","room":"lobby0","since":0}"#);
        (r.seq, r.epoch) = (42, Some("e9".into()));
        assert_eq!(r.join("lobby0"), r#"{"type":"join","room":"lobby0","since":42,"epoch":"e9"}"#);
    }
}

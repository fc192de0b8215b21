//! natter-seed: fills one room of a natter data dir with N messages through natter's
//! own store writer (`SqliteStore`: append, commit in batches of `--batch`, close) and
//! the server's own `msg` JSON, so the scroll-back load test pages through the history
//! a server that had taken N posts would hold — rows, index and FTS entries alike —
//! without N round trips through a server.
//!
//! The room must not exist yet. Messages are `seq` 1..=N, one every 100 ms ending
//! now, from 100 users, about 80 bytes of text each, every text naming its seq.
//! Never starts a server and never touches another room.

use bytes::Bytes;
use clap::Parser;
use natter::config::FsyncPolicy;
use natter::protocol::ServerMsg;
use natter::store::new_epoch;
use natter::store::sqlite::SqliteStore;
use natter::store::NewMessage;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Fill one room of a natter data dir through natter's store writer.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The data dir (natter's `--data-dir`); created if missing.
    #[arg(long)]
    data_dir: PathBuf,
    /// The room to fill; it must have no messages yet.
    #[arg(long, default_value = "archive")]
    room: String,
    /// Messages to write.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Messages per transaction (one commit, as one dispatcher batch).
    #[arg(long, default_value_t = 1000)]
    batch: u64,
}

/// Words the texts are made of, so the search index holds a vocabulary, not one word.
const WORDS: [&str; 16] = [
    "deploy", "coffee", "review", "backlog", "merge", "lunch", "latency", "release", "incident", "standup", "rollback",
    "budget", "design", "cache", "ticket", "weekend",
];
const USERS: u64 = 100;
/// Milliseconds between two seeded messages.
const SPACING_MS: u64 = 100;

fn main() -> ExitCode {
    let args = Args::parse();
    match seed(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natter-seed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn seed(args: &Args) -> Result<(), String> {
    let started = Instant::now();
    let mut store = SqliteStore::open(&args.data_dir, FsyncPolicy::Never).map_err(|e| e.to_string())?;
    if let Some(r) = store.load_room(&args.room, 1).map_err(|e| e.to_string())? {
        return Err(format!("room {} already has {} messages in {}", args.room, r.head, args.data_dir.display()));
    }
    let epoch = new_epoch();
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let first_ts = now_ms.saturating_sub(args.messages * SPACING_MS);
    for seq in 1..=args.messages {
        store.append(message(&args.room, &epoch, seq, first_ts + seq * SPACING_MS));
        if seq % args.batch.max(1) == 0 || seq == args.messages {
            store.commit().map_err(|e| e.to_string())?;
        }
    }
    store.close().map_err(|e| e.to_string())?;
    eprintln!(
        "natter-seed: {} messages in room {} of {} in {:.1} s",
        args.messages,
        args.room,
        args.data_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Message `seq` as the server would have stored it.
fn message(room: &str, epoch: &str, seq: u64, ts: u64) -> NewMessage {
    let user = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) % USERS;
    let (name, uid) = (format!("seed{user}"), format!("u-seed{user}"));
    let word = |k: u64| WORDS[((seq >> (4 * k)) ^ k) as usize % WORDS.len()];
    let text = format!("message {seq} of the archive: {} {} {} and then some more words", word(0), word(1), word(2));
    let id = format!("seed-{seq}");
    let json =
        ServerMsg::Msg { room, seq, id: Some(&id), ts, user: &name, uid: &uid, text: &text, files: &[] }.to_json();
    NewMessage { room: room.to_owned(), epoch: epoch.to_owned(), seq, ts, text, json: Bytes::from(json) }
}

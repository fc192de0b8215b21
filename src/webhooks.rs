//! Webhooks: natter POSTs what happens in rooms (messages, edits, deletions, joins,
//! leaves, new rooms)
//! to the receivers given with `--webhook`, signed with `--webhook-secret-file`.
//!
//! Owns one queue and one sender thread per receiver. The dispatcher calls
//! [`Webhooks::stage`] while handling a batch and [`Webhooks::release`] once the batch
//! is committed (a receiver never hears of a message the store does not hold);
//! release appends to each queue under a short lock and never waits: a slow or dead receiver can delay its own queue, never the dispatcher or a
//! client. Each queue is bounded; past the bound the oldest events are dropped,
//! counted and logged. A receiver gets events in the order they were emitted (so in
//! seq order per room), several per POST when they have piled up, and a failed POST
//! is retried with exponential backoff until its oldest event is older than the
//! retry window, after which the events that aged out are dropped and counted.
//!
//! Wire format (docs/API.md): `POST` with body `{"events":[{id, type, ts, room, ...}]}`
//! and headers `X-Natter-Timestamp: <unix seconds>` and `X-Natter-Signature:
//! v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

/// Most events in one POST: enough that a receiver answering in 50 ms still takes
/// thousands per second, small enough that one body stays well under a megabyte.
const MAX_BATCH: usize = 500;
/// How long one POST may take before it counts as failed.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest pause between retries of a failed POST.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(30));

/// Why the webhook settings are refused at start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("--webhook {0:?}: only http:// and https:// URLs are accepted")]
    Scheme(String),
    #[error("--webhook needs --webhook-secret-file (receivers must be able to check the signature)")]
    NoSecret,
    #[error("the webhook secret file: {0}")]
    SecretFile(#[from] crate::secret_file::SecretFileError),
    #[error("the webhook secret file is empty")]
    EmptySecret,
    #[error("starting a webhook thread: {0}")]
    Thread(std::io::Error),
}

/// The settings `--webhook*` flags give.
#[derive(Clone, Default)]
pub struct WebhookConfig {
    pub urls: Vec<String>,
    pub secret: Vec<u8>,
    /// How long a failing receiver's events are retried before they are dropped.
    pub retry: Duration,
    /// Events queued per receiver before the oldest are dropped.
    pub queue: usize,
}

impl std::fmt::Debug for WebhookConfig {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("urls", &self.urls)
            .field("retry", &self.retry)
            .field("queue", &self.queue)
            .finish()
    }
}

impl WebhookConfig {
    /// Checks the URLs (refused at start, not at the first event) and reads the secret.
    pub fn new(
        urls: Vec<String>,
        secret_file: Option<&std::path::Path>,
        retry: Duration,
        queue: usize,
    ) -> Result<WebhookConfig, WebhookError> {
        if let Some(bad) = urls.iter().find(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
            return Err(WebhookError::Scheme(bad.clone()));
        }
        let secret = match secret_file {
            None if urls.is_empty() => Vec::new(),
            None => return Err(WebhookError::NoSecret),
            Some(path) => crate::secret_file::read(path)?,
        };
        let secret = secret.trim_ascii().to_vec();
        if secret.is_empty() && !urls.is_empty() {
            return Err(WebhookError::EmptySecret);
        }
        Ok(WebhookConfig { urls, secret, retry, queue: queue.max(1) })
    }
}

/// Counters for `/metrics`, shared by every receiver's thread.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub delivered: AtomicU64,
    pub failed_posts: AtomicU64,
    pub dropped: AtomicU64,
    pub queued: AtomicU64,
}

/// What happened, as a receiver sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum Event<'a> {
    #[serde(rename = "message")]
    Message { room: &'a str, seq: u64, user: &'a str, uid: &'a str, text: &'a str },
    /// Message `of` was edited; `seq` is the edit event's own.
    #[serde(rename = "edit")]
    Edit { room: &'a str, seq: u64, of: u64, user: &'a str, uid: &'a str, text: &'a str },
    /// Message `of` was deleted: a receiver that kept its text should drop it.
    #[serde(rename = "delete")]
    Delete { room: &'a str, seq: u64, of: u64, user: &'a str, uid: &'a str },
    /// Message `seq` by `uid` mentions `users` (a backend may send them a push).
    #[serde(rename = "mention")]
    Mention { room: &'a str, seq: u64, user: &'a str, uid: &'a str, text: &'a str, users: &'a [String] },
    /// `uid`'s reaction `emoji` to message `of` is now on (`on`) or off.
    #[serde(rename = "react")]
    React { room: &'a str, seq: u64, of: u64, user: &'a str, uid: &'a str, emoji: &'a str, on: bool },
    #[serde(rename = "join")]
    Join { room: &'a str, uid: &'a str, user: &'a str },
    #[serde(rename = "leave")]
    Leave { room: &'a str, uid: &'a str, user: &'a str },
    #[serde(rename = "room.created")]
    RoomCreated { room: &'a str },
    /// User `uid` was erased (`DELETE /api/v1/users/{id}`, `messages` `remove` or
    /// `keep`): drop what you hold about them.
    #[serde(rename = "user.erased")]
    UserErased { uid: &'a str, messages: &'a str },
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    ts: u64,
    #[serde(flatten)]
    event: &'a Event<'a>,
}

/// One encoded event waiting in a queue.
struct Queued {
    /// Position in the queue's stream: what a sender has delivered is told apart from
    /// what was dropped meanwhile by this, not by counting.
    n: u64,
    json: Arc<[u8]>,
    at: Instant,
}

#[derive(Default)]
struct Pending {
    events: VecDeque<Queued>,
    next: u64,
}

#[derive(Default)]
struct Queue {
    pending: Mutex<Pending>,
    ready: Condvar,
}

/// The dispatcher's handle. Without receivers it does nothing at all.
pub struct Webhooks {
    queues: Vec<Arc<Queue>>,
    cap: usize,
    stats: Arc<WebhookStats>,
    next_id: u64,
    /// Unique per process start, so event ids never repeat across restarts.
    run_id: String,
    /// Set when the queue first overflows, cleared when it drains: one log line per episode.
    overflowing: bool,
    /// Events of the batch being handled, encoded once, queued at [`Webhooks::release`].
    staged: Vec<Arc<[u8]>>,
}

impl Webhooks {
    /// Starts one sender thread per receiver.
    pub fn start(cfg: WebhookConfig, stats: Arc<WebhookStats>) -> Result<Webhooks, WebhookError> {
        let mut queues = Vec::new();
        for url in cfg.urls.iter().cloned() {
            let queue = Arc::new(Queue::default());
            let sender = Sender {
                url,
                queue: queue.clone(),
                secret: cfg.secret.clone(),
                retry: cfg.retry,
                stats: stats.clone(),
            };
            thread::Builder::new().name("webhook".into()).spawn(move || sender.run()).map_err(WebhookError::Thread)?;
            queues.push(queue);
        }
        let run_id = format!("{:08x}", rand::random::<u32>());
        Ok(Webhooks { queues, cap: cfg.queue, stats, next_id: 0, run_id, overflowing: false, staged: Vec::new() })
    }

    /// No receivers: every call is a no-op.
    pub fn none() -> Webhooks {
        Webhooks {
            queues: Vec::new(),
            cap: 1,
            stats: Arc::default(),
            next_id: 0,
            run_id: String::new(),
            overflowing: false,
            staged: Vec::new(),
        }
    }

    /// Whether any receiver is configured (callers skip building events otherwise).
    pub fn enabled(&self) -> bool {
        !self.queues.is_empty()
    }

    /// Encodes one event of the batch being handled.
    pub fn stage(&mut self, event: &Event<'_>) {
        if self.queues.is_empty() {
            return;
        }
        self.next_id += 1;
        let id = format!("{}-{}", self.run_id, self.next_id);
        let json = serde_json::to_vec(&Envelope { id: &id, ts: unix_ms(), event }).expect("events serialize");
        self.staged.push(json.into());
    }

    /// The batch did not commit: its events never happened.
    pub fn discard(&mut self) {
        self.staged.clear();
    }

    /// The batch committed: queues its events for every receiver. Never blocks on one.
    pub fn release(&mut self) {
        for json in std::mem::take(&mut self.staged) {
            self.enqueue(json);
        }
    }

    fn enqueue(&mut self, json: Arc<[u8]>) {
        let mut dropped = 0;
        for q in &self.queues {
            let mut p = q.pending.lock().unwrap_or_else(PoisonError::into_inner);
            while p.events.len() >= self.cap {
                p.events.pop_front();
                dropped += 1;
            }
            let n = p.next;
            p.next += 1;
            p.events.push_back(Queued { n, json: json.clone(), at: Instant::now() });
            q.ready.notify_one();
        }
        self.stats.queued.fetch_add(self.queues.len() as u64, Relaxed);
        if dropped > 0 {
            self.stats.dropped.fetch_add(dropped, Relaxed);
            self.stats.queued.fetch_sub(dropped, Relaxed);
            if !self.overflowing {
                log::warn!("webhooks: queue full ({} events): dropping the oldest events", self.cap);
            }
        }
        self.overflowing = dropped > 0;
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `v1=` + hex HMAC-SHA256 of `"{timestamp}.{body}"`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// One receiver's thread.
struct Sender {
    url: String,
    queue: Arc<Queue>,
    secret: Vec<u8>,
    retry: Duration,
    stats: Arc<WebhookStats>,
}

impl Sender {
    fn run(self) {
        // Redirects are never followed: a 3xx would turn into a bodiless GET, carrying
        // the signature, to wherever the receiver points; it is a failure like a 5xx.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(POST_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let mut pause = BACKOFF.0;
        loop {
            let (last, batch) = self.next_batch();
            let body = batch_body(&batch);
            match self.post(&agent, &body) {
                Ok(()) => {
                    self.remove_through(last);
                    self.stats.delivered.fetch_add(batch.len() as u64, Relaxed);
                    pause = BACKOFF.0;
                }
                Err(why) => {
                    self.stats.failed_posts.fetch_add(1, Relaxed);
                    log::info!("webhook {}: {why}; retrying in {pause:?}", self.url);
                    thread::sleep(pause);
                    pause = (pause * 2).min(BACKOFF.1);
                    self.drop_expired();
                }
            }
        }
    }

    /// Waits for events and copies out up to [`MAX_BATCH`] from the front (they stay
    /// queued until delivered, so a drop-oldest during the POST is seen).
    /// Returns the position of the last event in the batch, and the batch.
    fn next_batch(&self) -> (u64, Vec<Arc<[u8]>>) {
        let mut p = self.queue.pending.lock().unwrap_or_else(PoisonError::into_inner);
        while p.events.is_empty() {
            p = self.queue.ready.wait(p).unwrap_or_else(PoisonError::into_inner);
        }
        let batch: Vec<&Queued> = p.events.iter().take(MAX_BATCH).collect();
        let last = batch.last().map_or(0, |q| q.n);
        (last, batch.into_iter().map(|q| q.json.clone()).collect())
    }

    /// Removes the delivered events: those up to position `last` still queued (the
    /// emitter may have dropped some of them as the oldest meanwhile).
    fn remove_through(&self, last: u64) {
        let mut p = self.queue.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let before = p.events.len();
        while p.events.front().is_some_and(|q| q.n <= last) {
            p.events.pop_front();
        }
        self.stats.queued.fetch_sub((before - p.events.len()) as u64, Relaxed);
    }

    fn drop_expired(&self) {
        let mut p = self.queue.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let before = p.events.len();
        while p.events.front().is_some_and(|q| q.at.elapsed() > self.retry) {
            p.events.pop_front();
        }
        let dropped = (before - p.events.len()) as u64;
        if dropped > 0 {
            self.stats.dropped.fetch_add(dropped, Relaxed);
            self.stats.queued.fetch_sub(dropped, Relaxed);
            log::warn!("webhook {}: dropped {dropped} events undelivered for longer than {:?}", self.url, self.retry);
        }
    }

    fn post(&self, agent: &ureq::Agent, body: &[u8]) -> Result<(), String> {
        let ts = unix_ms() / 1000;
        let response = agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("X-Natter-Timestamp", ts.to_string())
            .header("X-Natter-Signature", signature(&self.secret, ts, body))
            .send(body)
            .map_err(|e| e.to_string())?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            status @ 300..=399 => Err(format!("answered {status}, a redirect (never followed)")),
            status => Err(format!("answered {status}")),
        }
    }
}

fn batch_body(batch: &[Arc<[u8]>]) -> Vec<u8> {
    let mut body = Vec::with_capacity(batch.iter().map(|e| e.len() + 1).sum::<usize>() + 16);
    body.extend_from_slice(b"{\"events\":[");
    for (i, e) in batch.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(e);
    }
    body.extend_from_slice(b"]}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let s = signature(b"secret", 1700000000, b"{\"events\":[]}");
        assert!(s.starts_with("v1=") && s.len() == 3 + 64);
        assert_ne!(s, signature(b"secret", 1700000001, b"{\"events\":[]}"));
        assert_ne!(s, signature(b"secret", 1700000000, b"{\"events\":[1]}"));
        assert_ne!(s, signature(b"other", 1700000000, b"{\"events\":[]}"));
        // RFC 4231 test case 2, through the same code path: key "Jefe".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn urls_that_are_not_http_are_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "k\n").unwrap();
        let cfg = |u: &str| WebhookConfig::new(vec![u.into()], Some(&secret), Duration::from_secs(60), 10);
        assert!(matches!(cfg("ftp://x/y"), Err(WebhookError::Scheme(_))));
        assert!(matches!(cfg("file:///etc/passwd"), Err(WebhookError::Scheme(_))));
        assert!(cfg("https://example.com/hook").is_ok());
        let none = WebhookConfig::new(vec!["http://x/".into()], None, Duration::from_secs(1), 1);
        assert!(matches!(none, Err(WebhookError::NoSecret)));
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let stats = Arc::new(WebhookStats::default());
        let queue = Arc::new(Queue::default());
        let mut hooks = Webhooks { queues: vec![queue.clone()], cap: 3, stats: stats.clone(), ..Webhooks::none() };
        for seq in 1..=5 {
            hooks.stage(&Event::Message { room: "r", seq, user: "a", uid: "u-a", text: "x" });
        }
        assert!(queue.pending.lock().unwrap().events.is_empty(), "nothing is queued before the commit");
        hooks.release();
        let left: Vec<u64> = queue
            .pending
            .lock()
            .unwrap()
            .events
            .iter()
            .map(|q| serde_json::from_slice::<serde_json::Value>(&q.json).unwrap()["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(left, [3, 4, 5]);
        assert_eq!(stats.dropped.load(Relaxed), 2);
        assert_eq!(stats.queued.load(Relaxed), 3);
    }

    #[test]
    fn a_batch_is_one_json_object_holding_the_events_in_order() {
        let batch: Vec<Arc<[u8]>> = vec![Arc::from(&b"{\"a\":1}"[..]), Arc::from(&b"{\"a\":2}"[..])];
        let v: serde_json::Value = serde_json::from_slice(&batch_body(&batch)).unwrap();
        assert_eq!(v["events"][1]["a"], 2);
    }
}

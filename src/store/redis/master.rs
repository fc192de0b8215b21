//! [`Master`]: where the Redis master is, for every thread that talks to Redis.
//!
//! `--redis redis://host:port/db` names the master itself. `--redis
//! redis+sentinel://h1:26379,h2:26379/name[/db]` names Sentinels and the master's
//! name: the master is asked of the Sentinels (`SENTINEL get-master-addr-by-name`, the
//! first that answers) and each new connection to it checks with `ROLE` that the node
//! really is a master, so a node Sentinel demoted is never written to. All clones of
//! one `Master` share that answer; the `redis-sentinel` thread asks again every
//! [`POLL`], and a caller whose call failed ([`Master::lost`]) makes the next
//! connection ask at once. Each move to another address bumps the generation, so a
//! thread drops a connection opened on the old master before its next call
//! ([`Master::current`]), even when that old master still answers (partitioned, or
//! not yet told it was demoted).
//!
//! Owns the Sentinel conversation and the master's address; never sends a command of
//! the store's, never sleeps except in its own poll thread. Reports the master in use
//! to [`RedisStatus`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::Duration;

use redis::{Client, Connection, ErrorKind, RedisError, RedisResult, Value};

use super::{RedisStoreError, StoreOptions};
use crate::metrics::RedisStatus;

/// How often the `redis-sentinel` thread asks where the master is: a failover is
/// noticed within this even by a natter whose old master still answers.
pub const POLL: Duration = Duration::from_millis(500);

/// The scheme of a Sentinel URL.
const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// Where the master is; cheap to clone (all clones share one answer).
#[derive(Clone)]
pub struct Master {
    inner: Arc<Inner>,
}

struct Inner {
    how: How,
    /// Bumped each time the master in use moves to another address.
    generation: AtomicU64,
    /// The master in use (`None`: ask the Sentinels before the next connection).
    current: Mutex<Option<Found>>,
    status: Arc<RedisStatus>,
}

enum How {
    /// `redis://`: the master is this node (generation stays 0).
    Direct(Client),
    /// `redis+sentinel://`: ask these Sentinels for the master called `name`.
    Sentinel { sentinels: Vec<Client>, name: String, db: i64 },
}

#[derive(Clone)]
struct Found {
    addr: String,
    client: Client,
    generation: u64,
}

impl Master {
    /// Parses `url` without connecting. A Sentinel URL also starts the
    /// `redis-sentinel` poll thread, which ends when the last clone is dropped.
    pub fn open(url: &str, status: Arc<RedisStatus>) -> Result<Master, RedisStoreError> {
        let how = match url.strip_prefix(SENTINEL_SCHEME) {
            None => How::Direct(
                Client::open(url).map_err(|e| RedisStoreError::BadInput(format!("redis URL {url:?}: {e}")))?,
            ),
            Some(rest) => parse_sentinel(rest).map_err(|why| {
                RedisStoreError::BadInput(format!(
                    "redis URL {url:?}: {why} (expected redis+sentinel://host:port[,host:port…]/master-name[/db])"
                ))
            })?,
        };
        let sentinel = matches!(how, How::Sentinel { .. });
        let inner = Arc::new(Inner { how, generation: AtomicU64::new(0), current: Mutex::new(None), status });
        if sentinel {
            let weak = Arc::downgrade(&inner);
            thread::Builder::new().name("redis-sentinel".into()).spawn(move || poll(weak))?;
        }
        Ok(Master { inner })
    }

    /// Where `/healthz` and `/metrics` read the master in use and the delivery beats.
    pub fn status(&self) -> &Arc<RedisStatus> {
        &self.inner.status
    }

    /// The generation of the master in use: a connection opened under another one
    /// must be dropped.
    pub fn current(&self) -> u64 {
        self.inner.generation.load(Relaxed)
    }

    /// Opens a connection to the master with the configured timeouts (`extra_read`
    /// added to the read timeout), and the generation it belongs to. Through Sentinel,
    /// the node must answer `ROLE` as a master, or the call fails as an outage.
    pub fn connect(&self, opts: &StoreOptions, extra_read: Duration) -> RedisResult<(Connection, u64)> {
        let found = match &self.inner.how {
            How::Direct(client) => {
                return Ok((timed(client.get_connection_with_timeout(opts.connect_timeout)?, opts, extra_read)?, 0))
            }
            How::Sentinel { .. } => self.inner.found(opts)?,
        };
        let mut con = timed(found.client.get_connection_with_timeout(opts.connect_timeout)?, opts, extra_read)?;
        match is_master(&mut con) {
            Ok(true) => Ok((con, found.generation)),
            Ok(false) => {
                self.lost(found.generation);
                Err(outage(format!("{} is not a master (ROLE)", found.addr)))
            }
            Err(e) => {
                self.lost(found.generation);
                Err(e)
            }
        }
    }

    /// A call on a connection of `generation` failed as an outage (or was refused as
    /// read-only): through Sentinel, ask where the master is before the next
    /// connection.
    pub fn lost(&self, generation: u64) {
        if let How::Sentinel { .. } = self.inner.how {
            let mut current = self.inner.lock();
            if current.as_ref().is_some_and(|f| f.generation == generation) {
                *current = None;
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Found>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The master in use, asking the Sentinels first when it is not known.
    fn found(&self, opts: &StoreOptions) -> RedisResult<Found> {
        if let Some(found) = self.lock().clone() {
            return Ok(found);
        }
        let addr = self.ask(opts)?;
        self.adopt(&addr)
    }

    /// Asks the Sentinels in turn where the master is; the first answer counts.
    fn ask(&self, opts: &StoreOptions) -> RedisResult<String> {
        let How::Sentinel { sentinels, name, .. } = &self.how else {
            return Err(outage("not a Sentinel URL".into()));
        };
        let mut last = outage("no Sentinel answered".into());
        for sentinel in sentinels {
            let asked = sentinel.get_connection_with_timeout(opts.connect_timeout).and_then(|con| {
                let mut con = timed(con, opts, Duration::ZERO)?;
                redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(name).query::<Option<(String, u16)>>(&mut con)
            });
            match asked {
                Ok(Some((host, port))) => return Ok(format!("{host}:{port}")),
                Ok(None) => last = outage(format!("the Sentinels know no master called {name:?}")),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Makes `addr` the master in use (a new generation when it moved) and returns it.
    fn adopt(&self, addr: &str) -> RedisResult<Found> {
        let How::Sentinel { db, .. } = &self.how else {
            return Err(outage("not a Sentinel URL".into()));
        };
        let mut current = self.lock();
        if let Some(found) = current.as_ref().filter(|f| f.addr == addr) {
            return Ok(found.clone());
        }
        let previous = self.status.master();
        let generation = if previous.as_deref() == Some(addr) {
            self.generation.load(Relaxed)
        } else {
            if let Some(old) = &previous {
                log::warn!("redis: the master moved from {old} to {addr}");
            }
            self.generation.fetch_add(1, Relaxed) + 1
        };
        let client = Client::open(format!("redis://{addr}/{db}"))?;
        let found = Found { addr: addr.to_owned(), client, generation };
        *current = Some(found.clone());
        self.status.set_master(addr);
        Ok(found)
    }
}

/// The `redis-sentinel` thread: every [`POLL`], asks where the master is and adopts
/// a new address at once, so every thread leaves the old master before its next
/// call. Ends when the last [`Master`] is dropped.
fn poll(inner: Weak<Inner>) {
    let opts = StoreOptions::default();
    loop {
        thread::sleep(POLL);
        let Some(inner) = inner.upgrade() else { return };
        if let Ok(addr) = inner.ask(&opts) {
            let _ = inner.adopt(&addr);
        }
    }
}

fn parse_sentinel(rest: &str) -> Result<How, String> {
    let (hosts, path) = rest.split_once('/').ok_or("no master name")?;
    let (name, db) = match path.split_once('/') {
        None => (path, 0),
        Some((name, db)) => (name, db.parse::<i64>().map_err(|_| format!("database {db:?} is not a number"))?),
    };
    if name.is_empty() {
        return Err("no master name".into());
    }
    let sentinels = hosts
        .split(',')
        .map(|h| {
            let (host, port) = h.rsplit_once(':').ok_or_else(|| format!("Sentinel {h:?} has no port"))?;
            let port: u16 = port.parse().map_err(|_| format!("Sentinel {h:?}: bad port"))?;
            if host.is_empty() {
                return Err(format!("Sentinel {h:?} has no host"));
            }
            Client::open(format!("redis://{host}:{port}/")).map_err(|e| format!("Sentinel {h:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(How::Sentinel { sentinels, name: name.to_owned(), db })
}

fn timed(con: Connection, opts: &StoreOptions, extra_read: Duration) -> RedisResult<Connection> {
    con.set_read_timeout(Some(opts.io_timeout + extra_read))?;
    con.set_write_timeout(Some(opts.io_timeout))?;
    Ok(con)
}

/// `ROLE`'s first element is `master`.
fn is_master(con: &mut Connection) -> RedisResult<bool> {
    let role: Value = redis::cmd("ROLE").query(con)?;
    Ok(match role {
        Value::Array(items) => {
            matches!(items.first(), Some(Value::BulkString(b)) if b == b"master")
                || matches!(items.first(), Some(Value::SimpleString(s)) if s == "master")
        }
        _ => false,
    })
}

/// An error that counts as an outage (the connection is dropped, the call answered
/// `unavailable`).
fn outage(why: String) -> RedisError {
    RedisError::from((ErrorKind::Io, "redis master", why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(url: &str) -> Result<Master, RedisStoreError> {
        Master::open(url, Arc::default())
    }

    #[test]
    fn sentinel_urls_name_sentinels_a_master_and_maybe_a_database() {
        let m = open("redis+sentinel://127.0.0.1:26379,10.0.0.2:26380/mymaster").unwrap();
        assert!(
            matches!(&m.inner.how, How::Sentinel { sentinels, name, db: 0 } if sentinels.len() == 2 && name == "mymaster")
        );
        let m = open("redis+sentinel://h:1/m/3").unwrap();
        assert!(matches!(&m.inner.how, How::Sentinel { db: 3, .. }));
        assert!(matches!(open("redis://127.0.0.1:6379/").unwrap().inner.how, How::Direct(_)));
    }

    #[test]
    fn bad_sentinel_urls_say_what_is_wrong() {
        for (url, why) in [
            ("redis+sentinel://h:1", "no master name"),
            ("redis+sentinel://h:1/", "no master name"),
            ("redis+sentinel://h/m", "has no port"),
            ("redis+sentinel://h:x/m", "bad port"),
            ("redis+sentinel://h:1/m/x", "is not a number"),
        ] {
            let e = open(url).err().expect(url).to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}

//! natter: a real-time chat server over WebSocket — synchronous, threaded, durable.
//!
//! The message path, top-down (docs/ARCHITECTURE.md has the module map):
//! - [`transport`]: an accept loop gives each WebSocket connection a small-stack
//!   thread that performs the handshake ([`auth`] for tokens), then reads frames,
//!   validates them ([`protocol`]) and sends [`dispatcher::Command`]s through a
//!   crossbeam channel; a one-thread guard per HTTP listener holds every HTTP
//!   connection and relays complete requests to tiny_http behind it, which serves the
//!   page, `/config.json` and `/healthz`, and `/metrics` ([`metrics`]) on the admin port.
//!   [`tls`] holds the certificate both listeners use with `--tls-cert`.
//! - [`dispatcher`]: one thread, the only owner of rooms, `seq`, history and the
//!   store's writes ([`dispatcher::Backend`]: the local SQLite [`store::sqlite`], or
//!   Redis through the `redis-io` thread, [`store::redis::io`]); reader threads of
//!   either store answer history reads ([`store::read`]). This file starts the store's
//!   threads with callbacks that turn their answers into [`dispatcher::Command`]s, so
//!   no store names a dispatcher type. It frames each message once
//!   ([`protocol::wire`]), commits, and only then hands the batch on.
//! - [`delivery`]: writer shards put committed batches on the wire without blocking,
//!   through each connection's bounded outbox.
//! - [`api`]: the server HTTP API, whose calls reach the dispatcher as commands like a
//!   client's messages; [`webhooks`]: the signed POSTs of committed room events to
//!   `--webhook` receivers, queued per receiver and never waited on.
//!
//! [`config::Config`] holds every limit; [`cli`] turns flags into it; [`limits`] reads
//! what the process can hold; [`heap`] hands freed memory back once a burst is over.
//! [`serve`] runs it all on listeners the caller bound, until a [`shutdown`] fires.
//! docs/ARCHITECTURE.md states the layering `scripts/check-layers.py` enforces.

pub mod access;
pub mod api;
pub mod auth;
pub mod bans;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod dispatcher;
pub mod hangup;
pub mod heap;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod ratelimit;
pub mod secret_file;
pub mod shutdown;
pub mod store;
pub mod tls;
pub mod transport;
pub mod webhooks;

use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use api::http::ApiHttp;
use api::keys::{ApiKeyError, ApiKeys};
use api::Api;
use config::Config;
use dispatcher::{Backend, Cluster, Command, Dispatcher, Local};
use metrics::Metrics;
use shutdown::Shutdown;
use store::files::{self, Files};
use store::redis::io::RedisIo;
use store::redis::{self as redis_store, RedisStoreError, StoreOptions};
use store::sqlite::reader;
use store::sqlite::{SqliteStore, SqliteStoreError};
use transport::context::ConnContext;
use transport::guard::{Guard, Handoff};
use transport::http::Site;
use transport::relay::{Relay, RELAYS};
use transport::server;
use transport::upstream::Upstream;
use webhooks::{WebhookError, Webhooks};

/// Bounded queue from connection threads to the dispatcher: when the dispatcher falls
/// behind, readers wait here instead of growing memory without bound.
const COMMAND_QUEUE: usize = 65_536;
/// Threads answering history reads and searches (beside `redis-io` in Redis mode).
const STORE_READERS: usize = 2;

/// The sockets natter listens on, bound by the caller (port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    /// The page, `/config.json`, `/healthz`.
    pub http: TcpListener,
    pub ws: TcpListener,
    /// `/metrics` and `/healthz`, meant for loopback or a private network.
    pub admin: Option<TcpListener>,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] SqliteStoreError),
    #[error("starting a thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("redis: {0}")]
    Redis(#[from] RedisStoreError),
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    #[error(transparent)]
    ApiKeys(#[from] ApiKeyError),
    #[error(transparent)]
    Files(#[from] store::files::FilesError),
}

/// One HTTP listener: its guard thread in front, the site's tiny_http behind it with
/// a thread (`<name>-tiny`) answering its requests, and the relays between them.
fn spawn_http(
    name: &str,
    guard: Guard,
    listener: TcpListener,
    shutdown: &Shutdown,
) -> std::io::Result<[thread::JoinHandle<()>; 2]> {
    let upstream = Upstream::start(guard.site)?;
    let relay = Relay::start(name, upstream.clone(), RELAYS)?;
    let (cfg, metrics, stop) = (guard.cfg.clone(), guard.metrics.clone(), shutdown.clone());
    let site =
        thread::Builder::new().name(format!("{name}-tiny")).spawn(move || upstream.run(&cfg, &metrics, &stop))?;
    let stop = shutdown.clone();
    let guard = thread::Builder::new().name(name.into()).spawn(move || guard.run(listener, &relay, &stop))?;
    Ok([guard, site])
}

/// This instance's name in the admin console's user list: host and WebSocket port.
fn instance_label(cfg: &Config) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), cfg.ws_port)
}

/// Runs the server until `shutdown` fires; then every client gets close 1001, the
/// store is committed and checkpointed, and this returns. `ready` runs once the
/// store is open and every thread has started: only then is natter serving (a store
/// that cannot open returns an error before it).
pub fn serve(cfg: Config, listeners: Listeners, shutdown: Shutdown, ready: impl FnOnce()) -> Result<(), ServeError> {
    let cfg = Arc::new(cfg);
    let metrics = Arc::new(Metrics::default());
    let (commands_tx, commands_rx) = crossbeam_channel::bounded(COMMAND_QUEUE);
    // With --redis: the Redis a user's export and erasure read, shared by every instance.
    let mut user_data_redis = None;
    let dispatcher = match &cfg.redis {
        None => {
            let store = SqliteStore::open(&cfg.data_dir, cfg.fsync)?;
            let tx = commands_tx.clone();
            let readers = reader::start(store.path(), STORE_READERS, move |answer| {
                let _ = tx.send(Command::Store(answer)); // the dispatcher is gone at shutdown
            })?;
            Dispatcher::new(cfg.clone(), metrics.clone(), Backend::Local(Box::new(Local { store, readers })))
        }
        Some(url) => {
            let opts = StoreOptions {
                presence_ttl: cfg.redis_presence_ttl,
                stream_cap: cfg.redis_stream_cap,
                min_replicas: cfg.redis_min_replicas,
                ..StoreOptions::default()
            };
            metrics.set_redis(false);
            // One answer to "where is the master" for every Redis thread.
            let master = redis_store::Master::open(url, metrics.redis_status.clone())?;
            let tx = commands_tx.clone();
            // False once the dispatcher is gone (shutdown): the Redis threads then stop.
            let io = RedisIo::start(&master, opts.clone(), move |event| tx.send(Command::Cluster(event)).is_ok())?;
            let tx = commands_tx.clone();
            let readers = redis_store::start_readers(&master, &opts, STORE_READERS, move |answer| {
                let _ = tx.send(Command::Store(answer)); // the dispatcher is gone at shutdown
            })?;
            user_data_redis = Some((master.clone(), opts.clone()));
            Dispatcher::new(cfg.clone(), metrics.clone(), Backend::Redis(Cluster { io, readers }))
        }
    };

    let bans = dispatcher.bans();
    let lifecycle = files::Lifecycle {
        unposted_ttl: cfg.upload_ttl,
        // Retention and the size cap run on the SQLite store only: with Redis, files
        // aged out here would leave messages Redis keeps pointing at nothing.
        retention: cfg.redis.is_none().then_some(cfg.retention_days).flatten().map(|d| Duration::from_secs(d * 86_400)),
        max_store_bytes: cfg.redis.is_none().then_some(cfg.max_store_bytes),
    };
    let files = Files::open(&cfg.files_dir(), lifecycle)?;
    let dispatcher = dispatcher.with_files(files.clone()).with_instance_label(instance_label(&cfg));
    let dispatcher = dispatcher.with_webhooks(Webhooks::start(cfg.webhooks.clone(), metrics.webhooks.clone())?);
    let dispatch_shutdown = shutdown.clone();
    let dispatcher = shutdown::spawn_vital("dispatcher", move || dispatcher.run(commands_rx, dispatch_shutdown))?;
    heap::start_trimmer(cfg.heap_trim_quiet, metrics.clone(), shutdown.clone())?;

    let api = match &cfg.api_key_file {
        None => None,
        Some(path) => {
            let keys = ApiKeys::load(path)?;
            let mut api = Api::new(keys, commands_tx.clone(), cfg.api_rate_per_s, cfg.max_text_chars)
                .with_overview(metrics.clone(), cfg.clone());
            match user_data_redis.take() {
                None => {
                    api = api.with_audit_db(crate::store::sqlite::db_path(&cfg.data_dir));
                    // Export and erasure read the SQLite store on connections of their own.
                    api = api.with_data_dir(cfg.data_dir.clone());
                }
                // Export and erasure read Redis on connections of their own.
                Some((master, opts)) => api = api.with_redis(master, opts),
            }
            api = api.with_files(files.clone());
            let pool = ApiHttp::start(Arc::new(api))?;
            Some(Handoff(Arc::new(move |stream, buffered| pool.submit(stream, buffered))))
        }
    };
    let guard = Guard {
        site: Site::Public,
        cfg: cfg.clone(),
        metrics: metrics.clone(),
        tls: cfg.tls.clone(),
        exempt: |cfg, ip| proxy::is_trusted(&cfg.trusted_proxies, ip),
        api: None,
    };
    let mut http = vec![spawn_http("http", guard.clone(), listeners.http, &shutdown)?];
    if let Some(admin) = listeners.admin {
        // The server API lives on the admin listener, off the internet.
        let guard = Guard { site: Site::Admin, tls: None, api, ..guard };
        http.push(spawn_http("http-admin", guard, admin, &shutdown)?);
    }

    let ctx = Arc::new(ConnContext {
        files: files.clone(),
        uploads: Default::default(),
        cfg: cfg.clone(),
        metrics,
        commands: commands_tx,
        tls: cfg.tls.clone(),
        admission: Default::default(),
        sessions: Default::default(),
        bans,
    });
    let max_connections = cfg.max_connections;
    let accept_shutdown = shutdown.clone();
    let ws = listeners.ws;
    let accept = server::start_accepting(ws, ctx, max_connections, accept_shutdown)?;
    ready();

    shutdown.wait();
    let result = dispatcher.join().unwrap_or_else(|_| shutdown::fatal("the dispatcher thread panicked"));
    for h in http.into_iter().flatten() {
        let _ = h.join();
    }
    let _ = accept.join();
    result.map_err(ServeError::from)
}

//! natter: a real-time chat server over WebSocket — synchronous, threaded, durable.
//!
//! The message path, top-down (docs/ARCHITECTURE.md has the module map):
//! - [`transport`]: an accept loop gives each WebSocket connection a small-stack
//!   thread that performs the handshake ([`auth`] for tokens), then reads frames,
//!   validates them ([`protocol`]) and sends [`dispatcher::Command`]s through a
//!   crossbeam channel; tiny_http serves the page, `/config.json`, `/healthz` and
//!   `/metrics` ([`metrics`]).
//! - [`dispatcher`]: one thread, the only owner of rooms, `seq`, history and the
//!   store ([`dispatcher::Backend`]: the local [`store::journal`], or Redis through
//!   [`dispatcher::cluster`] and [`store::redis`]). It frames each message once
//!   ([`protocol::wire`]), commits, and only then hands the batch on.
//! - [`delivery`]: writer shards put committed batches on the wire without blocking,
//!   through each connection's bounded outbox.
//!
//! [`config::Config`] holds every limit; [`cli`] turns flags into it; [`limits`] reads
//! what the process can hold. [`serve`] runs it all on listeners the caller bound,
//! until a [`shutdown`] fires.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod dispatcher;
pub mod limits;
pub mod metrics;
pub mod protocol;
pub mod shutdown;
pub mod store;
pub mod transport;

use std::net::TcpListener;
use std::sync::Arc;
use std::thread;

use api::http::ApiHttp;
use api::keys::{ApiKeyError, ApiKeys};
use api::webhooks::{WebhookError, Webhooks};
use api::Api;
use config::Config;
use dispatcher::cluster::Cluster;
use dispatcher::{Backend, Dispatcher};
use metrics::Metrics;
use shutdown::Shutdown;
use store::journal::{Journal, JournalError};
use store::redis::{StoreError, StoreOptions};
use transport::connection::ConnContext;
use transport::{http, server};

/// Bounded queue from connection threads to the dispatcher: when the dispatcher falls
/// behind, readers wait here instead of growing memory without bound.
const COMMAND_QUEUE: usize = 65_536;

/// The two sockets natter listens on, bound by the caller (port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    pub http: TcpListener,
    pub ws: TcpListener,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("HTTP listener: {0}")]
    Http(String),
    #[error("starting a thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("redis: {0}")]
    Redis(#[from] StoreError),
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    #[error(transparent)]
    ApiKeys(#[from] ApiKeyError),
}

/// Runs the server until `shutdown` fires; then every client gets close 1001, the
/// journal is flushed and fsynced, and this returns.
pub fn serve(cfg: Config, listeners: Listeners, shutdown: Shutdown) -> Result<(), ServeError> {
    let cfg = Arc::new(cfg);
    let metrics = Arc::new(Metrics::default());
    let (commands_tx, commands_rx) = crossbeam_channel::bounded(COMMAND_QUEUE);
    let dispatcher = match &cfg.redis {
        None => {
            let (journal, replayed) = Journal::open(&cfg.data_dir, cfg.fsync, cfg.journal_segment_bytes)?;
            Dispatcher::new(cfg.clone(), metrics.clone(), Backend::Local(journal), replayed)
        }
        Some(url) => {
            let opts = StoreOptions { presence_ttl: cfg.redis_presence_ttl, ..StoreOptions::default() };
            metrics.set_redis(false);
            let cluster = Cluster::start(url, opts, commands_tx.clone())?;
            Dispatcher::new(cfg.clone(), metrics.clone(), Backend::Redis(cluster), Vec::new())
        }
    };

    let dispatcher = dispatcher.with_webhooks(Webhooks::start(cfg.webhooks.clone(), metrics.webhooks.clone())?);
    let dispatch_shutdown = shutdown.clone();
    let dispatcher = thread::Builder::new()
        .name("dispatcher".into())
        .spawn(move || dispatcher.run(commands_rx, dispatch_shutdown))?;

    let api = match &cfg.api_key_file {
        None => None,
        Some(path) => {
            let keys = ApiKeys::load(path)?;
            Some(ApiHttp::start(Api::new(keys, commands_tx.clone(), cfg.api_rate_per_s, cfg.max_text_chars))?)
        }
    };
    let http_server = Arc::new(http::HttpServer::start(listeners.http).map_err(|e| ServeError::Http(e.to_string()))?);
    let http = {
        let (server, cfg, metrics) = (http_server.clone(), cfg.clone(), metrics.clone());
        let api: Box<dyn Fn(tiny_http::Request) + Send + Sync> = match api {
            Some(a) => Box::new(move |req| a.submit(req)),
            None => Box::new(api::http::disabled),
        };
        thread::Builder::new().name("http".into()).spawn(move || server.run(&cfg, &metrics, &*api))?
    };

    let ctx = Arc::new(ConnContext { cfg: cfg.clone(), metrics, commands: commands_tx, sessions: Default::default() });
    let max_connections = cfg.max_connections;
    let accept_shutdown = shutdown.clone();
    let ws = listeners.ws;
    let accept = thread::Builder::new()
        .name("ws-accept".into())
        .spawn(move || server::accept_loop(ws, ctx, max_connections, accept_shutdown))?;

    shutdown.wait();
    let result = dispatcher.join().unwrap_or_else(|_| {
        log::error!("the dispatcher panicked");
        Ok(())
    });
    http_server.stop();
    let _ = http.join();
    let _ = accept.join();
    result.map_err(ServeError::from)
}

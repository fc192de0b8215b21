//! Command-line flags → [`Config`]. The only place that reads flags and environment
//! variables; everything below receives a `Config`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::access::RoomsDefault;
use crate::auth;
use crate::config::{AuthMode, Config, FsyncPolicy};
use crate::store::sqlite::backup::BackupOptions;
use crate::webhooks::{WebhookConfig, WebhookError};

#[derive(Debug, Parser)]
#[command(
    name = "natter",
    version,
    about = "A real-time chat server over WebSocket: rooms, history, resume, search, durable store."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the chat server (the default).
    Serve(Box<ServeArgs>),
    /// Mint an HS256 token for token mode (secret from NATTER_JWT_SECRET or --jwt-secret-file).
    Token(TokenArgs),
    /// Copy the SQLite store to FILE while natter serves (docs/DEPLOY.md: Backups).
    Backup(BackupArgs),
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where the copy goes: written beside it under a temporary name, checked, then
    /// moved into place.
    pub file: PathBuf,
    /// Directory of the SQLite store: the `--data-dir` natter serves with.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Replace FILE (and FILE.files) when it exists.
    #[arg(long)]
    pub force: bool,
    /// The files directory natter serves with (default: <data-dir>/files, when it has files.db); copied to FILE.files.
    #[arg(long)]
    pub files_dir: Option<PathBuf>,
    /// Database pages copied per step (4 KiB each).
    #[arg(long, default_value_t = BackupOptions::default().pages_per_step,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub pages_per_step: u32,
    /// Milliseconds between two steps, so the serving natter's writes keep the disk.
    #[arg(long, default_value_t = BackupOptions::default().pause.as_millis() as u64)]
    pub pause_ms: u64,
}

impl BackupArgs {
    /// The copy these flags ask for.
    pub fn options(&self) -> BackupOptions {
        BackupOptions {
            pages_per_step: self.pages_per_step,
            pause: Duration::from_millis(self.pause_ms),
            overwrite: self.force,
            files_dir: self.files_dir.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// User id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Display name (`name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime: seconds, or with a unit: 90s, 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Rooms the user may join, comma-separated names and prefix* patterns (`rooms` claim).
    #[arg(long)]
    pub rooms: Option<String>,
    /// Role: `mod` for a moderator (`role` claim).
    #[arg(long)]
    pub role: Option<String>,
    /// File holding the secret (else NATTER_JWT_SECRET).
    #[arg(long)]
    pub jwt_secret_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address both listeners bind to (0.0.0.0 to accept other machines).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// HTTP port: the page, /config.json, /healthz, /metrics (0 = any free port).
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// WebSocket port; the endpoint is ws://HOST:PORT/ws (0 = any free port).
    #[arg(long, default_value_t = 8081)]
    pub ws_port: u16,
    /// Directory of the SQLite store (natter.db and its WAL).
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Serve the page from this directory instead of the copy built into the binary.
    #[arg(long)]
    pub www: Option<PathBuf>,
    /// WebSocket URL /config.json hands the page (default: ws://<host the page came from>:<ws-port>/ws).
    #[arg(long)]
    pub public_ws_url: Option<String>,

    /// Store fsync policy: always (FULL), interval (NORMAL + a WAL fsync each second), never (OFF).
    #[arg(long, value_enum, default_value = "interval")]
    pub fsync: FsyncPolicy,
    /// Messages kept per room in the store (default: no count limit).
    #[arg(long)]
    pub retention_messages: Option<u64>,
    /// Days messages are kept in the store (default: no age limit).
    #[arg(long)]
    pub retention_days: Option<u64>,
    /// Days audit log entries are kept (0: forever).
    #[arg(long, default_value_t = 365)]
    pub audit_retention_days: u64,
    /// Store size (bytes) past which the oldest messages of the largest rooms are deleted.
    #[arg(long, default_value_t = Config::default().max_store_bytes)]
    pub max_store_bytes: u64,
    /// Directory of uploaded files (default: <data-dir>/files; with --redis, one every instance shares).
    #[arg(long)]
    pub files_dir: Option<PathBuf>,
    /// Largest upload in bytes (413 past it).
    #[arg(long, default_value_t = Config::default().max_upload_bytes)]
    pub max_upload_bytes: u64,
    /// Uploads per user per minute (429 past it).
    #[arg(long, default_value_t = Config::default().uploads_per_min)]
    pub upload_rate: u32,
    /// Uploads in progress at once (503 past it).
    #[arg(long, default_value_t = Config::default().max_uploads)]
    pub max_uploads: usize,
    /// Seconds a signed file URL works.
    #[arg(long, default_value_t = Config::default().file_url_ttl.as_secs())]
    pub file_url_ttl_secs: u64,
    /// Seconds an upload no message names is kept.
    #[arg(long, default_value_t = Config::default().upload_ttl.as_secs())]
    pub upload_ttl_secs: u64,
    /// Most messages a resume returns from the store (older ones: scroll back).
    #[arg(long, default_value_t = Config::default().max_resume)]
    pub max_resume: usize,
    /// Messages kept in memory per room (the cache that serves most resumes).
    #[arg(long, default_value_t = Config::default().history_per_room)]
    pub history: usize,
    /// Messages sent to a join without `since`.
    #[arg(long, default_value_t = Config::default().join_history)]
    pub join_history: usize,
    /// Rooms with more users than this list only this many in `joined` and stop announcing joins/leaves/renames.
    #[arg(long, default_value_t = Config::default().presence_limit)]
    pub presence_limit: usize,
    /// Client message ids remembered per room for de-duplication of retries.
    #[arg(long, default_value_t = Config::default().dedup_per_room)]
    pub dedup: usize,

    /// Largest frame/message a client may send, bytes (close 1009 past it).
    #[arg(long, default_value_t = Config::default().max_frame_bytes)]
    pub max_frame_bytes: usize,
    /// Do not negotiate permessage-deflate: every frame goes uncompressed.
    #[arg(long)]
    pub no_deflate: bool,
    /// Serve a conformance echo on /echo, through the chat connection's own code (for Autobahn|Testsuite).
    #[arg(long)]
    pub autobahn_echo: bool,
    /// Longest message text, in characters (error too_long past it).
    #[arg(long, default_value_t = Config::default().max_text_chars)]
    pub max_text: usize,
    /// Rooms one connection may join (error room_limit past it).
    #[arg(long, default_value_t = Config::default().max_rooms_per_conn)]
    pub max_rooms_per_conn: usize,
    /// Rooms held in memory at once (idle ones leave memory to make space; error
    /// room_limit only when every room in memory is in use).
    #[arg(long, default_value_t = Config::default().max_rooms)]
    pub max_rooms: usize,
    /// Direct-message rooms one connection may be in, apart from --max-rooms-per-conn.
    #[arg(long, default_value_t = Config::default().max_dms_per_conn)]
    pub max_dms_per_conn: usize,
    /// New DMs per user per minute, as opener or as the other user (error dm_rate past it).
    #[arg(long, default_value_t = Config::default().dm_open_rate)]
    pub dm_open_rate: u32,
    /// Seconds a room nobody is in stays in memory (then it comes back from the store
    /// when used again).
    #[arg(long, default_value_t = 60)]
    pub room_idle_secs: u64,
    /// New rooms one connection may create per minute (error create_limited past it).
    #[arg(long, default_value_t = Config::default().room_creates_per_min)]
    pub room_creates: u32,
    /// Client frames per second per connection (error rate_limited past it).
    #[arg(long, default_value_t = Config::default().rate_per_s)]
    pub rate_per_s: u32,
    /// Burst of frames allowed above the rate.
    #[arg(long, default_value_t = Config::default().rate_burst)]
    pub rate_burst: u32,
    /// rate_limited errors within 10 s after which the connection is closed (1008 rate limit).
    #[arg(long, default_value_t = Config::default().rate_strikes)]
    pub rate_strikes: u32,
    /// Bytes queued for a client that stopped reading before it is closed (1008 slow consumer).
    #[arg(long, default_value_t = Config::default().max_backlog_bytes)]
    pub max_backlog_bytes: usize,
    /// Total connections (503 past it); lowered at start to what the process limits allow.
    #[arg(long, default_value_t = Config::default().max_connections)]
    pub max_connections: usize,
    /// Connections from one IP address, slow handshakes included (429 past it).
    #[arg(long, default_value_t = Config::default().max_connections_per_ip)]
    pub max_connections_per_ip: usize,
    /// Milliseconds a client has to complete the WebSocket handshake.
    #[arg(long, default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,
    /// Stack size of each connection thread, bytes.
    #[arg(long, default_value_t = Config::default().conn_stack_bytes)]
    pub conn_stack_bytes: usize,

    /// Writer threads for broadcasts (default: one per CPU).
    #[arg(long, default_value_t = Config::default().writers)]
    pub writers: usize,
    /// Milliseconds the server must be quiet (at most 50 commands) after a burst before
    /// freed heap memory is handed back to the kernel (0: never).
    #[arg(long, default_value_t = 1_000)]
    pub heap_trim_quiet_ms: u64,

    /// Milliseconds between the server's WebSocket pings.
    #[arg(long, default_value_t = 15_000)]
    pub heartbeat_interval_ms: u64,
    /// Milliseconds of silence after which a connection is closed.
    #[arg(long, default_value_t = 45_000)]
    pub heartbeat_timeout_ms: u64,

    /// Browser origin allowed to connect (repeatable; "*" for any). Default: the page's own origin.
    #[arg(long = "allowed-origin")]
    pub allowed_origins: Vec<String>,
    /// Refuse handshakes without an Origin header (non-browser clients).
    #[arg(long)]
    pub require_origin: bool,

    /// Share rooms with other natter instances through Redis (redis://HOST:PORT/DB, or through Sentinel:
    /// redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER-NAME[/DB]). Without it: local SQLite store.
    #[arg(long)]
    pub redis: Option<String>,
    /// Redis mode: milliseconds after which a crashed instance's users are no longer present.
    #[arg(long, default_value_t = 15_000)]
    pub redis_presence_ttl_ms: u64,
    /// Redis mode: messages Redis keeps per room (about: trimmed a node at a time); what
    /// scroll-back, search and resume can reach.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub redis_stream_cap: u64,
    /// Redis mode: ack a post only once WAIT says this many replicas hold it (0 = once the master has it).
    #[arg(long, default_value_t = 0)]
    pub redis_min_replicas: u32,

    /// Authentication: open (pick a name) or token (HS256 JWT required).
    #[arg(long, value_enum, default_value = "open")]
    pub auth: AuthFlag,
    /// File holding the JWT secret (token mode; else NATTER_JWT_SECRET). Never pass the secret itself as a flag.
    #[arg(long)]
    pub jwt_secret_file: Option<PathBuf>,
    /// Rooms a user may join when the token has no `rooms` claim (and in open mode): open (any public room) or none.
    #[arg(long, value_enum, default_value = "open")]
    pub rooms_default: RoomsDefault,
    /// Open mode: this user id is a moderator (repeatable; ids are shown in `welcome`).
    #[arg(long = "mod")]
    pub mods: Vec<String>,
    /// Seconds of clock skew tolerated on token exp/nbf.
    #[arg(long, default_value_t = Config::default().jwt_leeway_s)]
    pub jwt_leeway_s: u64,

    /// Turn on the server API (/api/v1/) with the keys in this file, one a line.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// Server API calls per second, all callers together.
    #[arg(long, default_value_t = Config::default().api_rate_per_s)]
    pub api_rate_per_s: u32,

    /// POST room events to this http(s) URL (repeatable). Needs --webhook-secret-file.
    #[arg(long = "webhook")]
    pub webhooks: Vec<String>,
    /// File holding the secret webhook signatures are made with.
    #[arg(long)]
    pub webhook_secret_file: Option<PathBuf>,
    /// Minutes a failing receiver's events are retried before they are dropped.
    #[arg(long, default_value_t = 60.0)]
    pub webhook_retry_minutes: f64,
    /// Events queued per receiver before the oldest are dropped.
    #[arg(long, default_value_t = 100_000)]
    pub webhook_queue: usize,
    /// Open HTTP connections to the page port in total (503 past it).
    #[arg(long, default_value_t = Config::default().http_max_connections)]
    pub http_max_connections: usize,
    /// Open HTTP connections to the page port from one address (429 past it).
    #[arg(long, default_value_t = Config::default().http_max_connections_per_ip)]
    pub http_max_connections_per_ip: usize,
    /// Milliseconds a client has to send a request head (TLS handshake included).
    #[arg(long, default_value_t = 10_000)]
    pub http_head_timeout_ms: u64,
    /// Milliseconds an idle keep-alive HTTP connection stays open (page port, and
    /// `POST /send` connections on the WebSocket port).
    #[arg(long, default_value_t = 30_000)]
    pub http_idle_timeout_ms: u64,
    /// Address of the admin listener: /metrics (and /healthz). Keep it off the internet.
    /// Default: 127.0.0.1:<http-port + 2> (8082), or any free port when that is taken or --http-port is 0.
    #[arg(long)]
    pub admin_bind: Option<std::net::SocketAddr>,

    /// Reverse proxy (address or CIDR, repeatable) whose X-Forwarded-For / X-Real-IP name the client, for per-IP caps and logs.
    #[arg(long = "trusted-proxy")]
    pub trusted_proxies: Vec<crate::proxy::Cidr>,

    /// PEM certificate chain: both listeners speak TLS (https://, wss://). Needs --tls-key; SIGHUP reloads both.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Log level: error, warn, info, debug, trace (RUST_LOG overrides).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log line format: text (for people) or json (one object per line, for log shippers).
    #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
}

/// Why the flags do not make a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Webhook(#[from] WebhookError),
}

/// Parses `90`, `90s`, `15m`, `1h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration like 90s, 15m, 1h, 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit in `{s}` (s, m, h, d)")),
    };
    Ok(Duration::from_secs(secs))
}

/// `--auth`: how clients prove who they are. Token mode's secret comes from
/// `--jwt-secret-file` (or NATTER_JWT_SECRET) and goes into [`AuthMode::Token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthFlag {
    /// Anyone connects and picks a display name with `?name=`.
    Open,
    /// A JWT (HS256) is required at connect time.
    Token,
}

impl ServeArgs {
    /// The config these flags describe. `http_port`/`ws_port` are the bound ports.
    pub fn to_config(&self, http_port: u16, ws_port: u16) -> Result<Config, ConfigError> {
        let auth = match self.auth {
            AuthFlag::Token => AuthMode::Token {
                secret: auth::load_secret(self.jwt_secret_file.as_deref(), std::env::var("NATTER_JWT_SECRET").ok())?,
            },
            AuthFlag::Open => AuthMode::Open,
        };
        Ok(Config {
            data_dir: self.data_dir.clone(),
            www_dir: self.www.clone(),
            public_ws_url: self.public_ws_url.clone(),
            http_port,
            ws_port,
            max_frame_bytes: self.max_frame_bytes,
            deflate: !self.no_deflate,
            autobahn_echo: self.autobahn_echo,
            max_text_chars: self.max_text,
            max_rooms_per_conn: self.max_rooms_per_conn,
            max_rooms: self.max_rooms,
            max_dms_per_conn: self.max_dms_per_conn,
            dm_open_rate: self.dm_open_rate,
            room_idle: Duration::from_secs(self.room_idle_secs),
            room_creates_per_min: self.room_creates,
            history_per_room: self.history,
            join_history: self.join_history,
            presence_limit: self.presence_limit,
            dedup_per_room: self.dedup,
            rate_per_s: self.rate_per_s,
            rate_burst: self.rate_burst,
            rate_strikes: self.rate_strikes,
            max_backlog_bytes: self.max_backlog_bytes,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            conn_stack_bytes: self.conn_stack_bytes,
            read_buffer_bytes: Config::default().read_buffer_bytes,
            writers: self.writers,
            heap_trim_quiet: Duration::from_millis(self.heap_trim_quiet_ms),
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms),
            heartbeat_timeout: Duration::from_millis(self.heartbeat_timeout_ms),
            fsync: self.fsync,
            retention_messages: self.retention_messages,
            retention_days: self.retention_days,
            audit_retention_days: (self.audit_retention_days > 0).then_some(self.audit_retention_days),
            max_store_bytes: self.max_store_bytes,
            max_resume: self.max_resume,
            allowed_origins: self.allowed_origins.clone(),
            require_origin: self.require_origin,
            redis: self.redis.clone(),
            redis_presence_ttl: Duration::from_millis(self.redis_presence_ttl_ms),
            redis_stream_cap: usize::try_from(self.redis_stream_cap).unwrap_or(usize::MAX),
            redis_min_replicas: self.redis_min_replicas as usize,
            auth,
            jwt_leeway_s: self.jwt_leeway_s,
            rooms_default: self.rooms_default,
            mods: self.mods.clone(),
            api_key_file: self.api_key_file.clone(),
            api_rate_per_s: self.api_rate_per_s,
            webhooks: WebhookConfig::new(
                self.webhooks.clone(),
                self.webhook_secret_file.as_deref(),
                Duration::from_secs_f64(self.webhook_retry_minutes.clamp(0.0, 7.0 * 24.0 * 60.0) * 60.0),
                self.webhook_queue,
            )?,
            http_max_connections: self.http_max_connections,
            http_max_connections_per_ip: self.http_max_connections_per_ip,
            http_head_timeout: Duration::from_millis(self.http_head_timeout_ms),
            http_idle_timeout: Duration::from_millis(self.http_idle_timeout_ms),
            trusted_proxies: self.trusted_proxies.clone(),
            tls: None,
            files_dir: self.files_dir.clone(),
            max_upload_bytes: self.max_upload_bytes,
            uploads_per_min: self.upload_rate,
            max_uploads: self.max_uploads,
            file_url_ttl: Duration::from_secs(self.file_url_ttl_secs.max(1)),
            upload_ttl: Duration::from_secs(self.upload_ttl_secs.max(1)),
        })
    }
}

impl ServeArgs {
    /// The flags' defaults, for `natter` run without a subcommand.
    pub fn from_defaults() -> ServeArgs {
        let Some(Cmd::Serve(args)) = Cli::parse_from(["natter", "serve"]).command else {
            unreachable!("`serve` parses to Cmd::Serve")
        };
        *args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("1y").is_err());
    }

    #[test]
    fn backup_defaults_match_backup_options() {
        let Some(Cmd::Backup(args)) = Cli::parse_from(["natter", "backup", "x.db"]).command else { panic!() };
        let (opts, d) = (args.options(), BackupOptions::default());
        assert_eq!((opts.pages_per_step, opts.pause, opts.overwrite), (d.pages_per_step, d.pause, false));
        assert_eq!(args.data_dir, ServeArgs::from_defaults().data_dir, "the same store as `serve`");
    }

    #[test]
    fn defaults_match_config_default() {
        let cli = Cli::parse_from(["natter", "serve"]);
        let Some(Cmd::Serve(args)) = cli.command else { panic!() };
        let cfg = args.to_config(8080, 8081).unwrap();
        let d = Config::default();
        assert_eq!(cfg.heartbeat_interval, d.heartbeat_interval);
        assert_eq!(cfg.heartbeat_timeout, d.heartbeat_timeout);
        assert_eq!(cfg.handshake_timeout, d.handshake_timeout);
        assert_eq!(cfg.heap_trim_quiet, d.heap_trim_quiet);
        assert_eq!(cfg.room_idle, d.room_idle);
        assert_eq!((cfg.http_head_timeout, cfg.http_idle_timeout), (d.http_head_timeout, d.http_idle_timeout));
    }
}

//! Runtime configuration: every limit and default the server obeys, in one struct.
//!
//! `Config` is built once by the CLI layer (`cli.rs`) or by tests and passed down by
//! reference. Nothing below `main` reads flags or environment variables itself.

use crate::access::RoomsDefault;
use crate::webhooks::WebhookConfig;
use std::path::PathBuf;
use std::time::Duration;

use crate::proxy::Cidr;
use crate::tls::Tls;

/// When the store is forced to stable storage (SQLite `synchronous`, see README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncPolicy {
    /// `synchronous=FULL`: the WAL is fsynced before every ack: nothing acked is lost
    /// even on power failure. Slowest.
    Always,
    /// `synchronous=NORMAL` plus an fsync of the WAL once a second on a background
    /// thread: an ack survives a process crash at once and a power failure after at
    /// most about a second.
    Interval,
    /// `synchronous=OFF`: leave it to the OS: survives a process crash, not a power failure.
    Never,
}

/// How clients prove who they are. Token mode carries its secret, so no code that
/// checks a token can find token mode without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone connects and picks a display name with `?name=`.
    Open,
    /// A JWT (HS256) signed with `secret` is required at connect time.
    Token { secret: Vec<u8> },
}

impl AuthMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthMode::Open => "open",
            AuthMode::Token { .. } => "token",
        }
    }
}

/// Everything the server needs to know. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the SQLite store (`natter.db` and its WAL) lives.
    pub data_dir: PathBuf,
    /// Serve the page from this directory instead of the copy embedded at build time.
    pub www_dir: Option<PathBuf>,
    /// What `/config.json` tells the page to connect to; derived from the request's
    /// Host header and the WebSocket port when unset.
    pub public_ws_url: Option<String>,
    /// Port the HTTP side is reached on (used for the default Origin policy).
    pub http_port: u16,
    /// Port the WebSocket side is reached on (used to derive `ws_url`).
    pub ws_port: u16,

    /// Largest WebSocket frame and message a client may send, in bytes (close 1009 past it).
    pub max_frame_bytes: usize,
    /// Negotiate permessage-deflate (RFC 7692) with clients that offer it (`--no-deflate`
    /// turns it off). Broadcasts are compressed once, in the writer shards; client
    /// messages are inflated up to `max_frame_bytes`.
    pub deflate: bool,
    /// Serve the conformance echo on `/echo` (`--autobahn-echo`): every message back as
    /// it came, through the chat connection's own handshake, extension negotiation,
    /// framing, limits and writer. For Autobahn|Testsuite; off by default.
    pub autobahn_echo: bool,
    /// Longest `text` in characters (`too_long` past it).
    pub max_text_chars: usize,
    /// Rooms one connection may be in at once (`room_limit` past it).
    pub max_rooms_per_conn: usize,
    /// Rooms held in memory at once. A room nobody is in leaves memory to make space
    /// for another (it comes back from the store when used again); `room_limit` only
    /// when every room in memory is in use. Stored rooms are not counted.
    pub max_rooms: usize,
    /// Direct-message rooms one connection may be in at once, apart from
    /// `max_rooms_per_conn`, so DMs others open never take the slots of rooms the user
    /// chooses (`room_limit` past it; closing a DM frees its slot). Also the most DMs a
    /// user is told of at connect (the newest).
    pub max_dms_per_conn: usize,
    /// New DM rooms per user per minute, counted for the opener and for the other
    /// user alike, so many throwaway identities cannot flood one user (`dm_rate` past it).
    pub dm_open_rate: u32,
    /// How long a room nobody is in stays in memory before it leaves (its ring and
    /// de-duplication ids go; it comes back from the store on the next join). A room
    /// that never held a message leaves at once.
    pub room_idle: Duration,
    /// New rooms one connection may create per minute (also its burst): a name the
    /// server has never held, or a new private room (`create_limited` past it).
    pub room_creates_per_min: u32,
    /// Messages kept in memory per room for history and resume.
    pub history_per_room: usize,
    /// Rooms with more present users than this list only this many in `joined` and do
    /// not announce joins, leaves and renames to everyone.
    pub presence_limit: usize,
    /// Messages sent to a `join` without `since`.
    pub join_history: usize,
    /// Client message ids remembered per room for de-duplication.
    pub dedup_per_room: usize,
    /// Sustained client frames per second per connection (token bucket rate).
    pub rate_per_s: u32,
    /// Token bucket size: how many frames a client may send in a burst.
    pub rate_burst: u32,
    /// `rate_limited` errors after which a connection is closed with 1008 `rate limit`.
    pub rate_strikes: u32,
    /// Bytes queued for a client that is not reading before it is closed as a slow consumer.
    pub max_backlog_bytes: usize,
    /// Total WebSocket connections (503 past it). Clamped at start to what the process can hold.
    pub max_connections: usize,
    /// Connections from one IP address, handshakes in progress included (429 past it).
    /// Each holds a thread (a slow handshake until `handshake_timeout`), so one address
    /// must not hold thousands; 256 still lets an office behind one NAT address in
    /// with a few tabs each. Behind a proxy the count is per client (`--trusted-proxy`).
    pub max_connections_per_ip: usize,
    /// Time a client has to finish the WebSocket handshake.
    pub handshake_timeout: Duration,
    /// Stack size of each connection thread.
    pub conn_stack_bytes: usize,
    /// tungstenite's read buffer per connection, and the most one read takes from the
    /// socket. Chat frames are small: 512 bytes read a typical one whole, and every idle
    /// connection keeps the buffer. A larger frame is read in several reads (it never
    /// blocks: the bytes are there), into a buffer tungstenite grows to fit it.
    pub read_buffer_bytes: usize,
    /// Writer threads that put broadcasts on the wire, each owning a slice of the sockets.
    pub writers: usize,
    /// How long the dispatcher must be quiet after a burst before freed heap memory is
    /// handed back to the kernel (heap.rs); zero: never.
    pub heap_trim_quiet: Duration,

    /// How often the server pings every connection.
    pub heartbeat_interval: Duration,
    /// Silence after which a connection is closed.
    pub heartbeat_timeout: Duration,

    /// Store durability.
    pub fsync: FsyncPolicy,
    /// Messages kept per room in the store (`None`: no count limit).
    pub retention_messages: Option<u64>,
    /// Days a message is kept in the store (`None`: no age limit).
    pub retention_days: Option<u64>,
    /// Days an audit log entry is kept (`None`: forever). Its own flag: an operator
    /// keeps the record of who banned whom longer than chat, or shorter.
    pub audit_retention_days: Option<u64>,
    /// Store size past which the oldest messages of the largest rooms are deleted.
    pub max_store_bytes: u64,
    /// Most messages a resume (`join` with `since`) returns from the store; older
    /// ones are left to scroll-back (`complete:false` with `first`).
    pub max_resume: usize,

    /// Browser origins allowed to open a WebSocket. Empty: the page's own origin only.
    pub allowed_origins: Vec<String>,
    /// Refuse handshakes that carry no `Origin` header (non-browser clients).
    pub require_origin: bool,

    /// Redis URL (`redis://HOST:PORT/DB`, or `redis+sentinel://H:P,H:P/MASTER[/DB]` to
    /// find the master through Sentinel and follow its failovers): rooms, order,
    /// history and presence are shared with every natter instance on the same Redis.
    /// `None`: local store.
    pub redis: Option<String>,
    /// How long a crashed instance's users stay listed as present.
    pub redis_presence_ttl: Duration,
    /// Messages Redis keeps per room (`XADD MAXLEN ~`, so about this many): all that
    /// scroll-back, search and resume can reach in Redis mode, and what one search may
    /// scan (at most what a stream can hold: `StoreOptions::most_held`).
    pub redis_stream_cap: usize,
    /// Acks a post only once `WAIT` says this many replicas hold it (one `WAIT` per
    /// pipeline of appends); a post not replicated within 1 s is answered
    /// `unavailable`. 0: acked once the master has it.
    pub redis_min_replicas: usize,

    /// Open or token authentication (with token mode's HS256 secret).
    pub auth: AuthMode,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    pub jwt_leeway_s: u64,
    /// The rooms of users whose token has no `rooms` claim, and of open mode.
    pub rooms_default: RoomsDefault,
    /// Open mode: moderators' user ids.
    pub mods: Vec<String>,

    /// Webhook receivers, their secret, retry window and queue bound (none by default).
    pub webhooks: WebhookConfig,
    /// Keys of the server API (`/api/v1/`), one a line; `None`: the API is off (404).
    pub api_key_file: Option<PathBuf>,
    /// Server API calls per second, for all callers together (burst: twice that).
    pub api_rate_per_s: u32,

    /// Open HTTP connections on the page port in total (503 past it) and from one
    /// address (429 past it). Each costs a descriptor, never a thread (the guard).
    pub http_max_connections: usize,
    pub http_max_connections_per_ip: usize,
    /// Time a client has to send a whole request head (and finish TLS, and read the
    /// response): slowloris clients are cut here.
    pub http_head_timeout: Duration,
    /// Time an idle keep-alive HTTP connection stays open between requests: on the
    /// page port, and a `POST /send` connection on the WebSocket port.
    pub http_idle_timeout: Duration,

    /// Reverse proxies whose `X-Forwarded-For` / `X-Real-IP` name the client
    /// (`--trusted-proxy`); from any other peer those headers are ignored.
    pub trusted_proxies: Vec<Cidr>,

    /// Both listeners speak TLS with this certificate and key (`--tls-cert`,
    /// `--tls-key`; reloaded on SIGHUP). `None`: plain HTTP and WebSocket.
    pub tls: Option<Tls>,

    /// Where uploaded files live (blobs, `files.db`, the URL-signing secret). `None`:
    /// `files/` in the data dir. With `--redis`, a directory every instance shares.
    pub files_dir: Option<PathBuf>,
    /// Largest upload in bytes (413 past it, nothing kept).
    pub max_upload_bytes: u64,
    /// Uploads per user per minute (also the burst; 429 past it).
    pub uploads_per_min: u32,
    /// Uploads in progress at once on this instance (503 past it): each holds its
    /// connection's thread and a temporary file, nothing else.
    pub max_uploads: usize,
    /// How long a signed file URL works (`file_urls` hands out new ones).
    pub file_url_ttl: Duration,
    /// An upload no message names is removed after this long.
    pub upload_ttl: Duration,
}

impl Config {
    /// The files directory (`--files-dir`, else `files/` in the data dir).
    pub fn files_dir(&self) -> PathBuf {
        self.files_dir.clone().unwrap_or_else(|| self.data_dir.join("files"))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            www_dir: None,
            public_ws_url: None,
            http_port: 8080,
            ws_port: 8081,
            max_frame_bytes: 64 * 1024,
            deflate: true,
            autobahn_echo: false,
            max_text_chars: 4000,
            max_rooms_per_conn: 32,
            max_rooms: 10_000,
            max_dms_per_conn: 64,
            dm_open_rate: 10,
            room_idle: Duration::from_secs(60),
            room_creates_per_min: 20,
            history_per_room: 1000,
            join_history: 50,
            presence_limit: 1000,
            dedup_per_room: 4096,
            rate_per_s: 20,
            rate_burst: 40,
            rate_strikes: 20,
            max_backlog_bytes: 8 * 1024 * 1024,
            max_connections: 100_000,
            max_connections_per_ip: 256,
            handshake_timeout: Duration::from_secs(10),
            conn_stack_bytes: 128 * 1024,
            read_buffer_bytes: 512,
            writers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            heap_trim_quiet: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(45),
            fsync: FsyncPolicy::Interval,
            retention_messages: None,
            retention_days: None,
            audit_retention_days: Some(365),
            max_store_bytes: 4 << 30,
            max_resume: 5000,
            allowed_origins: Vec::new(),
            require_origin: false,
            redis: None,
            redis_presence_ttl: Duration::from_secs(15),
            redis_stream_cap: 10_000,
            redis_min_replicas: 0,
            auth: AuthMode::Open,
            jwt_leeway_s: 30,
            rooms_default: RoomsDefault::Open,
            mods: Vec::new(),
            webhooks: WebhookConfig::default(),
            api_key_file: None,
            api_rate_per_s: 2000,
            http_max_connections: 1024,
            http_max_connections_per_ip: 64,
            http_head_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            tls: None,
            files_dir: None,
            max_upload_bytes: 10 * 1024 * 1024,
            uploads_per_min: 30,
            max_uploads: 16,
            file_url_ttl: Duration::from_secs(3600),
            upload_ttl: Duration::from_secs(3600),
        }
    }
}

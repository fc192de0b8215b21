//! Command-line flags: every knob of every scenario, with its default and
//! why it exists. `main` turns these into a run; nothing else reads them.

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Fixed clients, senders, rate and duration.
    Steady,
    /// Raise the rate in steps until p99 passes the bound or a message is lost.
    Ramp,
    /// Connection rate and time until all clients are connected.
    Connect,
    /// Hold idle clients; with --server-pid, the server's KiB per connection.
    Idle,
    /// Clients join and leave while others chat; stayers must lose nothing.
    Churn,
    /// websocket-shootout: clients in steps, broadcasts in flight, stop when
    /// p95 of time-to-last-receiver passes the bound.
    Shootout,
    /// Every client a sender, client i in room i mod --rooms, --rate
    /// messages/s in total; every room's deliveries accounted.
    Rooms,
    /// `rooms`, raising the rate in steps (as `ramp`) until p99 passes the
    /// bound or anything in any room is lost.
    RoomsRamp,
    /// The server restarted (--restart-cmd) under every client sending in its
    /// room: time until all are back and resumed, acked probes lost or doubled.
    Restart,
    /// Side-by-side table from --json outputs: --input LABEL=FILE, repeated.
    Compare,
    /// Bytes on the wire per delivered message, with and without
    /// permessage-deflate: live messages, a join's history, a resume (natter).
    Bytes,
}

/// How clients reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// A WebSocket to each --url.
    Ws,
    /// natter's HTTP fallback: each client reads `GET /sse` (with the query
    /// of --url) and posts its join and messages with `POST /send`.
    Sse,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
        }
    }
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Ramp => "ramp",
            Scenario::Connect => "connect",
            Scenario::Idle => "idle",
            Scenario::Churn => "churn",
            Scenario::Shootout => "shootout",
            Scenario::Rooms => "rooms",
            Scenario::RoomsRamp => "rooms-ramp",
            Scenario::Restart => "restart",
            Scenario::Compare => "compare",
            Scenario::Bytes => "bytes",
        }
    }
}

/// natter-loadtest: many WebSocket clients on few threads, exact delivery
/// accounting, HDR latency.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// What to run (or --scenario).
    #[arg(value_enum, value_name = "SCENARIO")]
    pub scenario_arg: Option<Scenario>,
    #[arg(long, value_enum, default_value = "steady")]
    pub scenario: Scenario,

    /// Target WebSocket URL; repeat to spread clients round-robin.
    #[arg(long = "url", default_value = "ws://127.0.0.1:8081/ws?name=lt")]
    pub urls: Vec<String>,
    /// PEM file of the CA that a `wss://` server's certificate must chain to
    /// (its names must match the URL's host). Needed for `wss://`, refused
    /// for `ws://`: there is no accept-any-certificate mode.
    #[arg(long)]
    pub ca: Option<String>,
    /// Allow targets outside 127.0.0.0/8 and ::1.
    #[arg(long)]
    pub allow_remote: bool,
    /// Name of the server in outputs and the comparison table.
    #[arg(long, default_value = "target")]
    pub label: String,

    /// Clients to open (counted receivers).
    #[arg(long, default_value_t = 1000)]
    pub clients: u64,
    /// New connections per second while opening (0 = as fast as 256 in
    /// flight per thread allows).
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// Worker threads; each multiplexes its share of the clients.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Room name, put in place of $ROOM in --join and --msg; in the rooms
    /// scenarios the prefix of every room's name (lobby0, lobby1, …).
    #[arg(long, default_value = "lobby")]
    pub room: String,
    /// rooms, rooms-ramp: number of rooms.
    #[arg(long, default_value_t = 500)]
    pub rooms: usize,
    /// The witness's messages per second: one client on its own thread, in
    /// its own room, timing its round trip beside the fleet's (0 = none).
    #[arg(long, default_value_t = 10.0)]
    pub witness_rate: f64,
    /// natter's server API (the admin listener, `host:port`): with `--api-key`,
    /// enables `--witness-via-api` and `--api-rate`.
    #[arg(long)]
    pub api: Option<String>,
    /// The API key for `--api`.
    #[arg(long, default_value = "")]
    pub api_key: String,
    /// The witness posts through the server API instead of its WebSocket, so
    /// its round trip is an API post's latency (request to seen by a client).
    #[arg(long)]
    pub witness_via_api: bool,
    /// Background posts a second through the server API into a room of their
    /// own, for the whole run (the load of a backend posting; 0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub api_rate: f64,
    /// Speak Engine.IO/Socket.IO framing inside the WebSocket (send `40`,
    /// join after the server's `40`, answer ping `2` with `3`); use with
    /// templates like `42["msg",{"room":"$ROOM","text":"$TEXT"}]`.
    #[arg(long)]
    pub engine_io: bool,
    /// `ws`, or `sse` for natter's HTTP fallback (same --url, `/ws` becomes
    /// `/sse`; one POST in flight per client, what waits batched into it).
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Transport,
    /// Frame sent after the handshake; empty for servers without rooms.
    #[arg(long, default_value = r#"{"type":"join","room":"$ROOM"}"#)]
    pub join: String,
    /// Message template; $TEXT is the probe text, $ID a unique id.
    #[arg(long = "msg", default_value = r#"{"type":"msg","room":"$ROOM","text":"$TEXT","id":"$ID"}"#)]
    pub template: String,

    /// Clients that send (each its own stream of sequence numbers).
    #[arg(long, default_value_t = 10)]
    pub senders: u32,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds of sending (steady, churn).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Before sending, wait until every client got `joined` back (natter; not for
    /// servers whose join frame is empty or unanswered).
    #[arg(long)]
    pub await_joined: bool,
    /// Pause between everyone connected (and joined) and the first message, ms.
    #[arg(long, default_value_t = 500)]
    pub settle_ms: u64,
    /// After sending: wait until all expected deliveries arrived or none
    /// came for this long, ms.
    #[arg(long, default_value_t = 2000)]
    pub drain_ms: u64,

    /// ramp: first rate (messages/s).
    #[arg(long, default_value_t = 20.0)]
    pub ramp_start: f64,
    /// ramp: rate multiplier per step.
    #[arg(long, default_value_t = 1.5)]
    pub ramp_factor: f64,
    /// ramp: seconds per step.
    #[arg(long, default_value_t = 3.0)]
    pub step_secs: f64,
    /// ramp: most steps.
    #[arg(long, default_value_t = 15)]
    pub max_steps: u32,
    /// ramp: times a failing step is repeated before it counts as the limit.
    #[arg(long, default_value_t = 1)]
    pub ramp_retries: u32,
    /// ramp: p99 bound, ms.
    #[arg(long, default_value_t = 200.0)]
    pub p99_bound_ms: f64,

    /// restart: the shell command that restarts the server (it returns once the
    /// new server listens); --duration seconds of sending come before and after it.
    #[arg(long)]
    pub restart_cmd: Option<String>,

    /// idle: seconds to hold the connections.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
    /// PID of the server, to read its VmRSS from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// churn: churning clients alive at a time (default clients/10).
    #[arg(long)]
    pub churners: Option<u64>,
    /// churn: shortest and longest life of a churner, ms.
    #[arg(long, num_args = 2, default_values_t = [200, 2000])]
    pub churn_life_ms: Vec<u64>,

    /// shootout: clients added per step.
    #[arg(long, default_value_t = 1000)]
    pub step: u64,
    /// shootout: most clients.
    #[arg(long, default_value_t = 10_000)]
    pub max_clients: u64,
    /// shootout: broadcasts in flight.
    #[arg(long, default_value_t = 4)]
    pub in_flight: u32,
    /// shootout: broadcasts per step.
    #[arg(long, default_value_t = 40)]
    pub broadcasts: u32,
    /// shootout: p95 bound of time until the last receiver has it, ms.
    #[arg(long, default_value_t = 500.0)]
    pub bound_ms: f64,

    /// Let each client ACK as TCP does by itself: at once, after every read
    /// that empties its socket. By default the clients defer their ACKs to
    /// the delayed-ACK timer (TCP_QUICKACK off before each read), as a client
    /// on another machine costs the server's cores nothing to ACK: on loopback
    /// every ACK is sent and processed on this machine, in the middle of the
    /// broadcast being measured. The server still gets and handles every ACK.
    #[arg(long)]
    pub immediate_acks: bool,

    /// Print one JSON object for the run on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// bytes: messages posted (every one counted live, the last
    /// --bytes-resume of them resumed).
    #[arg(long, default_value_t = 1100)]
    pub bytes_messages: u64,
    /// bytes: messages the resume asks for (join with `since` that far back).
    #[arg(long, default_value_t = 1000)]
    pub bytes_resume: u64,
    /// Do not offer permessage-deflate (offered by default, as browsers do;
    /// the client inflates what the server compresses).
    #[arg(long)]
    pub no_deflate: bool,
    /// Write a self-contained report (.html or .svg).
    #[arg(long)]
    pub report: Option<String>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Watchdog: the process exits after this many seconds, whatever happens.
    #[arg(long, default_value_t = 300)]
    pub max_seconds: u64,

    /// compare: LABEL=FILE of JSON lines written with --json; repeat.
    #[arg(long = "input")]
    pub inputs: Vec<String>,
    /// compare: print the first label's ratio to this label only; repeat
    /// (default: to every other label).
    #[arg(long)]
    pub ratio_to: Vec<String>,
    /// compare: also print NUM/DEN, one label's ratio to another's (e.g.
    /// `natter-tls/natter`, what TLS costs); repeat.
    #[arg(long = "ratio", value_name = "NUM/DEN", value_parser = label_pair)]
    pub ratios: Vec<(String, String)>,
    /// compare: only the rows the first label has (one server's runs beside
    /// the same rows of others, e.g. the fallback transport's).
    #[arg(long)]
    pub rows_of_first: bool,
    /// A name for how the server was run (e.g. fsync=always), shown after
    /// the scenario in the comparison table, so that one server's variants
    /// share its column.
    #[arg(long)]
    pub variant: Option<String>,

    /// steady: scroll-back clients beside the fleet (scrollback.rs).
    #[command(flatten)]
    pub paging: crate::scrollback::PagerArgs,
}

/// `NUM/DEN` of `--ratio`.
fn label_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_string(), b.to_string())),
        _ => Err(format!("{s:?}: want NUM/DEN, two labels")),
    }
}

impl Args {
    pub fn scenario(&self) -> Scenario {
        self.scenario_arg.unwrap_or(self.scenario)
    }
}

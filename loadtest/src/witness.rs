//! The witness: one client apart from the fleet, on its own worker thread,
//! in its own room (`ROOM-witness`), posting `--witness-rate` probes a second
//! to itself and timing their round trip. When the fleet's latency is many
//! times the witness's while the tester's thread is busy, the fleet measured
//! its own queueing, not the server: the run is marked `tester_bound`.
//!
//! Against a server without rooms (no join frame) the witness cannot have a
//! room of its own, and its posts would go to every client; it posts nothing
//! and times the fleet's probes that reach it instead.

use crate::api_post::{Api, Poster};
use crate::cli::Args;
use crate::fleet::Fleet;
use crate::ledger::MAX_STREAMS;
use crate::probe::Template;
use crate::stats::Stats;
use crate::worker::{Board, Filter, Setup};
use crate::ws::Target;
use std::sync::Arc;
use std::time::Duration;

/// The witness's stream id: never one of the fleet's.
pub const STREAM: u32 = MAX_STREAMS - 1;

/// A fleet-share of the tester's worker-thread capacity at which it counts
/// as busy (see [`tester_bound`]).
pub const BUSY: f64 = 0.75;
/// The fleet's p50 past this many times the witness's is the tester's doing.
pub const RATIO: f64 = 5.0;

/// Did the tester, not the server, set the fleet's latency? Yes when the
/// tester fell behind its own schedule, or when its threads were busy and
/// the fleet's p50 is more than [`RATIO`] × the witness's. Without a
/// witness, only a tester at ≥ 90% counts.
pub fn tester_bound(fleet_p50_ms: f64, witness_p50_ms: Option<f64>, tester_load: f64, fell_behind: bool) -> bool {
    if fell_behind {
        return true;
    }
    match witness_p50_ms {
        Some(w) => tester_load >= BUSY && fleet_p50_ms > RATIO * w,
        None => tester_load >= 0.9,
    }
}

pub struct Witness {
    fleet: Fleet,
    /// `--witness-via-api`: the posts go through the server API.
    poster: Option<Poster>,
}

impl Witness {
    /// Connect the witness (and join its room) and start its posts; None
    /// with `--witness-rate 0`.
    pub fn start(args: &Args, targets: Vec<Target>, run_id: u64) -> Result<Option<Witness>, String> {
        if args.witness_rate <= 0.0 {
            return Ok(None);
        }
        let join = (!args.join.is_empty()).then(|| Template::new(&args.join));
        let listen = join.is_none();
        let setup = Setup {
            targets,
            join,
            template: Template::new(&args.template),
            rooms: vec![format!("{}-witness", args.room)],
            next_index: Default::default(),
            filter: if listen { Filter::All } else { Filter::Only(STREAM) },
            engine_io: args.engine_io,
            transport: args.transport,
            run_id,
            progress: Arc::default(),
            board: Arc::new(Board::new(1)),
            delayed_acks: !args.immediate_acks,
            resume: false,
            deflate: !args.no_deflate,
        };
        let fleet = Fleet::start(setup, 1, true).map_err(|e| format!("starting the witness: {e}"))?;
        fleet.open("witness", 1, 0.0, Duration::from_secs(10));
        if args.await_joined && !listen {
            fleet.await_joined("witness", Duration::from_secs(10));
        }
        let duration = Duration::from_secs(args.max_seconds);
        let mut poster = None;
        match api(args)? {
            Some(api) if args.witness_via_api && !listen => {
                poster =
                    Some(Poster::start(&api, &format!("{}-witness", args.room), STREAM, args.witness_rate, duration))
            }
            _ if !listen => fleet.send_streams(vec![STREAM], args.witness_rate, duration),
            _ => {}
        }
        Ok(Some(Witness { fleet, poster }))
    }

    /// Forget what was measured so far: a measured window starts.
    pub fn begin(&self) {
        let _ = self.fleet.snapshot();
    }

    /// What was measured since the last `begin` or `take`.
    pub fn take(&self) -> Stats {
        self.fleet.snapshot()
    }

    pub fn stop(self) {
        if let Some(p) = self.poster {
            p.stop();
        }
        self.fleet.stop();
    }
}

/// The server API named by `--api`/`--api-key`, if any; an error when an API option
/// is used without them.
pub fn api(args: &Args) -> Result<Option<Api>, String> {
    match &args.api {
        Some(addr) if !args.api_key.is_empty() => Ok(Some(Api { addr: addr.clone(), key: args.api_key.clone() })),
        _ if args.witness_via_api || args.api_rate > 0.0 => {
            Err("--witness-via-api and --api-rate need --api HOST:PORT and --api-key".into())
        }
        _ => Ok(None),
    }
}

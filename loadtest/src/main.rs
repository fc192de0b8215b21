//! natter-loadtest: opens thousands of WebSocket clients against a chat
//! server from a few threads and measures what the server delivers.
//!
//! Where things live: `cli` (flags) · `ws` (RFC 6455 client bytes) ·
//! `probe` (the measured message and its template) · `ledger` (exact
//! per-receiver delivery accounting) · `stats` (histograms, counters) ·
//! `worker` (one mio event loop owning many connections) · `fleet` (the
//! coordinator's handle on the workers) · `scenario` (steady, ramp, connect,
//! idle, churn, shootout) · `report` (summary, JSON, HTML/SVG, comparison) ·
//! `rooms` (room membership and per-room accounting) · `sse` (natter's HTTP
//! fallback: request, response and event-stream bytes) · `witness` (the
//! independent client that checks the tester) · `tls` (`wss://` clients and
//! their certificate checks) · `scrollback` (clients paging back through history
//! beside the fleet) · `bytes` (bytes on the wire per message, with and without
//! permessage-deflate) ·
//! `sys` (clock, rlimit, getrusage, /proc, kernel memory). `main` only wires them.

mod api_post;
mod bytes;
mod cli;
mod fleet;
mod ledger;
mod probe;
mod report;
mod rooms;
mod scenario;
mod scrollback;
mod sse;
mod stats;
mod sys;
mod tls;
mod witness;
mod worker;
mod ws;

use clap::Parser;
use cli::{Args, Scenario};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args = Args::parse();
    let max = args.max_seconds;
    // Watchdog: whatever happens, the tester stops by itself.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(max));
        eprintln!("natter-loadtest: --max-seconds {max} reached, exiting");
        std::process::exit(3);
    });
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natter-loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.scenario() == Scenario::Compare {
        return compare(args);
    }
    sys::now_ns(); // start the process clock
    let nofile = sys::raise_nofile_limit();
    let needed = args.clients.max(if args.scenario() == Scenario::Shootout { args.max_clients } else { 0 });
    if needed + 64 > nofile {
        eprintln!("warning: {needed} clients need more descriptors than the limit of {nofile}");
    }
    if args.engine_io && args.transport == cli::Transport::Sse {
        return Err("--engine-io speaks inside a WebSocket: not with --transport sse".into());
    }
    let ca = args.ca.as_deref().map(tls::Ca::load).transpose()?;
    let targets = args
        .urls
        .iter()
        .map(|u| ws::Target::parse(u, args.allow_remote, ca.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    for t in &targets {
        if let Some(client) = &t.tls {
            tls::check(&format!("wss://{}:{}{}", t.host, t.port, t.resource), t.addr, client)?;
        }
    }
    let run_id = sys::now_ns() ^ u64::from(std::process::id()) << 32 ^ unix_nanos();
    if args.scenario() == Scenario::Bytes {
        let room = format!("{}-bytes-{:x}", args.room, run_id & 0xffff_ffff);
        let rows = bytes::run(&targets[0], &room, args.bytes_messages, args.senders as usize, args.bytes_resume)?;
        if args.json {
            for row in &rows {
                let line = serde_json::json!({"label": args.label, "scenario": "bytes", "row": row});
                println!("{line}");
            }
        } else {
            print!("{}", bytes::table(&rows));
        }
        return Ok(());
    }
    let spread = matches!(args.scenario(), Scenario::Rooms | Scenario::RoomsRamp | Scenario::Restart);
    let witness = witness::Witness::start(args, targets.clone(), run_id)?;
    if args.paging.pagers > 0 && args.scenario() != Scenario::Steady {
        return Err("--pagers runs with the steady scenario only".into());
    }
    let pagers = scrollback::Pagers::start(&args.paging, &targets[0], &args.room)?;
    // A backend's posts through the server API, into a room no fleet client is in.
    let background = match witness::api(args)? {
        Some(api) if args.api_rate > 0.0 => Some(api_post::Poster::start(
            &api,
            &format!("{}-api", args.room),
            witness::STREAM - 1,
            args.api_rate,
            Duration::from_secs(args.max_seconds),
        )),
        _ => None,
    };
    let setup = worker::Setup {
        targets,
        join: (!args.join.is_empty()).then(|| probe::Template::new(&args.join)),
        template: probe::Template::new(&args.template),
        rooms: if spread { rooms::names(&args.room, args.rooms.max(1)) } else { vec![args.room.clone()] },
        next_index: Default::default(),
        filter: worker::Filter::Except(witness::STREAM),
        engine_io: args.engine_io,
        transport: args.transport,
        run_id,
        progress: Arc::default(),
        board: Arc::new(worker::Board::new(args.in_flight.max(1) as usize)),
        delayed_acks: !args.immediate_acks,
        resume: args.scenario() == Scenario::Restart,
        deflate: !args.no_deflate,
    };
    let threads = args.threads.max(1);
    let fleet = fleet::Fleet::start(setup, threads, args.quiet).map_err(|e| format!("starting workers: {e}"))?;
    let load_before = sys::loadavg();
    let wall = Instant::now();
    let cpu0 = sys::process_cpu();
    let outcome =
        scenario::run(&scenario::Run { fleet: &fleet, witness: witness.as_ref(), pagers: pagers.as_ref(), args });
    let tester = report::Tester {
        threads,
        delayed_acks: !args.immediate_acks,
        wall_secs: wall.elapsed().as_secs_f64(),
        cpu_secs: (sys::process_cpu() - cpu0).as_secs_f64(),
        worker_cpu_secs: outcome.stats.cpu.as_secs_f64(),
        loadavg: (load_before, sys::loadavg()),
        rss_kib: sys::rss_kib(std::process::id()),
    };
    fleet.stop();
    if let Some(p) = pagers {
        p.stop();
    }
    if let Some(w) = witness {
        w.stop();
    }
    if let Some(p) = background {
        let (posted, failed) =
            (p.posted.load(std::sync::atomic::Ordering::Relaxed), p.failed.load(std::sync::atomic::Ordering::Relaxed));
        p.stop();
        eprintln!("natter-loadtest: background API posts: {posted} stored, {failed} failed");
    }
    let mut j = report::to_json(&outcome, &args.label, args.variant.as_deref(), &tester);
    j["transport"] = args.transport.name().into();
    if args.json {
        println!("{j}");
    } else {
        print!("{}", report::summary(&j));
    }
    if let Some(path) = &args.report {
        let body = if path.ends_with(".svg") { report::svg(&outcome) } else { report::html(&outcome, &j) };
        std::fs::write(path, body).map_err(|e| format!("{path}: {e}"))?;
    }
    if j["tester"]["bottleneck"] == true {
        eprintln!("warning: the tester used ≥ 90% of its threads' CPU: it may be what was measured");
    }
    Ok(())
}

fn unix_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Read LABEL=FILE inputs (JSON lines) and print the side-by-side table.
fn compare(args: &Args) -> Result<(), String> {
    let mut runs = Vec::new();
    for input in &args.inputs {
        let (label, path) = input.split_once('=').ok_or_else(|| format!("--input {input}: want LABEL=FILE"))?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let values = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        runs.push((label.to_string(), values));
    }
    print!("{}", report::compare(&runs, &args.ratio_to, &args.ratios, args.rows_of_first));
    Ok(())
}

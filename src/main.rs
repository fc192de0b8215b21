//! `natter`: parses flags and wires the server together. No logic lives here.

use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;

use clap::Parser;
use natter::cli::{Cli, Cmd, ServeArgs, TokenArgs};
use natter::{auth, limits, shutdown, Listeners};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::Token(args)) => token(&args),
        Some(Cmd::Serve(args)) => serve(&args),
        None => serve(&ServeArgs::from_defaults()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natter: {e}");
            ExitCode::FAILURE
        }
    }
}

fn token(args: &TokenArgs) -> Result<(), String> {
    let secret = auth::load_secret(args.jwt_secret_file.as_deref(), std::env::var("NATTER_JWT_SECRET").ok())
        .map_err(|e| e.to_string())?;
    let rooms =
        args.rooms.as_ref().map(|r| r.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect());
    let grants = auth::Grants { name: args.name.clone(), rooms, role: args.role.clone() };
    // Check the claims the way the server will, so a bad token is never handed out.
    let claims = auth::Claims {
        sub: args.sub.clone(),
        exp: 0,
        name: None,
        nbf: None,
        rooms: grants.rooms.as_ref().map(|r| serde_json::json!(r)),
        role: grants.role.clone(),
    };
    claims.access()?;
    println!("{}", auth::mint(&secret, &args.sub, &grants, args.ttl.as_secs()));
    Ok(())
}

fn serve(args: &ServeArgs) -> Result<(), String> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&args.log_level)).init();

    let nofile = limits::raise_nofile();
    let maps = limits::max_map_count();
    let ceiling = limits::connection_ceiling(nofile, maps);

    let bind = |port| {
        TcpListener::bind(SocketAddr::new(args.bind, port)).map_err(|e| format!("binding {}:{port}: {e}", args.bind))
    };
    let http = bind(args.http_port)?;
    let ws = bind(args.ws_port)?;
    let http_addr = http.local_addr().map_err(|e| e.to_string())?;
    let ws_addr = ws.local_addr().map_err(|e| e.to_string())?;

    let mut cfg = args.to_config(http_addr.port(), ws_addr.port()).map_err(|e| e.to_string())?;
    if cfg.max_connections > ceiling {
        log::info!(
            "--max-connections {} lowered to {ceiling}: open files {nofile}, vm.max_map_count {maps} (README: raising the limits)",
            cfg.max_connections
        );
        cfg.max_connections = ceiling;
    }
    log::info!(
        "can hold {} connections (open files limit {nofile}, vm.max_map_count {maps}); auth {}, fsync {:?}, data in {}",
        cfg.max_connections,
        cfg.auth.as_str(),
        cfg.fsync,
        cfg.data_dir.display()
    );

    let (trigger, shutdown) = shutdown::channel();
    ctrlc::set_handler(move || trigger.fire()).map_err(|e| format!("installing the signal handler: {e}"))?;

    // Tests and scripts wait for this line: it means both ports accept connections.
    println!("natter listening http=http://{http_addr} ws=ws://{ws_addr}/ws");
    natter::serve(cfg, Listeners { http, ws }, shutdown).map_err(|e| e.to_string())?;
    log::info!("natter stopped cleanly");
    Ok(())
}

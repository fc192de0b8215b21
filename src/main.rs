//! `natter`: parses flags and wires the server together. No logic lives here.

use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;

use clap::Parser;
use natter::cli::{BackupArgs, Cli, Cmd, ServeArgs, TokenArgs};
use natter::tls::Tls;
use natter::transport::stack::MAPS_PER_THREAD;
use natter::{auth, hangup, limits, logging, shutdown, Listeners};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::Token(args)) => token(&args),
        Some(Cmd::Backup(args)) => backup(&args),
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

fn backup(args: &BackupArgs) -> Result<(), String> {
    let report = natter::store::sqlite::backup::backup(&args.data_dir, &args.file, &args.options())
        .map_err(|e| format!("backup: {e}"))?;
    println!("natter backup: {report}");
    match &report.files {
        Some((dir, _)) => println!(
            "restore: stop natter, put this file at <data-dir>/natter.db and {} as the files directory (<data-dir>/files or --files-dir), start; every room then starts a new epoch",
            dir.display()
        ),
        None => println!(
            "restore: stop natter, put this file at <data-dir>/natter.db, start; every room then starts a new epoch"
        ),
    }
    Ok(())
}

/// SIGHUP: new TLS handshakes use the files' pair from now on; a bad pair keeps the old.
fn reload(tls: Option<&Tls>) {
    match tls.map(Tls::reload) {
        None => log::info!("SIGHUP: nothing to reload (no --tls-cert)"),
        Some(Ok(())) => log::info!("SIGHUP: TLS certificate and key reloaded"),
        Some(Err(e)) => log::error!("SIGHUP: keeping the old TLS certificate: {e}"),
    }
}

/// The admin listener: where `--admin-bind` says, else loopback on the HTTP port + 2,
/// else (that port taken, e.g. by a second natter) any free loopback port.
fn bind_admin(args: &ServeArgs) -> Result<TcpListener, String> {
    if let Some(addr) = args.admin_bind {
        return TcpListener::bind(addr).map_err(|e| format!("binding --admin-bind {addr}: {e}"));
    }
    let port = if args.http_port == 0 { 0 } else { args.http_port.saturating_add(2) };
    TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
        .or_else(|e| {
            log::warn!("admin listener: 127.0.0.1:{port}: {e}; using any free port (see the listening line)");
            TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        })
        .map_err(|e| format!("binding the admin listener: {e}"))
}

fn serve(args: &ServeArgs) -> Result<(), String> {
    logging::init(&args.log_level, args.log_format);

    let nofile = limits::raise_nofile();
    let maps = limits::max_map_count();
    let ceiling = limits::connection_ceiling(nofile, maps, MAPS_PER_THREAD);

    let bind = |port| {
        TcpListener::bind(SocketAddr::new(args.bind, port)).map_err(|e| format!("binding {}:{port}: {e}", args.bind))
    };
    let http = bind(args.http_port)?;
    let ws = bind(args.ws_port)?;
    let admin = bind_admin(args)?;
    let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;
    let http_addr = http.local_addr().map_err(|e| e.to_string())?;
    let ws_addr = ws.local_addr().map_err(|e| e.to_string())?;

    let mut cfg = args.to_config(http_addr.port(), ws_addr.port()).map_err(|e| e.to_string())?;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let tls = Tls::load(cert, key).and_then(|t| t.with_persistent_tickets(&cfg.data_dir));
        cfg.tls = Some(tls.map_err(|e| format!("--tls-cert/--tls-key: {e}"))?);
    }
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
    let tls = cfg.tls.clone();
    hangup::on_hangup(move || reload(tls.as_ref())).map_err(|e| format!("installing the SIGHUP handler: {e}"))?;

    // Tests and scripts wait for this line: it means the store is open and both ports
    // are served.
    let (http_scheme, ws_scheme) = if cfg.tls.is_some() { ("https", "wss") } else { ("http", "ws") };
    let ready = || {
        println!(
            "natter listening http={http_scheme}://{http_addr} ws={ws_scheme}://{ws_addr}/ws admin=http://{admin_addr}"
        )
    };
    natter::serve(cfg, Listeners { http, ws, admin: Some(admin) }, shutdown, ready).map_err(|e| e.to_string())?;
    log::info!("natter stopped cleanly");
    Ok(())
}

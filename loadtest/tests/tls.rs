//! natter-loadtest over `wss://` against the real natter serving TLS (in this
//! process, on port 0), with a CA and certificate from `natter-test-ca`, as
//! `make loadtest` makes them: a run whose every client checks the chain and
//! the name counts every delivery, its witness included; a certificate from
//! another CA, or for another name, stops the run with the reason.

use natter::config::Config;
use natter::shutdown::{self, ShutdownTrigger};
use natter::tls::Tls;
use natter::{Listeners, ServeError};
use serde_json::Value;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::thread::JoinHandle;

/// natter with `--tls-cert DIR/server.crt --tls-key DIR/server.key`, stopped when dropped.
struct Natter {
    ws_port: u16,
    trigger: ShutdownTrigger,
    handle: Option<JoinHandle<Result<(), ServeError>>>,
    _data: tempfile::TempDir,
}

impl Natter {
    fn start(certs: &Path) -> Natter {
        let tls = Tls::load(&certs.join("server.crt"), &certs.join("server.key")).expect("the test pair loads");
        let data = tempfile::tempdir().unwrap();
        let (http, ws) = (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
        let cfg = Config {
            data_dir: data.path().to_owned(),
            http_port: http.local_addr().unwrap().port(),
            ws_port: ws.local_addr().unwrap().port(),
            tls: Some(tls),
            rate_per_s: 100_000,
            rate_burst: 100_000,
            ..Config::default()
        };
        let ws_port = cfg.ws_port;
        let (trigger, shutdown) = shutdown::channel();
        let handle =
            std::thread::spawn(move || natter::serve(cfg, Listeners { http, ws, admin: None }, shutdown, || {}));
        Natter { ws_port, trigger, handle: Some(handle), _data: data }
    }

    fn url(&self, host: &str) -> String {
        format!("wss://{host}:{}/ws?name=lt", self.ws_port)
    }
}

impl Drop for Natter {
    fn drop(&mut self) {
        self.trigger.fire();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A CA and a server certificate for `names` in `dir`, by `natter-test-ca`.
fn certs(dir: &Path, names: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_natter-test-ca")).arg(dir).args(names).output().unwrap();
    assert!(out.status.success(), "natter-test-ca: {}", String::from_utf8_lossy(&out.stderr));
}

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_natter-loadtest"))
        .args(args)
        .args(["--json", "--quiet", "--max-seconds", "60"])
        .output()
        .expect("run natter-loadtest")
}

#[test]
fn steady_over_wss_checks_the_certificate_and_counts_every_delivery() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path(), &["localhost", "127.0.0.1"]);
    let natter = Natter::start(dir.path());
    let ca = dir.path().join("ca.pem");
    // Clients alternate between the two URLs: the IP address and the DNS name are both checked.
    let (by_ip, by_name) = (natter.url("127.0.0.1"), natter.url("localhost"));
    let out = loadtest(&[
        "steady",
        "--url",
        &by_ip,
        "--url",
        &by_name,
        "--ca",
        ca.to_str().unwrap(),
        "--await-joined",
        "--clients",
        "40",
        "--senders",
        "4",
        "--rate",
        "40",
        "--duration",
        "1",
        "--settle-ms",
        "200",
        "--threads",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "natter-loadtest failed: {stderr}");
    assert!(stderr.contains("TLSv1_3") && stderr.contains("certificate verified"), "{stderr}");
    let j: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(j["connected"], 40, "{j}");
    assert_eq!(j["connect_failed"], serde_json::json!({}), "{j}");
    let sent = j["sent"].as_u64().unwrap();
    assert!(sent >= 30, "{j}");
    assert_eq!(j["delivered"], j["expected"], "{j}");
    assert_eq!(j["expected"].as_u64().unwrap(), sent * 40, "{j}");
    assert_eq!((j["lost"].as_i64(), j["duplicated"].as_u64()), (Some(0), Some(0)), "{j}");
    // The witness spoke TLS too, on its own thread.
    let witness = &j["witness"];
    assert_eq!(witness["connect_failed"], serde_json::json!({}), "{j}");
    assert!(witness["delivered"].as_u64().unwrap() > 0, "{j}");
}

/// Runs natter with a certificate for `names` and the tester with `ca`
/// (`None`: the CA that signed it); returns the tester's error output.
fn refused(names: &[&str], other_ca: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path(), names);
    let natter = Natter::start(dir.path());
    let other = dir.path().join("other");
    certs(&other, &["127.0.0.1"]);
    let ca = if other_ca { other.join("ca.pem") } else { dir.path().join("ca.pem") };
    let url = natter.url("127.0.0.1");
    let out = loadtest(&["steady", "--url", &url, "--ca", ca.to_str().unwrap(), "--clients", "5", "--duration", "1"]);
    assert!(!out.status.success(), "the run went ahead: {}", String::from_utf8_lossy(&out.stdout));
    assert!(out.stdout.is_empty(), "no result for a run that never started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_certificate_from_another_ca_stops_the_run_with_the_reason() {
    let err = refused(&["localhost", "127.0.0.1"], true);
    assert!(err.contains("TLS handshake failed: invalid peer certificate: UnknownIssuer"), "{err}");
}

#[test]
fn a_certificate_for_another_name_stops_the_run_with_the_reason() {
    let err = refused(&["example.test"], false);
    assert!(err.contains("TLS handshake failed") && err.contains("not valid for name \"127.0.0.1\""), "{err}");
}

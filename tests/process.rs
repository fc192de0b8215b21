//! The built binary as users run it: durability across SIGKILL, clean shutdown on
//! SIGTERM, the old journal imported into the store, and the HTTP side coming back
//! after the descriptors ran out.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Client, Proc};
use serde_json::json;

const FAST: &[&str] = &["--rate-per-s", "100000", "--rate-burst", "100000"];

#[test]
fn acked_messages_survive_sigkill_and_seq_continues() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Proc::start(dir.path(), None, FAST);
    let mut c = Client::connect(&server.url("writer"));
    c.join("durable", None);
    for i in 0..500 {
        c.send(json!({"type": "msg", "room": "durable", "text": format!("m{i}"), "id": format!("d{i}")}));
    }
    let mut acked = Vec::new();
    while acked.len() < 500 {
        let v = c.recv();
        if v["type"] == "ack" {
            acked.push((v["id"].as_str().unwrap().to_owned(), v["seq"].as_u64().unwrap()));
        }
    }
    server.signal(libc::SIGKILL);
    assert_eq!(server.wait(Duration::from_secs(5)), None, "killed by the signal");

    let server = Proc::start(dir.path(), None, FAST);
    let mut r = Client::connect(&server.url("reader"));
    let (joined, history) = r.join("durable", Some(0));
    assert_eq!(joined["head"], 500);
    assert_eq!(history["complete"], true);
    let msgs = history["messages"].as_array().unwrap();
    let got: Vec<(String, u64)> =
        msgs.iter().map(|m| (m["id"].as_str().unwrap().to_owned(), m["seq"].as_u64().unwrap())).collect();
    assert_eq!(got, acked, "every acked message, in seq order");
    assert_eq!(msgs[499]["text"], "m499");

    let ack = r.post("durable", "after restart", "n1");
    assert_eq!(ack["seq"], 501);
    // A retry of a message acked before the crash is still recognised.
    let mut w = Client::connect(&server.url("writer"));
    w.join("durable", None);
    let dup = w.post("durable", "m7", "d7");
    assert_eq!((dup["dup"].as_bool(), dup["seq"].as_u64()), (Some(true), Some(8)));
}

#[test]
fn a_data_dir_of_the_old_journal_is_imported_at_start_and_the_files_kept() {
    // Written by natter's JSON-lines journal before the SQLite store: 25 messages in
    // lobby, 7 in tea.room, and a last record torn by a crash.
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-v1");
    for e in std::fs::read_dir(&fixture).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    let server = Proc::start(dir.path(), None, FAST);
    let mut r = Client::connect(&server.url("alice"));
    let (joined, history) = r.join("lobby", Some(0));
    assert_eq!((joined["head"].as_u64(), history["complete"].as_bool()), (Some(25), Some(true)));
    assert_eq!(common::history_seqs(&history), (1..=25).collect::<Vec<_>>());
    assert_eq!(history["messages"][0]["text"], "你好，世界");
    assert_eq!(r.join("tea.room", Some(0)).0["head"], 7);
    assert_eq!(r.post("lobby", "next", "new-1")["seq"], 26, "seq continues after the import");
    assert!(dir.path().join("journal-000001.log.imported").exists());
    drop(server);
    // A second start does not import again. The journal's open-mode ids (`u-<name>`)
    // belong to no open-mode key any more; a token whose `sub` is one of them is that
    // user, and its imported message ids still de-duplicate.
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, "process-test-secret-process-test-secret").unwrap();
    let secret_arg = secret.to_str().unwrap();
    let args = [FAST, &["--auth", "token", "--jwt-secret-file", secret_arg]].concat();
    let server = Proc::start(dir.path(), None, &args);
    let token = natter::auth::mint(b"process-test-secret-process-test-secret", "u-alice", &Default::default(), 60);
    let mut r = Client::connect(&format!("ws://{}/ws?token={token}", server.ws));
    assert_eq!(common::history_seqs(&r.join("lobby", Some(0)).1), (1..=26).collect::<Vec<_>>());
    let dup = r.post("lobby", "again", "c-25");
    assert_eq!((dup["dup"].as_bool(), dup["seq"].as_u64()), (Some(true), Some(25)), "imported ids still de-duplicate");
}

#[test]
fn sigterm_sends_1001_to_every_client_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Proc::start(dir.path(), None, &[]);
    let mut clients: Vec<Client> = (0..5).map(|i| Client::connect(&server.url(&format!("c{i}")))).collect();
    for c in &mut clients {
        c.join("lobby", None);
    }
    clients[0].post("lobby", "before shutdown", "s1");
    let started = std::time::Instant::now();
    server.signal(libc::SIGTERM);
    let mut codes = HashSet::new();
    for c in &mut clients {
        let (code, reason) = c.expect_close();
        assert_eq!(reason, "server shutting down");
        codes.insert(code);
    }
    assert_eq!(codes, HashSet::from([1001]));
    assert_eq!(server.wait(Duration::from_secs(5)), Some(0), "clean exit");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The store was committed: the message is there after a restart.
    let server = Proc::start(dir.path(), None, &[]);
    let mut r = Client::connect(&server.url("r"));
    assert_eq!(r.join("lobby", Some(0)).1["messages"][0]["text"], "before shutdown");
}

#[test]
fn the_http_side_serves_again_after_the_descriptors_ran_out() {
    // Descriptors run out while the caps still admit (tiny_http, when it faced clients,
    // lost its accept thread here for good); two limits, as when it took two per
    // connection and failed differently with each parity left.
    for nofile in [128, 129] {
        let dir = tempfile::tempdir().unwrap();
        // Caps above the descriptors, so that accept itself fails.
        let caps = ["--http-max-connections", "100000", "--http-max-connections-per-ip", "100000"];
        let server = Proc::start_with_nofile(dir.path(), &caps, nofile);
        assert_eq!(common::http_get(server.http, "/healthz").0, 200);
        // Connections that never send a request each hold descriptors until none is
        // left (which used to end tiny_http's accept thread for good).
        let idle: Vec<std::net::TcpStream> =
            (0..nofile + 16).map(|_| std::net::TcpStream::connect(server.http).unwrap()).collect();
        common::wait_until(|| try_status(server.http, "/healthz").is_none(), "the HTTP side to run out");
        drop(idle);
        common::wait_until(|| try_status(server.http, "/healthz") == Some(200), "/healthz to answer again");
        let (_, metrics) = common::http_get(server.admin, "/metrics");
        let failed = common::metric_value(&metrics, "natter_http_accept_errors_total");
        assert!(failed.is_some_and(|n| n > 0), "failed accepts counted: {failed:?} (limit {nofile})");
        // The chat side was never affected.
        let mut c = Client::connect(&server.url("after"));
        c.join("lobby", None);
    }
}

/// A GET that fails quietly (refused, reset, timed out): `None`.
fn try_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split(' ').nth(1)?.parse().ok()
}

const VITAL_CHILD: &str = "NATTER_VITAL_CHILD";

/// A vital thread (dispatcher, writer shard, store reader) that panics ends the whole
/// process at once, exit code 70, with a line that names it: never a process that
/// keeps accepting clients it cannot serve. Run in a child copy of this test binary,
/// since the exit would end the test runner too.
#[test]
fn a_vital_thread_that_panics_ends_the_process_with_a_clear_line() {
    if std::env::var_os(VITAL_CHILD).is_some() {
        let _thread = natter::shutdown::spawn_vital("dispatcher", || panic!("injected fault")).expect("spawn");
        // Only reached if the panic did not end the process: the parent sees exit 0.
        std::thread::sleep(Duration::from_secs(20));
        std::process::exit(0);
    }
    let exe = std::env::current_exe().expect("this test binary");
    let name = "a_vital_thread_that_panics_ends_the_process_with_a_clear_line";
    let out = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(VITAL_CHILD, "1")
        .output()
        .expect("run the child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(natter::shutdown::FATAL_EXIT), "stderr: {stderr}");
    assert!(stderr.contains("natter: fatal: the dispatcher thread panicked; exiting"), "stderr: {stderr}");
}

/// A store that cannot start (the data dir is a file) is a clear error and a
/// non-zero exit before anything listens.
#[test]
fn a_store_that_cannot_start_is_a_clear_error_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").expect("write");
    let out = std::process::Command::new(common::natter_bin())
        .args(["serve", "--bind", "127.0.0.1", "--http-port", "0", "--ws-port", "0", "--data-dir"])
        .arg(&file)
        .output()
        .expect("run natter");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "natter must not start: {all}");
    assert!(!all.contains("natter listening"), "nothing listens: {all}");
    assert!(all.contains(&file.display().to_string()), "the error names the data dir: {all}");
}

/// A secret file its group or others may write stops the start with a line naming
/// it: the API keys, the JWT secret, the webhook secret and the TLS key alike.
#[test]
fn secret_files_others_may_write_stop_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        path.display().to_string()
    };
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    let cert = dir.path().join("tls.crt");
    std::fs::write(&cert, pair.cert.pem()).expect("write");
    let cases: Vec<(String, Vec<String>)> = vec![
        (secret("api.keys", "backend-key-0123456789 impersonate\n"), vec!["--api-key-file".into()]),
        (
            secret("jwt.secret", "a-jwt-secret-of-at-least-32-bytes-0123456789"),
            vec!["--auth".into(), "token".into(), "--jwt-secret-file".into()],
        ),
        (
            secret("hook.secret", "a-webhook-secret"),
            vec!["--webhook".into(), "http://127.0.0.1:9/".into(), "--webhook-secret-file".into()],
        ),
        (
            secret("tls.key", &pair.key_pair.serialize_pem()),
            vec!["--tls-cert".into(), cert.display().to_string(), "--tls-key".into()],
        ),
    ];
    for (file, flags) in cases {
        let mut child = std::process::Command::new(common::natter_bin())
            .args(["serve", "--bind", "127.0.0.1", "--http-port", "0", "--ws-port", "0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(&flags)
            .arg(&file)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run natter");
        // A natter that started anyway is stopped, so the test fails rather than hangs.
        let deadline = std::time::Instant::now() + common::WAIT;
        while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let out = child.wait_with_output().expect("natter's output");
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "natter must not start with {file} writable by others: {all}");
        assert!(!all.contains("natter listening"), "nothing listens: {all}");
        assert!(all.contains(&file) && all.contains("may be written by its group or others"), "{all}");
    }
}

//! Redis with Sentinel (`--redis redis+sentinel://…/name`) and `--redis-min-replicas`:
//! the test deployment fails over as the other tests expect; natter follows a failover
//! under posting, refusing posts for a few seconds and losing no acked one; a post no
//! replica confirmed in time is `unavailable`, and its retry with the same id is acked
//! once; `/healthz` and `/metrics` name the master and its change; and health fails
//! when delivery stalls while the sockets stay up (`SIGSTOP`ped Redis).

mod common;
mod common_redis;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::sentinel::{role, SentinelCluster};
use common::{http_get, metric_value, wait_until, Client, TestServer};
use common_redis::RedisServer;
use serde_json::{json, Value};

fn instance(url: String, min_replicas: usize) -> TestServer {
    TestServer::start_with(move |c| {
        c.redis = Some(url);
        c.redis_min_replicas = min_replicas;
        c.redis_presence_ttl = Duration::from_millis(1500);
        common::unlimited_rate(c);
    })
}

fn healthz(server: &TestServer) -> (u16, Value) {
    let (status, body) = http_get(server.admin, "/healthz");
    (status, serde_json::from_str(&body).expect("healthz is JSON"))
}

/// What became of one post: acked with a seq (maybe as a duplicate), or refused.
enum Outcome {
    Acked { seq: u64, dup: bool },
    Refused(String),
}

/// Posts `id` and reads until its ack or its error (deliveries in between skipped).
fn post(c: &mut Client, id: &str) -> Outcome {
    c.send(json!({"type": "msg", "room": "lobby", "text": format!("text of {id}"), "id": id}));
    loop {
        let v = c.recv();
        match v["type"].as_str() {
            Some("ack") if v["id"] == id => {
                return Outcome::Acked { seq: v["seq"].as_u64().expect("an ack has a seq"), dup: v["dup"] == true }
            }
            Some("error") if v["ref"] == id => return Outcome::Refused(v["code"].as_str().unwrap_or("").to_owned()),
            _ => {}
        }
    }
}

/// The message bodies the master on `port` holds for room `lobby`: seq → JSON.
fn bodies(port: u16) -> HashMap<u64, String> {
    let v = SentinelCluster::command(port, &["HGETALL", "natter:room:lobby:msgs"]).expect("HGETALL on the master");
    let pairs: Vec<(u64, String)> = redis::from_redis_value(v).expect("seq → JSON pairs");
    pairs.into_iter().collect()
}

#[test]
fn the_test_deployment_promotes_the_replica_when_the_master_is_killed() {
    let mut cluster = SentinelCluster::start();
    let old = cluster.master_port();
    assert_eq!(role(old).as_deref(), Some("master"));
    let killed = cluster.kill_master();
    assert_eq!(killed, old);
    let new = cluster.await_failover(old);
    assert_ne!(new, old);
    let i = cluster.node_index(old);
    cluster.restart_node(i);
    cluster.await_replicas(new, 1);
    assert_eq!(role(old).as_deref(), Some("slave"), "the old master came back as a replica");
}

#[test]
fn posts_resume_after_the_master_is_killed_and_nothing_acked_is_lost() {
    // Two replicas: after the failover, one is left to confirm the writes.
    let mut cluster = SentinelCluster::start_with(2);
    let server = instance(cluster.url(), 1);
    let old = cluster.master_port();
    let mut c = server.connect("poster");
    c.join("lobby", None);

    // Health names the master in use, and says it never changed.
    wait_until(|| healthz(&server).1["redis_master"] == format!("127.0.0.1:{old}"), "healthz names the master");
    let (status, h) = healthz(&server);
    assert_eq!((status, h["redis_master_changed_at_ms"].as_u64()), (200, Some(0)), "{h}");

    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut n = 0;
    let mut next_id = || {
        n += 1;
        format!("p{n}")
    };
    for _ in 0..20 {
        let id = next_id();
        match post(&mut c, &id) {
            Outcome::Acked { seq, .. } => acked.push((id, seq)),
            Outcome::Refused(code) => panic!("{id} refused ({code}) before any fault"),
        }
    }

    let killed_at = Instant::now();
    cluster.kill_master();
    let (mut first_refusal, mut last_refusal, mut refused) = (None, None, 0);
    // Post on (a refused id is retried until acked) until 20 are acked after the
    // first refusal; bounded well past the failover's own bound.
    let mut after = 0;
    let mut pending: Option<String> = None;
    while after < 20 {
        assert!(killed_at.elapsed() < Duration::from_secs(40), "posts did not resume: {refused} refused");
        let id = pending.take().unwrap_or_else(&mut next_id);
        match post(&mut c, &id) {
            Outcome::Acked { seq, .. } => {
                acked.push((id, seq));
                after += usize::from(first_refusal.is_some());
            }
            Outcome::Refused(code) => {
                assert_eq!(code, "unavailable");
                refused += 1;
                first_refusal.get_or_insert_with(Instant::now);
                last_refusal = Some(Instant::now());
                pending = Some(id);
            }
        }
    }
    let window = match (first_refusal, last_refusal) {
        (Some(first), Some(last)) => last.duration_since(first),
        _ => Duration::ZERO,
    };
    eprintln!(
        "failover: posts refused for {:.2} s ({refused} refusals), first ack after the kill at {:.2} s",
        window.as_secs_f64(),
        last_refusal.map_or(0.0, |l| l.duration_since(killed_at).as_secs_f64())
    );
    assert!(window < Duration::from_secs(20), "posts refused for {window:?}");

    // Every acked post is on the new master, once, under its acked seq.
    let new = cluster.await_failover(old);
    let held = bodies(new);
    for (id, seq) in &acked {
        let body = held.get(seq).unwrap_or_else(|| panic!("acked {id} (seq {seq}) is lost"));
        assert!(body.contains(&format!("\"id\":\"{id}\"")), "seq {seq} names {id}: {body}");
    }
    for (id, _) in &acked {
        let copies = held.values().filter(|b| b.contains(&format!("\"id\":\"{id}\""))).count();
        assert_eq!(copies, 1, "{id} stored once");
    }

    // Health and metrics name the new master and when it changed.
    wait_until(|| healthz(&server).1["redis_master"] == format!("127.0.0.1:{new}"), "healthz names the new master");
    let (status, h) = healthz(&server);
    assert_eq!(status, 200, "{h}");
    assert!(h["redis_master_changed_at_ms"].as_u64() > Some(0), "{h}");
    let metrics = server.metrics();
    assert_eq!(metric_value(&metrics, &format!("natter_redis_master{{addr=\"127.0.0.1:{new}\"}}")), Some(1));
    assert_eq!(metric_value(&metrics, "natter_redis_master_changes_total"), Some(1));
}

#[test]
fn a_post_no_replica_confirmed_is_unavailable_and_its_retry_is_acked_once() {
    let mut cluster = SentinelCluster::start();
    let server = instance(cluster.url(), 1);
    let master = cluster.master_port();
    let replica = cluster.nodes.iter().position(|n| n.port != master).expect("a replica");
    let mut c = server.connect("poster");
    c.join("lobby", None);
    assert!(matches!(post(&mut c, "a1"), Outcome::Acked { seq: 1, dup: false }));

    cluster.pause_node(replica);
    match post(&mut c, "w1") {
        Outcome::Refused(code) => assert_eq!(code, "unavailable"),
        Outcome::Acked { seq, .. } => panic!("w1 acked as {seq} with its only replica stopped"),
    }
    cluster.resume_node(replica);
    cluster.await_replicas(master, 1);
    match post(&mut c, "w1") {
        Outcome::Acked { seq, dup } => assert_eq!((seq, dup), (2, true), "the retry finds the first attempt"),
        Outcome::Refused(code) => panic!("the retry was refused: {code}"),
    }
    let held = bodies(master);
    assert_eq!(held.values().filter(|b| b.contains("\"id\":\"w1\"")).count(), 1, "w1 stored once: {held:?}");
    assert_eq!(held.len(), 2);
}

#[test]
fn one_wait_covers_a_pipeline_of_appends() {
    let cluster = SentinelCluster::start();
    let server = instance(cluster.url(), 1);
    let master = cluster.master_port();
    let mut c = server.connect("poster");
    c.join("lobby", None);
    let calls = |port| -> u64 {
        let info = SentinelCluster::command(port, &["INFO", "commandstats"]).expect("INFO");
        let info: String = redis::from_redis_value(info).expect("INFO text");
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
            .and_then(|v| v.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let before = calls(master);
    let n = 200;
    for i in 0..n {
        c.send(json!({"type": "msg", "room": "lobby", "text": "burst", "id": format!("b{i}")}));
    }
    let mut acks = 0;
    while acks < n {
        let v = c.recv();
        assert_ne!(v["type"], "error", "{v}");
        if v["type"] == "ack" {
            acks += 1;
        }
    }
    let waits = calls(master) - before;
    eprintln!("{n} posts, {waits} WAITs");
    assert!(waits < n, "{waits} WAITs for {n} posts: one per pipeline, not per message");
}

#[test]
fn health_fails_when_delivery_stalls_while_the_sockets_stay_up() {
    let redis = RedisServer::start();
    let server = instance(redis.url(), 0);
    let mut c = server.connect("watcher");
    c.join("lobby", None);
    assert!(matches!(post(&mut c, "a1"), Outcome::Acked { .. }));
    assert_eq!(healthz(&server).0, 200);

    redis.pause();
    wait_until(|| healthz(&server).0 == 503, "healthz fails while Redis is stopped");
    let (_, h) = healthz(&server);
    assert_eq!((h["status"].as_str(), h["delivery"].as_str()), (Some("failing"), Some("stalled")), "{h}");
    let metrics = server.metrics();
    assert_eq!(metric_value(&metrics, "natter_redis_delivery_stalled"), Some(1));

    redis.resume();
    wait_until(|| healthz(&server).0 == 200, "healthz passes once delivery moves again");
    assert!(matches!(post(&mut c, "a2"), Outcome::Acked { .. }));
}

#[test]
fn a_master_demoted_by_sentinel_acks_nothing_and_posts_move_to_the_new_one() {
    let cluster = SentinelCluster::start();
    // Without --redis-min-replicas the old master acks what it takes between the
    // replica's promotion and its own demotion, and those writes are lost (replication
    // is asynchronous): WAIT is what refuses them.
    let server = instance(cluster.url(), 1);
    let old = cluster.master_port();
    let mut c = server.connect("poster");
    c.join("lobby", None);
    let mut acked = Vec::new();
    for i in 0..10 {
        let id = format!("p{i}");
        if let Outcome::Acked { seq, .. } = post(&mut c, &id) {
            acked.push((id, seq));
        }
    }
    // The old master stays up and becomes a replica: it answers READONLY to writes.
    let sentinel = cluster.sentinels[0].port;
    SentinelCluster::command(sentinel, &["SENTINEL", "FAILOVER", common::sentinel::MASTER_NAME])
        .expect("SENTINEL FAILOVER");
    let started = Instant::now();
    let mut i = 10;
    let mut after = 0;
    while after < 10 {
        assert!(started.elapsed() < Duration::from_secs(30), "posts did not move to the new master");
        let id = format!("p{i}");
        i += 1;
        if let Outcome::Acked { seq, .. } = post(&mut c, &id) {
            acked.push((id, seq));
            if role(old).as_deref() == Some("slave") {
                after += 1;
            }
        }
    }
    let new = cluster.await_failover(old);
    let held = bodies(new);
    for (id, seq) in &acked {
        let body = held.get(seq).unwrap_or_else(|| panic!("acked {id} (seq {seq}) is not on the new master"));
        assert!(body.contains(&format!("\"id\":\"{id}\"")), "seq {seq} names {id}: {body}");
    }
}

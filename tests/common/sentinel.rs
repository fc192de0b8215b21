//! Test helper: a Redis deployment with Sentinel on loopback — 1 master, 1 replica
//! (more on request) and 3 sentinels, each a child process on a free port in one temp
//! dir, started by the test and killed by PID on drop. Fault injection for failover
//! tests and the chaos checker: `kill -9` the master, `SIGSTOP`/`SIGCONT` a node, start
//! a killed node again (it rejoins as a replica of whoever is master then).
//!
//! Every wait is bounded ([`CLUSTER_WAIT`]) and polls the processes for the state it
//! awaits; nothing sleeps to synchronise. Never touches any other Redis.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The master name the sentinels monitor.
pub const MASTER_NAME: &str = "mymaster";

/// How long starting the deployment or a failover may take before the test fails.
pub const CLUSTER_WAIT: Duration = Duration::from_secs(30);

/// How long a sentinel waits without an answer before it calls a node down
/// (`down-after-milliseconds`): short, so a failover takes a few seconds.
pub const DOWN_AFTER_MS: u64 = 1000;

/// One `redis-server` (master or replica) of the deployment.
pub struct Node {
    pub port: u16,
    child: Option<Child>,
    stopped: bool,
}

impl Node {
    /// The process id (while it runs), for signals.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// 1 master, `replicas` replicas, 3 sentinels (quorum 2), all on 127.0.0.1.
pub struct SentinelCluster {
    pub nodes: Vec<Node>,
    pub sentinels: Vec<Node>,
    dir: tempfile::TempDir,
}

impl SentinelCluster {
    /// 1 master, 1 replica, 3 sentinels; returns once the replica is in sync and every
    /// sentinel knows the master, the replica and the other sentinels.
    pub fn start() -> SentinelCluster {
        Self::start_with(1)
    }

    pub fn start_with(replicas: usize) -> SentinelCluster {
        let dir = tempfile::tempdir().expect("temp dir for the sentinel cluster");
        let mut cluster = SentinelCluster { nodes: Vec::new(), sentinels: Vec::new(), dir };
        let master = cluster.spawn_node(None);
        cluster.nodes.push(master);
        let master_port = cluster.nodes[0].port;
        for _ in 0..replicas {
            let replica = cluster.spawn_node(Some(master_port));
            cluster.nodes.push(replica);
        }
        for _ in 0..3 {
            let s = cluster.spawn_sentinel(master_port);
            cluster.sentinels.push(s);
        }
        cluster.await_settled(master_port);
        cluster
    }

    /// `redis+sentinel://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/mymaster`: natter's
    /// `--redis` for this deployment.
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", addrs.join(","))
    }

    /// `redis://127.0.0.1:port/` of one node (for direct checks).
    pub fn node_url(port: u16) -> String {
        format!("redis://127.0.0.1:{port}/")
    }

    /// The master's port as the first sentinel that answers sees it.
    pub fn master_port(&self) -> u16 {
        self.sentinels
            .iter()
            .filter(|s| s.running() && !s.stopped)
            .find_map(|s| sentinel_master(s.port))
            .expect("a sentinel names the master")
    }

    /// Index in `nodes` of the node on `port`.
    pub fn node_index(&self, port: u16) -> usize {
        self.nodes.iter().position(|n| n.port == port).expect("a node of this cluster")
    }

    /// `kill -9` the current master; returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port();
        let i = self.node_index(port);
        kill(&mut self.nodes[i]);
        port
    }

    /// Waits until every sentinel names a master other than `old` and that node
    /// answers `ROLE` as master; returns its port.
    pub fn await_failover(&self, old: u16) -> u16 {
        let deadline = Instant::now() + CLUSTER_WAIT;
        loop {
            let seen: Vec<Option<u16>> = self.sentinels.iter().map(|s| sentinel_master(s.port)).collect();
            if let Some(Some(new)) = seen.first() {
                if *new != old && seen.iter().all(|p| *p == Some(*new)) && role(*new).as_deref() == Some("master") {
                    return *new;
                }
            }
            assert!(Instant::now() < deadline, "no failover from port {old} within {CLUSTER_WAIT:?}: {seen:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the killed node `i` again on its port as a replica of the current master
    /// (Sentinel would reconfigure it anyway; this skips the wait).
    pub fn restart_node(&mut self, i: usize) {
        let master = self.master_port();
        let port = self.nodes[i].port;
        kill(&mut self.nodes[i]);
        let deadline = Instant::now() + CLUSTER_WAIT;
        // The port may linger for a moment after the kill.
        loop {
            match self.try_spawn_node(port, Some(master)) {
                Ok(node) => {
                    self.nodes[i] = node;
                    return;
                }
                Err(log) => assert!(Instant::now() < deadline, "node {port} would not restart:\n{log}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `SIGSTOP` node `i`: its sockets stay open but it answers nothing.
    pub fn pause_node(&mut self, i: usize) {
        signal(&self.nodes[i], "-STOP");
        self.nodes[i].stopped = true;
    }

    /// `SIGCONT` node `i`.
    pub fn resume_node(&mut self, i: usize) {
        signal(&self.nodes[i], "-CONT");
        self.nodes[i].stopped = false;
    }

    /// Waits until `port` reports `n` connected replicas in sync (`INFO replication`).
    pub fn await_replicas(&self, port: u16, n: usize) {
        let deadline = Instant::now() + CLUSTER_WAIT;
        loop {
            if in_sync_replicas(port) >= n {
                return;
            }
            assert!(Instant::now() < deadline, "node {port} has no {n} replicas in sync within {CLUSTER_WAIT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A command to node `port`, its reply as a redis value.
    pub fn command(port: u16, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let mut con = connection(port)?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut con)
    }

    fn await_settled(&self, master: u16) {
        let replicas = self.nodes.len() - 1;
        self.await_replicas(master, replicas);
        let deadline = Instant::now() + CLUSTER_WAIT;
        loop {
            let ready = self.sentinels.iter().all(|s| {
                sentinel_master(s.port) == Some(master)
                    && sentinel_count(s.port, "REPLICAS") >= replicas
                    && sentinel_count(s.port, "SENTINELS") >= self.sentinels.len() - 1
            });
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the sentinels did not find each other within {CLUSTER_WAIT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn spawn_node(&self, replica_of: Option<u16>) -> Node {
        let mut last = String::new();
        // A free port can be taken between our probe and the bind: retry.
        for _ in 0..5 {
            match self.try_spawn_node(free_port(), replica_of) {
                Ok(node) => return node,
                Err(log) => last = log,
            }
        }
        panic!("redis-server would not start:\n{last}");
    }

    fn try_spawn_node(&self, port: u16, replica_of: Option<u16>) -> Result<Node, String> {
        let log = self.dir.path().join(format!("redis-{port}.log"));
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir".as_ref(), self.dir.path().as_os_str()])
            .args(["--dbfilename", &format!("dump-{port}.rdb")])
            .args(["--logfile".as_ref(), log.as_os_str()])
            .args(["--daemonize", "no", "--protected-mode", "no"]);
        if let Some(master) = replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        let node = Node { port, child: Some(spawn(cmd, "redis-server")), stopped: false };
        await_up(node, &log)
    }

    fn spawn_sentinel(&self, master: u16) -> Node {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let conf = self.dir.path().join(format!("sentinel-{port}.conf"));
            let log = self.dir.path().join(format!("sentinel-{port}.log"));
            write_sentinel_conf(&conf, port, master, &log);
            let mut cmd = Command::new("redis-sentinel");
            cmd.arg(&conf);
            let node = Node { port, child: Some(spawn(cmd, "redis-sentinel")), stopped: false };
            match await_up(node, &log) {
                Ok(node) => return node,
                Err(log) => last = log,
            }
        }
        panic!("redis-sentinel would not start:\n{last}");
    }

    /// The directory holding every process's log (for a failing test's message).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SentinelCluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().chain(self.sentinels.iter_mut()) {
            kill(node);
        }
    }
}

fn write_sentinel_conf(path: &PathBuf, port: u16, master: u16, log: &Path) {
    let conf = format!(
        "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\nlogfile {log}\n\
         sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
         sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
         sentinel failover-timeout {MASTER_NAME} 5000\n\
         sentinel parallel-syncs {MASTER_NAME} 1\n",
        log = log.display()
    );
    std::fs::write(path, conf).expect("write sentinel.conf");
}

fn spawn(mut cmd: Command, what: &str) -> Child {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{what} is not installed (not on PATH): run scripts/ensure-redis.sh \
             (`make test` runs it first), then run the tests again"
        ),
        Err(e) => panic!("starting {what}: {e}"),
    }
}

/// Waits until the node answers PING; on failure kills it and returns its log.
fn await_up(mut node: Node, log: &Path) -> Result<Node, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if SentinelCluster::command(node.port, &["PING"]).is_ok() {
            return Ok(node);
        }
        if let Some(Ok(Some(_))) = node.child.as_mut().map(Child::try_wait) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(&mut node);
    Err(std::fs::read_to_string(log).unwrap_or_default())
}

/// SIGKILL by PID (a paused node too), and reap it.
fn kill(node: &mut Node) {
    if let Some(mut child) = node.child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    node.stopped = false;
}

fn signal(node: &Node, sig: &str) {
    let pid = node.pid().expect("the node runs");
    let ok = Command::new("kill").args([sig, &pid.to_string()]).status().is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

fn connection(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(SentinelCluster::node_url(port))?;
    let con = client.get_connection_with_timeout(Duration::from_millis(300))?;
    con.set_read_timeout(Some(Duration::from_millis(500)))?;
    con.set_write_timeout(Some(Duration::from_millis(500)))?;
    Ok(con)
}

/// `SENTINEL get-master-addr-by-name` on one sentinel: the master's port.
fn sentinel_master(sentinel: u16) -> Option<u16> {
    let mut con = connection(sentinel).ok()?;
    let addr: Option<(String, u16)> =
        redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(MASTER_NAME).query(&mut con).ok()?;
    addr.map(|(_, port)| port)
}

/// How many replicas (`REPLICAS`) or other sentinels (`SENTINELS`) a sentinel knows,
/// counting only those it does not consider down.
fn sentinel_count(sentinel: u16, what: &str) -> usize {
    let Ok(mut con) = connection(sentinel) else { return 0 };
    let found: redis::RedisResult<Vec<std::collections::HashMap<String, String>>> =
        redis::cmd("SENTINEL").arg(what).arg(MASTER_NAME).query(&mut con);
    found.map_or(0, |list| list.iter().filter(|m| m.get("flags").is_some_and(|f| !f.contains("down"))).count())
}

/// The first element of `ROLE` on `port` (`master`, `slave`), if it answers.
pub fn role(port: u16) -> Option<String> {
    let mut con = connection(port).ok()?;
    let v: redis::Value = redis::cmd("ROLE").query(&mut con).ok()?;
    match v {
        redis::Value::Array(items) => items.into_iter().next().and_then(|r| redis::from_redis_value(r).ok()),
        _ => None,
    }
}

/// Replicas of `port` whose link is up and whose offset has caught up with the master.
fn in_sync_replicas(port: u16) -> usize {
    let Ok(mut con) = connection(port) else { return 0 };
    let Ok(info): redis::RedisResult<String> = redis::cmd("INFO").arg("replication").query(&mut con) else {
        return 0;
    };
    let master_offset = field(&info, "master_repl_offset").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains("state=online"))
        .filter(|l| {
            l.split(',').find_map(|kv| kv.strip_prefix("offset=")).and_then(|v| v.parse::<u64>().ok())
                >= Some(master_offset)
        })
        .count()
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    listener.local_addr().expect("probe port address").port()
}

//! Fan-out benchmarks over real loopback sockets, through natter's own write path.
//!
//! - `fanout/*`: cost of writing one message (and a burst of 10) to N receivers with
//!   `natter::delivery::fanout::deliver` (outbox + one coalesced `sendmsg` per socket), next to a
//!   bare loop of one non-blocking `send` per socket and frame over the same sockets.
//! - `serialize/*`: encode once and share the bytes vs encode per receiver.
//! - `parse`, `history/*`: the other steps a message takes (the store's commit is
//!   benches/store.rs).
//!
//! The receiving ends live in a child process (this binary re-run in drain mode) so the
//! 10,000-receiver case needs 10,000 descriptors here, not 20,000.

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sample_msg;
use criterion::{BenchmarkId, Criterion, Throughput};
use natter::delivery::fanout::{self, Out, Shard};
use natter::delivery::outbox::{Conn, Flush};
use natter::dispatcher::history::{History, Stored};
use natter::protocol::wire::{self, Frame};
use natter::protocol::{parse_client, ParseLimits};

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
const DRAIN_ENV: &str = "NATTER_BENCH_DRAIN";

/// N server-side sockets whose peers a child process reads and discards.
struct Receivers {
    conns: Vec<Arc<Conn>>,
    child: Child,
}

impl Receivers {
    fn open(n: usize) -> Receivers {
        natter::limits::raise_nofile();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .env(DRAIN_ENV, format!("{addr} {n}"))
            .spawn()
            .expect("spawn the drain process");
        let conns = (0..n)
            .map(|i| {
                let (s, peer) = listener.accept().unwrap();
                s.set_nodelay(true).unwrap();
                Arc::new(Conn::new(i as u64, s, peer))
            })
            .collect();
        Receivers { conns, child }
    }

    /// Waits until every socket has written all it holds (the backlog must not grow
    /// across iterations, or the benchmark would measure memory, not writes).
    fn settle(conns: &[Arc<Conn>], blocked: Vec<Arc<Conn>>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for c in blocked.iter().chain(conns.iter().filter(|c| c.backlog() > 0)) {
            assert_eq!(c.flush_until(deadline), Flush::Done, "the drain process keeps up");
        }
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        self.conns.clear();
        let _ = self.child.wait();
    }
}

/// Drain mode: connect `n` sockets to `addr` and read until all are closed.
fn drain(spec: &str) {
    let (addr, n) = spec.split_once(' ').unwrap();
    natter::limits::raise_nofile();
    let n: usize = n.parse().unwrap();
    let socks: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // SAFETY: plain epoll calls on descriptors this process owns.
    unsafe {
        let ep = libc::epoll_create1(0);
        for (i, s) in socks.iter().enumerate() {
            s.set_nonblocking(true).unwrap();
            let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
            libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev);
        }
        let mut open = n;
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut buf = vec![0u8; 256 * 1024];
        while open > 0 {
            let k = libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 60_000);
            if k <= 0 {
                return; // the parent is gone or stuck: never outlive it
            }
            for ev in &events[..k as usize] {
                let fd = socks[ev.u64 as usize].as_raw_fd();
                loop {
                    let r = libc::read(fd, buf.as_mut_ptr() as *mut _, buf.len());
                    if r == 0 {
                        libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut());
                        open -= 1;
                        break;
                    }
                    if r < 0 {
                        break;
                    }
                }
            }
        }
    }
}

/// One non-blocking `send` per socket and frame, waiting when a socket is full: what
/// a single writer can do with no queueing, no coalescing.
fn bare_write(conns: &[Arc<Conn>], frame: &Frame, times: usize) {
    for c in conns {
        for _ in 0..times {
            let mut off = 0;
            while off < frame.len() {
                // SAFETY: send(2) from a live buffer on a socket we own.
                let r = unsafe {
                    libc::send(
                        c.raw_fd(),
                        frame[off..].as_ptr() as *const _,
                        frame.len() - off,
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
                if r > 0 {
                    off += r as usize;
                } else {
                    natter::delivery::outbox::wait_writable(&[c.raw_fd()], Duration::from_millis(100));
                }
            }
        }
    }
}

/// natter's write path: each frame staged once for the whole room, then delivered
/// (one writer shard here, so this is the cost per core).
fn natter_write(members: &Arc<[Arc<Conn>]>, frames: &[Frame]) {
    let batch: Vec<Out> = frames.iter().map(|f| Out::room(members.clone(), None, f.clone())).collect();
    let done = fanout::deliver(&batch, Shard::ALL, usize::MAX);
    Receivers::settle(members, done.blocked);
}

fn bench_fanout(c: &mut Criterion, rx: &Receivers) {
    let frame = wire::encode(&sample_msg(1));
    let burst: Vec<Frame> = (1..=10).map(|s| wire::encode(&sample_msg(s))).collect();
    let mut g = c.benchmark_group("fanout");
    g.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    for n in SIZES {
        let conns = &rx.conns[..n];
        let members: Arc<[Arc<Conn>]> = conns.iter().cloned().collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("natter_one", n), &n, |b, _| {
            b.iter(|| natter_write(&members, std::slice::from_ref(&frame)))
        });
        g.bench_with_input(BenchmarkId::new("bare_one", n), &n, |b, _| b.iter(|| bare_write(conns, &frame, 1)));
        g.throughput(Throughput::Elements(10 * n as u64));
        g.bench_with_input(BenchmarkId::new("natter_burst10", n), &n, |b, _| b.iter(|| natter_write(&members, &burst)));
        g.bench_with_input(BenchmarkId::new("bare_burst10", n), &n, |b, _| b.iter(|| bare_write(conns, &frame, 10)));
    }
    g.finish();
}

fn bench_serialize(c: &mut Criterion, rx: &Receivers) {
    let conns = &rx.conns[..1000];
    let members: Arc<[Arc<Conn>]> = conns.iter().cloned().collect();
    let mut g = c.benchmark_group("serialize");
    g.sample_size(20).measurement_time(Duration::from_secs(3)).throughput(Throughput::Elements(1000));
    g.bench_function("once_1000", |b| {
        b.iter(|| {
            let frame = wire::encode(&sample_msg(7));
            natter_write(&members, std::slice::from_ref(&frame))
        })
    });
    g.bench_function("per_receiver_1000", |b| {
        b.iter(|| {
            let batch: Vec<Out> = conns.iter().map(|c| Out::One(c.clone(), wire::encode(&sample_msg(7)))).collect();
            let done = fanout::deliver(&batch, Shard::ALL, usize::MAX);
            Receivers::settle(conns, done.blocked);
        })
    });
    g.finish();
}

fn bench_steps(c: &mut Criterion) {
    let limits = ParseLimits { max_text_chars: 4000 };
    let frame = r#"{"type":"msg","room":"lobby","text":"hello, this is a typical chat message of about eighty bytes","id":"c-0123456789"}"#;
    c.bench_function("parse/client_msg", |b| b.iter(|| parse_client(std::hint::black_box(frame), limits).unwrap()));

    let mut g = c.benchmark_group("history");
    let frame = wire::encode(&sample_msg(1));
    g.bench_function("append", |b| {
        let mut h = History::new(1000, 4096);
        let mut seq = 0;
        b.iter(|| {
            seq += 1;
            h.push(Stored { seq, frame: frame.clone() }, "u-alice", Some("id"));
        })
    });
    let mut h = History::new(1000, 4096);
    for seq in 1..=5000 {
        h.push(Stored { seq, frame: frame.clone() }, "u-alice", Some(&format!("id{seq}")));
    }
    g.bench_function("since_resume_50", |b| b.iter(|| h.since(std::hint::black_box(4950)).messages.len()));
    g.bench_function("dedup_lookup", |b| b.iter(|| h.seen("u-alice", std::hint::black_box("id4990"))));
    g.finish();
}

fn main() {
    if let Ok(spec) = std::env::var(DRAIN_ENV) {
        drain(&spec);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let rx = Receivers::open(*SIZES.last().unwrap());
    bench_fanout(&mut c, &rx);
    bench_serialize(&mut c, &rx);
    drop(rx);
    bench_steps(&mut c);
    c.final_summary();
    let _ = std::io::stdout().flush();
}

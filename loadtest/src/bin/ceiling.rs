//! natter-ceiling: the bare fan-out server the load test measures natter
//! against — the most a thread-per-connection design with one writer can
//! do on this machine.
//!
//! tungstenite does the handshake; then one reader thread per connection
//! frames each text message it reads once and sends the bytes through a
//! crossbeam channel to the ONE writer thread, which writes them to every
//! connection with plain blocking writes (coalescing what is queued). No
//! JSON, no rooms, no journal. Every byte after the handshake, pong and
//! close replies included, goes through the writer, so frames never
//! interleave. One descriptor per connection: reader and writer share it
//! through an `Arc<TcpStream>`.

use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::Message;

/// Most bytes the writer coalesces before writing a batch.
const BATCH_BYTES: usize = 64 * 1024;
/// A client that takes longer than this to accept a write is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const STACK: usize = 128 * 1024;

enum Out {
    Join(u64, Arc<TcpStream>),
    Leave(u64),
    /// A framed text message for everyone.
    All(Vec<u8>),
    /// Bytes for one connection (pong, close reply).
    One(u64, Vec<u8>),
}

/// The socket as the reader's tungstenite sees it: reads come from the
/// socket, writes go to the writer thread once the handshake is done.
struct Link {
    id: u64,
    stream: Arc<TcpStream>,
    writer: Option<Sender<Out>>,
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.stream).read(buf)
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.writer {
            Some(w) => {
                w.send(Out::One(self.id, buf.to_vec())).map(|_| buf.len()).map_err(|_| ErrorKind::BrokenPipe.into())
            }
            None => (&*self.stream).write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An unmasked server text frame, encoded once for every receiver.
fn frame(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 10);
    Frame::message(text.to_vec(), OpCode::Data(Data::Text), true)
        .format(&mut out)
        .expect("writing to a Vec cannot fail");
    out
}

fn reader(id: u64, stream: TcpStream, to_writer: Sender<Out>) {
    let stream = Arc::new(stream);
    let config =
        WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0).max_message_size(Some(64 << 10));
    let link = Link { id, stream: Arc::clone(&stream), writer: None };
    let Ok(mut ws) = tungstenite::accept_with_config(link, Some(config)) else {
        return;
    };
    ws.get_mut().writer = Some(to_writer.clone());
    if to_writer.send(Out::Join(id, stream)).is_err() {
        return;
    }
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                if to_writer.send(Out::All(frame(t.as_bytes()))).is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = to_writer.send(Out::Leave(id));
}

fn write_batch(conns: &mut HashMap<u64, Arc<TcpStream>>, batch: &[u8]) {
    conns.retain(|_, s| match (&**s).write_all(batch) {
        Ok(()) => true,
        Err(_) => {
            let _ = s.shutdown(std::net::Shutdown::Both);
            false
        }
    });
}

fn writer(rx: Receiver<Out>) {
    let mut conns: HashMap<u64, Arc<TcpStream>> = HashMap::new();
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Out::All(f) => {
                    batch.extend_from_slice(&f);
                    if batch.len() < BATCH_BYTES {
                        next = rx.try_recv().ok();
                    }
                    if next.as_ref().is_none_or(|m| !matches!(m, Out::All(_))) || batch.len() >= BATCH_BYTES {
                        write_batch(&mut conns, &batch);
                        batch.clear();
                    }
                }
                Out::One(id, bytes) => {
                    if let Some(s) = conns.get(&id) {
                        let _ = (&**s).write_all(&bytes);
                    }
                }
                Out::Join(id, s) => {
                    let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
                    conns.insert(id, s);
                }
                Out::Leave(id) => {
                    conns.remove(&id);
                }
            }
        }
    }
}

fn main() {
    let mut bind = "127.0.0.1".to_string();
    let mut port = 0u16;
    let mut argv = std::env::args().skip(1);
    while let Some(a) = argv.next() {
        match a.as_str() {
            "--bind" => bind = argv.next().unwrap_or(bind),
            "--port" => port = argv.next().and_then(|p| p.parse().ok()).unwrap_or(0),
            _ => {
                eprintln!("usage: natter-ceiling [--bind ADDR] [--port PORT]");
                std::process::exit(2);
            }
        }
    }
    let listener = match TcpListener::bind((bind.as_str(), port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("natter-ceiling: bind {bind}:{port}: {e}");
            std::process::exit(1);
        }
    };
    // std listens with a backlog of 128: a burst of connects overflows it
    // and the dropped SYNs come back a second later. Listening again on the
    // same socket only raises the backlog (the kernel caps it at somaxconn).
    // SAFETY: listen(2) on a descriptor this listener owns.
    unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    let addr = listener.local_addr().expect("bound listener has an address");
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new().name("writer".into()).spawn(move || writer(rx)).expect("spawn writer");
    println!("natter-ceiling listening ws://{addr}/");
    let mut next_id = 0u64;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let (id, tx) = (next_id, tx.clone());
        // Started like natter's connection threads, so both can hold as many
        // connections as the process limits allow (std threads cost twice the
        // memory mappings and stop near 16,000).
        if let Err(e) = natter::transport::stack::spawn("reader", STACK, move || reader(id, stream, tx)) {
            eprintln!("natter-ceiling: cannot spawn a reader: {e}");
        }
    }
}

//! Memory per idle connection (issue 27, docs/PERFORMANCE.md "Memory per connection"):
//! what the server's heap keeps for a connection once its handshake is over and it
//! sits idle. Counted with glibc's `mallinfo2` in this process, where the server runs;
//! the clients are raw sockets, which keep nothing on the heap.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{wait_until, TestServer};

/// Idle connections opened for the count: enough that the server's fixed costs and
/// the test's own noise are small beside them.
const CONNECTIONS: usize = 200;

/// Heap bytes in use in this process (every arena; blocks in threads' caches count
/// as in use, as they do for the kernel).
fn heap_in_use() -> usize {
    // SAFETY: mallinfo2 only reads glibc's arena statistics.
    unsafe { libc::mallinfo2() }.uordblks
}

/// Connection threads alive in this process (named `conn-ID`).
fn connection_threads() -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    let comm = |t: std::fs::DirEntry| std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
    tasks.flatten().map(comm).filter(|c| c.starts_with("conn-")).count()
}

/// Opens a WebSocket by hand and reads until the `welcome` frame arrived.
fn open(ws: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(ws).unwrap();
    s.set_read_timeout(Some(common::WAIT)).unwrap();
    s.write_all(
        b"GET /ws?name=idle HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut seen = [0u8; 4096];
    let mut len = 0;
    while !seen[..len].windows(9).any(|w| w == b"\"welcome\"") {
        let n = s.read(&mut seen[len..]).unwrap();
        assert!(n > 0, "closed before the welcome");
        len += n;
    }
    s
}

#[test]
fn an_idle_connection_keeps_no_blocks_its_handshake_freed() {
    let server = TestServer::start();
    // The first connections start what lives once per server (and per arena).
    let warm: Vec<TcpStream> = (0..20).map(|_| open(server.ws)).collect();
    drop(warm);
    wait_until(|| connection_threads() == 0, "the warm-up's threads ended");
    let heap = heap_in_use();

    let clients: Vec<TcpStream> = (0..CONNECTIONS).map(|_| open(server.ws)).collect();
    // One thread per idle connection: the ones that ran a handshake have ended.
    wait_until(|| connection_threads() == CONNECTIONS, "one thread per idle connection");
    let per_connection = heap_in_use().saturating_sub(heap) / CONNECTIONS;

    // A connection keeps about 3.1 KiB here (its `Conn`, the read buffer, the
    // dispatcher's entries, the thread's TLS vector and cache). The blocks its
    // handshake freed, about 3.5 KiB more, must not stay in a thread's cache.
    assert!(per_connection < 4 * 1024, "{per_connection} heap bytes per idle connection");
    drop(clients);
}

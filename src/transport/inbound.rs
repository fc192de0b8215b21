//! [`Inbound`]: the read side of one client connection, as plaintext — the socket's
//! bytes on a plain listener, the TLS session's decrypted bytes on a `--tls-cert` one.
//! Routing a request, reading a `POST /send` body and the WebSocket's frames all read
//! through it, so every transport works the same over both.
//!
//! It reads without the outbox lock (taking it only to hand ciphertext to the session,
//! [`Conn::tls_receive`]); it never writes, and never decides what the bytes mean.

use std::io::{self, Read};
use std::sync::Arc;

use crate::delivery::outbox::Conn;
use crate::transport::wait;

/// Ciphertext read from the socket at once: records run up to 16 KiB, and the
/// plaintext goes on to the reader's own (smaller) buffer.
const TLS_READ_BYTES: usize = 2048;

/// A connection's plaintext input. Its [`Read`] blocks (under the socket's read
/// timeout): for request heads and bodies, and the WebSocket handshake; after it, the
/// read loop reads with [`Inbound::read_now`] and waits in [`wait::wait_readable`].
pub struct Inbound {
    conn: Arc<Conn>,
    tls: Option<TlsRead>,
}

/// Plaintext decrypted but not read yet, and the buffer ciphertext is read into.
struct TlsRead {
    plain: Vec<u8>,
    at: usize,
    cipher: Box<[u8]>,
}

impl Inbound {
    /// A plain connection's input: the socket.
    pub fn plain(conn: Arc<Conn>) -> Inbound {
        Inbound { conn, tls: None }
    }

    /// A TLS connection's input, once its handshake installed the session: `early` is
    /// the plaintext that arrived with the handshake's last flight.
    pub fn tls(conn: Arc<Conn>, early: Vec<u8>) -> Inbound {
        Inbound { conn, tls: Some(TlsRead { plain: early, at: 0, cipher: vec![0; TLS_READ_BYTES].into() }) }
    }

    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Reads what is there without blocking (`WouldBlock` when nothing is).
    pub fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with(false, buf)
    }

    fn read_with(&mut self, blocking: bool, buf: &mut [u8]) -> io::Result<usize> {
        let read_socket = |conn: &Conn, buf: &mut [u8]| {
            if blocking {
                conn.stream().read(buf)
            } else {
                wait::read_now(conn.stream(), buf)
            }
        };
        let Some(t) = &mut self.tls else { return read_socket(&self.conn, buf) };
        while t.at == t.plain.len() {
            t.plain.clear();
            t.at = 0;
            let n = read_socket(&self.conn, &mut t.cipher)?;
            if n == 0 {
                return Ok(0);
            }
            if self.conn.tls_receive(&t.cipher[..n], &mut t.plain)? && t.plain.is_empty() {
                return Ok(0);
            }
        }
        let n = buf.len().min(t.plain.len() - t.at);
        buf[..n].copy_from_slice(&t.plain[t.at..t.at + n]);
        t.at += n;
        Ok(n)
    }
}

impl Read for Inbound {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with(true, buf)
    }
}

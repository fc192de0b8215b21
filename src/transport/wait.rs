//! How a connection thread waits for its client: reads that never block, and one
//! `poll(2)` on its own socket with a timeout.
//!
//! Splitting the wait from the read lets the thread sleep at the top of its stack:
//! the deep calls that read and handle a frame (tungstenite, rustls, JSON, the outbox)
//! run only while bytes are there, and their pages are given back before the thread
//! sleeps again (transport/stack.rs). The socket itself stays blocking: writers use
//! `MSG_DONTWAIT` on it too. It also says when an ACK must not wait ([`ack_now`]).
//! This module never reads more than it is asked for, and never waits on anything
//! but the one socket.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Reads what the socket holds, without blocking: `WouldBlock` when nothing is there.
pub fn read_now(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable slice of `buf.len()` bytes for the duration
    // of the call, and the fd is owned by `stream`, which the caller holds.
    let rc = unsafe { libc::recv(stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// What a wait ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// Bytes, the peer's end of stream or an error: the next read says which.
    Readable,
    /// `timeout` passed with nothing to read.
    TimedOut,
    /// A signal interrupted the wait; wait again.
    Interrupted,
}

/// Sleeps until `stream` has something to read (or was shut down), or `timeout`.
/// Timeouts are rounded up to whole milliseconds.
pub fn wait_readable(stream: &TcpStream, timeout: Duration) -> Waited {
    let mut fd = libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd, for the length given.
    match unsafe { libc::poll(&mut fd, 1, ms) } {
        0 => Waited::TimedOut,
        n if n > 0 => Waited::Readable,
        _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => Waited::Interrupted,
        // Any other failure shows up again on the read, which reports it.
        _ => Waited::Readable,
    }
}

/// ACKs what the socket has received at once, instead of at the delayed-ACK timer.
///
/// For a frame the server answers with nothing, such as the pong to its heartbeat:
/// a client that leaves Nagle's algorithm on (many libraries do; browsers do not)
/// holds its next small frame, a post, until that pong is ACKed, and a server
/// socket in interactive mode defers that ACK up to 40 ms. Frames that get an answer
/// carry their ACK on it. A failure only means the ACK comes later, so it is ignored.
pub fn ack_now(stream: &TcpStream) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads an int we own, of the size we pass, on a socket that
    // `stream` owns for the duration of the call.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            std::ptr::addr_of!(on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::outbox::tests::tcp_pair as pair;
    use std::io::Write;

    #[test]
    fn reads_never_block_and_waits_end_when_bytes_arrive() {
        let (mut client, server) = pair();
        let mut buf = [0u8; 16];
        let e = read_now(&server, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(wait_readable(&server, Duration::from_millis(20)), Waited::TimedOut);

        client.write_all(b"hello").unwrap();
        assert_eq!(wait_readable(&server, Duration::from_secs(10)), Waited::Readable);
        assert_eq!(read_now(&server, &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
    }

    #[test]
    fn a_closed_peer_wakes_the_wait_and_reads_as_end_of_stream() {
        let (client, server) = pair();
        drop(client);
        assert_eq!(wait_readable(&server, Duration::from_secs(10)), Waited::Readable);
        assert_eq!(read_now(&server, &mut [0u8; 4]).unwrap(), 0);
    }
}

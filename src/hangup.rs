//! SIGHUP: runs a callback (reloading the TLS certificate) each time the process gets
//! one, on a thread of its own, instead of ending the process.
//!
//! The signal handler only writes a byte to a pipe (all a handler may safely do); the
//! thread blocks reading the pipe and runs the callback there. This module never
//! decides what a reload means.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

/// The pipe's write end, for the handler.
static WAKE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int) {
    let fd = WAKE.load(Ordering::Relaxed);
    let byte = 1u8;
    // SAFETY: write(2) is async-signal-safe; the buffer is a local byte. A full pipe
    // only loses a wake-up that an unread byte already stands for.
    unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
}

/// Installs the SIGHUP handler (replacing the default, which ends the process) and
/// starts the thread that calls `f` once per signal. Call once, from `main`.
pub fn on_hangup(f: impl Fn() + Send + 'static) -> io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // The read end blocks; only the handler's write end must not.
    // SAFETY: fcntl on the descriptor pipe2 just gave us.
    unsafe { libc::fcntl(fds[0], libc::F_SETFL, 0) };
    WAKE.store(fds[1], Ordering::Relaxed);
    // SAFETY: `fds[0]` is ours alone from here on; File closes it if the thread ends.
    let mut reader = unsafe { File::from_raw_fd(fds[0]) };
    std::thread::Builder::new().name("sighup".into()).spawn(move || {
        let mut byte = [0u8; 1];
        while matches!(reader.read(&mut byte), Ok(1)) {
            f();
        }
    })?;
    // SAFETY: sigaction is plain data (all-zero is valid); the handler only calls
    // write(2). SA_RESTART keeps other threads' blocking calls from failing with EINTR.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGHUP, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

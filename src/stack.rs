//! Returning a connection thread's unused stack pages to the OS.
//!
//! Each connection thread's stack is reserved (128 KiB by default) but only the pages
//! it touches cost memory. The handshake runs deeper than the read loop (HTTP parsing
//! keeps large header arrays on the stack), and those pages would stay resident for
//! the life of the connection: at 10,000 idle connections that is tens of MiB.
//! After the handshake the thread drops everything below its current frame.

/// Bytes kept below the caller's frame: room for `madvise`'s own call, which runs on
/// the pages just below this function and must not have them zeroed under it.
const MARGIN: usize = 1024;

/// Releases the pages of this thread's stack that lie below the current frame (minus
/// a margin). Safe to call at any point where nothing below the caller's frame is live
/// — which holds by definition of a stack: only deeper calls live there, and there are
/// none while this runs, but for `madvise` itself, inside the margin.
#[inline(never)]
pub fn release_unused() {
    let here = 0u8;
    let sp = std::hint::black_box(&here) as *const u8 as usize;
    // SAFETY: pthread_getattr_np/pthread_attr_getstack fill plain data for the calling
    // thread; madvise(MADV_DONTNEED) on anonymous stack pages below the live frames
    // (and below the margin) only makes them read back as zero if touched again.
    unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: usize = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        if !ok || addr.is_null() {
            return;
        }
        // Skip the lowest page too, in case the guard is reported inside the range.
        let low = (addr as usize).div_ceil(page) * page + page;
        let high = (sp.saturating_sub(MARGIN)) / page * page;
        log::trace!("stack: {} bytes in use above this frame", addr as usize + size - sp);
        if high > low && sp < addr as usize + size {
            libc::madvise(low as *mut libc::c_void, high - low, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(test)]
mod tests {
    #[inline(never)]
    fn deep(n: usize) -> u64 {
        let buf = std::hint::black_box([n as u8; 4096]);
        if n == 0 {
            buf[0] as u64
        } else {
            deep(n - 1) + buf[100] as u64
        }
    }

    #[test]
    fn the_thread_keeps_running_after_releasing_its_stack() {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                assert_eq!(deep(20), 210);
                super::release_unused();
                // Pages below are zero now; using them again must just work.
                assert_eq!(deep(20), 210);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}

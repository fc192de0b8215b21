//! Connection threads' stacks: starting them cheaply and returning their unused pages.
//!
//! A thread started by `std::thread` also gets a signal stack for stack-overflow
//! reports: two more memory mappings, so four per thread, and `vm.max_map_count`
//! (65,530 by default) then caps a process near 16,000 threads. Connection threads are
//! started with `pthread_create` directly ([`spawn`]): two mappings each. A stack
//! overflow in one still kills the process at its guard page, only without std's
//! message.
//!
//! Each stack is reserved (128 KiB by default) but only touched pages cost memory.
//! The handshake runs deeper than the read loop (HTTP parsing keeps large header
//! arrays on the stack), and those pages would stay resident for the life of the
//! connection; after the handshake the thread drops everything below its frame
//! ([`release_unused`]).

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

/// Memory mappings one thread started by [`spawn`] costs: its stack and guard page.
pub const MAPS_PER_THREAD: u64 = 2;

type Task = Box<dyn FnOnce() + Send + 'static>;

/// Starts a detached thread named `name` (at most 15 bytes are kept) with a stack of
/// `stack_bytes`, running `f`. A panic in `f` is caught at the thread's edge.
pub fn spawn(name: &str, stack_bytes: usize, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let name = std::ffi::CString::new(name.as_bytes().iter().copied().take(15).collect::<Vec<u8>>())
        .unwrap_or_else(|_| c"conn".to_owned());
    let task: Box<(std::ffi::CString, Task)> = Box::new((name, Box::new(f)));
    let arg = Box::into_raw(task) as *mut libc::c_void;
    // SAFETY: attr is initialised before use and destroyed after; `arg` is a leaked
    // Box that exactly one side frees: the new thread, or this function on failure.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setstacksize(&mut attr, stack_bytes.max(libc::PTHREAD_STACK_MIN));
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let mut tid: libc::pthread_t = std::mem::zeroed();
        let rc = libc::pthread_create(&mut tid, &attr, start, arg);
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            drop(Box::from_raw(arg as *mut (std::ffi::CString, Task)));
            return Err(std::io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}

extern "C" fn start(arg: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: `arg` is the Box leaked by `spawn` for this thread alone.
    let task = unsafe { Box::from_raw(arg as *mut (std::ffi::CString, Task)) };
    let (name, f) = *task;
    // SAFETY: naming the calling thread with a NUL-terminated string of ≤ 15 bytes.
    unsafe { libc::pthread_setname_np(libc::pthread_self(), name.as_ptr()) };
    // Unwinding must not cross into C; the panic hook has already reported it.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::ptr::null_mut()
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
    fn spawned_threads_run_named_and_survive_panics() {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        super::spawn("conn-test", 64 * 1024, move || {
            let name = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
            tx.send(name.trim().to_owned()).unwrap();
        })
        .unwrap();
        assert_eq!(rx.recv().unwrap(), "conn-test");
        super::spawn("conn-panics", 64 * 1024, move || {
            let _keep = tx2;
            panic!("caught at the thread's edge");
        })
        .unwrap();
        assert!(rx.recv().is_err(), "the sender was dropped by the unwound thread");
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

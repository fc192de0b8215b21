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
//! ([`release_unused`]). A connection thread also does so each time it goes idle
//! ([`Stack::release_below_caller`]): handling a frame runs deeper than the wait for
//! the next one, and an idle connection should not keep what its last frame touched.
//! A connection's handshake and its read loop run on two such threads, one after the
//! other (transport/connection.rs): [`try_spawn`] hands the work back when no thread
//! can be started, so it still runs.

/// Bytes kept below the caller's frame: room for `madvise`'s own call, which runs on
/// the pages just below this function and must not have them zeroed under it.
const MARGIN: usize = 1024;

/// The calling thread's stack, as far as giving pages back goes: its lowest usable
/// address. Found once per thread ([`Stack::current`] asks glibc, which allocates and
/// makes a system call); [`Stack::release_below_caller`] is then cheap enough to run
/// every time the thread goes idle.
#[derive(Debug, Clone, Copy)]
pub struct Stack {
    /// The lowest page that may be released (above the guard page).
    low: usize,
    /// One past the highest address of the stack.
    high: usize,
}

impl Stack {
    /// The calling thread's stack, or None when glibc cannot say.
    pub fn current() -> Option<Stack> {
        // SAFETY: pthread_getattr_np/pthread_attr_getstack fill plain data for the
        // calling thread; the attr is destroyed after use.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                return None;
            }
            let mut addr: *mut libc::c_void = std::ptr::null_mut();
            let mut size: usize = 0;
            let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
            libc::pthread_attr_destroy(&mut attr);
            if !ok || addr.is_null() {
                return None;
            }
            // Skip the lowest page too, in case the guard is reported inside the range.
            let page = page_size();
            Some(Stack { low: (addr as usize).div_ceil(page) * page + page, high: addr as usize + size })
        }
    }

    /// Releases the pages of this stack that lie below the current frame (minus a
    /// margin). Safe to call at any point where nothing below the caller's frame is
    /// live — which holds by definition of a stack: only deeper calls live there, and
    /// there are none while this runs, but for `madvise` itself, inside the margin.
    /// Must be called on the thread whose stack this is.
    #[inline(never)]
    pub fn release_below_caller(&self) {
        let here = 0u8;
        let sp = std::hint::black_box(&here) as *const u8 as usize;
        if sp <= self.low || sp >= self.high {
            return; // not this thread's stack
        }
        let page = page_size();
        let top = (sp.saturating_sub(MARGIN)) / page * page;
        log::trace!("stack: {} bytes in use above this frame", self.high - sp);
        if top > self.low {
            // SAFETY: madvise(MADV_DONTNEED) on anonymous pages of this thread's own
            // stack, below the live frames and below the margin that `madvise` itself
            // runs in: they only read back as zero if touched again.
            unsafe { libc::madvise(self.low as *mut libc::c_void, top - self.low, libc::MADV_DONTNEED) };
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Releases the pages of this thread's stack that lie below the caller's frame (see
/// [`Stack::release_below_caller`]), for a thread that does so once.
#[inline(never)]
pub fn release_unused() {
    if let Some(stack) = Stack::current() {
        stack.release_below_caller();
    }
}

/// Memory mappings one thread started by [`spawn`] costs: its stack and guard page.
pub const MAPS_PER_THREAD: u64 = 2;

/// Starts a detached thread named `name` (at most 15 bytes are kept) with a stack of
/// `stack_bytes`, running `f`. A panic in `f` is caught at the thread's edge.
pub fn spawn(name: &str, stack_bytes: usize, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    try_spawn(name, stack_bytes, f).map_err(|(e, _)| e)
}

/// As [`spawn`], but a thread that cannot be started hands `f` back, so the caller can
/// still run it (or clean up what it owns).
pub fn try_spawn<F: FnOnce() + Send + 'static>(
    name: &str,
    stack_bytes: usize,
    f: F,
) -> Result<(), (std::io::Error, F)> {
    let name = std::ffi::CString::new(name.as_bytes().iter().copied().take(15).collect::<Vec<u8>>())
        .unwrap_or_else(|_| c"conn".to_owned());
    let task: Box<(std::ffi::CString, F)> = Box::new((name, f));
    let arg = Box::into_raw(task) as *mut libc::c_void;
    // SAFETY: attr is initialised before use and destroyed after; `arg` is a leaked
    // Box that exactly one side takes back: the new thread, or this function on failure.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setstacksize(&mut attr, stack_bytes.max(libc::PTHREAD_STACK_MIN));
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let mut tid: libc::pthread_t = std::mem::zeroed();
        let rc = libc::pthread_create(&mut tid, &attr, start::<F>, arg);
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            let (_, f) = *Box::from_raw(arg as *mut (std::ffi::CString, F));
            return Err((std::io::Error::from_raw_os_error(rc), f));
        }
    }
    Ok(())
}

extern "C" fn start<F: FnOnce()>(arg: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: `arg` is the Box leaked by `try_spawn` for this thread alone.
    let task = unsafe { Box::from_raw(arg as *mut (std::ffi::CString, F)) };
    let (name, f) = *task;
    // SAFETY: naming the calling thread with a NUL-terminated string of ≤ 15 bytes.
    unsafe { libc::pthread_setname_np(libc::pthread_self(), name.as_ptr()) };
    drop(name);
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
    fn a_thread_that_cannot_start_hands_its_work_back() {
        // No stack of 64 TiB can be mapped.
        let (tx, rx) = std::sync::mpsc::channel();
        let Err((_, work)) = super::try_spawn("conn-huge", 1 << 46, move || tx.send("ran").unwrap()) else {
            panic!("a 64 TiB stack was mapped");
        };
        assert!(rx.try_recv().is_err(), "not run yet");
        work();
        assert_eq!(rx.recv().unwrap(), "ran");
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

    /// Pages of `[low, high)` in memory, by mincore(2).
    fn resident(low: usize, high: usize) -> usize {
        let mut pages = vec![0u8; (high - low) / super::page_size()];
        // SAFETY: the range is a mapped stack and `pages` has one byte per page of it.
        let rc = unsafe { libc::mincore(low as *mut libc::c_void, high - low, pages.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        pages.iter().filter(|&&b| b & 1 == 1).count()
    }

    #[test]
    fn going_idle_gives_back_the_pages_deeper_calls_touched() {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let stack = super::Stack::current().expect("a thread's stack is known");
                assert_eq!(deep(20), 210); // 21 frames of over 4 KiB each
                let before = resident(stack.low, stack.high);
                stack.release_below_caller();
                let after = resident(stack.low, stack.high);
                assert!(before > 20 && after + 20 <= before, "resident pages: {before} before, {after} after");
                assert_eq!(deep(20), 210);
            })
            .unwrap()
            .join()
            .unwrap();
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

//! Operating-system facts the load tester reads or sets: the process-wide
//! monotonic clock every timestamp is taken from, the open-files limit, its
//! own CPU time (getrusage), the machine's load, a server's resident
//! memory from /proc, the kernel's memory (/proc/meminfo, or a server's
//! cgroup v2 `memory.current`), and when a client socket ACKs.
//!
//! Nothing here keeps state besides the clock's epoch.

use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's first call to this function. Every send
/// stamp and every arrival is read from this one monotonic clock, so a
/// latency is a plain subtraction even across threads.
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}

/// Let the next read of `socket` leave its ACK to the delayed-ACK timer.
///
/// Linux ACKs at once when a read empties a socket that got a small pushed
/// segment, unless the socket is in "pingpong" (interactive) mode, which
/// TCP_QUICKACK = 0 turns on. The delayed-ACK timer turns it off again when it
/// fires, so this is set before every read. A failure only means ACKs come
/// sooner, so it is ignored.
pub fn defer_next_ack(socket: &impl AsRawFd) {
    let off: libc::c_int = 0;
    // SAFETY: setsockopt reads an int we own, of the size we pass.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            std::ptr::addr_of!(off).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time (user + system) used by the whole process so far.
pub fn process_cpu() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

/// CPU time (user + system) used by the calling thread so far.
pub fn thread_cpu() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

/// VmRSS of a process in KiB, from /proc/PID/status; None when unreadable.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vmrss(&status)
}

fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The machine's one-minute load average, from /proc/loadavg: other work
/// on the machine skews every number, so each run records it.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Number of threads of a process, from /proc/PID/status.
pub fn thread_count(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The kernel's own memory, machine-wide, KiB (/proc/meminfo): what a
/// server's threads and sockets cost that its RSS leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelMem {
    /// One kernel stack per thread (16 KiB on x86-64).
    pub kernel_stack: u64,
    /// Kernel objects: sockets, their buffers' heads, files, dentries…
    pub slab: u64,
}

pub fn kernel_mem() -> Option<KernelMem> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_meminfo(text: &str) -> Option<KernelMem> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.split(':').next() == Some(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(KernelMem { kernel_stack: field("KernelStack")?, slab: field("Slab")? })
}

/// `memory.current` (bytes) of the cgroup v2 a process is in, when that
/// cgroup has the memory controller (user and kernel memory of that
/// cgroup alone); None otherwise, e.g. on a cgroup v1 machine.
pub fn cgroup_memory_current(pid: u32) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"].iter().find_map(|root| {
        let file = format!("{root}{}/memory.current", path.trim_end_matches('/'));
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_gives_kernel_stack_and_slab() {
        let text = "MemTotal: 100 kB\nSlab:             162720 kB\nSReclaimable: 5 kB\nKernelStack:        1792 kB\n";
        assert_eq!(parse_meminfo(text), Some(KernelMem { kernel_stack: 1792, slab: 162720 }));
        assert_eq!(parse_meminfo("Slab: 1 kB\n"), None);
        assert!(kernel_mem().is_some());
    }

    #[test]
    fn vmrss_is_read_in_kib() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t   5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss(status), Some(5120));
        assert_eq!(parse_vmrss("Name: x\n"), None);
    }

    #[test]
    fn a_deferred_ack_turns_quickack_off_until_set_again() {
        let quickack = |s: &std::net::TcpStream| {
            let (mut v, mut len): (libc::c_int, libc::socklen_t) = (-1, 4);
            // SAFETY: getsockopt writes at most `len` bytes into the int we own.
            let rc = unsafe {
                libc::getsockopt(
                    s.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_QUICKACK,
                    std::ptr::addr_of_mut!(v).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0);
            v
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(quickack(&client), 1, "a new connection ACKs at once");
        defer_next_ack(&client);
        assert_eq!(quickack(&client), 0);
    }

    #[test]
    fn own_rss_and_cpu_are_readable() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        let a = now_ns();
        assert!(now_ns() >= a);
        let _ = process_cpu() + thread_cpu();
        assert!(loadavg().is_some());
    }
}

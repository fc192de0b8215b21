//! Process limits that decide how many connections one natter can hold: the open-files
//! limit (raised to its hard limit at start) and `vm.max_map_count` (each connection
//! thread costs `transport::stack::MAPS_PER_THREAD` memory mappings, which the caller
//! passes in). Read once at start-up; no chat logic, and no import of the rest of natter.

/// Descriptors kept back for the listeners, journal, HTTP side and logs.
const RESERVED_FDS: u64 = 64;
/// Memory mappings kept back for the heap, libraries and the fixed threads.
const RESERVED_MAPS: u64 = 1000;

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// `vm.max_map_count`, or the kernel default when it cannot be read.
pub fn max_map_count() -> u64 {
    std::fs::read_to_string("/proc/sys/vm/max_map_count").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(65530)
}

/// The connection ceiling these limits allow (one descriptor and one thread each, a
/// thread costing `maps_per_thread` memory mappings).
pub fn connection_ceiling(nofile: u64, map_count: u64, maps_per_thread: u64) -> usize {
    let by_fds = nofile.saturating_sub(RESERVED_FDS);
    let by_maps = map_count.saturating_sub(RESERVED_MAPS) / maps_per_thread.max(1);
    by_fds.min(by_maps) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_is_the_tighter_limit() {
        assert_eq!(connection_ceiling(20_000, 65_530, 2), 19_936);
        assert_eq!(connection_ceiling(100_000, 65_530, 2), 32_265);
        assert_eq!(connection_ceiling(1024, 65_530, 2), 960);
    }
}

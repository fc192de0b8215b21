//! tiny_http serving one site's routes ([`http::serve`]) on a Unix socket in a
//! private directory, reached only by the guard's relays (transport/relay.rs).
//!
//! tiny_http gives each connection a thread that blocks reading with no timeout, so
//! it must never see a browser: the guard (transport/guard.rs) owns every client
//! connection and opens a connection here only from one of its few relay threads,
//! which bounds tiny_http's threads however many clients connect. The socket lives in
//! a directory only natter's user can enter (0700), removed when the site stops.
//!
//! tiny_http's accept thread ends at its first failed `accept` (descriptors run out);
//! a relay that then finds nobody listening says so with [`Upstream::lost`], and the
//! serving thread binds a fresh tiny_http. This module never touches chat state.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tiny_http::Server;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::transport::http::{self, Site};

/// Longest the serving thread waits for a request before checking for shutdown and
/// for a lost tiny_http.
const TICK: Duration = Duration::from_millis(200);

/// The private directories' names: this, the pid, a count.
const DIR_PREFIX: &str = "natter-http-";

/// Sites started by this process, naming their directories apart.
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// One site's tiny_http and where it listens.
pub struct Upstream {
    site: Site,
    dir: PathBuf,
    path: PathBuf,
    server: Mutex<Arc<Server>>,
    /// A relay found nobody listening: tiny_http's accept thread has ended.
    lost: AtomicBool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("site", &self.site).field("path", &self.path).finish()
    }
}

impl Upstream {
    /// Starts tiny_http for `site` on a socket in a new private directory.
    pub fn start(site: Site) -> io::Result<Arc<Upstream>> {
        let n = STARTED.fetch_add(1, Relaxed);
        if n == 0 {
            sweep(&std::env::temp_dir());
        }
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{n}", std::process::id()));
        // A directory left by an earlier process with this pid is not ours to trust.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let path = dir.join("http.sock");
        let server = match bind(&path) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        Ok(Arc::new(Upstream { site, dir, path, server: Mutex::new(Arc::new(server)), lost: AtomicBool::new(false) }))
    }

    /// The Unix socket the relays connect to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A relay could not connect: start tiny_http again.
    pub fn lost(&self) {
        self.lost.store(true, Relaxed);
    }

    /// Answers requests until `shutdown` fires.
    pub fn run(&self, cfg: &Config, metrics: &Metrics, shutdown: &Shutdown) {
        while !shutdown.is_fired() {
            let server = self.server.lock().unwrap_or_else(PoisonError::into_inner).clone();
            match server.recv_timeout(TICK) {
                Ok(Some(req)) => http::serve(req, self.site, cfg, metrics),
                Ok(None) if self.lost.swap(false, Relaxed) => self.restart(metrics),
                Ok(None) => {}
                Err(e) => {
                    log::warn!("HTTP {:?} site: tiny_http failed: {e}", self.site);
                    self.restart(metrics);
                }
            }
        }
        // Here, not only on drop: relay threads may still hold the site as the process exits.
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn restart(&self, metrics: &Metrics) {
        match bind(&self.path) {
            Ok(server) => {
                *self.server.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(server);
                metrics.http_restarts.fetch_add(1, Relaxed);
                log::warn!("HTTP {:?} site: tiny_http had stopped accepting; started again", self.site);
            }
            Err(e) => {
                log::warn!("HTTP {:?} site: cannot start tiny_http again yet: {e}", self.site);
                std::thread::sleep(TICK);
                self.lost.store(true, Relaxed);
            }
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the directories of natter processes that are gone (killed before they
/// could remove their own).
fn sweep(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)).and_then(|rest| rest.split('-').next());
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// A tiny_http on `path`, replacing any socket file there.
fn bind(path: &Path) -> io::Result<Server> {
    let _ = std::fs::remove_file(path);
    Server::http_unix(path).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_of_processes_that_are_gone_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let gone = tmp.path().join(format!("{DIR_PREFIX}{}-0", u32::MAX));
        let alive = tmp.path().join(format!("{DIR_PREFIX}{}-0", std::process::id()));
        let other = tmp.path().join("natter-http-not-a-pid");
        for d in [&gone, &alive, &other] {
            std::fs::create_dir(d).unwrap();
        }
        sweep(tmp.path());
        assert!(!gone.exists() && alive.exists() && other.exists());
    }
}

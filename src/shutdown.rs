//! Shutdown as a value: a [`ShutdownTrigger`] fired once (Ctrl-C, SIGTERM, a test) and
//! any number of [`Shutdown`] listeners that loops select on or poll.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};

/// Fires the shutdown. Cheap to clone into signal handlers.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger {
    tx: Arc<Mutex<Option<Sender<()>>>>,
    fired: Arc<AtomicBool>,
}

/// Listens for the shutdown. Its channel never carries a value: it disconnects when
/// the trigger fires, which wakes every `select!` that includes it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: Receiver<()>,
    fired: Arc<AtomicBool>,
}

/// A connected trigger and listener.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = crossbeam_channel::bounded(0);
    let fired = Arc::new(AtomicBool::new(false));
    (ShutdownTrigger { tx: Arc::new(Mutex::new(Some(tx))), fired: fired.clone() }, Shutdown { rx, fired })
}

impl ShutdownTrigger {
    pub fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

impl Shutdown {
    pub fn is_fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
    /// For `select!`: becomes ready (disconnected) when the trigger fires.
    pub fn signal(&self) -> &Receiver<()> {
        &self.rx
    }
    /// Blocks until the trigger fires.
    pub fn wait(&self) {
        let _ = self.rx.recv();
    }
}

/// Exit code of a process whose vital thread died.
pub const FATAL_EXIT: i32 = 70;

/// Ends the process at once with a clear line: a thread natter cannot serve without
/// (dispatcher, writer shard, store) failed to start or died. A process that accepts
/// clients it cannot serve is worse than one that is restarted.
pub fn fatal(what: &str) -> ! {
    log::error!("fatal: {what}; exiting");
    eprintln!("natter: fatal: {what}; exiting");
    std::process::exit(FATAL_EXIT)
}

/// Starts a thread that must not die: if it panics, the process exits via [`fatal`].
pub fn spawn_vital<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    let label = name.to_owned();
    std::thread::Builder::new().name(name.into()).spawn(move || {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(v) => v,
            Err(_) => fatal(&format!("the {label} thread panicked")),
        }
    })
}

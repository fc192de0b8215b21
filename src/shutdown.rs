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

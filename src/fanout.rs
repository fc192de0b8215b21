//! The write path of a broadcast: hand every staged frame to its connection's outbox,
//! then write each touched socket once, so everything pending for a socket leaves in
//! one `sendmsg`. Shared by the dispatcher and the benchmarks, so that benchmarks
//! measure what users run. Never blocks and never decides policy: it reports which
//! sockets are over the backlog limit or still full, and the caller acts.

use std::sync::Arc;

use crate::outbox::{Conn, Flush};
use crate::wire::Frame;

/// What one delivery pass did.
#[derive(Debug, Default)]
pub struct Delivered {
    /// Frames queued (refused ones, to closing connections, are not counted).
    pub frames: u64,
    /// Connections whose backlog passed the limit: to be closed as slow consumers.
    pub slow: Vec<Arc<Conn>>,
    /// Connections whose socket could not take everything: to be retried.
    pub blocked: Vec<Arc<Conn>>,
}

/// Delivers `staged` (drained) in order. `max_backlog` is the slow-consumer limit.
pub fn deliver(staged: &mut Vec<(Arc<Conn>, Frame)>, max_backlog: usize) -> Delivered {
    let mut out = Delivered::default();
    let mut dirty: Vec<Arc<Conn>> = Vec::new();
    for (conn, frame) in staged.drain(..) {
        let Ok(backlog) = conn.push(frame) else {
            continue;
        };
        out.frames += 1;
        // Slow consumers are rare: a linear check keeps the common path allocation-free.
        if backlog > max_backlog && !out.slow.iter().any(|c| c.id == conn.id) {
            out.slow.push(conn.clone());
        }
        if conn.mark_dirty() {
            dirty.push(conn);
        }
    }
    for conn in dirty {
        conn.clear_dirty();
        if conn.flush() == Flush::Pending {
            out.blocked.push(conn);
        }
    }
    out
}

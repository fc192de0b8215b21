//! Admission of WebSocket connections: counts of live connections in total and per
//! client address, and the [`Slot`] each connection holds while it lives.
//!
//! The per-IP count normally starts at accept (the peer's address); for a peer that
//! is a trusted proxy it starts once the handshake has named the client
//! ([`Admission::admit_ip`]). This module never touches sockets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tungstenite::http::StatusCode;

use crate::transport::handshake::Refusal;

/// Counts live connections, in total and per IP address.
#[derive(Debug, Default)]
pub struct Admission {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// A held connection slot; released when dropped (when the connection thread ends).
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    /// The address counted against its per-IP cap; none yet behind a trusted proxy.
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.total.fetch_sub(1, Ordering::AcqRel);
        let Some(ip) = self.ip else { return };
        let mut map = self.admission.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}

impl Admission {
    /// Takes a slot, counted against `ip`'s cap when given, or says which limit stops it.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>, max_total: usize, max_per_ip: usize) -> Result<Slot, Refusal> {
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Acquire) >= max_total {
            return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "server at its connection limit", "total limit"));
        }
        if let Some(ip) = ip {
            take_ip(&mut map, ip, max_per_ip)?;
        }
        self.total.fetch_add(1, Ordering::AcqRel);
        Ok(Slot { admission: self.clone(), ip })
    }

    /// Counts `slot` against `ip`'s cap, once the handshake has named the client
    /// behind a trusted proxy. A slot already counted is left as it is.
    pub fn admit_ip(&self, slot: &mut Slot, ip: IpAddr, max_per_ip: usize) -> Result<(), Refusal> {
        if slot.ip.is_some() {
            return Ok(());
        }
        take_ip(&mut self.per_ip.lock().unwrap_or_else(|p| p.into_inner()), ip, max_per_ip)?;
        slot.ip = Some(ip);
        Ok(())
    }

    pub fn live(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

fn take_ip(map: &mut HashMap<IpAddr, usize>, ip: IpAddr, max_per_ip: usize) -> Result<(), Refusal> {
    let n = map.entry(ip).or_insert(0);
    if *n >= max_per_ip {
        return Err(Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from your address",
            format!("per-IP limit for {ip}"),
        ));
    }
    *n += 1;
    Ok(())
}

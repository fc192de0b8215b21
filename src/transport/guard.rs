//! The HTTP guard: one thread per HTTP listener that accepts, caps, times out and
//! (with `--tls-cert`) decrypts every HTTP connection, and passes each complete
//! request head to the site's tiny_http through its [`Relay`], then writes the
//! response back to the client itself.
//!
//! tiny_http gives every connection a thread blocked on a read with no timeout, so
//! idle connections facing it directly would pile up threads until `/healthz` died.
//! So no browser reaches tiny_http: the guard holds all client
//! connections in one `poll` loop on non-blocking sockets, so an idle or slow client
//! costs a descriptor and a few hundred bytes, never a thread, and each of them is
//! bounded:
//! - at accept: total and per-IP caps (`--http-max-connections[-per-ip]`); a refused
//!   connection is answered 503/429 (plain port) or just closed, and counted;
//! - a deadline for the request head (`--http-head-timeout-ms`; slowloris), which
//!   also covers the TLS handshake and writing the response;
//! - an idle keep-alive timeout between requests (`--http-idle-timeout-ms`).
//!
//! A complete head goes to a relay thread (transport/relay.rs), which asks tiny_http
//! (transport/upstream.rs) on a Unix socket; meanwhile the client waits in
//! `Relaying` (no reads, the head deadline), and the loop never blocks. The guard
//! answers only what never reaches a route itself: bad or oversized heads (400/431),
//! refusals (503/429, 408), a full relay queue (503). A request is handed away
//! whole: a request for `/api/` on a listener with a
//! [`Handoff`] leaves the loop with its connection (the server API's threads answer
//! it), since an API post waits for the store's commit.
//! Refusals are counted in `natter_http_refused_total`. The guard never touches chat
//! state.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConnection;

use crate::config::Config;
use crate::metrics::{HttpRefusal, Metrics};
use crate::shutdown::Shutdown;
use crate::tls::{self, Tls};
use crate::transport::http::{self, Site};
use crate::transport::relay::Relay;

/// Largest request head read; past it the answer is 431.
const MAX_HEAD: usize = 16 * 1024;
/// Longest the loop sleeps in `poll` (it then checks for shutdown).
const TICK: Duration = Duration::from_millis(200);
/// Pause in accepting after `accept` failed (descriptors exhausted).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Most connections accepted per turn of the loop, so existing ones are served too.
const ACCEPT_BURST: usize = 256;
/// Where the clients start in the `poll` array (after the listener and the relays'
/// wake-up socket).
const FIRST: usize = 2;

/// Where a plain connection whose request is for `/api/` goes, with the bytes read so
/// far (its head, maybe some body).
#[derive(Clone)]
pub struct Handoff(pub Arc<dyn Fn(TcpStream, Vec<u8>) + Send + Sync>);

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handoff")
    }
}

/// What the guard needs besides its listener.
#[derive(Debug, Clone)]
pub struct Guard {
    pub site: Site,
    pub cfg: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub tls: Option<Tls>,
    /// Peers exempt from the per-IP cap (trusted proxies carry many clients).
    pub exempt: fn(&Config, IpAddr) -> bool,
    /// The server API on this listener, if it is on and here.
    pub api: Option<Handoff>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head, or the TLS handshake.
    Head,
    /// The head is with a relay; not reading until its response is written.
    Relaying,
    /// Writing a response.
    Writing,
    /// Between keep-alive requests.
    Idle,
}

/// One HTTP connection.
struct Client {
    /// Names the client to the relays (its index in the loop changes).
    id: u64,
    stream: TcpStream,
    ip: IpAddr,
    /// Counted against its IP's cap (not for exempt peers).
    capped: bool,
    tls: Option<ServerConnection>,
    /// TLS: the first byte was seen to open a handshake record.
    tls_checked: bool,
    inbuf: Vec<u8>,
    /// Plain connections: response bytes not yet written.
    out: Vec<u8>,
    out_at: usize,
    phase: Phase,
    deadline: Instant,
    keep_alive: bool,
}

/// What to do with a client after handling an event.
enum Next {
    Keep,
    Close,
    /// Leave the loop with the connection: the server API answers it.
    HandOff,
    Refuse(HttpRefusal),
}

impl Guard {
    /// Serves `listener` until `shutdown` fires, routes answered through `relay`.
    pub fn run(&self, listener: TcpListener, relay: &Relay, shutdown: &Shutdown) {
        if let Err(e) = listener.set_nonblocking(true) {
            log::error!("HTTP guard: cannot make the listener non-blocking: {e}");
            return;
        }
        crate::transport::server::raise_backlog(&listener);
        let mut clients: Vec<Client> = Vec::new();
        let mut per_ip: HashMap<IpAddr, usize> = HashMap::new();
        let mut paused_until = Instant::now();
        let mut polls: Vec<libc::pollfd> = Vec::new();
        let mut next_id = 0u64;
        while !shutdown.is_fired() {
            let now = Instant::now();
            let accepting = now >= paused_until;
            polls.clear();
            polls.push(libc::pollfd {
                fd: listener.as_raw_fd(),
                events: if accepting { libc::POLLIN } else { 0 },
                revents: 0,
            });
            polls.push(libc::pollfd { fd: relay.wake_fd(), events: libc::POLLIN, revents: 0 });
            polls.extend(clients.iter().map(|c| libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events: c.interest(),
                revents: 0,
            }));
            let mut wait = clients.iter().map(|c| c.deadline).min().map_or(TICK, |d| d.saturating_duration_since(now));
            if !accepting {
                wait = wait.min(paused_until - now);
            }
            let wait = wait.min(TICK);
            // SAFETY: `polls` is a valid array of pollfd for the length given.
            unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, wait.as_millis() as libc::c_int) };

            let mut i = 0;
            let now = Instant::now();
            if polls[1].revents != 0 {
                self.relayed(relay, &mut clients);
            }
            while i < clients.len() {
                let revents = polls[i + FIRST].revents;
                let next = if revents != 0 {
                    self.on_ready(&mut clients[i], revents, relay)
                } else if now >= clients[i].deadline {
                    clients[i].expired(&self.metrics)
                } else {
                    Next::Keep
                };
                if matches!(next, Next::Keep) {
                    i += 1;
                    continue;
                }
                if let Next::Refuse(why) = next {
                    self.metrics.http_refused(why);
                }
                let gone = clients.swap_remove(i);
                polls.swap_remove(i + FIRST);
                self.release(&gone, &mut per_ip);
                if let (Next::HandOff, Some(api)) = (next, &self.api) {
                    (api.0)(gone.stream, gone.inbuf);
                }
            }
            if accepting && polls[0].revents != 0 && !self.accept(&listener, &mut clients, &mut per_ip, &mut next_id) {
                paused_until = Instant::now() + ACCEPT_PAUSE;
            }
        }
        for c in clients {
            self.release(&c, &mut per_ip);
        }
    }

    /// Accepts what is waiting; false when `accept` failed (pause before the next try).
    fn accept(
        &self,
        listener: &TcpListener,
        clients: &mut Vec<Client>,
        per_ip: &mut HashMap<IpAddr, usize>,
        next_id: &mut u64,
    ) -> bool {
        let cfg = &self.cfg;
        for _ in 0..ACCEPT_BURST {
            let (stream, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.metrics.http_accept_errors.fetch_add(1, Relaxed);
                    log::warn!("HTTP accept failed: {e}; pausing {ACCEPT_PAUSE:?}");
                    return false;
                }
            };
            let ip = peer.ip();
            let capped = !(self.exempt)(cfg, ip);
            let refusal = if clients.len() >= cfg.http_max_connections {
                Some((HttpRefusal::Total, 503, "server busy\n"))
            } else if capped && per_ip.get(&ip).copied().unwrap_or(0) >= cfg.http_max_connections_per_ip {
                Some((HttpRefusal::PerIp, 429, "too many connections from your address\n"))
            } else {
                None
            };
            if let Some((why, status, body)) = refusal {
                self.metrics.http_refused(why);
                if self.tls.is_none() {
                    // One non-blocking try; a client that does not take it just sees the close.
                    let _ = send_now(&stream, &http::plain(status, body));
                }
                continue;
            }
            let tls = match self.tls.as_ref().map(Tls::session).transpose() {
                Ok(tls) => tls,
                Err(e) => {
                    log::warn!("HTTP: no TLS session for {peer}: {e}");
                    continue;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            if capped {
                *per_ip.entry(ip).or_insert(0) += 1;
            }
            self.metrics.http_connections.fetch_add(1, Relaxed);
            *next_id += 1;
            clients.push(Client {
                id: *next_id,
                stream,
                ip,
                capped,
                tls,
                tls_checked: false,
                inbuf: Vec::new(),
                out: Vec::new(),
                out_at: 0,
                phase: Phase::Head,
                deadline: Instant::now() + cfg.http_head_timeout,
                keep_alive: false,
            });
        }
        true
    }

    fn release(&self, c: &Client, per_ip: &mut HashMap<IpAddr, usize>) {
        self.metrics.http_connections.fetch_sub(1, Relaxed);
        if c.capped {
            if let Some(n) = per_ip.get_mut(&c.ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&c.ip);
                }
            }
        }
    }

    /// Queues the responses the relays finished for clients still waiting for them.
    fn relayed(&self, relay: &Relay, clients: &mut [Client]) {
        for done in relay.finished() {
            // A client cut at its deadline meanwhile is gone, and so is its answer.
            if let Some(c) = clients.iter_mut().find(|c| c.id == done.id && c.phase == Phase::Relaying) {
                let keep_alive = c.keep_alive;
                c.respond(http::with_connection(&done.response, keep_alive), keep_alive);
                c.deadline = Instant::now() + self.cfg.http_head_timeout;
            }
        }
    }

    fn on_ready(&self, c: &mut Client, revents: libc::c_short, relay: &Relay) -> Next {
        if c.phase == Phase::Relaying {
            if revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                return Next::Close;
            }
            return self.write(c, relay);
        }
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 && c.phase != Phase::Writing {
            match c.read_more() {
                Ok(true) => {}
                Ok(false) => return Next::Close,
                Err(why) => return why,
            }
            if c.phase == Phase::Idle && !c.inbuf.is_empty() {
                c.phase = Phase::Head;
                c.deadline = Instant::now() + self.cfg.http_head_timeout;
            }
            if c.phase == Phase::Head {
                if let Some(next) = self.answer(c, relay) {
                    return next;
                }
            }
        }
        self.write(c, relay)
    }

    /// Parses the head if it is complete and passes it to a relay (or queues the
    /// guard's own answer); `Some` ends the client.
    fn answer(&self, c: &mut Client, relay: &Relay) -> Option<Next> {
        match http::parse_head(&c.inbuf) {
            Ok(None) if c.inbuf.len() < MAX_HEAD => None,
            Ok(None) => {
                // Answered, then closed once written.
                c.respond(http::plain(431, "request head too large\n"), false);
                self.metrics.http_refused(HttpRefusal::BadRequest);
                None
            }
            Err(_) => {
                c.respond(http::plain(400, "bad request\n"), false);
                self.metrics.http_refused(HttpRefusal::BadRequest);
                None
            }
            Ok(Some((head, _))) if head.path.starts_with("/api/") && self.api.is_some() && c.tls.is_none() => {
                Some(Next::HandOff)
            }
            Ok(Some((head, len))) => {
                let request = http::upstream_request(&c.inbuf);
                c.inbuf.drain(..len);
                // A body is never read, so the connection cannot carry another request.
                c.keep_alive = head.keep_alive && !head.has_body;
                c.deadline = Instant::now() + self.cfg.http_head_timeout;
                if request.is_some_and(|r| relay.submit(c.id, r)) {
                    c.phase = Phase::Relaying;
                } else {
                    c.respond(http::plain(503, "server busy\n"), false);
                }
                None
            }
        }
    }

    /// Writes what the client takes now; after a whole response, keeps the connection
    /// idle (keep-alive, and answers a pipelined head at once) or closes it.
    fn write(&self, c: &mut Client, relay: &Relay) -> Next {
        if c.flush_out().is_err() {
            return Next::Close;
        }
        if c.phase != Phase::Writing || c.has_output() {
            return Next::Keep;
        }
        if !c.keep_alive {
            if let Some(tls) = &mut c.tls {
                tls.send_close_notify();
                let _ = tls.write_tls(&mut &c.stream);
            }
            return Next::Close;
        }
        c.phase = Phase::Idle;
        c.deadline = Instant::now() + self.cfg.http_idle_timeout;
        if !c.inbuf.is_empty() {
            c.phase = Phase::Head;
            if let Some(next) = self.answer(c, relay) {
                return next;
            }
            return self.write(c, relay);
        }
        Next::Keep
    }
}

impl Client {
    fn interest(&self) -> libc::c_short {
        let mut events = 0;
        if matches!(self.phase, Phase::Head | Phase::Idle) {
            events |= libc::POLLIN;
        }
        if self.has_output() {
            events |= libc::POLLOUT;
        }
        events
    }

    fn has_output(&self) -> bool {
        self.out_at < self.out.len() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    fn respond(&mut self, bytes: Vec<u8>, keep_alive: bool) {
        self.keep_alive = keep_alive;
        self.phase = Phase::Writing;
        match &mut self.tls {
            // No buffer limit is set on guard sessions: the session takes it all.
            Some(tls) => {
                tls.set_buffer_limit(None);
                let _ = tls.writer().write_all(&bytes);
            }
            None => {
                self.out = bytes;
                self.out_at = 0;
            }
        }
    }

    /// Reads what is there; Ok(false) when the client closed.
    fn read_more(&mut self) -> Result<bool, Next> {
        let Some(tls) = &mut self.tls else {
            let mut buf = [0u8; 4096];
            return match (&self.stream).read(&mut buf) {
                Ok(0) => Ok(false),
                Ok(n) => {
                    self.inbuf.extend_from_slice(&buf[..n]);
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
                Err(_) => Ok(false),
            };
        };
        if !self.tls_checked {
            let mut first = [0u8; 1];
            match self.stream.peek(&mut first) {
                Ok(1) if first[0] != tls::HANDSHAKE_RECORD => {
                    let _ = send_now(&self.stream, tls::PLAIN_REFUSAL);
                    return Err(Next::Refuse(HttpRefusal::PlainOnTls));
                }
                Ok(1) => self.tls_checked = true,
                _ => {}
            }
        }
        match tls.read_tls(&mut &self.stream) {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(_) => return Ok(false),
        }
        if let Err(e) = tls.process_new_packets() {
            log::debug!("HTTP TLS handshake with {} failed: {e}", self.ip);
            let _ = tls.write_tls(&mut &self.stream);
            return Err(Next::Refuse(HttpRefusal::TlsHandshake));
        }
        let mut buf = [0u8; 4096];
        loop {
            match tls.reader().read(&mut buf) {
                Ok(0) => return Ok(false),
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(_) => return Ok(false),
            }
        }
    }

    /// Writes pending bytes without blocking.
    fn flush_out(&mut self) -> io::Result<()> {
        if let Some(tls) = &mut self.tls {
            while tls.wants_write() {
                match tls.write_tls(&mut &self.stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            return Ok(());
        }
        while self.out_at < self.out.len() {
            match send_now(&self.stream, &self.out[self.out_at..]) {
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The client's deadline passed: which refusal (or idle close) that is.
    fn expired(&mut self, metrics: &Metrics) -> Next {
        match self.phase {
            Phase::Idle => {
                metrics.http_idle_closed.fetch_add(1, Relaxed);
                Next::Close
            }
            Phase::Writing => Next::Refuse(HttpRefusal::WriteTimeout),
            Phase::Relaying => {
                log::warn!("HTTP: no response from the page server within the head timeout");
                if self.tls.is_none() {
                    let _ = send_now(&self.stream, &http::plain(504, "the page server did not answer in time\n"));
                }
                Next::Close
            }
            Phase::Head => {
                if self.tls.is_none() && !self.inbuf.is_empty() {
                    let _ = send_now(&self.stream, &http::plain(408, "request head timeout\n"));
                }
                Next::Refuse(HttpRefusal::HeadTimeout)
            }
        }
    }
}

/// One non-blocking `send`.
fn send_now(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: send(2) on a socket we own, from a live slice of the given length.
    let rc = unsafe {
        libc::send(stream.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

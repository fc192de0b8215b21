//! TLS for the tester's clients (`wss://` targets, `--ca FILE`): the CA every
//! server certificate must chain to, one check before the run, and [`Stream`],
//! the byte stream a worker reads and writes — plain TCP, or a rustls client
//! session on a non-blocking socket inside the worker's mio loop.
//!
//! Every certificate is checked: its chain against the CA, its names against
//! the URL's host. There is no way to accept any certificate. This module never
//! looks at WebSocket bytes; it only carries them.

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::cell::RefCell;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// Most unsent TLS bytes a client holds; past it writes would block, as a
/// full socket does.
const BUFFER_LIMIT: usize = 64 * 1024;
/// Ciphertext read from the socket per system call.
const WIRE_READ: usize = 64 * 1024;
/// How long the check before the run may take to connect and shake hands.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

thread_local! {
    /// One ciphertext buffer per worker thread, like the worker's own read
    /// buffer: a connection keeps none between reads.
    static WIRE: RefCell<Vec<u8>> = RefCell::new(vec![0; WIRE_READ]);
}

/// The `--ca` file: the only roots a server certificate may chain to.
pub struct Ca {
    config: Arc<ClientConfig>,
}

impl Ca {
    pub fn load(path: &str) -> Result<Ca, String> {
        let pem = std::fs::read(path).map_err(|e| format!("--ca {path}: {e}"))?;
        let mut roots = RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(&pem) {
            let der = der.map_err(|e| format!("--ca {path}: {e}"))?;
            roots.add(der).map_err(|e| format!("--ca {path}: not a usable CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err(format!("--ca {path}: no PEM certificate in it"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Each client stands for a new user: a full handshake, never a resumed one.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Ca { config: Arc::new(config) })
    }

    /// What a client of `host` (a DNS name or an IP address) checks the
    /// server's certificate with.
    pub fn client(&self, host: &str) -> Result<Client, String> {
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
            .map_err(|e| format!("{host}: not a TLS server name: {e}"))?;
        Ok(Client { config: Arc::clone(&self.config), name })
    }
}

/// A target's TLS side: the CA's config and the name its certificate must carry.
#[derive(Debug, Clone)]
pub struct Client {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Client {
    /// The same checks, with a session store of its own: a `restart` client comes
    /// back with its own session ticket, as a browser would (the shared config
    /// resumes nothing: each ordinary client stands for a new user).
    pub fn with_own_sessions(&self) -> Client {
        let mut config = ClientConfig::clone(&self.config);
        config.resumption =
            rustls::client::Resumption::store(Arc::new(rustls::client::ClientSessionMemoryCache::new(1)));
        Client { config: Arc::new(config), name: self.name.clone() }
    }

    fn session(&self) -> io::Result<ClientConnection> {
        let mut session =
            ClientConnection::new(Arc::clone(&self.config), self.name.clone()).map_err(io::Error::other)?;
        session.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(session)
    }
}

/// Before any client opens: one blocking handshake with the `wss://` target
/// `url` at `addr`, so a certificate that does not verify stops the run with
/// the reason, rather than failing every client. Says on stderr what was
/// negotiated.
pub fn check(url: &str, addr: SocketAddr, client: &Client) -> Result<(), String> {
    let how = handshake(addr, client).map_err(|e| format!("{url}: TLS handshake failed: {e}"))?;
    eprintln!("natter-loadtest: {url}: {how}, certificate verified");
    Ok(())
}

fn handshake(addr: SocketAddr, client: &Client) -> io::Result<String> {
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, CHECK_TIMEOUT)?;
    tcp.set_read_timeout(Some(CHECK_TIMEOUT))?;
    tcp.set_write_timeout(Some(CHECK_TIMEOUT))?;
    let mut session = client.session()?;
    while session.is_handshaking() {
        session.complete_io(&mut tcp)?;
    }
    let version = session.protocol_version().map_or("?".into(), |v| format!("{v:?}"));
    let suite = session.negotiated_cipher_suite().map_or("?".into(), |s| format!("{:?}", s.suite()));
    session.send_close_notify();
    let _ = session.write_tls(&mut tcp);
    Ok(format!("{version} {suite}"))
}

/// An I/O error as a short tally key: the TLS failure itself when there is
/// one (a bad certificate must say so), else the error's kind.
pub fn reason(e: &io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => format!("tls: {tls}"),
        None => e.kind().to_string(),
    }
}

/// A client's byte stream. Reads and writes never block: both end in
/// `WouldBlock` when the socket does.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<Session>),
}

/// A rustls client session on its socket.
pub struct Session {
    tcp: TcpStream,
    tls: ClientConnection,
    /// Ciphertext read from the socket that rustls could not take yet (its
    /// plaintext buffer was full); empty, and unallocated, almost always.
    backlog: Vec<u8>,
    /// The socket reached its end, or the server said close_notify.
    eof: bool,
}

impl Stream {
    /// Start connecting to `addr`, through TLS when `tls` is given (a `wss://`
    /// target).
    pub fn connect(addr: SocketAddr, tls: Option<&Client>) -> io::Result<Stream> {
        Stream::over(TcpStream::connect(addr)?, tls)
    }

    /// A stream over `tcp`, through TLS when `tls` is given. Called once `tcp` has
    /// connected, it takes a session ticket only then, as a browser does (rustls
    /// takes it when it builds the ClientHello): a refused connect wastes none.
    pub fn over(tcp: TcpStream, tls: Option<&Client>) -> io::Result<Stream> {
        Ok(match tls {
            None => Stream::Plain(tcp),
            Some(client) => {
                Stream::Tls(Box::new(Session { tcp, tls: client.session()?, backlog: Vec::new(), eof: false }))
            }
        })
    }

    /// Whether this TLS connection resumed a session (None: plain, or not done yet).
    pub fn resumed(&self) -> Option<bool> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => s.tls.handshake_kind().map(|k| k == rustls::HandshakeKind::Resumed),
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(s) => &s.tcp,
        }
    }

    fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(s) => &mut s.tcp,
        }
    }

    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.tcp().take_error()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// Shuts the socket down (a TLS session's end is the socket's too: the
    /// tester never reuses one).
    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        self.tcp().shutdown(how)
    }

    /// Whether a read would return more now, whatever the socket says: a TLS
    /// session that reached its end (close_notify, or the socket's EOF read in
    /// the same call as the last data) or holds ciphertext it could not
    /// decrypt yet. Then a short read does not mean the socket is drained, and
    /// no new event will come for what is left: read again.
    pub fn pending(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s.eof || !s.backlog.is_empty(),
        }
    }
}

impl Session {
    /// Send what rustls has sealed, until it is all out or the socket is full.
    fn push(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Like [`Session::push`], where a full socket is no error: its next
    /// writable event pushes the rest.
    fn push_some(&mut self) -> io::Result<()> {
        match self.push() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    /// Hand `wire` to rustls and decrypt it, copying plaintext to `out` from
    /// `*filled` on. What rustls cannot take while `out` is full waits in the
    /// backlog.
    fn feed(&mut self, mut wire: &[u8], out: &mut [u8], filled: &mut usize) -> io::Result<()> {
        while !wire.is_empty() {
            *filled += self.plaintext(&mut out[*filled..])?;
            if *filled == out.len() {
                self.backlog.extend_from_slice(wire);
                break;
            }
            if self.tls.read_tls(&mut wire)? == 0 {
                break; // after the server's close_notify: nothing more is read
            }
            if let Err(e) = self.tls.process_new_packets() {
                let _ = self.push_some(); // the alert that says why
                return Err(io::Error::new(ErrorKind::InvalidData, e));
            }
        }
        *filled += self.plaintext(&mut out[*filled..])?;
        // Handshake replies and the like.
        self.push_some()
    }

    /// Decrypted bytes rustls holds, into `out`.
    fn plaintext(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < out.len() {
            match self.tls.reader().read(&mut out[n..]) {
                Ok(0) => {
                    self.eof = true; // the server's close_notify
                    break;
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // The socket's end, seen by rustls without a close_notify: an end all the same.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Plaintext into `out`, reading the socket until `out` is full or the
    /// socket is empty — so that, as for a plain socket, a short read means
    /// the socket is drained and the next bytes raise a new event.
    fn read_plain(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut filled = self.plaintext(out)?;
        if !self.backlog.is_empty() && filled < out.len() {
            let backlog = std::mem::take(&mut self.backlog);
            self.feed(&backlog, out, &mut filled)?;
        }
        while filled < out.len() && !self.eof {
            let got = WIRE.with_borrow_mut(|wire| match self.tcp.read(wire) {
                Ok(0) => {
                    self.eof = true;
                    self.tls.read_tls(&mut &[][..]).map(|_| 0)
                }
                Ok(n) => self.feed(&wire[..n], out, &mut filled).map(|_| n),
                Err(e) => Err(e),
            });
            match got {
                Ok(n) if n < WIRE_READ => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock && filled > 0 => break,
                Err(e) => return Err(e),
            }
        }
        if filled == 0 && !self.eof {
            return Err(ErrorKind::WouldBlock.into());
        }
        Ok(filled)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(s) => s.read_plain(buf),
        }
    }
}

impl Write for Stream {
    /// Plaintext in; for TLS it is sealed into records at once and sent as
    /// far as the socket takes.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(s) => {
                s.push_some()?;
                let n = s.tls.writer().write(buf)?;
                s.push_some()?;
                if n == 0 && !buf.is_empty() {
                    return Err(ErrorKind::WouldBlock.into());
                }
                Ok(n)
            }
        }
    }

    /// Send the TLS records still waiting for room in the socket.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(s) => s.push_some(),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }
}

impl mio::event::Source for Stream {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        self.tcp_mut().register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        self.tcp_mut().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.tcp_mut().deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ServerConfig, ServerConnection, StreamOwned};
    use std::net::TcpListener;

    /// A CA (PEM) and a chain and key it signed for `names`.
    fn pki(names: &[&str]) -> (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: another CA must be an unknown issuer, not a namesake.
        static CAS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = CAS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ca.distinguished_name.push(rcgen::DnType::CommonName, format!("test CA {n}"));
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = CertificateParams::new(names).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        (ca.pem(), vec![leaf.der().clone(), ca.der().clone()], key)
    }

    fn load_ca(pem: &str) -> Ca {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, pem).unwrap();
        Ca::load(path.to_str().unwrap()).unwrap()
    }

    /// A TLS server on a thread: shakes hands, reads one line, answers with
    /// `reply`, closes. Returns its address.
    fn serve(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>, reply: Vec<u8>) -> SocketAddr {
        let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut s = StreamOwned::new(ServerConnection::new(Arc::new(config)).unwrap(), tcp);
            let mut line = [0u8; 6];
            if s.read_exact(&mut line).is_err() {
                return; // the client refused the certificate
            }
            assert_eq!(&line, b"hello\n");
            // Odd-sized writes: records and reads never line up.
            for chunk in reply.chunks(7_777) {
                s.write_all(chunk).unwrap();
            }
            s.conn.send_close_notify();
            s.flush().unwrap();
        });
        addr
    }

    /// Drive one client as the worker does (edge-triggered, a short read
    /// ends a wake-up) and return what it read, or the error that ended it.
    fn client(addr: SocketAddr, tls: &Client) -> Result<Vec<u8>, io::Error> {
        let mut poll = Poll::new().unwrap();
        let mut stream = Stream::connect(addr, Some(tls))?;
        poll.registry().register(&mut stream, Token(0), Interest::READABLE | Interest::WRITABLE).unwrap();
        let (mut events, mut buf, mut got, mut sent) = (Events::with_capacity(8), vec![0u8; 4096], Vec::new(), false);
        loop {
            poll.poll(&mut events, Some(Duration::from_secs(10))).unwrap();
            assert!(!events.is_empty(), "no event in 10 s: a wake-up was lost; read {} bytes", got.len());
            for ev in events.iter() {
                if ev.is_writable() && stream.peer_addr().is_ok() {
                    if !sent {
                        assert_eq!(stream.write(b"hello\n")?, 6);
                        sent = true;
                    }
                    stream.flush()?;
                }
                loop {
                    let n = match stream.read(&mut buf) {
                        Ok(0) => return Ok(got),
                        Ok(n) => n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    };
                    got.extend_from_slice(&buf[..n]);
                    // This read short, not the total so far: then the socket is empty.
                    if n < buf.len() && !stream.pending() {
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn a_client_reads_every_byte_through_tls_on_edge_triggered_events() {
        let (ca, chain, key) = pki(&["127.0.0.1"]);
        let reply: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let tls = load_ca(&ca).client("127.0.0.1").unwrap();
        // Each server takes one connection: one for the check, one for the client.
        check("wss://test", serve(chain.clone(), key.clone_key(), Vec::new()), &tls).unwrap();
        assert_eq!(client(serve(chain, key, reply.clone()), &tls).unwrap(), reply);
    }

    #[test]
    fn a_certificate_from_another_ca_or_for_another_name_is_refused_with_the_reason() {
        let (_, chain, key) = pki(&["127.0.0.1"]);
        let (other_ca, ..) = pki(&["127.0.0.1"]);
        let addr = serve(chain, key, Vec::new());
        let err = client(addr, &load_ca(&other_ca).client("127.0.0.1").unwrap()).unwrap_err();
        assert_eq!(reason(&err), "tls: invalid peer certificate: UnknownIssuer");

        let (ca, chain, key) = pki(&["example.test"]);
        let addr = serve(chain, key, Vec::new());
        let err = check("wss://test", addr, &load_ca(&ca).client("127.0.0.1").unwrap()).unwrap_err();
        assert!(err.contains("TLS handshake failed") && err.contains("not valid for name \"127.0.0.1\""), "{err}");
    }

    #[test]
    fn bad_ca_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.pem");
        assert!(Ca::load(missing.to_str().unwrap()).err().unwrap().contains("none.pem"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        assert!(Ca::load(empty.to_str().unwrap()).err().unwrap().contains("no PEM certificate"));
    }
}

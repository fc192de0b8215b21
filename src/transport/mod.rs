//! Transport: how bytes get from a client's socket to a validated message and back
//! into an answer the client reads, everything short of chat state.
//!
//! - [`server`]: the WebSocket accept loop; [`admission`]: total and per-IP caps;
//! - [`stack`]: small-stack connection threads;
//! - [`context`]: what connection threads share, the `welcome` and the goodbye;
//! - [`connection`]: one connection's handshake and read loop;
//! - [`inbound`]: a connection's plaintext input, over plain TCP or TLS;
//! - [`inflate`]: permessage-deflate's read side, compressed client frames made plain;
//! - [`wait`]: non-blocking reads and the `poll` a connection thread sleeps in;
//! - [`handshake`]: the upgrade, Origin and identity checks;
//! - [`hello`]: signing in by the first frame (`/ws?auth=hello`), out of the URL;
//! - [`plain`]: plain HTTP on the WebSocket listener, routing the fallback transport;
//! - [`sse`]: the fallback's `GET /sse` stream and its sessions;
//! - [`send`]: the fallback's `POST /send`, answered after its messages are committed;
//! - [`upload`]: `POST /upload`, a file streamed to disk on its own connection's thread;
//! - [`files`]: `GET /files/…`, a posted file for a signed URL, streamed from disk;
//! - [`guard`]: the HTTP listeners' one-thread poll loop: caps, timeouts, TLS;
//! - [`relay`]: the guard's few threads carrying request heads to tiny_http;
//! - [`upstream`]: tiny_http on a private Unix socket, reached only by the relays;
//! - [`http`]: the page, `/config.json`, `/healthz` and (admin) `/metrics`.
//!
//! Transport talks to the dispatcher only through [`crate::dispatcher::Command`]s and
//! never touches rooms, seq or history. On the WebSocket listener (WebSocket, SSE,
//! `POST /send`) it writes only through a connection's
//! [`crate::delivery::outbox::Conn`], the one writer of that socket. The HTTP guard
//! owns its sockets outright (no other thread holds them) and writes its responses
//! with its own non-blocking `send`.

pub mod admission;
pub mod connection;
pub mod context;
pub mod files;
pub mod guard;
pub mod handshake;
pub mod hello;
pub mod http;
pub mod inbound;
pub mod inflate;
pub mod plain;
pub mod relay;
pub mod send;
pub mod server;
pub mod sse;
pub mod stack;
pub mod upload;
pub mod upstream;
pub mod wait;

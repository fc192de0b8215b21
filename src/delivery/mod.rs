//! Delivery: the write path from a committed batch to every socket that should see it.
//!
//! - [`writer`]: writer shards, threads that each own a slice of the connections and
//!   take every committed batch in order;
//! - [`fanout`]: one batch's frames queued into outboxes, then one write per socket;
//! - [`outbox`]: one socket's bounded queue of frames and its non-blocking writes;
//! - [`sse`]: what an SSE stream (the fallback transport) adds to its socket: room
//!   cursors for its event ids, and the `POST /send` requests waiting for answers.
//!
//! Delivery never decides who receives what (the dispatcher staged that) and never
//! blocks on a client: a socket that is full keeps a bounded backlog and is reported
//! back to the dispatcher, which owns the slow-consumer policy.

pub mod fanout;
pub mod outbox;
pub mod sse;
pub mod writer;

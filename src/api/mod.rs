//! natter inside someone else's product: the server HTTP API (`/api/v1/`) a backend
//! calls, and the webhooks natter calls back.
//!
//! - [`webhooks`]: signed POSTs of room events to `--webhook` receivers, queued per
//!   receiver and never waited on by the dispatcher.
//!
//! Nothing here owns chat state: API calls reach the dispatcher as commands, like a
//! client's messages, and webhook events are handed over by the dispatcher.

pub mod webhooks;

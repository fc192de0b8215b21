//! The API over tiny_http: requests under `/api/v1/` are handed here by the HTTP side
//! and answered on a few threads of their own, so a post waiting for its commit never
//! holds up the page, `/healthz` or `/metrics`. Owns those threads and the reading of
//! the (capped) body; the answer itself is [`super::Api::handle`]'s.

use std::io::{Read, Write};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Sender, TrySendError};
use serde_json::Value;
use tiny_http::Request;

use super::routes::ApiRequest;
use super::{Api, MAX_BODY};

/// Threads answering API calls; each mostly waits on the dispatcher.
const WORKERS: usize = 4;
/// Requests waiting for a worker before new ones are answered 503.
const QUEUE: usize = 1024;

/// Hands requests to the API's worker threads.
pub struct ApiHttp {
    queue: Sender<Request>,
}

impl ApiHttp {
    pub fn start(api: Arc<Api>) -> std::io::Result<ApiHttp> {
        let (queue, requests) = crossbeam_channel::bounded::<Request>(QUEUE);
        for i in 0..WORKERS {
            let (api, requests) = (api.clone(), requests.clone());
            thread::Builder::new().name(format!("api-{i}")).spawn(move || {
                for req in requests {
                    answer(&api, req);
                }
            })?;
        }
        Ok(ApiHttp { queue })
    }

    /// Queues a request for a worker; answers 503 itself when all are busy.
    pub fn submit(&self, req: Request) {
        if let Err(TrySendError::Full(req) | TrySendError::Disconnected(req)) = self.queue.try_send(req) {
            let body = serde_json::json!({"error": {"code": "unavailable", "message": "the API is busy; retry"}});
            respond(req, 503, &body);
        }
    }
}

/// The answer to a request for `/api/` when no `--api-key-file` was given.
pub fn disabled(req: Request) {
    let body =
        serde_json::json!({"error": {"code": "not_found", "message": "the server API is off (no --api-key-file)"}});
    respond(req, 404, &body);
}

fn answer(api: &Api, mut req: Request) {
    let header = |name: &'static str| req.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.to_string());
    let (authorization, content_type) = (header("Authorization"), header("Content-Type"));
    let declared = req.body_length().unwrap_or(0);
    let mut body = Vec::new();
    if declared > MAX_BODY {
        // Not read at all: refusing a 10 MB body costs nothing.
        body.resize(MAX_BODY + 1, 0);
    } else if let Err(e) = req.as_reader().take(MAX_BODY as u64 + 1).read_to_end(&mut body) {
        log::debug!("api: reading a body: {e}");
        return;
    }
    let (method, url) = (req.method().as_str().to_owned(), req.url().to_owned());
    let request = ApiRequest { method: &method, url: &url, content_type: content_type.as_deref(), body: &body };
    let (status, value) = api.handle(&request, authorization.as_deref());
    respond(req, status, &value);
}

fn respond(req: Request, status: u16, body: &Value) {
    let body = body.to_string();
    let reason = tiny_http::StatusCode(status).default_reason_phrase();
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut w = req.into_writer();
    if let Err(e) = w.write_all(head.as_bytes()).and_then(|_| w.write_all(body.as_bytes())).and_then(|_| w.flush()) {
        log::debug!("api: response not delivered: {e}");
    }
}

// sse-socket: natter's fallback transport (GET /sse down, POST /send up,
// docs/PROTOCOL.md) behind the small part of the WebSocket interface that
// natter-client.js uses: readyState, send(text), close(), onmessage, onclose,
// onerror. Built on fetch streams, so it runs in browsers and in Node 20
// (which has no EventSource).
// Owns: one stream and its session; POSTs sent one at a time, in order, with
// every frame queued meanwhile batched into the next. Credentials and the session
// never go in a URL (proxies log URLs): the credentials are the body of `POST /sse`,
// which answers a single-use ticket for `GET /sse?ticket=`, and each `POST /send`
// names its session (and token) in headers. Must never: retry a POST
// by itself (a failed POST ends the socket; the client resumes and re-sends
// unacked messages with their ids, which the server de-duplicates), or touch the DOM.

const MAX_PER_POST = 100;

/** The SSE URL for a WebSocket URL: ws(s)://host/ws → http(s)://host/sse, same query. */
export function sseUrlFor(wsUrl) {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
  url.pathname = url.pathname.replace(/\/ws$/, '/sse');
  return url.href;
}

export class SseSocket {
  /**
   * @param {string} url ws(s):// or http(s):// URL of /ws or /sse
   * @param {object} options `credentials`: {token} or {name, key}, traded for a ticket
   *   (without them the URL must carry the old ?name= or ?token= itself)
   */
  constructor(url, { fetch = globalThis.fetch, credentials } = {}) {
    this.url = new URL(sseUrlFor(url));
    this.url.searchParams.delete('auth'); // the WebSocket's `auth=hello` means nothing here
    this.credentials = credentials ?? null;
    // Called unbound, window.fetch throws "Illegal invocation".
    this.fetchFn = (...args) => fetch(...args);
    this.readyState = 0;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
    this.session = null;
    this.queue = [];
    this.posting = false;
    this.abort = new AbortController();
    this.run();
  }

  send(text) {
    if (this.readyState !== 1) throw new Error('SseSocket: not open');
    this.queue.push(text);
    this.pump();
  }

  close(code = 1000, reason = '') {
    this.end(code, reason);
  }

  /** Trades the credentials for a stream ticket: the URL of the stream to open. */
  async streamUrl() {
    if (this.credentials === null) return this.url.href;
    // A string body is text/plain: a simple CORS request, no preflight.
    const response = await this.fetchFn(this.url.href, {
      method: 'POST', body: JSON.stringify(this.credentials), cache: 'no-store', signal: this.abort.signal,
    });
    const answer = await response.text();
    if (!response.ok) throw new Error(`Unexpected server response: ${response.status}`);
    const url = new URL(this.url);
    url.searchParams.set('ticket', JSON.parse(answer).ticket);
    return url.href;
  }

  async run() {
    let response;
    try {
      const url = await this.streamUrl();
      response = await this.fetchFn(url, { cache: 'no-store', signal: this.abort.signal });
    } catch (error) {
      this.fail(`fetch failed: ${error.message}`);
      return;
    }
    if (!response.ok || response.body === null) {
      // Like the ws package's message, so the client can spot a 401.
      this.fail(`Unexpected server response: ${response.status}`);
      return;
    }
    this.readyState = 1;
    try {
      await this.read(response.body.getReader());
    } catch (error) {
      if (this.readyState !== 3) this.fail(`stream broke: ${error.message}`);
      return;
    }
    this.end(1006, 'stream ended');
  }

  async read(reader) {
    const decoder = new TextDecoder();
    let buffered = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done || this.readyState === 3) return;
      buffered += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        const block = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        this.dispatch(block);
        if (this.readyState === 3) return;
      }
    }
  }

  /** One event block: `event:`, `data:` and `id:` lines (comments ignored). */
  dispatch(block) {
    let event = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length === 0) return;
    const text = data.join('\n');
    if (event === 'close') {
      let detail = {};
      try {
        detail = JSON.parse(text);
      } catch {
        // A close without a readable body is still a close.
      }
      this.end(detail.code ?? 1006, detail.reason ?? '');
      return;
    }
    if (this.session === null) {
      try {
        const frame = JSON.parse(text);
        if (frame?.type === 'welcome') this.session = frame.session;
      } catch {
        // Not ours to judge: the client reports frames it cannot read.
      }
    }
    this.onmessage?.({ data: text });
  }

  async pump() {
    if (this.posting || this.session === null || this.queue.length === 0 || this.readyState !== 1) return;
    this.posting = true;
    const batch = this.queue.splice(0, MAX_PER_POST);
    const url = new URL('/send', this.url);
    const headers = { 'X-Natter-Session': this.session };
    const token = this.credentials?.token ?? this.url.searchParams.get('token');
    if (typeof token === 'string') headers.Authorization = `Bearer ${token}`;
    try {
      // Headers, not the query: proxies log URLs. (From another origin they make the
      // browser ask with a CORS preflight first, which it then keeps for 10 minutes.)
      // Closing the socket aborts a POST in flight too: its session is going away, and
      // an answer for it (404 once the server forgot the session) would be noise.
      const response = await this.fetchFn(url.href, {
        method: 'POST', body: `[${batch.join(',')}]`, headers, cache: 'no-store', signal: this.abort.signal,
      });
      await response.text();
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
    } catch (error) {
      this.fail(`send failed: ${error.message}`);
      return;
    } finally {
      this.posting = false;
    }
    this.pump();
  }

  fail(message) {
    if (this.readyState === 3) return;
    this.onerror?.({ message });
    this.end(1006, message);
  }

  end(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.abort.abort();
    const onclose = this.onclose;
    queueMicrotask(() => onclose?.({ code, reason }));
  }
}

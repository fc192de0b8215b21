// One logical connection to the natter server that survives sockets dying.
//
// It owns: fetching /config.json, building the WebSocket URL from the user's
// credentials, the reconnect policy (exponential backoff with full jitter,
// reset after a stable connection, immediate retry when the network comes
// back or the tab becomes visible), and the app-level heartbeat that catches
// half-open sockets the browser would never notice. It knows nothing about
// rooms or messages: every parsed frame is handed on as a `frame` event.
//
// Events (all CustomEvent, read `event.detail`):
//   state               {state, reason, retryAt}   state is one of
//                        idle · connecting · online · reconnecting · offline
//   welcome             the welcome frame, once per socket
//   frame               every other frame from the server
//   down                the socket that had said welcome is gone
//   credentials-needed  {auth, reason}: ask the user, then call start()

import { Backoff } from './backoff.js';

const STABLE_AFTER_MS = 10000;
const OPEN_TIMEOUT_MS = 10000;
// A token the server keeps refusing before the upgrade is most likely bad or
// expired; the browser cannot see the 401, so it counts failures instead.
const TOKEN_REFUSALS_BEFORE_ASKING = 3;

export class Connection extends EventTarget {
  /**
   * @param {object} options
   * @param {(auth: string) => ({name: string} | {token: string} | null)} options.credentials
   */
  constructor({ credentials, configUrl = '/config.json', openTimeoutMs = OPEN_TIMEOUT_MS } = {}) {
    super();
    this.credentials = credentials;
    this.configUrl = configUrl;
    this.openTimeoutMs = openTimeoutMs;
    this.backoff = new Backoff();
    this.state = 'idle';
    this.ws = null;
    this.auth = null;
    this.running = false;
    this.refusals = 0;
    this.timers = {};
    this.retryAt = null;

    window.addEventListener('online', () => this.retryNow());
    window.addEventListener('offline', () => {
      if (this.state === 'reconnecting') this.setState('offline', 'no network', this.retryAt);
    });
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.retryNow();
    });
  }

  /** Begin (or resume) connecting; a no-op while a socket is up or opening. */
  start() {
    this.running = true;
    if (this.ws === null && this.state !== 'connecting') this.connect();
  }

  /** Retry at once if we are waiting for a retry; otherwise nothing. */
  retryNow() {
    if (!this.running || this.ws !== null || this.state === 'connecting') return;
    this.connect();
  }

  /** Sends one frame; false when there is no open socket to send it on. */
  send(frame) {
    if (this.ws === null || this.ws.readyState !== WebSocket.OPEN || this.state !== 'online') {
      return false;
    }
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  setState(state, reason = '', retryAt = null) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, reason, retryAt } }));
  }

  async connect() {
    this.clearTimer('retry');
    this.setState('connecting');
    let config;
    try {
      const response = await fetch(this.configUrl, { cache: 'no-store' });
      if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
      config = await response.json();
    } catch {
      this.scheduleRetry('server unreachable');
      return;
    }
    this.auth = config.auth === 'token' ? 'token' : 'open';
    const credentials = this.credentials(this.auth);
    if (credentials === null) {
      this.askForCredentials('');
      return;
    }
    this.openSocket(buildUrl(config.ws_url, credentials));
  }

  openSocket(url) {
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      this.scheduleRetry('bad server address');
      return;
    }
    this.ws = ws;
    let welcomed = false;
    this.setTimer('open', this.openTimeoutMs, () => this.abandon('timed out while connecting', welcomed));
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === 'welcome') {
        welcomed = true;
        this.onWelcome(frame);
      } else if (frame.type === 'pong') {
        this.clearTimer('deadline');
      } else {
        this.dispatchEvent(new CustomEvent('frame', { detail: frame }));
      }
    };
    ws.onclose = (event) => this.onSocketGone(event.code, event.reason, welcomed);
  }

  onWelcome(frame) {
    this.clearTimer('open');
    this.refusals = 0;
    this.setTimer('stable', STABLE_AFTER_MS, () => this.backoff.reset());
    const { interval_ms: interval = 15000, timeout_ms: timeout = 45000 } = frame.heartbeat ?? {};
    this.setInterval('ping', interval, () => {
      if (!this.send({ type: 'ping', t: Date.now() })) return;
      // One deadline per unanswered run of pings: it is cleared by any pong.
      if (!this.timers.deadline) this.setTimer('deadline', timeout, () => this.abandon('no heartbeat reply', true));
    });
    this.setState('online');
    this.dispatchEvent(new CustomEvent('welcome', { detail: frame }));
  }

  /** Drop a socket we consider dead without waiting for the browser to agree. */
  abandon(reason, welcomed) {
    const ws = this.ws;
    if (ws === null) return;
    this.detach();
    try {
      ws.close();
    } catch {
      // Closing a dead socket may throw in some browsers; it is gone either way.
    }
    this.afterSocket(1006, reason, welcomed);
  }

  onSocketGone(code, reason, welcomed) {
    this.detach();
    this.afterSocket(code, reason, welcomed);
  }

  detach() {
    if (this.ws !== null) {
      this.ws.onmessage = null;
      this.ws.onclose = null;
      this.ws = null;
    }
    for (const name of ['open', 'stable', 'ping', 'deadline']) this.clearTimer(name);
  }

  afterSocket(code, reason, welcomed) {
    if (welcomed) this.dispatchEvent(new CustomEvent('down', { detail: { code, reason } }));
    if (code === 1008 && reason === 'token expired') {
      this.askForCredentials('Your token expired. Enter a new one to reconnect.');
      return;
    }
    if (!welcomed && this.auth === 'token') {
      this.refusals += 1;
      if (this.refusals >= TOKEN_REFUSALS_BEFORE_ASKING) {
        this.refusals = 0;
        this.askForCredentials('The server refused the connection: the token may be invalid or expired.');
        return;
      }
    }
    this.scheduleRetry(describeClose(code, reason, welcomed));
  }

  askForCredentials(reason) {
    this.running = false;
    this.clearTimer('retry');
    // A first visit is not an outage: only a refusal or an expiry is "offline".
    if (reason) this.setState('offline', reason);
    else this.setState('idle');
    this.dispatchEvent(new CustomEvent('credentials-needed', { detail: { auth: this.auth, reason } }));
  }

  scheduleRetry(reason) {
    if (!this.running) return;
    const delay = this.backoff.next();
    const retryAt = Date.now() + delay;
    this.retryAt = retryAt;
    this.setTimer('retry', delay, () => this.connect());
    if (navigator.onLine === false) this.setState('offline', 'no network', retryAt);
    else this.setState('reconnecting', reason, retryAt);
  }

  setTimer(name, ms, fn) {
    this.clearTimer(name);
    this.timers[name] = { id: setTimeout(() => { delete this.timers[name]; fn(); }, ms), repeat: false };
  }

  setInterval(name, ms, fn) {
    this.clearTimer(name);
    this.timers[name] = { id: setInterval(fn, ms), repeat: true };
  }

  clearTimer(name) {
    const timer = this.timers[name];
    if (!timer) return;
    if (timer.repeat) clearInterval(timer.id);
    else clearTimeout(timer.id);
    delete this.timers[name];
  }
}

/** The WebSocket URL for these credentials: `?name=` (open) or `?token=` (token). */
export function buildUrl(wsUrl, credentials) {
  const url = new URL(wsUrl, window.location.href);
  if (url.protocol === 'http:') url.protocol = 'ws:';
  if (url.protocol === 'https:') url.protocol = 'wss:';
  if ('token' in credentials) url.searchParams.set('token', credentials.token);
  else url.searchParams.set('name', credentials.name);
  return url.href;
}

function describeClose(code, reason, welcomed) {
  if (!welcomed) return 'could not connect';
  if (code === 1001) return 'server restarting';
  if (reason) return reason;
  return 'connection lost';
}

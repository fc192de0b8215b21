// Shared test helpers: start the real natter binary on free ports, drive
// headless Chromium with playwright-core, and a TCP proxy that can play dead.
// Everything a test starts is registered with a Cleanup and torn down in its
// `after` hook; processes are only ever stopped by their own PID.

import { spawn } from 'node:child_process';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';
import { chromium } from 'playwright-core';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const NATTER_BIN = path.resolve(REPO_ROOT, process.env.NATTER_BIN ?? 'target/release/natter');
export const SCREENSHOT_DIR = path.join(REPO_ROOT, 'artifacts', 'screenshots');
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const START_TIMEOUT_MS = 15000;

/** Console messages that the deliberate outage tests expect from Chromium itself. */
export const OUTAGE_NOISE = [
  /WebSocket connection to .* failed/i,
  /Failed to load resource: net::ERR_CONNECTION_(REFUSED|RESET|CLOSED)/i,
  /WebSocket is closed before the connection is established/i,
];

/** Collects teardown steps and runs them newest first, never throwing. */
export class Cleanup {
  constructor() {
    this.steps = [];
  }

  add(step) {
    this.steps.push(step);
  }

  async run() {
    while (this.steps.length > 0) {
      const step = this.steps.pop();
      try {
        await step();
      } catch (error) {
        console.error('cleanup step failed:', error);
      }
    }
  }
}

/** A TCP port that was free a moment ago (bind port 0, read it, close). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Registers `before`/`after` hooks for a test file: one natter server and one
 * Chromium, both torn down afterwards. `prepare(env)` may return server
 * options (and set up things such as a proxy on `env` first).
 * Returns `env`, whose `server` and `browser` are set once `before` has run.
 */
export function setupSuite(prepare = async () => ({})) {
  const env = { cleanup: new Cleanup(), server: null, browser: null };
  before(async () => {
    env.server = await startServer(env.cleanup, await prepare(env));
    env.browser = await launchBrowser(env.cleanup);
  });
  after(() => env.cleanup.run());
  return env;
}

export async function tempDir(cleanup, prefix = 'natter-browser-') {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Starts natter and resolves once it prints `natter listening`. Options are
 * kept on the returned handle so `restart()` reuses the same ports and data.
 */
export async function startServer(cleanup, options = {}) {
  const opts = {
    httpPort: options.httpPort ?? (await freePort()),
    wsPort: options.wsPort ?? (await freePort()),
    dataDir: options.dataDir ?? (await tempDir(cleanup, 'natter-data-')),
    heartbeatIntervalMs: options.heartbeatIntervalMs ?? 1000,
    heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? 3000,
    publicWsUrl: options.publicWsUrl,
    extraArgs: options.extraArgs ?? [],
  };
  const server = new NatterProcess(opts);
  cleanup.add(() => server.stop());
  await server.start();
  return server;
}

export class NatterProcess {
  constructor(opts) {
    this.opts = opts;
    this.child = null;
    this.output = [];
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.opts.httpPort}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.opts.wsPort}/ws`;
  }

  args() {
    const o = this.opts;
    const args = [
      'serve',
      '--bind', '127.0.0.1',
      '--http-port', String(o.httpPort),
      '--ws-port', String(o.wsPort),
      '--data-dir', o.dataDir,
      '--www', path.join(REPO_ROOT, 'www'),
      '--heartbeat-interval-ms', String(o.heartbeatIntervalMs),
      '--heartbeat-timeout-ms', String(o.heartbeatTimeoutMs),
    ];
    if (o.publicWsUrl) args.push('--public-ws-url', o.publicWsUrl);
    return args.concat(o.extraArgs);
  }

  start() {
    const child = spawn(NATTER_BIN, this.args(), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    this.exited = exited;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`natter did not print "natter listening" within ${START_TIMEOUT_MS} ms:\n${this.log()}`));
      }, START_TIMEOUT_MS);
      let buffered = '';
      child.stdout.on('data', (chunk) => {
        buffered += chunk;
        this.output.push(String(chunk));
        if (buffered.split('\n').some((line) => line.startsWith('natter listening'))) {
          clearTimeout(timer);
          resolve(this);
        }
      });
      child.stderr.on('data', (chunk) => this.output.push(String(chunk)));
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`natter exited early (code ${code}):\n${this.log()}`));
      });
    });
  }

  log() {
    return this.output.join('').slice(-4000);
  }

  /** Stops our own child by PID; SIGKILL simulates a crash. */
  async stop(signal = 'SIGTERM') {
    const child = this.child;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    process.kill(child.pid, signal);
    const killer = setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
    }, 5000);
    await this.exited;
    clearTimeout(killer);
  }

  async kill() {
    await this.stop('SIGKILL');
  }

  async restart() {
    await this.stop();
    this.output = [];
    await this.start();
  }
}

export async function launchBrowser(cleanup) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  cleanup.add(() => browser.close());
  return browser;
}

/**
 * A page in its own browser context (its own localStorage), with every
 * console error and uncaught exception recorded in `consoleErrors`.
 * `wsUrl` overrides the ws_url that /config.json gives this page only.
 */
export async function openPage(browser, url, { width = 1280, height = 800, wsUrl } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  if (wsUrl) {
    await page.route('**/config.json', (route) => route.fulfill({ json: { ws_url: wsUrl, auth: 'open' } }));
  }
  const consoleErrors = [];
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => consoleErrors.push(`pageerror: ${error.message}`));
  // Which requests never finished, should the page fail to load.
  const unfinished = new Set();
  page.on('request', (request) => unfinished.add(request));
  page.on('requestfinished', (request) => unfinished.delete(request));
  page.on('requestfailed', (request) => unfinished.delete(request));
  try {
    await page.goto(url);
  } catch (error) {
    error.message += `\nrequests still unanswered: ${[...unfinished].map((r) => r.url()).join(', ') || 'none'}`;
    throw error;
  }
  return { page, context, consoleErrors };
}

/** Opens the page, signs in with `name` (open mode) and waits until online. */
export async function openChat(browser, server, name, options) {
  const handle = await openPage(browser, server.httpUrl, options);
  const { page } = handle;
  await page.locator('#login-name').waitFor({ state: 'visible' });
  await page.fill('#login-name', name);
  await page.click('#login-form button[type="submit"]');
  await waitForState(page, 'online');
  await waitForJoined(page, 'lobby');
  return handle;
}

export async function waitForState(page, wanted, timeout = 15000) {
  await page.waitForFunction(
    (s) => document.getElementById('status')?.dataset.state === s,
    wanted,
    { timeout },
  );
}

/** Waits until `room` is in the sidebar and the presence list is filled by `joined`. */
export async function waitForJoined(page, room, timeout = 10000) {
  await page.locator(`#room-list .room-item[data-room="${room}"]`).waitFor({ state: 'attached', timeout });
  await page.waitForFunction(() => document.querySelectorAll('#user-list li').length > 0, null, { timeout });
}

export async function joinRoom(page, room) {
  await page.fill('#join-input', room);
  await page.click('#join-form button[type="submit"]');
  await waitForJoined(page, room);
}

export async function switchRoom(page, room) {
  await page.click(`#room-list .room-button[data-room="${room}"]`);
  await page.waitForFunction((r) => document.querySelector(`.messages[data-room="${r}"]`)?.hidden === false, room);
}

export async function send(page, text) {
  await page.fill('#composer-input', text);
  await page.press('#composer-input', 'Enter');
}

/** Texts of delivered messages (with a seq) in `room`, in DOM order, with their seqs. */
export function delivered(page, room) {
  return page.evaluate((r) => [...document.querySelectorAll(`.messages[data-room="${r}"] li.msg[data-seq]`)]
    .map((li) => ({ seq: Number(li.dataset.seq), text: li.querySelector('.msg-text').textContent })), room);
}

/** Waits until a delivered message with exactly `text` is in `room`. */
export async function waitForMessage(page, room, text, timeout = 10000) {
  await page.waitForFunction(
    ([r, t]) => [...document.querySelectorAll(`.messages[data-room="${r}"] li.msg[data-seq] .msg-text`)]
      .some((el) => el.textContent === t),
    [room, text],
    { timeout },
  );
}

export function assertNoConsoleErrors(assert, consoleErrors, allowed = []) {
  const unexpected = consoleErrors.filter((text) => !allowed.some((pattern) => pattern.test(text)));
  assert.deepEqual(unexpected, [], `unexpected console errors:\n${unexpected.join('\n')}`);
}

export async function screenshot(page, name) {
  await mkdir(SCREENSHOT_DIR, { recursive: true });
  const file = path.join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  return file;
}

/**
 * A TCP proxy between the page and the server. `freeze()` stops forwarding
 * without closing anything (bytes are held, as on a dead network link);
 * `freeze('down')` holds only server-to-client bytes, so the server still
 * hears the page but the page hears nothing. `thaw()` forwards again, held
 * bytes first.
 */
export async function startProxy(cleanup, targetPort) {
  const sockets = new Set();
  const frozen = { up: false, down: false };
  const pipes = new Set();

  function pipe(from, to, direction) {
    const held = [];
    const entry = {
      flush() {
        while (held.length > 0 && !to.destroyed) to.write(held.shift());
      },
    };
    from.on('data', (chunk) => {
      if (frozen[direction]) held.push(chunk);
      else to.write(chunk);
    });
    from.on('end', () => to.end());
    from.on('error', () => to.destroy());
    from.on('close', () => {
      to.destroy();
      pipes.delete(entry);
    });
    pipes.add(entry);
  }

  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    }
    pipe(client, upstream, 'up');
    pipe(upstream, client, 'down');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const proxy = {
    port: server.address().port,
    freeze(direction = 'both') {
      frozen.up = direction !== 'down';
      frozen.down = true;
    },
    thaw() {
      frozen.up = false;
      frozen.down = false;
      for (const entry of [...pipes]) entry.flush();
    },
    close() {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  cleanup.add(() => proxy.close());
  return proxy;
}

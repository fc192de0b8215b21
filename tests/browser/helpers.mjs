// Shared test helpers: start the real natter binary on free ports
// (natter-process.mjs), drive headless Chromium with playwright-core, and a
// TCP proxy that can play dead.
// Everything a test starts is registered with a Cleanup and torn down in its
// `after` hook; processes are only ever stopped by their own PID.

import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before } from 'node:test';
import { chromium } from 'playwright-core';
import { Cleanup, REPO_ROOT, startServer } from './natter-process.mjs';

export {
  Cleanup, NATTER_BIN, NatterProcess, REPO_ROOT, freePort, startProxy, startServer, tempDir,
} from './natter-process.mjs';

export const SCREENSHOT_DIR = path.join(REPO_ROOT, 'artifacts', 'screenshots');
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';

/** Console messages that the deliberate outage tests expect from Chromium itself. */
export const OUTAGE_NOISE = [
  /WebSocket connection to .* failed/i,
  /Failed to load resource: net::ERR_CONNECTION_(REFUSED|RESET|CLOSED)/i,
  /WebSocket is closed before the connection is established/i,
];

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
export async function openPage(browser, url, { width = 1280, height = 800, wsUrl, identity, blockWebSockets } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  // `blockWebSockets`: every WebSocket the page opens is closed at once, as a network
  // that breaks them would (the page then falls back to SSE+POST).
  if (blockWebSockets) await context.routeWebSocket(/./, (ws) => ws.close());
  // `identity`: the open-mode identity key another page holds (the same user on a second device).
  if (identity) await context.addInitScript((key) => localStorage.setItem('natter.identity', key), identity);
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


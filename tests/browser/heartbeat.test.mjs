// The app-level heartbeat finds a dead link the browser cannot see: a TCP
// proxy of our own sits between the page and the server and stops
// forwarding without closing. The page must notice within about timeout_ms,
// say so, and come back by itself once the link works again, with nothing
// lost and nothing doubled.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  setupSuite, OUTAGE_NOISE, assertNoConsoleErrors, delivered, freePort, openChat, send,
  startProxy, waitForMessage, waitForState,
} from './helpers.mjs';

const INTERVAL_MS = 1000;
const TIMEOUT_MS = 3000;
// A ping goes out at most one interval after the link dies; its deadline is
// timeout_ms later. The rest is slack for a loaded machine.
const NOTICE_WITHIN_MS = INTERVAL_MS + TIMEOUT_MS + 2000;

const env = setupSuite(async (suite) => {
  const wsPort = await freePort();
  suite.proxy = await startProxy(suite.cleanup, wsPort);
  return {
    wsPort,
    heartbeatIntervalMs: INTERVAL_MS,
    heartbeatTimeoutMs: TIMEOUT_MS,
    publicWsUrl: `ws://127.0.0.1:${suite.proxy.port}/ws`,
  };
});

/** Resolves with how long after `since` the page's status stopped being online. */
async function noticedAfter(page, since) {
  await page.waitForFunction(() => document.getElementById('status').dataset.state !== 'online', null,
    { timeout: NOTICE_WITHIN_MS + 5000 });
  return Date.now() - since;
}

test('a silent dead link is noticed by the heartbeat and recovered', async () => {
  const alice = await openChat(env.browser, env.server, 'alice'); // through the proxy
  const bob = await openChat(env.browser, env.server, 'bob', { wsUrl: env.server.wsUrl }); // direct
  await send(bob.page, 'before the freeze');
  await waitForMessage(alice.page, 'lobby', 'before the freeze');

  const frozenAt = Date.now();
  env.proxy.freeze();
  await send(bob.page, 'while alice was cut off');
  const took = await noticedAfter(alice.page, frozenAt);
  assert.ok(took <= NOTICE_WITHIN_MS, `noticed after ${took} ms, expected within ${NOTICE_WITHIN_MS} ms`);
  const shown = await alice.page.textContent('#status-text');
  assert.match(shown, /Reconnecting|Connecting/);

  env.proxy.thaw();
  await waitForState(alice.page, 'online', 30000);
  await waitForMessage(alice.page, 'lobby', 'while alice was cut off');
  const texts = (await delivered(alice.page, 'lobby')).map((m) => m.text);
  assert.deepEqual(texts, ['before the freeze', 'while alice was cut off']);

  assertNoConsoleErrors(assert, alice.consoleErrors, OUTAGE_NOISE);
  assertNoConsoleErrors(assert, bob.consoleErrors);
});

test('a message whose ack was lost is shown once after the reconnect', async () => {
  const carol = await openChat(env.browser, env.server, 'carol'); // through the proxy
  const dave = await openChat(env.browser, env.server, 'dave', { wsUrl: env.server.wsUrl });

  // The server still hears carol, but carol hears nothing: her message is
  // accepted and broadcast, while its ack and echo are held back.
  const frozenAt = Date.now();
  env.proxy.freeze('down');
  await send(carol.page, 'into the void');
  await waitForMessage(dave.page, 'lobby', 'into the void');
  assert.equal(await carol.page.locator('li.msg[data-state="pending"]').count(), 1);
  const took = await noticedAfter(carol.page, frozenAt);
  assert.ok(took <= NOTICE_WITHIN_MS, `noticed after ${took} ms`);

  env.proxy.thaw();
  await waitForState(carol.page, 'online', 30000);
  await waitForMessage(carol.page, 'lobby', 'into the void');
  await carol.page.waitForFunction(() => document.querySelectorAll('li.msg[data-state="pending"]').length === 0);
  await send(carol.page, 'after the thaw');
  await waitForMessage(dave.page, 'lobby', 'after the thaw');
  await waitForMessage(carol.page, 'lobby', 'after the thaw');

  for (const page of [carol.page, dave.page]) {
    const texts = (await delivered(page, 'lobby')).map((m) => m.text);
    assert.equal(texts.filter((t) => t === 'into the void').length, 1, `shown once: ${texts}`);
  }
  assert.deepEqual(await delivered(carol.page, 'lobby'), await delivered(dave.page, 'lobby'));
  assert.deepEqual(await carol.page.evaluate(() => JSON.parse(localStorage.getItem('natter.outbox'))), []);

  assertNoConsoleErrors(assert, carol.consoleErrors, OUTAGE_NOISE);
  assertNoConsoleErrors(assert, dave.consoleErrors);
});

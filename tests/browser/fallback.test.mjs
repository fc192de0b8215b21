// A page behind a middlebox that refuses WebSocket upgrades falls back to
// SSE+POST by itself, chats with a page on WebSocket, says so in its status,
// and moves back to WebSocket once upgrades get through: no message lost or
// shown twice on the way.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import {
  Cleanup, OUTAGE_NOISE, assertNoConsoleErrors, delivered, freePort, launchBrowser, openChat, send,
  startServer, waitForMessage,
} from './helpers.mjs';
import { startUpgradeProxy } from './upgrade-proxy.mjs';

const cleanup = new Cleanup();
after(() => cleanup.run());

const transport = (page) => page.evaluate(() => document.getElementById('status').dataset.transport);
const statusText = (page) => page.locator('#status-text').textContent();

/** Every delivered message once, seqs rising by one from the first. */
function assertWhole(messages, who) {
  const seqs = messages.map((m) => m.seq);
  assert.deepEqual(seqs, seqs.map((_, i) => seqs[0] + i), `${who}: each seq once, in order: ${seqs}`);
  assert.equal(new Set(messages.map((m) => m.text)).size, messages.length, `${who}: no text twice`);
}

test('behind a proxy that refuses upgrades the page chats over SSE, then moves back to WebSocket', async () => {
  const wsPort = await freePort();
  const proxy = await startUpgradeProxy(cleanup, wsPort);
  // The page learns the proxy's address from /config.json, as it would in the field.
  const server = await startServer(cleanup, { wsPort, publicWsUrl: `ws://127.0.0.1:${proxy.port}/ws` });
  const browser = await launchBrowser(cleanup);

  const alice = await openChat(browser, server, 'alice');
  assert.equal(await transport(alice.page), 'sse', 'the WebSocket never opened: the page fell back');
  assert.match(await statusText(alice.page), /HTTP fallback/);
  assert.ok(proxy.counts.refused >= 3, `upgrades were tried first (${proxy.counts.refused})`);
  // bob reaches natter directly, over WebSocket.
  const bob = await openChat(browser, server, 'bob', { wsUrl: server.wsUrl });
  assert.equal(await transport(bob.page), 'websocket');
  assert.match(await statusText(bob.page), /WebSocket/);

  await send(alice.page, 'from alice over sse');
  await waitForMessage(bob.page, 'lobby', 'from alice over sse');
  await send(bob.page, 'from bob over ws');
  await waitForMessage(alice.page, 'lobby', 'from bob over ws');

  // Upgrades get through now; both keep talking while alice moves back.
  proxy.allowUpgrades();
  let n = 0;
  while ((await transport(alice.page)) !== 'websocket') {
    assert.ok(n < 60, 'alice moved back to WebSocket within 30 s');
    n += 1;
    await send(bob.page, `bob ${n}`);
    await send(alice.page, `alice ${n}`);
    await alice.page.waitForTimeout(500);
  }
  await alice.page.waitForFunction(() => document.getElementById('status').dataset.state === 'online');
  await send(alice.page, 'alice back on ws');
  await send(bob.page, 'bob last');
  for (const page of [alice.page, bob.page]) {
    await waitForMessage(page, 'lobby', 'alice back on ws', 15000);
    await waitForMessage(page, 'lobby', 'bob last', 15000);
    for (let i = 1; i <= n; i += 1) {
      await waitForMessage(page, 'lobby', `alice ${i}`, 15000);
      await waitForMessage(page, 'lobby', `bob ${i}`, 15000);
    }
  }
  const seenByAlice = await delivered(alice.page, 'lobby');
  const seenByBob = await delivered(bob.page, 'lobby');
  assertWhole(seenByAlice, 'alice');
  assert.deepEqual(seenByAlice, seenByBob, 'both pages show the same messages');
  assert.equal(seenByAlice.length, 2 * n + 4);
  await alice.page.waitForFunction(() => document.querySelectorAll('li.msg[data-state="pending"]').length === 0);
  assert.match(await statusText(alice.page), /WebSocket/);
  assertNoConsoleErrors(assert, alice.consoleErrors, [...OUTAGE_NOISE, /status of 403/]);
  assertNoConsoleErrors(assert, bob.consoleErrors);
});

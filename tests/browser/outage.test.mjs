// Crash and restart: the server is SIGKILLed, the page queues what is typed
// meanwhile, the server comes back on the same ports and data dir, the page
// reconnects by itself, and every message ends up shown exactly once, in seq
// order, on both pages, with nothing left pending.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  setupSuite, OUTAGE_NOISE, assertNoConsoleErrors, delivered, openChat, send,
  waitForMessage, waitForState,
} from './helpers.mjs';

const env = setupSuite();

function assertExactlyOnceInOrder(messages, expectedTexts) {
  const seqs = messages.map((m) => m.seq);
  assert.deepEqual(seqs, seqs.map((_, i) => i + 1), `seqs must be 1..N with no gap or repeat: ${seqs}`);
  for (const text of expectedTexts) {
    assert.equal(messages.filter((m) => m.text === text).length, 1, `"${text}" must be shown exactly once`);
  }
}

test('a crash of the server loses nothing and duplicates nothing', async () => {
  const alice = await openChat(env.browser, env.server, 'alice');
  const bob = await openChat(env.browser, env.server, 'bob');
  await send(alice.page, 'before the crash');
  await waitForMessage(bob.page, 'lobby', 'before the crash');

  await env.server.kill();
  await waitForState(alice.page, 'reconnecting');
  await waitForState(bob.page, 'reconnecting');
  await alice.page.locator('#retry-now').waitFor({ state: 'visible' });

  await send(alice.page, 'typed while down 1');
  await send(alice.page, 'typed while down 2');
  await send(bob.page, 'bob typed while down');
  const pending = alice.page.locator('.messages[data-room="lobby"] li.msg[data-state="pending"]');
  assert.equal(await pending.count(), 2);
  // The outbox survives in localStorage, so a reload would not lose it.
  const saved = await alice.page.evaluate(() => JSON.parse(localStorage.getItem('natter.outbox')).map((e) => e.text));
  assert.deepEqual(saved, ['typed while down 1', 'typed while down 2']);

  await env.server.start();
  // Bob posts as soon as his page is back, possibly before alice's is.
  await waitForState(bob.page, 'online', 40000);
  await send(bob.page, 'bob right after restart');
  await waitForState(alice.page, 'online', 40000);

  const all = ['before the crash', 'typed while down 1', 'typed while down 2', 'bob typed while down', 'bob right after restart'];
  for (const { page } of [alice, bob]) {
    for (const text of all) await waitForMessage(page, 'lobby', text, 15000);
    await page.waitForFunction(() => document.querySelectorAll('li.msg[data-state="pending"]').length === 0);
  }
  const aliceView = await delivered(alice.page, 'lobby');
  assertExactlyOnceInOrder(aliceView, all);
  assert.deepEqual(await delivered(bob.page, 'lobby'), aliceView, 'both pages show the same messages in the same order');
  const order = aliceView.map((m) => m.text);
  assert.ok(order.indexOf('typed while down 1') < order.indexOf('typed while down 2'), 'queued messages keep their order');
  assert.deepEqual(await alice.page.evaluate(() => JSON.parse(localStorage.getItem('natter.outbox'))), []);

  // A reload after all that shows the same history, once.
  await alice.page.reload();
  await waitForState(alice.page, 'online');
  for (const text of all) await waitForMessage(alice.page, 'lobby', text);
  assertExactlyOnceInOrder(await delivered(alice.page, 'lobby'), all);

  assertNoConsoleErrors(assert, alice.consoleErrors, OUTAGE_NOISE);
  assertNoConsoleErrors(assert, bob.consoleErrors, OUTAGE_NOISE);
});

// History that reaches back, in the page: scrolling to the top loads older
// messages (the reader's place kept, nothing twice, a "Beginning of the room"
// marker at the end); the search box finds words of the current room, Chinese
// included; and after the server's data dir is wiped, a page that resumes with
// its old cursor is told so (reset) and shows the new history, not a mix.

import assert from 'node:assert/strict';
import { rm, mkdir } from 'node:fs/promises';
import { test } from 'node:test';
import {
  setupSuite, OUTAGE_NOISE, assertNoConsoleErrors, delivered, openChat, openPage, startProxy,
  waitForMessage, waitForState,
} from './helpers.mjs';

const SEEDED = 130;
const JOIN_HISTORY = 20;
const env = setupSuite(() => ({
  extraArgs: ['--join-history', String(JOIN_HISTORY), '--rate-per-s', '1000', '--rate-burst', '1000'],
}));

/** Posts `texts` to lobby from a bare WebSocket in a scratch page; resolves when all are acked. */
async function post(texts) {
  const { page, context } = await openPage(env.browser, `${env.server.httpUrl}/healthz`);
  try {
    await page.evaluate(async ([url, all]) => {
      const ws = new WebSocket(`${url}?name=seeder`);
      const frames = [];
      let wake = () => {};
      ws.onmessage = (event) => {
        frames.push(JSON.parse(event.data));
        wake();
      };
      const until = async (pred) => {
        while (!frames.some(pred)) await new Promise((resolve) => { wake = resolve; });
      };
      await until((f) => f.type === 'welcome');
      ws.send(JSON.stringify({ type: 'join', room: 'lobby' }));
      await until((f) => f.type === 'history');
      all.forEach((text, i) => ws.send(JSON.stringify({ type: 'msg', room: 'lobby', text, id: `seed-${Date.now()}-${i}` })));
      await until(() => frames.filter((f) => f.type === 'ack').length === all.length);
      ws.close();
    }, [env.server.wsUrl, texts]);
  } finally {
    await context.close();
  }
}

const olderState = (page) => page.evaluate(() => document.querySelector('.messages[data-room="lobby"] .older-row').dataset.state);

test('scrolling to the top pages back to the beginning of the room, keeping the place', { timeout: 60000 }, async () => {
  const texts = Array.from({ length: SEEDED }, (_, i) => (i === 40 ? '你好，世界' : `old ${i + 1}${(i + 1) % 25 === 0 ? ' needle' : ''}`));
  await post(texts);
  const { page, context, consoleErrors } = await openChat(env.browser, env.server, 'reader');
  await waitForMessage(page, 'lobby', `old ${SEEDED}`);
  // The join brings the last JOIN_HISTORY; the page asks for more until its pane can
  // scroll, then waits for the reader to scroll up.
  await page.waitForFunction(() => {
    const pane = document.querySelector('.messages[data-room="lobby"]');
    return pane.scrollHeight > pane.clientHeight && pane.querySelector('.older-row').dataset.state === 'more';
  });
  let shown = await delivered(page, 'lobby');
  const first = SEEDED - shown.length + 1;
  assert.ok(shown.length >= JOIN_HISTORY && first > 1, `a screenful, not everything: ${shown.length}`);
  assert.deepEqual(shown.map((m) => m.seq), Array.from({ length: shown.length }, (_, i) => first + i));

  let rounds = 0;
  while ((await olderState(page)) !== 'beginning') {
    assert.ok(++rounds < 10, 'the beginning is reached in a few pages');
    // Where the oldest shown message sits on screen before more arrive above it.
    const anchor = await page.evaluate(() => {
      const pane = document.querySelector('.messages[data-room="lobby"]');
      const first = pane.querySelector('li.msg[data-seq]');
      return { seq: first.dataset.seq, count: pane.querySelectorAll('li.msg[data-seq]').length };
    });
    await page.evaluate(() => { document.querySelector('.messages[data-room="lobby"]').scrollTop = 0; });
    await page.waitForFunction((n) => document.querySelectorAll('.messages[data-room="lobby"] li.msg[data-seq]').length > n
      && document.querySelector('.messages[data-room="lobby"] .older-row').dataset.state !== 'loading', anchor.count);
    // The message that was at the top is still in view: the page kept the reader's place.
    const inView = await page.evaluate((seq) => {
      const pane = document.querySelector('.messages[data-room="lobby"]');
      const el = pane.querySelector(`li.msg[data-seq="${seq}"]`);
      const top = el.getBoundingClientRect().top - pane.getBoundingClientRect().top;
      return top >= -el.offsetHeight && top <= pane.clientHeight;
    }, anchor.seq);
    assert.ok(inView, `message ${anchor.seq} stays in view after older ones are put above it`);
  }
  shown = await delivered(page, 'lobby');
  assert.deepEqual(shown.map((m) => m.seq), Array.from({ length: SEEDED }, (_, i) => i + 1), 'every seq once, in order');
  assert.equal(shown[0].text, 'old 1');
  assert.equal(await page.locator('.messages[data-room="lobby"] .older-row').textContent(), 'Beginning of the room');

  // Search the current room: newest first; a Chinese word matches at a word's start only.
  await page.fill('#search-input', 'needle');
  await page.press('#search-input', 'Enter');
  await page.waitForFunction(() => document.querySelectorAll('#search-list li').length === 5);
  const found = await page.evaluate(() => [...document.querySelectorAll('#search-list li')].map((li) => Number(li.dataset.seq)));
  assert.deepEqual(found, [125, 100, 75, 50, 25]);
  assert.match(await page.textContent('#search-summary'), /5 messages in # lobby match “needle”/);
  await page.fill('#search-input', '你好');
  await page.press('#search-input', 'Enter');
  await page.waitForFunction(() => document.querySelectorAll('#search-list li').length === 1);
  assert.equal(await page.textContent('#search-list li .msg-text'), '你好，世界');
  await page.fill('#search-input', '好');
  await page.press('#search-input', 'Enter');
  await page.waitForFunction(() => /No messages/.test(document.getElementById('search-summary').textContent));
  await page.click('#search-close');
  assert.equal(await page.isHidden('#search-results'), true);
  assertNoConsoleErrors(assert, consoleErrors);
  await context.close();
});

test('after the data dir is wiped, the page drops its cursor and shows the new history', { timeout: 90000 }, async () => {
  // A room the page joins while it is empty: it learns the epoch after the first message.
  const room = 'lobby';
  const proxy = await startProxy(env.cleanup, env.server.opts.wsPort);
  await env.server.stop();
  await rm(env.server.opts.dataDir, { recursive: true, force: true });
  await mkdir(env.server.opts.dataDir);
  await env.server.start();
  const { page, consoleErrors } = await openChat(env.browser, env.server, 'alice', { wsUrl: `ws://127.0.0.1:${proxy.port}/ws` });
  await post(['before wipe 1', 'before wipe 2', 'before wipe 3']);
  await waitForMessage(page, room, 'before wipe 3');
  await page.waitForFunction((r) => typeof window.natter.client.room(r).epoch === 'string', room);
  const oldEpoch = await page.evaluate((r) => window.natter.client.room(r).epoch, room);

  // The page cannot reach the server while its data dir is wiped and new messages
  // come in: more of them than the page had, so only the epoch tells the two apart.
  proxy.drop({ refuse: true });
  await waitForState(page, 'reconnecting');
  await env.server.stop();
  await rm(env.server.opts.dataDir, { recursive: true, force: true });
  await mkdir(env.server.opts.dataDir);
  await env.server.start();
  const after = ['after wipe 1', 'after wipe 2', 'after wipe 3', 'after wipe 4', 'after wipe 5'];
  await post(after);
  proxy.accept();

  await waitForState(page, 'online', 40000);
  await waitForMessage(page, room, 'after wipe 5', 15000);
  const shown = await delivered(page, room);
  assert.deepEqual(shown, after.map((text, i) => ({ seq: i + 1, text })), 'only the new history, each message once');
  assert.notEqual(await page.evaluate((r) => window.natter.client.room(r).epoch, room), oldEpoch);
  assert.match(await page.textContent('.messages[data-room="lobby"] .gap-note'), /history of this room was reset/);
  assertNoConsoleErrors(assert, consoleErrors, OUTAGE_NOISE);
});

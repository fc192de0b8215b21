// Presence and typing: a second page shows up in the first page's online
// list (and as a join notice), leaves it when closed; typing is shown to the
// other page and cleared by the typist's message, or after a few seconds.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  setupSuite, assertNoConsoleErrors, openChat, send, waitForMessage,
} from './helpers.mjs';

const env = setupSuite();

const onlineNames = (page) => page.evaluate(() => [...document.querySelectorAll('#user-list li')].map((li) => li.querySelector('.user-name').textContent));
const waitForOnline = (page, predicate, arg) => page.waitForFunction(predicate, arg, { timeout: 10000 });

test('online list follows pages joining and leaving; typing shows and clears', async () => {
  const alice = await openChat(env.browser, env.server, 'alice');
  assert.deepEqual(await onlineNames(alice.page), ['alice (you)']);

  const bob = await openChat(env.browser, env.server, 'bob');
  await waitForOnline(alice.page, () => [...document.querySelectorAll('#user-list li')].some((li) => li.querySelector('.user-name').textContent === 'bob'));
  assert.deepEqual(await onlineNames(alice.page), ['alice (you)', 'bob']);
  assert.deepEqual(await onlineNames(bob.page), ['alice', 'bob (you)']);
  await alice.page.locator('.messages[data-room="lobby"] .system-note', { hasText: 'bob joined' }).waitFor();

  // Typing: shown on the other page, cleared when the typist's message arrives.
  await bob.page.type('#composer-input', 'hel');
  await alice.page.waitForFunction(() => document.getElementById('typing').textContent === 'bob is typing…');
  assert.equal(await bob.page.textContent('#typing'), '', 'nobody sees their own typing');
  await bob.page.type('#composer-input', 'lo');
  await bob.page.press('#composer-input', 'Enter');
  await waitForMessage(alice.page, 'lobby', 'hello');
  assert.equal(await alice.page.textContent('#typing'), '', 'the message clears the indicator at once');

  // Typing without sending (alice, whose 3 s throttle is fresh): the
  // indicator clears by itself after ~5 s.
  await alice.page.type('#composer-input', 'x');
  await bob.page.waitForFunction(() => document.getElementById('typing').textContent === 'alice is typing…');
  const shownAt = Date.now();
  await bob.page.waitForFunction(() => document.getElementById('typing').textContent === '', null, { timeout: 9000 });
  const shownFor = Date.now() - shownAt;
  assert.ok(shownFor > 3000 && shownFor < 8000, `typing indicator cleared after ${shownFor} ms`);

  // Closing bob's page removes him from alice's list and leaves a notice.
  await bob.context.close();
  await waitForOnline(alice.page, () => ![...document.querySelectorAll('#user-list li')].some((li) => li.querySelector('.user-name').textContent === 'bob'));
  assert.deepEqual(await onlineNames(alice.page), ['alice (you)']);
  await alice.page.locator('.messages[data-room="lobby"] .system-note', { hasText: 'bob left' }).waitFor();

  assertNoConsoleErrors(assert, alice.consoleErrors);
  assertNoConsoleErrors(assert, bob.consoleErrors);
});

test('rename shows a notice and updates the online list', async () => {
  const carol = await openChat(env.browser, env.server, 'carol');
  const dave = await openChat(env.browser, env.server, 'dave');
  await waitForOnline(carol.page, () => [...document.querySelectorAll('#user-list li')].some((li) => li.querySelector('.user-name').textContent === 'dave'));
  await dave.page.fill('#nick-input', 'david');
  await dave.page.click('#nick-form button[type="submit"]');
  await carol.page.locator('.system-note', { hasText: 'dave is now known as david' }).waitFor();
  await waitForOnline(carol.page, () => [...document.querySelectorAll('#user-list li')].some((li) => li.querySelector('.user-name').textContent === 'david'));
  await dave.page.waitForFunction(() => document.getElementById('me-name').textContent === 'david');
  assert.equal(await dave.page.evaluate(() => localStorage.getItem('natter.name')), 'david');
  assertNoConsoleErrors(assert, carol.consoleErrors);
  assertNoConsoleErrors(assert, dave.consoleErrors);
});

test('two people both called zoe are two users, told apart in the list', async () => {
  // Each page is a fresh browser profile, so each has its own identity key.
  // "zoe": earlier tests of this file leave their pages (and names) online.
  const one = await openChat(env.browser, env.server, 'zoe');
  const two = await openChat(env.browser, env.server, 'zoe');
  const zoes = (page) => page.evaluate(() => [...document.querySelectorAll('#user-list li')].map((li) => `${li.querySelector('.user-name').textContent} ${li.querySelector('.user-tag').textContent}`).filter((n) => n.startsWith('zoe')));
  const ids = await Promise.all([one, two].map((p) => p.page.evaluate(() => localStorage.getItem('natter.identity'))));
  assert.match(ids[0], /^[0-9a-f]{32}$/);
  assert.notEqual(ids[0], ids[1], 'each page holds its own key');
  await waitForOnline(one.page, () => [...document.querySelectorAll('#user-list li')].filter((li) => li.querySelector('.user-name').textContent.startsWith('zoe')).length === 2);
  const names = await zoes(one.page);
  assert.ok(names.every((n) => /^zoe( \(you\))? #[0-9A-Z]{6}$/.test(n)), `told apart: ${names}`);
  assert.notEqual(names[0].slice(-7), names[1].slice(-7));
  // A reload is the same user again: the key stays in localStorage.
  const before = await one.page.evaluate(() => [...document.querySelectorAll('#user-list li')].find((li) => li.querySelector('.user-name').textContent.endsWith('(you)')).dataset.uid);
  await one.page.reload();
  await waitForOnline(one.page, () => [...document.querySelectorAll('#user-list li')].some((li) => li.querySelector('.user-name').textContent.endsWith('(you)')));
  const after = await one.page.evaluate(() => [...document.querySelectorAll('#user-list li')].find((li) => li.querySelector('.user-name').textContent.endsWith('(you)')).dataset.uid);
  assert.equal(after, before);
  assertNoConsoleErrors(assert, one.consoleErrors);
  assertNoConsoleErrors(assert, two.consoleErrors);
});

test('an impostor with the same name (two amys) never looks like the real one in the messages, online or not', async () => {
  const real = await openChat(env.browser, env.server, 'amy');
  const impostor = await openChat(env.browser, env.server, 'amy');
  const reader = await openChat(env.browser, env.server, 'reader');
  // The library gives every message the tag of its author's id.
  const tagged = reader.page.evaluate(() => new Promise((resolve) => {
    const seen = [];
    const off = window.natter.client.on('message', (m) => {
      if (m.text.startsWith('tagged ')) seen.push({ text: m.text, tag: m.tag, uid: m.uid });
      if (seen.length === 2) {
        off?.();
        resolve(seen);
      }
    });
  }));
  await send(real.page, 'tagged from the real amy');
  await send(impostor.page, 'tagged from the other amy');
  await waitForMessage(reader.page, 'lobby', 'tagged from the other amy');
  const fromLibrary = await tagged;
  assert.equal(fromLibrary.length, 2);
  assert.ok(fromLibrary.every((m) => /^[0-9A-Z]{6}$/.test(m.tag)), JSON.stringify(fromLibrary));
  assert.notEqual(fromLibrary[0].tag, fromLibrary[1].tag, 'two authors, two tags');

  // The impostor goes offline: the messages still say who is who.
  await impostor.context.close();
  await waitForOnline(reader.page, () => [...document.querySelectorAll('#user-list li')].filter((li) => li.querySelector('.user-name').textContent === 'amy').length === 1);
  const shown = await reader.page.evaluate(() => [...document.querySelectorAll('.messages[data-room="lobby"] li.msg[data-seq]')]
    .filter((li) => li.querySelector('.msg-text').textContent.startsWith('tagged '))
    .map((li) => ({ header: `${li.querySelector('.msg-author').textContent} ${li.querySelector('.user-tag').textContent}`, tag: li.dataset.tag, grouped: li.classList.contains('grouped') })));
  assert.equal(shown.length, 2);
  assert.deepEqual(shown.map((m) => m.grouped), [false, false], 'each shows its own header');
  assert.deepEqual(shown.map((m) => m.tag), fromLibrary.map((m) => m.tag));
  assert.deepEqual(shown.map((m) => m.header), fromLibrary.map((m) => `amy #${m.tag}`));
  assert.notEqual(shown[0].header, shown[1].header, `they look different: ${JSON.stringify(shown)}`);
  assertNoConsoleErrors(assert, real.consoleErrors);
  assertNoConsoleErrors(assert, reader.consoleErrors);
});

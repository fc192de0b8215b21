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
  const zoes = (page) => page.evaluate(() => [...document.querySelectorAll('#user-list li')].map((li) => li.querySelector('.user-name').textContent).filter((n) => n.startsWith('zoe')));
  const ids = await Promise.all([one, two].map((p) => p.page.evaluate(() => localStorage.getItem('natter.identity'))));
  assert.match(ids[0], /^[0-9a-f]{32}$/);
  assert.notEqual(ids[0], ids[1], 'each page holds its own key');
  await waitForOnline(one.page, () => [...document.querySelectorAll('#user-list li')].filter((li) => li.querySelector('.user-name').textContent.startsWith('zoe')).length === 2);
  const names = await zoes(one.page);
  assert.ok(names.every((n) => /^zoe #[0-9a-f]{4}( \(you\))?$/.test(n)), `told apart: ${names}`);
  assert.notEqual(names[0].slice(0, 9), names[1].slice(0, 9));
  // A reload is the same user again: the key stays in localStorage.
  const before = await one.page.evaluate(() => [...document.querySelectorAll('#user-list li')].find((li) => li.querySelector('.user-name').textContent.endsWith('(you)')).dataset.uid);
  await one.page.reload();
  await waitForOnline(one.page, () => [...document.querySelectorAll('#user-list li')].some((li) => li.querySelector('.user-name').textContent.endsWith('(you)')));
  const after = await one.page.evaluate(() => [...document.querySelectorAll('#user-list li')].find((li) => li.querySelector('.user-name').textContent.endsWith('(you)')).dataset.uid);
  assert.equal(after, before);
  assertNoConsoleErrors(assert, one.consoleErrors);
  assertNoConsoleErrors(assert, two.consoleErrors);
});

// Read markers in the page: one user on two pages (the same identity key), a room in
// the background of both gets messages from someone else and shows them as unread;
// reading the room on one page clears the count on the other, and a reload keeps it
// (the marker is stored), with a "New messages" divider for what came after it.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  setupSuite, assertNoConsoleErrors, joinRoom, openChat, send, switchRoom, waitForMessage,
} from './helpers.mjs';

const env = setupSuite();

const unread = (page, room) => page.evaluate(
  (r) => Number(document.querySelector(`#room-list .room-item[data-room="${r}"] .unread`)?.dataset.count),
  room,
);
const waitUnread = (page, room, n) => page.waitForFunction(
  ([r, count]) => document.querySelector(`#room-list .room-item[data-room="${r}"] .unread`)?.dataset.count === String(count),
  [room, n],
);

test('a room read on one device is read on the other, and after a reload', { timeout: 60000 }, async () => {
  const laptop = await openChat(env.browser, env.server, 'ann');
  const key = await laptop.page.evaluate(() => localStorage.getItem('natter.identity'));
  assert.ok(key, 'the page keeps an identity key');
  // The phone is the same user: its own browser context with the same key.
  const phone = await openChat(env.browser, env.server, 'ann', { identity: key });
  const [me1, me2] = await Promise.all([laptop, phone].map(({ page }) => page.evaluate(() => window.natter.client.me.id)));
  assert.equal(me1, me2, 'one user on two pages');

  const bob = await openChat(env.browser, env.server, 'bob');
  for (const { page } of [laptop, phone, bob]) await joinRoom(page, 'team');
  for (const { page } of [laptop, phone]) await switchRoom(page, 'lobby'); // team in the background
  await switchRoom(bob.page, 'team');
  for (const text of ['t1', 't2', 't3']) await send(bob.page, text);
  for (const { page } of [laptop, phone]) {
    await waitForMessage(page, 'team', 't3');
    await waitUnread(page, 'team', 3);
  }

  await switchRoom(phone.page, 'team');
  await waitUnread(laptop.page, 'team', 0); // read on the phone: cleared on the laptop
  assert.equal(await unread(phone.page, 'team'), 0);

  await switchRoom(phone.page, 'lobby'); // nobody of ann's reads team now
  await send(bob.page, 't4');
  await waitUnread(laptop.page, 'team', 1);
  await laptop.page.reload();
  await waitForMessage(laptop.page, 'team', 't4');
  await waitUnread(laptop.page, 'team', 1); // the stored marker says t1–t3 were read
  await switchRoom(laptop.page, 'team');
  const divider = await laptop.page.evaluate(() => {
    const d = document.querySelector('.messages[data-room="team"] .new-divider');
    return d && d.nextElementSibling.querySelector('.msg-text').textContent;
  });
  assert.equal(divider, 't4', 'the divider sits before the first message after the marker');
  await waitUnread(laptop.page, 'team', 0);
  for (const { consoleErrors } of [laptop, phone, bob]) assertNoConsoleErrors(assert, consoleErrors);
});

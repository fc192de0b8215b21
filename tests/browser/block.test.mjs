// Blocking in the page: "Block" next to a person hides their messages in a room both
// are in (those already shown and those that come later, live), for the blocker only,
// and "Unblock" shows them again. A DM's × closes it: gone from the list, and still
// gone after a reload, until the other person writes in it again.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  setupSuite, assertNoConsoleErrors, openChat, send, waitForJoined, waitForMessage,
} from './helpers.mjs';

const env = setupSuite();

const shown = (page, text) => page.evaluate((t) => [...document.querySelectorAll('.messages[data-room="lobby"] li.msg[data-seq]')]
  .filter((li) => li.querySelector('.msg-text')?.textContent === t)
  .some((li) => li.checkVisibility()), text);

test('a blocked user\'s messages are hidden in a shared room until unblocked', { timeout: 60000 }, async () => {
  const alice = await openChat(env.browser, env.server, 'alice');
  const mallory = await openChat(env.browser, env.server, 'mallory');
  const bob = await openChat(env.browser, env.server, 'bob');
  await send(mallory.page, 'before the block');
  await waitForMessage(alice.page, 'lobby', 'before the block');
  assert.equal(await shown(alice.page, 'before the block'), true);

  const person = alice.page.locator('#user-list li', { hasText: 'mallory' });
  await person.locator('.block-button').click();
  await person.locator('.block-button', { hasText: 'Unblock' }).waitFor();
  await alice.page.waitForFunction(() => window.natter.client.blocked.size === 1);
  assert.equal(await shown(alice.page, 'before the block'), false, 'hidden once blocked');

  await send(mallory.page, 'after the block');
  await send(bob.page, 'bob is still here');
  await waitForMessage(alice.page, 'lobby', 'bob is still here');
  await waitForMessage(alice.page, 'lobby', 'after the block'); // delivered, but not shown
  assert.equal(await shown(alice.page, 'after the block'), false, 'a new message of theirs is hidden too');
  assert.equal(await shown(alice.page, 'bob is still here'), true);
  await waitForMessage(bob.page, 'lobby', 'after the block');
  assert.equal(await shown(bob.page, 'after the block'), true, 'only for the one who blocked');

  await person.locator('.block-button').click();
  await person.locator('.block-button', { hasText: 'Block' }).waitFor();
  await alice.page.waitForFunction(() => window.natter.client.blocked.size === 0);
  assert.equal(await shown(alice.page, 'after the block'), true, 'shown again once unblocked');
  for (const { consoleErrors } of [alice, mallory, bob]) assertNoConsoleErrors(assert, consoleErrors);
});

test('a DM closed with × stays closed after a reload until a new message in it', { timeout: 60000 }, async () => {
  const ann = await openChat(env.browser, env.server, 'ann');
  const bea = await openChat(env.browser, env.server, 'bea');
  await ann.page.locator('#user-list li', { hasText: 'bea' }).locator('.message-button').click();
  const dm = (page, name) => page.locator('#dm-list .room-item', { hasText: name });
  const room = await dm(ann.page, 'bea').getAttribute('data-room', { timeout: 10000 });
  await dm(bea.page, 'ann').waitFor();
  await send(ann.page, 'hi bea');
  await waitForMessage(bea.page, room, 'hi bea');

  await dm(bea.page, 'ann').locator('.leave-button').click();
  await dm(bea.page, 'ann').waitFor({ state: 'detached' });
  await bea.page.reload();
  await bea.page.waitForFunction(() => document.getElementById('status')?.dataset.state === 'online');
  // The server tells a connection of its DMs before it answers its first join.
  await waitForJoined(bea.page, 'lobby');
  assert.equal(await dm(bea.page, 'ann').count(), 0, 'still closed after a reload');

  await send(ann.page, 'are you there?');
  await dm(bea.page, 'ann').waitFor();
  await waitForMessage(bea.page, room, 'are you there?');
  for (const { consoleErrors } of [ann, bea]) assertNoConsoleErrors(assert, consoleErrors);
});

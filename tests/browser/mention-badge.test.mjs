// The mention badge comes from the server: bob is in another room when alice mentions
// him in `ops`; after a reload bob's page shows the badge from `joined` (the server's
// count of mentions above his read marker, not one the page counted itself), and when
// bob reads `ops` on a second page (the same user), the first page's badge clears.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  setupSuite, assertNoConsoleErrors, joinRoom, openChat, send, switchRoom, waitForMessage,
} from './helpers.mjs';

const env = setupSuite();

/** The room's badge as the sidebar shows it: its unread count and mention count. */
const badge = (page, room) => page.evaluate((r) => {
  const b = document.querySelector(`#room-list .room-item[data-room="${r}"] .unread`);
  return { count: b?.dataset.count, mention: b?.dataset.mention ?? null, mentions: b?.dataset.mentions ?? null, text: b?.textContent };
}, room);

test('the mention badge comes from joined after a reload and clears when another device reads', { timeout: 60000 }, async () => {
  const laptop = await openChat(env.browser, env.server, 'bob');
  const key = await laptop.page.evaluate(() => localStorage.getItem('natter.identity'));
  const alice = await openChat(env.browser, env.server, 'alice');
  const bobId = await laptop.page.evaluate(() => window.natter.client.me.id);
  for (const { page } of [laptop, alice]) await joinRoom(page, 'ops');
  await switchRoom(laptop.page, 'lobby'); // bob's page is elsewhere
  await switchRoom(alice.page, 'ops');

  // Two mentions of bob and a message that mentions nobody, sent as the page sends them.
  await alice.page.evaluate((id) => {
    const { client } = window.natter;
    client.send('ops', '@bob first', { mentions: [id] });
    client.send('ops', 'nobody here');
    client.send('ops', '@bob second', { mentions: [id] });
  }, bobId);
  await waitForMessage(laptop.page, 'ops', '@bob second');

  await laptop.page.reload();
  await waitForMessage(laptop.page, 'ops', '@bob second');
  await laptop.page.waitForFunction(() => document.querySelector('#room-list .room-item[data-room="ops"] .unread')?.dataset.mentions === '2');
  assert.deepEqual(await badge(laptop.page, 'ops'), { count: '3', mention: 'true', mentions: '2', text: '@3' },
    'the badge after a reload: three unread, two of them mentioning bob (the server said so in joined)');
  assert.equal(await laptop.page.evaluate(() => window.natter.client.room('ops').mentionsUnread), 2);

  // Bob reads ops on his phone: the laptop's badge clears.
  const phone = await openChat(env.browser, env.server, 'bob', { identity: key });
  assert.equal(await phone.page.evaluate(() => window.natter.client.me.id), bobId, 'the same user');
  await joinRoom(phone.page, 'ops');
  await switchRoom(phone.page, 'ops');
  await laptop.page.waitForFunction(() => document.querySelector('#room-list .room-item[data-room="ops"] .unread')?.dataset.count === '0');
  assert.equal(await laptop.page.evaluate(() => window.natter.client.room('ops').mentionsUnread), 0, 'the read frame says none is left');
  assert.equal((await badge(laptop.page, 'ops')).mention, null, 'no mention mark left');

  // A new mention while both are elsewhere counts again, live.
  await switchRoom(phone.page, 'lobby');
  await alice.page.evaluate((id) => window.natter.client.send('ops', '@bob third', { mentions: [id] }), bobId);
  await waitForMessage(laptop.page, 'ops', '@bob third');
  await laptop.page.waitForFunction(() => document.querySelector('#room-list .room-item[data-room="ops"] .unread')?.dataset.mentions === '1');
  for (const { consoleErrors } of [laptop, phone, alice]) assertNoConsoleErrors(assert, consoleErrors);
});

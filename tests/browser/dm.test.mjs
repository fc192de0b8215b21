// Direct messages and private rooms in the page: "Message" next to a person opens a
// DM that both pages list under "Direct messages" by the other's name, and they chat
// in it; a third page never lists it, and joining it by its name is refused with the
// reason shown. A private room the page creates gets a server-chosen `p.` name and shows
// a lock and the title it was given, and only the invited get in.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  setupSuite, assertNoConsoleErrors, openChat, send, waitForMessage,
} from './helpers.mjs';

const env = setupSuite();

const dmItem = (page, name) => page.locator('#dm-list .room-item', { hasText: name });

test('two pages open a DM and chat; a third page cannot see or join it', { timeout: 60000 }, async () => {
  const alice = await openChat(env.browser, env.server, 'alice');
  const bob = await openChat(env.browser, env.server, 'bob');
  const carol = await openChat(env.browser, env.server, 'carol');
  await alice.page.locator('#user-list li', { hasText: 'bob' }).locator('.message-button').click();
  const room = await dmItem(alice.page, 'bob').getAttribute('data-room', { timeout: 10000 });
  assert.match(room, /^dm\.[0-9a-f]{20}$/);
  await alice.page.waitForFunction((r) => document.querySelector(`.messages[data-room="${r}"]`)?.hidden === false, room);
  assert.equal(await alice.page.textContent('#room-title'), '@ bob');
  await dmItem(bob.page, 'alice').waitFor();
  assert.equal(await dmItem(bob.page, 'alice').getAttribute('data-room'), room, 'the same room on both pages');

  await send(alice.page, 'psst, bob');
  await waitForMessage(bob.page, room, 'psst, bob');
  await bob.page.click(`#dm-list .room-button[data-room="${room}"]`);
  await bob.page.fill('#composer-input', 'hi alice');
  await bob.page.press('#composer-input', 'Enter');
  await waitForMessage(alice.page, room, 'hi alice');

  assert.equal(await carol.page.locator('#dm-list .room-item').count(), 0, 'carol lists no DM');
  await carol.page.fill('#join-input', room);
  await carol.page.click('#join-form button[type="submit"]');
  await carol.page.waitForFunction(() => /may not join/.test(document.getElementById('notice').textContent));
  assert.equal(await carol.page.locator(`.messages[data-room="${room}"] li.msg`).count(), 0);

  // A private room: carol makes one (the server names it; its title is shown); alice
  // is refused until invited.
  await carol.page.fill('#private-title', 'Hideout');
  await carol.page.click('#private-form button[type="submit"]');
  await carol.page.waitForFunction(() => document.getElementById('room-title').textContent === '🔒 Hideout');
  const hideout = await carol.page.evaluate(
    () => document.querySelector('#room-list .room-button[aria-current="true"]').dataset.room,
  );
  assert.match(hideout, /^p\.[a-z2-7]{26}$/, 'named by the server');
  assert.equal(await carol.page.locator(`#room-list .room-item[data-room="${hideout}"] .room-name`).textContent(), '🔒 Hideout');
  const aliceId = await alice.page.evaluate(() => window.natter.client.me.id);
  await carol.page.fill('#invite-input', aliceId);
  await carol.page.click('#invite-form button[type="submit"]');
  await alice.page.waitForFunction(() => /carol invited you to Hideout/.test(document.getElementById('notice').textContent));
  await alice.page.locator(`#room-list .room-item[data-room="${hideout}"]`).waitFor();
  await alice.page.waitForFunction(
    (room) => document.querySelector(`#room-list .room-item[data-room="${room}"] .room-name`)?.textContent === '🔒 Hideout',
    hideout,
  );
  await send(carol.page, 'welcome in');
  await waitForMessage(alice.page, hideout, 'welcome in');
  assert.equal(await bob.page.locator(`#room-list .room-item[data-room="${hideout}"]`).count(), 0);
  for (const { consoleErrors } of [alice, bob, carol]) assertNoConsoleErrors(assert, consoleErrors);
});

// Moderation in the page: a moderator (by `--mod`, in open mode) removes a user from
// a room from the people list and makes the room read-only; the removed page loses
// the room with the reason shown, and the others see both actions as notes and can
// no longer post, while the moderator still can.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import {
  setupSuite, assertNoConsoleErrors, openChat, send, waitForMessage,
} from './helpers.mjs';

const MOD_KEY = '0123456789abcdef0123456789abcdef'; // the page's key format: 32 hex digits
const MOD_ID = `u-${createHash('sha256').update(`natter open-mode id\0${MOD_KEY}`).digest('hex').slice(0, 16)}`;
const env = setupSuite(() => ({ extraArgs: ['--mod', MOD_ID] }));

test('a moderator removes a user and makes the room read-only', { timeout: 60000 }, async () => {
  const mod = await openChat(env.browser, env.server, 'mod', { identity: MOD_KEY });
  assert.equal(await mod.page.evaluate(() => window.natter.client.me.id), MOD_ID);
  const bob = await openChat(env.browser, env.server, 'bob');
  const amy = await openChat(env.browser, env.server, 'amy');
  assert.equal(await amy.page.locator('#user-list li', { hasText: 'bob' }).locator('text=Remove 10 min').count(), 0,
    'only a moderator is offered the action');

  await mod.page.locator('#user-list li', { hasText: 'bob' }).locator('text=Remove 10 min').click();
  await bob.page.waitForFunction(() => /removed you from lobby for 10 minutes/.test(document.getElementById('notice').textContent));
  assert.equal(await bob.page.locator('#room-list .room-item[data-room="lobby"]').count(), 0, 'the room is gone from bob\'s list');
  await amy.page.locator('.messages[data-room="lobby"] .system-note', { hasText: 'mod removed bob for 10 minutes' }).waitFor();

  await mod.page.evaluate(() => window.natter.client.setReadOnly('lobby', true));
  await amy.page.locator('.messages[data-room="lobby"] .system-note', { hasText: 'made this room read-only' }).waitFor();
  assert.equal(await amy.page.isDisabled('#composer-input'), true, 'no typing where only moderators post');
  await send(mod.page, 'announcement from the mod');
  await waitForMessage(amy.page, 'lobby', 'announcement from the mod');
  for (const { consoleErrors } of [mod, bob, amy]) assertNoConsoleErrors(assert, consoleErrors);
});

// Two pages chat in `lobby` and in a second room; the room not in view
// counts unread messages, and the count clears when it is opened.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  setupSuite, assertNoConsoleErrors, delivered, joinRoom, openChat, send,
  switchRoom, waitForMessage,
} from './helpers.mjs';

const env = setupSuite();

const unread = (page, room) => page.locator(`#room-list .room-button[data-room="${room}"] .unread`);

test('two pages chat in lobby and in a second room, with unread counts', async () => {
  const alice = await openChat(env.browser, env.server, 'alice');
  const bob = await openChat(env.browser, env.server, 'bob');

  await send(alice.page, 'hello from alice');
  await waitForMessage(bob.page, 'lobby', 'hello from alice');
  await send(bob.page, 'hi alice');
  await waitForMessage(alice.page, 'lobby', 'hi alice');
  assert.deepEqual((await delivered(alice.page, 'lobby')).map((m) => m.text), ['hello from alice', 'hi alice']);
  assert.deepEqual(await delivered(bob.page, 'lobby'), await delivered(alice.page, 'lobby'));

  // The sender's own message is acked: no longer pending.
  await alice.page.waitForFunction(() => document.querySelectorAll('li.msg[data-state="pending"]').length === 0);

  await joinRoom(alice.page, 'side-room');
  await joinRoom(bob.page, 'side-room');
  // Alice reads side-room; bob's lobby messages count as unread for her.
  await send(bob.page, 'side hello');
  await waitForMessage(alice.page, 'side-room', 'side hello');
  await switchRoom(bob.page, 'lobby');
  await send(bob.page, 'lobby one');
  await send(bob.page, 'lobby two');
  await alice.page.waitForFunction(() => document.querySelector('#room-list .room-button[data-room="lobby"] .unread')?.dataset.count === '2');
  assert.equal(await unread(alice.page, 'lobby').isVisible(), true);
  assert.equal(await unread(alice.page, 'side-room').getAttribute('data-count'), '0');
  // Bob is looking at lobby: his side-room count is 0 while his lobby posts do not count for himself.
  assert.equal(await unread(bob.page, 'lobby').getAttribute('data-count'), '0');

  await switchRoom(alice.page, 'lobby');
  assert.equal(await unread(alice.page, 'lobby').getAttribute('data-count'), '0');
  assert.equal(await unread(alice.page, 'lobby').isVisible(), false);
  assert.deepEqual((await delivered(alice.page, 'lobby')).map((m) => m.text),
    ['hello from alice', 'hi alice', 'lobby one', 'lobby two']);
  assert.deepEqual((await delivered(alice.page, 'side-room')).map((m) => m.seq), [1]);

  // Shift+Enter is a new line, Enter sends; the text keeps its newline.
  await alice.page.fill('#composer-input', 'line one');
  await alice.page.press('#composer-input', 'Shift+Enter');
  await alice.page.type('#composer-input', 'line two');
  await alice.page.press('#composer-input', 'Enter');
  await waitForMessage(bob.page, 'lobby', 'line one\nline two');

  assertNoConsoleErrors(assert, alice.consoleErrors);
  assertNoConsoleErrors(assert, bob.consoleErrors);
});

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

test('new messages do not yank a reader who scrolled up; leaving a room; the length counter', async () => {
  const reader = await openChat(env.browser, env.server, 'reader', { width: 800, height: 420 });
  const writer = await openChat(env.browser, env.server, 'writer');
  await joinRoom(reader.page, 'scrolly');
  await joinRoom(writer.page, 'scrolly');
  for (let i = 1; i <= 15; i += 1) await send(writer.page, `filler ${i}`);
  await waitForMessage(reader.page, 'scrolly', 'filler 15');
  const pane = '.messages[data-room="scrolly"]';
  const atBottom = () => reader.page.$eval(pane, (p) => p.scrollHeight - p.scrollTop - p.clientHeight <= 48);
  assert.equal(await atBottom(), true, 'a reader at the bottom follows new messages');

  await reader.page.$eval(pane, (p) => { p.scrollTop = 0; });
  await send(writer.page, 'while you were reading');
  await waitForMessage(reader.page, 'scrolly', 'while you were reading');
  await reader.page.locator('#new-messages').waitFor({ state: 'visible' });
  assert.equal(await reader.page.$eval(pane, (p) => p.scrollTop), 0, 'the view stays where the reader left it');
  await reader.page.click('#new-messages');
  assert.equal(await atBottom(), true);
  assert.equal(await reader.page.locator('#new-messages').isVisible(), false);

  await reader.page.click('#room-list .leave-button[aria-label="Leave scrolly"]');
  await reader.page.locator('#room-list .room-item[data-room="scrolly"]').waitFor({ state: 'detached' });
  await writer.page.locator('.messages[data-room="scrolly"] .system-note', { hasText: 'reader left' }).waitFor();

  const max = 4000;
  await reader.page.fill('#composer-input', 'x'.repeat(max + 1));
  assert.equal(await reader.page.getAttribute('#char-count', 'data-over'), 'true');
  assert.equal(await reader.page.textContent('#char-count'), `${max + 1} / ${max}`);
  assert.equal(await reader.page.isDisabled('#send-button'), true);
  await reader.page.press('#composer-input', 'Backspace');
  assert.equal(await reader.page.isDisabled('#send-button'), false);

  assertNoConsoleErrors(assert, reader.consoleErrors);
  assertNoConsoleErrors(assert, writer.consoleErrors);
});

// Edits and deletions in the page: the author edits one message and deletes another
// from the message's own buttons (keyboard included); both pages show the change at
// once and after a reload; the other user is offered neither on someone else's message.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  setupSuite, assertNoConsoleErrors, openChat, send, waitForMessage,
} from './helpers.mjs';

const env = setupSuite();

const lobby = '.messages[data-room="lobby"]';
const byText = (page, text) => page.locator(`${lobby} li.msg[data-seq]`, { hasText: text });
const textOf = (page, seq) => page.locator(`${lobby} li.msg[data-seq="${seq}"] .msg-text`).textContent();

test('an edit and a deletion show on both pages and after a reload', { timeout: 60000 }, async () => {
  const alice = await openChat(env.browser, env.server, 'alice');
  const bob = await openChat(env.browser, env.server, 'bob');
  await send(alice.page, 'teh first one');
  await send(alice.page, 'a regrettable one');
  await waitForMessage(bob.page, 'lobby', 'a regrettable one');
  const first = Number(await byText(alice.page, 'teh first one').getAttribute('data-seq'));
  const second = Number(await byText(alice.page, 'a regrettable one').getAttribute('data-seq'));

  assert.equal(await byText(bob.page, 'teh first one').locator('.msg-actions [data-action="edit"], .msg-actions [data-action="delete"]').count(), 0,
    'no edit or delete on someone else\'s message');

  // Edit from the keyboard: the button, then type and Enter.
  await byText(alice.page, 'teh first one').locator('[data-action="edit"]').focus();
  await alice.page.keyboard.press('Enter');
  const box = alice.page.locator(`${lobby} .msg-edit-form textarea`);
  await box.fill('the first one');
  await box.press('Enter');
  // Delete: the button asks once more.
  const del = byText(alice.page, 'a regrettable one').locator('[data-action="delete"]');
  await del.click();
  assert.equal(await del.textContent(), 'Confirm delete');
  await del.click();

  for (const { page } of [alice, bob]) {
    await page.waitForFunction(([sel, s1, s2]) => {
      const one = document.querySelector(`${sel} li.msg[data-seq="${s1}"]`);
      const two = document.querySelector(`${sel} li.msg[data-seq="${s2}"]`);
      return one?.querySelector('.msg-text').textContent === 'the first one' && two?.dataset.deleted === 'true';
    }, [lobby, first, second]);
  }
  await bob.page.reload();
  await waitForMessage(bob.page, 'lobby', 'the first one');
  assert.equal(await textOf(bob.page, first), 'the first one');
  assert.equal(await bob.page.locator(`${lobby} li.msg[data-seq="${first}"] .msg-edited`).textContent(), '(edited)');
  assert.equal(await textOf(bob.page, second), 'Message deleted');
  assert.equal(await bob.page.locator(`${lobby} li.msg`, { hasText: 'regrettable' }).count(), 0, 'the text is gone');
  const shown = await bob.page.evaluate((sel) => document.querySelectorAll(`${sel} li.msg[data-seq]`).length, lobby);
  assert.equal(shown, 2, 'the edit and delete events are applied, never shown as messages');
  for (const { consoleErrors } of [alice, bob]) assertNoConsoleErrors(assert, consoleErrors);
});

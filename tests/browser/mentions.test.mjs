// Mentions in the page, as users make them: bob allows notifications with a click
// (the permission granted in the browser context), reads another room and hides the
// tab; alice types "@bo", picks bob from the suggestions and sends. Bob gets a browser
// notification, the lobby's badge says he was mentioned, the tab title counts the
// unread message, and the message is marked as mentioning him.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  setupSuite, assertNoConsoleErrors, openChat, joinRoom, switchRoom, waitForMessage,
} from './helpers.mjs';

const env = setupSuite();

test('a mention picked from the suggestions notifies the hidden tab and counts in the title', { timeout: 60000 }, async () => {
  const alice = await openChat(env.browser, env.server, 'alice');
  const bob = await openChat(env.browser, env.server, 'bob');

  // Bob allows notifications with a click.
  assert.equal(await bob.page.locator('#notify-button').isVisible(), true, 'offered while the browser has not been asked');
  await bob.page.context().grantPermissions(['notifications'], { origin: env.server.httpUrl });
  await bob.page.click('#notify-button');
  await bob.page.locator('#notify-button').waitFor({ state: 'hidden' });
  // Record what the page shows as notifications; then bob reads another room and hides the tab.
  await bob.page.evaluate(() => {
    const Real = window.Notification;
    window.shownNotes = [];
    window.Notification = class extends Real {
      constructor(title, options) {
        super(title, options);
        window.shownNotes.push({ title, body: options?.body });
      }
    };
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
  });
  await joinRoom(bob.page, 'elsewhere');
  await switchRoom(bob.page, 'elsewhere');

  await alice.page.waitForFunction(() => [...document.querySelectorAll('#user-list li')].some((li) => li.textContent.startsWith('bob')));
  await alice.page.focus('#composer-input');
  await alice.page.keyboard.type('look @bo');
  await alice.page.locator('#mention-list .mention-option', { hasText: '@bob' }).click();
  await alice.page.keyboard.type('at this');
  assert.equal(await alice.page.inputValue('#composer-input'), 'look @bob at this');
  await alice.page.press('#composer-input', 'Enter');
  await waitForMessage(alice.page, 'lobby', 'look @bob at this');

  await bob.page.waitForFunction(() => window.shownNotes.length > 0);
  assert.deepEqual(await bob.page.evaluate(() => window.shownNotes),
    [{ title: 'alice mentioned you in # lobby', body: 'look @bob at this' }]);
  await bob.page.waitForFunction(() => document.title === '(1) natter');
  const badge = bob.page.locator('#room-list .room-item[data-room="lobby"] .unread');
  assert.equal(await badge.getAttribute('data-mention'), 'true');
  assert.equal(await badge.textContent(), '@1');
  await switchRoom(bob.page, 'lobby');
  const marked = await bob.page.evaluate(() => [...document.querySelectorAll('.messages[data-room="lobby"] li.msg.mentions-me')]
    .map((li) => li.rawText));
  assert.deepEqual(marked, ['look @bob at this']);
  for (const { consoleErrors } of [alice, bob]) assertNoConsoleErrors(assert, consoleErrors);
});

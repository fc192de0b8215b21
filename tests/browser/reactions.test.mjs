// Reactions in the page, as a user makes them: bob picks 👍 from a message's picker,
// alice sees the chip with its count and clicks it to add hers (2, pressed on her page),
// bob clicks his chip to take his off; a reload shows the counts from history.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  setupSuite, assertNoConsoleErrors, openChat, send, waitForMessage,
} from './helpers.mjs';

const env = setupSuite();

const lobby = '.messages[data-room="lobby"]';
const byText = (page, text) => page.locator(`${lobby} li.msg[data-seq]`, { hasText: text });

/** Waits until message `text`'s chip for `emoji` shows `count` (0: no chip), pressed or not. */
async function chip(page, text, emoji, count, pressed) {
  await page.waitForFunction(([sel, t, e, n, p]) => {
    const li = [...document.querySelectorAll(`${sel} li.msg[data-seq]`)].find((el) => el.querySelector('.msg-text').textContent === t);
    const c = li && [...li.querySelectorAll('.reaction-chip')].find((b) => b.dataset.emoji === e);
    if (n === 0) return li && !c;
    return c && c.querySelector('.reaction-count').textContent === String(n)
      && (p === undefined || c.getAttribute('aria-pressed') === String(p));
  }, [lobby, text, emoji, count, pressed]);
}

test('a reaction picked on one page shows its count on the other, and toggles', { timeout: 60000 }, async () => {
  const alice = await openChat(env.browser, env.server, 'alice');
  const bob = await openChat(env.browser, env.server, 'bob');
  await send(alice.page, 'ship it?');
  await waitForMessage(bob.page, 'lobby', 'ship it?');

  const msg = byText(bob.page, 'ship it?');
  await msg.hover();
  await msg.locator('.reaction-add').click();
  await msg.locator('.reaction-picker button[data-emoji="👍"]').click();
  await chip(bob.page, 'ship it?', '👍', 1, true);
  await chip(alice.page, 'ship it?', '👍', 1, false);

  await byText(alice.page, 'ship it?').locator('.reaction-chip[data-emoji="👍"]').click();
  await chip(alice.page, 'ship it?', '👍', 2, true);
  await chip(bob.page, 'ship it?', '👍', 2, true);

  await byText(bob.page, 'ship it?').locator('.reaction-chip[data-emoji="👍"]').click();
  await chip(bob.page, 'ship it?', '👍', 1, false);
  await chip(alice.page, 'ship it?', '👍', 1, true);

  await bob.page.reload();
  await waitForMessage(bob.page, 'lobby', 'ship it?');
  await chip(bob.page, 'ship it?', '👍', 1, false);
  for (const { consoleErrors } of [alice, bob]) assertNoConsoleErrors(assert, consoleErrors);
});

// The sign-in box is modal: until the user has signed in, the keyboard cannot reach
// the room form, the composer or anything else behind it, and nothing can be typed
// there before the page is connected.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setupSuite, assertNoConsoleErrors, openPage, waitForState } from './helpers.mjs';

const env = setupSuite();

/** Where the keyboard focus is: 'login' inside the dialog, else the element's id (or tag). */
function focusIs(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (el === null || el === document.body) return 'body';
    if (el.closest('#login')) return 'login';
    return el.id || el.tagName.toLowerCase();
  });
}

test('Tab and Shift+Tab from the sign-in dialog never leave it for the page behind', async () => {
  const { page, consoleErrors } = await openPage(env.browser, env.server.httpUrl);
  await page.locator('#login-name').waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => document.getElementById('login').matches('dialog:modal')), true);
  const outside = [];
  for (const key of [...Array(12).fill('Tab'), ...Array(12).fill('Shift+Tab')]) {
    await page.keyboard.press(key);
    const at = await focusIs(page);
    // Past the dialog's last field Chromium may hand focus to its own UI (the body).
    if (at !== 'login' && at !== 'body') outside.push(`${key} → ${at}`);
  }
  assert.deepEqual(outside, [], 'focus reached the page behind the dialog');
  // Typing goes nowhere behind it either, and Escape does not dismiss it.
  await page.keyboard.press('Escape');
  assert.equal(await page.evaluate(() => document.getElementById('login').open), true, 'Escape left the dialog open');
  assert.equal(await page.inputValue('#composer-input'), '');

  await page.fill('#login-name', 'keyboard');
  await page.press('#login-name', 'Enter');
  await waitForState(page, 'online');
  assert.equal(await page.evaluate(() => document.getElementById('login').open), false, 'closed once signed in');
  await page.focus('#composer-input');
  assert.equal(await focusIs(page), 'composer-input', 'the composer is reachable after sign-in');
  assertNoConsoleErrors(assert, consoleErrors);
});

// The page at phone and desktop widths: screenshots for a person to look at
// (artifacts/screenshots/), no horizontal overflow, the sidebar collapsing
// into a drawer on narrow screens, and the light and dark schemes.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  setupSuite, assertNoConsoleErrors, openChat, screenshot, send, waitForMessage, waitForState,
} from './helpers.mjs';

const env = setupSuite();

const overflow = (page) => page.evaluate(() => ({
  scrollWidth: document.documentElement.scrollWidth,
  clientWidth: document.documentElement.clientWidth,
}));

function assertNoHorizontalOverflow({ scrollWidth, clientWidth }, label) {
  assert.ok(scrollWidth <= clientWidth, `${label}: scrollWidth ${scrollWidth} > clientWidth ${clientWidth}`);
}

const LONG_WORD = `averyveryverylongwordwithoutanyspaces${'x'.repeat(120)}`;
const LONG_LINK = `https://example.com/${'path/'.repeat(40)}`;

for (const [width, height] of [[375, 740], [1280, 800]]) {
  for (const scheme of ['light', 'dark']) {
    test(`layout at ${width} px (${scheme})`, async () => {
      const alice = await openChat(env.browser, env.server, `alice-${width}-${scheme}`, { width, height });
      const { page } = alice;
      await page.emulateMedia({ colorScheme: scheme });
      const texts = [`a short hello at ${width} ${scheme}`, LONG_WORD, LONG_LINK, 'two\nlines'];
      for (const text of texts) await send(page, text);
      for (const text of texts) await waitForMessage(page, 'lobby', text);

      const sidebar = page.locator('#sidebar');
      const toggle = page.locator('#sidebar-toggle');
      if (width < 700) {
        assert.equal(await sidebar.isVisible(), false, 'sidebar is collapsed on a phone');
        assert.equal(await toggle.isVisible(), true);
        await screenshot(page, `chat-${width}-${scheme}`);
        assertNoHorizontalOverflow(await overflow(page), `${width} ${scheme}`);
        await toggle.click();
        await page.locator('#join-input').waitFor({ state: 'visible' });
        await page.waitForFunction(() => document.getElementById('sidebar').getBoundingClientRect().left >= 0);
        assert.equal(await toggle.getAttribute('aria-expanded'), 'true');
        await screenshot(page, `sidebar-${width}-${scheme}`);
        assertNoHorizontalOverflow(await overflow(page), `${width} ${scheme} with the drawer open`);
        await page.keyboard.press('Escape');
        await page.waitForFunction(() => !document.body.classList.contains('sidebar-open'));
      } else {
        assert.equal(await sidebar.isVisible(), true, 'sidebar is shown on a desktop');
        assert.equal(await toggle.isVisible(), false);
        await screenshot(page, `chat-${width}-${scheme}`);
        assertNoHorizontalOverflow(await overflow(page), `${width} ${scheme}`);
      }
      const background = await page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
      const [r, g, b] = background.match(/\d+/g).map(Number);
      const dark = r + g + b < 3 * 128;
      assert.equal(dark, scheme === 'dark', `background ${background} for ${scheme}`);
      assertNoConsoleErrors(assert, alice.consoleErrors);
      await alice.context.close();
    });
  }
}

test('the sign-in form and the reconnect bar at 375 px', async () => {
  const { page } = await openChat(env.browser, env.server, 'phone-user', { width: 375, height: 740 });
  // Keyboard: Tab from the composer reaches the send button, which is a button.
  await page.focus('#composer-input');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'send-button');
  const labels = await page.evaluate(() => [...document.querySelectorAll('input, textarea')]
    .filter((el) => !el.labels || el.labels.length === 0).map((el) => el.id));
  assert.deepEqual(labels, [], 'every field has a label');
  assertNoHorizontalOverflow(await overflow(page), 'signed in at 375');

  const fresh = await env.browser.newContext({ viewport: { width: 375, height: 740 } });
  const login = await fresh.newPage();
  await login.goto(env.server.httpUrl);
  await login.locator('#login-name').waitFor({ state: 'visible' });
  await screenshot(login, 'login-375');
  assertNoHorizontalOverflow(await overflow(login), 'login at 375');
  await fresh.close();

  // Last in this file, so the server can go: the status bar while reconnecting.
  await env.server.kill();
  await waitForState(page, 'reconnecting');
  await page.locator('#retry-now').waitFor({ state: 'visible' });
  await screenshot(page, 'reconnecting-375');
  assertNoHorizontalOverflow(await overflow(page), 'reconnecting at 375');
});

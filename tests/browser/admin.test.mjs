// The admin console (www/admin/ on the admin listener): sign in with an `admin` API
// key, watch the messages/s chart move while a client posts, ban that user from the
// Users tab (their chat page goes offline, banned, and a fresh page is refused), find
// the ban in the audit log; the console at phone width; a key without `admin` refused.

import assert from 'node:assert/strict';
import { chmod, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import {
  setupSuite, assertNoConsoleErrors, openChat, openPage, send, screenshot, waitForMessage,
} from './helpers.mjs';
import { freePort, tempDir } from './natter-process.mjs';

const ADMIN_KEY = 'console-admin-key-0123456789';
const PLAIN_KEY = 'console-plain-key-0123456789';

const env = setupSuite(async (e) => {
  const dir = await tempDir(e.cleanup, 'natter-admin-');
  const keys = path.join(dir, 'api.keys');
  await writeFile(keys, `${ADMIN_KEY} admin\n${PLAIN_KEY}\n`);
  await chmod(keys, 0o600);
  e.adminPort = await freePort();
  return { extraArgs: ['--api-key-file', keys, '--admin-bind', `127.0.0.1:${e.adminPort}`] };
});

const consoleUrl = () => `http://127.0.0.1:${env.adminPort}/admin/`;

async function signIn(page, key) {
  await page.locator('#key').waitFor({ state: 'visible' });
  await page.fill('#key', key);
  await page.click('#signin button[type="submit"]');
}

test('an admin watches the chart, bans a poster and finds the ban in the audit log', { timeout: 90000 }, async () => {
  const admin = await openPage(env.browser, consoleUrl());
  const { page } = admin;
  await signIn(page, ADMIN_KEY);
  await page.locator('#overview').waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => location.href.includes('console-admin-key')), false, 'never in the URL');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('natter-admin-key')), ADMIN_KEY);
  await page.waitForFunction(() => Number(document.getElementById('chart-messages').dataset.points) >= 2);
  assert.equal(await page.evaluate(() => Number(document.getElementById('chart-messages').dataset.max)), 0,
    'nothing posted yet');

  const troll = await openChat(env.browser, env.server, 'troll');
  const uid = await troll.page.evaluate(() => window.natter.client.me.id);
  // Posting until the chart shows it: the rate is sampled once a second.
  let n = 0;
  const posting = setInterval(() => {
    n += 1;
    send(troll.page, `spam ${n}`).catch(() => {});
  }, 150);
  try {
    await page.waitForFunction(() => Number(document.getElementById('chart-messages').dataset.max) > 0, null, { timeout: 20000 });
  } finally {
    clearInterval(posting);
  }
  await waitForMessage(troll.page, 'lobby', 'spam 1');
  assert.ok(Number(await page.locator('#chart-connections').getAttribute('data-now')) >= 1, 'the connection counted');

  await page.click('#tabs [data-tab="rooms"]');
  await page.locator('#room-table tbody tr[data-room="lobby"]').click();
  await page.locator('#room-messages li', { hasText: 'spam 1' }).first().waitFor();
  await page.locator('#room-members li', { hasText: 'troll' }).waitFor();

  await page.click('#tabs [data-tab="users"]');
  const row = page.locator(`#user-table tbody tr[data-user="${uid}"]`);
  await row.waitFor();
  assert.match(await row.textContent(), /websocket/);
  await row.locator('button', { hasText: 'Ban' }).click();
  await page.fill('#action-minutes', '30');
  await page.fill('#action-reason', 'spam in the lobby');
  await screenshot(page, 'admin-users');
  await page.click('#action-go');
  await page.locator(`#ban-table tbody tr[data-user="${uid}"]`).waitFor();

  // The banned page goes offline for good, saying why; a fresh page of theirs is refused.
  await troll.page.waitForFunction(() => document.getElementById('status').dataset.state === 'offline'
    && /banned from this server/.test(document.getElementById('status-text').textContent), null, { timeout: 15000 });
  const identity = await troll.page.evaluate(() => localStorage.getItem('natter.identity'));
  const again = await openPage(env.browser, env.server.httpUrl, { identity });
  await again.page.locator('#login-name').waitFor({ state: 'visible' });
  await again.page.fill('#login-name', 'troll');
  await again.page.click('#login-form button[type="submit"]');
  await again.page.waitForFunction(() => document.getElementById('status').dataset.state === 'offline'
    && /banned from this server: 30 more minute\(s\): spam in the lobby/.test(document.getElementById('status-text').textContent));
  const bystander = await openChat(env.browser, env.server, 'bystander');
  await send(bystander.page, 'still here');
  await waitForMessage(bystander.page, 'lobby', 'still here');

  await page.click('#tabs [data-tab="audit"]');
  await page.selectOption('#audit-action', 'ban');
  await page.click('#audit-filters button[type="submit"]');
  const entry = page.locator('#audit-table tbody tr[data-action="ban"]').first();
  await entry.waitFor();
  const text = await entry.textContent();
  assert.match(text, new RegExp(uid));
  assert.match(text, /spam in the lobby/);
  assert.match(text, /127\.0\.0\.1/);
  await screenshot(page, 'admin-audit');
  await page.click('#tabs [data-tab="overview"]');
  await page.waitForFunction(() => Number(document.getElementById('chart-messages').dataset.points) >= 8);
  await screenshot(page, 'admin-overview');

  assertNoConsoleErrors(assert, admin.consoleErrors);
  assertNoConsoleErrors(assert, bystander.consoleErrors);
});

test('the console works at phone width, and refuses a key without `admin`', { timeout: 60000 }, async () => {
  const phone = await openPage(env.browser, consoleUrl(), { width: 375, height: 740 });
  const { page } = phone;
  await signIn(page, PLAIN_KEY);
  await page.waitForFunction(() => /no `admin` right/.test(document.getElementById('signin-error').textContent));
  assert.equal(await page.evaluate(() => sessionStorage.getItem('natter-admin-key')), null);
  await signIn(page, ADMIN_KEY);
  await page.locator('#overview').waitFor({ state: 'visible' });
  await page.waitForFunction(() => Number(document.getElementById('chart-connections').dataset.points) >= 1);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling at 375 px (${overflow} px over)`);
  for (const tab of ['rooms', 'users', 'audit']) {
    await page.click(`#tabs [data-tab="${tab}"]`);
    await page.locator(`#${tab}`).waitFor({ state: 'visible' });
    const over = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(over <= 0, `${tab}: no sideways scrolling at 375 px (${over} px over)`);
  }
  await screenshot(page, 'admin-phone');
  // Not served on the public port.
  const publicPage = await fetch(`${env.server.httpUrl}/admin/`);
  assert.equal(publicPage.status, 404);
  assertNoConsoleErrors(assert, phone.consoleErrors, [/403/]);
});

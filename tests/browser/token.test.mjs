// Token mode: the page asks for a token and sends it in the WebSocket's first frame
// (`hello`, never in the URL); when the server refuses an expired token (close 1008
// `unauthorized: …` after the hello) or closes with 1008 "token expired", the page
// says so and asks again instead of retrying in a loop.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { OUTAGE_NOISE, assertNoConsoleErrors, openPage, setupSuite, tempDir, waitForState } from './helpers.mjs';

const SECRET = 'browser-test-secret-0123456789abcdef';

const env = setupSuite(async ({ cleanup }) => {
  const secretFile = path.join(await tempDir(cleanup, 'natter-secret-'), 'jwt.secret');
  await writeFile(secretFile, SECRET);
  return { extraArgs: ['--auth', 'token', '--jwt-secret-file', secretFile, '--jwt-leeway-s', '0'] };
});

function jwt(claims) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode(claims)}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

const now = () => Math.floor(Date.now() / 1000);

async function signIn(page, token) {
  await page.locator('#login-token').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#login-name').isVisible(), false, 'no name field in token mode');
  await page.fill('#login-token', token);
  await page.click('#login-form button[type="submit"]');
}

test('a valid token connects; an expired one is refused and asked for again', async () => {
  const { page, consoleErrors } = await openPage(env.browser, env.server.httpUrl);
  await signIn(page, jwt({ sub: 'u-ann', name: 'ann', exp: now() + 600 }));
  await waitForState(page, 'online');
  await page.waitForFunction(() => document.getElementById('me-name').textContent === 'ann');
  assert.equal(await page.locator('#nick-form').isVisible(), false, 'no rename in token mode');
  assertNoConsoleErrors(assert, consoleErrors);

  const stale = await openPage(env.browser, env.server.httpUrl);
  let attempts = 0;
  stale.page.on('websocket', () => { attempts += 1; });
  await signIn(stale.page, jwt({ sub: 'u-bob', name: 'bob', exp: now() - 60 }));
  await stale.page.locator('#login-token').waitFor({ state: 'visible', timeout: 30000 });
  assert.match(await stale.page.textContent('#login-reason'), /refused|expired/i);
  assert.equal(await stale.page.getAttribute('#status', 'data-state'), 'offline');
  const seen = attempts;
  assert.equal(seen, 1, 'refused in so many words: asked again after one attempt');
  // Absence of retries cannot be awaited: look again after a while.
  await stale.page.waitForTimeout(3000);
  assert.equal(attempts, seen, 'no retry loop once the page asked for a new token');
  assertNoConsoleErrors(assert, stale.consoleErrors, OUTAGE_NOISE);
});

test('a token that expires while connected ends with "token expired" and a prompt', async () => {
  const { page, consoleErrors } = await openPage(env.browser, env.server.httpUrl);
  await signIn(page, jwt({ sub: 'u-cy', name: 'cy', exp: now() + 3 }));
  await waitForState(page, 'online');
  await page.locator('#login-token').waitFor({ state: 'visible', timeout: 20000 });
  assert.match(await page.textContent('#login-reason'), /token expired/i);
  assert.match(await page.textContent('#status-text'), /expired/i);
  assertNoConsoleErrors(assert, consoleErrors, OUTAGE_NOISE);
});

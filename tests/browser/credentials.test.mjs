// Credentials never travel in a URL: proxies write URLs to their access logs. The
// page, in open mode and in token mode, over WebSocket and over the SSE fallback,
// is watched for every request and WebSocket URL it opens; none may contain the
// token, the open-mode identity key or the fallback's session.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  Cleanup, OUTAGE_NOISE, assertNoConsoleErrors, launchBrowser, send, startServer, tempDir, waitForMessage,
  waitForState,
} from './helpers.mjs';

const SECRET = 'browser-test-secret-0123456789abcdef';
const cleanup = new Cleanup();
const env = {};

before(async () => {
  const secretFile = path.join(await tempDir(cleanup, 'natter-secret-'), 'jwt.secret');
  await writeFile(secretFile, SECRET);
  env.open = await startServer(cleanup, {});
  env.token = await startServer(cleanup, { extraArgs: ['--auth', 'token', '--jwt-secret-file', secretFile] });
  env.browser = await launchBrowser(cleanup);
});
after(() => cleanup.run());

function jwt(claims) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode(claims)}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

/**
 * Opens the page with every URL it asks for recorded (requests, WebSockets), signs
 * in (`name` in open mode, `token` in token mode), waits until online and posts a
 * message, so that every kind of request has been made. `fallback`: WebSockets are
 * closed at once, so the page chats over SSE+POST.
 */
async function chatWatched(server, { name, token, fallback = false }) {
  const context = await env.browser.newContext();
  if (fallback) await context.routeWebSocket(/./, (ws) => ws.close());
  const page = await context.newPage();
  const urls = [];
  const methods = [];
  page.on('request', (request) => {
    urls.push(request.url());
    methods.push(`${request.method()} ${new URL(request.url()).pathname}`);
  });
  page.on('websocket', (ws) => urls.push(ws.url()));
  const consoleErrors = [];
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(message.text());
  });
  await page.goto(server.httpUrl);
  const field = token ? '#login-token' : '#login-name';
  await page.locator(field).waitFor({ state: 'visible' });
  await page.fill(field, token ?? name);
  await page.click('#login-form button[type="submit"]');
  await waitForState(page, 'online', 30000);
  const transport = await page.evaluate(() => document.getElementById('status').dataset.transport);
  assert.equal(transport, fallback ? 'sse' : 'websocket');
  const text = `watched ${Math.random().toString(36).slice(2)}`;
  await page.waitForFunction(() => document.querySelectorAll('#user-list li').length > 0);
  await send(page, text);
  await waitForMessage(page, 'lobby', text);
  const secrets = await page.evaluate(() => ({
    key: localStorage.getItem('natter.identity'),
    session: window.natter.client.ws?.session ?? null,
  }));
  assertNoConsoleErrors(assert, consoleErrors, OUTAGE_NOISE);
  await context.close();
  return { urls, methods, secrets };
}

function assertNoneContains(urls, secret, what) {
  assert.ok(typeof secret === 'string' && secret.length >= 16, `${what} is known: ${secret}`);
  const leaking = urls.filter((url) => url.includes(secret) || decodeURIComponent(url).includes(secret));
  assert.deepEqual(leaking, [], `${what} in a URL`);
}

test('open mode over WebSocket: no URL holds the identity key', async () => {
  const { urls, secrets } = await chatWatched(env.open, { name: 'wanda' });
  assert.ok(urls.some((url) => url.startsWith('ws://') && url.includes('/ws')), urls.join('\n'));
  assertNoneContains(urls, secrets.key, 'the identity key');
});

test('token mode over WebSocket: no URL holds the token', async () => {
  const token = jwt({ sub: 'u-tess', name: 'tess', exp: Math.floor(Date.now() / 1000) + 600 });
  const { urls } = await chatWatched(env.token, { token });
  assert.ok(urls.some((url) => url.startsWith('ws://')), urls.join('\n'));
  assertNoneContains(urls, token, 'the token');
  assertNoneContains(urls, token.split('.')[2], 'the token\'s signature');
});

test('open mode over the SSE fallback: no URL holds the key or the session', async () => {
  const { urls, methods, secrets } = await chatWatched(env.open, { name: 'sal', fallback: true });
  assert.ok(methods.includes('POST /sse') && methods.includes('GET /sse') && methods.includes('POST /send'), methods.join('\n'));
  assertNoneContains(urls, secrets.key, 'the identity key');
  assertNoneContains(urls, secrets.session, 'the SSE session');
});

test('token mode over the SSE fallback: no URL holds the token or the session', async () => {
  const token = jwt({ sub: 'u-sid', name: 'sid', exp: Math.floor(Date.now() / 1000) + 600 });
  const { urls, methods, secrets } = await chatWatched(env.token, { token, fallback: true });
  assert.ok(methods.includes('POST /send'), methods.join('\n'));
  assertNoneContains(urls, token, 'the token');
  assertNoneContains(urls, secrets.session, 'the SSE session');
});

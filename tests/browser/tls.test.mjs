// The page over TLS in a real Chromium that trusts only a CA made for this run (an
// NSS database in the browser's own HOME; no --ignore-certificate-errors):
// - behind the shipped nginx site (deploy/nginx-natter.conf, run on loopback by
//   scripts/nginx-for-tests.sh): the page loads from https://127.0.0.1:PORT/ and
//   two pages chat over wss:// through nginx, and a page whose WebSockets are
//   blocked chats over the HTTP fallback (SSE + POST) through it;
// - natter's native TLS (--tls-cert): two pages chat, and reconnect after a restart;
//   a page whose WebSockets are blocked chats over https:// /sse and /send.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchTrusting, makeCerts, startNginx } from './front.mjs';
import {
  Cleanup, assertNoConsoleErrors, freePort, openChat, send, startServer, tempDir,
  waitForMessage, waitForState,
} from './helpers.mjs';

const cleanup = new Cleanup();
const env = {};
after(() => cleanup.run());

before(async () => {
  const dir = await tempDir(cleanup, 'natter-tls-');
  env.certs = await makeCerts(dir);
  env.browser = await launchTrusting(cleanup, env.certs.ca, dir);

  const nginxPort = await freePort();
  env.proxied = await startServer(cleanup, {
    extraArgs: ['--trusted-proxy', '127.0.0.1', '--public-ws-url', `wss://127.0.0.1:${nginxPort}/ws`,
      '--allowed-origin', `https://127.0.0.1:${nginxPort}`],
  });
  await startNginx(cleanup, dir, env.proxied, env.certs, nginxPort);
  env.front = { httpUrl: `https://127.0.0.1:${nginxPort}/`, wsUrl: `wss://127.0.0.1:${nginxPort}/ws` };

  env.native = await startServer(cleanup, { extraArgs: ['--tls-cert', env.certs.cert, '--tls-key', env.certs.key] });
  env.nativeFront = { httpUrl: `https://127.0.0.1:${env.native.opts.httpPort}/` };
});

test('through nginx: the page loads over https and two pages chat over wss', async () => {
  const alice = await openChat(env.browser, env.front, 'alice');
  const bob = await openChat(env.browser, env.front, 'bob');
  assert.match(alice.page.url(), /^https:\/\/127\.0\.0\.1:\d+\/$/);
  const wsUrl = await alice.page.evaluate(() => fetch('/config.json').then((r) => r.json()).then((c) => c.ws_url));
  assert.equal(wsUrl, env.front.wsUrl, 'the page is sent to nginx\'s /ws');
  await send(alice.page, 'hello through nginx');
  await waitForMessage(bob.page, 'lobby', 'hello through nginx');
  await send(bob.page, 'and back');
  await waitForMessage(alice.page, 'lobby', 'and back');
  assertNoConsoleErrors(assert, alice.consoleErrors);
  assertNoConsoleErrors(assert, bob.consoleErrors);
  await alice.context.close();
  await bob.context.close();
});

const transport = (page) => page.evaluate(() => document.getElementById('status').dataset.transport);

/** A page whose WebSockets are blocked falls back to SSE+POST at `front` and chats both
 * ways with a page on WebSocket. */
async function chatOverFallback(front, where) {
  const alice = await openChat(env.browser, front, 'alice', { blockWebSockets: true });
  const bob = await openChat(env.browser, front, 'bob');
  assert.equal(await transport(alice.page), 'sse', `alice fell back to SSE+POST ${where}`);
  assert.equal(await transport(bob.page), 'websocket');
  await send(alice.page, `over the fallback ${where}`);
  await waitForMessage(bob.page, 'lobby', `over the fallback ${where}`);
  await send(bob.page, `down the event stream ${where}`);
  await waitForMessage(alice.page, 'lobby', `down the event stream ${where}`);
  assertNoConsoleErrors(assert, alice.consoleErrors, [/WebSocket/i]);
  assertNoConsoleErrors(assert, bob.consoleErrors);
  await alice.context.close();
  await bob.context.close();
}

test('through nginx: a page whose WebSockets are blocked chats over the HTTP fallback', async () => {
  await chatOverFallback(env.front, 'through nginx');
});

test('native TLS: a page whose WebSockets are blocked chats over https /sse and /send', async () => {
  await chatOverFallback(env.nativeFront, 'on the wss:// port');
});

test('native TLS: two pages chat over wss and reconnect after a restart', async () => {
  const alice = await openChat(env.browser, env.nativeFront, 'alice');
  const bob = await openChat(env.browser, env.nativeFront, 'bob');
  const wsUrl = await alice.page.evaluate(() => fetch('/config.json').then((r) => r.json()).then((c) => c.ws_url));
  assert.equal(wsUrl, `wss://127.0.0.1:${env.native.opts.wsPort}/ws`);
  await send(alice.page, 'hello over native TLS');
  await waitForMessage(bob.page, 'lobby', 'hello over native TLS');

  await env.native.restart();
  await waitForState(alice.page, 'online');
  await waitForState(bob.page, 'online');
  await send(bob.page, 'after the restart');
  await waitForMessage(alice.page, 'lobby', 'after the restart');
  const noise = [/WebSocket connection to .* failed/i, /ERR_CONNECTION_(REFUSED|RESET|CLOSED)/i];
  assertNoConsoleErrors(assert, alice.consoleErrors, noise);
  assertNoConsoleErrors(assert, bob.consoleErrors, noise);
});

// The page over TLS in a real Chromium that trusts only a CA made for this run (an
// NSS database in the browser's own HOME; no --ignore-certificate-errors):
// - behind the shipped nginx site (deploy/nginx-natter.conf, run on loopback by
//   scripts/nginx-for-tests.sh): the page loads from https://127.0.0.1:PORT/ and
//   two pages chat over wss:// through nginx, and a page whose WebSockets are
//   blocked chats over the HTTP fallback (SSE + POST) through it;
// - natter's native TLS (--tls-cert): two pages chat, and reconnect after a restart;
//   a page whose WebSockets are blocked chats over https:// /sse and /send.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import {
  Cleanup, REPO_ROOT, assertNoConsoleErrors, freePort, openChat, send, startServer, tempDir,
  waitForMessage, waitForState,
} from './helpers.mjs';

const cleanup = new Cleanup();
const env = {};
after(() => cleanup.run());

/** A CA and a server certificate for 127.0.0.1/localhost it signs (openssl CLI). */
async function makeCerts(dir) {
  const run = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=natter browser test CA');
  run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
  await writeFile(path.join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-days', '1', '-extfile', 'san.ext', '-out', 'leaf.pem');
  const chain = execFileSync('cat', ['leaf.pem', 'ca.pem'], { cwd: dir });
  await writeFile(path.join(dir, 'server.pem'), chain);
  return { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'server.pem'), key: path.join(dir, 'server.key') };
}

/** Chromium with a HOME whose NSS database trusts `caFile` (and nothing else is added). */
async function launchTrusting(caFile, dir) {
  const home = path.join(dir, 'home');
  const nss = path.join(home, '.pki', 'nssdb');
  await mkdir(nss, { recursive: true });
  execFileSync('certutil', ['-N', '-d', `sql:${nss}`, '--empty-password']);
  execFileSync('certutil', ['-A', '-d', `sql:${nss}`, '-n', 'natter-test-ca', '-t', 'C,,', '-i', caFile]);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium',
    env: { ...process.env, HOME: home },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  cleanup.add(() => browser.close());
  return browser;
}

function waitForPort(port, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => { socket.destroy(); resolve(); });
      socket.once('error', () => {
        socket.destroy();
        if (Date.now() > deadline) reject(new Error(`nothing listens on ${port}`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

/** The shipped nginx site in front of `natter`, stopped by its PID at cleanup. */
async function startNginx(dir, natter, certs, port) {
  const plain = await freePort();
  const child = spawn(path.join(REPO_ROOT, 'scripts', 'nginx-for-tests.sh'), [
    path.join(dir, 'nginx'), String(port), String(natter.opts.httpPort), String(natter.opts.wsPort),
    certs.cert, certs.key, String(plain),
  ], { stdio: ['ignore', 'inherit', 'inherit'] });
  cleanup.add(() => { if (child.exitCode === null) process.kill(child.pid, 'SIGTERM'); });
  await waitForPort(port);
  return port;
}

before(async () => {
  const dir = await tempDir(cleanup, 'natter-tls-');
  env.certs = await makeCerts(dir);
  env.browser = await launchTrusting(env.certs.ca, dir);

  const nginxPort = await freePort();
  env.proxied = await startServer(cleanup, {
    extraArgs: ['--trusted-proxy', '127.0.0.1', '--public-ws-url', `wss://127.0.0.1:${nginxPort}/ws`,
      '--allowed-origin', `https://127.0.0.1:${nginxPort}`],
  });
  await startNginx(dir, env.proxied, env.certs, nginxPort);
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

// A page in a room whose Redis comes back older than what the page saw (a Sentinel
// failover that lost the newest messages, a restore from an older snapshot): natter
// starts a new epoch for the room and resets its members, and the page shows the
// room's new history with a note, never the lost messages mixed with the new ones
// that took their seqs. natter runs with --redis on a private redis-server.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  setupSuite, OUTAGE_NOISE, assertNoConsoleErrors, delivered, openChat, openPage, waitForMessage,
} from './helpers.mjs';

async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Sends one inline command to the test Redis; resolves with its first reply chunk. */
function redisCommand(port, line) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(`${line}\r\n`));
    socket.setTimeout(5000, () => socket.destroy(new Error(`redis: no answer to ${line}`)));
    socket.once('data', (data) => {
      socket.end();
      resolve(data.toString());
    });
    socket.once('error', reject);
  });
}

/** A redis-server on a free loopback port, in memory, killed by its PID at cleanup. */
async function startRedis(cleanup) {
  const port = await freePort();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'natter-redis-'));
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  cleanup.add(async () => {
    child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });
  const deadline = Date.now() + 10000;
  for (;;) {
    try {
      if ((await redisCommand(port, 'PING')).startsWith('+PONG')) return port;
    } catch {
      // not up yet
    }
    assert.ok(Date.now() < deadline, 'redis-server answers PING');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const redis = { port: 0 };
const env = setupSuite(async ({ cleanup }) => {
  redis.port = await startRedis(cleanup);
  return { extraArgs: ['--redis', `redis://127.0.0.1:${redis.port}/`, '--rate-per-s', '1000', '--rate-burst', '1000'] };
});

/** Posts `texts` to lobby from a bare WebSocket in a scratch page; resolves when all are acked. */
async function post(texts) {
  const { page, context } = await openPage(env.browser, `${env.server.httpUrl}/healthz`);
  try {
    await page.evaluate(async ([url, all]) => {
      const ws = new WebSocket(`${url}?name=poster`);
      const frames = [];
      let wake = () => {};
      ws.onmessage = (event) => {
        frames.push(JSON.parse(event.data));
        wake();
      };
      const until = async (pred) => {
        while (!frames.some(pred)) await new Promise((resolve) => { wake = resolve; });
      };
      await until((f) => f.type === 'welcome');
      ws.send(JSON.stringify({ type: 'join', room: 'lobby' }));
      await until((f) => f.type === 'history');
      for (const [i, text] of all.entries()) {
        ws.send(JSON.stringify({ type: 'msg', room: 'lobby', text, id: `p-${Date.now()}-${i}` }));
        await until(() => frames.filter((f) => f.type === 'ack').length === i + 1);
      }
      ws.close();
    }, [env.server.wsUrl, texts]);
  } finally {
    await context.close();
  }
}

test('a page that saw messages Redis lost shows the new history with a note, not a mix', { timeout: 60000 }, async () => {
  const { page, context, consoleErrors } = await openChat(env.browser, env.server, 'alice');
  await post(['old 1', 'old 2', 'old 3', 'old 4', 'old 5']);
  await waitForMessage(page, 'lobby', 'old 5');
  await page.waitForFunction(() => typeof window.natter.client.room('lobby').epoch === 'string');
  const oldEpoch = await page.evaluate(() => window.natter.client.room('lobby').epoch);

  // Redis comes back as a replica promoted without the last two appends: same epoch,
  // head 3; every connection natter had to it breaks, as in a failover.
  for (const line of [
    'XDEL natter:room:lobby:stream 4-0 5-0',
    'HDEL natter:room:lobby:msgs 4 5',
    'XSETID natter:room:lobby:stream 3-0',
    'SET natter:room:lobby:seq 3',
    'CLIENT KILL TYPE normal',
  ]) {
    await redisCommand(redis.port, line);
  }
  await page.waitForFunction((old) => window.natter.client.room('lobby').epoch !== old, oldEpoch, { timeout: 15000 });
  // New messages take seqs 4 and 5 again, in the new epoch.
  await post(['new 4', 'new 5']);
  await waitForMessage(page, 'lobby', 'new 5');

  const shown = await delivered(page, 'lobby');
  assert.deepEqual(shown, [
    { seq: 1, text: 'old 1' }, { seq: 2, text: 'old 2' }, { seq: 3, text: 'old 3' },
    { seq: 4, text: 'new 4' }, { seq: 5, text: 'new 5' },
  ], 'the new history, each message once, the lost ones gone');
  assert.match(await page.textContent('.messages[data-room="lobby"] .gap-note'), /history of this room was reset/);
  assertNoConsoleErrors(assert, consoleErrors, OUTAGE_NOISE);
  await context.close();
});

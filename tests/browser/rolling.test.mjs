// A rolling upgrade behind the shipped nginx site, as docs/DEPLOY.md tells it: two
// natter instances on one Redis, each upstream block of deploy/nginx-natter.conf with
// both (the socket's hashed by client address), two pages chatting through nginx over
// wss://. Each instance in turn is
// stopped with SIGTERM and started again (the new binary would go in its place) while
// bob keeps posting: the pages on the stopped instance move to the other one and
// resume, and both pages end with every message exactly once, in order, with no
// reset (nothing lost, nothing shown twice).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, test } from 'node:test';
import { launchTrusting, makeCerts, startNginx, waitForPort } from './front.mjs';
import {
  Cleanup, OUTAGE_NOISE, assertNoConsoleErrors, delivered, freePort, openChat, send, startServer, tempDir,
  waitForMessage, waitForState,
} from './helpers.mjs';

const cleanup = new Cleanup();
const env = {};
after(() => cleanup.run());

before(async () => {
  const dir = await tempDir(cleanup, 'natter-rolling-');
  const redisPort = await freePort();
  const redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
  cleanup.add(() => { if (redis.exitCode === null) process.kill(redis.pid, 'SIGTERM'); });
  await waitForPort(redisPort);

  env.certs = await makeCerts(dir);
  env.browser = await launchTrusting(cleanup, env.certs.ca, dir);
  const nginxPort = await freePort();
  const extraArgs = ['--redis', `redis://127.0.0.1:${redisPort}/0`, '--trusted-proxy', '127.0.0.1',
    '--public-ws-url', `wss://127.0.0.1:${nginxPort}/ws`, '--allowed-origin', `https://127.0.0.1:${nginxPort}`];
  env.a = await startServer(cleanup, { extraArgs });
  env.b = await startServer(cleanup, { extraArgs });
  await startNginx(cleanup, dir, env.a, env.certs, nginxPort, env.b);
  env.front = { httpUrl: `https://127.0.0.1:${nginxPort}/` };
});

/** Posts `texts` from `page` one by one, each after the last is on the page. */
async function post(page, texts) {
  for (const text of texts) {
    await send(page, text);
    await waitForMessage(page, 'lobby', text, 20000);
  }
}

test('rolling upgrade behind nginx: each instance restarted in turn, nothing lost or doubled', async () => {
  const alice = await openChat(env.browser, env.front, 'alice');
  const bob = await openChat(env.browser, env.front, 'bob');
  const texts = Array.from({ length: 18 }, (_, i) => `rolling ${i + 1}`);
  await post(bob.page, texts.slice(0, 6));

  for (const [k, instance] of [env.a, env.b].entries()) {
    const stopped = instance.stop(); // SIGTERM: its clients are told 1001 and move over
    // Posted while an instance goes away: the page queues what it cannot send yet
    // and sends it, with its id, once it is back.
    await post(bob.page, texts.slice(6 + k * 6, 9 + k * 6));
    // Before the instance is back: whoever was on it reads on the other one.
    await waitForMessage(alice.page, 'lobby', texts[8 + k * 6], 20000);
    await stopped;
    instance.output = [];
    await instance.start(); // the upgraded binary
    await waitForState(alice.page, 'online');
    await waitForState(bob.page, 'online');
    await post(bob.page, texts.slice(9 + k * 6, 12 + k * 6));
  }

  await waitForMessage(alice.page, 'lobby', texts.at(-1), 20000);
  for (const [who, page] of [['alice', alice.page], ['bob', bob.page]]) {
    const shown = (await delivered(page, 'lobby')).filter((m) => m.text.startsWith('rolling '));
    assert.deepEqual(shown.map((m) => m.text), texts, `${who} shows every message once, in order`);
    const seqs = shown.map((m) => m.seq);
    assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), `${who}'s seqs ascend`);
    // A reset or a hole in the history is shown as a note: there must be none.
    assert.equal(await page.locator('.gap-note').count(), 0, `${who} shows no reset and no gap`);
  }
  assertNoConsoleErrors(assert, alice.consoleErrors, OUTAGE_NOISE);
  assertNoConsoleErrors(assert, bob.consoleErrors, OUTAGE_NOISE);
});

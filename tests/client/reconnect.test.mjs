// Reconnect: the server is SIGKILLed and started again on the same ports and
// data dir; the client notices, retries with backoff by itself, rejoins its
// room with `since`, and can post again.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connected, makeClient, post, startNatter, suiteCleanup, within } from './support.mjs';

const cleanup = suiteCleanup();

test('reconnects by itself after a server kill and resumes its room', { timeout: 60000 }, async () => {
  const server = await startNatter(cleanup);
  const client = makeClient(cleanup, { url: server.httpUrl, name: 'rita', rooms: ['lobby'] });
  await connected(client);
  assert.equal(client.state, 'online');
  assert.match(client.me.id, /^u-[0-9a-f]{16}$/, 'the id comes from the identity key, not the name');
  const me = client.me.id;
  const before = await post(client, 'lobby', 'before the crash');

  const down = client.next('down');
  const retrying = client.next('state', (s) => s.state === 'reconnecting');
  await server.kill();
  await within(down, 5000, 'the down event');
  const { retryAt } = await within(retrying, 5000, 'the reconnecting state');
  assert.ok(retryAt >= Date.now() - 1000, 'a retry is scheduled');

  const welcome = client.next('welcome');
  const resumed = client.next('history', (h) => h.room === 'lobby');
  await server.start();
  await within(welcome, 20000, 'a welcome on a new socket');
  const history = await within(resumed, 5000, 'the resumed history');
  assert.equal(history.resumed, true);
  assert.deepEqual(history.messages, [], 'nothing new since the last seq seen, so nothing again');
  assert.equal(client.room('lobby').lastSeq, before.seq);

  assert.equal(client.me.id, me, 'the same user after the reconnect');
  const after = await post(client, 'lobby', 'after the restart');
  assert.equal(after.seq, before.seq + 1);
  assert.equal(after.dup, false);
});

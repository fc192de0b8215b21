// Transient refusals are retried: a burst past the server's rate limit is
// refused with `rate_limited` (the join the client makes to learn the room's
// epoch included), and the client sends the refused frames again (same ids,
// after a pause) until every message is stored, once each, with no `failed`.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connected, makeClient, record, startNatter, suiteCleanup, within } from './support.mjs';

const cleanup = suiteCleanup();

test('rate_limited messages are re-sent until stored, once each', { timeout: 60000 }, async () => {
  const server = await startNatter(cleanup, { extraArgs: ['--rate-per-s', '2', '--rate-burst', '2'] });
  const client = makeClient(cleanup, { url: server.httpUrl, name: 'burst', rooms: ['lobby'] });
  await connected(client);
  const seen = record(client, 'lobby');
  const refusals = [];
  client.on('frame', (f) => {
    if (f.type === 'error' && f.code === 'rate_limited') refusals.push(f.ref);
  });
  const failed = [];
  client.on('failed', (f) => failed.push(f));

  const sent = Array.from({ length: 6 }, (_, i) => client.send('lobby', `burst ${i + 1}`));
  const acked = Promise.all(sent.map((entry) => client.next('ack', (a) => a.id === entry.id)));
  await within(acked, 30000, 'every message of the burst acked');
  // An ack may come before the message's own broadcast (a compressed frame is
  // inflated after a small plain one): wait for every broadcast too.
  const all = new Promise((resolve) => {
    const check = () => (seen.length >= sent.length ? resolve() : setTimeout(check, 20));
    check();
  });
  await within(all, 10000, 'every message of the burst seen');

  assert.ok(refusals.length >= 1, 'the burst went past the rate limit');
  assert.deepEqual(failed, [], 'a rate limit is not a failure');
  assert.deepEqual(client.unsent(), []);
  const texts = seen.map((m) => m.text).sort();
  assert.deepEqual(texts, sent.map((e) => e.text).sort(), 'each stored once');
  assert.equal(new Set(seen.map((m) => m.seq)).size, seen.length);
});

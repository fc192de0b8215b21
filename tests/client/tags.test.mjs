// A name is not an identity: a server-API post that calls itself "alice" (`from.name`)
// carries another user id (`api:<from.id>`), so the library gives it another `tag`
// than the real alice's, on the live message and in history.

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { userTag } from '../../www/js/natter-client.js';
import { connected, freePort, makeClient, post, startNatter, suiteCleanup, tempDir, within } from './support.mjs';

const cleanup = suiteCleanup();
const KEY = 'tags-test-api-key-0123456789abcdef';

test('an API post named like a user gets the tag of its own id, live and in history', { timeout: 30000 }, async () => {
  const keys = path.join(await tempDir(cleanup, 'natter-keys-'), 'api.keys');
  await writeFile(keys, `${KEY}\n`, { mode: 0o600 });
  const admin = await freePort();
  const server = await startNatter(cleanup, { extraArgs: ['--api-key-file', keys, '--admin-bind', `127.0.0.1:${admin}`] });
  const alice = makeClient(cleanup, { url: server.httpUrl, name: 'alice', rooms: ['lobby'] });
  await connected(alice);
  const real = await post(alice, 'lobby', 'from the real alice');

  const live = alice.next('message', (m) => m.text === 'from the api alice');
  const response = await fetch(`http://127.0.0.1:${admin}/api/v1/rooms/lobby/messages`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ text: 'from the api alice', from: { id: 'alice', name: 'alice' } }),
  });
  assert.equal(response.status, 201, await response.text());
  const impostor = await within(live, 5000, 'the API post');
  assert.equal(impostor.user, 'alice');
  assert.equal(impostor.uid, 'api:alice');
  assert.equal(impostor.tag, userTag('api:alice'));
  assert.equal(alice.me.tag, userTag(alice.me.id));
  assert.notEqual(impostor.tag, alice.me.tag, 'same name, another tag');

  // A second client reads both from history: each message carries its author's tag.
  const reader = makeClient(cleanup, { url: server.httpUrl, name: 'reader', rooms: ['lobby'] });
  const history = reader.next('history', (h) => h.room === 'lobby');
  await connected(reader);
  const { messages } = await history;
  const bySeq = new Map(messages.map((m) => [m.seq, m]));
  assert.equal(bySeq.get(real.seq).tag, alice.me.tag);
  assert.equal(bySeq.get(impostor.seq).tag, impostor.tag);
});

// Pacing lives in the library, so every client of it is polite without trying: a
// burst of typing() calls sends one `typing` notice, and a burst of markRead() calls
// sends one `read` at once and the newest seq asked for when the pause ends.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connected, makeClient, post, startNatter, suiteCleanup, within } from './support.mjs';

const cleanup = suiteCleanup();

/** Resolves once `client` has seen seq `seq` of `room` (maybe already). */
function seen(client, room, seq, what) {
  const arrived = client.next('message', (m) => m.room === room && m.seq >= seq);
  if (client.room(room).lastSeq >= seq) return Promise.resolve();
  return within(arrived, 5000, what);
}

/** Every frame `client` sends from now on, parsed. */
function sentFrames(client) {
  const sent = [];
  const ws = client.ws;
  const send = ws.send.bind(ws);
  ws.send = (text) => {
    sent.push(JSON.parse(text));
    send(text);
  };
  return sent;
}

test('typing notices and read markers are paced by the library', { timeout: 30000 }, async () => {
  const server = await startNatter(cleanup);
  const writer = makeClient(cleanup, { url: server.httpUrl, name: 'wren', rooms: ['lobby'] });
  const reader = makeClient(cleanup, { url: server.httpUrl, name: 'reed', rooms: ['lobby'] });
  await connected(writer);
  await connected(reader);

  // Ten keystrokes in a row: one notice, which the other member sees once.
  const sent = sentFrames(writer);
  const typed = [];
  reader.on('typing', (t) => typed.push(t.user.name));
  const results = [];
  for (let i = 0; i < 10; i += 1) results.push(writer.typing('lobby'));
  assert.deepEqual(results, [true, ...Array(9).fill(false)]);
  const marker = await post(writer, 'lobby', 'after the typing'); // in order after the notice
  await seen(reader, 'lobby', marker.seq, 'the message after the notice');
  assert.deepEqual(typed, ['wren']);
  assert.equal(sent.filter((f) => f.type === 'typing').length, 1);

  // Three messages, then three markers asked for at once: the first goes now, the
  // last (the newest) when the pause ends; the one in between is never sent alone.
  const seqs = [];
  for (const text of ['one', 'two', 'three']) seqs.push((await post(writer, 'lobby', text)).seq);
  await seen(reader, 'lobby', seqs[2], 'the three messages');
  const readSent = sentFrames(reader);
  const last = reader.next('read', (r) => r.seq === seqs[2]);
  assert.equal(reader.markRead('lobby', seqs[0]), true);
  assert.equal(reader.markRead('lobby', seqs[1]), true);
  assert.equal(reader.markRead('lobby'), true, 'no seq: the newest seen');
  assert.deepEqual(readSent.filter((f) => f.type === 'read').map((f) => f.seq), [seqs[0]], 'one at once');
  await within(last, 5000, 'the newest marker after the pause');
  assert.deepEqual(readSent.filter((f) => f.type === 'read').map((f) => f.seq), [seqs[0], seqs[2]]);
  assert.equal(reader.room('lobby').readSeq, seqs[2]);
  assert.equal(reader.markRead('lobby', seqs[1]), false, 'already read that far');
});

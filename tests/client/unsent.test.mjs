// Unsent messages: a post made while the server is down waits in the
// client's storage (a file here), survives the server's and the client's
// restart, and is stored exactly once when the server is back; a post whose
// ack was lost is re-sent with the same id and the server de-duplicates it.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { FileStorage } from '../../www/js/file-storage.js';
import {
  connected, freePort, makeClient, post, record, startNatter, startProxy, suiteCleanup, tempDir, within,
} from './support.mjs';

const cleanup = suiteCleanup();

const savedIds = (file) => JSON.parse(JSON.parse(readFileSync(file, 'utf8'))['natter.unsent']).map((e) => e.id);

test('a post made while the server is down is delivered once, across both restarts', { timeout: 60000 }, async () => {
  const server = await startNatter(cleanup);
  const file = path.join(await tempDir(cleanup, 'natter-unsent-'), 'unsent.json');
  const first = makeClient(cleanup, { url: server.httpUrl, name: 'poster', rooms: ['lobby'], storage: new FileStorage(file) });
  await connected(first);
  await post(first, 'lobby', 'before');

  const down = first.next('down');
  await server.kill();
  await within(down, 5000, 'the down event');
  const entry = first.send('lobby', 'typed while down');
  assert.deepEqual(first.unsent().map((e) => e.text), ['typed while down']);
  first.close(); // the poster's own process ends too
  assert.deepEqual(savedIds(file), [entry.id]);

  await server.start();
  const second = makeClient(cleanup, { url: server.httpUrl, name: 'poster', storage: new FileStorage(file) });
  assert.deepEqual(second.rooms, ['lobby'], 'the room of an unsent message is joined');
  const acked = second.next('ack', (a) => a.id === entry.id);
  second.connect();
  const ack = await within(acked, 20000, 'the ack of the message typed while down');
  assert.equal(ack.dup, false);
  assert.deepEqual(second.unsent(), []);
  assert.deepEqual(savedIds(file), []);

  const observer = makeClient(cleanup, { url: server.httpUrl, name: 'observer', rooms: ['lobby'] });
  const seen = record(observer, 'lobby');
  await connected(observer);
  assert.deepEqual(seen.map((m) => [m.seq, m.text]), [[1, 'before'], [2, 'typed while down']]);
});

test('a post whose ack was lost is re-sent with the same id and stored once', { timeout: 60000 }, async () => {
  const wsPort = await freePort();
  // The ring holds 2 messages, so the poster's copy has scrolled out of it (the
  // resume reads it back from the store): the re-send must still be stored once.
  const server = await startNatter(cleanup, { wsPort, extraArgs: ['--history', '2'] });
  const proxy = await startProxy(cleanup, wsPort);
  const poster = makeClient(cleanup, { url: `ws://127.0.0.1:${proxy.port}/ws`, name: 'lossy', rooms: ['dedup'] });
  const observer = makeClient(cleanup, { url: server.httpUrl, name: 'watcher', rooms: ['dedup'] });
  const seen = record(observer, 'dedup');
  await connected(poster);
  await connected(observer);

  // The server hears the poster, the poster hears nothing: stored, not acked.
  proxy.freeze('down');
  const arrived = observer.next('message', (m) => m.text === 'into the void');
  const entry = poster.send('dedup', 'into the void');
  const original = await within(arrived, 5000, 'the post at the observer');
  assert.equal(original.id, entry.id);
  for (const text of ['later 1', 'later 2', 'later 3']) await post(observer, 'dedup', text);

  const down = poster.next('down');
  await within(down, 10000, 'the heartbeat noticing the dead link');
  const acked = poster.next('ack', (a) => a.id === entry.id);
  const resumed = poster.next('history', (h) => h.room === 'dedup');
  proxy.thaw();
  const history = await within(resumed, 20000, 'the resumed history');
  assert.ok(history.messages.some((m) => m.id === entry.id), 'the resume brings the copy back from the store');
  const ack = await within(acked, 10000, 'the ack of the re-sent post');
  // Acked from the copy in the resumed history, or by the server's de-duplication
  // of the re-send: either way with the original seq, and stored once (below).
  assert.equal(ack.seq, original.seq);
  assert.deepEqual(poster.unsent(), []);

  const last = observer.next('message', (m) => m.text === 'after');
  await post(poster, 'dedup', 'after');
  await within(last, 5000, 'the next post at the observer');
  assert.deepEqual(seen.map((m) => m.text), ['into the void', 'later 1', 'later 2', 'later 3', 'after']);
});

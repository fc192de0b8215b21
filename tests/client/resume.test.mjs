// Resume: a reader's link is cut while a writer posts; on reconnecting the
// reader asks for what it missed with `since` and gets exactly that, then
// live messages: every seq once, in order. The server sends only 2 messages
// to a join without `since`, so a resume that forgot `since` loses some.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  connected, freePort, makeClient, post, record, startNatter, startProxy, suiteCleanup, within,
} from './support.mjs';

const cleanup = suiteCleanup();

test('resume with since: nothing missed, nothing twice', { timeout: 60000 }, async () => {
  const wsPort = await freePort();
  const server = await startNatter(cleanup, { wsPort, extraArgs: ['--join-history', '2'] });
  const proxy = await startProxy(cleanup, wsPort);
  // The reader is given the WebSocket URL directly (no /config.json).
  const reader = makeClient(cleanup, { url: `ws://127.0.0.1:${proxy.port}/ws`, name: 'reader', rooms: ['lobby'] });
  const writer = makeClient(cleanup, { url: server.httpUrl, name: 'writer', rooms: ['lobby'] });
  const seen = record(reader, 'lobby');
  await connected(reader);
  await connected(writer);

  const third = reader.next('message', (m) => m.seq === 3);
  for (const text of ['one', 'two', 'three']) await post(writer, 'lobby', text);
  await within(third, 5000, 'seq 3 at the reader');

  const down = reader.next('down');
  proxy.drop({ refuse: true });
  await within(down, 5000, "the reader's down event");
  for (const text of ['four', 'five', 'six']) await post(writer, 'lobby', text);

  const resumed = reader.next('history', (h) => h.room === 'lobby');
  proxy.accept();
  const history = await within(resumed, 20000, "the reader's resumed history");
  assert.equal(history.resumed, true);
  assert.equal(history.complete, true);
  assert.deepEqual(history.messages.map((m) => m.text), ['four', 'five', 'six']);

  const seventh = reader.next('message', (m) => m.seq === 7);
  await post(writer, 'lobby', 'seven');
  await within(seventh, 5000, 'seq 7 at the reader');
  assert.deepEqual(seen.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(seen.map((m) => m.text), ['one', 'two', 'three', 'four', 'five', 'six', 'seven']);
});

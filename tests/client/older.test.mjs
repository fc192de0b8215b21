// Scroll-back and search through the library: a client that joined late pages back
// with older() to the beginning of the room, every seq once, the room's cursor
// untouched; search() finds the matching messages newest first.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connected, makeClient, post, startNatter, suiteCleanup, within } from './support.mjs';

const cleanup = suiteCleanup();

test('older() pages back to the beginning and search() finds words', { timeout: 60000 }, async () => {
  const server = await startNatter(cleanup, { extraArgs: ['--join-history', '5', '--rate-per-s', '1000', '--rate-burst', '1000'] });
  const writer = makeClient(cleanup, { url: server.httpUrl, name: 'writer', rooms: ['lobby'] });
  await connected(writer);
  for (let i = 1; i <= 37; i++) await post(writer, 'lobby', i % 10 === 0 ? `needle ${i}` : `hay ${i}`);

  const reader = makeClient(cleanup, { url: server.httpUrl, name: 'reader', rooms: ['lobby'] });
  const joined = reader.next('history', (h) => h.room === 'lobby');
  await connected(reader);
  const first = await within(joined, 5000, 'the join history');
  assert.deepEqual(first.messages.map((m) => m.seq), [33, 34, 35, 36, 37]);

  const seqs = first.messages.map((m) => m.seq);
  let before = seqs[0];
  let pages = 0;
  for (;;) {
    const page = await within(reader.older('lobby', { before, limit: 10 }), 5000, `the page before ${before}`);
    assert.ok(page.messages.every((m) => m.seq < before), 'a page holds only older messages');
    seqs.unshift(...page.messages.map((m) => m.seq));
    pages += 1;
    if (page.complete) break;
    before = page.firstSeq;
  }
  assert.deepEqual(seqs, Array.from({ length: 37 }, (_, i) => i + 1), 'every seq once, in order');
  assert.equal(pages, 4);
  assert.equal(reader.room('lobby').lastSeq, 37, 'paging back never moves the cursor');

  const found = await within(reader.search('lobby', 'needle'), 5000, 'the search answer');
  assert.deepEqual(found.messages.map((m) => m.seq), [30, 20, 10], 'newest first');
  assert.equal(found.complete, true);
  assert.throws(() => reader.older('lobby', { before: 0 }), /before/);
});

// Unit-level checks of the page's pure pieces: the backoff (in node) and the
// room's de-duplication and merge rules (in the browser, on a real DOM).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Backoff } from '../../www/js/backoff.js';
import { setupSuite, assertNoConsoleErrors, openPage } from './helpers.mjs';

const env = setupSuite();

test('backoff: exponential windows with full jitter, capped, reset', () => {
  const top = new Backoff({ baseMs: 500, capMs: 30000, random: () => 1 });
  assert.deepEqual(Array.from({ length: 9 }, () => top.next()), [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  top.reset();
  assert.equal(top.next(), 500);
  const bottom = new Backoff({ random: () => 0 });
  assert.equal(bottom.next(), 0);
  const half = new Backoff({ random: () => 0.5 });
  assert.deepEqual([half.next(), half.next(), half.next()], [250, 500, 1000]);
});

test('room: dedupe by seq, merge pending by id, keep seq order', async () => {
  const { page, consoleErrors } = await openPage(env.browser, env.server.httpUrl);
  const result = await page.evaluate(async () => {
    const { Room } = await import('/js/room.js');
    const box = document.createElement('div');
    document.body.append(box);
    const me = { id: 'u-me', name: 'me' };
    const msg = (seq, extra = {}) => ({ room: 'r', seq, ts: 1000 + seq, user: 'other', uid: 'u-o', text: `m${seq}`, ...extra });
    const view = (room) => [...room.pane.querySelectorAll('li:not(.older-row)')].map((li) => (li.classList.contains('msg')
      ? `${li.dataset.seq ?? '-'}:${li.querySelector('.msg-text').textContent}:${li.dataset.state}` : `note:${li.textContent}`));
    const out = {};

    // Live after history, a repeat of a seq, and an out-of-order arrival.
    const a = new Room('a', box);
    out.firstAdds = [a.addMessage(msg(1), me), a.addMessage(msg(3), me), a.addMessage(msg(1), me), a.addMessage(msg(2), me)];
    out.a = view(a);

    // Ack first, then our own echo: one element, now with its seq.
    const b = new Room('b', box);
    b.addPending({ id: 'x1', room: 'b', text: 'mine', ts: 5 }, me);
    b.addPending({ id: 'x2', room: 'b', text: 'mine too', ts: 6 }, me);
    out.bPending = view(b);
    b.settle('x1', 1);
    out.bEcho = b.addMessage(msg(1, { id: 'x1', uid: 'u-me', user: 'me', text: 'mine' }), me);
    out.b = view(b);

    // Echo first (matched by id), then the ack: still one element.
    const c = new Room('c', box);
    c.addMessage(msg(1), me);
    c.addPending({ id: 'y', room: 'c', text: 'mine', ts: 5 }, me);
    out.cEcho = c.addMessage(msg(2, { id: 'y', uid: 'u-me', user: 'me', text: 'mine' }), me);
    c.settle('y', 2);
    out.c = view(c);

    // History already showed our message; the re-send's ack says dup:true.
    const d = new Room('d', box);
    d.addPending({ id: 'z', room: 'd', text: 'mine', ts: 5 }, me);
    d.addMessage(msg(7, { text: 'before' }), me);
    d.addMessage(msg(8, { id: 'other-id', text: 'unrelated' }), me);
    // The history copy arrives under a different element first when the pending one is missed…
    const copy = msg(9, { id: 'z-not', uid: 'u-me', user: 'me', text: 'mine' });
    d.addMessage(copy, me);
    // …and a dup ack for seq 9 must remove the pending duplicate rather than add a second seq 9.
    d.settle('z', 9);
    out.d = view(d);
    out.dLast = Math.max(...d.seqs);

    // A gap note goes before pending messages; a failure shows next to the message.
    const e = new Room('e', box);
    e.addPending({ id: 'p', room: 'e', text: 'queued', ts: 5 }, me);
    e.addNote('Some older messages are no longer available.', 'gap-note');
    e.fail('p', 'Not sent: too long.', () => {});
    out.e = view(e);
    out.eError = e.pane.querySelector('.msg-error').textContent;

    // Scroll-back pages go above what is shown, each seq once; a reset keeps only pending ones.
    const f = new Room('f', box);
    f.addMessage(msg(5), me);
    f.addNote('alice joined');
    f.addMessage(msg(6), me);
    f.addPending({ id: 'q', room: 'f', text: 'queued', ts: 9 }, me);
    out.fAdded = [f.prependOlder([msg(3), msg(4), msg(5)], me), f.prependOlder([msg(1), msg(2)], me)];
    out.f = view(f);
    out.fFirst = f.firstSeq;
    f.clearHistory();
    out.fCleared = [view(f), f.firstSeq, f.seqs.size, f.older];
    return out;
  });
  assert.deepEqual(result.firstAdds, [true, true, false, true]);
  assert.deepEqual(result.a, ['1:m1:sent', '2:m2:sent', '3:m3:sent']);
  assert.deepEqual(result.bPending, ['-:mine:pending', '-:mine too:pending']);
  assert.equal(result.bEcho, false);
  assert.deepEqual(result.b, ['1:mine:sent', '-:mine too:pending']);
  assert.equal(result.cEcho, false);
  assert.deepEqual(result.c, ['1:m1:sent', '2:mine:sent']);
  assert.deepEqual(result.d, ['7:before:sent', '8:unrelated:sent', '9:mine:sent']);
  assert.equal(result.dLast, 9);
  assert.deepEqual(result.e, ['note:Some older messages are no longer available.', '-:queued:failed']);
  assert.match(result.eError, /^Not sent: too long\.Retry$/);
  assert.deepEqual(result.fAdded, [2, 2]);
  assert.deepEqual(result.f, ['1:m1:sent', '2:m2:sent', '3:m3:sent', '4:m4:sent', '5:m5:sent', 'note:alice joined', '6:m6:sent', '-:queued:pending']);
  assert.equal(result.fFirst, 1);
  assert.deepEqual(result.fCleared, [['-:queued:pending'], Infinity, 0, 'more']);
  assertNoConsoleErrors(assert, consoleErrors);
});

// Files in the page, as a user shares them: alice pastes a screenshot into the
// composer, it uploads (progress bar) and bob's page shows it inline, its space
// reserved from the frame's width and height; a URL that is bent (another room) or
// unsigned gets 403. Screenshots at desktop and phone widths.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  setupSuite, assertNoConsoleErrors, openChat, screenshot,
} from './helpers.mjs';

const env = setupSuite();

// A 48×32 PNG, one colour (made with zlib; any real PNG does).
function png() {
  return Buffer.from('89504e470d0a1a0a0000000d4948445200000030000000200802000000dbb66c4b0000003749444154789cedce410d0030080430e42011899335171c8f2615d0ea79a7547c20242424941e08090909a50742424242e9819090d0b20fcd197079e99527050000000049454e44ae426082', 'hex');
}

async function paste(page, bytes, name) {
  await page.evaluate(([b64, fileName]) => {
    const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([data], fileName, { type: 'image/png' }));
    const event = new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true, cancelable: true });
    document.getElementById('composer-input').dispatchEvent(event);
  }, [bytes.toString('base64'), name]);
}

test('a pasted image shows on the other page, inline and sized; bent URLs get 403', { timeout: 60000 }, async () => {
  const alice = await openChat(env.browser, env.server, 'alice');
  const bob = await openChat(env.browser, env.server, 'bob', { width: 375, height: 740 });
  await paste(alice.page, png(), 'shot.png');

  const img = bob.page.locator('.messages[data-room="lobby"] li.msg[data-seq] img.msg-image');
  await img.waitFor({ state: 'visible' });
  assert.equal(await img.getAttribute('alt'), 'shot.png');
  assert.deepEqual([await img.getAttribute('width'), await img.getAttribute('height')], ['48', '32'], 'space reserved');
  await bob.page.waitForFunction(() => {
    const el = document.querySelector('.messages[data-room="lobby"] img.msg-image');
    return el && el.complete && el.naturalWidth === 48;
  });
  await alice.page.waitForFunction(() => document.querySelector('.messages[data-room="lobby"] img.msg-image')?.naturalWidth === 48);

  const src = await img.getAttribute('src');
  assert.match(src, /\/files\/f[0-9a-f]+\?room=lobby&exp=\d+&sig=[0-9a-f]+$/);
  const ok = await fetch(src);
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get('x-content-type-options'), 'nosniff');
  assert.equal((await fetch(src.replace('room=lobby', 'room=p.secret'))).status, 403);
  assert.equal((await fetch(src.split('?')[0])).status, 403);

  await screenshot(alice.page, 'files-desktop-1280');
  await screenshot(bob.page, 'files-phone-375');
  for (const { consoleErrors } of [alice, bob]) assertNoConsoleErrors(assert, consoleErrors);
});

// Files in the page, as a user shares them: alice pastes a screenshot into the
// composer, it uploads (progress bar) and bob's page shows it inline, its space
// reserved from the frame's width and height; a URL that is bent (another room) or
// unsigned gets 403. Screenshots at desktop and phone widths. An image posted in a
// private room is out of an outsider's reach: no URL for that room, and a URL for a
// room the outsider is in gets 404.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  setupSuite, assertNoConsoleErrors, openChat, screenshot,
} from './helpers.mjs';
import { gradientPng, pasteImage } from './pictures.mjs';

const env = setupSuite();

test('a pasted image shows on the other page, inline and sized; bent URLs get 403', { timeout: 60000 }, async () => {
  const alice = await openChat(env.browser, env.server, 'alice');
  const bob = await openChat(env.browser, env.server, 'bob', { width: 375, height: 740 });
  await pasteImage(alice.page, gradientPng(48, 32), 'shot.png');

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

test("a private room's image: an outsider gets no URL for it, and 403 or 404 for every URL tried", { timeout: 60000 }, async () => {
  const alice = await openChat(env.browser, env.server, 'alice2');
  const outsider = await openChat(env.browser, env.server, 'mallory');
  await alice.page.fill('#private-title', 'Photos');
  await alice.page.click('#private-form button[type="submit"]');
  await alice.page.waitForFunction(() => document.getElementById('room-title').textContent === '🔒 Photos');
  const room = await alice.page.evaluate(
    () => document.querySelector('#room-list .room-button[aria-current="true"]').dataset.room,
  );
  await pasteImage(alice.page, gradientPng(64, 40), 'private.png');
  const img = alice.page.locator(`.messages[data-room="${room}"] li.msg[data-seq] img.msg-image`);
  await alice.page.waitForFunction((r) => document.querySelector(`.messages[data-room="${r}"] img.msg-image`)?.naturalWidth === 64, room);
  const id = await img.getAttribute('data-file-id');
  const src = await img.getAttribute('src');
  assert.equal((await fetch(src)).status, 200, "the member's URL works");

  // The outsider asks for a URL in the private room: refused, nothing signed.
  const refused = await outsider.page.evaluate(async ([r, fileId]) => {
    const { client } = window.natter;
    const answer = Promise.race([client.next('error'), client.next('file-urls').then(() => ({ code: 'signed' }))]);
    client.sendFrame({ type: 'file_urls', room: r, files: [fileId] });
    return (await answer).code;
  }, [room, id]);
  assert.equal(refused, 'not_joined');
  // A URL signed for a room the outsider is in: the file was never posted there.
  const lobbyUrl = await outsider.page.evaluate(async (fileId) => (await window.natter.client.fileUrls('lobby', [fileId])).urls[fileId], id);
  assert.equal((await fetch(lobbyUrl)).status, 404);
  // The member's URL bent to another room, or to another signature: 403.
  assert.equal((await fetch(src.replace(`room=${room}`, 'room=lobby'))).status, 403);
  const bentSig = src.replace(/sig=([0-9a-f]+)/, (_, h) => `sig=${h.slice(0, -1)}${h.endsWith('0') ? '1' : '0'}`);
  assert.equal((await fetch(bentSig)).status, 403);
  assert.equal((await fetch(src.split('?')[0])).status, 403);
  assertNoConsoleErrors(assert, alice.consoleErrors);
});

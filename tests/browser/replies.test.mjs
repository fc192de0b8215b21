// Replies in the page, as a user makes them: alice answers an old message with its
// Reply button; bob, whose page holds only the newest messages (--join-history 10),
// sees the quote and clicks it: the page loads older history until the original is
// there and scrolls to it. Then screenshots at desktop and phone widths with a
// reply, reactions, a code block and an image (artifacts/screenshots/features-*.png).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  setupSuite, assertNoConsoleErrors, openChat, screenshot, send, waitForMessage,
} from './helpers.mjs';
import { gradientPng, pasteImage } from './pictures.mjs';

const env = setupSuite(async () => ({ extraArgs: ['--join-history', '10'] }));

const lobby = '.messages[data-room="lobby"]';
// By the message's own text (a reply's quote holds its original's too).
const byText = (page, text) => page.locator(`${lobby} li.msg[data-seq]`)
  .filter({ has: page.locator('.msg-text', { hasText: text }) });

test('a reply quotes its original, and the quote scrolls to it, loading older history', { timeout: 90000 }, async () => {
  const alice = await openChat(env.browser, env.server, 'alice');
  await send(alice.page, 'Which port does the staging proxy use?');
  await waitForMessage(alice.page, 'lobby', 'Which port does the staging proxy use?');
  // Enough after it that a fresh page's join history does not reach it.
  await alice.page.evaluate(() => {
    for (let i = 1; i <= 30; i += 1) window.natter.client.send('lobby', `filler ${i}\nline two\nline three`);
  });
  await alice.page.waitForFunction((sel) => [...document.querySelectorAll(`${sel} li.msg[data-seq]`)]
    .some((li) => li.rawText?.startsWith('filler 30')), lobby);

  const original = byText(alice.page, 'Which port does the staging proxy use?');
  await original.hover();
  await original.locator('[data-action="reply"]').click();
  assert.match(await alice.page.locator('#reply-text').textContent(), /Replying to alice: Which port/);
  await send(alice.page, '8443, behind the VPN');
  await waitForMessage(alice.page, 'lobby', '8443, behind the VPN');
  assert.equal(await alice.page.locator('#reply-bar').isHidden(), true, 'the reply bar goes once sent');

  const bob = await openChat(env.browser, env.server, 'bob', { width: 1280, height: 500 });
  await waitForMessage(bob.page, 'lobby', '8443, behind the VPN');
  const reply = byText(bob.page, '8443, behind the VPN');
  assert.equal(await reply.locator('.msg-reply-author').textContent(), 'alice');
  assert.equal(await reply.locator('.msg-reply-text').textContent(), 'Which port does the staging proxy use?');
  assert.equal(await byText(bob.page, 'Which port does the staging proxy use?').count(), 0, 'the original is not loaded yet');

  await reply.locator('.msg-reply').click();
  const shown = byText(bob.page, 'Which port does the staging proxy use?');
  await shown.waitFor();
  await bob.page.waitForFunction((sel) => {
    const li = [...document.querySelectorAll(`${sel} li.msg[data-seq]`)]
      .find((el) => el.rawText === 'Which port does the staging proxy use?');
    const pane = li?.closest('.messages');
    if (!li || !pane) return false;
    const a = li.getBoundingClientRect();
    const p = pane.getBoundingClientRect();
    return a.top >= p.top && a.bottom <= p.bottom;
  }, lobby);
  assert.equal(await shown.evaluate((li) => li.classList.contains('revealed')), true, 'marked for the eye');

  // Screenshots: a reply, reactions, a code block and an image, at desktop and phone widths.
  await send(bob.page, 'Config for it:\n```\nupstream staging {\n    server 10.0.0.7:8443;\n}\n```');
  await byText(alice.page, 'Config for it').locator('pre code').waitFor();
  await byText(alice.page, 'Config for it').locator('.reaction-add').click();
  await byText(alice.page, 'Config for it').locator('.reaction-picker button[data-emoji="🎉"]').click();
  await byText(bob.page, 'Config for it').locator('.reaction-chip[data-emoji="🎉"]').waitFor();
  await byText(bob.page, 'Config for it').locator('.reaction-chip[data-emoji="🎉"]').click();
  await byText(alice.page, 'Config for it').locator('.reaction-chip[data-emoji="🎉"] .reaction-count').filter({ hasText: '2' }).waitFor();
  await pasteImage(bob.page, gradientPng(320, 180), 'staging-diagram.png');
  await alice.page.locator(`${lobby} img.msg-image[alt="staging-diagram.png"]`).waitFor();
  // The sender's own page shows the quote too (the server made it).
  await byText(alice.page, '8443, behind the VPN').locator('.msg-reply').waitFor();
  const readers = [];
  for (const [width, height] of [[1280, 800], [375, 740]]) {
    const reader = await openChat(env.browser, env.server, `reader-${width}`, { width, height });
    readers.push(reader);
    await byText(reader.page, 'Config for it').locator('.reaction-chip[data-emoji="🎉"]').waitFor();
    await byText(reader.page, '8443, behind the VPN').locator('.msg-reply').waitFor();
    await reader.page.waitForFunction((sel) => document.querySelector(`${sel} img.msg-image`)?.naturalWidth === 320, lobby);
    await reader.page.evaluate((sel) => { const p = document.querySelector(sel); p.scrollTop = p.scrollHeight; }, lobby);
    await screenshot(reader.page, `features-${width}`);
    const overflow = await reader.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no horizontal overflow at ${width}px (${overflow}px)`);
  }
  for (const { consoleErrors } of [alice, bob, ...readers]) assertNoConsoleErrors(assert, consoleErrors);
});

test('when the original is deleted, its replies quote it as deleted, live and after a reload', { timeout: 60000 }, async () => {
  const carol = await openChat(env.browser, env.server, 'carol');
  const dan = await openChat(env.browser, env.server, 'dan');
  await carol.page.evaluate(() => window.natter.client.send('lobby', 'kumquatmarble secret'));
  await waitForMessage(dan.page, 'lobby', 'kumquatmarble secret');
  const seq = await dan.page.evaluate((sel) => Number([...document.querySelectorAll(`${sel} li.msg[data-seq]`)]
    .find((li) => li.rawText === 'kumquatmarble secret').dataset.seq), lobby);
  await dan.page.evaluate((s) => window.natter.client.send('lobby', 'answer to it', { replyTo: s }), seq);
  const quoteOf = (page) => byText(page, 'answer to it').locator('.msg-reply-text');
  await quoteOf(carol.page).filter({ hasText: 'kumquatmarble secret' }).waitFor();

  await carol.page.evaluate((s) => window.natter.client.delete('lobby', s), seq);
  await quoteOf(dan.page).filter({ hasText: 'Deleted message' }).waitFor(); // live, from the delete event
  await dan.page.reload();
  await waitForMessage(dan.page, 'lobby', 'answer to it');
  assert.equal(await quoteOf(dan.page).textContent(), 'Deleted message', 'the page shows the quote as deleted');
  // The page would also derive that from the original's deletion in the same page of
  // history; what the server stored and sends is the reply's own quote.
  const replySeq = await dan.page.evaluate((sel) => Number([...document.querySelectorAll(`${sel} li.msg[data-seq]`)]
    .find((li) => li.rawText === 'answer to it').dataset.seq), lobby);
  const stored = await dan.page.evaluate(async (s) => (await window.natter.client.older('lobby', { before: s + 1, limit: 5 }))
    .messages.find((m) => m.seq === s), replySeq);
  assert.deepEqual(stored.reply, { seq, deleted: true }, 'the stored reply quotes it as deleted, without its text');
  for (const { consoleErrors } of [carol, dan]) assertNoConsoleErrors(assert, consoleErrors);
});

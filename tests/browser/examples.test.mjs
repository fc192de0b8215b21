// The chat widget of docs/CLIENT.md, run as written there: served by natter
// as a module file next to a page holding <div id="chat">, it shows the
// room's history, live messages, and posts what is typed into it.

import assert from 'node:assert/strict';
import { cp, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { docExample } from '../client/doc-examples.mjs';
import {
  REPO_ROOT, setupSuite, assertNoConsoleErrors, openChat, send, tempDir, waitForMessage,
} from './helpers.mjs';

// natter serves a copy of www/ with the widget and a page for it added.
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>widget</title>
<link rel="icon" href="data:,">
<div id="chat"></div><script type="module" src="/chat-widget.js"></script>
`;

const env = setupSuite(async ({ cleanup }) => {
  const www = await tempDir(cleanup, 'natter-www-');
  await cp(path.join(REPO_ROOT, 'www'), www, { recursive: true });
  await writeFile(path.join(www, 'chat-widget.js'), docExample('widget'));
  await writeFile(path.join(www, 'widget-example.html'), PAGE);
  return { www };
});

const logTexts = (page) => page.evaluate(() => [...document.querySelectorAll('#chat li')].map((li) => li.textContent));

test('the chat widget of docs/CLIENT.md shows history and live messages and posts', async () => {
  const alice = await openChat(env.browser, env.server, 'alice');
  await send(alice.page, 'before the widget');
  await waitForMessage(alice.page, 'lobby', 'before the widget');

  const context = await env.browser.newContext();
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => consoleErrors.push(`pageerror: ${error.message}`));
  await page.goto(`${env.server.httpUrl}/widget-example.html`);

  await page.waitForFunction(() => document.getElementById('chat').dataset.state === 'online');
  await page.waitForFunction(() => [...document.querySelectorAll('#chat li')].some((li) => li.textContent === 'alice: before the widget'));

  await send(alice.page, 'live to the widget');
  await page.waitForFunction(() => [...document.querySelectorAll('#chat li')].some((li) => li.textContent === 'alice: live to the widget'));

  await page.fill('#chat input', 'hello from the widget');
  await page.click('#chat button');
  await waitForMessage(alice.page, 'lobby', 'hello from the widget');
  await page.waitForFunction(() => [...document.querySelectorAll('#chat li')].some((li) => li.textContent === 'widget-guest: hello from the widget'));
  assert.equal(await page.inputValue('#chat input'), '');
  assert.deepEqual(await logTexts(page), [
    'alice: before the widget', 'alice: live to the widget', 'widget-guest: hello from the widget',
  ]);
  assert.deepEqual(await page.evaluate(() => JSON.parse(localStorage.getItem('natter.unsent'))), [], 'nothing left unsent');

  assertNoConsoleErrors(assert, consoleErrors);
  assertNoConsoleErrors(assert, alice.consoleErrors);
  await context.close();
});

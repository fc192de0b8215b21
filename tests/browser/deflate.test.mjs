// Chromium offers permessage-deflate by itself: the page's socket negotiates it
// (server_no_context_takeover, a small client window) and chat works through it,
// compressed both ways.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  setupSuite, assertNoConsoleErrors, openChat, openPage, send, waitForJoined, waitForMessage, waitForState,
} from './helpers.mjs';

const env = setupSuite();

/** Records the page's WebSocket handshakes as the browser saw them (DevTools protocol). */
async function watchHandshakes(page) {
  const answers = [];
  const frames = [];
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  cdp.on('Network.webSocketWillSendHandshakeRequest', (e) => answers.push({ request: e.request.headers }));
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => answers.push({ response: e.response.headers }));
  cdp.on('Network.webSocketFrameReceived', (e) => frames.push(e.response.payloadData));
  return { answers, frames };
}

const header = (headers, name) => Object.entries(headers).find(([k]) => k.toLowerCase() === name)?.[1];

test('the page negotiates permessage-deflate and chats through it', async () => {
  // Watched from before the page signs in, so its socket's handshake is seen.
  const alice = await openPage(env.browser, env.server.httpUrl);
  const watched = await watchHandshakes(alice.page);
  await alice.page.locator('#login-name').waitFor({ state: 'visible' });
  await alice.page.fill('#login-name', 'alice');
  await alice.page.click('#login-form button[type="submit"]');
  await waitForState(alice.page, 'online');
  await waitForJoined(alice.page, 'lobby');
  const bob = await openChat(env.browser, env.server, 'bob');

  const request = watched.answers.find((a) => a.request)?.request;
  const response = watched.answers.find((a) => a.response)?.response;
  assert.ok(request && response, 'the handshake was seen');
  assert.match(header(request, 'sec-websocket-extensions') ?? '', /permessage-deflate/, 'Chromium offers it');
  assert.equal(
    header(response, 'sec-websocket-extensions'),
    'permessage-deflate; server_no_context_takeover; client_max_window_bits=11',
  );

  const long = 'a longer line, so that it is worth compressing: '.repeat(4);
  await send(bob.page, long);
  await waitForMessage(alice.page, 'lobby', long);
  await send(alice.page, `${long} (alice)`);
  await waitForMessage(bob.page, 'lobby', `${long} (alice)`);
  assert.ok(watched.frames.some((f) => f.includes(long)), 'the page read the compressed frame as its text');

  assertNoConsoleErrors(assert, alice.consoleErrors);
  assertNoConsoleErrors(assert, bob.consoleErrors);
});

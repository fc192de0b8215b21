// Helpers for the client-library tests: the real natter binary (through
// tests/browser/natter-process.mjs), clients that are closed after each test,
// and a timeout that names what was being awaited instead of hanging.
// Must never: sleep to wait for something (await the event instead).

import { after } from 'node:test';
import { NatterClient } from '../../www/js/natter-client.js';
import { Cleanup, startServer } from '../browser/natter-process.mjs';

export { Cleanup, NATTER_BIN, REPO_ROOT, freePort, startProxy, startServer, tempDir } from '../browser/natter-process.mjs';
export { NatterClient };

// Retries come quickly in tests; the jitter is still there.
export const FAST_BACKOFF = { baseMs: 50, capMs: 400 };

/** A Cleanup run after the file's tests (newest first). */
export function suiteCleanup() {
  const cleanup = new Cleanup();
  after(() => cleanup.run());
  return cleanup;
}

/** Starts natter with a short heartbeat, so dead links are found within seconds. */
export function startNatter(cleanup, options = {}) {
  return startServer(cleanup, { heartbeatIntervalMs: 1000, heartbeatTimeoutMs: 3000, ...options });
}

/** A NatterClient closed by `cleanup`, with fast retries unless told otherwise. */
export function makeClient(cleanup, options) {
  const client = new NatterClient({ backoff: FAST_BACKOFF, ...options });
  cleanup.add(() => client.close());
  return client;
}

/** Connects and resolves once every one of the client's rooms has its history. */
export async function connected(client) {
  const histories = client.rooms.map((room) => client.next('history', (h) => h.room === room));
  client.connect();
  await within(Promise.all(histories), 15000, `${client.rooms.join(', ')} joined`);
}

/** Every message the client shows for `room`, history and live, in arrival order. */
export function record(client, room) {
  const seen = [];
  client.on('history', (h) => {
    if (h.room === room) seen.push(...h.messages);
  });
  client.on('message', (m) => {
    if (m.room === room) seen.push(m);
  });
  return seen;
}

/** `promise`, or a failure naming `what` after `ms`. */
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Posts `text` and resolves with its ack. */
export async function post(client, room, text) {
  const acked = new Promise((resolve) => {
    let id = null;
    const off = client.on('ack', (ack) => {
      if (ack.id !== id) return;
      off();
      resolve(ack);
    });
    id = client.send(room, text).id;
  });
  return within(acked, 10000, `the ack of "${text}"`);
}

// Unsent messages: what the user (or bot) has posted and the server has not
// acknowledged yet. Kept in a Web Storage-like store so a reload, a crash or
// a restart loses nothing; each entry keeps its client id forever, so a
// re-send after a reconnect is recognised by the server as the same message
// (ack with dup:true) and posted once.
//
// Named "unsent" so it is not confused with the server's src/outbox.rs (the
// per-socket write queue). Owns: the list and its persistence. Must never:
// talk to the network or decide when to send (natter-client.js does).

import { isStorage, loadJson, saveJson } from './storage.js';

export const DEFAULT_UNSENT_KEY = 'natter.unsent';

export class Unsent {
  constructor(store, key = DEFAULT_UNSENT_KEY) {
    if (!isStorage(store)) throw new TypeError('Unsent: store must have getItem, setItem and removeItem (e.g. localStorage)');
    if (typeof key !== 'string' || key === '') throw new TypeError('Unsent: key must be a non-empty string');
    this.store = store;
    this.key = key;
    const saved = loadJson(store, key, []);
    this.entries = Array.isArray(saved) ? saved.filter(isEntry) : [];
  }

  /** `extra`: what the `msg` carries besides its text (`reply_to`). */
  add(room, text, extra = {}) {
    const entry = { id: newMessageId(), room, text, ts: Date.now(), ...extra };
    this.entries.push(entry);
    this.save();
    return entry;
  }

  get(id) {
    return this.entries.find((entry) => entry.id === id);
  }

  /** Removes and returns the entry with this id, if any. */
  take(id) {
    const index = this.entries.findIndex((entry) => entry.id === id);
    if (index < 0) return undefined;
    const [entry] = this.entries.splice(index, 1);
    this.save();
    return entry;
  }

  /** This room's entries, oldest first: the order they must be sent in. */
  forRoom(room) {
    return this.entries.filter((entry) => entry.room === room);
  }

  /** Forgets this room's entries and returns them. */
  dropRoom(room) {
    const dropped = this.forRoom(room);
    this.entries = this.entries.filter((entry) => entry.room !== room);
    this.save();
    return dropped;
  }

  save() {
    saveJson(this.store, this.key, this.entries);
  }
}

/** 32 random hex digits; crypto.randomUUID needs a secure context, this does not. */
export function newMessageId() {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function isEntry(value) {
  return value !== null && typeof value === 'object' && typeof value.id === 'string'
    && typeof value.room === 'string' && typeof value.text === 'string';
}

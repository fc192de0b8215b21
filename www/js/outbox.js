// Messages the user has typed and the server has not acknowledged yet.
// Persisted in localStorage so a reload or a crash of the tab loses nothing;
// each entry keeps its client id forever, so a re-send after a reconnect is
// recognised by the server as the same message (ack with dup:true).

import { loadJson, saveJson } from './storage.js';

const KEY = 'natter.outbox';

export class Outbox {
  constructor(store = window.localStorage) {
    this.store = store;
    const saved = loadJson(store, KEY, []);
    this.entries = Array.isArray(saved) ? saved.filter(isEntry) : [];
  }

  add(room, text) {
    const entry = { id: newMessageId(), room, text, ts: Date.now() };
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

  dropRoom(room) {
    this.entries = this.entries.filter((entry) => entry.room !== room);
    this.save();
  }

  save() {
    saveJson(this.store, KEY, this.entries);
  }
}

/** 32 random hex digits; crypto.randomUUID needs a secure context, this does not. */
export function newMessageId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function isEntry(value) {
  return value !== null && typeof value === 'object' && typeof value.id === 'string'
    && typeof value.room === 'string' && typeof value.text === 'string';
}

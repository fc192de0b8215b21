// natter-client: everything a page or a bot does over natter's wire protocol
// (docs/PROTOCOL.md), with no DOM, so it runs unchanged in browsers and in
// Node 20+. API reference: docs/CLIENT.md.
//
// Owns: one logical connection that survives sockets dying (config fetch,
// reconnect with exponential backoff and full jitter, an app-level heartbeat
// for half-open sockets), the rooms joined and the last seq seen in each
// (resume with `since`, nothing shown twice), presence lists, and the unsent
// messages, re-sent with their first id after every reconnect until acked;
// the fallback to SSE+POST (sse-socket.js) when WebSockets cannot get through,
// and the way back once they can.
// Must never: touch the DOM, window or document (the page wires those in),
// invent frames the protocol does not have, or give an unsent message a new id.

import { Backoff } from './backoff.js';
import { Emitter } from './emitter.js';
import { MemoryStorage, isStorage, loadString, saveString } from './storage.js';
import { SseSocket } from './sse-socket.js';
import { DEFAULT_UNSENT_KEY, Unsent, newMessageId } from './unsent.js';

export const EVENTS = [
  'state', // {state, reason, retryAt, transport}: idle · connecting · online · reconnecting · offline · closed
  'welcome', // the welcome frame, once per socket
  'joined', // {room, head, users, users_total, read_seq, mentions_unread}: read_seq and mentions_unread are null where markers are not kept
  'read', // {room, seq, mentions_unread}: your read marker moved (on this device or another); mentions_unread is what is left above it
  'dm', // {room, user}: a direct-message room with `user` (opened by either of you; also at every connect)
  'invited', // {room, by, title}: you may now join the private room `room` (title: null when it has none)
  'blocked', // {users}: every user id you blocked (at connect when any, after each block/unblock, on every device)
  'dm-closed', // {room}: you closed this DM (here or on another device); the client has left it
  'moderation', // a moderator's system event (kick, read_only), live or from history; a kick of you also leaves the room
  'history', // {room, messages, complete, resumed, reset}: messages not seen before, oldest first;
  //            reset: the server's history of the room is another one (data wiped): drop what you show
  'older', // {room, before, messages, complete}: a page asked for with older(), oldest first
  'search', // {room, q, before, messages, complete}: matches asked for with search(), newest first
  'message', // a live msg frame not seen before
  'edit', // an edit event not seen before (live or from history): message `of` now has `text`
  'delete', // a delete event not seen before: message `of` is deleted
  'react', // a react event not seen before: `uid`'s reaction `emoji` to message `of` is now `on` (true/false)
  'file-urls', // {room, urls, exp}: signed URLs (absolute) by file id, the answer to fileUrls()
  'ack', // {id, room, seq, dup}: an unsent message is now stored; once per message
  'failed', // {id, room, text, ts, code, message}: the server refused an unsent message for good
  'presence', // {room, users, change}: who is here; change is null or {event, user, before, mine}
  'typing', // {room, user}: someone else is typing
  'error', // {code, message, ref}: a server error not about an unsent message, or a client one
  'down', // {code, reason}: the socket that had said welcome is gone
  'credentials-needed', // {auth, reason}: give a name/token, then call connect() again
  'frame', // every frame from the server, before it is handled
];

export const ROOM_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const MAX_NAME = 32;
const DEFAULT_MAX_TEXT = 4000;
// A message's files: at most this many ids, each of letters and digits (docs/PROTOCOL.md).
const MAX_FILES = 10;
const FILE_ID = /^[A-Za-z0-9]{1,64}$/;
const STABLE_AFTER_MS = 10000;
const OPEN_TIMEOUT_MS = 10000;
// WebSockets that fail to open (or close within CLOSE_SOON_MS of welcome) this
// many times in a row: switch to SSE+POST; from there try a WebSocket again
// every retryWebSocketMs and move back when one opens.
const FALLBACK = { afterFailures: 3, retryWebSocketMs: 15000 };
const CLOSE_SOON_MS = 1000;
// `unavailable` (the store is failing) and `rate_limited` mean "retry with the same
// id": wait this long, growing while the refusals go on (the rate limit refills
// rate_per_s tokens a second, so a second is the natural first step).
const RETRY = { firstMs: 1000, maxMs: 16000 };
const TRANSIENT = new Set(['unavailable', 'rate_limited']);
// What the server may answer a `join {private:true, title}` with.
const CREATE_REFUSALS = new Set(['bad_field', 'create_limited', 'room_limit', 'unavailable', 'rate_limited']);
// Pacing, so that every client of the library is a polite one: a `typing` notice
// shows for about 5 s on the others' screens, so one every 3 s while the user types
// is enough; read markers go out at most every half second per room (the newest seq
// asked for meanwhile).
const TYPING_EVERY_MS = 3000;
const READ_EVERY_MS = 500;

export class NatterClient {
  /**
   * @param {object} options see docs/CLIENT.md
   * @param {string} [options.url] http(s) URL of the server (its /config.json is read) or ws(s) URL of /ws
   * @param {string} [options.name] display name (open mode)
   * @param {string} [options.token] JWT (token mode)
   * @param {(auth: 'open'|'token') => ({name: string}|{token: string}|null)} [options.credentials]
   * @param {string[]} [options.rooms] rooms to join (default: none)
   * @param {Storage} [options.storage] where unsent messages are kept (default: memory)
   */
  constructor(options = {}) {
    if (options === null || typeof options !== 'object') throw new TypeError('NatterClient: options must be an object');
    const known = ['url', 'name', 'token', 'credentials', 'rooms', 'storage', 'unsentKey', 'identityKey', 'WebSocket', 'fetch',
      'backoff', 'openTimeoutMs', 'stableAfterMs', 'online', 'fallback'];
    const unknown = Object.keys(options).filter((key) => !known.includes(key));
    if (unknown.length > 0) throw new TypeError(`NatterClient: unknown option(s) ${unknown.join(', ')}; known: ${known.join(', ')}`);

    this.url = parseServerUrl(options.url ?? globalThis.location?.href);
    this.credentials = pickCredentials(options);
    if (options.storage !== undefined && !isStorage(options.storage)) {
      throw new TypeError('NatterClient: storage must have getItem, setItem and removeItem (localStorage, MemoryStorage, FileStorage)');
    }
    const storage = options.storage ?? new MemoryStorage();
    this.unsentStore = new Unsent(storage, options.unsentKey ?? DEFAULT_UNSENT_KEY);
    // Open mode: who we are is this secret, not the name (the server derives the id
    // from it). Kept with the unsent messages, so a reload is the same user.
    this.identityKey = options.identityKey ?? identityKey(storage);
    for (const name of ['WebSocket', 'fetch', 'online']) {
      if (options[name] !== undefined && typeof options[name] !== 'function') {
        throw new TypeError(`NatterClient: ${name} must be a function`);
      }
    }
    this.WebSocketClass = options.WebSocket ?? null;
    this.fetchFn = options.fetch ?? null;
    this.isOnline = options.online ?? (() => globalThis.navigator?.onLine !== false);
    this.backoff = new Backoff(options.backoff ?? {});
    this.openTimeoutMs = positive(options.openTimeoutMs ?? OPEN_TIMEOUT_MS, 'openTimeoutMs');
    this.stableAfterMs = positive(options.stableAfterMs ?? STABLE_AFTER_MS, 'stableAfterMs');
    this.fallback = pickFallback(options.fallback);

    this.events = new Emitter(EVENTS);
    this.roomStates = new Map();
    const rooms = options.rooms ?? [];
    if (!Array.isArray(rooms)) throw new TypeError('NatterClient: rooms must be an array of room names');
    for (const room of rooms) this.addRoom(checkRoom(room));
    // A message typed for a room must reach it even if the caller forgot the room.
    for (const entry of this.unsentStore.entries) if (ROOM_NAME.test(entry.room)) this.addRoom(entry.room);

    this.state = 'idle';
    this.auth = null;
    this.me = null;
    this.limits = { max_text: DEFAULT_MAX_TEXT };
    this.ws = null;
    this.running = false;
    this.attempts = 0;
    this.timers = {};
    this.changeIds = new Set(); // ids of edit()/delete() calls awaiting their answer
    this.retryAt = null;
    this.sentOnThisSocket = new Set();
    this.lastSocketError = '';
    this.transport = 'websocket'; // or 'sse': what the next socket uses
    this.wsFailures = 0;
    this.welcomedAt = 0;
    this.socketUrl = null;
  }

  // ---------- events ----------

  on(name, fn) { return this.events.on(name, fn); }
  off(name, fn) { this.events.off(name, fn); }
  once(name, fn) { return this.events.once(name, fn); }
  /** A promise of the next `name` event whose detail passes `filter`. */
  next(name, filter) { return this.events.next(name, filter); }

  // ---------- connection ----------

  /** Begins (or resumes) connecting; a no-op while a socket is up or opening. */
  connect() {
    this.running = true;
    if (this.ws === null && this.state !== 'connecting') this.attempt();
    return this;
  }

  /** Retries at once if waiting for a retry; otherwise nothing. */
  retryNow() {
    if (!this.running || this.ws !== null || this.state === 'connecting') return;
    this.attempt();
  }

  /**
   * Tells the client what the runtime knows of the network (a browser's
   * online/offline events): back online retries at once; offline while
   * waiting to retry says so in the state.
   */
  networkChanged(online) {
    if (online) this.retryNow();
    else if (this.state === 'reconnecting') this.setState('offline', 'no network', this.retryAt);
  }

  /** Closes the socket and stops reconnecting. Unsent messages stay in storage. */
  close() {
    this.running = false;
    for (const name of Object.keys(this.timers)) this.clearTimer(name);
    const ws = this.ws;
    const welcomed = this.state === 'online';
    this.detach();
    if (ws !== null) {
      try {
        ws.close(1000);
      } catch {
        // Already closing or never opened: gone either way.
      }
      if (welcomed) this.events.emit('down', { code: 1000, reason: 'closed by the client' });
    }
    this.setState('closed');
  }

  // ---------- rooms ----------

  /** Names of the rooms this client is in (or will be, once connected). */
  get rooms() {
    return [...this.roomStates.keys()];
  }

  /**
   * What the client knows of a room: {name, joined, lastSeq, epoch, readSeq, mentionsUnread,
   * users: Map(id → name)}, or undefined. `mentionsUnread`: messages above your read
   * marker that mention you, from the server's `joined` and `read` (100 means 100 or
   * more), plus the live messages mentioning you that came since; null where markers
   * are not kept.
   */
  room(name) {
    const room = this.roomStates.get(name);
    if (!room) return undefined;
    return {
      name: room.name, joined: room.joined, lastSeq: room.lastSeq, epoch: room.epoch, readSeq: room.readSeq ?? null,
      mentionsUnread: room.mentionsUnread ?? null, users: new Map(room.users),
    };
  }

  /** Joins `room` now if online, else on every (re)connect. Joining again is a no-op. */
  join(name, { private: makePrivate = false } = {}) {
    checkRoom(name);
    if (this.roomStates.has(name)) return;
    const room = this.addRoom(name);
    room.createPrivate = makePrivate; // asked once: the room exists afterwards
    this.sendJoin(room);
  }

  /**
   * Creates a private room titled `title` (the server names it, `p.` + random letters)
   * and joins it: resolves with its name once joined (the 'joined' event carries the
   * title too); rejects with the server's error (`code`, `message`), or when offline.
   */
  createPrivate(title) {
    if (typeof title !== 'string' || title.trim() === '') throw new TypeError('createPrivate: a title is required');
    return new Promise((resolve, reject) => {
      if (!this.sendFrame({ type: 'join', private: true, title })) {
        reject(Object.assign(new Error('not online'), { code: 'offline' }));
        return;
      }
      (this.pendingCreates ??= []).push({ resolve, reject });
    });
  }

  /** Opens (or finds) the direct-message room with user `userId`; the 'dm' event names it. */
  dm(userId) {
    if (typeof userId !== 'string' || userId === '') throw new TypeError('dm: a user id is required');
    return this.sendFrame({ type: 'dm', user: userId });
  }

  /** Blocks user `userId`: they cannot open a DM with you; the 'blocked' event lists everyone blocked. */
  block(userId) {
    if (typeof userId !== 'string' || userId === '') throw new TypeError('block: a user id is required');
    return this.sendFrame({ type: 'block', user: userId });
  }

  /** Undoes block(userId). */
  unblock(userId) {
    if (typeof userId !== 'string' || userId === '') throw new TypeError('unblock: a user id is required');
    return this.sendFrame({ type: 'unblock', user: userId });
  }

  /** User ids you blocked, as the server last said (a Set; empty until told). */
  get blocked() {
    return new Set(this.blockedUsers ?? []);
  }

  /**
   * Closes (hides) your DM room `room` until a new message arrives in it, on every
   * device: the 'dm-closed' event follows and the client leaves the room; a 'dm'
   * event brings it back. False when not online.
   */
  closeDm(room) {
    checkRoom(room);
    return this.sendFrame({ type: 'close_dm', room });
  }

  /** Moderators: removes user `userId` from `room` for `minutes`. */
  kick(room, userId, minutes) {
    checkRoom(room);
    if (!Number.isInteger(minutes) || minutes < 1 || minutes > 10080) throw new RangeError('kick: minutes is 1 to 10080');
    return this.sendFrame({ type: 'kick', room, user: userId, minutes });
  }

  /** Moderators: makes `room` read-only for everyone else (or undoes it). */
  setReadOnly(room, readOnly) {
    checkRoom(room);
    return this.sendFrame({ type: 'mode', room, read_only: readOnly === true });
  }

  /** Lets user `userId` join your private room `room`. */
  invite(room, userId) {
    checkRoom(room);
    if (typeof userId !== 'string' || userId === '') throw new TypeError('invite: a user id is required');
    return this.sendFrame({ type: 'invite', room, user: userId });
  }

  /** Leaves `room`; its unsent messages are dropped and returned. */
  leave(name) {
    checkRoom(name);
    if (!this.roomStates.has(name)) return [];
    this.sendFrame({ type: 'leave', room: name });
    this.roomStates.delete(name);
    return this.unsentStore.dropRoom(name);
  }

  // ---------- sending ----------

  /**
   * Posts `text` to `room`: stored as unsent at once, sent when the room is
   * joined, re-sent with the same id after each reconnect until acked.
   * `replyTo`: the seq of the message this one answers (the server quotes it in the
   * frame; `not_found` fails the message when that seq is not a message of the room).
   * `mentions`: the ids of users in the room it mentions (at most 20; the server refuses
   * anyone not in the room with `bad_field`). Returns the entry {id, room, text, ts,
   * reply_to?, mentions?}.
   */
  send(room, text, { replyTo, mentions = [], files = [] } = {}) {
    checkRoom(room);
    if (typeof text !== 'string') throw new TypeError(`send: text must be a string, got ${typeof text}`);
    if (!Array.isArray(files) || files.length > MAX_FILES || !files.every((f) => typeof f === 'string' && FILE_ID.test(f))) {
      throw new TypeError(`send: files must be an array of at most ${MAX_FILES} file ids (from upload())`);
    }
    if (text.trim() === '' && files.length === 0) throw new RangeError('send: text is blank');
    const length = [...text].length;
    const max = this.limits.max_text;
    if (length > max) throw new RangeError(`send: text is ${length} characters, the server takes at most ${max}`);
    if (!this.roomStates.has(room)) this.join(room);
    if (replyTo !== undefined && (!Number.isInteger(replyTo) || replyTo < 1)) throw new RangeError('send: replyTo must be a seq (an integer ≥ 1)');
    if (!Array.isArray(mentions) || mentions.some((id) => typeof id !== 'string' || id === '')) throw new TypeError('send: mentions must be a list of user ids');
    const extra = replyTo === undefined ? {} : { reply_to: replyTo };
    if (mentions.length > 0) extra.mentions = [...new Set(mentions)];
    if (files.length > 0) extra.files = [...files];
    const entry = this.unsentStore.add(room, text, extra);
    this.flush(this.roomStates.get(room));
    return { ...entry };
  }

  /** Unsent messages (all, or one room's), oldest first. */
  unsent(room) {
    const entries = room === undefined ? this.unsentStore.entries : this.unsentStore.forRoom(room);
    return entries.map((entry) => ({ ...entry }));
  }

  /** Forgets an unsent message (it may still arrive if it was already sent). */
  discard(id) {
    this.sentOnThisSocket.delete(id);
    return this.unsentStore.take(id);
  }

  /** Tells the room's other members we are typing (paced); false if not sent now. */
  typing(room) {
    checkRoom(room);
    const state = this.roomStates.get(room);
    if (!state?.joined) return false;
    // Paced: one notice shows the others "typing…" for a few seconds, so a keystroke
    // within TYPING_EVERY_MS of the last notice sent adds nothing.
    const now = Date.now();
    if (now - (state.typingSentAt ?? -Infinity) < TYPING_EVERY_MS) return false;
    if (!this.sendFrame({ type: 'typing', room })) return false;
    state.typingSentAt = now;
    return true;
  }

  /** Changes the display name (open mode); false if not connected. */
  nick(name) {
    if (typeof name !== 'string' || name.trim() === '') throw new TypeError('nick: name must be a non-blank string');
    if ([...name.trim()].length > MAX_NAME) throw new RangeError(`nick: name is longer than ${MAX_NAME} characters`);
    return this.sendFrame({ type: 'nick', name: name.trim() });
  }

  /**
   * Replaces the text of your message `seq` in `room`. Resolves with the edit's
   * `{seq}` once stored; rejects with the server's error (`forbidden`, `not_found`,
   * `too_long`, …) or when not online.
   */
  edit(room, seq, text) {
    checkRoom(room);
    if (typeof text !== 'string' || text.trim() === '') throw new TypeError('edit: text must be a non-blank string');
    return this.change({ type: 'edit', room, seq, text });
  }

  /** Deletes message `seq` in `room` (yours, or any as a moderator); like edit(). */
  delete(room, seq) {
    checkRoom(room);
    return this.change({ type: 'delete', room, seq });
  }

  /**
   * Toggles your reaction `emoji` (e.g. '👍') to message `seq` in `room`. Resolves with
   * `{seq, on}` (the react event's seq, and whether your reaction is on now) when the
   * server's event comes back; rejects with the server's error (`not_found` for a
   * missing or deleted message, `bad_field` for a bad emoji or a full message) or when
   * not online. Every member gets the `react` event.
   */
  react(room, seq, emoji) {
    checkRoom(room);
    if (!Number.isInteger(seq) || seq < 1) throw new RangeError('react: seq must be an integer ≥ 1');
    if (typeof emoji !== 'string' || emoji === '') throw new TypeError('react: emoji must be a non-empty string');
    const answer = this.next('frame', (f) => (f.type === 'react' && f.room === room && f.of === seq && f.emoji === emoji
      && f.uid === this.me?.id) || (f.type === 'error' && f.ref === 'react'));
    if (!this.sendFrame({ type: 'react', room, seq, emoji })) return Promise.reject(new Error('react: not online'));
    return answer.then((f) => {
      if (f.type === 'react') return { seq: f.seq, on: f.on === true };
      throw Object.assign(new Error(`react: ${f.message ?? f.code}`), { code: f.code });
    });
  }

  change(frame) {
    if (!Number.isInteger(frame.seq) || frame.seq < 1) throw new RangeError(`${frame.type}: seq must be an integer ≥ 1`);
    const id = newMessageId();
    const answer = this.next('frame', (f) => (f.type === 'ack' || f.type === 'error') && (f.id === id || f.ref === id));
    if (!this.sendFrame({ ...frame, id })) return Promise.reject(new Error(`${frame.type}: not online`));
    this.changeIds.add(id); // its error is the promise's, not an 'error' event
    // A socket lost before the answer: the change may or may not be stored; say so.
    const lost = this.next('down').then(() => ({ type: 'error', code: 'disconnected', message: 'connection lost before the answer' }));
    return Promise.race([answer, lost]).then((f) => {
      this.changeIds.delete(id);
      if (f.type === 'ack') return { seq: f.seq };
      const error = new Error(`${frame.type}: ${f.message ?? f.code}`);
      error.code = f.code;
      throw error;
    });
  }

  /**
   * Moves your read marker in `room` to `seq` (default: the newest seq seen there),
   * stored by the server and told to all your connections in the room. Paced: at most
   * one `read` per room every READ_EVERY_MS; a call meanwhile is kept, and the highest
   * seq asked for goes out when the pause ends. True when sent or kept; false when not
   * joined, when the marker is there already, or when the server keeps no markers (one
   * from before read markers).
   */
  markRead(room, seq) {
    const state = this.roomStates.get(room);
    if (!state?.joined || state.readSeq === null || state.readSeq === undefined) return false;
    const wanted = seq ?? state.lastSeq;
    if (!Number.isInteger(wanted) || wanted <= Math.max(state.readSeq, state.readSent ?? 0)) return false;
    state.readWanted = Math.max(state.readWanted ?? 0, wanted);
    if (!state.readTimer) this.sendRead(state);
    return true;
  }

  /** Sends the room's wanted read marker now and starts the pause before the next one. */
  sendRead(state) {
    const seq = state.readWanted;
    state.readWanted = 0;
    if (!seq || seq <= Math.max(state.readSeq ?? 0, state.readSent ?? 0) || !state.joined) return;
    if (!this.sendFrame({ type: 'read', room: state.name, seq })) return;
    state.readSent = seq;
    state.readTimer = setTimeout(() => {
      state.readTimer = null;
      if (this.roomStates.get(state.name) === state) this.sendRead(state);
    }, READ_EVERY_MS);
  }

  /**
   * Scroll-back: the (at most `limit`) messages of `room` before seq `before`, oldest
   * first; `complete` is true once the room's first stored message is in it.
   * Resolves with the `older` event's detail. Throws when not online.
   */
  older(room, { before, limit = 50 } = {}) {
    checkRoom(room);
    if (!Number.isInteger(before) || before < 1) throw new RangeError('older: before must be a seq (an integer ≥ 1)');
    if (!Number.isInteger(limit) || limit < 1 || limit > 200) throw new RangeError('older: limit is 1 to 200');
    const answer = this.next('older', (o) => o.room === room && o.before === before);
    if (!this.sendFrame({ type: 'history', room, before, limit })) throw new Error('older: not online');
    return answer;
  }

  /**
   * Messages of `room` whose text has every word of `q`, newest first (`before`: only
   * older than that seq). Resolves with the `search` event's detail. Throws when not online.
   */
  search(room, q, { before, limit = 50 } = {}) {
    checkRoom(room);
    if (typeof q !== 'string' || q.trim() === '') throw new TypeError('search: q must be a non-blank string');
    const frame = { type: 'search', room, q, limit };
    if (before !== undefined) frame.before = before;
    const answer = this.next('search', (s) => s.room === room && s.q === q);
    if (!this.sendFrame(frame)) throw new Error('search: not online');
    return answer;
  }

  /**
   * Uploads a file (a Blob or File in a browser; a Blob, Buffer or Uint8Array in Node)
   * to the server's `POST /upload`, with this client's credentials in headers. Resolves
   * with the file's description {id, name, size, type, width?, height?}; post it with
   * send(room, text, {files: [id]}). `onProgress({loaded, total})` follows the upload
   * (XMLHttpRequest's upload events in a browser, the body's chunks in Node). Rejects
   * with an Error whose `code` and `status` are the server's refusal. Needs a connection
   * that said welcome once (so the server's address and auth mode are known).
   */
  async upload(file, { name, onProgress } = {}) {
    if (this.socketUrl === null || this.auth === null) throw new Error('upload: connect first');
    const url = httpUrl(this.socketUrl, '/upload');
    const headers = { 'X-Natter-Name': encodeURIComponent(name ?? file?.name ?? 'file') };
    const credentials = this.credentials.resolve(this.auth);
    if (credentials !== null && 'token' in credentials) headers.Authorization = `Bearer ${credentials.token}`;
    else headers['X-Natter-Key'] = this.identityKey;
    const contentType = typeof file?.type === 'string' && file.type !== '' ? file.type : 'application/octet-stream';
    headers['Content-Type'] = contentType;
    const progress = typeof onProgress === 'function' ? onProgress : () => {};
    const { status, body } = typeof globalThis.XMLHttpRequest === 'function'
      ? await uploadXhr(url, headers, file, progress)
      : await uploadNode(url, headers, file, progress);
    let answer = null;
    try {
      answer = JSON.parse(body);
    } catch {
      // Reported below.
    }
    if (status !== 201 || answer === null || typeof answer.id !== 'string') {
      const message = answer?.error?.message ?? `upload: HTTP ${status}`;
      throw Object.assign(new Error(message), { code: answer?.error?.code ?? 'upload_failed', status });
    }
    return answer;
  }

  /**
   * Signed URLs (absolute, on the WebSocket port's origin) for files posted in
   * `room`, by id: {urls, exp} (exp: Unix seconds). Kept until shortly before they
   * expire, so asking again is cheap. Throws when not online.
   */
  async fileUrls(room, ids) {
    checkRoom(room);
    if (!Array.isArray(ids) || ids.length === 0 || ids.length > 100) throw new RangeError('fileUrls: 1 to 100 file ids');
    this.urlCache ??= new Map();
    const now = Date.now() / 1000;
    const key = (id) => `${room}\n${id}`;
    const fresh = (id) => (this.urlCache.get(key(id))?.exp ?? 0) - 60 > now;
    const missing = ids.filter((id) => !fresh(id));
    if (missing.length > 0) {
      const answer = this.next('file-urls', (a) => a.room === room && missing.every((id) => id in a.urls));
      if (!this.sendFrame({ type: 'file_urls', room, files: missing })) throw new Error('fileUrls: not online');
      const { urls, exp } = await answer;
      for (const [id, url] of Object.entries(urls)) this.urlCache.set(key(id), { url, exp });
    }
    const urls = {};
    let exp = Infinity;
    for (const id of ids) {
      const cached = this.urlCache.get(key(id));
      urls[id] = cached.url;
      exp = Math.min(exp, cached.exp);
    }
    return { urls, exp };
  }

  /** Sends one raw protocol frame; false when there is no open, welcomed socket. */
  sendFrame(frame) {
    if (this.ws === null || this.ws.readyState !== 1 || this.state !== 'online') return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  // ---------- internals: connecting ----------

  setState(state, reason = '', retryAt = null) {
    this.state = state;
    this.events.emit('state', { state, reason, retryAt, transport: this.transport });
  }

  async attempt() {
    this.clearTimer('retry');
    this.setState('connecting');
    // Each await below may outlive a close() or a newer attempt: only the latest goes on.
    const attempt = ++this.attempts;
    const current = () => this.running && attempt === this.attempts;
    let WebSocketClass;
    try {
      WebSocketClass = await this.webSocketClass();
    } catch (error) {
      this.running = false;
      this.setState('offline', error.message);
      this.events.emit('error', { code: 'no_websocket', message: error.message, ref: null });
      return;
    }
    if (!current()) return;
    let wsUrl = this.url.href;
    if (this.url.kind === 'http') {
      let config;
      try {
        const fetchFn = this.fetchFn ?? globalThis.fetch;
        const response = await fetchFn(new URL('/config.json', this.url.href).href, { cache: 'no-store' });
        if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
        config = await response.json();
        if (typeof config?.ws_url !== 'string') throw new Error('config.json has no ws_url');
      } catch {
        if (current()) this.scheduleRetry('server unreachable');
        return;
      }
      if (!current()) return;
      this.auth = config.auth === 'token' ? 'token' : 'open';
      wsUrl = config.ws_url;
    } else {
      this.auth = this.credentials.token !== undefined ? 'token' : 'open';
    }
    const credentials = this.credentials.resolve(this.auth);
    if (credentials === null) {
      this.askForCredentials('');
      return;
    }
    let url;
    try {
      url = buildUrl(wsUrl, this.url.href);
    } catch {
      this.scheduleRetry('bad server address');
      return;
    }
    this.socketUrl = url;
    // Credentials never go in a URL (proxies log URLs): the WebSocket sends them in its
    // first frame, the fallback in the body of the POST that gets its stream ticket.
    const hello = helloFrame(credentials, this.identityKey);
    if (this.transport === 'sse') {
      const fetch = this.fetchFn ?? globalThis.fetch;
      const { type, ...sseCredentials } = hello;
      this.openSocket((u) => new SseSocket(u, { fetch, credentials: sseCredentials }), url, null);
    } else {
      this.openSocket((u) => new WebSocketClass(u), url, hello);
    }
  }

  async webSocketClass() {
    this.WebSocketClass ??= await loadWebSocket();
    return this.WebSocketClass;
  }

  /** Opens a socket; `hello` (a WebSocket's) is its first frame, sent once it opens. */
  openSocket(make, url, hello) {
    let ws;
    try {
      ws = make(url);
    } catch (error) {
      this.scheduleRetry(`bad server address: ${error.message}`);
      return;
    }
    this.ws = ws;
    if (hello !== null) ws.onopen = () => ws.send(JSON.stringify(hello));
    this.lastSocketError = '';
    let welcomed = false;
    this.setTimer('open', this.openTimeoutMs, () => this.abandon('timed out while connecting', welcomed));
    ws.onmessage = (event) => {
      const frame = parseFrame(event.data);
      if (frame === null) {
        this.events.emit('error', { code: 'bad_frame', message: 'the server sent a frame that is not a JSON object with a type', ref: null });
        return;
      }
      if (frame.type === 'welcome') welcomed = true;
      this.onFrame(frame);
    };
    // The ws package throws an 'error' nobody listens to: always listen.
    ws.onerror = (event) => {
      this.lastSocketError = String(event?.message ?? '');
    };
    ws.onclose = (event) => this.onSocketGone(event.code, event.reason, welcomed);
  }

  /** Drops a socket we consider dead without waiting for the runtime to agree. */
  abandon(reason, welcomed) {
    const ws = this.ws;
    if (ws === null) return;
    this.detach();
    try {
      ws.close();
    } catch {
      // Closing a dead socket may throw in some runtimes; it is gone either way.
    }
    this.afterSocket(1006, reason, welcomed);
  }

  onSocketGone(code, reason, welcomed) {
    this.detach();
    this.afterSocket(code, reason, welcomed);
  }

  detach() {
    if (this.ws !== null) {
      this.ws.onmessage = null;
      this.ws.onclose = null;
      this.ws.onopen = null;
      this.ws.onerror = () => {};
      this.ws = null;
    }
    for (const name of ['open', 'stable', 'ping', 'deadline', 'resend', 'probe']) this.clearTimer(name);
    for (const room of this.roomStates.values()) room.joined = false;
  }

  afterSocket(code, reason, welcomed) {
    if (welcomed) this.events.emit('down', { code, reason });
    this.countWebSocketFailure(welcomed);
    if (!this.running) return;
    // A ban is no outage: retrying would only knock until it ends (PROTOCOL.md).
    if (code === 1008 && /^banned from this server/.test(reason ?? '')) {
      this.running = false;
      this.clearTimer('retry');
      this.setState('offline', reason);
      return;
    }
    if (code === 1008 && reason === 'token expired') {
      this.askForCredentials('Your token expired. Enter a new one to reconnect.');
      return;
    }
    // The server refuses a bad token in so many words: close 1008 `unauthorized: …`
    // after the hello, or 401 to the fallback's ticket POST. Anything else (a socket
    // that never opened) is an outage, retried.
    const refused = /\b401\b/.test(this.lastSocketError) || (code === 1008 && /^unauthorized/.test(reason ?? ''));
    if (!welcomed && this.auth === 'token' && refused) {
      this.askForCredentials('The server refused the connection: the token may be invalid or expired.');
      return;
    }
    this.scheduleRetry(describeClose(code, reason, welcomed));
  }

  /** After a WebSocket ends: one more failure in a row (never opened, or gone at once), or none. */
  countWebSocketFailure(welcomed) {
    if (this.transport !== 'websocket' || this.fallback === null) return;
    const failed = !welcomed || Date.now() - this.welcomedAt < CLOSE_SOON_MS;
    this.wsFailures = failed ? this.wsFailures + 1 : 0;
    if (this.wsFailures >= this.fallback.afterFailures) {
      this.transport = 'sse';
      this.wsFailures = 0;
    }
  }

  /** On SSE: opens a WebSocket now and then; once one opens, reconnects over WebSocket. */
  probeWebSocket() {
    if (this.transport !== 'sse' || this.state !== 'online' || this.socketUrl === null) return;
    let probe;
    try {
      probe = new this.WebSocketClass(this.socketUrl);
    } catch {
      return;
    }
    const done = () => {
      probe.onopen = null;
      probe.onclose = null;
      probe.onerror = () => {};
    };
    probe.onerror = () => {};
    probe.onclose = done;
    probe.onopen = () => {
      done();
      probe.close(1000);
      if (this.transport !== 'sse' || this.ws === null) return;
      this.transport = 'websocket';
      // Resume over WebSocket like after any reconnect: rooms with `since`, unsent with their ids.
      this.abandon('moving back to WebSocket', this.state === 'online');
      this.retryNow();
    };
  }

  askForCredentials(reason) {
    this.running = false;
    this.clearTimer('retry');
    // A first visit is not an outage: only a refusal or an expiry is "offline".
    if (reason) this.setState('offline', reason);
    else this.setState('idle');
    this.events.emit('credentials-needed', { auth: this.auth, reason });
  }

  scheduleRetry(reason) {
    if (!this.running) return;
    const delay = this.backoff.next();
    const retryAt = Date.now() + delay;
    this.retryAt = retryAt;
    this.setTimer('retry', delay, () => this.attempt());
    if (!this.isOnline()) this.setState('offline', 'no network', retryAt);
    else this.setState('reconnecting', reason, retryAt);
  }

  // ---------- internals: frames ----------

  onFrame(frame) {
    addTags(frame);
    this.events.emit('frame', frame);
    const handler = HANDLERS[frame.type];
    if (!handler) return;
    if (ROOMLESS.has(frame.type)) {
      handler.call(this, frame);
      return;
    }
    let room = this.roomStates.get(frame.room);
    if (!room && frame.type === 'joined' && frame.private === true && this.pendingCreates?.length) {
      // The answer to createPrivate(): the server named the room.
      room = this.addRoom(frame.room);
      handler.call(this, frame, room);
      this.pendingCreates.shift().resolve(frame.room);
      return;
    }
    if (room) handler.call(this, frame, room); // else: a room we have since left
  }

  onWelcome(frame) {
    this.clearTimer('open');
    this.welcomedAt = Date.now();
    if (this.transport === 'sse' && this.fallback !== null) {
      this.setRepeat('probe', this.fallback.retryWebSocketMs, () => this.probeWebSocket());
    }
    this.me = frame.user ?? null;
    this.limits = { ...this.limits, ...(frame.limits ?? {}) };
    this.sentOnThisSocket.clear();
    this.setTimer('stable', this.stableAfterMs, () => this.backoff.reset());
    const { interval_ms: interval = 15000, timeout_ms: timeout = 45000 } = frame.heartbeat ?? {};
    this.setRepeat('ping', interval, () => {
      if (!this.sendFrame({ type: 'ping', t: Date.now() })) return;
      // One deadline per unanswered run of pings: any pong clears it.
      if (!this.timers.deadline) this.setTimer('deadline', timeout, () => this.abandon('no heartbeat reply', true));
    });
    this.setState('online');
    this.events.emit('welcome', frame);
    for (const room of this.roomStates.values()) this.sendJoin(room);
  }

  sendJoin(room) {
    room.joined = false;
    const frame = { type: 'join', room: room.name };
    if (room.resumable) frame.since = room.lastSeq;
    // The epoch says which history `since` counts in: after a wipe the server answers reset.
    if (room.resumable && room.epoch) frame.epoch = room.epoch;
    if (room.createPrivate) frame.private = true;
    this.sendFrame(frame);
  }

  /** Joins a joined room again (since = lastSeq: nothing is re-sent) for its `joined` frame's epoch. */
  askEpoch(room) {
    room.rejoining = true;
    this.sendFrame({ type: 'join', room: room.name, since: room.lastSeq });
  }

  addRoom(name) {
    let room = this.roomStates.get(name);
    if (!room) {
      // joined: history received on the current socket; resumable: lastSeq is meaningful for `since`.
      // epoch: the history lastSeq counts in (null until the room has a message).
      room = { name, lastSeq: 0, epoch: null, resumable: false, joined: false, users: new Map() };
      this.roomStates.set(name, room);
    }
    return room;
  }

  /** Sends the room's unsent messages, oldest first, once per socket. */
  flush(room) {
    if (!room?.joined) return;
    for (const entry of this.unsentStore.forRoom(room.name)) {
      if (this.sentOnThisSocket.has(entry.id)) continue;
      const frame = { type: 'msg', room: entry.room, text: entry.text, id: entry.id };
      if (Number.isInteger(entry.reply_to)) frame.reply_to = entry.reply_to;
      if (Array.isArray(entry.mentions) && entry.mentions.length > 0) frame.mentions = entry.mentions;
      if (entry.files?.length) frame.files = entry.files;
      if (!this.sendFrame(frame)) return;
      this.sentOnThisSocket.add(entry.id);
    }
  }

  /** Re-sends the unsent messages after the current retry pause (one timer for all). */
  retryLater() {
    if (this.timers.resend) return;
    const ms = this.retryMs ?? RETRY.firstMs;
    this.retryMs = Math.min(ms * 2, RETRY.maxMs);
    this.setTimer('resend', ms, () => {
      for (const room of this.roomStates.values()) this.flush(room);
    });
  }

  /** Our message `id` is stored as `seq`: it leaves the unsent list, and 'ack' fires once. */
  settle(id, room, seq, dup) {
    if (!this.unsentStore.take(id)) return;
    this.retryMs = RETRY.firstMs; // the server takes messages again
    this.sentOnThisSocket.delete(id);
    this.events.emit('ack', { id, room, seq, dup });
  }

  /** True (and remembered) when `msg` is newer than anything seen in `room`. */
  isNew(room, msg) {
    if (typeof msg?.seq !== 'number') return false;
    if (room.resumable && msg.seq <= room.lastSeq) return false;
    if (msg.seq > room.lastSeq) room.lastSeq = msg.seq;
    return true;
  }

  presenceList(room) {
    return [...room.users].map(([id, name]) => ({ id, name, tag: userTag(id) }));
  }

  setTimer(name, ms, fn) {
    this.clearTimer(name);
    this.timers[name] = { id: setTimeout(() => { delete this.timers[name]; fn(); }, ms), repeat: false };
  }

  setRepeat(name, ms, fn) {
    this.clearTimer(name);
    this.timers[name] = { id: setInterval(fn, ms), repeat: true };
  }

  clearTimer(name) {
    const timer = this.timers[name];
    if (!timer) return;
    if (timer.repeat) clearInterval(timer.id);
    else clearTimeout(timer.id);
    delete this.timers[name];
  }
}

// Frames not about a room the client is in (a DM or an invitation names a room to join).
const ROOMLESS = new Set(['welcome', 'pong', 'error', 'dm', 'invited', 'blocked', 'dm_closed']);

// One handler per server frame type; `this` is the client.
const HANDLERS = {
  dm(frame) {
    if (typeof frame.room === 'string' && frame.user) this.events.emit('dm', { room: frame.room, user: frame.user });
  },

  invited(frame) {
    if (typeof frame.room === 'string' && frame.by) {
      this.events.emit('invited', { room: frame.room, by: frame.by, title: typeof frame.title === 'string' ? frame.title : null });
    }
  },

  blocked(frame) {
    if (!Array.isArray(frame.users)) return;
    this.blockedUsers = frame.users.filter((u) => typeof u === 'string');
    this.events.emit('blocked', { users: [...this.blockedUsers] });
  },

  dm_closed(frame) {
    if (typeof frame.room !== 'string' || !ROOM_NAME.test(frame.room)) return;
    this.leave(frame.room); // frees its slot; a 'dm' frame brings it back
    this.events.emit('dm-closed', { room: frame.room });
  },

  welcome(frame) {
    this.onWelcome(frame);
  },

  pong() {
    this.clearTimer('deadline');
  },

  joined(frame, room) {
    room.epoch = typeof frame.epoch === 'string' ? frame.epoch : null;
    room.users = new Map((frame.users ?? []).map((user) => [user.id, user.name]));
    room.readSeq = Number.isInteger(frame.read_seq) ? frame.read_seq : null;
    room.mentionsUnread = Number.isInteger(frame.mentions_unread) ? frame.mentions_unread : null;
    room.readSent = 0; // the server's marker is the truth again (it may have been reset)
    room.createPrivate = false;
    // The history answer this `joined` opens (a server's own reset comes this way too,
    // unasked, while the room is joined: its store lost or went back on the history).
    room.answerDue = true;
    const detail = {
      room: room.name,
      head: frame.head,
      users: this.presenceList(room),
      users_total: frame.users_total,
      private: frame.private === true,
      title: typeof frame.title === 'string' ? frame.title : null,
      read_only: frame.read_only === true,
    };
    this.events.emit('joined', { ...detail, read_seq: room.readSeq, mentions_unread: room.mentionsUnread });
    this.events.emit('presence', { room: room.name, users: this.presenceList(room), change: null });
  },

  history(frame, room) {
    if (frame.before !== undefined) {
      // A scroll-back answer (to older()), maybe in several pages: nothing to do with
      // the room's cursor, which only live and resumed messages move.
      const key = `${room.name}\u0000${frame.before}`;
      const pages = this.olderPages ?? (this.olderPages = new Map());
      const got = [...(pages.get(key) ?? []), ...(frame.messages ?? [])];
      if (frame.more) {
        pages.set(key, got);
        return;
      }
      pages.delete(key);
      // Messages only: the stored copies already show every edit and deletion, so the
      // events among them change nothing (their seqs still count for paging on).
      const firstSeq = got[0]?.seq;
      const messages = got.filter((m) => m?.type === 'msg');
      this.events.emit('older', { room: room.name, before: frame.before, messages, firstSeq, complete: frame.complete === true });
      return;
    }
    // reset (on every page of the answer; acted on at the first): our cursor counts in a
    // history the server no longer has, so start over from what it sends now.
    const reset = frame.reset === true && (!room.joined || room.rejoining || room.answerDue);
    room.rejoining = false;
    room.answerDue = false;
    if (reset) {
      room.lastSeq = 0;
      room.resumable = false;
    }
    const resumed = room.resumable;
    const messages = [];
    const changes = [];
    for (const msg of frame.messages ?? []) {
      if (!this.isNew(room, msg)) continue;
      if (msg.type === 'edit' || msg.type === 'delete' || msg.type === 'react' || msg.type === 'system') {
        changes.push(msg);
        continue;
      }
      // Our own message may be in history before (or instead of) its ack.
      if (msg?.id) this.settle(msg.id, room.name, msg.seq, false);
      messages.push(msg);
    }
    room.joined = true;
    room.resumable = true;
    this.events.emit('history', { room: room.name, messages, complete: frame.complete !== false, resumed, reset });
    // After the messages they change (the stored ones may show them already: idempotent).
    for (const change of changes) this.events.emit(change.type === 'system' ? 'moderation' : change.type, change);
    this.flush(room);
  },

  search(frame, room) {
    const detail = { room: room.name, q: frame.q, before: frame.before, messages: frame.messages ?? [], complete: frame.complete === true };
    this.events.emit('search', detail);
  },

  msg(frame, room) {
    if (frame.id) this.settle(frame.id, room.name, frame.seq, false);
    if (this.isNew(room, frame)) {
      // The server's count holds what it sent before; a live mention of you by someone
      // else above your marker is one more.
      const me = this.me?.id;
      const mentionsMe = Array.isArray(frame.mentions) && frame.mentions.includes(me) && frame.uid !== me;
      if (mentionsMe && Number.isInteger(room.mentionsUnread) && frame.seq > (room.readSeq ?? 0)) room.mentionsUnread += 1;
      this.events.emit('message', frame);
    }
    // The room was empty when we joined, so we hold no epoch for our cursor: join again
    // (with since: nothing is re-sent) to learn it, or a wipe could go unnoticed.
    if (room.epoch === null && room.joined && !room.epochAsked) {
      room.epochAsked = true;
      this.askEpoch(room);
    }
  },

  edit(frame, room) {
    if (this.isNew(room, frame)) this.events.emit('edit', frame);
  },

  delete(frame, room) {
    if (this.isNew(room, frame)) this.events.emit('delete', frame);
  },

  react(frame, room) {
    if (this.isNew(room, frame)) this.events.emit('react', frame);
  },

  file_urls(frame, room) {
    const urls = {};
    for (const [id, path] of Object.entries(frame.urls ?? {})) urls[id] = httpUrl(this.socketUrl, path);
    this.events.emit('file-urls', { room: room.name, urls, exp: frame.exp });
  },

  ack(frame, room) {
    this.settle(frame.id, room.name, frame.seq, frame.dup === true);
  },

  system(frame, room) {
    if (Number.isInteger(frame.seq)) {
      // A moderator's action: in the room's seq order, like a message.
      if (!this.isNew(room, frame)) return;
      if (frame.event === 'kick' && frame.user?.id === this.me?.id) this.roomStates.delete(room.name);
      this.events.emit('moderation', frame);
      return;
    }
    const { event, user } = frame;
    if (!user || typeof user.id !== 'string') return;
    const before = room.users.get(user.id) ?? null;
    const mine = user.id === this.me?.id;
    if (event === 'join' || event === 'nick') room.users.set(user.id, user.name);
    else if (event === 'leave') room.users.delete(user.id);
    if (event === 'nick' && mine) this.me = { ...this.me, name: user.name };
    const change = { event, user, before: frame.old_name ?? before, mine };
    this.events.emit('presence', { room: room.name, users: this.presenceList(room), change });
  },

  read(frame, room) {
    if (!Number.isInteger(frame.seq)) return;
    const moved = frame.seq >= (room.readSeq ?? 0);
    room.readSeq = Math.max(room.readSeq ?? 0, frame.seq);
    if (moved && Number.isInteger(frame.mentions_unread)) room.mentionsUnread = frame.mentions_unread;
    this.events.emit('read', { room: room.name, seq: room.readSeq, mentions_unread: room.mentionsUnread ?? null });
  },

  typing(frame, room) {
    if (frame.user && frame.user.id !== this.me?.id) this.events.emit('typing', { room: room.name, user: frame.user });
  },

  error(frame) {
    const entry = typeof frame.ref === 'string' ? this.unsentStore.get(frame.ref) : undefined;
    const detail = { code: frame.code, message: frame.message ?? frame.code, ref: frame.ref ?? null };
    if (frame.ref === 'join' && this.pendingCreates?.length && CREATE_REFUSALS.has(frame.code)) {
      // A createPrivate() refused: its promise says why (never retried on its own).
      this.pendingCreates.shift().reject(Object.assign(new Error(detail.message), { code: detail.code }));
      return;
    }
    if (frame.ref === 'join' && TRANSIENT.has(frame.code)) {
      // A join refused for now (rate limit, failing store): ask again after a pause.
      this.setTimer('rejoin', RETRY.firstMs, () => {
        for (const room of this.roomStates.values()) {
          if (!room.joined) this.sendJoin(room);
          else if (room.rejoining) this.askEpoch(room);
        }
      });
      return;
    }
    if (!entry) {
      if (!this.changeIds.has(frame.ref)) this.events.emit('error', detail);
      return;
    }
    this.sentOnThisSocket.delete(entry.id);
    if (TRANSIENT.has(frame.code)) {
      // Not the message's fault: send the same id again after a growing pause.
      this.retryLater();
      return;
    }
    this.unsentStore.take(entry.id);
    this.events.emit('failed', { ...entry, code: detail.code, message: detail.message });
  },
};

// ---------- helpers ----------

/** `url` as {kind: 'http'|'ws', href}; throws a clear error for anything else. */
function parseServerUrl(raw) {
  if (typeof raw !== 'string' || raw === '') {
    throw new TypeError('NatterClient: url is required outside a browser page (http://host:8080 or ws://host:8081/ws)');
  }
  let url;
  try {
    url = new URL(raw);
  } catch {
    throw new TypeError(`NatterClient: url "${raw}" is not an absolute URL`);
  }
  if (url.protocol === 'http:' || url.protocol === 'https:') return { kind: 'http', href: url.href };
  if (url.protocol === 'ws:' || url.protocol === 'wss:') return { kind: 'ws', href: url.href };
  throw new TypeError(`NatterClient: url must be http(s) or ws(s), got ${url.protocol}`);
}

function pickCredentials({ name, token, credentials }) {
  const given = [name !== undefined && 'name', token !== undefined && 'token', credentials !== undefined && 'credentials'].filter(Boolean);
  if (given.length > 1) throw new TypeError(`NatterClient: give one of name, token or credentials, not ${given.join(' and ')}`);
  if (name !== undefined) {
    if (typeof name !== 'string' || name.trim() === '') throw new TypeError('NatterClient: name must be a non-blank string');
    if ([...name.trim()].length > MAX_NAME) throw new RangeError(`NatterClient: name is longer than ${MAX_NAME} characters`);
  }
  if (token !== undefined && (typeof token !== 'string' || token.split('.').length !== 3)) {
    throw new TypeError('NatterClient: token must be a JWT string (three dot-separated parts)');
  }
  if (credentials !== undefined && typeof credentials !== 'function') {
    throw new TypeError('NatterClient: credentials must be a function (auth) => ({name} | {token} | null)');
  }
  return {
    token,
    resolve(auth) {
      if (credentials) return credentials(auth) ?? null;
      if (auth === 'token') return token !== undefined ? { token } : null;
      return name !== undefined ? { name: name.trim() } : null;
    },
  };
}

function checkRoom(name) {
  if (typeof name !== 'string' || !ROOM_NAME.test(name)) {
    throw new TypeError(`room name ${JSON.stringify(name)} is not 1–64 characters of A-Z a-z 0-9 _ - .`);
  }
  return name;
}

function positive(value, label) {
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`NatterClient: ${label} must be a positive number of milliseconds`);
  return value;
}

function parseFrame(data) {
  if (typeof data !== 'string') return null;
  try {
    const frame = JSON.parse(data);
    return frame !== null && typeof frame === 'object' && typeof frame.type === 'string' ? frame : null;
  } catch {
    return null;
  }
}

/** The `fallback` option: null (never fall back) or {afterFailures, retryWebSocketMs}. */
function pickFallback(option) {
  if (option === false) return null;
  if (option === undefined) return { ...FALLBACK };
  if (option === null || typeof option !== 'object') throw new TypeError('NatterClient: fallback must be false or {afterFailures, retryWebSocketMs}');
  const afterFailures = positive(option.afterFailures ?? FALLBACK.afterFailures, 'fallback.afterFailures');
  const retryWebSocketMs = positive(option.retryWebSocketMs ?? FALLBACK.retryWebSocketMs, 'fallback.retryWebSocketMs');
  return { afterFailures, retryWebSocketMs };
}

/**
 * The WebSocket URL: `ws_url` with `?auth=hello`, which tells the server that the
 * credentials come in the first frame. Never a credential in it: proxies log URLs.
 */
export function buildUrl(wsUrl, base) {
  const url = new URL(wsUrl, base);
  if (url.protocol === 'http:') url.protocol = 'ws:';
  if (url.protocol === 'https:') url.protocol = 'wss:';
  url.searchParams.set('auth', 'hello');
  return url.href;
}

/** `path` on the http(s) origin of the WebSocket URL `wsUrl` (uploads and files live there). */
export function httpUrl(wsUrl, path) {
  const url = new URL(path, wsUrl);
  if (url.protocol === 'ws:') url.protocol = 'http:';
  if (url.protocol === 'wss:') url.protocol = 'https:';
  return url.href;
}

/** A browser upload: XMLHttpRequest, whose upload events say how far it got. */
function uploadXhr(url, headers, file, progress) {
  return new Promise((resolve, reject) => {
    const xhr = new globalThis.XMLHttpRequest();
    xhr.open('POST', url);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener('progress', (e) => progress({ loaded: e.loaded, total: e.lengthComputable ? e.total : null }));
    xhr.addEventListener('load', () => resolve({ status: xhr.status, body: xhr.responseText }));
    xhr.addEventListener('error', () => reject(Object.assign(new Error('upload: network error'), { code: 'network', status: 0 })));
    xhr.addEventListener('abort', () => reject(Object.assign(new Error('upload: aborted'), { code: 'aborted', status: 0 })));
    xhr.send(file);
  });
}

/**
 * Node (no XMLHttpRequest): node:http(s), 64 KiB writes, progress as each is handed to
 * the socket, Content-Length set (the server takes no chunked bodies).
 */
async function uploadNode(url, headers, file, progress) {
  const bytes = file instanceof Uint8Array ? file : new Uint8Array(await file.arrayBuffer());
  const total = bytes.byteLength;
  const target = new URL(url);
  const name = target.protocol === 'https:' ? 'node:https' : 'node:http'; // a variable: bundlers leave it alone
  const http = await import(name);
  const CHUNK = 64 * 1024;
  return new Promise((resolve, reject) => {
    const req = http.request(target, { method: 'POST', headers: { ...headers, 'Content-Length': String(total) } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    // After an answer (a refusal may come before the whole body is sent) errors do not matter.
    req.on('error', (error) => reject(Object.assign(new Error(`upload: ${error.message}`), { code: 'network', status: 0 })));
    let at = 0;
    const writeMore = () => {
      while (at < total) {
        const end = Math.min(at + CHUNK, total);
        const more = req.write(bytes.subarray(at, end), () => progress({ loaded: end, total }));
        at = end;
        if (!more) {
          req.once('drain', writeMore);
          return;
        }
      }
      req.end();
    };
    writeMore();
  });
}

/** The `hello` frame for these credentials: `{token}` (token mode) or `{name, key}` (open mode). */
export function helloFrame(credentials, key) {
  if ('token' in credentials) return { type: 'hello', token: credentials.token };
  const hello = { type: 'hello', name: credentials.name };
  if (key) hello.key = key;
  return hello;
}

// Crockford's base32: no I, L, O or U, so a tag reads aloud without doubt.
const TAG_DIGITS = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/**
 * A short stable tag for user id `id` (6 characters, 30 bits of an FNV-1a hash of the
 * whole id). A name is not an identity: two authors called "alice" have different ids,
 * so their tags differ, online or not, and the page shows the tag next to every name.
 * It tells authors apart; it proves nothing: with about a billion tries anyone can make
 * an open-mode key whose tag matches. Only token mode says who someone is.
 */
/**
 * A message's reactions as a list: `[{emoji, count, mine, users}]` in the order they
 * were first made, from its `reactions` field (emoji → user ids); `mine` when `me` (a
 * user id) is among them.
 */
export function reactionsOf(msg, me) {
  const field = msg?.reactions;
  if (field === null || typeof field !== 'object') return [];
  return Object.entries(field)
    .filter(([, users]) => Array.isArray(users) && users.length > 0)
    .map(([emoji, users]) => ({ emoji, count: users.length, mine: users.includes(me), users: [...users] }));
}

/**
 * Applies a `react` event to a message object you keep (its `reactions` field), as the
 * server did: idempotent, so a stored copy that shows it already is unchanged.
 */
export function applyReaction(msg, { emoji, uid, on }) {
  const field = { ...(msg.reactions ?? {}) };
  const had = field[emoji] ?? [];
  const users = on ? (had.includes(uid) ? had : [...had, uid]) : had.filter((u) => u !== uid);
  if (users.length > 0) field[emoji] = users;
  else delete field[emoji];
  msg.reactions = field;
  return msg;
}

export function userTag(id) {
  let hash = 0x811c9dc5;
  for (let i = 0; i < id.length; i += 1) hash = Math.imul(hash ^ id.charCodeAt(i), 0x01000193) >>> 0;
  let tag = '';
  for (let bits = hash >>> 2, n = 0; n < 6; n += 1, bits >>>= 5) tag = TAG_DIGITS[bits & 31] + tag;
  return tag;
}

/**
 * Adds `tag` to what a server frame says about people: the author of a message (its
 * `uid`, here and in `messages` lists) and every user reference (`user`, `by`, and
 * `users` lists), so each event a caller sees carries it.
 */
function addTags(frame) {
  const tagUser = (user) => {
    if (user !== null && typeof user === 'object' && typeof user.id === 'string') user.tag = userTag(user.id);
  };
  const tagMessage = (msg) => {
    if (msg === null || typeof msg !== 'object') return;
    if (typeof msg.uid === 'string') msg.tag = userTag(msg.uid);
    tagUser(msg.user);
    tagUser(msg.by);
  };
  tagMessage(frame);
  for (const list of [frame.messages, frame.users]) {
    if (!Array.isArray(list)) continue;
    for (const item of list) (list === frame.users ? tagUser : tagMessage)(item);
  }
}

const IDENTITY_KEY = 'natter.identity';

/** The open-mode identity secret kept in `storage`, made on first use: 32 random hex digits. */
export function identityKey(storage) {
  let key = loadString(storage, IDENTITY_KEY);
  if (!/^[0-9a-f]{32}$/.test(key)) {
    const bytes = new Uint8Array(16);
    globalThis.crypto.getRandomValues(bytes);
    key = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    saveString(storage, IDENTITY_KEY, key);
  }
  return key;
}

/**
 * The runtime's WebSocket, else the `ws` package: looked up from this file
 * first, then from the current directory (a project that copied this file
 * but installed ws at its root).
 */
async function loadWebSocket() {
  if (typeof globalThis.WebSocket === 'function') return globalThis.WebSocket;
  const name = 'ws'; // a variable, so bundlers for the browser leave it alone
  let found = null;
  try {
    found = wsClass(await import(name));
  } catch {
    // Not next to this file; try the current directory below.
  }
  try {
    const { createRequire } = await import('node:module');
    const { pathToFileURL } = await import('node:url');
    const resolved = createRequire(`${process.cwd()}/`).resolve(name);
    found ??= wsClass(await import(pathToFileURL(resolved).href));
  } catch {
    // Reported below.
  }
  if (found === null) throw new Error('this runtime has no WebSocket: install the ws package (npm install ws) or pass options.WebSocket');
  return found;
}

/** The WebSocket class of the ws package, imported as ES module (named export) or CommonJS (default). */
function wsClass(module) {
  const candidate = module.WebSocket ?? module.default?.WebSocket ?? module.default;
  return typeof candidate === 'function' ? candidate : null;
}

function describeClose(code, reason, welcomed) {
  if (!welcomed) return 'could not connect';
  if (code === 1001) return 'server restarting';
  if (reason) return reason;
  return 'connection lost';
}

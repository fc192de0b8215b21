// TypeScript declarations of natter-client.js: every option, method, property and
// event of docs/CLIENT.md, with the frames of docs/PROTOCOL.md they carry. Frames
// may gain fields (the protocol is extended, never broken), so each frame type
// allows more than it names. tests/client/package.test.mjs checks these against
// the examples of docs/CLIENT.md with `tsc --noEmit`, and against the library's own
// event list and the doc's method table.

import type { StorageLike } from './storage.js';

export { MemoryStorage } from './storage.js';
export type { StorageLike } from './storage.js';

/** A user as frames name them; `tag` is added by the client (see `userTag`). */
export interface UserRef {
  id: string;
  name: string;
  tag: string;
  [field: string]: unknown;
}

/** A stored or live chat message (`msg` frame). */
export interface Message {
  type: 'msg';
  room: string;
  seq: number;
  /** The poster's own id for it (an unsent message's id). */
  id?: string;
  ts: number;
  user: string;
  uid: string;
  /** Six characters from `uid` (the client adds it). */
  tag: string;
  /** Absent once deleted. */
  text?: string;
  /** When it was last edited (ms). */
  edited?: number;
  deleted?: true;
  /** The message this one answers, quoted by the server (`deleted`: it was). */
  reply?: { seq: number; uid?: string; user?: string; quote?: string; deleted?: boolean; [field: string]: unknown };
  /** Emoji → the user ids who reacted, in order; absent when none. */
  reactions?: Record<string, string[]>;
  /** The ids of the users it mentions (checked by the server: users in the room). */
  mentions?: string[];
  /** Files posted with it (`send`'s `files`); fetch them through `fileUrls`. */
  files?: FileInfo[];
  [field: string]: unknown;
}

/** An uploaded file as `upload` answers it and messages describe it. */
export interface FileInfo {
  id: string;
  name: string;
  size: number;
  /** Sniffed from the bytes, never the client's word. */
  type: string;
  /** Images only. */
  width?: number;
  height?: number;
}

/** A `react` event: `uid`'s reaction `emoji` to message `of` is now `on` or off. */
export interface ReactEvent {
  type: 'react';
  room: string;
  seq: number;
  of: number;
  ts: number;
  user: string;
  uid: string;
  emoji: string;
  on: boolean;
  [field: string]: unknown;
}

/** One chip of `reactionsOf`. */
export interface ReactionChip {
  emoji: string;
  count: number;
  mine: boolean;
  users: string[];
}

/** An `edit` event: message `of` now reads `text`. */
export interface EditEvent {
  type: 'edit';
  room: string;
  seq: number;
  of: number;
  id?: string;
  ts: number;
  user: string;
  uid: string;
  text?: string;
  [field: string]: unknown;
}

/** A `delete` event: message `of` is deleted. */
export interface DeleteEvent {
  type: 'delete';
  room: string;
  seq: number;
  of: number;
  id?: string;
  ts: number;
  user: string;
  uid: string;
  [field: string]: unknown;
}

/** A moderator's action (`system` frame with a seq): a kick or a read-only change. */
export interface ModerationEvent {
  type: 'system';
  room: string;
  seq: number;
  event: 'kick' | 'read_only' | (string & {});
  user?: UserRef;
  by: UserRef;
  minutes?: number;
  read_only?: boolean;
  ts: number;
  [field: string]: unknown;
}

/** What a room's history holds: messages and the events that change them. */
export type Stored = Message | EditEvent | DeleteEvent | ReactEvent | ModerationEvent;

/** Any frame the server sends. */
export interface Frame {
  type: string;
  [field: string]: unknown;
}

export interface Welcome extends Frame {
  type: 'welcome';
  session: string;
  user: UserRef;
  role?: 'mod' | (string & {});
  heartbeat?: { interval_ms: number; timeout_ms: number };
  limits?: Limits;
}

export interface Limits {
  max_text: number;
  rate_per_s?: number;
  max_rooms?: number;
  max_dms?: number;
  [limit: string]: unknown;
}

export type ConnectionState = 'idle' | 'connecting' | 'online' | 'reconnecting' | 'offline' | 'closed';
export type Transport = 'websocket' | 'sse';

/** A message stored as unsent (what `send` returns). */
export interface Unsent {
  id: string;
  room: string;
  text: string;
  ts: number;
  /** The seq of the message it answers (`send`'s `replyTo`). */
  reply_to?: number;
  /** The ids of the users it mentions (`send`'s `mentions`). */
  mentions?: string[];
}

export interface PresenceChange {
  event: 'join' | 'leave' | 'nick';
  user: UserRef;
  /** The old name, on `nick`. */
  before?: string;
  mine: boolean;
}

/** The detail of each event, by name. */
export interface NatterEvents {
  state: { state: ConnectionState; reason: string; retryAt: number | null; transport: Transport };
  welcome: Welcome;
  joined: {
    room: string;
    head: number;
    users: UserRef[];
    users_total: number;
    read_seq: number | null;
    /** Messages above `read_seq` that mention you (at most 100: that many or more); null where markers are not kept. */
    mentions_unread: number | null;
    private?: boolean;
    title?: string | null;
    read_only?: boolean;
    epoch?: string;
    [field: string]: unknown;
  };
  /** `mentions_unread`: the mentions of you left above the marker. */
  read: { room: string; seq: number; mentions_unread: number | null };
  dm: { room: string; user: UserRef };
  invited: { room: string; by: UserRef; title: string | null };
  blocked: { users: string[] };
  'dm-closed': { room: string };
  moderation: ModerationEvent;
  history: { room: string; messages: Stored[]; complete: boolean; resumed: boolean; reset: boolean };
  older: { room: string; before: number; messages: Message[]; firstSeq?: number; complete: boolean };
  search: { room: string; q: string; before?: number; messages: Message[]; complete: boolean };
  message: Message;
  edit: EditEvent;
  delete: DeleteEvent;
  react: ReactEvent;
  'file-urls': { room: string; urls: Record<string, string>; exp: number };
  ack: { id: string; room: string; seq: number; dup: boolean };
  failed: Unsent & { code: string; message: string };
  presence: { room: string; users: UserRef[]; change: PresenceChange | null };
  typing: { room: string; user: UserRef };
  error: { code: string; message: string; ref?: string | null };
  down: { code: number; reason: string };
  'credentials-needed': { auth: 'open' | 'token' | null; reason: string };
  frame: Frame;
}

export type NatterEvent = keyof NatterEvents;

/** The event names, as the library lists them. */
export const EVENTS: readonly NatterEvent[];
/** What a room name may be. */
export const ROOM_NAME: RegExp;

export type Credentials = { name: string } | { token: string };

export interface NatterClientOptions {
  /** `http(s)://host:port` (its /config.json is read) or `ws(s)://host:port/ws`; a page's `location.href` by default. */
  url?: string;
  /** Display name (open mode). */
  name?: string;
  /** A JWT (token mode). */
  token?: string;
  /** Asked on every connect; `null` stops the client (`credentials-needed`). */
  credentials?: (auth: 'open' | 'token') => Credentials | null;
  /** Rooms to join, and to rejoin on every reconnect. */
  rooms?: string[];
  /** Where unsent messages (and the open-mode identity) are kept; memory by default. */
  storage?: StorageLike;
  /** Open mode: the secret the server derives the user id from. */
  identityKey?: string;
  unsentKey?: string;
  backoff?: { baseMs?: number; capMs?: number };
  openTimeoutMs?: number;
  stableAfterMs?: number;
  /** A WebSocket class to use instead of the runtime's (or the `ws` package's). */
  WebSocket?: new (url: string, ...rest: any[]) => any;
  fetch?: typeof fetch;
  /** `false`: never fall back to SSE+POST. */
  fallback?: { afterFailures?: number; retryWebSocketMs?: number } | false;
  online?: () => boolean;
}

/** A room as the client holds it (`room(name)`). */
export interface RoomView {
  name: string;
  joined: boolean;
  lastSeq: number;
  epoch: string | null;
  readSeq: number | null;
  /** Unread mentions of you: the server's count (`joined`, `read`) plus live ones since. */
  mentionsUnread: number | null;
  users: Map<string, string>;
}

export class NatterClient {
  constructor(options?: NatterClientOptions);

  readonly state: ConnectionState;
  readonly me: UserRef | null;
  readonly auth: 'open' | 'token' | null;
  readonly limits: Limits;
  readonly transport: Transport;
  /** The names of the rooms the client joins. */
  readonly rooms: string[];
  /** The user ids you blocked, as the server last said. */
  readonly blocked: Set<string>;

  on<E extends NatterEvent>(event: E, listener: (detail: NatterEvents[E]) => void): () => void;
  off<E extends NatterEvent>(event: E, listener: (detail: NatterEvents[E]) => void): void;
  once<E extends NatterEvent>(event: E, listener: (detail: NatterEvents[E]) => void): () => void;
  next<E extends NatterEvent>(event: E, filter?: (detail: NatterEvents[E]) => boolean): Promise<NatterEvents[E]>;

  connect(): this;
  close(): void;
  retryNow(): void;
  networkChanged(online: boolean): void;

  room(name: string): RoomView | undefined;
  join(room: string, options?: { private?: boolean }): void;
  /** Drops the room's unsent messages and returns them. */
  leave(room: string): Unsent[];
  createPrivate(title: string): Promise<string>;
  dm(userId: string): boolean;
  block(userId: string): boolean;
  unblock(userId: string): boolean;
  closeDm(room: string): boolean;
  invite(room: string, userId: string): boolean;
  kick(room: string, userId: string, minutes: number): boolean;
  setReadOnly(room: string, on: boolean): boolean;

  /** `replyTo`: the seq of the message it answers; `mentions`: ids of users in the room it mentions (at most 20). */
  send(room: string, text: string, options?: { replyTo?: number; mentions?: string[]; files?: string[] }): Unsent;
  /** Uploads a file (a Blob or File in a browser; a Blob, Buffer or Uint8Array with `name` in Node), with progress. */
  upload(
    file: Blob | Uint8Array,
    options?: { name?: string; onProgress?: (progress: { loaded: number; total: number }) => void },
  ): Promise<FileInfo>;
  /** Signed, expiring URLs for files posted in `room`, by file id (`exp`: Unix seconds). */
  fileUrls(room: string, ids: string[]): Promise<{ urls: Record<string, string>; exp: number }>;
  unsent(room?: string): Unsent[];
  /** Forgets an unsent message; returns it (undefined when there was none). */
  discard(id: string): Unsent | undefined;
  typing(room: string): boolean;
  nick(name: string): boolean;
  edit(room: string, seq: number, text: string): Promise<{ seq: number }>;
  delete(room: string, seq: number): Promise<{ seq: number }>;
  markRead(room: string, seq?: number): boolean;
  /** Toggles your reaction `emoji` to message `seq`. */
  react(room: string, seq: number, emoji: string): Promise<{ seq: number; on: boolean }>;
  older(room: string, options: { before: number; limit?: number }): Promise<NatterEvents['older']>;
  search(room: string, q: string, options?: { before?: number; limit?: number }): Promise<NatterEvents['search']>;
  sendFrame(frame: { type: string; [field: string]: unknown }): boolean;
}

/** A message's reactions as chips, in the order they were first made. */
export function reactionsOf(msg: { reactions?: Record<string, string[]> } | null | undefined, me: string): ReactionChip[];
/** Applies a `react` event to a message you keep (idempotent); returns the message. */
export function applyReaction<M extends { reactions?: Record<string, string[]> }>(
  msg: M,
  event: { emoji: string; uid: string; on: boolean },
): M;
/** Six characters derived from a user id, to tell two authors of one name apart. */
export function userTag(id: string): string;
/** The open-mode identity key kept in `storage` (made on first use). */
export function identityKey(storage: StorageLike): string;
/** The WebSocket URL to connect to, from the server's `ws_url` and the page's URL. */
export function buildUrl(wsUrl: string, base: string): string;
/** The first frame a socket sends (credentials out of the URL). */
export function helloFrame(credentials: Credentials, key?: string): { type: 'hello'; [field: string]: unknown };

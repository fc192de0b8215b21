// natter page: wires the client library (js/natter-client.js) to the DOM.
//
// The library does everything on the wire: reconnecting, the heartbeat,
// joining every room (with `since` when resuming), and sending the unsent
// messages, oldest first, each with the id it was given when typed, once the
// room's history is in; it also paces typing notices and read markers, and keeps
// each room's newest seq. This file only turns its events into DOM (js/room.js
// draws a room) and the user's actions into its calls. It must never build
// protocol frames, time what it sends, or keep a second cursor.

import { NatterClient, ROOM_NAME, userTag } from './js/natter-client.js';
import { Room } from './js/room.js';
import { loadJson, saveJson, loadString, saveString } from './js/storage.js';

// Scroll-back: a page of this many, asked for when the reader is this close to the top.
const OLDER_PAGE = 50;
const OLDER_WITHIN_PX = 80;
const SEARCH_PAGE = 50;
const DEFAULT_ROOM = 'lobby';
// `unsent` keeps the key the page used before the library, so messages
// saved by an older page are still sent.
const KEYS = { name: 'natter.name', token: 'natter.token', rooms: 'natter.rooms', active: 'natter.active', unsent: 'natter.outbox' };
// Only permanent refusals reach the page: the library resends `unavailable` and
// `rate_limited` by itself with the same id.
const ERROR_TEXT = {
  too_long: 'Not sent: the message is too long.',
  not_joined: 'Not sent: you are not in this room.',
  bad_field: 'Not sent: the server rejected it.',
  forbidden: 'Not sent: not allowed.',
};

const $ = (id) => document.getElementById(id);

const state = {
  me: null,
  role: null, // 'mod' for a moderator (from welcome)
  dmWanted: null, // the user whose DM we asked for: shown once the server names the room
  creating: 0, // private rooms asked for (createPrivate) and not yet answered
  blocked: new Set(), // user ids we blocked (from the server, on every device): their messages are hidden
  auth: null,
  maxText: 4000,
  rooms: new Map(),
  active: null,
  statusDetail: { state: 'idle', reason: '', retryAt: null },
  replyTo: null, // {room, seq}: the composer's next message answers it
};

let client = null; // the NatterClient, made in boot() once the saved rooms are known

// ---------- rooms ----------

function ensureRoom(name) {
  let room = state.rooms.get(name);
  if (room) return room;
  room = new Room(name, $('message-panes'));
  room.onTypingChange = (changed) => {
    if (changed.name === state.active) renderTyping();
  };
  room.onLoadOlder = loadOlder;
  room.fileUrls = async (ids) => (await client.fileUrls(room.name, ids)).urls;
  room.actionsFor = (msg) => {
    if (msg.mine || msg.uid === state.me?.id) return ['reply', 'edit', 'delete'];
    return state.role === 'mod' ? ['reply', 'delete'] : ['reply'];
  };
  room.onQuote = (seq) => showMessage(room, seq);
  room.meId = () => state.me?.id ?? null;
  room.onReact = (seq, emoji) => {
    client.react(room.name, seq, emoji).catch(() => {}); // a refusal shows as the server's notice
  };
  room.onAction = (action, seq, el) => {
    if (action === 'reply') startReply(room, seq, el);
    else if (action === 'edit') startEdit(room, seq, el);
    else confirmDelete(room, seq, el);
  };
  room.pane.addEventListener('scroll', () => {
    if (room.name === state.active && room.isAtBottom()) {
      $('new-messages').hidden = true;
      markReadSoon(room);
    }
    if (room.pane.scrollTop < OLDER_WITHIN_PX) loadOlder(room);
  });
  state.rooms.set(name, room);
  saveRoomList();
  return room;
}

function saveRoomList() {
  saveJson(localStorage, KEYS.rooms, [...state.rooms.keys()]);
}

function joinRoom(name, options) {
  const room = ensureRoom(name);
  client.join(name, options);
  return room;
}

/** A DM room the server named (opened by us or the other person, or known from before). */
function onDm({ room: name, user }) {
  const known = state.rooms.has(name);
  const room = ensureRoom(name);
  room.dm = { id: user.id, name: user.name };
  if (!known) client.join(name);
  if (state.dmWanted === user.id) {
    state.dmWanted = null;
    setActive(name);
  } else {
    renderRoomList();
  }
}

/** Someone let us into their private room: it joins the list, with a note saying who. */
function onInvited({ room: name, by, title }) {
  if (!state.rooms.has(name)) joinRoom(name);
  showNotice(`${by.name} invited you to ${title ?? name}.`);
}

/** The invite form: a name of someone seen in any room, or a user id. */
function inviteTarget(text) {
  for (const room of state.rooms.values()) {
    for (const [id, name] of room.users) if (name === text && id !== state.me?.id) return id;
  }
  return text;
}

/** The users we blocked changed: their messages are hidden in every room. */
function onBlocked({ users }) {
  state.blocked = new Set(users);
  for (const el of $('message-panes').querySelectorAll('li.msg')) hideIfBlocked(el);
  renderPeople();
}

/** A message of a blocked author is hidden (`.blocked-author`, style.css); shown again on unblock. */
function hideIfBlocked(el) {
  el.classList.toggle('blocked-author', state.blocked.has(el.dataset.uid));
}

/** Every message added to any pane, live or from history, is checked against the blocked users. */
function watchBlockedAuthors() {
  new MutationObserver((changes) => {
    if (state.blocked.size === 0) return;
    for (const change of changes) {
      for (const node of change.addedNodes) {
        if (node instanceof HTMLElement && node.matches('li.msg')) hideIfBlocked(node);
      }
    }
  }).observe($('message-panes'), { childList: true, subtree: true });
}

/** A DM's ×: closed on every device until a new message arrives (left here at once if offline). */
function closeDm(name) {
  if (!client.closeDm(name)) leaveRoom(name);
}

function leaveRoom(name) {
  const room = state.rooms.get(name);
  if (!room) return;
  client.leave(name);
  forgetRoom(name);
}

/** Takes a room out of the page (the client has left it). */
function forgetRoom(name) {
  const room = state.rooms.get(name);
  if (!room) return;
  room.destroy();
  state.rooms.delete(name);
  saveRoomList();
  if (state.active === name) setActive(state.rooms.keys().next().value ?? null);
  else renderRoomList();
}

function setActive(name) {
  for (const room of state.rooms.values()) room.pane.hidden = room.name !== name;
  state.active = name;
  saveString(localStorage, KEYS.active, name ?? '');
  const room = name === null ? null : state.rooms.get(name);
  $('empty-state').hidden = room !== null;
  closeSearch();
  $('room-title').textContent = room ? roomTitle(room) : '';
  updateCounter();
  $('invite-form').hidden = !(room?.private && !room.dm);
  $('new-messages').hidden = true;
  if (room) {
    room.unread = 0;
    room.scrollToBottom();
    fillPane(room);
    markReadSoon(room);
  }
  renderRoomList();
  renderPeople();
  renderTyping();
}

/** Runs `change` on a room's pane, keeping the reader's scroll position honest. */
function withScroll(room, change) {
  const stick = room.isAtBottom();
  const grew = change();
  if (!grew) return;
  if (stick) room.scrollToBottom();
  else if (room.name === state.active) $('new-messages').hidden = false;
}

/** Asks for the page of messages before the oldest one shown, once at a time. */
async function loadOlder(room) {
  if (room.older !== 'more' || client.state !== 'online') return;
  // Paging goes on from the oldest seq seen: a message, or an edit/delete event
  // (those are not shown, the messages they change already are).
  const newest = client.room(room.name)?.lastSeq ?? 0;
  const before = Math.min(room.olderFrom ?? Infinity, Number.isFinite(room.firstSeq) ? room.firstSeq : newest + 1);
  if (before <= 1) {
    room.setOlder('beginning');
    return;
  }
  room.setOlder('loading');
  try {
    const page = await client.older(room.name, { before, limit: OLDER_PAGE });
    room.prependOlder(page.messages, state.me);
    room.olderFrom = Math.min(before, page.firstSeq ?? before);
    const done = page.complete || page.firstSeq === undefined || room.olderFrom <= 1;
    room.setOlder(done ? 'beginning' : 'more');
  } catch {
    room.setOlder('more'); // went offline meanwhile: the button asks again
    return;
  }
  fillPane(room);
}

/** A pane too short to scroll would never ask for more: fill the active one. */
function fillPane(room) {
  const p = room.pane;
  if (room.name === state.active && p.scrollHeight <= p.clientHeight + OLDER_WITHIN_PX) loadOlder(room);
}

// ---------- replies ----------

/** The composer's next message answers message `seq` of `room` (shown above it until sent or cancelled). */
function startReply(room, seq, el) {
  const user = el.querySelector('.msg-author')?.textContent ?? '';
  const text = el.rawText ?? el.querySelector('.msg-text').textContent;
  state.replyTo = { room: room.name, seq };
  $('reply-text').textContent = `Replying to ${user}: ${text.length > 80 ? `${text.slice(0, 80)}…` : text}`;
  $('reply-bar').hidden = false;
  $('composer-input').focus();
}

function cancelReply() {
  state.replyTo = null;
  $('reply-bar').hidden = true;
}

/**
 * Scrolls to message `seq` of `room` (a reply's original), loading older pages until
 * it is shown or the room's beginning is reached.
 */
async function showMessage(room, seq) {
  for (let pages = 0; pages < 100 && !room.reveal(seq); pages += 1) {
    if (room.older === 'beginning' || client.state !== 'online') {
      showNotice('The original message is no longer available.');
      return;
    }
    if (room.older === 'loading') await client.next('older', (o) => o.room === room.name);
    else await loadOlder(room);
  }
}

// ---------- edits and deletions ----------

/** Edits message `seq` in place: a text box with Save and Cancel (Enter, Escape). */
function startEdit(room, seq, el) {
  const existing = el.querySelector('.msg-edit-form');
  if (existing) {
    existing.querySelector('textarea').focus();
    return;
  }
  const form = document.createElement('form');
  form.className = 'msg-edit-form';
  const box = document.createElement('textarea');
  box.rows = 2;
  box.value = el.rawText ?? el.querySelector('.msg-text').textContent;
  box.setAttribute('aria-label', `New text of message ${seq}`);
  const save = document.createElement('button');
  save.type = 'submit';
  save.textContent = 'Save';
  const cancel = document.createElement('button');
  cancel.type = 'button';
  cancel.textContent = 'Cancel';
  const error = document.createElement('span');
  error.className = 'msg-error';
  error.setAttribute('role', 'alert');
  form.append(box, save, cancel, error);
  el.append(form);
  box.focus();
  const close = () => form.remove();
  cancel.addEventListener('click', close);
  box.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') close();
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = box.value;
    if (text.trim() === '' || [...text].length > state.maxText) return;
    save.disabled = true;
    try {
      await client.edit(room.name, seq, text);
      close(); // the edit event, to every page, changes the text
    } catch (e) {
      error.textContent = `Not saved: ${e.message}`;
      save.disabled = false;
    }
  });
}

/** Deletes message `seq` after a second click on the same button. */
async function confirmDelete(room, seq, el) {
  const button = el.querySelector('.msg-actions [data-action="delete"]');
  if (button && button.dataset.armed !== 'true') {
    button.dataset.armed = 'true';
    button.textContent = 'Confirm delete';
    return;
  }
  try {
    await client.delete(room.name, seq);
  } catch (e) {
    showNotice(`Not deleted: ${e.message}`);
    if (button) {
      button.dataset.armed = 'false';
      button.textContent = 'Delete';
    }
  }
}

// ---------- search ----------

/** Searches the active room; `more` asks for the matches older than those shown. */
async function runSearch(more = false) {
  const room = state.rooms.get(state.active);
  const q = $('search-input').value.trim();
  if (!room || q === '') return;
  const list = $('search-list');
  const before = more ? Number(list.lastElementChild?.dataset.seq) : undefined;
  if (!more) list.replaceChildren();
  $('search-results').hidden = false;
  $('search-summary').textContent = 'Searching…';
  $('search-more').hidden = true;
  try {
    const found = await client.search(room.name, q, { before, limit: SEARCH_PAGE });
    for (const msg of found.messages) list.append(searchResult(msg));
    const n = list.children.length;
    $('search-summary').textContent = n === 0 ? `No messages in # ${room.name} match “${q}”.`
      : `${n} message${n === 1 ? '' : 's'} in # ${room.name} match “${q}”${found.complete ? '' : ' (more older)'}.`;
    $('search-more').hidden = found.complete || found.messages.length === 0;
  } catch (error) {
    $('search-summary').textContent = `Search failed: ${error.message}`;
  }
}

function searchResult(msg) {
  const li = document.createElement('li');
  li.dataset.seq = String(msg.seq);
  const who = document.createElement('span');
  who.className = 'msg-author';
  who.textContent = msg.user ?? '';
  const when = document.createElement('time');
  when.className = 'msg-time';
  when.textContent = new Date(msg.ts).toLocaleString();
  const text = document.createElement('div');
  text.className = 'msg-text';
  text.textContent = String(msg.text ?? '');
  li.append(who, ' ', when, text);
  return li;
}

function closeSearch() {
  $('search-results').hidden = true;
  $('search-list').replaceChildren();
}

// ---------- sending ----------

/**
 * Uploads files (from the attach button, a paste or a drop) one after another, the bar
 * showing how far each got, and posts each to the active room once it is stored.
 */
async function uploadFiles(fileList) {
  const files = [...fileList];
  const roomName = state.active;
  if (files.length === 0 || roomName === null) return;
  const bar = $('upload-progress');
  for (const file of files) {
    bar.hidden = false;
    bar.value = 0;
    try {
      const desc = await client.upload(file, {
        onProgress: ({ loaded, total }) => { bar.value = total ? loaded / total : 0; },
      });
      queueMessage(roomName, '', { files: [desc.id] }, [desc]);
    } catch (error) {
      showNotice(`Not uploaded: ${file.name || 'the file'}: ${error.message}`);
    }
  }
  bar.hidden = true;
}

function queueMessage(roomName, text, options = {}, files = []) {
  const room = ensureRoom(roomName);
  const entry = client.send(roomName, text, options);
  withScroll(room, () => {
    // Our own files show from their descriptions; their URLs come once the message is stored.
    room.addPending(files.length > 0 ? { ...entry, files } : entry, state.me);
    return true;
  });
  room.scrollToBottom();
}

/** The user typed in the active room: the library paces the notices. */
function sendTyping() {
  if (state.active !== null) client.typing(state.active);
}

// ---------- events from the client library ----------

function onWelcome(frame) {
  state.me = frame.user;
  state.role = frame.role ?? null;
  state.maxText = frame.limits?.max_text ?? state.maxText;
  $('me-name').textContent = state.me.name;
  $('me-section').hidden = false;
  $('nick-form').hidden = client.auth !== 'open';
  hideNotice();
  updateCounter();
  showNotifyButton();
}

// Each takes the event's detail and the page's Room for detail.room (which
// exists: the page and the library add and drop rooms together).
const handlers = {
  joined({ users, read_seq: readSeq, mentions_unread: mentionsUnread, private: isPrivate, title, read_only: readOnly }, room) {
    // The server counts the mentions of us above our marker, so a reload shows them.
    if (Number.isInteger(mentionsUnread)) room.mentioned = mentionsUnread;
    room.readSeq = readSeq;
    room.setUsers(users);
    room.private = isPrivate;
    room.title = title;
    room.readOnly = readOnly;
    if (room.name === state.active) updateCounter();
    if (room.name === state.active) {
      $('room-title').textContent = roomTitle(room);
      $('invite-form').hidden = !(room.private && !room.dm);
    }
    renderRoomList();
    room.readSeq = readSeq;
    room.dividerDue = readSeq !== null;
    if (room.name === state.active) renderPeople();
  },

  history({ messages, complete, resumed, reset }, room) {
    if (reset) {
      // The server's history of the room is a new one: what we showed is gone there.
      room.clearHistory();
      room.olderFrom = undefined;
      room.addNote('The server\'s history of this room was reset; showing it as it is now.', 'gap-note');
    }
    withScroll(room, () => {
      if (!complete) room.addNote('Some older messages are no longer available.', 'gap-note');
      let added = 0;
      for (const msg of messages) {
        if (room.addMessage(msg, state.me)) {
          added += 1;
          if (resumed && msg.uid !== state.me?.id) countUnread(room);
        }
      }
      return added > 0 || !complete;
    });
    if (room.firstSeq <= 1 || room.seqs.size === 0) room.setOlder('beginning');
    else fillPane(room);
    if (room.readSeq !== null) {
      // The server keeps read markers: unread is what came after ours, on any device.
      if (room.dividerDue) room.showDivider(room.readSeq, state.me);
      room.dividerDue = false;
      setUnread(room, room.readSeq);
      markReadSoon(room);
    }
  },

  message(frame, room) {
    withScroll(room, () => room.addMessage(frame, state.me));
    markReadSoon(room);
    if (frame.uid === state.me?.id) return;
    notifyIfWanted(frame, room); // first: the badge countUnread draws shows the mention
    countUnread(room);
    if (room.name === state.active) announce(`${frame.user}: ${frame.text}`);
  },

  /** Our message `id` is now `seq` on the server (ack, or its copy came back first). */
  ack({ id, seq }, room) {
    withScroll(room, () => {
      room.settle(id, seq);
      return false;
    });
  },

  failed(entry, room) {
    room.fail(entry.id, ERROR_TEXT[entry.code] ?? `Not sent: ${entry.message ?? entry.code}`, () => {
      queueMessage(entry.room, entry.text, { ...(entry.reply_to ? { replyTo: entry.reply_to } : {}), ...(entry.mentions ? { mentions: entry.mentions } : {}) });
    });
  },

  presence({ change }, room) {
    if (change === null) return; // the joined snapshot: handled by `joined`
    const { event, user, mine } = change;
    if (event === 'join') {
      room.users.set(user.id, user.name);
      if (!mine) room.addNote(`${user.name} joined`);
    } else if (event === 'leave') {
      room.users.delete(user.id);
      room.clearTyping(user.id);
      if (!mine) room.addNote(`${user.name} left`);
    } else if (event === 'nick') {
      const before = room.users.get(user.id) ?? 'someone';
      room.users.set(user.id, user.name);
      room.addNote(`${before} is now known as ${user.name}`);
      if (mine) renameMe(user.name);
    }
    if (room.name === state.active) renderPeople();
  },

  edit(frame, room) {
    room.applyEdit(frame.of, frame.text, frame.ts);
  },

  /** A moderator's action: a note in the room; a kick of us takes the room away. */
  moderation({ event, user, by, minutes, read_only: readOnly }, room) {
    if (event === 'kick' && user?.id === state.me?.id) {
      room.destroy();
      state.rooms.delete(room.name);
      saveRoomList();
      if (state.active === room.name) setActive(state.rooms.keys().next().value ?? null);
      else renderRoomList();
      showNotice(`${by.name} removed you from ${room.name} for ${minutes} minute${minutes === 1 ? '' : 's'}.`);
      return;
    }
    if (event === 'kick') room.addNote(`${by.name} removed ${user.name} for ${minutes} minute${minutes === 1 ? '' : 's'}`);
    if (event === 'read_only') {
      room.readOnly = readOnly;
      room.addNote(readOnly ? `${by.name} made this room read-only` : `${by.name} opened this room to everyone again`);
      if (room.name === state.active) updateCounter();
    }
  },

  delete(frame, room) {
    room.applyDelete(frame.of);
  },

  react(frame, room) {
    room.applyReaction(frame.of, frame);
  },

  /** Our read marker moved, maybe on another device: what is read there is read here. */
  read({ seq, mentions_unread: mentionsUnread }, room) {
    room.readSeq = seq;
    // Read on any device: the mentions left are the server's count.
    if (Number.isInteger(mentionsUnread)) room.mentioned = mentionsUnread;
    setUnread(room, seq);
    renderRoomList();
  },

  typing({ user }, room) {
    room.showTyping(user);
  },
};

function onRoomEvent(name, detail) {
  // The room createPrivate() made: the library names it with this first `joined`.
  const created = name === 'joined' && detail.private && state.creating > 0 && !state.rooms.has(detail.room);
  const room = created ? ensureRoom(detail.room) : state.rooms.get(detail.room);
  if (room) handlers[name](detail, room); // else: a room we have since left
}

// ---------- mentions and notifications ----------

/** The ids of the room's users whose `@name` the text holds (the server checks them again). */
function mentionsIn(room, text) {
  const ids = [];
  for (const [id, name] of room.users) {
    if (id !== state.me?.id && text.includes(`@${name}`)) ids.push(id);
  }
  return ids.slice(0, 20);
}

/** The composer's `@prefix` before the caret: a list of the room's users whose name starts with it. */
function suggestMentions() {
  const input = $('composer-input');
  const list = $('mention-list');
  const room = state.rooms.get(state.active);
  const typed = /(^|\s)@([^\s@]*)$/.exec(input.value.slice(0, input.selectionStart));
  list.replaceChildren();
  if (!room || !typed) {
    list.hidden = true;
    return;
  }
  const prefix = typed[2].toLowerCase();
  const names = [...room.users.entries()]
    .filter(([id, name]) => id !== state.me?.id && name.toLowerCase().startsWith(prefix))
    .sort((a, b) => a[1].localeCompare(b[1]))
    .slice(0, 8);
  for (const [id, name] of names) {
    const li = document.createElement('li');
    const pick = document.createElement('button');
    pick.type = 'button';
    pick.className = 'mention-option';
    pick.dataset.uid = id;
    pick.textContent = `@${name}`;
    pick.addEventListener('click', () => {
      const caret = input.selectionStart;
      const start = caret - typed[2].length - 1;
      input.value = `${input.value.slice(0, start)}@${name} ${input.value.slice(caret)}`;
      input.selectionStart = input.selectionEnd = start + name.length + 2;
      list.hidden = true;
      input.focus();
      updateCounter();
    });
    li.append(pick);
    list.append(li);
  }
  list.hidden = names.length === 0;
}

/** A DM or a mention of us raises a browser notification while the tab is hidden (once the user allowed them). */
function notifyIfWanted(frame, room) {
  const mentioned = Array.isArray(frame.mentions) && frame.mentions.includes(state.me?.id);
  // The library adds a live mention to the server's count; without markers we count.
  if (mentioned) room.mentioned = client.room(room.name)?.mentionsUnread ?? (room.mentioned ?? 0) + 1;
  if (!(mentioned || room.dm) || document.visibilityState !== 'hidden') return;
  if (typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
  const where = room.dm ? 'sent you a message' : `mentioned you in # ${room.name}`;
  const note = new Notification(`${frame.user} ${where}`, { body: String(frame.text ?? '').slice(0, 200), tag: `${room.name}:${frame.seq}` });
  note.onclick = () => {
    window.focus();
    setActive(room.name);
  };
}

/** The tab's title shows how many unread messages wait in all rooms. */
function renderTitle() {
  let total = 0;
  for (const room of state.rooms.values()) total += room.unread;
  document.title = total > 0 ? `(${total}) natter` : 'natter';
}

function showNotifyButton() {
  const button = $('notify-button');
  button.hidden = typeof Notification === 'undefined' || Notification.permission !== 'default';
}

function countUnread(room) {
  if (room.name === state.active) return;
  room.unread += 1;
  renderRoomList();
}

/** Unread = the shown messages from others after `seq` (none in the room being read). */
function setUnread(room, seq) {
  const unread = room.name === state.active && seenNow(room) ? 0 : room.countAfter(seq, state.me);
  if (unread === room.unread) return;
  room.unread = unread;
  renderRoomList();
}

/** Whether the reader is looking at the room's newest messages right now. */
function seenNow(room) {
  return room.name === state.active && document.visibilityState === 'visible' && room.isAtBottom();
}

/**
 * Tells the server (and so the user's other devices) that the active room is read, up
 * to the newest message, when the reader is looking at it. The library paces the
 * markers; its `read` event moves ours.
 */
function markReadSoon(room) {
  if (seenNow(room)) client.markRead(room.name);
}

function renameMe(name) {
  state.me = { ...state.me, name };
  $('me-name').textContent = name;
  if (client.auth === 'open') saveString(localStorage, KEYS.name, name);
}

// ---------- credentials ----------

function readCredentials(auth) {
  state.auth = auth;
  if (auth === 'token') {
    const token = loadString(sessionStorage, KEYS.token);
    return token ? { token } : null;
  }
  const name = loadString(localStorage, KEYS.name);
  return name ? { name } : null;
}

function showLogin({ auth, reason }) {
  if (auth === 'token') saveString(sessionStorage, KEYS.token, '');
  $('login-reason').textContent = reason ?? '';
  $('login-name-field').hidden = auth === 'token';
  $('login-token-field').hidden = auth !== 'token';
  $('login-name').required = auth !== 'token';
  $('login-token').required = auth === 'token';
  $('login-name').value = loadString(localStorage, KEYS.name);
  // Modal: the room form, the composer and everything else stay out of reach (and of
  // the Tab order) until the user has signed in.
  if (!$('login').open) $('login').showModal();
  (auth === 'token' ? $('login-token') : $('login-name')).focus();
}

function submitLogin(event) {
  event.preventDefault();
  if (state.auth === 'token') {
    const token = $('login-token').value.trim();
    if (!token) return;
    saveString(sessionStorage, KEYS.token, token);
  } else {
    const name = $('login-name').value.trim();
    if (!name) return;
    saveString(localStorage, KEYS.name, name);
  }
  $('login').close();
  client.connect();
}

// ---------- rendering ----------

function renderStatus() {
  const { state: s, reason, retryAt, transport } = state.statusDetail;
  const el = $('status');
  el.dataset.state = s;
  el.dataset.transport = transport ?? 'websocket';
  let text;
  if (s === 'online') text = transport === 'sse' ? 'Online · HTTP fallback (SSE)' : 'Online · WebSocket';
  else if (s === 'connecting') text = 'Connecting…';
  else if (s === 'reconnecting') {
    const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
    text = `Reconnecting in ${seconds} s`;
  } else if (s === 'offline') text = reason ? `Offline: ${reason}` : 'Offline';
  else text = 'Not connected';
  $('status-text').textContent = text;
  el.title = reason && s !== 'online' ? reason : '';
  $('retry-now').hidden = !(retryAt !== null && (s === 'reconnecting' || s === 'offline'));
}

function renderRoomList() {
  renderTitle();
  $('room-list').replaceChildren();
  $('dm-list').replaceChildren();
  for (const room of state.rooms.values()) {
    // Rooms and direct messages are listed apart; a DM is shown by the other person's name.
    const list = room.dm ? $('dm-list') : $('room-list');
    const li = document.createElement('li');
    li.className = 'room-item';
    li.dataset.room = room.name;

    const open = document.createElement('button');
    open.type = 'button';
    open.className = 'room-button';
    open.dataset.room = room.name;
    open.setAttribute('aria-current', String(room.name === state.active));
    const label = document.createElement('span');
    label.className = 'room-name';
    label.textContent = roomTitle(room);
    const unread = document.createElement('span');
    unread.className = 'unread';
    unread.dataset.count = String(room.unread);
    unread.textContent = String(room.unread);
    unread.setAttribute('aria-label', `${room.unread} unread`);
    // Without read markers a read room has no mentions left; with them the server says.
    if (room.unread === 0 && room.readSeq === null) room.mentioned = 0;
    if (room.mentioned > 0) {
      unread.dataset.mention = 'true';
      unread.dataset.mentions = String(room.mentioned);
      unread.textContent = `@${room.unread}`;
      const times = room.mentioned >= 100 ? '100 or more times' : room.mentioned === 1 ? 'once' : `${room.mentioned} times`;
      unread.setAttribute('aria-label', `${room.unread} unread, you were mentioned ${times}`);
    }
    open.append(label, unread);
    open.addEventListener('click', () => {
      setActive(room.name);
      closeSidebar();
    });

    const leave = document.createElement('button');
    leave.type = 'button';
    leave.className = 'leave-button';
    leave.textContent = '×';
    leave.setAttribute('aria-label', `Leave ${room.dm ? `the conversation with ${room.dm.name}` : room.name}`);
    leave.addEventListener('click', () => (room.dm ? closeDm(room.name) : leaveRoom(room.name)));

    li.append(open, leave);
    list.append(li);
  }
}

function renderPeople() {
  const room = state.rooms.get(state.active);
  const list = $('user-list');
  list.replaceChildren();
  const users = room ? [...room.users.entries()] : [];
  users.sort((a, b) => a[1].localeCompare(b[1]));
  for (const [id, name] of users) {
    const li = document.createElement('li');
    li.dataset.uid = id;
    // A name is not an identity: two people may both be "alice"; the tag from the id
    // (as in the messages) tells them apart.
    const shown = `${name} #${userTag(id)}`;
    const label = document.createElement('span');
    label.className = 'user-name';
    label.textContent = id === state.me?.id ? `${name} (you)` : name;
    const tag = document.createElement('span');
    tag.className = 'user-tag';
    tag.textContent = `#${userTag(id)}`;
    li.dataset.tag = userTag(id);
    li.append(label, tag);
    li.title = `id ${id}`;
    if (id !== state.me?.id && state.role === 'mod') {
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.className = 'link-button message-button';
      remove.textContent = 'Remove 10 min';
      remove.setAttribute('aria-label', `Remove ${shown} from this room for 10 minutes`);
      remove.addEventListener('click', () => client.kick(room.name, id, 10));
      li.append(remove);
    }
    if (id !== state.me?.id) {
      const blocked = state.blocked.has(id);
      const block = document.createElement('button');
      block.type = 'button';
      block.className = 'link-button block-button';
      block.textContent = blocked ? 'Unblock' : 'Block';
      block.setAttribute('aria-label', `${blocked ? 'Unblock' : 'Block'} ${shown}`);
      block.addEventListener('click', () => (blocked ? client.unblock(id) : client.block(id)));
      li.append(block);
    }
    if (id !== state.me?.id && !room.dm) {
      const message = document.createElement('button');
      message.type = 'button';
      message.className = 'link-button message-button';
      message.textContent = 'Message';
      message.setAttribute('aria-label', `Message ${shown}`);
      message.addEventListener('click', () => {
        state.dmWanted = id; // open it once the server names the room
        client.dm(id);
      });
      li.append(message);
    }
    list.append(li);
  }
  $('people-count').textContent = room ? `(${users.length})` : '';
}

/** How a room is named in lists and the title: `# name`, a lock and the title (or name) for private, or the DM partner. */
function roomTitle(room) {
  if (room.dm) return `@ ${room.dm.name}`;
  return room.private ? `🔒 ${room.title ?? room.name}` : `# ${room.name}`;
}

function renderTyping() {
  const room = state.rooms.get(state.active);
  $('typing').textContent = room ? room.typingText() : '';
}

function updateCounter() {
  const length = [...$('composer-input').value].length;
  const counter = $('char-count');
  counter.textContent = `${length} / ${state.maxText}`;
  counter.dataset.over = String(length > state.maxText);
  // A read-only room takes posts from moderators only: say so where one would type.
  const room = state.rooms.get(state.active);
  const muted = Boolean(room?.readOnly) && state.role !== 'mod';
  $('composer-input').disabled = muted;
  $('composer-input').placeholder = muted ? 'Only moderators can post in this room' : 'Write a message…';
  $('send-button').disabled = muted || length > state.maxText || state.active === null;
}

function announce(text) {
  $('announcer').textContent = text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

function showNotice(text) {
  $('notice').textContent = text;
  $('notice').hidden = false;
}

function hideNotice() {
  $('notice').hidden = true;
}

function closeSidebar() {
  document.body.classList.remove('sidebar-open');
  $('sidebar-toggle').setAttribute('aria-expanded', 'false');
}

// ---------- DOM events ----------

function bindUi() {
  $('login-form').addEventListener('submit', submitLogin);
  // Escape would close the dialog and leave a page that can do nothing: it stays.
  $('login').addEventListener('cancel', (event) => event.preventDefault());
  $('retry-now').addEventListener('click', () => client.retryNow());
  $('reply-cancel').addEventListener('click', cancelReply);
  // Notifications need the user's permission, asked for by a click (browsers refuse a prompt from nowhere).
  $('notify-button').addEventListener('click', async () => {
    await Notification.requestPermission();
    showNotifyButton();
  });

  $('join-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const name = $('join-input').value.trim();
    if (!ROOM_NAME.test(name)) return;
    if (!state.rooms.has(name)) joinRoom(name);
    $('join-input').value = '';
    setActive(name);
    closeSidebar();
  });

  // A private room's name is the server's (`p.` + random letters); the title is ours.
  $('private-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const title = $('private-title').value.trim();
    if (title === '') return;
    state.creating += 1;
    client
      .createPrivate(title)
      .then((name) => {
        $('private-title').value = '';
        setActive(name);
        closeSidebar();
      })
      .catch(({ code, message }) => showNotice(`Could not create the room: ${message || code}`))
      .finally(() => {
        state.creating -= 1;
      });
  });

  $('nick-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const name = $('nick-input').value.trim();
    if (!name) return;
    if (client.nick(name)) $('nick-input').value = '';
  });

  const input = $('composer-input');
  $('attach-button').addEventListener('click', () => $('attach-input').click());
  $('attach-input').addEventListener('change', (event) => {
    uploadFiles(event.target.files);
    event.target.value = '';
  });
  $('composer-input').addEventListener('paste', (event) => {
    const files = event.clipboardData?.files;
    if (files && files.length > 0) {
      event.preventDefault();
      uploadFiles(files);
    }
  });
  $('message-panes').addEventListener('dragover', (event) => {
    if (event.dataTransfer?.types?.includes('Files')) event.preventDefault();
  });
  $('message-panes').addEventListener('drop', (event) => {
    if (event.dataTransfer?.files?.length > 0) {
      event.preventDefault();
      uploadFiles(event.dataTransfer.files);
    }
  });
  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = input.value;
    if (state.active === null || text.trim() === '' || [...text].length > state.maxText) return;
    const options = state.replyTo?.room === state.active ? { replyTo: state.replyTo.seq } : {};
    const mentions = mentionsIn(state.rooms.get(state.active), text);
    if (mentions.length > 0) options.mentions = mentions;
    queueMessage(state.active, text, options);
    $('mention-list').hidden = true;
    cancelReply();
    input.value = '';
    updateCounter();
    autosize(input);
  });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $('composer').requestSubmit();
    }
  });
  input.addEventListener('input', () => {
    suggestMentions();
    updateCounter();
    autosize(input);
    if (input.value.trim() !== '') sendTyping();
  });

  $('invite-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('invite-input').value.trim();
    if (!text || !state.active) return;
    if (client.invite(state.active, inviteTarget(text))) $('invite-input').value = '';
  });

  $('search-form').addEventListener('submit', (event) => {
    event.preventDefault();
    runSearch();
  });
  $('search-more').addEventListener('click', () => runSearch(true));
  $('search-close').addEventListener('click', closeSearch);

  $('new-messages').addEventListener('click', () => {
    state.rooms.get(state.active)?.scrollToBottom();
    $('new-messages').hidden = true;
  });

  $('sidebar-toggle').addEventListener('click', () => {
    const open = document.body.classList.toggle('sidebar-open');
    $('sidebar-toggle').setAttribute('aria-expanded', String(open));
  });
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      closeSidebar();
      closeSearch();
    }
  });
}

function autosize(textarea) {
  textarea.style.height = 'auto';
  textarea.style.height = `${Math.min(textarea.scrollHeight + 2, 160)}px`;
}

// ---------- start ----------

function boot() {
  bindUi();
  watchBlockedAuthors();
  const saved = loadJson(localStorage, KEYS.rooms, [DEFAULT_ROOM]);
  const names = Array.isArray(saved) ? saved.filter((n) => typeof n === 'string' && ROOM_NAME.test(n)) : [];
  client = new NatterClient({
    url: window.location.href,
    credentials: readCredentials,
    rooms: names,
    storage: localStorage,
    unsentKey: KEYS.unsent,
  });
  // For the browser console (and the browser tests): the page's one client.
  window.natter = { client };
  // The library adds the rooms of unsent messages to its own list; show them all.
  for (const name of client.rooms) ensureRoom(name);
  for (const entry of client.unsent()) ensureRoom(entry.room).addPending(entry, state.me);
  const active = loadString(localStorage, KEYS.active);
  setActive(state.rooms.has(active) ? active : (state.rooms.keys().next().value ?? null));
  updateCounter();

  client.on('state', (detail) => {
    state.statusDetail = detail;
    renderStatus();
  });
  client.on('welcome', onWelcome);
  for (const name of Object.keys(handlers)) client.on(name, (detail) => onRoomEvent(name, detail));
  client.on('error', ({ code, message }) => showNotice(`Server: ${message || code}`));
  client.on('dm', onDm);
  client.on('invited', onInvited);
  client.on('blocked', onBlocked);
  client.on('dm-closed', ({ room }) => forgetRoom(room));
  client.on('credentials-needed', showLogin);
  // What only a browser knows: the network came back, or the tab is seen again.
  window.addEventListener('online', () => client.networkChanged(true));
  window.addEventListener('offline', () => client.networkChanged(false));
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'visible') return;
    client.retryNow();
    const room = state.rooms.get(state.active);
    if (room) markReadSoon(room);
  });
  setInterval(() => {
    if (state.statusDetail.state === 'reconnecting') renderStatus();
  }, 250);
  client.connect();
}

boot();

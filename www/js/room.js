// One room as the page sees it: what it has shown (by seq, so nothing is shown
// twice), who is present, who is typing, and the <ol> that displays it.
// Must never: talk to the server (natter-client.js does; app.js passes on).
//
// Messages with a seq stay sorted by seq; the user's own unacknowledged
// messages (no seq yet) sit after them, in the order they were typed, until
// the server gives them a seq. All user text goes through textContent or
// markdown.js (DOM nodes, links only via linkify.js), never through innerHTML. The first item of the pane is the
// scroll-back row: a "Load older messages" button, "Loading…", or the
// "Beginning of the room" marker.

import { renderMarkdown } from './markdown.js';
import { userTag, reactionsOf, applyReaction } from './natter-client.js';

const GROUP_WINDOW_MS = 5 * 60 * 1000;
const TYPING_SHOWN_MS = 5000;
const STICK_TO_BOTTOM_PX = 48;
// The picker's emoji (any emoji others used shows as a chip that toggles it too).
const PICKER = ['👍', '❤️', '😂', '🎉', '😮', '😢', '🙏', '👀'];
const OLDER_TEXT = { more: 'Load older messages', loading: 'Loading older messages…', beginning: 'Beginning of the room' };

export class Room {
  constructor(name, container) {
    this.name = name;
    this.firstSeq = Infinity; // the oldest seq shown: where scroll-back goes on from
    this.seqs = new Set();
    this.users = new Map();
    this.typing = new Map();
    this.unread = 0;
    this.readSeq = null; // the user's read marker, from joined (null: the server keeps none)
    this.onTypingChange = () => {};

    this.pane = document.createElement('ol');
    this.pane.className = 'messages';
    this.pane.dataset.room = name;
    this.pane.setAttribute('aria-label', `Messages in ${name}`);
    this.pane.tabIndex = 0;
    this.pane.hidden = true;
    container.append(this.pane);

    this.onLoadOlder = () => {};
    // Signed URLs for file ids of this room: (ids) => Promise<{id: url}> (app.js asks the client).
    this.fileUrls = async () => ({});
    // What the user may do to a delivered message ({seq, uid, mine?}): [] | ['edit', 'delete'] | ['delete'].
    this.actionsFor = () => [];
    this.onAction = () => {};
    // Reactions: the message objects' `reactions` by seq; onReact(seq, emoji) toggles ours.
    this.reactions = new Map();
    this.onReact = () => {};
    this.onQuote = () => {}; // a reply's quote was clicked: show message seq
    this.meId = () => null;
    this.olderRow = document.createElement('li');
    this.olderRow.className = 'older-row';
    this.olderButton = document.createElement('button');
    this.olderButton.type = 'button';
    this.olderButton.className = 'link-button';
    this.olderButton.addEventListener('click', () => this.onLoadOlder(this));
    this.olderRow.append(this.olderButton);
    this.pane.append(this.olderRow);
    this.setOlder('more');
  }

  /** The scroll-back row's state: 'more' (a button), 'loading' or 'beginning'. */
  setOlder(state) {
    this.older = state;
    this.olderRow.dataset.state = state;
    this.olderButton.textContent = OLDER_TEXT[state];
    this.olderButton.disabled = state !== 'more';
  }

  /**
   * Puts a scroll-back page (older than anything shown, oldest first) at the top,
   * skipping seqs already shown, and keeps what the reader was looking at in place.
   * Returns how many were added.
   */
  prependOlder(messages, me) {
    const fromBottom = this.pane.scrollHeight - this.pane.scrollTop;
    let added = 0;
    let at = this.olderRow.nextElementSibling;
    for (const msg of messages) {
      if (this.seqs.has(msg.seq)) continue;
      this.rememberSeq(msg.seq);
      const el = messageElement(msg, msg.uid === me?.id);
      this.addActions(el, msg);
      // Oldest first: each goes after the previous one, all before what was shown.
      while (at !== null && at.dataset.seq && Number(at.dataset.seq) < msg.seq) at = at.nextElementSibling;
      this.pane.insertBefore(el, at);
      this.loadFiles(el);
      regroup(el);
      added += 1;
    }
    if (at !== null) regroup(at);
    this.pane.scrollTop = this.pane.scrollHeight - fromBottom;
    return added;
  }

  /** Puts the quote of the message `msg` answers on `el` (our own reply, shown before the server quoted it). */
  addQuote(el, msg) {
    if (!msg.reply || !Number.isInteger(msg.reply.seq) || el.querySelector('.msg-reply') || msg.deleted) return;
    const quote = replyQuote(msg.reply);
    el.querySelector('.msg-text').before(quote);
    quote.dataset.bound = 'true';
    quote.addEventListener('click', () => this.onQuote(msg.reply.seq));
  }

  /** Scrolls message `seq` into view and marks it for a moment; false when it is not shown. */
  reveal(seq) {
    const el = this.elementBySeq(seq);
    if (!el) return false;
    el.scrollIntoView({ block: 'center' });
    el.classList.add('revealed');
    setTimeout(() => el.classList.remove('revealed'), 2000);
    return true;
  }

  /** Message `of` now says `text` (an edit, live or replayed; applying it twice is harmless). */
  applyEdit(of, text, ts) {
    const el = this.elementBySeq(of);
    if (!el || el.dataset.deleted === 'true') return;
    setText(el, text);
    markEdited(el, ts);
  }

  /** Message `of` is deleted: its text goes, a marker stays in its place, and the replies' quotes of it say deleted (as the server's do). */
  applyDelete(of) {
    const el = this.elementBySeq(of);
    if (el) markDeleted(el);
    for (const old of this.pane.querySelectorAll(`.msg-reply[data-reply-to="${Number(of)}"]`)) {
      const gone = replyQuote({ seq: Number(of), deleted: true });
      gone.dataset.bound = 'true';
      gone.addEventListener('click', () => this.onQuote(Number(of)));
      old.replaceWith(gone);
    }
  }

  /** A `react` event (live or replayed; idempotent): message `of`'s chips change. */
  applyReaction(of, event) {
    const el = this.elementBySeq(of);
    if (!el || el.dataset.deleted === 'true') return;
    const msg = applyReaction({ reactions: this.reactions.get(of) }, event);
    this.reactions.set(of, msg.reactions);
    this.drawReactions(el);
  }

  /** The chips under message `el` (emoji and count; pressed when ours) and the picker button. */
  drawReactions(el) {
    const seq = Number(el.dataset.seq);
    let bar = el.querySelector('.msg-reactions');
    if (!bar) {
      bar = document.createElement('div');
      bar.className = 'msg-reactions';
      el.querySelector('.msg-text').after(bar);
    }
    const chips = reactionsOf({ reactions: this.reactions.get(seq) }, this.meId()).map(({ emoji, count, mine }) => {
      const chip = document.createElement('button');
      chip.type = 'button';
      chip.className = 'reaction-chip';
      chip.dataset.emoji = emoji;
      chip.setAttribute('aria-pressed', String(mine));
      chip.setAttribute('aria-label', `${emoji} ${count}${mine ? ', yours' : ''}: toggle your reaction`);
      const shown = document.createElement('span');
      shown.textContent = emoji;
      const n = document.createElement('span');
      n.className = 'reaction-count';
      n.textContent = String(count);
      chip.append(shown, n);
      chip.addEventListener('click', () => this.onReact(seq, emoji));
      return chip;
    });
    const add = document.createElement('button');
    add.type = 'button';
    add.className = 'reaction-add link-button';
    add.textContent = '☺+';
    add.setAttribute('aria-label', `Add a reaction to message ${seq}`);
    add.setAttribute('aria-expanded', 'false');
    add.addEventListener('click', () => this.togglePicker(el, add));
    bar.replaceChildren(...chips, add);
  }

  /** The small emoji picker under a message; a pick toggles that reaction. */
  togglePicker(el, button) {
    const open = el.querySelector('.reaction-picker');
    if (open) {
      open.remove();
      button.setAttribute('aria-expanded', 'false');
      return;
    }
    const picker = document.createElement('div');
    picker.className = 'reaction-picker';
    picker.setAttribute('role', 'group');
    picker.setAttribute('aria-label', 'Pick a reaction');
    for (const emoji of PICKER) {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = emoji;
      b.dataset.emoji = emoji;
      b.addEventListener('click', () => {
        picker.remove();
        this.onReact(Number(el.dataset.seq), emoji);
      });
      picker.append(b);
    }
    button.setAttribute('aria-expanded', 'true');
    el.querySelector('.msg-reactions').after(picker);
  }

  addActions(el, msg) {
    if (Array.isArray(msg.mentions) && msg.mentions.includes(this.meId())) el.classList.add('mentions-me');
    const quote = el.querySelector('.msg-reply');
    if (quote && !quote.dataset.bound) {
      quote.dataset.bound = 'true';
      quote.addEventListener('click', () => this.onQuote(Number(quote.dataset.replyTo)));
    }
    if (!msg.deleted && el.dataset.seq && !el.querySelector('.msg-reactions')) {
      if (msg.reactions) this.reactions.set(Number(el.dataset.seq), msg.reactions);
      this.drawReactions(el);
    }
    if (msg.deleted || el.querySelector('.msg-actions')) return;
    const actions = this.actionsFor(msg);
    if (actions.length === 0) return;
    const bar = document.createElement('span');
    bar.className = 'msg-actions';
    for (const action of actions) {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'link-button';
      button.dataset.action = action;
      button.textContent = { edit: 'Edit', delete: 'Delete', reply: 'Reply' }[action];
      button.setAttribute('aria-label', `${button.textContent} message ${msg.seq}`);
      button.addEventListener('click', () => this.onAction(action, Number(el.dataset.seq), el));
      bar.append(button);
    }
    el.append(bar); // not in the header: a grouped message hides that
  }

  /** How many shown messages from others have a seq after `seq`. */
  countAfter(seq, me) {
    let n = 0;
    for (const el of this.pane.querySelectorAll('li.msg[data-seq]')) {
      if (Number(el.dataset.seq) > seq && el.dataset.uid !== me?.id) n += 1;
    }
    return n;
  }

  /** Puts the "New messages" divider before the first message from others after `seq`. */
  showDivider(seq, me) {
    this.pane.querySelector('.new-divider')?.remove();
    const first = [...this.pane.querySelectorAll('li.msg[data-seq]')]
      .find((el) => Number(el.dataset.seq) > seq && el.dataset.uid !== me?.id);
    if (!first) return;
    const li = document.createElement('li');
    li.className = 'new-divider';
    li.setAttribute('role', 'separator');
    li.textContent = 'New messages';
    this.pane.insertBefore(li, first);
  }

  /** Forgets every delivered message and note (the server's history was reset); pending ones stay. */
  clearHistory() {
    for (const el of [...this.pane.children]) {
      const pending = el.classList.contains('msg') && !el.dataset.seq;
      if (el !== this.olderRow && !pending) el.remove();
    }
    this.seqs.clear();
    this.firstSeq = Infinity;
    this.setOlder('more');
  }

  destroy() {
    for (const { timer } of this.typing.values()) clearTimeout(timer);
    this.pane.remove();
  }

  isAtBottom() {
    const p = this.pane;
    return p.scrollHeight - p.scrollTop - p.clientHeight <= STICK_TO_BOTTOM_PX;
  }

  scrollToBottom() {
    this.pane.scrollTop = this.pane.scrollHeight;
  }

  /** Asks for the signed URLs of message `el`'s files and sets them (lazy images load then). */
  loadFiles(el) {
    const slots = [...el.querySelectorAll('[data-file-id]')];
    if (slots.length === 0) return;
    this.fileUrls(slots.map((slot) => slot.dataset.fileId)).then((urls) => {
      for (const slot of slots) {
        const url = urls[slot.dataset.fileId];
        if (!url) continue;
        if (slot.tagName === 'IMG') slot.src = url;
        else slot.href = url;
      }
    }, () => {});
  }

  /** Shows a server message unless its seq is already shown; true when shown. */
  addMessage(msg, me) {
    if (this.seqs.has(msg.seq)) {
      // Our own message, settled by its ack: the server's copy adds what only it knows.
      const shown = this.elementBySeq(msg.seq);
      if (shown) this.addQuote(shown, msg);
      return false;
    }
    this.rememberSeq(msg.seq);
    const pending = msg.id ? this.pendingElement(msg.id) : null;
    if (pending) {
      this.addQuote(pending, msg);
      this.settleElement(pending, msg.seq);
      return false;
    }
    const el = messageElement(msg, msg.uid === me?.id);
    this.addActions(el, msg);
    this.insertBySeq(el, msg.seq);
    this.loadFiles(el);
    this.clearTyping(msg.uid);
    return true;
  }

  /** Shows one of the user's own messages as pending (no seq yet). */
  addPending(entry, me) {
    if (this.pendingElement(entry.id)) return;
    const el = messageElement({ ...entry, user: me?.name ?? 'you', uid: me?.id ?? '' }, true);
    el.dataset.state = 'pending';
    el.dataset.id = entry.id;
    const status = document.createElement('span');
    status.className = 'msg-status';
    status.textContent = 'sending…';
    el.querySelector('.msg-header').append(status);
    this.pane.append(el);
    regroup(el);
  }

  /**
   * The server accepted our message `id` as `seq` (ack, dup ack, or our own
   * msg coming back). If that seq is already on screen the pending copy goes.
   */
  settle(id, seq) {
    const pending = this.pendingElement(id);
    if (!pending) return;
    if (this.seqs.has(seq) && this.elementBySeq(seq) !== null) {
      const next = pending.nextElementSibling;
      pending.remove();
      if (next) regroup(next);
      return;
    }
    this.rememberSeq(seq);
    this.settleElement(pending, seq);
  }

  /** Shows an error next to a pending message; `retry` puts it back in line. */
  fail(id, text, retry) {
    const el = this.pendingElement(id);
    if (!el) return;
    el.dataset.state = 'failed';
    el.querySelector('.msg-status')?.remove();
    el.querySelector('.msg-error')?.remove();
    const error = document.createElement('span');
    error.className = 'msg-error';
    error.setAttribute('role', 'alert');
    error.textContent = text;
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = 'Retry';
    button.addEventListener('click', () => {
      el.remove();
      retry();
    });
    error.append(button);
    el.append(error);
  }

  addNote(text, className = 'system-note') {
    const li = document.createElement('li');
    li.className = className;
    li.textContent = text;
    this.insertBeforePending(li);
    const next = li.nextElementSibling;
    if (next) regroup(next);
  }

  setUsers(users) {
    this.users = new Map(users.map((user) => [user.id, user.name]));
  }

  showTyping(user) {
    const previous = this.typing.get(user.id);
    if (previous) clearTimeout(previous.timer);
    const timer = setTimeout(() => this.clearTyping(user.id), TYPING_SHOWN_MS);
    this.typing.set(user.id, { name: user.name, timer });
    this.onTypingChange(this);
  }

  clearTyping(uid) {
    const entry = this.typing.get(uid);
    if (!entry) return;
    clearTimeout(entry.timer);
    this.typing.delete(uid);
    this.onTypingChange(this);
  }

  typingText() {
    const names = [...this.typing.values()].map((entry) => entry.name);
    if (names.length === 0) return '';
    if (names.length === 1) return `${names[0]} is typing…`;
    if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
    return 'Several people are typing…';
  }

  // --- private helpers ---

  rememberSeq(seq) {
    this.seqs.add(seq);
    if (seq < this.firstSeq) this.firstSeq = seq;
  }

  pendingElement(id) {
    for (const el of this.pane.querySelectorAll('li.msg[data-id]')) {
      if (el.dataset.id === id && !el.dataset.seq) return el;
    }
    return null;
  }

  elementBySeq(seq) {
    return this.pane.querySelector(`li.msg[data-seq="${Number(seq)}"]`);
  }

  settleElement(el, seq) {
    el.dataset.seq = String(seq);
    el.dataset.state = 'sent';
    el.querySelector('.msg-status')?.remove();
    // Delivered now: our own message gets its edit and delete buttons.
    this.addActions(el, { seq, uid: el.dataset.uid, mine: el.classList.contains('mine') });
    el.remove();
    this.insertBySeq(el, seq);
    this.loadFiles(el);
  }

  /** Inserts after the last message with a smaller seq, before pending ones. */
  insertBySeq(el, seq) {
    let before = null;
    for (let node = this.pane.lastElementChild; node !== null; node = node.previousElementSibling) {
      const isPending = node.classList.contains('msg') && !node.dataset.seq;
      const isLater = node.dataset.seq && Number(node.dataset.seq) > seq;
      if (!isPending && !isLater) break;
      before = node;
    }
    this.pane.insertBefore(el, before);
    regroup(el);
    if (el.nextElementSibling) regroup(el.nextElementSibling);
  }

  insertBeforePending(el) {
    let before = null;
    for (let node = this.pane.lastElementChild; node !== null; node = node.previousElementSibling) {
      if (!(node.classList.contains('msg') && !node.dataset.seq)) break;
      before = node;
    }
    this.pane.insertBefore(el, before);
  }
}

function messageElement(msg, mine) {
  const li = document.createElement('li');
  li.className = mine ? 'msg mine' : 'msg';
  if (msg.seq !== undefined) li.dataset.seq = String(msg.seq);
  if (msg.id) li.dataset.id = msg.id;
  li.dataset.uid = msg.uid ?? '';
  li.dataset.ts = String(msg.ts ?? Date.now());
  li.dataset.state = 'sent';

  const header = document.createElement('div');
  header.className = 'msg-header';
  const author = document.createElement('span');
  author.className = 'msg-author';
  author.textContent = msg.user ?? '';
  author.title = msg.uid ? `id ${msg.uid}` : '';
  // A name is not an identity: the tag from the author's id sits next to it, so an
  // impostor with the same name never looks like the real one.
  const tag = document.createElement('span');
  tag.className = 'user-tag';
  tag.textContent = msg.uid ? `#${msg.tag ?? userTag(msg.uid)}` : '';
  li.dataset.tag = tag.textContent.slice(1);
  const time = document.createElement('time');
  time.className = 'msg-time';
  const date = new Date(Number(li.dataset.ts));
  time.dateTime = date.toISOString();
  time.textContent = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  time.title = date.toLocaleString();
  header.append(author, tag, time);

  if (msg.reply && Number.isInteger(msg.reply.seq)) li.append(header, replyQuote(msg.reply));
  const text = document.createElement('div');
  text.className = 'msg-text';
  text.append(renderMarkdown(String(msg.text ?? '')));
  li.rawText = String(msg.text ?? ''); // what an edit starts from (the text as typed)

  if (!li.contains(header)) li.append(header);
  li.append(text);
  const files = msg.deleted ? [] : (msg.files ?? []).filter((f) => f && typeof f === 'object');
  if (files.length > 0) li.append(filesElement(files));
  if (msg.deleted) markDeleted(li);
  else if (msg.edited) markEdited(li, msg.edited);
  return li;
}

const INLINE_IMAGES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);
const IMAGE_MAX = { width: 360, height: 270 };

/** A message's files: images inline (lazy, scaled, their space reserved), others as a chip. */
function filesElement(files) {
  const box = document.createElement('div');
  box.className = 'msg-files';
  for (const f of files) {
    if (INLINE_IMAGES.has(f.type) && f.width > 0 && f.height > 0) {
      const img = document.createElement('img');
      img.className = 'msg-image';
      img.loading = 'lazy';
      img.alt = String(f.name ?? 'image');
      img.dataset.fileId = String(f.id);
      // Scaled to fit, the box sized before a byte arrives: nothing jumps when it loads.
      const scale = Math.min(1, IMAGE_MAX.width / f.width, IMAGE_MAX.height / f.height);
      img.width = Math.max(1, Math.round(f.width * scale));
      img.height = Math.max(1, Math.round(f.height * scale));
      box.append(img);
    } else {
      const chip = document.createElement('a');
      chip.className = 'file-chip';
      chip.dataset.fileId = String(f.id);
      chip.rel = 'noopener noreferrer';
      chip.target = '_blank';
      const name = document.createElement('span');
      name.className = 'file-name';
      name.textContent = String(f.name ?? 'file');
      const size = document.createElement('span');
      size.className = 'file-size';
      size.textContent = formatSize(Number(f.size) || 0);
      chip.append(name, size);
      box.append(chip);
    }
  }
  return box;
}

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

/** The quote a reply carries: who and the first characters (or "deleted"); a click goes to the original. */
function replyQuote(reply) {
  const quote = document.createElement('button');
  quote.type = 'button';
  quote.className = 'msg-reply';
  quote.dataset.replyTo = String(reply.seq);
  const who = document.createElement('span');
  who.className = 'msg-reply-author';
  const what = document.createElement('span');
  what.className = 'msg-reply-text';
  if (reply.deleted) {
    who.textContent = '';
    what.textContent = 'Deleted message';
  } else {
    who.textContent = `${reply.user ?? ''}`;
    what.textContent = String(reply.quote ?? '');
  }
  quote.append('↪ ', who, ' ', what);
  quote.setAttribute('aria-label', reply.deleted ? 'Reply to a deleted message' : `Reply to ${reply.user}: ${reply.quote}. Show it`);
  return quote;
}

function setText(li, text) {
  li.querySelector('.msg-text').replaceChildren(renderMarkdown(String(text)));
  li.rawText = String(text);
}

function markEdited(li, ts) {
  if (li.querySelector('.msg-edited')) return;
  const note = document.createElement('span');
  note.className = 'msg-edited';
  note.textContent = '(edited)';
  if (ts) note.title = `edited ${new Date(Number(ts)).toLocaleString()}`;
  li.querySelector('.msg-text').after(note);
}

function markDeleted(li) {
  li.dataset.deleted = 'true';
  li.querySelector('.msg-files')?.remove();
  li.querySelector('.msg-text').textContent = 'Message deleted';
  li.querySelector('.msg-actions')?.remove();
  li.querySelector('.msg-edited')?.remove();
  li.querySelector('.msg-edit-form')?.remove();
  li.querySelector('.msg-reactions')?.remove();
  li.querySelector('.msg-reply')?.remove();
  li.querySelector('.reaction-picker')?.remove();
}

/** Hides the name and time when the previous message is by the same user, shortly before. */
function regroup(el) {
  if (!el.classList.contains('msg')) return;
  const prev = el.previousElementSibling;
  const grouped = prev !== null && prev.classList.contains('msg')
    && prev.dataset.uid === el.dataset.uid
    && prev.dataset.state !== 'failed'
    && Math.abs(Number(el.dataset.ts) - Number(prev.dataset.ts)) < GROUP_WINDOW_MS;
  el.classList.toggle('grouped', grouped);
}

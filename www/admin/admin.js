// natter admin console: a page of the server API (/api/v1 on this same listener).
// The key lives in sessionStorage and travels only in the Authorization header; every
// user-supplied string reaches the page as text, never as markup.

const KEY_ITEM = 'natter-admin-key';
const POLL_MS = 1000;
const CHART_POINTS = 60;

const $ = (id) => document.getElementById(id);
let key = sessionStorage.getItem(KEY_ITEM);
let current = 'overview';

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

/** One call of the server API with the signed-in key. */
async function api(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${key}` }, cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(`/api/v1${path}`, init);
  let json = null;
  try {
    json = await resp.json();
  } catch {
    json = null;
  }
  if (!resp.ok) throw new ApiError(resp.status, json);
  return json;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c ?? ''));
  return node;
}

function showStatus(text) {
  const s = $('status');
  s.textContent = text ?? '';
  s.hidden = !text;
}

function fail(e) {
  if (e instanceof ApiError && e.status === 401) return signOut('The key was refused.');
  showStatus(e.message);
}

const fmtBytes = (n) => {
  if (n == null) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
};
const fmtTime = (ms) => (ms ? new Date(ms).toLocaleString() : '—');
const fmtRate = (n) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));

// ---- sign in ----

async function signIn(candidate) {
  key = candidate;
  try {
    await api('GET', '/admin/overview');
  } catch (e) {
    key = null;
    const why = e instanceof ApiError && e.status === 403 ? 'This key has no `admin` right.' : e.message;
    $('signin-error').textContent = why;
    return;
  }
  sessionStorage.setItem(KEY_ITEM, candidate);
  $('signin').hidden = true;
  $('tabs').hidden = false;
  $('signin-error').textContent = '';
  show('overview');
}

function signOut(reason) {
  sessionStorage.removeItem(KEY_ITEM);
  key = null;
  for (const t of document.querySelectorAll('.tab')) t.hidden = true;
  $('tabs').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = reason ?? '';
  showStatus('');
}

$('signin').addEventListener('submit', (ev) => {
  ev.preventDefault();
  signIn($('key').value.trim());
  $('key').value = '';
});
$('signout').addEventListener('click', () => signOut());

// ---- tabs ----

function show(tab) {
  current = tab;
  for (const b of document.querySelectorAll('#tabs [data-tab]')) {
    if (b.dataset.tab === tab) b.setAttribute('aria-current', 'page');
    else b.removeAttribute('aria-current');
  }
  for (const t of document.querySelectorAll('.tab')) t.hidden = t.id !== tab;
  showStatus('');
  refresh();
}

for (const b of document.querySelectorAll('#tabs [data-tab]')) b.addEventListener('click', () => show(b.dataset.tab));

function refresh() {
  if (current === 'overview') pollOverview();
  if (current === 'rooms') loadRooms();
  if (current === 'users') loadUsers();
  if (current === 'audit') loadAudit(false);
}

// ---- overview: tiles and live charts ----

const series = { connections: [], rooms: [], messages: [], deliveries: [] };
let last = null;

function push(name, value) {
  const s = series[name];
  s.push(value);
  if (s.length > CHART_POINTS) s.shift();
}

/** Draws a series as a line over a filled area, scaled to its own maximum. */
function draw(name) {
  const canvas = $(`chart-${name}`);
  const points = series[name];
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width;
  const h = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext('2d');
  ctx.scale(dpr, dpr);
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...points);
  const color = getComputedStyle(document.documentElement).getPropertyValue('--chart').trim() || '#2457c5';
  const x = (i) => (i / (CHART_POINTS - 1)) * (w - 2) + 1;
  const y = (v) => h - 14 - (v / max) * (h - 24);
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.beginPath();
  const start = CHART_POINTS - points.length;
  points.forEach((v, i) => (i ? ctx.lineTo(x(start + i), y(v)) : ctx.moveTo(x(start + i), y(v))));
  ctx.stroke();
  if (points.length > 1) {
    ctx.lineTo(x(start + points.length - 1), h - 14);
    ctx.lineTo(x(start), h - 14);
    ctx.closePath();
    ctx.globalAlpha = 0.15;
    ctx.fillStyle = color;
    ctx.fill();
    ctx.globalAlpha = 1;
  }
  ctx.fillStyle = getComputedStyle(document.body).color;
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillText(`max ${fmtRate(max)}  now ${fmtRate(points.at(-1) ?? 0)}`, 4, h - 2);
  // What the chart shows, for people with screen readers and for tests.
  canvas.dataset.now = String(points.at(-1) ?? 0);
  canvas.dataset.max = String(Math.max(0, ...points));
  canvas.dataset.points = String(points.length);
  canvas.setAttribute('aria-label', `${name}: now ${fmtRate(points.at(-1) ?? 0)}, max ${fmtRate(max)}`);
  canvas.setAttribute('role', 'img');
}

function tile(label, value) {
  return el('div', { className: 'tile' }, el('b', {}, value), el('span', {}, label));
}

async function pollOverview() {
  let o;
  try {
    o = await api('GET', '/admin/overview');
  } catch (e) {
    return fail(e);
  }
  if (last) {
    const secs = Math.max(0.001, (o.ts - last.ts) / 1000);
    push('messages', Math.max(0, o.messages_total - last.messages_total) / secs);
    push('deliveries', Math.max(0, o.deliveries_total - last.deliveries_total) / secs);
  }
  push('connections', o.connections);
  push('rooms', o.rooms);
  last = o;
  for (const name of Object.keys(series)) draw(name);

  const m = o.metrics ?? {};
  const store = o.store;
  const retention = store.kind === 'sqlite'
    ? [store.retention_days ? `${store.retention_days} days` : null, store.retention_messages ? `${store.retention_messages}/room` : null]
        .filter(Boolean).join(', ') || 'kept'
    : `${store.stream_cap} per room stream`;
  $('tiles').replaceChildren(
    tile('connections', o.connections),
    tile('rooms in memory', o.rooms),
    tile('messages / s', fmtRate(series.messages.at(-1) ?? 0)),
    tile('deliveries / s', fmtRate(series.deliveries.at(-1) ?? 0)),
    tile(`store (${store.kind})`, store.kind === 'sqlite' ? fmtBytes(store.bytes) : 'Redis'),
    tile('message retention', retention),
    tile('audit retention', store.audit_retention_days ? `${store.audit_retention_days} days` : 'kept'),
    tile('webhook queue', m.natter_webhook_queue ?? 0),
    tile('webhook drops', m.natter_webhook_events_dropped_total ?? 0),
    tile('memory (RSS)', fmtBytes(o.process.rss_bytes)),
    tile('threads', o.process.threads ?? '—'),
    tile('uptime', `${Math.floor(o.uptime_s / 60)} min`),
  );
  const redis = Object.entries(m).filter(([k]) => k.startsWith('natter_redis'));
  $('redis').replaceChildren(
    ...(redis.length ? redis.flatMap(([k, v]) => [el('dt', {}, k.replace('natter_redis_', '')), el('dd', {}, v)])
      : [el('dt', {}, 'mode'), el('dd', {}, store.kind === 'redis' ? 'no Redis series yet' : 'single instance (SQLite)')]),
  );
}

// ---- rooms ----

let selectedRoom = null;

async function loadRooms() {
  let list;
  try {
    list = await api('GET', `/admin/rooms?q=${encodeURIComponent($('room-search').value.trim())}`);
  } catch (e) {
    return fail(e);
  }
  $('room-counts').textContent = `${list.matching} room(s), ${list.dm_rooms} DM room(s) in memory`;
  $('room-table').tBodies[0].replaceChildren(
    ...list.rooms.map((r) => {
      const row = el('tr', { className: 'clickable', tabIndex: 0, dataset: { room: r.room } },
        el('td', {}, r.room), el('td', {}, r.users), el('td', {}, r.head), el('td', {}, fmtTime(r.last_activity)),
        el('td', {}, r.private ? 'private' : r.read_only ? 'public, read-only' : 'public'));
      if (r.room === selectedRoom?.room) row.setAttribute('aria-selected', 'true');
      const open = () => openRoom(r);
      row.addEventListener('click', open);
      row.addEventListener('keydown', (ev) => ev.key === 'Enter' && open());
      return row;
    }),
  );
}

$('room-search').addEventListener('input', () => loadRooms());

async function openRoom(r) {
  selectedRoom = r;
  for (const row of $('room-table').tBodies[0].rows) row.toggleAttribute('aria-selected', row.dataset.room === r.room);
  $('room-detail').hidden = false;
  $('room-title').textContent = r.room;
  $('room-private').hidden = !r.private;
  $('room-public').hidden = r.private;
  if (r.private) return; // never read, not even by an admin
  $('room-readonly').checked = r.read_only;
  try {
    const [presence, page] = await Promise.all([
      api('GET', `/rooms/${encodeURIComponent(r.room)}/presence`),
      api('GET', `/rooms/${encodeURIComponent(r.room)}/messages?limit=30`),
    ]);
    $('room-members').replaceChildren(...presence.users.map((u) => el('li', { title: u.id }, u.name)));
    if (presence.remote) $('room-members').append(el('li', {}, `+${presence.remote} elsewhere`));
    $('room-messages').replaceChildren(
      ...page.messages.filter((m) => m.type === 'msg').reverse().map((m) => el('li', { dataset: { seq: m.seq } },
        el('span', { className: 'muted' }, `#${m.seq}`),
        el('span', { className: 'who', title: m.uid }, m.user),
        m.deleted ? el('span', { className: 'text deleted' }, 'deleted') : el('span', { className: 'text' }, m.text),
        m.deleted ? '' : el('button', { type: 'button', className: 'danger', onclick: () => deleteMessage(r.room, m.seq) }, 'Delete'))),
    );
  } catch (e) {
    fail(e);
  }
}

async function deleteMessage(room, seq) {
  if (!confirm(`Delete message ${seq} in ${room}?`)) return;
  try {
    await api('DELETE', `/rooms/${encodeURIComponent(room)}/messages/${seq}`);
    openRoom(selectedRoom);
  } catch (e) {
    fail(e);
  }
}

$('room-readonly').addEventListener('change', async (ev) => {
  try {
    await api('POST', `/rooms/${encodeURIComponent(selectedRoom.room)}/mode`, { read_only: ev.target.checked });
    selectedRoom.read_only = ev.target.checked;
    loadRooms();
  } catch (e) {
    ev.target.checked = !ev.target.checked;
    fail(e);
  }
});

// ---- users and bans ----

let pending = null; // {kind: 'kick'|'ban', user}

async function loadUsers() {
  let users;
  let bans;
  try {
    [users, bans] = await Promise.all([api('GET', '/admin/users'), api('GET', '/bans')]);
  } catch (e) {
    return fail(e);
  }
  $('user-table').tBodies[0].replaceChildren(
    ...users.users.map((u) => el('tr', { dataset: { user: u.id } },
      el('td', { title: u.id }, el('b', {}, u.name), el('br'), el('span', { className: 'muted' }, u.id)),
      el('td', {}, u.instance ?? 'another instance'),
      el('td', {}, u.transport ?? '—'),
      el('td', {}, u.addr ?? '—'),
      el('td', {}, u.rooms.join(', ')),
      el('td', { className: 'actions' },
        el('button', { type: 'button', onclick: () => disconnect(u) }, 'Disconnect'),
        el('button', { type: 'button', onclick: () => ask('kick', u), disabled: !u.rooms.length }, 'Kick'),
        el('button', { type: 'button', className: 'danger', onclick: () => ask('ban', u) }, 'Ban')))),
  );
  $('ban-table').tBodies[0].replaceChildren(
    ...bans.bans.map((b) => el('tr', { dataset: { user: b.user } },
      el('td', {}, b.user), el('td', {}, fmtTime(b.until)), el('td', {}, b.reason), el('td', {}, b.by),
      el('td', { className: 'actions' }, el('button', { type: 'button', onclick: () => unban(b.user) }, 'Unban')))),
  );
}

async function disconnect(u) {
  try {
    await api('POST', `/users/${encodeURIComponent(u.id)}/disconnect`);
    loadUsers();
  } catch (e) {
    fail(e);
  }
}

async function unban(user) {
  try {
    await api('DELETE', `/users/${encodeURIComponent(user)}/ban`);
    loadUsers();
  } catch (e) {
    fail(e);
  }
}

function ask(kind, u) {
  pending = { kind, user: u };
  $('action-title').textContent = kind === 'ban' ? `Ban ${u.name} (${u.id}) from the server` : `Kick ${u.name} from a room`;
  $('action-room-label').hidden = kind !== 'kick';
  $('action-reason-label').hidden = kind !== 'ban';
  $('action-room').replaceChildren(...u.rooms.map((r) => el('option', { value: r }, r)));
  $('action-minutes').value = kind === 'ban' ? '1440' : '60';
  $('action-reason').value = '';
  $('action-go').textContent = kind === 'ban' ? 'Ban' : 'Kick';
  $('action-form').hidden = false;
  $('action-minutes').focus();
}

$('action-cancel').addEventListener('click', () => {
  $('action-form').hidden = true;
  pending = null;
});

$('action-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (!pending) return;
  const { kind, user } = pending;
  const minutes = Number($('action-minutes').value);
  try {
    if (kind === 'ban') {
      await api('POST', `/users/${encodeURIComponent(user.id)}/ban`, { minutes, reason: $('action-reason').value.trim() });
    } else {
      await api('POST', `/rooms/${encodeURIComponent($('action-room').value)}/kick`, { user: user.id, minutes: Math.round(minutes) });
    }
    $('action-form').hidden = true;
    pending = null;
    loadUsers();
  } catch (e) {
    fail(e);
  }
});

// ---- audit log ----

let auditNext = null;

async function loadAudit(more) {
  const params = new URLSearchParams({ limit: '50' });
  for (const f of ['action', 'actor', 'target', 'room']) {
    const v = $(`audit-${f}`).value.trim();
    if (v) params.set(f, v);
  }
  if (more && auditNext != null) params.set('before', String(auditNext));
  let page;
  try {
    page = await api('GET', `/audit?${params}`);
  } catch (e) {
    return fail(e);
  }
  const rows = page.entries.map((e) => el('tr', { dataset: { action: e.action } },
    el('td', {}, fmtTime(e.ts)), el('td', {}, e.actor), el('td', {}, e.action), el('td', {}, e.target),
    el('td', {}, e.room), el('td', {}, e.detail), el('td', {}, e.addr)));
  const body = $('audit-table').tBodies[0];
  if (more) body.append(...rows);
  else body.replaceChildren(...rows);
  auditNext = page.next_before;
  $('audit-more').hidden = auditNext == null;
}

$('audit-filters').addEventListener('submit', (ev) => {
  ev.preventDefault();
  loadAudit(false);
});
$('audit-more').addEventListener('click', () => loadAudit(true));

// ---- start ----

setInterval(() => {
  if (key && current === 'overview') pollOverview();
}, POLL_MS);

if (key) signIn(key);

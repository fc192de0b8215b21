// createPrivate(title): the server names the room (`p.` + random letters), the
// promise resolves with that name once joined, whose event carries the title; an
// invitee joins it by name. A public name asked for as private is refused, never
// made private.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connected, makeClient, startNatter, suiteCleanup, within } from './support.mjs';

const cleanup = suiteCleanup();

test('createPrivate resolves with the server-chosen name and the title; a public name stays public', { timeout: 30000 }, async () => {
  const server = await startNatter(cleanup, {});
  const ann = makeClient(cleanup, { url: server.httpUrl, name: 'ann', rooms: ['lobby'] });
  const bea = makeClient(cleanup, { url: server.httpUrl, name: 'bea', rooms: ['lobby'] });
  await connected(ann);
  await connected(bea);

  const joined = ann.next('joined', (j) => j.room.startsWith('p.'));
  const room = await within(ann.createPrivate('Team'), 5000, 'the created room');
  assert.match(room, /^p\.[a-z2-7]{26}$/);
  const detail = await within(joined, 5000, 'joined');
  assert.equal(detail.room, room);
  assert.equal(detail.title, 'Team');
  assert.equal(detail.private, true);

  const invited = bea.next('invited', (i) => i.room === room);
  ann.invite(room, bea.me.id);
  assert.equal((await within(invited, 5000, 'invited')).title, 'Team');
  const beaJoined = bea.next('joined', (j) => j.room === room);
  bea.join(room);
  assert.equal((await within(beaJoined, 5000, "bea's joined")).title, 'Team');

  const refused = bea.next('error', (e) => e.ref === 'join');
  bea.join('plaza', { private: true });
  assert.equal((await within(refused, 5000, 'the refusal')).code, 'bad_field');
  await assert.rejects(ann.createPrivate('\u0007'), { code: 'bad_field' });
  assert.throws(() => ann.createPrivate('  '), /a title is required/);
});

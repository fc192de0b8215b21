// Bad input to the library gets a clear error at once, and a server in a
// mode the client has no credentials for asks for them instead of looping.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { FileStorage } from '../../www/js/file-storage.js';
import { MemoryStorage } from '../../www/js/storage.js';
import { userTag } from '../../www/js/natter-client.js';
import { NatterClient, makeClient, startNatter, suiteCleanup, tempDir, within } from './support.mjs';

const cleanup = suiteCleanup();
const URL_OK = 'http://127.0.0.1:9';
const SECRET = 'client-test-secret-0123456789abcdef';

function jwt(claims) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode(claims)}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

test('bad options, rooms, texts and event names throw errors that say what is wrong', () => {
  const bad = [
    [{}, /url is required outside a browser/],
    [{ url: 'ftp://x' }, /url must be http\(s\) or ws\(s\)/],
    [{ url: 'not a url' }, /is not an absolute URL/],
    [{ url: URL_OK, name: 'a', token: 'x.y.z' }, /give one of name, token or credentials, not name and token/],
    [{ url: URL_OK, name: '  ' }, /name must be a non-blank string/],
    [{ url: URL_OK, name: 'n'.repeat(33) }, /longer than 32 characters/],
    [{ url: URL_OK, token: 'nope' }, /token must be a JWT/],
    [{ url: URL_OK, rooms: 'lobby' }, /rooms must be an array/],
    [{ url: URL_OK, rooms: ['a/b'] }, /room name "a\/b" is not 1–64 characters/],
    [{ url: URL_OK, storage: {} }, /storage must have getItem, setItem and removeItem/],
    [{ url: URL_OK, openTimeoutMs: -1 }, /openTimeoutMs must be a positive number/],
    [{ url: URL_OK, nmae: 'typo' }, /unknown option\(s\) nmae/],
  ];
  for (const [options, message] of bad) assert.throws(() => new NatterClient(options), message, JSON.stringify(options));

  const client = new NatterClient({ url: URL_OK, name: 'x', storage: new MemoryStorage() });
  assert.throws(() => client.send('lobby', '   '), /text is blank/);
  assert.throws(() => client.send('lobby', 42), /text must be a string/);
  assert.throws(() => client.send('lobby', 'x'.repeat(4001)), /4001 characters, the server takes at most 4000/);
  assert.throws(() => client.send('a b', 'hi'), /room name "a b" is not/);
  assert.throws(() => client.join('x'.repeat(65)), /is not 1–64 characters/);
  assert.throws(() => client.on('mesage', () => {}), /unknown event "mesage"; known events: state, welcome/);
  assert.throws(() => client.on('message'), /fn must be a function/);
  assert.throws(() => client.nick(''), /name must be a non-blank string/);
  assert.deepEqual(client.unsent(), [], 'nothing was queued by the refused sends');
});

test('FileStorage refuses a file that is not its JSON', async () => {
  const dir = await tempDir(cleanup, 'natter-filestorage-');
  const file = path.join(dir, 'broken.json');
  writeFileSync(file, '{not json');
  assert.throws(() => new FileStorage(file), /broken\.json is not JSON .*move it away/);
  writeFileSync(file, '[1, 2]');
  assert.throws(() => new FileStorage(file), /must hold a JSON object of strings/);
  assert.throws(() => new FileStorage(''), /file must be a non-empty path string/);
});

test('token mode: a name, or a refused token, asks for credentials and stops; a good token connects', { timeout: 30000 }, async () => {
  const dir = await tempDir(cleanup, 'natter-secret-');
  const secretFile = path.join(dir, 'jwt.secret');
  writeFileSync(secretFile, SECRET);
  const server = await startNatter(cleanup, { extraArgs: ['--auth', 'token', '--jwt-secret-file', secretFile] });
  const client = makeClient(cleanup, { url: server.httpUrl, name: 'no-token', rooms: ['lobby'] });
  const asked = client.next('credentials-needed');
  client.connect();
  assert.deepEqual(await within(asked, 10000, 'credentials-needed'), { auth: 'token', reason: '' });
  assert.equal(client.state, 'idle');
  assert.equal(client.ws, null, 'no socket was opened');

  const now = Math.floor(Date.now() / 1000);
  const stale = makeClient(cleanup, { url: server.httpUrl, token: jwt({ sub: 'u-old', exp: now - 60 }) });
  const refused = stale.next('credentials-needed');
  stale.connect();
  const { reason } = await within(refused, 10000, 'credentials-needed for an expired token');
  assert.match(reason, /refused the connection/);
  assert.equal(stale.state, 'offline');

  const good = makeClient(cleanup, { url: server.httpUrl, token: jwt({ sub: 'u-tok', name: 'tok', exp: now + 600 }) });
  const welcome = good.next('welcome');
  good.connect();
  // `tag` is the library's: the tag of the id, which tells two "tok"s apart.
  assert.deepEqual((await within(welcome, 10000, 'welcome with a good token')).user, { id: 'u-tok', name: 'tok', tag: userTag('u-tok') });
  assert.match(userTag('u-tok'), /^[0-9A-HJKMNP-TV-Z]{6}$/);
  assert.notEqual(userTag('u-tok'), userTag('u-tol'), 'a one-letter change is another tag');
});

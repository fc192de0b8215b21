// www/js as the npm package `natter-client`: `npm pack` gives a tarball of exactly
// its `files`; a throwaway project installs that tarball (and ws) and runs the Node
// bot of docs/CLIENT.md, as written there, against a real natter; and `tsc --noEmit`
// type-checks every code block of docs/CLIENT.md against the installed package's
// declarations, which must also name every event the library emits and every
// method the doc's table lists, and refuse a misspelt event or option.

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CLIENT_DOC, docExample } from './doc-examples.mjs';
import {
  REPO_ROOT, connected, makeClient, post, startNatter, suiteCleanup, tempDir, within,
} from './support.mjs';
import { EVENTS } from '../../www/js/natter-client.js';

const run = promisify(execFile);
const cleanup = suiteCleanup();
const HERE = path.dirname(fileURLToPath(import.meta.url));
const PACKAGE_DIR = path.join(REPO_ROOT, 'www', 'js');
const TSC = path.join(HERE, 'node_modules', 'typescript', 'bin', 'tsc');
const WS_VERSION = JSON.parse(readFileSync(path.join(HERE, 'package.json'), 'utf8')).devDependencies.ws;

/** The packed tarball and the project that installed it, made once for the file. */
let packed;
let project;

before(async () => {
  const dir = await tempDir(cleanup, 'natter-package-');
  const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: PACKAGE_DIR });
  [packed] = JSON.parse(stdout);
  packed.path = path.join(dir, packed.filename);
  project = path.join(dir, 'app');
  await run('mkdir', ['-p', project]);
  await writeFile(path.join(project, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  // ws from npm's cache when it has it (the tests' own npm ci put it there).
  await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', packed.path, `ws@${WS_VERSION}`], { cwd: project });
});

test('npm pack gives a tarball of exactly the files package.json lists', () => {
  const manifest = JSON.parse(readFileSync(path.join(PACKAGE_DIR, 'package.json'), 'utf8'));
  assert.equal(packed.filename, `natter-client-${manifest.version}.tgz`);
  const shipped = packed.files.map((f) => f.path).sort();
  assert.deepEqual(shipped, [...manifest.files, 'package.json'].sort());
  assert.equal(manifest.peerDependencies.ws !== undefined, true, 'ws is a peer dependency');
});

/** docs/CLIENT.md's ```js blocks, each with the name of its `<!-- example: NAME -->` marker (or its index). */
function docBlocks() {
  const markdown = readFileSync(CLIENT_DOC, 'utf8');
  return [...markdown.matchAll(/(?:<!-- example: ([a-z-]+) -->\n)?```js\n([\s\S]*?)\n```\n/g)]
    .map((m, i) => ({ name: m[1] ?? `block-${i}`, code: m[2] }));
}

/** What a snippet takes from the page around it (the runnable examples need nothing). */
const CONTEXT = {
  'typing-read': `import type { NatterClient } from 'natter-client';
declare const client: NatterClient;
declare const room: string;
declare const input: HTMLInputElement;
declare const pane: HTMLElement;
declare function atBottom(pane: HTMLElement): boolean;
declare function showUnreadAfter(room: string, seq: number): void;
`,
  reactions: `declare const client: import('natter-client').NatterClient;
`,
  mentions: `declare const client: import('natter-client').NatterClient;
declare function showMentionBadge(room: string, count: number): void;
`,
  files: `import type { NatterClient, FileInfo } from 'natter-client';
declare const client: NatterClient;
declare const blobOrFile: Blob;
declare const bar: HTMLProgressElement;
declare function show(f: FileInfo, url: string): void;
`,
  replies: `import type { NatterClient, Message } from 'natter-client';
declare const client: NatterClient;
declare function showQuote(m: Message, text: string): void;
`,
  paging: `import type { NatterClient, Message } from 'natter-client';
declare const client: NatterClient;
declare const oldestShownSeq: number;
declare function prepend(messages: Message[]): void;
`,
};

/** Checks the declarations themselves: every event and documented method is there, exactly. */
function declarationChecks() {
  const markdown = readFileSync(CLIENT_DOC, 'utf8');
  const table = markdown.slice(markdown.indexOf('### Methods'), markdown.indexOf('### Events'));
  const methods = [...new Set([...table.matchAll(/^\| (.*?) \|/gm)].flatMap((row) => [...row[1].matchAll(/`(\w+)\(/g)].map((m) => m[1])))];
  assert.ok(methods.length >= 25, `the doc's method table: ${methods}`);
  return `import { NatterClient, EVENTS, type NatterEvents } from 'natter-client';
type Exact<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Emitted = ${EVENTS.map((e) => `'${e}'`).join(' | ')};
const everyEventAndNoOther: Exact<Emitted, keyof NatterEvents> = true;
const documented: (keyof NatterClient)[] = [${methods.map((m) => `'${m}'`).join(', ')}];
const client = new NatterClient({ url: 'http://127.0.0.1:8080', name: 'checker', rooms: ['lobby'] });
client.on('message', (m) => { const seq: number = m.seq; const uid: string = m.uid; });
client.on('ack', (a) => { const dup: boolean = a.dup; });
const events: readonly string[] = EVENTS;
// @ts-expect-error a misspelt event
client.on('mesage', () => {});
// @ts-expect-error an option the client does not take
new NatterClient({ url: 'http://127.0.0.1:8080', colour: 'red' });
// @ts-expect-error seq is a number
client.on('ack', (a) => { const seq: string = a.seq; });
// @ts-expect-error send takes a room and a text
client.send('lobby');
export { everyEventAndNoOther, documented, events };
`;
}

test("tsc --noEmit accepts docs/CLIENT.md's examples against the package's declarations", { timeout: 120000 }, async () => {
  const dir = path.join(project, 'doc');
  await run('mkdir', ['-p', dir]);
  const files = [];
  for (const { name, code } of docBlocks()) {
    const file = `${name}.ts`;
    await writeFile(path.join(dir, file), `${CONTEXT[name] ?? ''}${code}\nexport {};\n`);
    files.push(`doc/${file}`);
  }
  assert.ok(files.includes('doc/bot.ts') && files.includes('doc/widget.ts'), `${files}`);
  await writeFile(path.join(dir, 'declarations.ts'), declarationChecks());
  files.push('doc/declarations.ts');
  const tsconfig = {
    compilerOptions: {
      noEmit: true,
      strict: true,
      // The examples are JavaScript, as a page or bot writes it: checked for what the
      // declarations say, not made to prove every value non-null.
      strictNullChecks: false,
      noImplicitAny: false,
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      lib: ['ES2022', 'DOM'],
      types: ['node'],
      typeRoots: [path.join(HERE, 'node_modules', '@types')],
      // The widget imports the copy natter serves; it is the package's.
      paths: { '/js/natter-client.js': ['./node_modules/natter-client/natter-client.d.ts'] },
    },
    files,
  };
  await writeFile(path.join(project, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2));
  try {
    await run(process.execPath, [TSC, '--noEmit', '-p', project], { cwd: project });
  } catch (error) {
    assert.fail(`tsc refused:\n${error.stdout}${error.stderr}`);
  }
});

/** Runs the bot of docs/CLIENT.md, unchanged, in the project; resolves once it says it is online. */
async function startBot(server) {
  const file = path.join(project, 'bot.mjs');
  await writeFile(file, docExample('bot'));
  const child = spawn(process.execPath, [file], {
    cwd: project,
    env: { ...process.env, NATTER_URL: server.httpUrl, TIMEBOT_STATE: path.join(project, 'state.json') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  cleanup.add(async () => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGTERM');
    await exited;
  });
  let output = '';
  const online = new Promise((resolve, reject) => {
    child.stdout.on('data', (chunk) => {
      output += chunk;
      if (output.includes('timebot: online')) resolve();
    });
    child.stderr.on('data', (chunk) => { output += chunk; });
    exited.then((code) => reject(new Error(`the bot exited (code ${code}):\n${output}`)));
  });
  await within(online, 15000, `the bot to say "timebot: online"; it said:\n${output}`);
  return { child, exited };
}

test('the !time bot of docs/CLIENT.md, installed from the tarball, answers !time, and only that', { timeout: 60000 }, async () => {
  const server = await startNatter(cleanup);
  const bot = await startBot(server);
  const asker = makeClient(cleanup, { url: server.httpUrl, name: 'asker', rooms: ['lobby'] });
  const fromBot = [];
  asker.on('message', (m) => {
    if (m.user === 'timebot') fromBot.push(m);
  });
  await connected(asker);

  const reply = asker.next('message', (m) => m.user === 'timebot');
  const chatter = await post(asker, 'lobby', 'what time is it?');
  const question = await post(asker, 'lobby', '!time');
  const answer = await within(reply, 10000, "the bot's answer");
  assert.match(answer.text, /^asker: it is \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.ok(answer.seq > question.seq && question.seq > chatter.seq);
  // The asker's next post comes after the answer: by then a second answer would have shown.
  const marker = asker.next('message', (m) => m.text === 'thanks');
  await post(asker, 'lobby', 'thanks');
  await within(marker, 5000, 'the next post');
  assert.deepEqual(fromBot.map((m) => m.seq), [answer.seq], 'one answer, to !time only');

  process.kill(bot.child.pid, 'SIGTERM');
  assert.equal(await within(bot.exited, 5000, 'the bot to exit on SIGTERM'), 0);
});

// The Node bot of docs/CLIENT.md, run as written there (only its ./www/js/
// import prefix points at this repository): it connects, ignores other
// talk, and answers "!time" with the time once.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { docExample } from './doc-examples.mjs';
import {
  REPO_ROOT, connected, makeClient, post, startNatter, suiteCleanup, tempDir, within,
} from './support.mjs';

const cleanup = suiteCleanup();
const HERE = path.dirname(fileURLToPath(import.meta.url));

/** Runs the bot in its own process; resolves once it says it is online. */
async function startBot(server, dir) {
  const code = docExample('bot');
  const prefix = "'./www/js/";
  assert.equal(code.split(prefix).length - 1, 2, 'the bot imports natter-client.js and file-storage.js');
  const file = path.join(dir, 'bot.mjs');
  await writeFile(file, code.replaceAll(prefix, `'${pathToFileURL(path.join(REPO_ROOT, 'www', 'js'))}/`));
  // cwd here: ws is found in tests/client/node_modules, as in a project that installed it.
  const child = spawn(process.execPath, [file], {
    cwd: HERE,
    env: { ...process.env, NATTER_URL: server.httpUrl, TIMEBOT_STATE: path.join(dir, 'state.json') },
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
  return { child, exited, output: () => output };
}

test('the !time bot of docs/CLIENT.md answers !time, and only that', { timeout: 60000 }, async () => {
  const server = await startNatter(cleanup);
  const bot = await startBot(server, await tempDir(cleanup, 'natter-bot-'));
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

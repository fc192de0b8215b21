// User text is text: markup in a message renders literally and runs nothing.
// Links are made only by www/js/linkify.js, and only for http(s).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  setupSuite, assertNoConsoleErrors, openChat, openPage, send, waitForMessage,
} from './helpers.mjs';

const env = setupSuite();

test('markup in messages renders as text and fires no dialog', async () => {
  const alice = await openChat(env.browser, env.server, 'alice');
  const bob = await openChat(env.browser, env.server, 'bob');
  const dialogs = [];
  for (const { page } of [alice, bob]) {
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.message());
      dialog.dismiss().catch(() => {});
    });
  }
  const evil = ['<img src=x onerror=alert(1)>', '<script>alert(2)</script>', 'see javascript:alert(3) and <a href="javascript:alert(4)">x</a>'];
  for (const text of evil) await send(alice.page, text);
  for (const text of evil) {
    await waitForMessage(bob.page, 'lobby', text);
    await waitForMessage(alice.page, 'lobby', text);
  }
  for (const { page } of [alice, bob]) {
    const injected = await page.evaluate(() => ({
      img: document.querySelectorAll('.messages img').length,
      script: document.querySelectorAll('.messages script').length,
      links: [...document.querySelectorAll('.messages a')].map((a) => a.getAttribute('href')),
    }));
    assert.deepEqual(injected, { img: 0, script: 0, links: [] });
  }
  // Give a would-be onerror handler the chance to run before concluding.
  await alice.page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 100))));
  assert.deepEqual(dialogs, []);

  await send(alice.page, 'docs at https://example.com/a?b=1&c=<2>. and http://x.test');
  await waitForMessage(bob.page, 'lobby', 'docs at https://example.com/a?b=1&c=<2>. and http://x.test');
  const links = await bob.page.evaluate(() => [...document.querySelectorAll('.messages a')]
    .map((a) => ({ href: a.getAttribute('href'), text: a.textContent, rel: a.rel, target: a.target })));
  assert.deepEqual(links, [
    { href: 'https://example.com/a?b=1&c=', text: 'https://example.com/a?b=1&c=', rel: 'noopener noreferrer', target: '_blank' },
    { href: 'http://x.test/', text: 'http://x.test', rel: 'noopener noreferrer', target: '_blank' },
  ]);

  assertNoConsoleErrors(assert, alice.consoleErrors);
  assertNoConsoleErrors(assert, bob.consoleErrors);
});

test('the link function links http(s) only, with rel="noopener noreferrer"', async () => {
  const { page, consoleErrors } = await openPage(env.browser, env.server.httpUrl);
  const result = await page.evaluate(async () => {
    const { linkify, makeLink, safeHref } = await import('/js/linkify.js');
    const render = (text) => {
      const div = document.createElement('div');
      div.append(linkify(text));
      return {
        text: div.textContent,
        links: [...div.querySelectorAll('a')].map((a) => [a.getAttribute('href'), a.rel, a.target]),
        elements: div.querySelectorAll('*').length,
      };
    };
    return {
      safe: ['javascript:alert(1)', 'JaVaScRiPt:alert(1)', ' javascript:alert(1)', 'data:text/html,x',
        'vbscript:x', '/relative', 'ftp://x.test', 'http://x.test', 'https://x.test/p?q=1']
        .map((href) => [href, safeHref(href)]),
      makeJs: makeLink('javascript:alert(1)', 'x'),
      plainJs: render('javascript:alert(1)'),
      mixed: render('go to https://ok.test/path, not javascript:alert(1)//https://ok.test'),
      markup: render('<b>https://ok.test</b>'),
    };
  });
  assert.deepEqual(result.safe, [
    ['javascript:alert(1)', null], ['JaVaScRiPt:alert(1)', null], [' javascript:alert(1)', null],
    ['data:text/html,x', null], ['vbscript:x', null], ['/relative', null], ['ftp://x.test', null],
    ['http://x.test', 'http://x.test/'], ['https://x.test/p?q=1', 'https://x.test/p?q=1'],
  ]);
  assert.equal(result.makeJs, null);
  assert.deepEqual(result.plainJs, { text: 'javascript:alert(1)', links: [], elements: 0 });
  assert.equal(result.mixed.text, 'go to https://ok.test/path, not javascript:alert(1)//https://ok.test');
  assert.deepEqual(result.mixed.links, [
    ['https://ok.test/path', 'noopener noreferrer', '_blank'],
    ['https://ok.test/', 'noopener noreferrer', '_blank'],
  ]);
  assert.deepEqual(result.markup, {
    text: '<b>https://ok.test</b>',
    links: [['https://ok.test/', 'noopener noreferrer', '_blank']],
    elements: 1,
  });
  assertNoConsoleErrors(assert, consoleErrors);
});

/** Waits until a delivered message's raw text (as typed) is `text` in the lobby. */
async function waitForRaw(page, text) {
  await page.waitForFunction((t) => [...document.querySelectorAll('.messages[data-room="lobby"] li.msg[data-seq]')]
    .some((el) => el.rawText === t), text);
}

test('formatting builds elements, never HTML from the text, and links http(s) only', { timeout: 60000 }, async () => {
  const alice = await openChat(env.browser, env.server, 'alice');
  const bob = await openChat(env.browser, env.server, 'bob');
  const dialogs = [];
  bob.page.on('dialog', (dialog) => {
    dialogs.push(dialog.message());
    dialog.dismiss().catch(() => {});
  });
  const evil = [
    '**<img src=x onerror=alert(5)>**',
    '`<script>alert(6)</script>`',
    '[click](javascript:alert(7))',
    '[x](https://ok.test/"><img src=x onerror=alert(8)>)',
    '> <img src=x onerror=alert(9)>',
    '```\n<script>alert(10)</script>\n<img src=x onerror=alert(11)>\n```',
    '_<svg onload=alert(12)>_ and *<iframe src="javascript:alert(13)">*',
    '[**x**](data:text/html,<script>alert(14)</script>)',
  ];
  for (const text of evil) await send(alice.page, text);
  for (const text of evil) await waitForRaw(bob.page, text);
  await bob.page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 100))));
  const injected = await bob.page.evaluate(() => ({
    bad: document.querySelectorAll('.messages img, .messages script, .messages svg, .messages iframe').length,
    links: [...document.querySelectorAll('.messages a')].map((a) => a.getAttribute('href')),
    attributes: [...document.querySelectorAll('.messages .msg-text *')]
      .flatMap((el) => [...el.attributes].map((a) => a.name)).filter((n) => !['href', 'rel', 'target'].includes(n)),
  }));
  assert.deepEqual(injected.bad, 0);
  assert.deepEqual(injected.links.filter((h) => !/^https?:\/\/[^"<>\s]+$/.test(h)), [], 'no link but http(s)');
  assert.ok(!injected.links.some((h) => h.includes('javascript') || h.includes('data:')), `${injected.links}`);
  assert.deepEqual(injected.attributes, [], 'formatting sets no attribute from the text');
  assert.deepEqual(dialogs, []);

  // What a user formats: bold, italic, code, a quote, a link and a code block.
  const code = 'fn main() {\n    println!("hi");\n\n        // indented\n}';
  await send(alice.page, `**bold** *it* _also_ \`x < y\` [docs](https://example.com/d) snake_case_name\n> quoted\n\`\`\`\n${code}\n\`\`\``);
  await bob.page.waitForSelector('.messages[data-room="lobby"] li.msg[data-seq] pre code');
  const shown = await bob.page.evaluate(() => {
    const li = [...document.querySelectorAll('.messages[data-room="lobby"] li.msg[data-seq]')].pop();
    const t = li.querySelector('.msg-text');
    return {
      strong: t.querySelector('strong')?.textContent,
      em: [...t.querySelectorAll('em')].map((e) => e.textContent),
      code: t.querySelector(':scope > code')?.textContent,
      link: [t.querySelector('a')?.getAttribute('href'), t.querySelector('a')?.textContent],
      quote: t.querySelector('blockquote')?.textContent,
      block: t.querySelector('pre code')?.textContent,
      whiteSpace: getComputedStyle(t.querySelector('pre')).whiteSpace,
      snake: t.textContent.includes('snake_case_name'),
    };
  });
  assert.deepEqual(shown, {
    strong: 'bold', em: ['it', 'also'], code: 'x < y', link: ['https://example.com/d', 'docs'],
    quote: 'quoted', block: code, whiteSpace: 'pre', snake: true,
  });
  assertNoConsoleErrors(assert, alice.consoleErrors);
  assertNoConsoleErrors(assert, bob.consoleErrors);
});

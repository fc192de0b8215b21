// The runnable examples of docs/CLIENT.md, taken from the markdown itself so
// the doc cannot drift from what the tests run. An example is the fenced
// block right after a `<!-- example: NAME -->` line.
// Must never: edit an example beyond what its caller states and checks.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '../browser/natter-process.mjs';

export const CLIENT_DOC = path.join(REPO_ROOT, 'docs', 'CLIENT.md');

export function docExample(name) {
  const markdown = readFileSync(CLIENT_DOC, 'utf8');
  const pattern = new RegExp(`<!-- example: ${name} -->\\n\`\`\`[a-z]*\\n([\\s\\S]*?)\\n\`\`\`\\n`);
  const match = markdown.match(pattern);
  if (!match) throw new Error(`${CLIENT_DOC} has no block after "<!-- example: ${name} -->"`);
  return `${match[1]}\n`;
}

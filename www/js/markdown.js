// A safe Markdown subset for message text, built as DOM nodes: **bold**, *italic* (or
// _italic_), `inline code`, ``` code blocks ``` (whitespace kept), > block quotes, and
// links — [text](https://…) or a bare URL — for http(s) only, through linkify.js.
// Must never: insert HTML from the text (no innerHTML, no attribute but a checked href);
// every piece of user text becomes a text node.

import { linkify, makeLink } from './linkify.js';

const FENCE = /^\s*```/;
// Inline: `code`, **bold**, *italic* / _italic_, [text](url). Markers must hug the
// text (`* a *` is not italic), and `_` only counts outside words (snake_case stays).
const INLINE = /`([^`\n]+)`|\*\*(?=\S)([\s\S]*?\S)\*\*|\*(?=[^\s*])([^*\n]*?[^\s*])\*|(?<![\p{L}\p{N}_])_(?=[^\s_])([^_\n]*?[^\s_])_(?![\p{L}\p{N}_])|\[([^\]\n]+)\]\(([^)\s]+)\)/gu;

/** A fragment of DOM nodes for message `text` (the subset above; everything else as text). */
export function renderMarkdown(text, doc = document) {
  const fragment = doc.createDocumentFragment();
  const lines = String(text).split('\n');
  let prose = [];
  const flushProse = () => {
    if (prose.length === 0) return;
    fragment.append(renderProse(prose, doc));
    prose = [];
  };
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i];
    if (FENCE.test(line)) {
      const end = lines.findIndex((l, j) => j > i && FENCE.test(l));
      if (end !== -1) {
        flushProse();
        const pre = doc.createElement('pre');
        const code = doc.createElement('code');
        code.textContent = lines.slice(i + 1, end).join('\n');
        pre.append(code);
        fragment.append(pre);
        i = end;
        continue;
      }
    }
    if (/^>( |$)/.test(line)) {
      flushProse();
      const quote = doc.createElement('blockquote');
      const quoted = [];
      while (i < lines.length && /^>( |$)/.test(lines[i])) {
        quoted.push(lines[i].replace(/^> ?/, ''));
        i += 1;
      }
      i -= 1;
      quote.append(renderProse(quoted, doc));
      fragment.append(quote);
      continue;
    }
    prose.push(line);
  }
  flushProse();
  return fragment;
}

/** Lines of prose (inline markup only), joined by newlines (the pane keeps them). */
function renderProse(lines, doc) {
  const fragment = doc.createDocumentFragment();
  fragment.append(renderInline(lines.join('\n'), doc));
  return fragment;
}

/** Inline markup of `text` as nodes; plain runs go through linkify (bare http(s) URLs). */
export function renderInline(text, doc = document) {
  const fragment = doc.createDocumentFragment();
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    fragment.append(linkify(text.slice(last, m.index), doc));
    const [whole, code, bold, star, under, label, href] = m;
    if (code !== undefined) {
      const el = doc.createElement('code');
      el.textContent = code;
      fragment.append(el);
    } else if (bold !== undefined) {
      const el = doc.createElement('strong');
      el.append(renderInline(bold, doc));
      fragment.append(el);
    } else if (star !== undefined || under !== undefined) {
      const el = doc.createElement('em');
      el.append(renderInline(star ?? under, doc));
      fragment.append(el);
    } else {
      // [label](href): a link only for http(s); anything else stays as typed.
      const link = makeLink(href, label, doc);
      fragment.append(link ?? doc.createTextNode(whole));
    }
    last = m.index + whole.length;
  }
  fragment.append(linkify(text.slice(last), doc));
  return fragment;
}

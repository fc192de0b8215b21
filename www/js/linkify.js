// The one place where user text may become a clickable link.
// Everything else in the page writes user text through textContent.

const URL_PATTERN = /\bhttps?:\/\/[^\s<>"'`]+/gi;
const TRAILING_PUNCTUATION = /[.,;:!?)\]}]+$/;

/**
 * Returns the normalised href when `candidate` is an absolute http(s) URL,
 * otherwise null. `javascript:`, `data:` and relative URLs are never links.
 */
export function safeHref(candidate) {
  let url;
  try {
    url = new URL(candidate);
  } catch {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  return url.href;
}

/** An anchor for `href` showing `text`, or null when href is not http(s). */
export function makeLink(href, text, doc = document) {
  const safe = safeHref(href);
  if (safe === null) return null;
  const a = doc.createElement('a');
  a.href = safe;
  a.textContent = text;
  a.rel = 'noopener noreferrer';
  a.target = '_blank';
  return a;
}

/** A fragment of text nodes and http(s) links built from plain `text`. */
export function linkify(text, doc = document) {
  const fragment = doc.createDocumentFragment();
  let last = 0;
  for (const match of text.matchAll(URL_PATTERN)) {
    const url = match[0].replace(TRAILING_PUNCTUATION, '');
    const link = makeLink(url, url, doc);
    if (link === null) continue;
    fragment.append(doc.createTextNode(text.slice(last, match.index)), link);
    last = match.index + url.length;
  }
  fragment.append(doc.createTextNode(text.slice(last)));
  return fragment;
}

// Message text for display. Markdown goes through the provider's own renderer
// (src/protocol/markdown.ts: no raw HTML, only http(s)/mailto links, images become links) and then
// through DOMPurify with a strict allow-list, so that even a renderer bug cannot put script, event
// handlers, styles, forms or anything that loads remote content into the page.
import DOMPurify from 'dompurify';
import { renderMarkdown } from '../../src/protocol/markdown.js';

const ALLOWED_TAGS = ['p', 'br', 'strong', 'em', 's', 'del', 'code', 'pre', 'blockquote', 'ul', 'ol', 'li', 'a', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'hr', 'table', 'thead', 'tbody', 'tr', 'th', 'td'];
const ALLOWED_ATTR = ['href', 'title', 'start', 'align'];

const purify = DOMPurify(window);
purify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A') {
    // Links open in a new tab, without the opener or a referrer.
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer nofollow');
  }
});

export function sanitize(html: string): string {
  return purify.sanitize(html, {
    ALLOWED_TAGS,
    ALLOWED_ATTR,
    ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
    ALLOW_DATA_ATTR: false,
    ALLOW_ARIA_ATTR: false,
    KEEP_CONTENT: true,
  });
}

const cache = new Map<string, string>();

/** Safe HTML for a markdown source (cached: messages re-render often). */
export function markdownHtml(source: string): string {
  let html = cache.get(source);
  if (html === undefined) {
    html = sanitize(renderMarkdown(source));
    if (cache.size > 1000) cache.delete(cache.keys().next().value!);
    cache.set(source, html);
  }
  return html;
}

// Markdown for display: `messageFormatted` with `format: text/markdown` (seed 000) and rich/1
// text, rendered to HTML that is safe to insert as innerHTML. Pure: no I/O, no remote content.
//
// * No raw HTML ever passes (markdown-it `html: false`: `<` in the source is text, `&lt;`).
// * Links only to http:, https: and mailto: (markdown-it's validateLink plus our allow-list, so
//   relative, protocol-relative, javascript:, data:, vbscript:, file: … become plain text), each
//   with rel="noopener noreferrer nofollow" target="_blank".
// * Images are not rendered as <img>: the receiver must not fetch remote content the user did
//   not ask for (MIMI's link-preview concern). An image becomes a link with its alt text.
import MarkdownIt from 'markdown-it';
import type { Token } from 'markdown-it';

const SAFE_HREF = /^(?:https?:\/\/[^\s]|mailto:[^\s])/i;
const LINK_ATTRS = ' rel="noopener noreferrer nofollow" target="_blank"';

/** True for the only link targets we render: absolute http(s) URLs and mailto: addresses. */
export function isSafeHref(href: string): boolean {
  return SAFE_HREF.test(href) && !/[\x00-\x20\x7f"'<>`\\]/.test(href);
}

const md = new MarkdownIt('default', { html: false, linkify: true, breaks: true, typographer: false });
const escapeHtml = md.utils.escapeHtml;

// Links a rule refuses never become links: linkify skips them, [text](url) keeps its text only.
const defaultValidate = md.validateLink.bind(md);
md.validateLink = (url: string): boolean => defaultValidate(url) && isSafeHref(url.trim());

/** The index of the link_close that ends the link opened at `idx` (links do not nest). */
function closing(tokens: Token[], idx: number): number {
  for (let i = idx + 1; i < tokens.length; i++) if (tokens[i]!.type === 'link_close') return i;
  return -1;
}

md.renderer.rules.link_open = (tokens, idx) => {
  const t = tokens[idx]!;
  const href = String(t.attrGet('href') ?? '');
  if (!isSafeHref(href)) {
    // Dropped: render the text without an anchor (its close tag goes too).
    const end = closing(tokens, idx);
    if (end >= 0) tokens[end]!.meta = { dropped: true };
    return '';
  }
  const title = String(t.attrGet('title') ?? '');
  return `<a href="${escapeHtml(href)}"${title ? ` title="${escapeHtml(title)}"` : ''}${LINK_ATTRS}>`;
};

md.renderer.rules.link_close = (tokens, idx) => ((tokens[idx]!.meta as { dropped?: boolean } | null)?.dropped ? '' : '</a>');

md.renderer.rules.image = (tokens, idx, options, env, self) => {
  const t = tokens[idx]!;
  const src = String(t.attrGet('src') ?? '');
  const alt = self.renderInlineAsText(t.children ?? [], options, env);
  // Inside a link (`[![alt](img)](url)`) the alt text is enough: anchors must not nest.
  let open = 0;
  for (let i = 0; i < idx; i++) {
    const x = tokens[i]!;
    if (x.type === 'link_open' && isSafeHref(String(x.attrGet('href') ?? ''))) open++;
    else if (x.type === 'link_close' && !(x.meta as { dropped?: boolean } | null)?.dropped) open--;
  }
  if (open > 0 || !isSafeHref(src)) return escapeHtml(alt);
  return `<a href="${escapeHtml(src)}"${LINK_ATTRS}>${escapeHtml(alt || src)}</a>`;
};

/** Renders markdown to HTML that is safe to insert as innerHTML. Never throws on a string. */
export function renderMarkdown(source: string): string {
  return md.render(source);
}

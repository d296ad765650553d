// Property tests for renderMarkdown (src/protocol/markdown.ts): whatever the source — arbitrary
// strings or generated attacks — the HTML has only known tags with known attributes, no raw HTML,
// no <img>/<script>/<iframe>, no event handlers, and links only to http(s) or mailto with
// rel="noopener noreferrer nofollow" target="_blank". Plus examples that formatting still works.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { renderMarkdown, isSafeHref } from '../src/protocol/markdown.js';

// ---------------------------------------------------------------------------------------------
// What safe output looks like

/** Every tag markdown-it may produce for us (no html, no images). */
const TAGS = new Set(['p', 'br', 'strong', 'em', 's', 'code', 'pre', 'blockquote', 'ul', 'ol', 'li', 'a', 'hr', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'table', 'thead', 'tbody', 'tr', 'th', 'td']);
const ATTRS: Record<string, Set<string>> = {
  a: new Set(['href', 'title', 'rel', 'target']),
  ol: new Set(['start']),
  code: new Set(['class']),
  th: new Set(['style']),
  td: new Set(['style']),
};
/** A tag as the renderer writes it: name, then only name="value" attributes whose value holds no quote. */
const TAG = /^<(\/?)([a-z][a-z0-9]*)((?: [a-z]+="[^"<>]*")*)\s*\/?>$/;

interface Checked {
  hrefs: string[];
}

/** Asserts the structural safety of `html`; returns the hrefs found. */
function assertSafe(html: string, source: string): Checked {
  const ctx = () => `\nsource: ${JSON.stringify(source)}\nhtml: ${JSON.stringify(html)}`;
  assert.ok(!/<script/i.test(html), `<script${ctx()}`);
  assert.ok(!/<img/i.test(html), `<img${ctx()}`);
  assert.ok(!/<iframe/i.test(html), `<iframe${ctx()}`);
  assert.ok(!/<svg/i.test(html), `<svg${ctx()}`);
  assert.ok(!/<style/i.test(html), `<style${ctx()}`);
  // Outside tags there is only text: no stray "<" or ">" that a parser could read as markup.
  const hrefs: string[] = [];
  const parts = html.split(/(<[^<>]*>)/);
  for (const [i, part] of parts.entries()) {
    if (i % 2 === 0) {
      assert.ok(!part.includes('<') && !part.includes('>'), `raw angle bracket in text ${JSON.stringify(part)}${ctx()}`);
      continue;
    }
    const m = TAG.exec(part);
    assert.ok(m, `malformed tag ${JSON.stringify(part)}${ctx()}`);
    const [, closing, name, attrText] = m;
    assert.ok(TAGS.has(name!), `unexpected tag <${name}>${ctx()}`);
    if (closing) {
      assert.equal(attrText, '', `attributes on a closing tag${ctx()}`);
      continue;
    }
    const attrs = new Map<string, string>();
    for (const a of attrText!.matchAll(/ ([a-z]+)="([^"]*)"/g)) {
      assert.ok(!attrs.has(a[1]!), `duplicate attribute ${a[1]}${ctx()}`);
      attrs.set(a[1]!, a[2]!);
    }
    for (const [k, v] of attrs) {
      assert.ok(!/^on/i.test(k), `event handler ${k}${ctx()}`);
      assert.ok(ATTRS[name!]?.has(k), `unexpected attribute ${k} on <${name}>${ctx()}`);
      if (k === 'style') assert.match(v, /^text-align:(left|right|center)$/, `style${ctx()}`);
      if (k === 'class') assert.match(v, /^language-[^\s]*$/, `class${ctx()}`);
      if (k === 'start') assert.match(v, /^\d+$/);
    }
    if (name === 'a') {
      const href = attrs.get('href');
      assert.ok(href !== undefined, `<a> without href${ctx()}`);
      const decoded = decodeEntities(href);
      assert.ok(/^(https?:\/\/|mailto:)/i.test(decoded), `href ${JSON.stringify(href)}${ctx()}`);
      // The scheme is what a browser acts on: "javascript:" inside an https URL's path is text.
      assert.ok(['http:', 'https:', 'mailto:'].includes(new URL(decoded).protocol), `href scheme ${JSON.stringify(href)}${ctx()}`);
      assert.equal(attrs.get('rel'), 'noopener noreferrer nofollow', `rel${ctx()}`);
      assert.equal(attrs.get('target'), '_blank', `target${ctx()}`);
      hrefs.push(decoded);
    }
  }
  // No href (anywhere) starts with a script-capable scheme.
  for (const h of html.matchAll(/href="([^"]*)"/g)) assert.ok(!/^\s*(javascript|vbscript|data|file):/i.test(decodeEntities(h[1]!)), `href ${h[1]}${ctx()}`);
  return { hrefs };
}

function decodeEntities(s: string): string {
  return s
    .replace(/&#x([0-9a-f]+);?/gi, (_, h: string) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/&#(\d+);?/g, (_, d: string) => String.fromCodePoint(Number(d)))
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

// ---------------------------------------------------------------------------------------------
// Generators of malicious input

/** Random upper/lower case per character. */
const mixedCase = (s: string) => fc.array(fc.boolean(), { minLength: s.length, maxLength: s.length }).map((b) => [...s].map((c, i) => (b[i] ? c.toUpperCase() : c.toLowerCase())).join(''));
/** A character written literally, as a decimal or hex entity (with or without the semicolon), or percent-encoded. */
const obfuscatedChar = (c: string) =>
  fc.constantFrom(c, `&#${c.charCodeAt(0)};`, `&#x${c.charCodeAt(0).toString(16)};`, `&#X${c.charCodeAt(0).toString(16).toUpperCase()};`, `&#0000${c.charCodeAt(0)};`, `%${c.charCodeAt(0).toString(16)}`);
const obfuscated = (s: string) => mixedCase(s).chain((m) => fc.tuple(...[...m].map(obfuscatedChar)).map((cs) => cs.join('')));
/** Whitespace and control characters browsers strip or ignore inside schemes. */
const junk = fc.constantFrom('', ' ', '\t', '\n', '\u0000', '&#9;', '&#10;', '&Tab;', '&NewLine;', '\u200b', '%09');
const scheme = fc.constantFrom('javascript', 'vbscript', 'data', 'file', 'jav\tascript', 'java\nscript', 'java\u0000script');
const payload = fc.constantFrom('alert(1)', 'alert(document.cookie)', 'text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==', 'image/svg+xml,<svg onload=alert(1)>', 'msgbox("x")', '//%0aalert(1)', 'image/png;base64,iVBORw0KGgo=');
const badUrl = fc.tuple(junk, scheme.chain(obfuscated), junk, fc.constantFrom(':', '&colon;', '&#58;', '&#x3a;', '%3a'), payload).map((p) => p.join(''));
const safeUrl = fc.constantFrom('https://example.com/', 'http://a.example/x?y=1&z=2', 'mailto:alice@example.com', 'HTTPS://EXAMPLE.COM/A', 'https://example.com/"onmouseover="alert(1)');

/** Raw HTML a sender might try: tags, handlers, styles, svg, iframes, comments, CDATA. */
const rawHtml = fc.constantFrom(
  '<script>alert(1)</script>',
  '<SCRIPT SRC=//evil.example/x.js></SCRIPT>',
  '<scr<script>ipt>alert(1)</script>',
  '<img src=x onerror=alert(1)>',
  '<img src="https://tracker.example/pixel.gif">',
  '<IMG SRC="javascript:alert(1)">',
  '<iframe src="https://evil.example"></iframe>',
  '<svg onload=alert(1)>',
  '<svg><script>alert(1)</script></svg>',
  '<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>',
  '<style>body{display:none}</style>',
  '<div style="background:url(javascript:alert(1))">x</div>',
  '<a href="javascript:alert(1)">click</a>',
  '<a href=javascript:alert(1)>click</a>',
  '<body onload=alert(1)>',
  '<input autofocus onfocus=alert(1)>',
  '<details open ontoggle=alert(1)>',
  '<!-- <script>alert(1)</script> -->',
  '<![CDATA[<script>alert(1)</script>]]>',
  '<object data="javascript:alert(1)"></object>',
  '<embed src="javascript:alert(1)">',
  '<link rel=stylesheet href=https://evil.example/x.css>',
  '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
  '<base href="javascript:/">',
  '<form action="javascript:alert(1)"><button>x</button></form>',
  '"><script>alert(1)</script>',
  '\'><img src=x onerror=alert(1)>',
  '<a onmouseover="alert(1)">x</a>',
  '<p onclick=alert(1)>x</p>',
);

/** Markdown constructs carrying a URL. */
const withUrl = (u: fc.Arbitrary<string>) =>
  fc.oneof(
    fc.tuple(fc.string({ maxLength: 8 }), u).map(([t, x]) => `[${t || 'x'}](${x})`),
    fc.tuple(fc.string({ maxLength: 8 }), u).map(([t, x]) => `[${t || 'x'}](<${x}>)`),
    fc.tuple(fc.string({ maxLength: 8 }), u).map(([t, x]) => `[${t || 'x'}](${x} "title onclick=alert(1)")`),
    fc.tuple(fc.string({ maxLength: 8 }), u).map(([t, x]) => `![${t}](${x})`),
    fc.tuple(fc.string({ maxLength: 8 }), u).map(([t, x]) => `![${t}](${x} "t")`),
    u.map((x) => `<${x}>`),
    u.map((x) => `[ref]\n\n[ref]: ${x}`),
    u.map((x) => `![ref]\n\n[ref]: ${x} "t"`),
    u.map((x) => `see ${x} now`),
    fc.tuple(u, u).map(([a, b]) => `[![img](${a})](${b})`),
  );

/** Attacks mixed into ordinary markdown. */
const malicious = fc
  .array(fc.oneof(rawHtml, withUrl(badUrl), withUrl(safeUrl), fc.constantFrom('**', '_', '`', '\n', '\n\n', '> ', '- ', '1. ', '```\n', '    ', '|a|b|\n|-|-|\n', ' on', 'onerror=', '"', "'", '<', '>', '&', '&amp;', '&#60;', '\\')), { minLength: 1, maxLength: 8 })
  .map((parts) => parts.join(''));

// ---------------------------------------------------------------------------------------------

describe('renderMarkdown is safe', () => {
  test('for arbitrary strings', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 300 }), fc.string({ unit: 'grapheme', maxLength: 200 }), fc.string({ unit: 'binary', maxLength: 200 }), fc.string({ unit: fc.constantFrom(...'<>&"\'`*_[]()!#:/\\ \n-|=abcjs'.split('')), maxLength: 200 })), (s) => {
        const html = renderMarkdown(s);
        assert.equal(typeof html, 'string');
        assertSafe(html, s);
      }),
      { numRuns: 3000 },
    );
  });

  test('for generated attacks: raw HTML, handlers, obfuscated script links, images, iframes, svg, style', () => {
    fc.assert(
      fc.property(malicious, (s) => {
        assertSafe(renderMarkdown(s), s);
      }),
      { numRuns: 3000 },
    );
  });

  test('"javascript:" inside the path of an https link is text, not a scheme (a case fast-check found)', () => {
    const source = '[ref]\n\n[ref]: https://example.com/[x](<javASCRIpt:alert(1)>)![ref]\n\n[ref]: javascript:alert(1) "t"';
    const { hrefs } = assertSafe(renderMarkdown(source), source);
    assert.ok(hrefs.length > 0);
    for (const h of hrefs) assert.equal(new URL(h).origin, 'https://example.com');
  });

  test('no link made from an obfuscated javascript:/data:/vbscript: URL survives', () => {
    fc.assert(
      fc.property(badUrl, fc.string({ unit: fc.constantFrom('a', 'b', ' '), minLength: 1, maxLength: 5 }), (u, t) => {
        for (const src of [`[${t}](${u})`, `<${u}>`, `![${t}](${u})`, `[r]\n\n[r]: ${u}`, u]) {
          const { hrefs } = assertSafe(renderMarkdown(src), src);
          assert.deepEqual(hrefs, [], `a link was made from ${JSON.stringify(src)}`);
        }
      }),
      { numRuns: 2000 },
    );
  });

  test('raw HTML is shown as text, never interpreted', () => {
    fc.assert(
      fc.property(rawHtml, (h) => {
        const html = renderMarkdown(h);
        assertSafe(html, h);
        assert.ok(html.includes('&lt;'), `the tag was not escaped: ${html}`);
      }),
      { numRuns: 200 },
    );
  });

  test('images become links carrying the alt text; nothing is fetched', () => {
    const html = renderMarkdown('![a cat](https://img.example/cat.png "Cat")');
    assert.equal(html, '<p><a href="https://img.example/cat.png" rel="noopener noreferrer nofollow" target="_blank">a cat</a></p>\n');
    assert.equal(renderMarkdown('![](https://img.example/cat.png)'), '<p><a href="https://img.example/cat.png" rel="noopener noreferrer nofollow" target="_blank">https://img.example/cat.png</a></p>\n');
    assert.equal(renderMarkdown('![x](data:image/png;base64,iVBORw0KGgo=)'), '<p>![x](data:image/png;base64,iVBORw0KGgo=)</p>\n');
    // An image inside a link: the link stays, the image is its alt text (anchors never nest).
    assert.equal(renderMarkdown('[![logo](https://img.example/l.png)](https://example.com)'), '<p><a href="https://example.com" rel="noopener noreferrer nofollow" target="_blank">logo</a></p>\n');
  });

  test('relative, protocol-relative and other-scheme links are text', () => {
    for (const src of ['[x](/etc/passwd)', '[x](//evil.example)', '[x](#top)', '[x](ftp://files.example/a)', '[x](tel:+123)', '[x](relative/path)', 'ftp://files.example/a', '//evil.example']) {
      const { hrefs } = assertSafe(renderMarkdown(src), src);
      assert.deepEqual(hrefs, [], src);
    }
  });

  test('isSafeHref allows only absolute http(s) and mailto', () => {
    for (const ok of ['https://a.example', 'http://a.example/x', 'mailto:a@b.example', 'HTTP://A.EXAMPLE']) assert.ok(isSafeHref(ok), ok);
    for (const no of ['', 'javascript:alert(1)', 'https://', 'https:// a', 'mailto:', '//a.example', '/x', 'data:text/html,x', ' https://a.example', 'https://a.example/"x']) assert.ok(!isSafeHref(no), no);
  });
});

describe('renderMarkdown formats', () => {
  const L = ' rel="noopener noreferrer nofollow" target="_blank"';
  const cases: Array<[string, string]> = [
    ['**bold**', '<p><strong>bold</strong></p>\n'],
    ['_em_ and *em*', '<p><em>em</em> and <em>em</em></p>\n'],
    ['`a < b`', '<p><code>a &lt; b</code></p>\n'],
    ['~~gone~~', '<p><s>gone</s></p>\n'],
    ['- one\n- two', '<ul>\n<li>one</li>\n<li>two</li>\n</ul>\n'],
    ['1. one\n2. two', '<ol>\n<li>one</li>\n<li>two</li>\n</ol>\n'],
    ['3. three', '<ol start="3">\n<li>three</li>\n</ol>\n'],
    ['> quoted', '<blockquote>\n<p>quoted</p>\n</blockquote>\n'],
    ['```\nx = 1 < 2\n```', '<pre><code>x = 1 &lt; 2\n</code></pre>\n'],
    ['```ts\nlet x\n```', '<pre><code class="language-ts">let x\n</code></pre>\n'],
    ['line one\nline two', '<p>line one<br>\nline two</p>\n'],
    ['[intertalk](https://example.com/a?b=1&c=2)', `<p><a href="https://example.com/a?b=1&amp;c=2"${L}>intertalk</a></p>\n`],
    ['[t](https://example.com "The title")', `<p><a href="https://example.com" title="The title"${L}>t</a></p>\n`],
    ['see https://example.com/x.', `<p>see <a href="https://example.com/x"${L}>https://example.com/x</a>.</p>\n`],
    ['write to alice@example.com', `<p>write to <a href="mailto:alice@example.com"${L}>alice@example.com</a></p>\n`],
    ['<https://example.com>', `<p><a href="https://example.com"${L}>https://example.com</a></p>\n`],
    ['[mail](mailto:bob@example.com)', `<p><a href="mailto:bob@example.com"${L}>mail</a></p>\n`],
    ['Where _are_ you?', '<p>Where <em>are</em> you?</p>\n'],
    ['a & b < c', '<p>a &amp; b &lt; c</p>\n'],
  ];
  for (const [src, expected] of cases) {
    test(JSON.stringify(src), () => {
      const html = renderMarkdown(src);
      assert.equal(html, expected);
      assertSafe(html, src);
    });
  }
});

// The web client end to end: Debian's Chromium against real providers on a devnet (verified
// HTTPS, two domains, plus a plain-HTTP provider for the insecure-link warning). Two people on two
// providers sign up, start a chat, exchange messages, reply, react, edit, delete, rename, send an
// image and a file, see typing and read receipts; one goes offline (and then their provider
// restarts) and misses nothing; HTML and script in messages stay inert. It also makes the
// screenshots in docs/screenshots (see shoot()).
import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { freePort, startNetwork, type Network } from '../../src/devnet/network.js';
import { api, fedUser, say, startPlainProvider, type FedUser } from '../helpers/fed.js';
import { launchFor, names, originOf, picturePng, until, watch, storyStep } from './browser.js';

const E = 'ecorp.test';
const A = 'allsafe.test';
const PLAIN = 'plain.test';
const OFFLINE = 'offline.test';
const PASSWORD = 'correct horse battery';
const SHOTS = fileURLToPath(new URL('../../../docs/screenshots/', import.meta.url));

describe('web client in Chromium', { timeout: 170_000 }, () => {
  let net: Network;
  let plain: Awaited<ReturnType<typeof startPlainProvider>>;
  let browser: Browser;
  let aliceCtx: BrowserContext;
  let bobCtx: BrowserContext;
  let alice: Page;
  let bob: Page;
  let dave: FedUser;
  const watched: Array<{ errors: string[]; csp: string[] }> = [];

  before(async () => {
    const plainPort = await freePort();
    const offlinePort = await freePort(); // nothing listens there
    net = await startNetwork({
      domains: [E, A],
      env: { INTERTALK_FEDERATION_SWEEP: '250ms', INTERTALK_FEDERATION_TIMEOUT: '5s', INTERTALK_INSECURE_PEERS: PLAIN },
      envFor: { [E]: { INTERTALK_BLOCKED_DOMAINS: 'spam.test' } },
      extraResolve: { [PLAIN]: plainPort, [OFFLINE]: offlinePort },
    });
    plain = await startPlainProvider(net, { domain: PLAIN, port: plainPort });
    browser = await launchFor(net);
    aliceCtx = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'light', permissions: ['notifications'], locale: 'en-GB' });
    // Test hooks (not in the app): record notifications, and let the test put the tab in the
    // background (headless tabs are always "visible").
    await aliceCtx.addInitScript(`(() => {
      window.__notes = [];
      const Real = window.Notification;
      class Recording extends Real {
        constructor(title, options) { window.__notes.push({ title, body: options && options.body }); super(title, options); }
        static get permission() { return Real.permission; }
        static requestPermission(...a) { return Real.requestPermission(...a); }
      }
      Object.defineProperty(window, 'Notification', { value: Recording, configurable: true, writable: true });
      let hidden = false;
      Object.defineProperty(Document.prototype, 'visibilityState', { get: () => (hidden ? 'hidden' : 'visible'), configurable: true });
      Object.defineProperty(Document.prototype, 'hidden', { get: () => hidden, configurable: true });
      window.__setHidden = (h) => { hidden = h; document.dispatchEvent(new Event('visibilitychange')); };
    })();`);
    bobCtx = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, colorScheme: 'light', locale: 'en-GB' });
    alice = await aliceCtx.newPage();
    bob = await bobCtx.newPage();
    for (const p of [alice, bob]) p.setDefaultTimeout(15_000);
    watched.push(watch(alice, 'alice'), watch(bob, 'bob'));
  });

  after(async () => {
    await browser?.close().catch(() => undefined);
    const plainDir = plain ? dirname(plain.provider.config.database.replace(/^sqlite:/, '')) : null;
    await plain?.stop().catch(() => undefined);
    await net?.stop().catch(() => undefined);
    if (plainDir) rmSync(plainDir, { recursive: true, force: true });
    if (net) rmSync(net.dir, { recursive: true, force: true });
  });

  /**
   * A step of the story. When it fails, the error also tells what each page showed, and
   * screenshots of both pages are left in the temp directory (for CI logs).
   */
  const step = storyStep('', () => [['alice', alice], ['bob', bob]]);

  const log = (p: Page) => p.getByRole('log');
  const msg = (p: Page, name: RegExp | string) => log(p).getByRole('article', { name, exact: typeof name === 'string' });
  const composer = (p: Page) => p.getByRole('textbox', { name: 'Message', exact: true });

  async function send(p: Page, text: string): Promise<void> {
    await composer(p).fill(text);
    await composer(p).press('Enter');
  }

  /** Shows a message's action buttons as a pointer (hover) or keyboard (focus) user would. */
  async function actOn(p: Page, name: RegExp | string, action: string): Promise<void> {
    const m = msg(p, name);
    if (p === bob) await m.focus();
    else await m.hover();
    await m.getByRole('button', { name: action, exact: true }).click();
  }

  async function signUp(p: Page, domain: string, username: string): Promise<void> {
    const res = await p.goto(`${originOf(net, domain)}/`);
    assert.equal(res?.status(), 200);
    assert.match(res!.headers()['content-security-policy'] ?? '', /default-src 'self'; script-src 'self'/);
    await p.getByRole('tab', { name: 'Sign up' }).click();
    await p.getByLabel('Username').fill(username);
    await p.getByLabel('Password').fill(PASSWORD);
    await p.getByRole('button', { name: 'Create account' }).click();
  }

  /**
   * Screenshots for the README. They are written when missing or with
   * INTERTALK_SCREENSHOTS=update (timestamps differ on every run; a run should not dirty the tree).
   */
  async function shoot(p: Page, name: string): Promise<void> {
    await p.mouse.move(1, 1);
    await composer(p).focus();
    const png = await p.screenshot({ animations: 'disabled' });
    assert.ok(png.length > 10_000, `${name}: a real picture`);
    const file = `${SHOTS}${name}.png`;
    if (process.env.INTERTALK_SCREENSHOTS === 'update' || !existsSync(file)) {
      mkdirSync(SHOTS, { recursive: true });
      writeFileSync(file, png);
    }
  }

  step('signs up on two providers, with the provider’s errors shown', async () => {
    await signUp(alice, E, 'admin');
    await alice.getByRole('alert').filter({ hasText: /reserved/ }).waitFor();
    await alice.getByLabel('Username').fill('alice');
    await alice.getByRole('button', { name: 'Create account' }).click();
    await alice.getByRole('button', { name: 'New conversation' }).waitFor();
    await alice.getByText('alice@ecorp.test').first().waitFor();

    await signUp(bob, A, 'bob');
    await bob.getByRole('button', { name: 'New conversation' }).waitFor();
    await bob.getByText('bob@allsafe.test').first().waitFor();
  });

  step('starts a conversation across providers, validating addresses', async () => {
    await alice.getByRole('button', { name: 'New conversation' }).click();
    const dialog = alice.getByRole('dialog', { name: 'New conversation' });
    await dialog.getByLabel('To', { exact: true }).fill('bob');
    await dialog.getByLabel('First message').fill('Hi Bob! Are we still on for **Saturday**?');
    await dialog.getByRole('button', { name: 'Start conversation' }).click();
    await dialog.getByRole('alert').filter({ hasText: 'is not an address' }).waitFor();
    await dialog.getByLabel('To', { exact: true }).fill('nobody@ecorp.test');
    await dialog.getByRole('button', { name: 'Start conversation' }).click();
    await dialog.getByRole('alert').filter({ hasText: 'No such user: nobody@ecorp.test' }).waitFor();
    await dialog.getByLabel('To', { exact: true }).fill('bob@allsafe.test, eve@spam.test');
    await dialog.getByRole('button', { name: 'Start conversation' }).click();
    await dialog.getByRole('alert').filter({ hasText: 'Refused: spam.test is blocked by this provider' }).waitFor();
    await dialog.getByLabel('To', { exact: true }).fill('Bob@allsafe.test');
    await dialog.getByRole('button', { name: 'Start conversation' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await alice.getByRole('heading', { name: 'bob@allsafe.test' }).waitFor();
    const first = msg(alice, /Are we still on for/);
    await first.locator('strong', { hasText: 'Saturday' }).waitFor();
    await first.getByText('Delivered', { exact: true }).waitFor();
  });

  step('shows the new conversation with an unread badge, and a read receipt once read', async () => {
    const item = bob.getByRole('link', { name: /alice@ecorp\.test/ });
    await item.waitFor();
    assert.match((await item.textContent()) ?? '', /1 unread/);
    assert.match((await item.textContent()) ?? '', /Are we still on for/);
    await item.click();
    await bob.getByRole('heading', { name: 'alice@ecorp.test' }).waitFor();
    await msg(bob, /Are we still on for/).locator('strong', { hasText: 'Saturday' }).waitFor();
    await msg(alice, /Are we still on for/).getByText('Read', { exact: true }).waitFor();
  });

  step('shows typing, then the answer live', async () => {
    await composer(bob).fill('Yes');
    await alice.getByText('bob@allsafe.test is typing…').waitFor();
    await send(bob, 'Yes! Where do we meet?');
    await msg(alice, /Where do we meet/).waitFor();
    await alice.getByText('is typing…').waitFor({ state: 'hidden' });
  });

  step('replies, reacts and edits across providers', async () => {
    await actOn(alice, /Where do we meet/, 'Reply');
    await alice.getByText('Replying to').waitFor();
    await send(alice, 'At the _café_ by the station, 10:00');
    const reply = msg(bob, /by the station, 10:00/);
    await reply.getByRole('button', { name: /Reply to bob@allsafe\.test: Yes! Where do we meet\?/ }).waitFor();
    await reply.locator('em', { hasText: 'café' }).waitFor();

    await actOn(bob, /by the station, 10:00/, 'React');
    await bob.getByRole('button', { name: 'React with 👍' }).click();
    await msg(alice, /by the station/).getByRole('button', { name: /^👍 1: bob@allsafe\.test$/ }).waitFor();
    await msg(bob, /by the station/).getByRole('button', { name: /^👍 1: you$/, pressed: true }).waitFor();

    await actOn(alice, /by the station, 10:00/, 'Edit');
    await until('the text in the composer', async () => (await composer(alice).inputValue()) === 'At the _café_ by the station, 10:00');
    await send(alice, 'At the _café_ by the station, 10:30');
    const edited = msg(bob, /by the station, 10:30/);
    await edited.getByText('edited').waitFor();
    assert.equal(await msg(bob, /10:00/).count(), 0, 'the old text is gone');
    // The reaction stays on the edited message.
    await edited.getByRole('button', { name: /^👍 1/ }).waitFor();
  });

  step('sends an image and a file with previews', async () => {
    await alice.getByLabel('Attach files').setInputFiles([
      { name: 'sunset.png', mimeType: 'image/png', buffer: picturePng() },
      { name: 'plan.txt', mimeType: 'text/plain', buffer: Buffer.from('10:30 café\n11:30 walk\n') },
    ]);
    const previews = alice.getByRole('list', { name: 'Files to send' });
    await previews.getByText('sunset.png').waitFor();
    await previews.getByText('plan.txt').waitFor();
    assert.equal(await previews.locator('img').count(), 1, 'an image preview before sending');
    await send(alice, 'The view from the terrace');
    const img = msg(bob, /The view from the terrace/).getByRole('img', { name: 'sunset.png' });
    await img.waitFor();
    await until('the image to load at bob’s', async () => (await img.evaluate((e: any) => e.complete && e.naturalWidth)) === 320);
    assert.match((await img.getAttribute('src')) ?? '', /^blob:/);
    await msg(bob, /The view from the terrace/).getByRole('button', { name: /^Download plan\.txt/ }).waitFor();
    await msg(alice, /The view from the terrace/).getByRole('img', { name: 'sunset.png' }).waitFor();
  });

  step('renames conversations and groups, and looks right on desktop and phone, light and dark', async () => {
    await composer(bob).fill("Perfect, I'll bring:\n- croissants\n- coffee");
    await composer(bob).press('Enter');
    const list = msg(alice, /I'll bring/);
    await list.getByRole('listitem').nth(1).waitFor();
    assert.equal(await list.getByRole('listitem').count(), 2);

    await alice.getByRole('button', { name: 'Rename conversation' }).click();
    const dialog = alice.getByRole('dialog', { name: 'Rename conversation' });
    await dialog.getByLabel('Conversation name').fill('Saturday brunch');
    await dialog.getByRole('button', { name: 'Save' }).click();
    await bob.getByRole('heading', { name: 'Saturday brunch' }).waitFor();
    await log(bob).getByText('alice named the conversation “Saturday brunch”').waitFor();
    await alice.getByRole('link', { name: /Saturday brunch/ }).waitFor();

    // Two more conversations for the screenshots: a named group, and one with an unread message.
    dave = await fedUser(net, E, 'dave');
    const hike = await say(net, dave, ['alice@ecorp.test', 'bob@allsafe.test'], 'Who is up for a hike on Sunday? 🥾');
    assert.equal((await api(net, E, 'PUT', `/conversations/${hike.conversationId}/name`, { token: dave.token, json: { name: 'Sunday hike' } })).status, 201);
    await say(net, dave, ['alice@ecorp.test'], 'Could you send me the slides from Tuesday?');
    await alice.getByRole('link', { name: /Sunday hike/ }).waitFor();
    await alice.getByRole('link', { name: /dave@ecorp\.test.*slides.*1 unread/ }).waitFor();

    await send(bob, 'See you there 🥐');
    await msg(alice, /See you there/).waitFor();
    await msg(bob, /See you there/).getByText('Read', { exact: true }).waitFor();

    await shoot(alice, 'desktop-light');
    await shoot(bob, 'phone-light');
    await alice.emulateMedia({ colorScheme: 'dark' });
    await bob.emulateMedia({ colorScheme: 'dark' });
    await shoot(alice, 'desktop-dark');
    await shoot(bob, 'phone-dark');
    await alice.emulateMedia({ colorScheme: 'light' });
    await bob.emulateMedia({ colorScheme: 'light' });

    // A group: senders are named, and anyone can rename it.
    await alice.getByRole('link', { name: /Sunday hike/ }).click();
    await alice.getByRole('heading', { name: 'Sunday hike' }).waitFor();
    await log(alice).getByText('dave@ecorp.test', { exact: true }).waitFor();
    await alice.getByRole('button', { name: 'Rename conversation' }).click();
    const rename = alice.getByRole('dialog', { name: 'Rename conversation' });
    await rename.getByLabel('Conversation name').fill('Hike on Sunday ⛰️');
    await rename.getByRole('button', { name: 'Save' }).click();
    await alice.getByRole('heading', { name: 'Hike on Sunday ⛰️' }).waitFor();
    await bob.getByRole('link', { name: 'Back to conversations' }).click();
    await bob.getByRole('link', { name: /Hike on Sunday ⛰️.*alice named the conversation/ }).waitFor();
    await bob.getByRole('link', { name: /Saturday brunch/ }).click();
    await bob.getByRole('heading', { name: 'Saturday brunch' }).waitFor();
    await alice.getByRole('link', { name: /Saturday brunch/ }).click();
    await alice.getByRole('heading', { name: 'Saturday brunch' }).waitFor();
  });

  step('deletes a message for everyone', async () => {
    await send(alice, 'Oops, wrong chat');
    await msg(bob, /Oops, wrong chat/).waitFor();
    await actOn(alice, /Oops, wrong chat/, 'Delete');
    const dialog = alice.getByRole('dialog', { name: 'Delete message?' });
    await dialog.getByRole('button', { name: 'Delete' }).click();
    await msg(bob, /Oops/).waitFor({ state: 'detached' });
    await msg(bob, 'alice@ecorp.test: deleted message').getByText('This message was deleted.').waitFor();
    await msg(alice, 'You: deleted message').waitFor();
  });

  step('keeps HTML and script in messages inert', async () => {
    const evil = '**still bold** ![pic](https://example.org/p.png) <img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> [click](javascript:window.__pwned=3) <a href="https://example.org" onclick="window.__pwned=5">x</a>';
    await send(alice, evil);
    const m = msg(bob, /still bold/);
    await m.locator('strong', { hasText: 'still bold' }).waitFor();
    await m.getByText('<img src=x onerror="window.__pwned=1">', { exact: false }).waitFor();
    assert.equal(await m.locator('img, script, iframe, [onerror], [onclick], a[href^="javascript"]').count(), 0);
    assert.equal(await m.getByRole('link', { name: 'click' }).count(), 0);
    // A markdown image is a link to click, never fetched by itself.
    assert.equal(await m.getByRole('link', { name: 'pic' }).getAttribute('href'), 'https://example.org/p.png');
    assert.equal(await m.getByRole('link', { name: 'pic' }).getAttribute('rel'), 'noopener noreferrer nofollow');

    // From another provider, as HTML (format text/html), over an insecure link.
    const carol: FedUser = await fedUser(net, PLAIN, 'carol');
    const r = await api(net, PLAIN, 'POST', '/messages', {
      token: carol.token,
      json: { to: [carol.address, 'alice@ecorp.test'], message: 'Hello from an old provider', messageFormatted: '<img src=x onerror="window.__pwned=4"><b>hi</b>', format: 'text/html' },
    });
    assert.equal(r.status, 201);
    await alice.getByRole('link', { name: /carol@plain\.test/ }).click();
    const warned = msg(alice, /Hello from an old provider/);
    await warned.getByRole('note').filter({ hasText: 'Not verified: this message came over an insecure link' }).waitFor();
    assert.equal(await warned.locator('img, b').count(), 0);
    for (const p of [alice, bob]) assert.equal(await p.evaluate('window.__pwned'), undefined);
    await alice.getByRole('link', { name: /Saturday brunch/ }).click();
  });

  step('misses nothing after going offline, and retries what it could not send', async () => {
    await bobCtx.setOffline(true);
    await bob.getByRole('alert').filter({ hasText: 'You are offline' }).waitFor();
    await send(bob, 'Written offline');
    const unsent = msg(bob, /Written offline/);
    await unsent.getByRole('alert').filter({ hasText: 'Not sent: Cannot reach your provider' }).waitFor();
    for (const t of ['missed one', 'missed two', 'missed three']) await send(alice, t);
    // Delivered to bob's provider (in order: one queue per destination), not to bob's browser.
    await msg(alice, /missed three/).getByText('Delivered', { exact: true }).waitFor();
    assert.equal(await msg(bob, /missed/).count(), 0, 'nothing arrives while offline');
    await bobCtx.setOffline(false);
    await bob.getByRole('alert').filter({ hasText: 'You are offline' }).waitFor({ state: 'hidden', timeout: 15_000 });
    await msg(bob, /missed three/).waitFor();
    await unsent.getByRole('button', { name: 'Retry' }).click();
    await msg(alice, /Written offline/).waitFor();
    await unsent.getByText('Read', { exact: true }).waitFor();
    assert.equal(await msg(bob, /Written offline/).count(), 1);
    const all = await names(log(bob).getByRole('article'));
    assert.deepEqual(
      all.filter((n) => /missed/.test(n)),
      ['alice@ecorp.test: missed one', 'alice@ecorp.test: missed two', 'alice@ecorp.test: missed three'],
    );
  });

  step('reconnects by itself after its provider restarts, and catches up', async () => {
    // Waits are long here: after the restart, delivery waits for ecorp's back-off towards allsafe
    // (seconds; longer on a busy machine).
    await net.stopNode(A);
    await bob.getByRole('alert').filter({ hasText: 'You are offline' }).waitFor();
    await send(alice, 'Sent while your provider was down');
    await msg(alice, /while your provider was down/).waitFor();
    await new Promise((r) => setTimeout(r, 500));
    await net.startNode(A);
    await bob.getByRole('alert').filter({ hasText: 'You are offline' }).waitFor({ state: 'hidden', timeout: 45_000 });
    await msg(bob, /while your provider was down/).waitFor({ timeout: 45_000 });
    assert.equal(await msg(bob, /while your provider was down/).count(), 1);
    await msg(alice, /while your provider was down/).getByText(/^(Delivered|Read)$/).waitFor({ timeout: 45_000 });
    const all = await names(log(bob).getByRole('article'));
    assert.equal(new Set(all).size, all.length, `no duplicates: ${all.join(' | ')}`);
  });

  step('shows why a message did not reach another provider, with retry', async () => {
    const start = async (to: string, text: string) => {
      await alice.getByRole('button', { name: 'New conversation' }).click();
      const dialog = alice.getByRole('dialog', { name: 'New conversation' });
      await dialog.getByLabel('To', { exact: true }).fill(to);
      await dialog.getByLabel('First message').fill(text);
      await dialog.getByRole('button', { name: 'Start conversation' }).click();
      await dialog.waitFor({ state: 'hidden' });
      await alice.getByRole('heading', { name: to }).waitFor();
    };
    await start('nobody@allsafe.test', 'Anyone there?');
    const failed = msg(alice, /Anyone there/);
    await failed.getByRole('alert').filter({ hasText: 'No such user at allsafe.test' }).waitFor();
    await failed.getByRole('button', { name: 'Retry' }).waitFor();
    await failed.getByText('Failed', { exact: true }).waitFor();
    // Retry sends it again (and deletes the failed copy): it fails again, for the same reason.
    await failed.getByRole('button', { name: 'Retry' }).click();
    await msg(alice, 'You: deleted message').waitFor();
    await msg(alice, /Anyone there/).getByRole('alert').filter({ hasText: 'No such user at allsafe.test' }).waitFor();
    assert.equal(await msg(alice, /Anyone there/).count(), 1);

    await start('someone@offline.test', 'Hello?');
    await msg(alice, /Hello\?/).getByText('Cannot reach offline.test yet; retrying').waitFor({ timeout: 20_000 });
  });

  step('loads older history as you scroll up', async () => {
    for (let i = 1; i <= 70; i++) await say(net, dave, ['alice@ecorp.test'], `history ${i}`);
    await alice.getByRole('link', { name: /dave@ecorp\.test/ }).click();
    await msg(alice, 'dave@ecorp.test: history 70').waitFor();
    assert.equal(await msg(alice, 'dave@ecorp.test: history 1').count(), 0, 'only the newest page at first');
    await log(alice).hover();
    await until('history 1 after scrolling up', async () => {
      await alice.mouse.wheel(0, -4000);
      return (await msg(alice, 'dave@ecorp.test: history 1').count()) === 1;
    }, 15_000);
    const all = (await names(log(alice).getByRole('article'))).filter((n) => n.startsWith('dave@ecorp.test: history '));
    assert.deepEqual(all, Array.from({ length: 70 }, (_, i) => `dave@ecorp.test: history ${i + 1}`));
  });

  step('notifies about messages while the tab is in the background', async () => {
    await alice.getByRole('link', { name: /Saturday brunch/ }).click();
    await alice.getByRole('heading', { name: 'Saturday brunch' }).waitFor();
    await alice.evaluate('window.__setHidden(true)');
    await send(bob, 'Are you around?');
    const notes = await until('a notification', async () => {
      const n = (await alice.evaluate('window.__notes')) as Array<{ title: string; body: string }>;
      return n.find((x) => /Are you around\?/.test(x.body)) ? n : null;
    });
    assert.match(notes.find((x) => /Are you around/.test(x.body))!.title, /bob/);
    const item = alice.getByRole('link', { name: /Saturday brunch/ });
    await until('an unread badge while away', async () => /1 unread/.test((await item.textContent()) ?? ''));
    assert.equal(await msg(bob, /Are you around/).getByText('Read', { exact: true }).count(), 0, 'not read while away');
    await alice.evaluate('window.__setHidden(false)');
    await msg(bob, /Are you around/).getByText('Read', { exact: true }).waitFor();
    await until('the badge to clear', async () => !/unread/.test((await item.textContent()) ?? ''));
  });

  step('keeps the session across a reload (sessionStorage only), and logs out', async () => {
    await alice.reload();
    await alice.getByRole('link', { name: /Saturday brunch/ }).waitFor();
    const stored = JSON.stringify(await alice.evaluate('[Object.entries(localStorage), Object.entries(sessionStorage)]'));
    const [local, session] = JSON.parse(stored) as [Array<[string, string]>, Array<[string, string]>];
    assert.ok(!JSON.stringify(local).includes('itr_') && !JSON.stringify(local).includes('ita_'), 'no token in localStorage');
    assert.ok(JSON.stringify(session).includes('itr_'), 'the refresh token is in sessionStorage');
    assert.ok(!JSON.stringify(session).includes('ita_'), 'the access token is only in memory');
    assert.ok(!alice.url().includes('ita_') && !alice.url().includes('itr_'));

    await alice.getByRole('button', { name: 'Log out' }).click();
    await alice.getByRole('tab', { name: 'Log in' }).waitFor();
    await alice.reload();
    await alice.getByRole('tab', { name: 'Log in' }).waitFor();
    await alice.getByLabel('Username').fill('alice');
    await alice.getByLabel('Password').fill('wrong password');
    await alice.getByRole('button', { name: 'Log in' }).click();
    await alice.getByRole('alert').filter({ hasText: 'Wrong username or password.' }).waitFor();
    await alice.getByLabel('Password').fill(PASSWORD);
    await alice.getByRole('button', { name: 'Log in' }).click();
    await alice.getByRole('link', { name: /Saturday brunch/ }).waitFor();
  });

  step('ran without script errors or Content-Security-Policy violations', () => {
    for (const w of watched) {
      assert.deepEqual(w.errors, []);
      assert.deepEqual(w.csp, []);
    }
  });
});

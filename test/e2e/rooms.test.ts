// The web client's rooms end to end (issue 13): Debian's Chromium against real providers on a
// devnet (verified HTTPS, real SQLite). Alice and Bob on ecorp.test use the browser; Carol on
// allsafe.test uses the API through her own provider (a member on another provider). Alice creates
// an invite-only room and an invite; Bob opens the referral link and joins; they talk live; Alice
// edits the topic, removes Bob's message, removes and bans Bob (he sees he is out and cannot
// post or come back), bans Carol's whole domain; Bob joins a public room by name and leaves it;
// Dana on allsafe.test joins it by address in her browser, talks and leaves.
// Bob also misses nothing while offline (catch-up with ?after=).
import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { startNetwork, type Network } from '../../src/devnet/network.js';
import { api, fedUser, type FedUser } from '../helpers/fed.js';
import { launchFor, names, originOf, until, watch, storyStep } from './browser.js';

const E = 'ecorp.test';
const A = 'allsafe.test';
const PASSWORD = 'correct horse battery';
const ROOM = `secret#${E}`;
const LOBBY = `lobby#${E}`;
const WAIT = 30_000;

describe('rooms in the web client (Chromium)', { timeout: 240_000 }, () => {
  let net: Network;
  let browser: Browser;
  let aliceCtx: BrowserContext;
  let bobCtx: BrowserContext;
  let alice: Page;
  let bob: Page;
  let carol: FedUser;
  let singleUse = '';
  let multiUse = '';
  const watched: Array<{ errors: string[]; csp: string[] }> = [];

  before(async () => {
    net = await startNetwork({ domains: [E, A], env: { INTERTALK_FEDERATION_SWEEP: '250ms', INTERTALK_FEDERATION_TIMEOUT: '5s' } });
    browser = await launchFor(net);
    aliceCtx = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-GB' });
    await aliceCtx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: originOf(net, E) });
    bobCtx = await browser.newContext({ viewport: { width: 1100, height: 800 }, locale: 'en-GB' });
    alice = await aliceCtx.newPage();
    bob = await bobCtx.newPage();
    for (const p of [alice, bob]) p.setDefaultTimeout(WAIT);
    watched.push(watch(alice, 'alice'), watch(bob, 'bob'));
    carol = await fedUser(net, A, 'carol');
  });

  after(async () => {
    await browser?.close().catch(() => undefined);
    await net?.stop().catch(() => undefined);
    if (net) rmSync(net.dir, { recursive: true, force: true });
  });

  /** A step; on failure the error tells what each page showed (and leaves screenshots in tmp). */
  const step = storyStep('-rooms', () => [['alice', alice], ['bob', bob]]);

  const log = (p: Page) => p.getByRole('log');
  const msg = (p: Page, name: RegExp | string) => log(p).getByRole('article', { name, exact: typeof name === 'string' });
  const composer = (p: Page) => p.getByRole('textbox', { name: 'Message', exact: true });
  const panel = (p: Page) => p.getByRole('complementary', { name: 'Room info' });
  const roomList = (p: Page) => p.getByRole('list', { name: 'Room list' });
  const members = (p: Page) => panel(p).getByRole('list', { name: 'Members' });
  const rooms = () => net.provider(E).ctx.rooms;

  async function send(p: Page, text: string): Promise<void> {
    await composer(p).fill(text);
    await composer(p).press('Enter');
  }

  async function signUp(p: Page, username: string): Promise<void> {
    await p.goto(`${originOf(net, E)}/`);
    await p.getByRole('tab', { name: 'Sign up' }).click();
    await p.getByLabel('Username').fill(username);
    await p.getByLabel('Password').fill(PASSWORD);
    await p.getByRole('button', { name: 'Create account' }).click();
    await p.getByRole('button', { name: 'New room' }).waitFor();
  }

  async function openPanel(p: Page): Promise<void> {
    if (!(await panel(p).isVisible())) await p.getByRole('button', { name: 'Room info' }).click();
    await panel(p).waitFor();
  }

  async function createInvite(multi: boolean): Promise<string> {
    await openPanel(alice);
    const box = panel(alice).getByRole('checkbox', { name: 'Multi-use (until revoked)' });
    if ((await box.isChecked()) !== multi) await box.click();
    const before = await panel(alice).getByRole('textbox', { name: /^Invite link/ }).inputValue().catch(() => '');
    await panel(alice).getByRole('button', { name: 'Create invite link' }).click();
    const field = panel(alice).getByRole('textbox', { name: multi ? 'Invite link (multi-use)' : 'Invite link (single use)' });
    return until('a new invite link', async () => {
      const v = await field.inputValue();
      return v && v !== before ? v : null;
    }, WAIT);
  }

  step('two people sign up; the sidebar has a Rooms section', async () => {
    await signUp(alice, 'alice');
    await signUp(bob, 'bob');
    await alice.getByRole('heading', { name: 'Rooms' }).waitFor();
    await alice.getByText('No rooms yet.').waitFor();
  });

  step('creates an invite-only room, with the provider’s errors shown', async () => {
    await alice.getByRole('button', { name: 'New room' }).click();
    const dialog = alice.getByRole('dialog', { name: 'New room' });
    await dialog.getByLabel('Room name').fill('bad name!');
    await dialog.getByRole('button', { name: 'Create room' }).click();
    await dialog.getByRole('alert').filter({ hasText: /Name: 1–64 characters of a-z/ }).waitFor();
    await dialog.getByLabel('Room name').fill('secret');
    await dialog.getByLabel('Title').fill('Secret plans');
    await dialog.getByLabel('Topic').fill('Saturday, and nothing else');
    await dialog.getByRole('radio', { name: /Invite only/ }).check();
    await dialog.getByRole('radio', { name: /Everything from the start/ }).check();
    await dialog.getByRole('button', { name: 'Create room' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await alice.getByRole('heading', { name: 'Secret plans' }).waitFor();
    await until('the room route', async () => alice.url().endsWith(`#/r/${encodeURIComponent(ROOM)}`));
    await alice.getByText('Saturday, and nothing else').first().waitFor();
    await roomList(alice).getByRole('link', { name: /Secret plans/ }).waitFor();
    await send(alice, 'Welcome to the **secret** room');
    await msg(alice, /Welcome to the/).locator('strong', { hasText: 'secret' }).waitFor();

    // The same name again: the provider's 409, in words.
    await alice.getByRole('button', { name: 'New room' }).click();
    await dialog.getByLabel('Room name').fill('secret');
    await dialog.getByRole('button', { name: 'Create room' }).click();
    await dialog.getByRole('alert').filter({ hasText: `The room ${ROOM} exists already` }).waitFor();
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await dialog.waitFor({ state: 'hidden' });

    const info = await rooms().get('secret', 'alice@ecorp.test');
    assert.equal(info.visibility, 'invite');
    assert.equal(info.history, 'start');
  });

  step('an outsider cannot join an invite-only room by its name', async () => {
    await bob.getByRole('button', { name: 'Join room' }).click();
    const dialog = bob.getByRole('dialog', { name: 'Join room' });
    await dialog.getByLabel('Room or invite link').fill(ROOM);
    await dialog.getByRole('button', { name: 'Join', exact: true }).click();
    await dialog.getByRole('alert').filter({ hasText: 'This room is invite-only' }).waitFor();
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    assert.equal(await rooms().member('secret', 'bob@ecorp.test'), null);
  });

  step('creates a single-use invite, copies the link; Bob opens it, joins and reads the history', async () => {
    const link = await createInvite(false);
    assert.match(link, new RegExp(`^${originOf(net, E).replace(/[.]/g, '\\.')}/#/join\\?room=secret%23ecorp\\.test&code=[A-Za-z0-9_-]+$`));
    await panel(alice).getByRole('button', { name: 'Copy link' }).click();
    await panel(alice).getByRole('button', { name: 'Copied' }).waitFor();
    assert.equal(await alice.evaluate('navigator.clipboard.readText()'), link);
    singleUse = link;

    await bob.goto(link);
    await bob.getByRole('heading', { name: 'Secret plans' }).waitFor();
    await until('the room route after joining', async () => bob.url().endsWith(`#/r/${encodeURIComponent(ROOM)}`));
    await msg(bob, 'alice@ecorp.test: Welcome to the **secret** room').locator('strong', { hasText: 'secret' }).waitFor();
    await roomList(bob).getByRole('link', { name: /Secret plans/ }).waitFor();
    assert.equal((await rooms().member('secret', 'bob@ecorp.test'))?.role, 'member');
    // Alice sees him arrive, live, in the log and the member list.
    await log(alice).getByText('bob@ecorp.test joined').waitFor();
    await members(alice).getByText('bob@ecorp.test').waitFor();

    // The code is used up: Carol (another provider) cannot use it again.
    const referral = new URL(link).hash.replace(/^#\/join\?/, '');
    const again = await api(net, A, 'POST', '/me/rooms', { token: carol.token, json: { referral } });
    assert.equal(again.status, 403, JSON.stringify(again.body));
    assert.equal(again.body.error, 'invalid_invite');
  });

  step('messages go both ways live; a plain member has no moderation buttons', async () => {
    await send(bob, 'Hi! Glad to be in');
    await msg(alice, 'bob@ecorp.test: Hi! Glad to be in').waitFor();
    await send(alice, 'Good to have you, Bob');
    await msg(bob, 'alice@ecorp.test: Good to have you, Bob').waitFor();
    assert.equal(await msg(bob, /Good to have you/).getByRole('button', { name: 'Remove message' }).count(), 0);
    await openPanel(bob);
    await members(bob).getByText('alice@ecorp.test').waitFor();
    assert.equal(await panel(bob).getByRole('button', { name: 'Create invite link' }).count(), 0, 'members of an invite-only room make no invites');
    assert.equal(await panel(bob).getByRole('textbox', { name: 'Room topic' }).count(), 0);
    assert.equal(await panel(bob).getByRole('button', { name: /^Remove / }).count(), 0);
    await bob.getByRole('button', { name: 'Close room info' }).click();
    const order = (await names(log(bob).getByRole('article'))).slice(-3);
    assert.deepEqual(order, ['alice@ecorp.test: Welcome to the **secret** room', 'You: Hi! Glad to be in', 'alice@ecorp.test: Good to have you, Bob']);
  });

  step('the moderator edits the topic; the member sees it live', async () => {
    await openPanel(alice);
    await panel(alice).getByRole('textbox', { name: 'Room topic' }).fill('Saturday brunch at noon');
    await panel(alice).getByRole('button', { name: 'Save title and topic' }).click();
    await panel(alice).getByRole('status').filter({ hasText: 'Saved.' }).waitFor();
    await alice.locator('.conversation-header').getByText('Saturday brunch at noon').waitFor();
    await bob.locator('.conversation-header').getByText('Saturday brunch at noon').waitFor();
    assert.equal((await rooms().get('secret', 'alice@ecorp.test')).topic, 'Saturday brunch at noon');
  });

  step('the moderator removes a message; it disappears for the member', async () => {
    await send(bob, 'Buy cheap watches here');
    const spam = msg(alice, 'bob@ecorp.test: Buy cheap watches here');
    await spam.waitFor();
    await msg(bob, 'You: Buy cheap watches here').waitFor();
    await spam.hover();
    await spam.getByRole('button', { name: 'Remove message' }).click();
    const confirm = alice.getByRole('dialog', { name: 'Remove message?' });
    await confirm.getByRole('button', { name: 'Remove' }).click();
    await spam.waitFor({ state: 'detached' });
    await msg(bob, 'You: Buy cheap watches here').waitFor({ state: 'detached' });
    const h = await rooms().history('secret', 'alice@ecorp.test', { limit: 500 });
    assert.equal(h.some((m: { message: string }) => m.message.includes('watches')), false);
    assert.equal(await msg(bob, /Good to have you/).count(), 1, 'the other messages stay');
  });

  step('misses nothing of the room while offline (catch-up after the reconnection)', async () => {
    await bobCtx.setOffline(true);
    await bob.getByRole('alert').filter({ hasText: 'You are offline' }).waitFor();
    for (const t of ['away one', 'away two']) await send(alice, t);
    await msg(alice, 'You: away two').waitFor();
    assert.equal(await msg(bob, /away/).count(), 0, 'nothing arrives while offline');
    await bobCtx.setOffline(false);
    await bob.getByRole('alert').filter({ hasText: 'You are offline' }).waitFor({ state: 'hidden', timeout: 45_000 });
    await msg(bob, 'alice@ecorp.test: away two').waitFor({ timeout: 45_000 });
    const all = (await names(log(bob).getByRole('article'))).filter((n) => /away/.test(n));
    assert.deepEqual(all, ['alice@ecorp.test: away one', 'alice@ecorp.test: away two']);
  });

  step('the moderator removes Bob: he sees he is out and cannot post', async () => {
    await openPanel(alice);
    await members(alice).getByRole('button', { name: 'Remove bob@ecorp.test' }).click();
    await panel(alice).getByRole('status').filter({ hasText: 'Removed bob@ecorp.test.' }).waitFor();
    await until('bob gone from the member list', async () => (await members(alice).getByText('bob@ecorp.test').count()) === 0);
    await bob.getByRole('alert').filter({ hasText: 'You were removed from this room by a moderator.' }).waitFor();
    assert.equal(await composer(bob).count(), 0, 'no composer once removed');
    await roomList(bob).getByRole('link', { name: /Secret plans/ }).waitFor({ state: 'detached' });
    assert.equal(await rooms().member('secret', 'bob@ecorp.test'), null);
    await log(alice).getByText('bob@ecorp.test was removed').waitFor();
  });

  step('a multi-use invite admits Bob again and Carol from another provider', async () => {
    multiUse = await createInvite(true);
    await bob.goto(multiUse);
    await bob.getByRole('heading', { name: 'Secret plans' }).waitFor();
    await composer(bob).waitFor();
    assert.equal((await rooms().member('secret', 'bob@ecorp.test'))?.role, 'member');

    const referral = new URL(multiUse).hash.replace(/^#\/join\?/, '');
    const joined = await api(net, A, 'POST', '/me/rooms', { token: carol.token, json: { referral } });
    assert.equal(joined.status, 201, JSON.stringify(joined.body));
    await members(alice).getByText('carol@allsafe.test').waitFor();
    const posted = await api(net, A, 'POST', `/rooms/${encodeURIComponent(ROOM)}/messages`, { token: carol.token, json: { message: 'Hello from allsafe' } });
    assert.equal(posted.status, 201, JSON.stringify(posted.body));
    await msg(alice, 'carol@allsafe.test: Hello from allsafe').waitFor();
    await msg(bob, 'carol@allsafe.test: Hello from allsafe').waitFor();
  });

  step('the moderator bans a whole domain: Carol is out and her posts are refused', async () => {
    await openPanel(alice);
    await panel(alice).getByLabel('Ban an address or a whole domain').fill('allsafe.test');
    await panel(alice).getByRole('button', { name: 'Ban', exact: true }).click();
    await panel(alice).getByRole('status').filter({ hasText: 'Banned allsafe.test; removed carol@allsafe.test.' }).waitFor();
    await until('carol gone from the member list', async () => (await members(alice).getByText('carol@allsafe.test').count()) === 0);
    const refused = await api(net, A, 'POST', `/rooms/${encodeURIComponent(ROOM)}/messages`, { token: carol.token, json: { message: 'Still here?' } });
    assert.equal(refused.status, 403, JSON.stringify(refused.body));
    // Banning oneself's own domain is refused by the provider, and said so.
    await panel(alice).getByLabel('Ban an address or a whole domain').fill('ecorp.test');
    await panel(alice).getByRole('button', { name: 'Ban', exact: true }).click();
    await panel(alice).getByRole('alert').filter({ hasText: /cannot be banned|cannot ban themselves/ }).waitFor();
  });

  step('the moderator bans Bob: he is out, cannot post, and the invite no longer lets him in', async () => {
    await members(alice).getByRole('button', { name: 'Ban bob@ecorp.test' }).click();
    await panel(alice).getByRole('status').filter({ hasText: 'Banned bob@ecorp.test.' }).waitFor();
    await bob.getByRole('alert').filter({ hasText: 'You were banned from this room by a moderator.' }).waitFor();
    assert.equal(await composer(bob).count(), 0);
    await log(alice).getByText('bob@ecorp.test was banned').waitFor();
    await bob.goto(multiUse);
    await bob.getByRole('alert').filter({ hasText: `Could not join ${ROOM}: You are banned from this room.` }).waitFor();
    assert.equal(await rooms().member('secret', 'bob@ecorp.test'), null);
    await bob.getByRole('link', { name: 'Back to conversations' }).click();
    assert.equal(await roomList(bob).getByRole('link', { name: /Secret plans/ }).count(), 0);
    assert.ok(singleUse && singleUse !== multiUse);
  });

  step('Bob joins a public room by name, and leaves it', async () => {
    await alice.getByRole('button', { name: 'New room' }).click();
    const dialog = alice.getByRole('dialog', { name: 'New room' });
    await dialog.getByLabel('Room name').fill('lobby');
    await dialog.getByRole('button', { name: 'Create room' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await alice.getByRole('heading', { name: 'lobby' }).waitFor();

    await bob.getByRole('button', { name: 'Join room' }).click();
    const join = bob.getByRole('dialog', { name: 'Join room' });
    await join.getByLabel('Room or invite link').fill('nosuchroom');
    await join.getByRole('button', { name: 'Join', exact: true }).click();
    await join.getByRole('alert').filter({ hasText: 'There is no such room' }).waitFor();
    await join.getByLabel('Room or invite link').fill('lobby');
    await join.getByRole('button', { name: 'Join', exact: true }).click();
    await join.waitFor({ state: 'hidden' });
    await bob.getByRole('heading', { name: 'lobby' }).waitFor();
    await log(alice).getByText('bob@ecorp.test joined').waitFor();
    await send(bob, 'Anyone here?');
    await msg(alice, 'bob@ecorp.test: Anyone here?').waitFor();

    await openPanel(bob);
    await panel(bob).getByRole('button', { name: 'Leave room' }).click();
    await bob.getByRole('dialog', { name: 'Leave room?' }).getByRole('button', { name: 'Leave' }).click();
    await until('bob back at the list', async () => /#\/$/.test(bob.url()));
    await roomList(bob).getByRole('link', { name: 'lobby' }).waitFor({ state: 'detached' });
    await log(alice).getByText('bob@ecorp.test left').waitFor();
    assert.equal(await rooms().member('lobby', 'bob@ecorp.test'), null);
    // Alice (the owner) is still in it.
    assert.equal((await rooms().member('lobby', 'alice@ecorp.test'))?.role, 'owner');
  });

  step('someone on another provider joins a public room by its address, talks live, and leaves', async () => {
    const ctx = await browser.newContext({ viewport: { width: 1000, height: 760 }, locale: 'en-GB' });
    try {
      const dana = await ctx.newPage();
      dana.setDefaultTimeout(WAIT);
      watched.push(watch(dana, 'dana'));
      await dana.goto(`${originOf(net, A)}/`);
      await dana.getByRole('tab', { name: 'Sign up' }).click();
      await dana.getByLabel('Username').fill('dana');
      await dana.getByLabel('Password').fill(PASSWORD);
      await dana.getByRole('button', { name: 'Create account' }).click();
      await dana.getByRole('button', { name: 'Join room' }).click();
      const join = dana.getByRole('dialog', { name: 'Join room' });
      await join.getByLabel('Room or invite link').fill(LOBBY);
      await join.getByRole('button', { name: 'Join', exact: true }).click();
      await join.waitFor({ state: 'hidden' });
      await dana.getByRole('heading', { name: 'lobby' }).waitFor();
      await until('the room route', async () => dana.url().endsWith(`#/r/${encodeURIComponent(LOBBY)}`));
      await log(alice).getByText('dana@allsafe.test joined').waitFor();
      assert.equal((await rooms().member('lobby', 'dana@allsafe.test'))?.role, 'member');

      await send(alice, 'Welcome, far traveller');
      await msg(dana, 'alice@ecorp.test: Welcome, far traveller').waitFor();
      await send(dana, 'Hello from allsafe, by browser');
      await msg(alice, 'dana@allsafe.test: Hello from allsafe, by browser').waitFor();
      await msg(dana, 'You: Hello from allsafe, by browser').waitFor();
      assert.equal(await msg(dana, 'You: Hello from allsafe, by browser').count(), 1, 'once, though the answer and the mirror both bring it');

      await openPanel(dana);
      await panel(dana).getByText('Hosted at ecorp.test').waitFor();
      await panel(dana).getByRole('button', { name: 'Leave room' }).click();
      await dana.getByRole('dialog', { name: 'Leave room?' }).getByRole('button', { name: 'Leave' }).click();
      await until('dana back at the list', async () => /#\/$/.test(dana.url()));
      await roomList(dana).getByRole('link', { name: 'lobby' }).waitFor({ state: 'detached' });
      await log(alice).getByText('dana@allsafe.test left').waitFor();
      assert.equal(await rooms().member('lobby', 'dana@allsafe.test'), null);

      // Back in; the moderator removes her. The host tells her provider (POST /roomNotices), which
      // tells her at once: the room shows she is out, without her having to post first.
      await dana.getByRole('button', { name: 'Join room' }).click();
      await join.getByLabel('Room or invite link').fill(LOBBY);
      await join.getByRole('button', { name: 'Join', exact: true }).click();
      await join.waitFor({ state: 'hidden' });
      await composer(dana).waitFor();
      await openPanel(alice);
      await members(alice).getByRole('button', { name: 'Remove dana@allsafe.test' }).click();
      await panel(alice).getByRole('status').filter({ hasText: 'Removed dana@allsafe.test.' }).waitFor();
      await dana.getByRole('alert').filter({ hasText: 'You were removed from this room by a moderator.' }).waitFor();
      await composer(dana).waitFor({ state: 'detached' });
      assert.equal(await rooms().member('lobby', 'dana@allsafe.test'), null);
    } finally {
      await ctx.close().catch(() => undefined);
    }
  });

  step('a newcomer opens an invite link before having an account: signs up and lands in the room', async () => {
    const ctx = await browser.newContext({ viewport: { width: 1000, height: 760 }, locale: 'en-GB' });
    try {
      const erin = await ctx.newPage();
      erin.setDefaultTimeout(WAIT);
      watched.push(watch(erin, 'erin'));
      await erin.goto(multiUse);
      await erin.getByRole('tab', { name: 'Sign up' }).click();
      await erin.getByLabel('Username').fill('erin');
      await erin.getByLabel('Password').fill(PASSWORD);
      await erin.getByRole('button', { name: 'Create account' }).click();
      await erin.getByRole('heading', { name: 'Secret plans' }).waitFor();
      await msg(erin, 'alice@ecorp.test: Welcome to the **secret** room').waitFor();
      await until('the room route', async () => erin.url().endsWith(`#/r/${encodeURIComponent(ROOM)}`));
      assert.equal((await rooms().member('secret', 'erin@ecorp.test'))?.role, 'member');

      // Away from the room, its new messages show as unread in the room list.
      await erin.evaluate("location.hash = '#/'");
      await until('erin at the list', async () => /#\/$/.test(erin.url()));
      await roomList(alice).getByRole('link', { name: /Secret plans/ }).click();
      await alice.getByRole('heading', { name: 'Secret plans' }).waitFor();
      await send(alice, 'Welcome, Erin');
      await msg(alice, 'You: Welcome, Erin').waitFor();
      const item = roomList(erin).getByRole('link', { name: /Secret plans/ });
      await until('an unread badge', async () => /1 unread/.test((await item.textContent()) ?? ''), WAIT);
      await item.click();
      await msg(erin, 'alice@ecorp.test: Welcome, Erin').waitFor();
      await until('the badge to clear', async () => !/unread/.test((await item.textContent()) ?? ''), WAIT);
    } finally {
      await ctx.close().catch(() => undefined);
    }
  });

  step('ran without script errors or Content-Security-Policy violations', () => {
    for (const w of watched) {
      assert.deepEqual(w.errors, []);
      assert.deepEqual(w.csp, []);
    }
  });
});

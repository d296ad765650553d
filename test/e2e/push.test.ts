// The web client's service worker in real Chromium (/usr/bin/chromium, playwright-core) against a
// provider on http://127.0.0.1 (a secure context, so service workers and the Push API are there):
// /sw.js registers and activates; the push subscription is asked for with the provider's VAPID
// key. Chromium sends subscriptions only to its own push service (not reachable here, and not
// replaceable by our loopback one), so what a push service would deliver is handed to the worker
// with DevTools' ServiceWorker.deliverPushMessage: a validation push reaches the open tab, a
// message push shows a notification for the conversation.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import { http, send, startProvider, user, type Started } from '../helpers/harness.js';
import { CHROMIUM, CHROMIUM_ARGS, until } from './browser.js';

describe('web push in Chromium', { timeout: 180_000 }, () => {
  let p: Started;
  let browser: Browser;

  before(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium`);
    p = await startProvider({ INTERTALK_PUSH: 'on', INTERTALK_VAPID_SUBJECT: 'mailto:ops@example.org', INTERTALK_PUSH_INSECURE_ENDPOINTS: 'true' });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, timeout: 30_000, args: CHROMIUM_ARGS });
  });
  after(async () => {
    await browser?.close();
    await p?.stop();
  });

  test('the service worker registers, subscribing is asked with the VAPID key, validation and message pushes are handled', async () => {
    const bob = await user(p.url, 'bob');
    const alice = await user(p.url, 'alice');
    const sent = await send(p.url, alice.token, [alice.address, bob.address], 'hi');
    const conv = sent.body.conversationId as string;
    const vapid = (await http(p.url, 'GET', '/push/vapid', { token: bob.token })).body.publicKey as string;

    const context = await browser.newContext();
    await context.grantPermissions(['notifications'], { origin: p.url });
    const page = await context.newPage();
    await page.goto(p.url + '/');
    const cdp = await context.newCDPSession(page);
    const registrations: Array<{ registrationId: string; scopeURL: string }> = [];
    cdp.on('ServiceWorker.workerRegistrationUpdated', (e: { registrations: Array<{ registrationId: string; scopeURL: string; isDeleted: boolean }> }) => {
      for (const r of e.registrations) if (!r.isDeleted) registrations.push(r);
    });
    await cdp.send('ServiceWorker.enable');

    // Page scripts as strings: the tests compile without the DOM library.
    const state = (await page.evaluate(`(async () => {
      window.got = [];
      navigator.serviceWorker.addEventListener('message', (e) => window.got.push(e.data));
      const reg = await navigator.serviceWorker.register('/sw.js', { scope: '/' });
      const ready = await navigator.serviceWorker.ready;
      return { scope: reg.scope, active: ready.active ? ready.active.state : null, pushManager: 'pushManager' in ready, permission: Notification.permission };
    })()`)) as { scope: string; active: string | null; pushManager: boolean; permission: string };
    assert.equal(state.scope, p.url + '/');
    assert.ok(state.active === 'activated' || state.active === 'activating', String(state.active));
    assert.equal(state.pushManager, true);
    assert.equal(state.permission, 'granted');

    // Subscribe as the web client does. Headless Chromium cannot reach its push service: either it
    // returns a subscription (then its endpoint and keys are well-formed), or it refuses with a
    // push-service error after taking the key — never a complaint about the key itself.
    const sub = (await page.evaluate(`(async (key) => {
      const pad = '='.repeat((4 - (key.length % 4)) % 4);
      const raw = Uint8Array.from(atob((key + pad).replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
      const reg = await navigator.serviceWorker.ready;
      try {
        const s = await Promise.race([
          reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: raw }),
          new Promise((_, reject) => setTimeout(() => reject(new Error('subscribe timed out')), 20000)),
        ]);
        return { ok: true, endpoint: s.endpoint, p256dh: s.getKey('p256dh').byteLength, auth: s.getKey('auth').byteLength };
      } catch (err) {
        return { ok: false, name: err.name, message: err.message };
      }
    })(${JSON.stringify(vapid)})`)) as { ok: true; endpoint: string; p256dh: number; auth: number } | { ok: false; name: string; message: string };
    process.stderr.write(`# Chromium pushManager.subscribe: ${JSON.stringify(sub)}\n`);
    if (sub.ok) {
      assert.match(sub.endpoint, /^https:\/\//);
      assert.equal(sub.p256dh, 65);
      assert.equal(sub.auth, 16);
    } else {
      assert.doesNotMatch(`${sub.name} ${sub.message}`, /applicationServerKey|InvalidAccessError|not valid/i);
    }

    const reg = await until('the worker registration in DevTools', async () => registrations.find((r) => r.scopeURL === p.url + '/'), 20_000);
    const deliver = (data: unknown) => cdp.send('ServiceWorker.deliverPushMessage', { origin: p.url, registrationId: reg.registrationId, data: JSON.stringify(data) });

    await deliver({ validation: 'sub-id.123.mac' });
    const got = await until('the validation reaches the tab', async () => {
      const g = (await page.evaluate('window.got')) as Array<{ type: string; validation: string }>;
      return g.length > 0 ? g : null;
    });
    assert.deepEqual(got[0], { type: 'intertalk-push-validation', validation: 'sub-id.123.mac' });

    // A tab of the app in front shows messages itself: leave the app, then push. On a loaded
    // machine a push handed over by DevTools can reach a worker that is being stopped, and the tab
    // left behind can still count as focused for a moment: the push is handed over again every few
    // seconds until a notification shows (its tag makes repeats replace one another), and the
    // worker is looked up afresh on every probe.
    await until('the worker', async () => context.serviceWorkers()[0] ?? null, 20_000);
    const workerLog: string[] = [];
    context.on('serviceworker', (w) => w.on('console', (m) => workerLog.push(m.text())));
    for (const w of context.serviceWorkers()) w.on('console', (m) => workerLog.push(m.text()));
    await page.goto('about:blank');
    const push = { type: 'message', conversation: conv, 'msg-id': sent.body.id, seq: sent.body.seq, 'from-email': alice.address, content: 'hi' };
    let lastDelivery = 0;
    let deliveries = 0;
    const shown = await until(
      'a notification for the conversation',
      async () => {
        if (Date.now() - lastDelivery > 4000) {
          lastDelivery = Date.now();
          deliveries++;
          await deliver(push);
        }
        const worker = context.serviceWorkers()[0];
        if (!worker) return null;
        const n = (await worker.evaluate(`(async () => (await self.registration.getNotifications()).map((x) => ({ title: x.title, body: x.body, tag: x.tag, data: x.data })))()`)) as unknown[];
        return n.length > 0 ? n : null;
      },
      45_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; ${deliveries} deliveries; worker console: ${JSON.stringify(workerLog)}`);
    });
    assert.deepEqual(shown[0], { title: alice.address, body: 'hi', tag: conv, data: { conversation: conv } });
    await context.close();
  });
});

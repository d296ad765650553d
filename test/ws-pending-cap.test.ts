// Sockets that never send a token cost the server memory and a timer until the auth timeout: a
// client address may hold at most 64 of them at once (src/realtime/hub.ts). The next upgrade is
// refused with a JSON 429; a socket that authenticates frees its place; other addresses are not
// affected (with INTERTALK_TRUST_PROXY the address is X-Forwarded-For's).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startProvider, user } from './helpers/harness.js';
import { eventually } from './helpers/fed.js';

function upgrade(wsUrl: string, ip: string): Promise<{ ws: WebSocket } | { status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${wsUrl}/messageStream`, { headers: { 'x-forwarded-for': ip } });
    ws.once('open', () => resolve({ ws }));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.once('error', reject);
  });
}

test('at most 64 unauthenticated sockets per client address: the 65th upgrade gets 429 with a JSON reason; authenticating frees a place', { timeout: 120_000 }, async () => {
  const s = await startProvider({ INTERTALK_TRUST_PROXY: 'true', INTERTALK_WS_AUTH_TIMEOUT: '5m' });
  const open: WebSocket[] = [];
  try {
    const bob = await user(s.url, 'bob');
    for (let i = 0; i < 64; i++) {
      const r = await upgrade(s.wsUrl, '2001:db8:1:2::1');
      assert.ok('ws' in r, `upgrade ${i + 1} refused: ${JSON.stringify(r)}`);
      open.push(r.ws);
    }
    // The same /64, written as another address: refused.
    const refused = await upgrade(s.wsUrl, '2001:db8:1:2:ffff::9');
    assert.ok('status' in refused, 'the 65th upgrade was accepted');
    assert.equal(refused.status, 429);
    const body = JSON.parse(refused.body);
    assert.equal(body.error, 'rate_limited');
    assert.equal(typeof body.message, 'string');
    // Another client is not affected.
    const other = await upgrade(s.wsUrl, '203.0.113.7');
    assert.ok('ws' in other, 'another address was refused');
    open.push(other.ws);
    // One of the 64 authenticates: its place is freed.
    const first = open[0]!;
    const ready = new Promise<string>((resolve) => first.once('message', (d) => resolve(d.toString())));
    first.send(JSON.stringify({ token: bob.token }));
    assert.equal(JSON.parse(await ready).type, 'ready');
    const again = await upgrade(s.wsUrl, '2001:db8:1:2::1');
    assert.ok('ws' in again, `after one authenticated, still refused: ${JSON.stringify(again)}`);
    open.push(again.ws);
    // One that gives up (closes) frees its place too.
    const quitter = open[1]!;
    quitter.close();
    await eventually('the closed socket frees its place', async () => {
      const r = await upgrade(s.wsUrl, '2001:db8:1:2::1');
      if ('ws' in r) {
        open.push(r.ws);
        return true;
      }
      return false;
    }, 30_000, 100);
    const full = await upgrade(s.wsUrl, '2001:db8:1:2::1');
    assert.ok('status' in full && full.status === 429, 'the cap holds again once refilled');
  } finally {
    for (const ws of open) ws.terminate();
    await s.stop();
  }
});

// A flood of forged tokens naming a real peer must not keep that peer's key rotation from working
// (src/federation/peer-keys.ts): the peer's first message under its new key is accepted within one
// key cooldown (30 s), a made-up kid is refused with 401 once we have asked, and the flood costs
// the peer a bounded number of key lookups.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Agent, fetch } from 'undici';
import { startNetwork, type Network } from './helpers/network.js';
import { EvilPeer, peerKey, signToken, type PeerKey } from './helpers/evil-peer.js';

const US = 'us.test';
const PEER = 'rot.test';
const BOB = `bob@${US}`;
const CAROL = `carol@${PEER}`;
const COOLDOWN_S = 30;

let net: Network;
let peer: EvilPeer;
let agent: Agent;

const nowS = () => Math.floor(Date.now() / 1000);
const message = (text: string) => ({ id: `m-${randomUUID()}`, from: CAROL, to: [BOB, CAROL], sentAt: new Date(Date.now() - 1000).toISOString(), message: text });

async function post(token: string, body: unknown): Promise<{ status: number; retryAfter: number | null; body: any }> {
  const res = await fetch(`${net.node(US).url}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
    dispatcher: agent,
  });
  const text = await res.text();
  const ra = res.headers.get('retry-after');
  return { status: res.status, retryAfter: ra === null ? null : Number(ra), body: text ? JSON.parse(text) : null };
}

const genuine = (key: PeerKey) => signToken(key, { iss: PEER, sub: CAROL, aud: US, iat: nowS(), exp: nowS() + 60, jti: randomUUID() });

describe('key rotation under a flood of forged tokens', () => {
  before(async () => {
    peer = await EvilPeer.listen();
    net = await startNetwork({ domains: [US], extraResolve: { [PEER]: peer.port } });
    peer.setCert(await net.ca.issue([PEER]));
    agent = new Agent({ connect: { ca: net.ca.caCert, servername: US }, connections: 8 });
    await net.provider(US).ctx.accounts.create('bob', 'correct horse battery');
  });
  after(async () => {
    await agent.close();
    await net.stop();
    await peer.close();
  });

  test('the new key is accepted within one cooldown; made-up kids get 401 once asked; lookups stay bounded', { timeout: 180_000 }, async (t) => {
    const k1 = await peerKey('k1');
    const k2 = await peerKey('k2');
    const forger = await peerKey('k1'); // not the peer's key, under its kid
    peer.host(PEER).keys.set('k1', k1.publicJwk);
    const first = await post(await genuine(k1), message('before the rotation'));
    assert.equal(first.status, 201, JSON.stringify(first.body));

    // The flood: forged tokens naming the peer — its real kid with a wrong signature (each worth a
    // forced refresh) and made-up kids (each a lookup) — from 4 senders, until the test ends.
    let flooding = true;
    let forged = 0;
    const outcomes = new Map<number, number>();
    const flood = async (n: number) => {
      for (let i = 0; flooding; i++) {
        const key = i % 2 === 0 ? forger : { ...forger, kid: `made-up-${n}-${i}` };
        const r = await post(await signToken(key, { iss: PEER, sub: CAROL, aud: US, iat: nowS(), exp: nowS() + 60, jti: randomUUID() }, { kid: key.kid }), message('forged'));
        forged++;
        outcomes.set(r.status, (outcomes.get(r.status) ?? 0) + 1);
      }
    };
    const floods = [0, 1, 2, 3].map(flood);
    const stopFlood = async () => {
      flooding = false;
      await Promise.allSettled(floods);
    };
    const lookupsBefore = peer.seen(PEER, '/keys').length;
    const start = Date.now();
    try {
      await new Promise((r) => setTimeout(r, 1500)); // the flood is running and has started a cooldown

      // The peer rotates: k2 is published, and its next message is signed with it. It sends like our
      // outbox does: on 503 it waits Retry-After and tries again.
      peer.host(PEER).keys.set('k2', k2.publicJwk);
      const rotatedAt = Date.now();
      let accepted: Awaited<ReturnType<typeof post>> | null = null;
      const body = message('after the rotation');
      while (Date.now() - rotatedAt < 60_000) {
        const r = await post(await genuine(k2), body);
        if (r.status === 201) {
          accepted = r;
          break;
        }
        assert.equal(r.status, 503, `the genuine message may be deferred, never refused: ${JSON.stringify(r.body)}`);
        assert.ok(r.retryAfter !== null && r.retryAfter >= 1 && r.retryAfter <= COOLDOWN_S, `Retry-After ${r.retryAfter}`);
        await new Promise((res) => setTimeout(res, r.retryAfter! * 1000));
      }
      assert.ok(accepted, 'the genuine message under the new key was accepted within 60 s');
      const tookS = (Date.now() - rotatedAt) / 1000;
      assert.ok(tookS <= COOLDOWN_S + 15, `accepted after ${tookS} s`);
    } finally {
      await stopFlood();
    }
    await Promise.all(floods); // a flood request that failed outright fails the test
    const floodS = (Date.now() - start) / 1000;
    const lookups = peer.seen(PEER, '/keys').length - lookupsBefore;

    // Once the flood has stopped, a made-up kid is refused with 401 as soon as we could ask the
    // peer: at once, or after the Retry-After of the cooldown the flood left.
    const ghost = { ...forger, kid: 'ghost' };
    const ghostAt = Date.now();
    let ghostStatus = 0;
    for (let i = 0; i < 3 && ghostStatus !== 401; i++) {
      const r = await post(await signToken(ghost, { iss: PEER, sub: CAROL, aud: US, iat: nowS(), exp: nowS() + 60, jti: randomUUID() }, { kid: 'ghost' }), message('ghost'));
      ghostStatus = r.status;
      if (r.status === 503) await new Promise((res) => setTimeout(res, r.retryAfter! * 1000));
    }
    assert.equal(ghostStatus, 401, 'an unknown kid is refused once we could ask');
    assert.ok(Date.now() - ghostAt <= (COOLDOWN_S + 10) * 1000, 'within one cooldown');

    // What the flood cost the peer: lookups are one per cooldown at most (each /keys/{kid} and
    // then /keys), plus the genuine lookups.
    const bound = 2 * (Math.ceil(floodS / COOLDOWN_S) + 2);
    t.diagnostic(`${forged} forged requests in ${floodS.toFixed(1)} s cost ${lookups} key requests (bound ${bound}); outcomes ${JSON.stringify([...outcomes])}`);
    assert.ok(forged > 200, `the flood sent ${forged} forged requests`);
    assert.ok(lookups <= bound, `${lookups} key requests to the peer for ${forged} forged tokens in ${floodS.toFixed(0)} s (bound ${bound})`);
    // Nothing forged was ever accepted or answered with a server error.
    assert.equal(outcomes.get(201) ?? 0, 0);
    assert.ok([...outcomes.keys()].every((s) => s === 401 || s === 503 || s === 429), JSON.stringify([...outcomes]));
    const stored = await net.provider(US).ctx.storage.db.selectFrom('messages').select('body').execute();
    assert.equal(stored.filter((r) => r.body.includes('forged') || r.body.includes('ghost')).length, 0);
    assert.equal(stored.filter((r) => r.body.includes('after the rotation')).length, 1);
  });
});

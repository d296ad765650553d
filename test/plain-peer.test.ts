// Rich conversations with a provider that knows only plain intertalk (seed 000): every rich
// action a user of ours takes arrives there as one readable plain message (its fallback), or not
// at all (read receipts, typing) — never as JSON noise. Between two of our providers (both
// rich/1) the same actions arrive as rich messages and both sides end in the same state. Forged
// edits and deletes — through our API or from a peer — are refused and change nothing.
//
// The plain provider is test/helpers/plain-peer.ts: a real HTTPS server for plain.test with a
// certificate from the devnet CA, verifying our tokens against our /keys like any seed-000 peer.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { startNetwork, type Network } from './helpers/network.js';
import { RICH_EXTENSION } from '../src/protocol/rich.js';
import { api, eventually, fedUser, history, type FedUser } from './helpers/fed.js';
import { PlainPeer, SEED_000_FIELDS } from './helpers/plain-peer.js';

const A = 'a.test';
const B = 'b.test';
const P = 'plain.test';
const CAROL = `carol@${P}`;

interface Step {
  label: string;
  /** The `message` a plain peer must show. */
  plain: string;
  /** messageFormatted/format a plain peer gets (only for a formatted version of the same text). */
  formatted?: { messageFormatted: string; format: string };
  /** The rich kind a rich/1 peer gets (undefined: a plain message). */
  rich?: string;
  /** The stored message, as the sender's provider answered. */
  m?: any;
}

describe('rich actions with a plain-intertalk peer and between rich providers', () => {
  let net: Network;
  let peer: PlainPeer;
  let alice: FedUser;
  let bob: FedUser;
  /** The conversations alice ↔ carol@plain.test and alice ↔ bob@b.test. */
  let withCarol: { id: string; steps: Step[] };
  let withBob: { id: string; steps: Step[] };

  const call = async (u: FedUser, method: string, path: string, json?: unknown) => api(net, u.domain, method, path, { token: u.token, ...(json !== undefined ? { json } : {}) });

  const ok = async (u: FedUser, method: string, path: string, json?: unknown) => {
    const r = await call(u, method, path, json);
    assert.ok(r.status === 200 || r.status === 201, `${method} ${path} as ${u.address}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };

  /** Waits until no delivery from `domain` is queued. */
  const quiesce = async (domain: string) => {
    const db = net.provider(domain).ctx.storage.db;
    await eventually(`${domain}'s outbox to drain`, async () => (await db.selectFrom('outbox').select('id').where('state', '=', 'queued').execute()).length === 0);
  };

  /** Messages the plain peer accepted for conversation `participants`. */
  const plainReceived = (participants: string[]) => {
    const key = [...participants].sort().join(',');
    return peer.received.filter((r) => [...(r.body.to as string[])].sort().join(',') === key);
  };

  /**
   * Every rich action, through the client endpoints, as alice in her conversation with `other`.
   * Returns the steps with what a plain peer must see for each.
   */
  async function everyAction(other: string): Promise<{ id: string; steps: Step[] }> {
    const steps: Step[] = [];
    const step = async (s: Step, method: string, path: string, json?: unknown) => {
      s.m = await ok(alice, method, path, json);
      steps.push(s);
      return s.m;
    };
    const first = await step({ label: 'plain send', plain: 'Where are you?' }, 'POST', '/messages', { to: [alice.address, other], message: 'Where are you?' });
    const id = first.conversationId as string;
    const conv = `/conversations/${id}`;
    const station = await step({ label: 'content', plain: 'I am at the station', rich: 'content' }, 'POST', `${conv}/messages`, { text: 'I am at the station' });
    await step({ label: 'reply', plain: '↩ “I am at the station”: Which exit?', rich: 'reply' }, 'POST', `${conv}/messages`, { text: 'Which exit?', replyTo: station.seq });
    await step({ label: 'reaction', plain: '❤ to “Where are you?”', rich: 'reaction' }, 'POST', `${conv}/messages/${first.seq}/reactions`, { emoji: '❤' });
    await step({ label: 'reaction 2', plain: '👍 to “I am at the station”', rich: 'reaction' }, 'POST', `${conv}/messages/${station.seq}/reactions`, { emoji: '👍' });
    await step({ label: 'reaction removal', plain: '(withdrew 👍 from “I am at the station”)', rich: 'reaction' }, 'POST', `${conv}/messages/${station.seq}/reactions`, { emoji: '👍', remove: true });
    await step({ label: 'edit', plain: '✎ Where are you now?', rich: 'edit' }, 'PATCH', `${conv}/messages/${first.seq}`, { text: 'Where are you now?' });
    await step({ label: 'reaction to the edited text', plain: '🎉 to “Where are you now?”', rich: 'reaction' }, 'POST', `${conv}/messages/${first.seq}/reactions`, { emoji: '🎉' });
    // A formatted edit: its messageFormatted formats the new text, not the "✎ …" line — dropped.
    await step({ label: 'formatted edit', plain: '✎ Where are you right now?', rich: 'edit' }, 'PATCH', `${conv}/messages/${first.seq}`, { text: 'Where are you right now?', formatted: 'Where are you **right** now?', format: 'text/markdown' });
    await step(
      { label: 'markdown message', plain: 'Meet at noon', formatted: { messageFormatted: 'Meet at **noon**', format: 'text/markdown' }, rich: 'content' },
      'POST',
      `${conv}/messages`,
      { text: 'Meet at noon', formatted: 'Meet at **noon**', format: 'text/markdown' },
    );
    await step({ label: 'formatted reply', plain: '↩ “Meet at noon”: ok', rich: 'reply' }, 'POST', `${conv}/messages`, { text: 'ok', replyTo: steps[steps.length - 1]!.m.seq, formatted: '**ok**', format: 'text/markdown' });
    await step({ label: 'delete', plain: '🗑 (deleted a message)', rich: 'delete' }, 'DELETE', `${conv}/messages/${station.seq}`);
    await step({ label: 'rename', plain: '✎ named the conversation “Lunch”', rich: 'property' }, 'PUT', `${conv}/name`, { name: 'Lunch' });
    await step({ label: 'name removed', plain: '✎ removed the conversation name', rich: 'property' }, 'PUT', `${conv}/name`, { name: '' });
    await step({ label: 'rename again', plain: '✎ named the conversation “Lunch plans”', rich: 'property' }, 'PUT', `${conv}/name`, { name: 'Lunch plans' });
    return { id, steps };
  }

  before(async () => {
    peer = await PlainPeer.listen(P, ['carol']);
    net = await startNetwork({
      domains: [A, B],
      env: { INTERTALK_FEDERATION_SWEEP: '250ms', INTERTALK_FEDERATION_TIMEOUT: '5s' },
      extraResolve: { [P]: peer.port },
    });
    peer.setCert(await net.ca.issue([P]));
    peer.trust(net);
    alice = await fedUser(net, A, 'alice');
    bob = await fedUser(net, B, 'bob');
    withCarol = await everyAction(CAROL);
    withBob = await everyAction(bob.address);
    await quiesce(A);
  });

  after(async () => {
    if (net) {
      await net.stop();
      rmSync(net.dir, { recursive: true, force: true });
    }
    await peer?.close();
  });

  describe('to a plain-intertalk peer', () => {
    it('every action arrives as exactly one readable seed-000 message, in order', async () => {
      const expected = withCarol.steps;
      const got = await eventually('every action at plain.test', async () => {
        const r = plainReceived([alice.address, CAROL]);
        return r.length >= expected.length && r;
      });
      assert.deepEqual(peer.refusals, [], 'the plain peer refused nothing');
      assert.equal(got.length, expected.length, `one message per action: ${got.map((r) => r.body.message).join(' | ')}`);
      for (const [i, s] of expected.entries()) {
        const body = got[i]!.body;
        const extra = Object.keys(body).filter((k) => !(SEED_000_FIELDS as readonly string[]).includes(k));
        assert.deepEqual(extra, [], `${s.label}: only seed-000 fields (+ id), got ${got[i]!.raw}`);
        assert.equal(body.id, s.m.id, `${s.label}: the id of the stored message`);
        assert.equal(body.from, alice.address);
        assert.deepEqual([...(body.to as string[])].sort(), [alice.address, CAROL].sort());
        assert.equal(body.sentAt, s.m.sentAt);
        assert.equal(body.message, s.plain, `${s.label}: the readable fallback`);
        assert.doesNotMatch(body.message as string, /^\s*[{[]|"type"\s*:|"rich"/, `${s.label}: no JSON noise`);
        if (s.formatted) {
          assert.equal(body.messageFormatted, s.formatted.messageFormatted, s.label);
          assert.equal(body.format, s.formatted.format, s.label);
        } else {
          assert.equal(body.messageFormatted, undefined, `${s.label}: no messageFormatted of some other text`);
          assert.equal(body.format, undefined, s.label);
        }
        // Signed by a.test for alice, verified by the peer against a.test's /keys.
        assert.equal(got[i]!.claims.iss, A);
        assert.equal(got[i]!.claims.sub, alice.address);
      }
      // One request per action, and the peer was asked for its well-known at most once (cached).
      assert.equal(peer.seen('/messages', 'POST').length, expected.length);
      assert.ok(peer.seen('/.well-known/intertalk').length <= 1, `well-known fetched ${peer.seen('/.well-known/intertalk').length} times`);
      assert.ok(peer.seen('/.well-known/intertalk').every((r) => r.status === 404));
    });

    it('a plain message from the peer (2016 format, no id) arrives; reactions and replies to it go back readable', async () => {
      const conv = `/conversations/${withCarol.id}`;
      const sentAt = new Date(Date.now() - 1000).toISOString();
      const hello = { to: [CAROL, alice.address], from: CAROL, sentAt, message: 'Hi alice, it is carol' };
      const r = await peer.sendTo(A, hello);
      assert.equal(r.status, 201, JSON.stringify(r.body));
      const again = await peer.sendTo(A, hello);
      assert.equal(again.status, 200, 'a retry is acknowledged, not stored twice');
      const h = await history(net, alice, withCarol.id);
      const mine = h.filter((m) => m.from === CAROL);
      assert.equal(mine.length, 1);
      assert.equal(mine[0].message, 'Hi alice, it is carol');
      assert.equal(mine[0].id, r.body.id);
      assert.equal(mine[0].rich, undefined);

      const before = plainReceived([alice.address, CAROL]).length;
      await ok(alice, 'POST', `${conv}/messages/${mine[0].seq}/reactions`, { emoji: '👋' });
      await ok(alice, 'POST', `${conv}/messages`, { text: 'Hi carol!', replyTo: mine[0].seq });
      const got = await eventually('two more messages at plain.test', async () => {
        const x = plainReceived([alice.address, CAROL]);
        return x.length >= before + 2 && x.slice(before);
      });
      assert.deepEqual(
        got.map((x) => x.body.message),
        ['👋 to “Hi alice, it is carol”', '↩ “Hi alice, it is carol”: Hi carol!'],
      );
      await quiesce(A);
      assert.equal(plainReceived([alice.address, CAROL]).length, before + 2);
    });

    it('a file arrives as its text plus one link line', async () => {
      const conv = `/conversations/${withCarol.id}`;
      // Uploaded out of band: written straight into a.test's store (old and new upload tables).
      const bytes = Buffer.alloc(2048, 7);
      const fileId = createHash('sha256').update(bytes).digest('hex');
      const db = net.provider(A).ctx.storage.db;
      const now = Date.now();
      await db
        .insertInto('attachments')
        .values({ id: fileId, media_type: 'application/pdf', size: bytes.length, created_at: now, uploader: alice.address, origin: 'local', data: bytes, touched_at: now })
        .execute();
      await db.insertInto('attachment_uploads').values({ attachment_id: fileId, uploader: alice.address, media_type: 'application/pdf', name: 'map.pdf', size: bytes.length, created_at: now }).execute();
      const before = plainReceived([alice.address, CAROL]).length;
      const m = await ok(alice, 'POST', `${conv}/messages`, { text: 'The map', attachments: [{ id: fileId, name: 'map.pdf' }] });
      const got = await eventually('the file message at plain.test', async () => {
        const x = plainReceived([alice.address, CAROL]);
        return x.length > before && x[before];
      });
      assert.equal(got.body.id, m.id);
      assert.deepEqual(Object.keys(got.body).filter((k) => !(SEED_000_FIELDS as readonly string[]).includes(k)), [], got.raw);
      const lines = (got.body.message as string).split('\n');
      assert.equal(lines.length, 2, got.body.message as string);
      assert.equal(lines[0], 'The map');
      assert.match(lines[1]!, /^📎 map\.pdf \(2 KB\): https:\/\/a\.test(:\d+)?\/\S+$/, 'one readable link line');
      await quiesce(A);
      assert.equal(plainReceived([alice.address, CAROL]).length, before + 1);
    });

    it('read receipts and typing send nothing to a plain peer', async () => {
      const conv = `/conversations/${withCarol.id}`;
      await quiesce(A);
      const requestsBefore = peer.requests.length;
      const read = await call(alice, 'POST', `${conv}/read`, {});
      assert.equal(read.status, 200, JSON.stringify(read.body));
      // The signals/1 endpoints may not exist yet (404); either way nothing may reach plain.test.
      const typing = await call(alice, 'POST', `${conv}/typing`, {});
      assert.ok([200, 201, 202, 204, 404].includes(typing.status), `typing: ${typing.status} ${JSON.stringify(typing.body)}`);
      const readAgain = await call(alice, 'POST', `${conv}/read`, { seq: 1 });
      assert.equal(readAgain.status, 200);
      await new Promise((r) => setTimeout(r, 600)); // > two outbox sweeps
      await quiesce(A);
      // A message sent afterwards is the next (and only) request the peer gets.
      const bye = await ok(alice, 'POST', `${conv}/messages`, { text: 'bye' });
      await eventually('the message after the signals', async () => peer.received.some((x) => x.body.id === bye.id));
      await quiesce(A);
      const since = peer.requests.slice(requestsBefore);
      assert.deepEqual(
        since.map((x) => `${x.method} ${x.path} ${x.status}`),
        ['POST /messages 201'],
        'read receipts and typing produced no request to plain.test',
      );
      assert.equal(peer.received[peer.received.length - 1]!.body.message, 'bye');
    });
  });

  describe('between two rich providers', () => {
    /** A message as history shows it, without the provider-local parts. */
    const normal = (m: any) => {
      const { seq: _seq, ...rest } = m;
      return rest;
    };

    it('b.test advertises rich/1, so a.test sends the rich messages as they are', async () => {
      const wk = await api(net, B, 'GET', '/.well-known/intertalk');
      assert.equal(wk.status, 200);
      assert.ok(
        (wk.body.extensions as string[]).includes(RICH_EXTENSION),
        `b.test's /.well-known/intertalk must list ${RICH_EXTENSION} (EXTENSIONS in src/federation/service.ts): ${JSON.stringify(wk.body)}`,
      );
      await quiesce(A);
      const onB = await eventually('every action at b.test', async () => {
        const h = await history(net, bob, withBob.id);
        return h.length >= withBob.steps.length && h;
      });
      assert.equal(onB.length, withBob.steps.length);
      for (const [i, s] of withBob.steps.entries()) {
        assert.equal(onB[i].id, s.m.id, s.label);
        assert.equal(onB[i].rich?.type, s.rich, `${s.label}: arrives as rich ${s.rich ?? '(plain)'}`);
      }
    });

    it("b's history shows the same current state as a's: edited text, reactions, tombstone, title", async () => {
      await quiesce(A);
      const onA = await history(net, alice, withBob.id);
      const onB = await history(net, bob, withBob.id);
      assert.deepEqual(onB.map(normal), onA.map(normal));

      const byId = new Map(onA.map((m) => [m.id, m]));
      const [first, station, reply] = withBob.steps.map((s) => byId.get(s.m.id));
      assert.equal(first.message, 'Where are you right now?');
      assert.equal(first.edited, true);
      assert.equal(first.editCount, 2);
      assert.equal(first.messageFormatted, 'Where are you **right** now?');
      assert.deepEqual(first.reactions.map((r: any) => [r.emoji, r.count, r.by]), [['❤', 1, [alice.address]], ['🎉', 1, [alice.address]]]);
      assert.equal(station.deleted, true);
      assert.equal(station.message, '');
      assert.equal(station.reactions, undefined, 'the withdrawn 👍 left nothing; a tombstone shows no reactions');
      assert.equal(reply.rich.reference.text, null, 'the quote of the deleted message is scrubbed');
      assert.equal(reply.message, '↩ a message: Which exit?');

      const convA = await api(net, A, 'GET', `/conversations/${withBob.id}`, { token: alice.token });
      const convB = await api(net, B, 'GET', `/conversations/${withBob.id}`, { token: bob.token });
      assert.equal(convA.body.title, 'Lunch plans');
      assert.equal(convB.body.title, 'Lunch plans');
    });
  });

  describe('forged edits and deletes are refused and change nothing', () => {
    /** Everything a user of each provider can see of the two conversations, plus message counts. */
    const snapshot = async () => {
      const count = async (d: string) => {
        const db = net.provider(d).ctx.storage.db;
        return Number((await db.selectFrom('messages').select(db.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
      };
      const outbox = async (d: string) => {
        const db = net.provider(d).ctx.storage.db;
        return Number((await db.selectFrom('outbox').select(db.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
      };
      return {
        aliceCarol: await history(net, alice, withCarol.id),
        aliceBob: await history(net, alice, withBob.id),
        bobAlice: await history(net, bob, withBob.id),
        titles: [
          (await api(net, A, 'GET', `/conversations/${withCarol.id}`, { token: alice.token })).body.title,
          (await api(net, B, 'GET', `/conversations/${withBob.id}`, { token: bob.token })).body.title,
        ],
        messages: [await count(A), await count(B)],
        outbox: [await outbox(A), await outbox(B)],
      };
    };

    it("bob cannot edit or delete alice's message through b.test's API (403 not_your_message)", async () => {
      await quiesce(A);
      await quiesce(B);
      const target = withBob.steps[0]!.m; // alice's "Where are you?"
      const onB = (await history(net, bob, withBob.id)).find((m) => m.id === target.id);
      assert.ok(onB, 'b.test has the message');
      const before = await snapshot();
      const conv = `/conversations/${withBob.id}`;
      const tries: Array<[string, string, unknown]> = [
        ['PATCH', `${conv}/messages/${onB.seq}`, { text: 'I was never here' }],
        ['DELETE', `${conv}/messages/${onB.seq}`, undefined],
        // The raw rich form through POST /messages, as a hand-made client would send it.
        ['POST', '/messages', { to: [bob.address, alice.address], rich: { type: 'edit', text: 'I was never here', reference: { id: target.id, sender: alice.address } } }],
        ['POST', '/messages', { to: [bob.address, alice.address], rich: { type: 'delete', reference: { id: target.id, sender: alice.address } } }],
      ];
      for (const [method, path, json] of tries) {
        const r = await call(bob, method, path, json);
        assert.equal(r.status, 403, `${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
        assert.equal(r.body.error, 'not_your_message', JSON.stringify(r.body));
        assert.equal(typeof r.body.message, 'string');
      }
      await new Promise((r) => setTimeout(r, 300));
      await quiesce(B);
      assert.deepEqual(await snapshot(), before, 'nothing changed on either provider');
    });

    it("a peer's edit or delete of alice's message is refused with 403 not_your_message", async () => {
      await quiesce(A);
      const target = withCarol.steps[0]!.m; // alice's "Where are you?"
      const markdown = withCarol.steps.find((s) => s.label === 'markdown message')!.m;
      const before = await snapshot();
      const sentAt = new Date(Date.now() - 1000).toISOString();
      const base = { to: [CAROL, alice.address], from: CAROL, sentAt };
      const forged = [
        { ...base, id: 'forged-edit-1', message: '✎ pwned', rich: { type: 'edit', text: 'pwned', reference: { id: target.id, sender: alice.address } } },
        { ...base, id: 'forged-edit-2', message: '✎ pwned', rich: { type: 'edit', text: 'pwned', reference: { id: markdown.id, sender: alice.address, type: 'content', text: 'Meet at noon' } } },
        { ...base, id: 'forged-delete-1', message: '🗑 (deleted a message)', rich: { type: 'delete', reference: { id: target.id, sender: alice.address } } },
        { ...base, id: 'forged-delete-2', message: '🗑 (deleted a message)', rich: { type: 'delete', reference: { id: markdown.id, sender: alice.address, type: 'content', text: null } } },
      ];
      for (const body of forged) {
        const r = await peer.sendTo(A, body);
        assert.equal(r.status, 403, `${body.id}: ${r.status} ${JSON.stringify(r.body)}`);
        assert.equal(r.body.error, 'not_your_message', JSON.stringify(r.body));
        assert.match(r.body.message, /alice@a\.test/);
      }
      assert.deepEqual(await snapshot(), before, 'nothing changed');
      // The same peer's honest messages still go through afterwards.
      const fine = await peer.sendTo(A, { ...base, message: 'sorry, wrong button' });
      assert.equal(fine.status, 201, JSON.stringify(fine.body));
    });

    it("a peer claiming another domain's sender is refused and nothing changes", async () => {
      await quiesce(A);
      const target = withCarol.steps[0]!.m;
      const before = await snapshot();
      const sentAt = new Date(Date.now() - 1000).toISOString();
      const x = `x@${P}`;
      const edit = (from: string) => ({
        to: [...new Set([from, CAROL, alice.address])],
        from,
        sentAt,
        id: `claim-${from}`,
        message: '✎ pwned',
        rich: { type: 'edit', text: 'pwned', reference: { id: target.id, sender: from } },
      });
      const cases: Array<[string, Record<string, unknown>, Record<string, unknown>, string, number?]> = [
        // iss=evil.test, from=x@plain.test (sub = from): the issuer is not the sender's domain.
        // plain.test might be a personal domain delegated to evil.test (src/indieweb/): the
        // signature of evil.test is checked first, and its keys cannot be fetched here (503).
        ['iss evil.test, sub/from x@plain.test', edit(x), { iss: 'evil.test' }, 'keys_unavailable', 503],
        // iss=evil.test with its own user as sub, but from=x@plain.test.
        ['iss evil.test, sub mallory@evil.test, from x@plain.test', edit(x), { iss: 'evil.test', sub: 'mallory@evil.test' }, 'sender_mismatch'],
        // plain.test's valid key, but the message claims to come from alice herself.
        ['iss plain.test, from alice@a.test', edit(alice.address), {}, 'issuer_mismatch'],
        // plain.test's valid key and its own user as sub, but from bob@b.test.
        ['iss plain.test, sub carol, from bob@b.test', edit(bob.address), { sub: CAROL }, 'sender_mismatch'],
      ];
      for (const [what, body, claims, error, status] of cases) {
        const r = await peer.sendTo(A, body, claims);
        assert.equal(r.status, status ?? 401, `${what}: ${r.status} ${JSON.stringify(r.body)}`);
        assert.equal(r.body.error, error, `${what}: ${JSON.stringify(r.body)}`);
      }
      assert.deepEqual(await snapshot(), before, 'nothing changed');
    });
  });
});

// Attachments across providers over verified HTTPS (devnet): the recipient's provider fetches the
// file from the sender's provider with its own token, checks it against its id, stores it and
// serves its copy; peers only get files sent to their users; forged, mismatching or off-origin
// files are refused; failed fetches are retried and done on demand.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Agent, fetch as undiciFetch } from 'undici';
import { startNetwork, type Network } from './helpers/network.js';
import { fedUser, eventually, history, fed, type FedUser } from './helpers/fed.js';

const A = 'a.test';
const B = 'b.test';
const C = 'c.test';

interface Raw {
  status: number;
  headers: Headers;
  body: Buffer;
  json: any;
}

async function raw(net: Network, domain: string, method: string, path: string, opts: { token?: string; body?: Buffer | string; type?: string } = {}): Promise<Raw> {
  const node = net.node(domain);
  const headers: Record<string, string> = {};
  if (opts.type) headers['content-type'] = opts.type;
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  const dispatcher = new Agent({ connect: { ca: net.ca.caCert, servername: domain } });
  try {
    const res = await undiciFetch(node.url + path, { method, headers, body: opts.body, dispatcher });
    const body = Buffer.from(await res.arrayBuffer());
    let json: any;
    try {
      json = JSON.parse(body.toString('utf8'));
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers as unknown as Headers, body, json };
  } finally {
    await dispatcher.close();
  }
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const png = (n = 3000) => Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), randomBytes(n)]);
const db = (net: Network, d: string) => net.provider(d).ctx.storage.db;

async function upload(net: Network, u: FedUser, data: Buffer, type = 'image/png'): Promise<string> {
  const r = await raw(net, u.domain, 'POST', '/attachments', { token: u.token, body: data, type });
  assert.equal(r.status, 201, r.body.toString());
  return r.json.id;
}

async function sendFile(net: Network, from: FedUser, to: FedUser[], text: string, id: string, name = 'file.png'): Promise<any> {
  const r = await raw(net, from.domain, 'POST', '/messages', {
    token: from.token,
    type: 'application/json',
    body: JSON.stringify({ to: [from.address, ...to.map((t) => t.address)], rich: { type: 'content', text, attachments: [{ id, name }] } }),
  });
  assert.equal(r.status, 201, r.body.toString());
  return r.json;
}

async function fetchRow(net: Network, d: string, id: string) {
  return db(net, d).selectFrom('attachment_fetches').selectAll().where('attachment_id', '=', id).executeTakeFirst();
}
async function blobRow(net: Network, d: string, id: string) {
  return db(net, d).selectFrom('attachments').select(['id', 'size', 'origin', 'data']).where('id', '=', id).executeTakeFirst();
}
async function arrived(net: Network, u: FedUser, m: { conversationId: string; id: string }) {
  return eventually(`message ${m.id} at ${u.domain}`, async () => (await history(net, u, m.conversationId)).find((x) => x.id === m.id));
}

describe('attachments between providers over HTTPS', () => {
  let net: Network;
  let alice: FedUser, bob: FedUser, mallory: FedUser, carol: FedUser;

  before(async () => {
    net = await startNetwork({ domains: [A, B, C], env: { INTERTALK_FEDERATION_SWEEP: '1s', INTERTALK_MAX_ATTACHMENT: '256KiB', INTERTALK_SEND_RATE: '100000' } });
    alice = await fedUser(net, A, 'alice');
    bob = await fedUser(net, B, 'bob');
    mallory = await fedUser(net, B, 'mallory');
    carol = await fedUser(net, C, 'carol');
  });
  after(async () => net.stop());

  test('bob@b receives an image from alice@a: b fetches it, stores it, and serves bob the same bytes', async () => {
    const data = png();
    const id = await upload(net, alice, data);
    const m = await sendFile(net, alice, [bob], 'a picture', id, 'beach.png');
    const got = await arrived(net, bob, m);
    assert.deepEqual(got.rich.attachments, [{ id, name: 'beach.png', mediaType: 'image/png', size: data.length, url: `${net.provider(A).config.publicUrl}/attachments/${id}` }]);

    // b.test fetched it in the background: it is in b's database, verified.
    const stored = await eventually('b.test stored the file', () => blobRow(net, B, id));
    assert.ok(Buffer.from(stored.data).equals(data));
    assert.equal(stored.origin, A);
    // The file is stored before its fetch is marked done (two writes): wait for the mark.
    const f = await eventually('b.test marked the fetch done', async () => {
      const row = await fetchRow(net, B, id);
      return row?.state === 'done' ? row : null;
    });
    assert.equal(f?.recipient, bob.address, 'b asked with a token for its own user');

    const r = await raw(net, B, 'GET', `/attachments/${id}`, { token: bob.token });
    assert.equal(r.status, 200, r.body.toString());
    assert.ok(r.body.equals(data), 'the same bytes');
    assert.equal(r.headers.get('content-type'), 'image/png');
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    assert.match(r.headers.get('content-disposition') ?? '', /^inline; filename="beach\.png"/);

    // b's other users and c.test's users get nothing.
    assert.equal((await raw(net, B, 'GET', `/attachments/${id}`, { token: mallory.token })).status, 404);
    assert.equal((await raw(net, C, 'GET', `/attachments/${id}`, { token: carol.token })).status, 404);
  });

  test('a peer provider gets a file only for its users in a conversation where one of ours sent it', async () => {
    const data = png();
    const id = await upload(net, alice, data);
    const m = await sendFile(net, alice, [bob], 'for bob', id);
    await arrived(net, bob, m);
    const as = async (from: string, sub: string) => raw(net, A, 'GET', `/attachments/${id}`, { token: await fed(net.provider(from)).keys.sign({ aud: A, sub }) });
    const ok = await as(B, bob.address);
    assert.equal(ok.status, 200);
    assert.ok(ok.body.equals(data));
    assert.equal((await as(B, mallory.address)).status, 404, 'mallory@b is not in the conversation');
    assert.equal((await as(C, carol.address)).status, 404, 'c.test has nobody there');
    // A token for another audience, or forged by c.test for b's user, is refused.
    const wrongAud = await raw(net, A, 'GET', `/attachments/${id}`, { token: await fed(net.provider(B)).keys.sign({ aud: C, sub: bob.address }) });
    assert.equal(wrongAud.status, 401);
    // c.test's signature verifies, but b.test is no personal domain delegated to c.test (src/indieweb/).
    const forged = await raw(net, A, 'GET', `/attachments/${id}`, { token: await fed(net.provider(C)).keys.sign({ aud: A, sub: bob.address }) });
    assert.equal(forged.status, 403);
    assert.equal(JSON.parse(forged.body.toString()).error, 'sender_not_delegated');
  });

  test('a peer cannot claim a file it does not have by naming its hash', async () => {
    // alice@a sends a file to a local friend only; b.test learns its hash somehow and names it.
    const secret = png();
    const id = await upload(net, alice, secret);
    const friend = await fedUser(net, A, 'friend');
    await sendFile(net, alice, [friend], 'private', id);
    const token = await fed(net.provider(B)).keys.sign({ aud: A, sub: mallory.address });
    const body = JSON.stringify({
      id: `forged-${randomBytes(4).toString('hex')}`,
      from: mallory.address,
      to: [mallory.address, friend.address],
      sentAt: new Date().toISOString(),
      message: 'gimme',
      rich: { type: 'content', text: 'gimme', attachments: [{ id, name: 'x.png', mediaType: 'image/png', size: secret.length, url: `${net.provider(B).config.publicUrl}/attachments/${id}` }] },
    });
    const res = await raw(net, A, 'POST', '/messages', { token, body, type: 'application/json' });
    assert.equal(res.status, 201, res.body.toString());
    // mallory's provider cannot download it through her own message...
    const peer = await raw(net, A, 'GET', `/attachments/${id}`, { token: await fed(net.provider(B)).keys.sign({ aud: A, sub: mallory.address }) });
    assert.equal(peer.status, 404);
    // ...and a's verification of b's copy fails (b has no such file), so nobody gets a's copy
    // through mallory's message: the friend still has it through alice's.
    await eventually('a.test tried b.test', async () => (await fetchRow(net, A, id))?.attempts);
    const f = await db(net, A).selectFrom('attachment_fetches').selectAll().where('attachment_id', '=', id).where('domain', '=', B).executeTakeFirst();
    assert.notEqual(f?.state, 'done');
  });

  test('bytes that do not match the id are refused and discarded', async () => {
    const data = png();
    const id = await upload(net, alice, data);
    // Corrupt a's copy (same size): what a.test serves no longer hashes to the id.
    const corrupt = Buffer.from(data);
    corrupt[100] = corrupt[100]! ^ 0xff;
    await db(net, A).updateTable('attachments').set({ data: corrupt }).where('id', '=', id).execute();
    const m = await sendFile(net, alice, [bob], 'corrupt', id);
    await arrived(net, bob, m);
    const f = await eventually('b.test gave up on it', async () => {
      const row = await fetchRow(net, B, id);
      return row?.state === 'failed' ? row : null;
    });
    assert.match(f.last_error ?? '', /SHA-256/);
    assert.equal(await blobRow(net, B, id), undefined, 'nothing stored');
    const r = await raw(net, B, 'GET', `/attachments/${id}`, { token: bob.token });
    assert.equal(r.status, 502);
    assert.ok(!r.body.equals(corrupt));
  });

  test('files are fetched only from the sending provider\'s own server', async () => {
    const data = png();
    const id = sha(data);
    // A message from a.test (properly signed) whose file lives elsewhere (on c.test).
    for (const url of [`${net.provider(C).config.publicUrl}/attachments/${id}`, `https://127.0.0.1:${net.node(A).port}/attachments/${id}`]) {
      const body = JSON.stringify({
        id: `off-${randomBytes(4).toString('hex')}`,
        from: alice.address,
        to: [alice.address, bob.address],
        sentAt: new Date().toISOString(),
        message: 'elsewhere',
        rich: { type: 'content', text: 'elsewhere', attachments: [{ id, name: 'x.png', mediaType: 'image/png', size: data.length, url }] },
      });
      const token = await fed(net.provider(A)).keys.sign({ aud: B, sub: alice.address });
      const res = await raw(net, B, 'POST', '/messages', { token, body, type: 'application/json' });
      assert.equal(res.status, 201, res.body.toString());
      const f = await eventually('refused', async () => {
        const row = await fetchRow(net, B, id);
        return row?.state === 'failed' ? row : null;
      });
      assert.match(f.last_error ?? '', /not on a\.test's server/);
      await db(net, B).deleteFrom('attachment_fetches').where('attachment_id', '=', id).execute();
    }
  });

  test('a failed fetch is retried later, and done on demand when bob downloads first', async () => {
    const b = net.provider(B).attachments;
    // b's fetch worker is off: the message arrives, the file is not fetched yet.
    await b.stop();
    const data1 = png();
    const data2 = png();
    const id1 = await upload(net, alice, data1);
    const id2 = await upload(net, alice, data2);
    const m1 = await sendFile(net, alice, [bob], 'one', id1);
    const m2 = await sendFile(net, alice, [bob], 'two', id2);
    await arrived(net, bob, m1);
    await arrived(net, bob, m2);
    assert.equal(await blobRow(net, B, id1), undefined);

    // On demand: bob downloads before b has it.
    const r = await raw(net, B, 'GET', `/attachments/${id1}`, { token: bob.token });
    assert.equal(r.status, 200, r.body.toString());
    assert.ok(r.body.equals(data1));
    assert.ok(await blobRow(net, B, id1));

    // a.test is down: the background fetch fails and is scheduled again.
    await net.stopNode(A);
    try {
      b.start();
      const pending = await eventually('a failed attempt', async () => {
        const row = await fetchRow(net, B, id2);
        return row && Number(row.attempts) >= 1 ? row : null;
      });
      assert.equal(pending.state, 'pending');
      assert.ok(Number(pending.next_attempt_at) > Date.now(), 'retried later');
      const down = await raw(net, B, 'GET', `/attachments/${id2}`, { token: bob.token });
      assert.equal(down.status, 503);
    } finally {
      await net.startNode(A);
    }
    // The retry (made due now, rather than waiting out the back-off) succeeds.
    await db(net, B).updateTable('attachment_fetches').set({ next_attempt_at: 0 }).where('attachment_id', '=', id2).execute();
    b.kick();
    await eventually('fetched on retry', async () => (await fetchRow(net, B, id2))?.state === 'done');
    const ok = await raw(net, B, 'GET', `/attachments/${id2}`, { token: bob.token });
    assert.equal(ok.status, 200);
    assert.ok(ok.body.equals(data2));
  });

  test('the capability link in the fallback text works over HTTPS without a token; a wrong key → 404', async () => {
    const data = png();
    const id = await upload(net, alice, data);
    const m = await sendFile(net, alice, [bob], 'link', id);
    const link = new URL(/(https:\/\/\S+\?c=\S+&key=\S+)/.exec(m.message)![1]!);
    assert.equal(link.host, new URL(net.provider(A).config.publicUrl).host);
    const ok = await raw(net, A, 'GET', `${link.pathname}${link.search}`);
    assert.equal(ok.status, 200);
    assert.ok(ok.body.equals(data));
    const key = link.searchParams.get('key')!;
    const wrong = `${link.pathname}?c=${link.searchParams.get('c')}&key=${key.startsWith('A') ? 'B' : 'A'}${key.slice(1)}`;
    assert.equal((await raw(net, A, 'GET', wrong)).status, 404);
  });

  test('a delete by the sender removes the file on both providers', async () => {
    const data = png();
    const id = await upload(net, alice, data);
    const m = await sendFile(net, alice, [bob], 'soon gone', id);
    await arrived(net, bob, m);
    await eventually('b.test stored the file', () => blobRow(net, B, id));
    const del = await raw(net, A, 'DELETE', `/conversations/${m.conversationId}/messages/${m.seq}`, { token: alice.token });
    assert.equal(del.status, 201, del.body.toString());
    await eventually('purged on a.test', async () => (await blobRow(net, A, id)) === undefined);
    await eventually('purged on b.test', async () => (await blobRow(net, B, id)) === undefined);
    assert.equal((await raw(net, B, 'GET', `/attachments/${id}`, { token: bob.token })).status, 404);
    assert.equal((await raw(net, A, 'GET', `/attachments/${id}`, { token: alice.token })).status, 404);
    assert.equal(await fetchRow(net, B, id), undefined, 'fetch records go too');
  });
});

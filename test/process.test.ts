// The provider as an operator runs it: the CLI, crashes (SIGKILL) and graceful shutdown.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { http, login, send, Socket, tempDir } from './helpers/harness.js';
import { databaseUrl } from './helpers/database.js';
import { runCli, startServe } from './helpers/process.js';

describe('operating the provider', () => {
  test('user add/list/passwd/remove from the CLI; passwords come from stdin, never argv', async () => {
    const dir = tempDir();
    const env = { INTERTALK_DATABASE: await databaseUrl(dir, 'db.sqlite'), INTERTALK_DOMAIN: 'ops.test' };
    const add = await runCli(['user', 'add', 'Quinn'], env, 'first password\n');
    assert.equal(add.code, 0, add.stderr);
    assert.match(add.stdout, /created quinn@ops\.test/);
    const dup = await runCli(['user', 'add', 'quinn'], env, 'first password\n');
    assert.equal(dup.code, 2);
    assert.match(dup.stderr, /taken/);
    const weak = await runCli(['user', 'add', 'rob'], env, 'short\n');
    assert.equal(weak.code, 2);
    const list = await runCli(['user', 'list'], env);
    assert.match(list.stdout, /^quinn@ops\.test\t/m);
    assert.doesNotMatch(list.stdout, /rob/);

    const srv = await startServe({ ...env, INTERTALK_WS_HEARTBEAT: '500ms' });
    try {
      const t = await login(srv.url, 'quinn@ops.test', 'first password');
      const sock = await Socket.open(srv.url.replace('http', 'ws'), '/messages', JSON.stringify({ token: t.access_token }));
      await sock.until((f) => f.find((m) => m.type === 'ready'));
      const pw = await runCli(['user', 'passwd', 'quinn'], env, 'second password\n');
      assert.equal(pw.code, 0, pw.stderr);
      // The running server notices the ended session: the token stops working, the socket closes.
      assert.equal((await sock.waitClose(10_000)).code, 4003);
      const deadline = Date.now() + 10_000;
      while ((await http(srv.url, 'GET', '/me', { token: t.access_token })).status !== 401) {
        assert.ok(Date.now() < deadline, 'the old access token still works');
        await new Promise((r) => setTimeout(r, 250));
      }
      // The old session was ended; the new password works, the old one does not.
      assert.equal((await http(srv.url, 'POST', '/token', { form: { grant_type: 'refresh_token', refresh_token: t.refresh_token } })).status, 400);
      assert.equal((await http(srv.url, 'POST', '/token', { form: { grant_type: 'password', username: 'quinn', password: 'first password' } })).status, 400);
      assert.equal((await http(srv.url, 'POST', '/token', { form: { grant_type: 'password', username: 'quinn', password: 'second password' } })).status, 200);
    } finally {
      srv.proc.kill('SIGTERM');
      await srv.exited;
    }
    const rm = await runCli(['user', 'remove', 'quinn'], env);
    assert.equal(rm.code, 0, rm.stderr);
    assert.match((await runCli(['user', 'list'], env)).stdout, /no users/);
    // A removed name is never handed out again: nobody inherits its conversations.
    const reuse = await runCli(['user', 'add', 'quinn'], env, 'third password\n');
    assert.equal(reuse.code, 2);
    assert.match(reuse.stderr, /removed account/);
    const unknown = await runCli(['frobnicate'], env);
    assert.equal(unknown.code, 2);
  });

  test('SIGKILL right after a 201: the message is there after restart', async () => {
    const dir = tempDir();
    const env = { INTERTALK_DATABASE: await databaseUrl(dir, 'db.sqlite') };
    const srv = await startServe(env);
    await http(srv.url, 'POST', '/users', { json: { username: 'vera', password: 'correct horse battery' } });
    await http(srv.url, 'POST', '/users', { json: { username: 'walt', password: 'correct horse battery' } });
    const t = await login(srv.url, 'vera', 'correct horse battery');
    const sent: any[] = [];
    for (let i = 0; i < 20; i++) {
      const r = await send(srv.url, t.access_token, ['vera@localhost', 'walt@localhost'], `durable ${i}`);
      assert.equal(r.status, 201);
      sent.push(r.body);
    }
    srv.proc.kill('SIGKILL');
    const exit = await srv.exited;
    assert.equal(exit.signal, 'SIGKILL');

    const again = await startServe(env);
    try {
      const h = await http(again.url, 'GET', `/conversations/${sent[0].conversationId}/messages?limit=100`, { token: t.access_token });
      assert.equal(h.status, 200);
      assert.deepEqual(h.body.messages, sent);
    } finally {
      again.proc.kill('SIGTERM');
      await again.exited;
    }
  });

  test('SIGTERM: sockets are closed with 1001 and the process exits cleanly', async () => {
    const dir = tempDir();
    const srv = await startServe({ INTERTALK_DATABASE: await databaseUrl(dir, 'db.sqlite') });
    await http(srv.url, 'POST', '/users', { json: { username: 'xena', password: 'correct horse battery' } });
    const t = await login(srv.url, 'xena', 'correct horse battery');
    const s = await Socket.open(srv.url.replace('http', 'ws'), '/messages', JSON.stringify({ token: t.access_token }));
    await s.until((f) => f.find((m) => m.type === 'ready'));
    srv.proc.kill('SIGTERM');
    assert.equal((await s.waitClose()).code, 1001);
    const exit = await srv.exited;
    assert.equal(exit.code, 0, srv.output());
    // Logs never contain credentials.
    assert.doesNotMatch(srv.output(), /ita_|itr_|correct horse/);
  });
});

// Property tests for the pure room rules (src/rooms/protocol.ts): room names and addresses,
// referral URIs round-trip, policy and message bodies never throw and refuse what is out of bounds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MAX_ROOM_NAME, formatReferral, isValidRoomName, parseCreateRoom, parseReferral, parseRoomAddress, parseRoomMessage, parsePolicyUpdate } from '../src/rooms/protocol.js';

const nameChar = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789._-'.split(''));
const roomName = fc
  .tuple(fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789'.split('')), fc.array(nameChar, { maxLength: MAX_ROOM_NAME - 1 }))
  .map(([h, t]) => h + t.join(''));
const domain = fc.array(fc.stringMatching(/^[a-z][a-z0-9]{0,10}$/), { minLength: 1, maxLength: 3 }).map((l) => [...l, 'example'].join('.'));
const code = fc.stringMatching(/^[A-Za-z0-9_-]{1,40}$/);

test('valid room names and addresses are accepted and round-trip; names with # or upper-case-only forms are normalised or refused', () => {
  fc.assert(
    fc.property(roomName, domain, (n, d) => {
      assert.ok(isValidRoomName(n));
      const a = parseRoomAddress(`${n.toUpperCase()}#${d}`);
      assert.deepEqual(a, { name: n, domain: d, full: `${n}#${d}` });
      assert.equal(parseRoomAddress(`${n}#x#${d}`), null);
      assert.equal(isValidRoomName(`${n}#`), false);
    }),
  );
  assert.equal(isValidRoomName('a'.repeat(MAX_ROOM_NAME + 1)), false);
  assert.equal(isValidRoomName('-lead'), false);
  assert.equal(parseRoomAddress('#a.example'), null);
});

test('referrals round-trip with and without a code, and refuse malformed ones', () => {
  fc.assert(
    fc.property(roomName, domain, fc.option(code, { nil: null }), (n, d, c) => {
      const r = formatReferral(`${n}#${d}`, c);
      assert.ok(r.startsWith(`room=${encodeURIComponent(`${n}#${d}`)}`));
      assert.deepEqual(parseReferral(r), { room: `${n}#${d}`, code: c });
    }),
  );
  assert.equal(parseReferral('room=execs%23ecorp.com&code=f33ead55-bc29-4bfc-b44c-763de84d1da2')?.code, 'f33ead55-bc29-4bfc-b44c-763de84d1da2');
  assert.equal(parseReferral('room=execs&code=x'), null);
  assert.equal(parseReferral('room=execs%23ecorp.com&code=a%20b'), null);
});

test('policy, create and message parsers never throw on arbitrary JSON', () => {
  fc.assert(
    fc.property(fc.jsonValue(), (v) => {
      for (const r of [parseCreateRoom(v), parsePolicyUpdate(v), parseRoomMessage(v, Date.now(), 60_000)]) assert.equal(typeof r.ok, 'boolean');
    }),
  );
  assert.deepEqual(parseCreateRoom({ name: 'team' }), { ok: true, value: { name: 'team', visibility: 'public', history: 'join', title: null, topic: null } });
  assert.equal(parseCreateRoom({ name: 'team', visibility: 'secret' }).ok, false);
  assert.equal(parseCreateRoom({ name: 'team', history: 'never' }).ok, false);
  assert.equal(parseRoomMessage({ message: '   ' }, Date.now(), 0).ok, false);
  assert.equal(parseRoomMessage({ message: 'x', sentAt: new Date(Date.now() + 3_600_000).toISOString() }, Date.now(), 60_000).ok, false);
  assert.equal(parseRoomMessage({ message: 'x', format: 'text/markdown' }, Date.now(), 0).ok, false);
});

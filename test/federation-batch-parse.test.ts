// batch/1 answers (parseBatchResults), bodies (batchBody) and the rows of a round (roundRows): pure, property-tested.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { batchBody, bodySha256, MAX_BATCH_BYTES, parseBatchResults } from '../src/federation/batch.js';
import { roundRows } from '../src/federation/outbox.js';

const result = fc.record(
  { id: fc.option(fc.string(), { nil: null }), status: fc.integer({ min: 100, max: 599 }), error: fc.string({ maxLength: 50 }), message: fc.string({ maxLength: 100 }) },
  { requiredKeys: ['id', 'status'] },
);

test('property: a well-formed answer is read back as sent, for the right count only', () => {
  fc.assert(
    fc.property(fc.array(result, { minLength: 1, maxLength: 100 }), (results) => {
      const parsed = parseBatchResults(JSON.parse(JSON.stringify({ results })), results.length);
      assert.deepEqual(parsed, JSON.parse(JSON.stringify(results)));
      assert.equal(parseBatchResults({ results }, results.length + 1), null);
    }),
  );
});

test('property: anything else is null, never a throw', () => {
  fc.assert(
    fc.property(fc.anything(), fc.integer({ min: 0, max: 5 }), (json, n) => {
      const r = parseBatchResults(json, n);
      if (r !== null) {
        assert.equal(r.length, n);
        for (const x of r) assert.ok(Number.isInteger(x.status) && x.status >= 100 && x.status <= 599);
      }
    }),
  );
  for (const bad of [null, [], {}, { results: {} }, { results: [{ status: 1000 }] }, { results: [{ status: '200' }] }, { results: [null] }]) {
    assert.equal(parseBatchResults(bad, 1), null, JSON.stringify(bad));
  }
});

test('property: batchBody is the JSON {"messages": [...]} of the messages, and its hash is stable', () => {
  fc.assert(
    fc.property(fc.array(fc.jsonValue(), { minLength: 1, maxLength: 20 }), (values) => {
      const body = batchBody(values.map((v) => JSON.stringify(v)));
      assert.deepEqual(JSON.parse(body), JSON.parse(JSON.stringify({ messages: values })));
      assert.equal(bodySha256(body), bodySha256(Buffer.from(body, 'utf8')));
      assert.match(bodySha256(body), /^[A-Za-z0-9_-]{43}$/);
    }),
  );
});

test('property: a round takes a non-empty prefix of the queue within MAX_BATCH_BYTES of body, or the head alone', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 2 * MAX_BATCH_BYTES }), { minLength: 1, maxLength: 100 }), (sizes) => {
      const head = sizes.map((size, i) => ({ i, size }));
      const taken = roundRows(head);
      assert.ok(taken.length >= 1);
      assert.deepEqual(taken, head.slice(0, taken.length));
      const total = taken.reduce((n, r) => n + r.size, 0);
      if (taken.length > 1) assert.ok(total <= MAX_BATCH_BYTES, `${total}`);
      if (taken.length < head.length) assert.ok(total + head[taken.length]!.size > MAX_BATCH_BYTES);
    }),
    { numRuns: 500 },
  );
});

// pipeline/1's ordering gate (src/federation/stream-order.ts), property-based: whatever order a
// stream's batches arrive in and however long each takes, they run one at a time in seq order;
// a batch needing a retry, or one that never comes, stops everything after it; replays run;
// memory is bounded. And the strict reading of the `stream` / `seq` fields.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { StreamOrder, parsePipelineFields, type Admission } from '../src/federation/stream-order.js';

const ticks = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
};

interface Trace {
  /** seqs in the order they started running. */
  started: number[];
  /** Answer per seq. */
  answers: Map<number, Admission['kind']>;
  /** Most batches running at once. */
  maxRunning: number;
}

/**
 * Sends `arrival` (seqs, in arrival order) into one stream: each arrives after `gaps[i]` ticks,
 * runs for `work[seq]` ticks once admitted, and reports a retry-class result if in `retry`.
 */
async function play(gate: StreamOrder, arrival: number[], gaps: number[], work: (seq: number) => number, retry: Set<number>, stream = 's'): Promise<Trace> {
  const t: Trace = { started: [], answers: new Map(), maxRunning: 0 };
  let running = 0;
  const all: Array<Promise<void>> = [];
  for (let i = 0; i < arrival.length; i++) {
    await ticks(gaps[i] ?? 0);
    const seq = arrival[i]!;
    all.push(
      gate.enter('peer.test', stream, seq).then(async (a) => {
        t.answers.set(seq, a.kind);
        if (a.kind !== 'run') return;
        t.started.push(seq);
        running++;
        t.maxRunning = Math.max(t.maxRunning, running);
        await ticks(work(seq));
        running--;
        a.done(retry.has(seq));
      }),
    );
  }
  await Promise.all(all);
  return t;
}

const permutation = (n: number) => fc.shuffledSubarray([...Array(n).keys()], { minLength: n, maxLength: n });

describe('pipeline/1 ordering gate', () => {
  test('batches arriving in any order run one at a time, in seq order', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 12 }).chain((n) => fc.tuple(permutation(n), fc.array(fc.integer({ min: 0, max: 3 }), { minLength: n, maxLength: n }), fc.array(fc.integer({ min: 0, max: 3 }), { minLength: n, maxLength: n }))),
        async ([arrival, gaps, work]) => {
          const gate = new StreamOrder({ waitMs: 60_000 });
          const t = await play(gate, arrival, gaps, (s) => work[s]!, new Set());
          assert.deepEqual(t.started, [...arrival].sort((a, b) => a - b));
          assert.equal(t.maxRunning, 1);
        },
      ),
      { numRuns: 150 },
    );
  });

  test('a retry-class result breaks the stream: nothing after it runs, every later batch is refused', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 10 }).chain((n) => fc.tuple(permutation(n), fc.integer({ min: 0, max: n - 1 }), fc.array(fc.integer({ min: 0, max: 2 }), { minLength: n, maxLength: n }))),
        async ([arrival, failing, gaps]) => {
          const gate = new StreamOrder({ waitMs: 60_000 });
          const t = await play(gate, arrival, gaps, () => 1, new Set([failing]));
          assert.deepEqual(t.started, [...Array(failing + 1).keys()]);
          for (let s = failing + 1; s < arrival.length; s++) assert.equal(t.answers.get(s), 'broken', `seq ${s}`);
          // A batch sent later on the broken stream is refused too.
          assert.equal((await gate.enter('peer.test', 's', arrival.length)).kind, 'broken');
          // Another stream of the same peer is not affected.
          const other = await gate.enter('peer.test', 'fresh', 0);
          assert.equal(other.kind, 'run');
        },
      ),
      { numRuns: 100 },
    );
  });

  test('a missing batch: its successors wait, then one is refused out_of_order and the stream is broken', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 8 }).chain((n) => fc.tuple(permutation(n), fc.integer({ min: 0, max: n - 2 }))),
        async ([all, missing]) => {
          const gate = new StreamOrder({ waitMs: 30 });
          const arrival = all.filter((s) => s !== missing);
          const t = await play(gate, arrival, [], () => 0, new Set());
          assert.deepEqual(t.started, [...Array(missing).keys()]);
          const refused = arrival.filter((s) => s > missing).map((s) => t.answers.get(s));
          assert.ok(refused.every((k) => k === 'out_of_order' || k === 'broken'), JSON.stringify(refused));
          assert.equal(refused.filter((k) => k === 'out_of_order').length, 1);
          // The late predecessor itself comes too late: refused, nothing after it may run.
          assert.equal((await gate.enter('peer.test', 's', missing)).kind, 'broken');
        },
      ),
      { numRuns: 40 },
    );
  });

  test('a replay of an applied batch runs at once; a duplicate of the running one waits and then runs as a replay', async () => {
    const gate = new StreamOrder({ waitMs: 60_000 });
    const a0 = await gate.enter('p', 's', 0);
    assert.equal(a0.kind, 'run');
    let dupRan = false;
    const dup = gate.enter('p', 's', 0).then((a) => {
      dupRan = a.kind === 'run';
      return a;
    });
    await ticks(3);
    assert.equal(dupRan, false, 'not while the original runs');
    (a0 as Extract<Admission, { kind: 'run' }>).done(false);
    const d = await dup;
    assert.equal(d.kind, 'run');
    const a1 = await gate.enter('p', 's', 1);
    assert.equal(a1.kind, 'run', 'the replay does not hold the turn');
    (d as Extract<Admission, { kind: 'run' }>).done(false);
    (a1 as Extract<Admission, { kind: 'run' }>).done(false);
    const replay = await gate.enter('p', 's', 0);
    assert.equal(replay.kind, 'run');
  });

  test('memory is bounded: too far ahead, streams per issuer and in all', async () => {
    const gate = new StreamOrder({ waitMs: 60_000, maxAhead: 4, maxStreamsPerIssuer: 2, maxStreams: 3 });
    const far = await gate.enter('p', 'a', 5);
    assert.deepEqual(far, { kind: 'too_far', next: 0 });
    const a = (await gate.enter('p', 'a', 0)) as Extract<Admission, { kind: 'run' }>;
    const b = (await gate.enter('p', 'b', 0)) as Extract<Admission, { kind: 'run' }>;
    // Both of p's streams are in use: a third cannot be tracked.
    assert.equal((await gate.enter('p', 'c', 0)).kind, 'busy');
    a.done(false);
    // a is idle now: it goes for c.
    const c = (await gate.enter('p', 'c', 0)) as Extract<Admission, { kind: 'run' }>;
    assert.equal(c.kind, 'run');
    c.done(false);
    assert.equal(gate.size, 2);
    const q = (await gate.enter('q', 'x', 0)) as Extract<Admission, { kind: 'run' }>;
    assert.equal(q.kind, 'run');
    assert.equal(gate.size, 3);
    // Full (3): the oldest idle stream (c) goes; b still runs and stays.
    q.done(false);
    const r = await gate.enter('r', 'y', 0);
    assert.equal(r.kind, 'run');
    assert.equal(gate.size, 3);
    b.done(false);
    // A forgotten stream starts again at 0: its seq 1 waits for a 0 that never comes.
    const forgotten = new StreamOrder({ waitMs: 20, maxStreams: 1 });
    ((await forgotten.enter('p', 'a', 0)) as Extract<Admission, { kind: 'run' }>).done(false);
    ((await forgotten.enter('p', 'b', 0)) as Extract<Admission, { kind: 'run' }>).done(false);
    assert.equal((await forgotten.enter('p', 'a', 1)).kind, 'out_of_order');
  });

  test('idle streams are forgotten', async () => {
    let now = 1_000_000;
    const gate = new StreamOrder({ idleMs: 1000, now: () => now });
    for (const s of ['a', 'b', 'c']) ((await gate.enter('p', s, 0)) as Extract<Admission, { kind: 'run' }>).done(false);
    assert.equal(gate.size, 3);
    now += 5000;
    ((await gate.enter('p', 'd', 0)) as Extract<Admission, { kind: 'run' }>).done(false);
    assert.equal(gate.size, 1);
  });

  test('stream and seq are read strictly', () => {
    const valid = fc.record({ stream: fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/), seq: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }) });
    fc.assert(fc.property(valid, (f) => assert.deepEqual(parsePipelineFields({ messages: [], stream: f.stream, seq: f.seq }), { stream: f.stream, seq: f.seq })));
    assert.equal(parsePipelineFields({ messages: [] }), null);
    const badStream = fc.oneof(fc.constant(''), fc.constant('x'.repeat(65)), fc.string().filter((s) => !/^[A-Za-z0-9_-]{1,64}$/.test(s)), fc.integer(), fc.constant(null), fc.array(fc.string()));
    const badSeq = fc.oneof(fc.integer({ max: -1 }), fc.double().filter((d) => !Number.isSafeInteger(d) || d < 0), fc.string(), fc.constant(null), fc.constant(2 ** 53), fc.boolean());
    fc.assert(fc.property(badStream, fc.nat(), (stream, seq) => assert.ok(parsePipelineFields({ stream, seq }) && 'error' in parsePipelineFields({ stream, seq })!)));
    fc.assert(fc.property(badSeq, (seq) => assert.ok('error' in (parsePipelineFields({ stream: 'ok', seq }) ?? {}))));
    assert.ok('error' in (parsePipelineFields({ stream: 'ok' }) ?? {}));
    assert.ok('error' in (parsePipelineFields({ seq: 0 }) ?? {}));
  });
});

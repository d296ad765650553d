// KeyedDrains: for any interleaving of wake-ups and drain completions, a key never drains twice
// at once, a failed drain is reported and does not stop the key, and every wake-up is followed by a drain that starts after it (no work is stranded).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { KeyedDrains } from '../src/util/drains.js';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('property: one drain per key at a time, and no wake-up is lost', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.record({ key: fc.constantFrom('a', 'b', 'c'), waitTicks: fc.integer({ min: 0, max: 3 }) }), { minLength: 1, maxLength: 60 }),
      async (steps) => {
        const active = new Set<string>();
        const starts: Array<{ key: string; at: number }> = [];
        const wakes: Array<{ key: string; at: number }> = [];
        let clock = 0;
        const errors: unknown[] = [];
        const drains = new KeyedDrains<string>(
          (k) => k,
          async (k) => {
            assert.ok(!active.has(k), `two drains of ${k} at once`);
            active.add(k);
            const n = starts.push({ key: k, at: clock++ });
            await tick();
            active.delete(k);
            if (n % 3 === 0) throw new Error('drain failed');
          },
          (err) => errors.push(err),
        );
        for (const s of steps) {
          wakes.push({ key: s.key, at: clock++ });
          drains.wake(s.key);
          for (let i = 0; i < s.waitTicks; i++) await tick();
        }
        // stop() drops pending re-runs (a restart's sweep finds their work), so wait until idle first.
        while (drains.size > 0) await tick();
        await drains.stop();
        for (const w of wakes) assert.ok(starts.some((s) => s.key === w.key && s.at > w.at), `the wake of ${w.key} at ${w.at} was followed by no drain`);
        assert.equal(errors.length, Math.floor(starts.length / 3), 'a failed drain was not reported');
      },
    ),
    { numRuns: 100 },
  );
});

test('after stop, wake starts nothing until resume', async () => {
  let runs = 0;
  const drains = new KeyedDrains<string>((k) => k, async () => void runs++, () => undefined);
  await drains.stop();
  drains.wake('x');
  await tick();
  assert.equal(runs, 0);
  drains.resume();
  drains.wake('x');
  await drains.stop();
  assert.equal(runs, 1);
});

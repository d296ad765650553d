// What a rate limiter must answer: the model the limiter tests compare against.

/** The answers to hits with these costs under `limit`, one by one, in a fresh window. */
export function expectedHits(limit: number, costs: number[]): Array<{ allowed: boolean; granted: number }> {
  let before = 0;
  return costs.map((cost) => {
    const granted = Math.max(0, Math.min(cost, limit - before));
    before += cost;
    return { allowed: granted === cost, granted };
  });
}

/** Time behind an interface so protocol checks and back-off can be tested without sleeping. */
export interface Clock {
  now(): number;
}
export const systemClock: Clock = { now: () => Date.now() };

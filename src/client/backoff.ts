/**
 * Retry delays: exponential backoff with "full jitter" (a uniform random delay below the exponential cap), so that
 * many clients retrying after the same failure spread out instead of arriving together.
 */

/** The delay before retry `retry` (0 for the first retry): random in [0, min(maxMs, baseMs * 2^retry)]. */
export function backoffDelayMs(retry: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(retry, 30));
  return Math.floor(random() * (cap + 1));
}

/**
 * Helpers for the hostile-input tests: each reproduces an attack on a real node and checks that the node stayed
 * responsive while it ran.
 */
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { request } from './http.js';

/** What the issue asks of every attack: a liveness probe still answers this fast while it runs. */
export const HEALTHZ_ANSWER_MS_MAX = 50;

/** Sends one `GET /healthz` on a fresh connection; asserts a 200 within HEALTHZ_ANSWER_MS_MAX and returns the time. */
export async function assertHealthzAnswers(baseUrl: string, what: string): Promise<number> {
  const startMs = performance.now();
  const response = await request(baseUrl, 'GET', '/healthz', { timeoutMs: 5_000 });
  const elapsedMs = performance.now() - startMs;
  assert.equal(response.status, 200, `${what}: /healthz answered ${response.status}`);
  assert.ok(elapsedMs <= HEALTHZ_ANSWER_MS_MAX, `${what}: /healthz took ${elapsedMs.toFixed(1)} ms (bound ${HEALTHZ_ANSWER_MS_MAX} ms)`);
  return elapsedMs;
}

/**
 * Helpers for the hostile-input tests: each reproduces an attack on a real node and checks that the node stayed
 * responsive while it ran.
 */
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { request } from './http.js';

/** What the issue asks of every attack: a liveness probe still answers this fast while it runs. */
export const HEALTHZ_ANSWER_MS_MAX = 50;

/**
 * Probes at most this many times, one after another. On a shared machine (tests run two at a time beside other
 * work) one probe sometimes waits for a CPU, in the test process or the node; a node whose event loop is blocked by
 * the attack delays every probe, so the bound keeps its meaning.
 */
const HEALTHZ_PROBES_MAX = 3;

/**
 * `GET /healthz` on fresh connections until one answers 200 within HEALTHZ_ANSWER_MS_MAX; fails naming every time
 * measured. Returns the fastest time.
 */
export async function assertHealthzAnswers(baseUrl: string, what: string): Promise<number> {
  const timesMs: number[] = [];
  for (let probe = 0; probe < HEALTHZ_PROBES_MAX; probe++) {
    const startMs = performance.now();
    const response = await request(baseUrl, 'GET', '/healthz', { timeoutMs: 5_000 });
    const elapsedMs = performance.now() - startMs;
    assert.equal(response.status, 200, `${what}: /healthz answered ${response.status}`);
    if (elapsedMs <= HEALTHZ_ANSWER_MS_MAX) return elapsedMs;
    timesMs.push(elapsedMs);
  }
  assert.fail(`${what}: /healthz took ${timesMs.map((ms) => ms.toFixed(1)).join(', ')} ms (bound ${HEALTHZ_ANSWER_MS_MAX} ms)`);
}

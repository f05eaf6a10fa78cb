/**
 * `retryWhileBusy` (src/client/busy.ts), on a manual clock: it waits as long as the node's Retry-After says, never
 * less than BUSY_RETRY_DELAY_MS_MIN nor more than BUSY_RETRY_DELAY_MS_MAX, stops at its deadline with the node's code,
 * and throws every error but a refusal for now at once.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BusyTimeoutError, retryWhileBusy } from '../src/client/busy.js';
import { NodeUnavailableError, PermissionDeniedError, serverError } from '../src/client/errors.js';
import { BUSY_RETRY_DELAY_MS_DEFAULT, BUSY_RETRY_DELAY_MS_MAX, BUSY_RETRY_DELAY_MS_MIN } from '../src/client/limits.js';
import { ManualClock } from './support/manual-clock.js';

function answer(status: number, code: string, retryAfter?: string): Error {
  return serverError(status, JSON.stringify({ error: { code, message: `scripted ${code}` } }), { what: 'GET /v1/snapshot', url: 'http://node.test' }, retryAfter);
}

/**
 * Runs retryWhileBusy over `answers` (one per attempt; past the end, success) on a manual clock, moving it on by the
 * waits it asks for. Returns when each attempt was made, the waits, and the outcome.
 */
async function run(answers: Error[], waitMs: number): Promise<{ attemptsMs: number[]; waitsMs: number[]; outcome: unknown }> {
  const clock = new ManualClock();
  const attemptsMs: number[] = [];
  const waitsMs: number[] = [];
  let settled = false;
  const outcome = retryWhileBusy(
    'GET /v1/snapshot',
    () => {
      attemptsMs.push(clock.monotonicMs());
      const next = answers.shift();
      return next === undefined ? Promise.resolve('saved') : Promise.reject(next);
    },
    { clock, waitMs, onWait: (wait) => waitsMs.push(wait.delayMs) },
  ).then(
    (value) => value,
    (error: unknown) => error,
  );
  void outcome.then(() => (settled = true));
  while (!settled) {
    await new Promise((resolve) => setImmediate(resolve));
    clock.advance(BUSY_RETRY_DELAY_MS_MIN);
  }
  return { attemptsMs, waitsMs, outcome: await outcome };
}

describe('client busy', () => {
  test('client busy: Retry-After is honoured within bounds, and a missing one waits the default', async () => {
    const { waitsMs, outcome } = await run([answer(503, 'OVERLOADED', '3'), answer(503, 'OVERLOADED', '0'), answer(503, 'OVERLOADED', '3600'), answer(503, 'UPSTREAM_UNAVAILABLE')], 300_000);
    assert.equal(outcome, 'saved');
    assert.deepEqual(waitsMs, [3_000, BUSY_RETRY_DELAY_MS_MIN, BUSY_RETRY_DELAY_MS_MAX, BUSY_RETRY_DELAY_MS_DEFAULT]);
  });

  test('client busy: past its deadline it throws BusyTimeoutError with the node\'s code, the last wait cut to the deadline', async () => {
    const busy = Array.from({ length: 10 }, () => answer(503, 'OVERLOADED', '30'));
    const { attemptsMs, waitsMs, outcome } = await run(busy, 70_000);
    assert.deepEqual(waitsMs, [30_000, 30_000, 10_000]);
    assert.deepEqual(attemptsMs, [0, 30_000, 60_000, 70_000]);
    assert.ok(outcome instanceof BusyTimeoutError);
    assert.equal(outcome.code, 'OVERLOADED');
    assert.equal(outcome.status, 503);
    assert.equal(outcome.attempts, 4);
    assert.match(outcome.message, /^GET \/v1\/snapshot: still refused after 4 attempts in 70000 ms: scripted OVERLOADED$/);
  });

  test('client busy: a 403, a 503 SHUTTING_DOWN and an unreachable node are thrown at once', async () => {
    for (const error of [answer(403, 'PERMISSION_DENIED'), answer(503, 'SHUTTING_DOWN'), new Error('ECONNREFUSED')]) {
      const { attemptsMs, outcome } = await run([error], 300_000);
      assert.deepEqual(attemptsMs, [0]);
      assert.equal(outcome, error);
    }
    assert.ok(answer(403, 'PERMISSION_DENIED') instanceof PermissionDeniedError);
    assert.ok(answer(503, 'SHUTTING_DOWN') instanceof NodeUnavailableError);
  });
});

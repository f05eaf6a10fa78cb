/**
 * SeqWaiter, where `minSeq` reads park until the node applies their seq: each applied seq wakes exactly the reads it
 * satisfies, a timeout removes its read, and the number parked is bounded. Clients choose the seqs and the timeouts:
 * before, every timeout copied the sorted array of all waiters, and 24,000 reads timing out together held the event
 * loop for seconds (review, 2026-12-03).
 */
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { test } from 'node:test';
import { systemClock } from '../src/clock/index.js';
import { MercuryError } from '../src/errors/index.js';
import { SeqWaiter } from '../src/node/seq-waiter.js';
import { ManualClock } from './support/manual-clock.js';

test('an applied seq wakes the reads it satisfies, in any order they came, and no others', async () => {
  let applied = 10;
  const waiter = new SeqWaiter(new ManualClock(), () => applied);
  const woken: number[] = [];
  for (const seq of [15, 12, 20, 12, 11]) void waiter.wait(seq, 60_000).then(() => woken.push(seq));
  await waiter.wait(10, 1); // applied already: at once
  assert.equal(waiter.waiting, 5);
  applied = 12;
  waiter.notify();
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepStrictEqual(woken.sort((a, b) => a - b), [11, 12, 12]);
  assert.equal(waiter.waiting, 2);
  applied = 25;
  waiter.notify();
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepStrictEqual(woken.sort((a, b) => a - b), [11, 12, 12, 15, 20]);
  assert.equal(waiter.waiting, 0);
});

test('a read that times out leaves; beyond the bound a read is refused OVERLOADED at once', async () => {
  const clock = new ManualClock();
  const waiter = new SeqWaiter(clock, () => 0, 3);
  const outcomes = [waiter.wait(5, 100), waiter.wait(6, 200), waiter.wait(5, 300)].map((wait) => wait.then(() => 'applied', (error: MercuryError) => error.code));
  await assert.rejects(waiter.wait(7, 100), (error: MercuryError) => error.code === 'OVERLOADED' && /at most 3/.test(error.message));
  clock.advance(150);
  assert.equal(waiter.waiting, 2);
  assert.equal(await outcomes[0], 'SEQ_WAIT_TIMEOUT');
  // Room again.
  const late = waiter.wait(7, 1_000);
  assert.equal(waiter.waiting, 3);
  clock.advance(1_000);
  assert.deepStrictEqual(await Promise.all(outcomes), ['SEQ_WAIT_TIMEOUT', 'SEQ_WAIT_TIMEOUT', 'SEQ_WAIT_TIMEOUT']);
  await assert.rejects(late, (error: MercuryError) => error.code === 'SEQ_WAIT_TIMEOUT');
  assert.equal(waiter.waiting, 0);
});

/** Parks `count` reads on distinct seqs, all timing out after 50 ms; resolves with the ms they cost the event loop. */
async function parkAndTimeOut(count: number): Promise<number> {
  const waiter = new SeqWaiter(systemClock, () => 0, count);
  const waits: Promise<unknown>[] = [];
  const started = performance.now();
  for (let i = 0; i < count; i++) waits.push(waiter.wait(1_000 + ((i * 7919) % count), 50).catch(() => undefined));
  const parkedMs = performance.now() - started;
  const keepAlive = setTimeout(() => undefined, 60_000); // the node's timers do not keep the process alive
  await Promise.all(waits);
  clearTimeout(keepAlive);
  assert.equal(waiter.waiting, 0);
  // Their timers fall due together and run in one timer phase, one after another: that phase held the loop.
  return parkedMs + (performance.now() - Math.max(started + 50, started + parkedMs));
}

test('reads parked on distinct seqs and timing out together cost the loop in proportion to their number', async () => {
  // Before, each timeout copied the array of every waiter (and each park spliced into it): four times the reads cost
  // about sixteen times the time (370 + 3,175 ms for 20,000 here). A ratio, so that a loaded machine slows both alike.
  await parkAndTimeOut(2_000); // warm-up
  const few = await parkAndTimeOut(5_000);
  const many = await parkAndTimeOut(20_000);
  assert.ok(many < 8 * few + 100, `5,000 reads cost ${few.toFixed(0)} ms, 20,000 cost ${many.toFixed(0)} ms`);
});

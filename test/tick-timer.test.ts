/**
 * TickTimer, the one timer each state machine keeps for its earliest deadline: it must not fire before that deadline
 * by the monotonic clock (the machine would find nothing due and arm it again, a second wake-up), and `reschedule`
 * follows a deadline that moved later, so that an idle node is not woken for nothing.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TickTimer, systemClock } from '../src/clock/index.js';
import { ManualClock } from './support/manual-clock.js';

test('a timer armed late in a long event-loop turn does not fire before its deadline', async () => {
  let firedAt = 0;
  let deadline = 0;
  const fired = new Promise<void>((resolve) => {
    const timer = new TickTimer(systemClock, () => {
      firedAt = systemClock.monotonicMs();
      resolve();
    });
    // Node times the timer from the loop's clock, read when this turn began: 1 ms of work first makes it that stale.
    const busyUntil = systemClock.monotonicMs() + 1;
    while (systemClock.monotonicMs() < busyUntil);
    deadline = systemClock.monotonicMs() + 20;
    timer.schedule(deadline);
  });
  const keepAlive = setTimeout(() => undefined, 5_000);
  await fired;
  clearTimeout(keepAlive);
  assert.ok(firedAt >= deadline, `fired ${(deadline - firedAt).toFixed(2)} ms before its deadline`);
});

test('schedule only ever moves the timer earlier; reschedule follows the deadline both ways', () => {
  const clock = new ManualClock();
  const ticks: number[] = [];
  const timer = new TickTimer(clock, () => ticks.push(clock.monotonicMs()));
  timer.schedule(500);
  timer.schedule(800); // later: the timer stays armed for 500
  clock.advance(600);
  assert.equal(ticks.length, 1);
  assert.ok(ticks[0]! >= 500 && ticks[0]! <= 503, `ticked at ${ticks[0]}`);
  timer.schedule(1_000);
  timer.reschedule(1_500); // the deadline moved later: 1,000 no longer wakes anything
  clock.advance(600);
  assert.equal(ticks.length, 1, 'nothing at the old time');
  clock.advance(400);
  assert.equal(ticks.length, 2);
  assert.ok(ticks[1]! >= 1_500, `ticked at ${ticks[1]}`);
  timer.schedule(2_000);
  timer.reschedule(undefined); // no deadline: nothing armed
  clock.advance(2_000);
  assert.equal(ticks.length, 2);
});

test('systemClock: a delay past 2^31 - 1 ms waits the longest a timer can, never 1 ms as Node would make it', async () => {
  let fired = 0;
  const timeout = systemClock.setTimeout(() => fired++, 3_000_000_000);
  const interval = systemClock.setInterval(() => fired++, 3_000_000_000);
  await new Promise((resolve) => setTimeout(resolve, 50));
  timeout.cancel();
  interval.cancel();
  assert.equal(fired, 0);
});

/**
 * The only module that reads the wall clock, the monotonic clock or schedules timers. Everything else receives a
 * `Clock`, so that tests and the replication simulation can drive time themselves.
 */
import { performance } from 'node:perf_hooks';

export interface TimerHandle {
  cancel(): void;
}

export interface Clock {
  /** Wall-clock milliseconds since the epoch (entry timestamps, lag in ms). */
  nowMs(): number;
  /** Monotonic milliseconds with sub-millisecond precision (latencies, timeouts). */
  monotonicMs(): number;
  /** Runs `fn` once after `delayMs`. The timer does not keep the process alive. */
  setTimeout(fn: () => void, delayMs: number): TimerHandle;
  /** Runs `fn` every `intervalMs`. The timer does not keep the process alive. */
  setInterval(fn: () => void, intervalMs: number): TimerHandle;
}

export const systemClock: Clock = Object.freeze({
  nowMs: () => Date.now(),
  monotonicMs: () => performance.now(),
  setTimeout(fn: () => void, delayMs: number): TimerHandle {
    const timer = setTimeout(fn, delayMs);
    timer.unref();
    return { cancel: () => clearTimeout(timer) };
  },
  setInterval(fn: () => void, intervalMs: number): TimerHandle {
    const timer = setInterval(fn, intervalMs);
    timer.unref();
    return { cancel: () => clearInterval(timer) };
  },
});

/** Resolves after `ms` on the given clock. */
export function sleep(clock: Clock, ms: number): Promise<void> {
  return new Promise((resolve) => clock.setTimeout(resolve, ms));
}
/**
 * Resolves after `ms` of real time and keeps the process alive meanwhile (the system clock's timers do not): for a
 * command that waits on purpose between polls, with nothing else holding the event loop.
 */
export function pauseKeepingAlive(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
export { TickTimer } from './tick-timer.js';

/**
 * The only module that reads the wall clock, the monotonic clock or schedules timers. Everything else receives a
 * `Clock`, so that tests and the replication simulation can drive time themselves.
 */
import { performance } from 'node:perf_hooks';

export interface TimerHandle {
  cancel(): void;
}

export interface TimerOptions {
  /**
   * Keep the process alive until the timer runs. For a wait that a caller awaits with nothing else holding the event
   * loop: a client's retry backoff, a watch's reconnect. Without it a script whose node was down exited mid-wait with
   * its promise unsettled (Node's exit code 13, or 0 for `mercury sync`), never told why.
   */
  readonly keepAlive?: boolean;
}

export interface Clock {
  /** Wall-clock milliseconds since the epoch (entry timestamps, lag in ms). */
  nowMs(): number;
  /** Monotonic milliseconds with sub-millisecond precision (latencies, timeouts). */
  monotonicMs(): number;
  /** Runs `fn` once after `delayMs`. The timer does not keep the process alive unless `options.keepAlive`. */
  setTimeout(fn: () => void, delayMs: number, options?: TimerOptions): TimerHandle;
  /** Runs `fn` every `intervalMs`. The timer does not keep the process alive. */
  setInterval(fn: () => void, intervalMs: number): TimerHandle;
}

/**
 * The longest delay Node's timers take (2^31 - 1 ms, 24.8 days). A longer one is not clamped by Node but replaced by
 * 1 ms, with a TimeoutOverflowWarning: `--exec-debounce-ms 3000000000` ran its command at once. Flags that set a timer
 * are bounded by it (src/cli/main.ts), and the system clock clamps to it, so a long wait is never a short one.
 */
export const TIMER_DELAY_MS_MAX = 2 ** 31 - 1;

export const systemClock: Clock = Object.freeze({
  nowMs: () => Date.now(),
  monotonicMs: () => performance.now(),
  setTimeout(fn: () => void, delayMs: number, options?: TimerOptions): TimerHandle {
    const timer = setTimeout(fn, Math.min(delayMs, TIMER_DELAY_MS_MAX));
    if (options?.keepAlive !== true) timer.unref();
    return { cancel: () => clearTimeout(timer) };
  },
  setInterval(fn: () => void, intervalMs: number): TimerHandle {
    const timer = setInterval(fn, Math.min(intervalMs, TIMER_DELAY_MS_MAX));
    timer.unref();
    return { cancel: () => clearInterval(timer) };
  },
});

/** Resolves after `ms` on the given clock. */
export function sleep(clock: Clock, ms: number, options?: TimerOptions): Promise<void> {
  return new Promise((resolve) => clock.setTimeout(resolve, ms, options));
}
/**
 * Resolves after `ms` of real time and keeps the process alive meanwhile (the system clock's timers do not): for a
 * command that waits on purpose between polls, with nothing else holding the event loop.
 */
export function pauseKeepingAlive(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
export { TickTimer } from './tick-timer.js';
export { PaceWindow } from './pace-window.js';

/**
 * A clock that moves only when a test says so: `advance(ms)` runs every timer that falls due, in time order. Node-level
 * tests use it to fire a periodic task (the log trimmer, the root's heartbeat) at once, instead of sleeping until the
 * real timer would have run.
 */
import type { Clock, TimerHandle } from '../../src/clock/index.js';

interface Timer {
  readonly id: number;
  atMs: number;
  readonly intervalMs: number | undefined;
  readonly fn: () => void;
}

export class ManualClock implements Clock {
  private monotonic = 0;
  private readonly timers = new Map<number, Timer>();
  private nextId = 1;

  /** `wallMs` is the wall-clock reading at monotonic 0; `stepWall` moves it on its own, as an NTP step would. */
  constructor(private wallOffsetMs = 1_700_000_000_000) {}

  nowMs(): number {
    return this.wallOffsetMs + this.monotonic;
  }

  monotonicMs(): number {
    return this.monotonic;
  }

  setTimeout(fn: () => void, delayMs: number): TimerHandle {
    return this.add(fn, delayMs, undefined);
  }

  setInterval(fn: () => void, intervalMs: number): TimerHandle {
    return this.add(fn, intervalMs, Math.max(1, intervalMs));
  }

  /** Moves the monotonic and wall clocks forward by `ms`, running each timer as its time comes. */
  advance(ms: number): void {
    const endMs = this.monotonic + ms;
    for (;;) {
      let next: Timer | undefined;
      for (const timer of this.timers.values()) if (timer.atMs <= endMs && (next === undefined || timer.atMs < next.atMs)) next = timer;
      if (next === undefined) break;
      this.monotonic = Math.max(this.monotonic, next.atMs);
      if (next.intervalMs === undefined) this.timers.delete(next.id);
      else next.atMs += next.intervalMs;
      next.fn();
    }
    this.monotonic = endMs;
  }

  /** Steps the wall clock alone (monotonic time does not move). */
  stepWall(ms: number): void {
    this.wallOffsetMs += ms;
  }

  private add(fn: () => void, delayMs: number, intervalMs: number | undefined): TimerHandle {
    const id = this.nextId++;
    this.timers.set(id, { id, atMs: this.monotonic + Math.max(0, delayMs), intervalMs, fn });
    return { cancel: () => this.timers.delete(id) };
  }
}

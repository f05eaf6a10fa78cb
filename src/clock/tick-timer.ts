/**
 * One timer per state machine (replication upstream and downstream, watches): the adapters ask a machine for
 * `nextTickMs()` after every event and keep a single timer armed for the earliest time, instead of one timer per
 * deadline.
 */
import type { Clock, TimerHandle } from './index.js';

export class TickTimer {
  private handle: TimerHandle | undefined;
  private atMs = Infinity;

  constructor(
    private readonly clock: Clock,
    private readonly onTick: () => void,
  ) {}

  /** Arms the timer for `atMs` (monotonic ms, as the machines' deadlines are) unless it is already armed for that time or earlier. */
  schedule(atMs: number | undefined): void {
    if (atMs === undefined || atMs >= this.atMs) return;
    this.handle?.cancel();
    this.atMs = atMs;
    this.handle = this.clock.setTimeout(
      () => {
        this.handle = undefined;
        this.atMs = Infinity;
        this.onTick();
      },
      Math.max(0, atMs - this.clock.monotonicMs()),
    );
  }

  cancel(): void {
    this.handle?.cancel();
    this.handle = undefined;
    this.atMs = Infinity;
  }
}

/**
 * One timer per state machine (replication upstream and downstream, watches): the adapters ask a machine for
 * `nextTickMs()` after every event and keep a single timer armed for the earliest time, instead of one timer per
 * deadline.
 */
import type { Clock, TimerHandle } from './index.js';

/**
 * Node fires a timer by its event loop's clock, read once per loop turn in whole ms: a timer armed late in a turn fires
 * up to that turn's length (plus the rounding) before the monotonic time it was armed for; the machine then finds
 * nothing due and the timer is armed again for the rest, two wake-ups for one deadline (an idle replica's keep-alive
 * ACK took two every second). So a timer is armed for the delay rounded up, and this much later.
 */
const EARLY_FIRE_SLACK_MS = 2;

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
      Math.max(0, Math.ceil(atMs - this.clock.monotonicMs()) + EARLY_FIRE_SLACK_MS),
    );
  }

  /**
   * Arms the timer for exactly `atMs`: like `schedule`, and also later when the machine's earliest deadline moved later
   * (a keep-alive already sent on another wake-up), so that the timer does not wake the process for nothing; none
   * pending cancels it. For a machine whose deadline moves seldom: each move re-arms the timer.
   */
  reschedule(atMs: number | undefined): void {
    if (atMs === this.atMs || (atMs === undefined && this.handle === undefined)) return;
    this.cancel();
    this.schedule(atMs);
  }

  cancel(): void {
    this.handle?.cancel();
    this.handle = undefined;
    this.atMs = Infinity;
  }
}

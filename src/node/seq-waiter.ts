/**
 * Lets readers wait until the node has applied a seq (`minSeq` reads, read-your-writes after a forwarded write).
 * Waiters are kept sorted by seq so that each applied seq wakes exactly the waiters it satisfies.
 */
import type { Clock, TimerHandle } from '../clock/index.js';
import { MercuryError } from '../errors/index.js';

interface Waiter {
  readonly seq: number;
  readonly resolve: () => void;
  readonly timer: TimerHandle;
}

export class SeqWaiter {
  private waiters: Waiter[] = [];

  constructor(
    private readonly clock: Clock,
    private readonly appliedSeq: () => number,
  ) {}

  wait(seq: number, timeoutMs: number): Promise<void> {
    if (this.appliedSeq() >= seq) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        this.waiters = this.waiters.filter((waiter) => waiter !== entry);
        reject(
          new MercuryError('SEQ_WAIT_TIMEOUT', `seq ${seq} was not applied within ${timeoutMs} ms (applied: ${this.appliedSeq()}); retry, or read from a node closer to the root`, {
            details: { seq: this.appliedSeq() },
          }),
        );
      }, timeoutMs);
      const entry: Waiter = { seq, resolve, timer };
      let at = this.waiters.length;
      while (at > 0 && this.waiters[at - 1]!.seq > seq) at--;
      this.waiters.splice(at, 0, entry);
    });
  }

  /** Call after every applied entry (or batch). */
  notify(): void {
    const applied = this.appliedSeq();
    let count = 0;
    while (count < this.waiters.length && this.waiters[count]!.seq <= applied) count++;
    if (count === 0) return;
    const ready = this.waiters.slice(0, count);
    this.waiters = this.waiters.slice(count);
    for (const waiter of ready) {
      waiter.timer.cancel();
      waiter.resolve();
    }
  }
}

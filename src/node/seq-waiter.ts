/**
 * Lets readers wait until the node has applied a seq (`minSeq` reads, read-your-writes after a forwarded write).
 *
 * Waiters are grouped by seq (a map of sets) with the seqs in a min-heap, so that an applied seq wakes exactly the
 * waiters it satisfies, and a waiter that times out leaves in O(1). Clients choose the seqs and when their waits end:
 * with the waiters in one sorted array, each timeout copied the array, and 24,000 reads parked to time out together
 * held the event loop for 3 s (found by review, 2026-12-03). The number parked at once is bounded as well
 * (`SEQ_WAITERS_MAX`): beyond it a read is refused with OVERLOADED rather than held.
 */
import type { Clock, TimerHandle } from '../clock/index.js';
import { MercuryError, isMercuryError } from '../errors/index.js';
import { SEQ_WAITERS_MAX } from '../limits.js';

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: MercuryError) => void;
  readonly timer: TimerHandle;
}

function shuttingDown(): MercuryError {
  return new MercuryError('SHUTTING_DOWN', 'node is shutting down; retry on another node or later');
}

/** Why a wait for `seq` ended when `gone` aborted: a MercuryError given as its reason, else its reader left. */
function goneError(gone: AbortSignal, seq: number): MercuryError {
  return isMercuryError(gone.reason) ? gone.reason : new MercuryError('SEQ_WAIT_TIMEOUT', `the wait for seq ${seq} ended: its client closed the connection`);
}

export class SeqWaiter {
  /** The waiters of each seq still waited on. */
  private readonly bySeq = new Map<number, Set<Waiter>>();
  /** The seqs of `bySeq` as a binary min-heap; a seq whose waiters all timed out stays until popped (or a rebuild). */
  private heap: number[] = [];
  private count = 0;
  private closed = false;

  constructor(
    private readonly clock: Clock,
    private readonly appliedSeq: () => number,
    private readonly waitersMax = SEQ_WAITERS_MAX,
  ) {}

  /** Reads parked now (a gauge). */
  get waiting(): number {
    return this.count;
  }

  /**
   * Resolves once `seq` is applied; rejects with SEQ_WAIT_TIMEOUT after `timeoutMs`. `gone`, when it aborts (the
   * reader's connection closed), ends the wait at once: a parked read held its place in `waitersMax` for up to
   * MIN_SEQ_WAIT_MS_MAX after its client left, so one host that parked reads and hung up in a loop kept every
   * client's minSeq reads at OVERLOADED without holding a connection (an audit, 2026-12-06: 600 of 600 dropped reads
   * still parked). Nobody reads that rejection; it is a MercuryError so that no route logs it as an internal error. A
   * MercuryError given as the abort's reason is the rejection instead: a wire connection that fails (a revoked token)
   * answers its parked reads with its error.
   */
  wait(seq: number, timeoutMs: number, gone?: AbortSignal): Promise<void> {
    if (this.appliedSeq() >= seq) return Promise.resolve();
    if (this.closed) return Promise.reject(shuttingDown());
    if (gone?.aborted === true) return Promise.reject(goneError(gone, seq));
    if (this.count >= this.waitersMax)
      return Promise.reject(
        new MercuryError('OVERLOADED', `${this.count} reads are already waiting for a seq this node has not applied (at most ${this.waitersMax}); retry with backoff, or without minSeq`),
      );
    return new Promise((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        this.remove(seq, waiter);
        waiter.reject(
          new MercuryError('SEQ_WAIT_TIMEOUT', `seq ${seq} was not applied within ${timeoutMs} ms (applied: ${this.appliedSeq()}); retry, or read from a node closer to the root`, {
            details: { seq: this.appliedSeq() },
          }),
        );
      }, timeoutMs);
      const onGone = (): void => {
        timer.cancel();
        this.remove(seq, waiter);
        // A MercuryError as the reason (a wire connection failed, its token revoked) is the read's answer.
        reject(goneError(gone!, seq));
      };
      gone?.addEventListener('abort', onGone, { once: true });
      // Settled either way, the waiter lets go of the signal: a wire connection's signal serves all its reads.
      const waiter: Waiter = {
        resolve: () => {
          gone?.removeEventListener('abort', onGone);
          resolve();
        },
        reject: (error) => {
          gone?.removeEventListener('abort', onGone);
          reject(error);
        },
        timer,
      };
      let waiters = this.bySeq.get(seq);
      if (waiters === undefined) {
        waiters = new Set();
        this.bySeq.set(seq, waiters);
        this.push(seq);
      }
      waiters.add(waiter);
      this.count++;
    });
  }

  /**
   * The node is closing: every parked read is answered SHUTTING_DOWN now (its client retries elsewhere), rather than
   * cut off with its connection, and later ones at once.
   */
  close(): void {
    this.closed = true;
    const parked = [...this.bySeq.values()];
    this.bySeq.clear();
    this.heap = [];
    this.count = 0;
    for (const waiters of parked)
      for (const waiter of waiters) {
        waiter.timer.cancel();
        waiter.reject(shuttingDown());
      }
  }

  /** Call after every applied entry (or batch). */
  notify(): void {
    if (this.count === 0) return;
    const applied = this.appliedSeq();
    while (this.heap.length > 0 && this.heap[0]! <= applied) {
      const seq = this.pop();
      const waiters = this.bySeq.get(seq);
      if (waiters === undefined) continue; // all of them timed out
      this.bySeq.delete(seq);
      this.count -= waiters.size;
      for (const waiter of waiters) {
        waiter.timer.cancel();
        waiter.resolve();
      }
    }
  }

  private remove(seq: number, waiter: Waiter): void {
    const waiters = this.bySeq.get(seq);
    if (waiters === undefined || !waiters.delete(waiter)) return;
    this.count--;
    if (waiters.size > 0) return;
    this.bySeq.delete(seq);
    // Seqs left in the heap by timeouts: rebuilt from the map once they are most of it, so it stays within twice the
    // seqs waited on, whatever seqs clients choose.
    if (this.heap.length > 2 * this.bySeq.size + 64) {
      this.heap = [];
      for (const live of this.bySeq.keys()) this.push(live);
    }
  }

  private push(seq: number): void {
    const heap = this.heap;
    let at = heap.push(seq) - 1;
    while (at > 0) {
      const parent = (at - 1) >> 1;
      if (heap[parent]! <= seq) break;
      heap[at] = heap[parent]!;
      at = parent;
    }
    heap[at] = seq;
  }

  private pop(): number {
    const heap = this.heap;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length === 0) return top;
    let at = 0;
    for (;;) {
      const left = 2 * at + 1;
      if (left >= heap.length) break;
      const child = left + 1 < heap.length && heap[left + 1]! < heap[left]! ? left + 1 : left;
      if (heap[child]! >= last) break;
      heap[at] = heap[child]!;
      at = child;
    }
    heap[at] = last;
    return top;
  }
}

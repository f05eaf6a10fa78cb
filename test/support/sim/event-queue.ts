/**
 * The simulation's clock and agenda: a binary heap of callbacks ordered by time, ties broken by insertion order so
 * that a run is deterministic.
 */
interface Scheduled {
  readonly atMs: number;
  readonly order: number;
  readonly run: () => void;
}

export class EventQueue {
  private heap: Scheduled[] = [];
  private order = 0;
  private current = 0;
  processed = 0;

  get nowMs(): number {
    return this.current;
  }

  get size(): number {
    return this.heap.length;
  }

  at(atMs: number, run: () => void): void {
    this.push({ atMs: Math.max(atMs, this.current), order: this.order++, run });
  }

  after(delayMs: number, run: () => void): void {
    this.at(this.current + delayMs, run);
  }

  /** Runs events up to and including `untilMs`, then sets the clock to it. An exception in an event propagates. */
  runUntil(untilMs: number): void {
    while (this.heap.length > 0 && this.heap[0]!.atMs <= untilMs) {
      const event = this.pop();
      this.current = event.atMs;
      this.processed++;
      event.run();
    }
    this.current = Math.max(this.current, untilMs);
  }

  private push(item: Scheduled): void {
    const heap = this.heap;
    heap.push(item);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  private pop(): Scheduled {
    const heap = this.heap;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        const right = left + 1;
        let smallest = i;
        if (left < heap.length && before(heap[left]!, heap[smallest]!)) smallest = left;
        if (right < heap.length && before(heap[right]!, heap[smallest]!)) smallest = right;
        if (smallest === i) break;
        [heap[i], heap[smallest]] = [heap[smallest]!, heap[i]!];
        i = smallest;
      }
    }
    return top;
  }
}

function before(a: Scheduled, b: Scheduled): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.order < b.order);
}

/**
 * Counts turns of this process's event loop with a chain of immediates: each one schedules the next, so the count grows
 * by one per turn. A count and not a time, so that a test of "the node gives up the loop between pieces of work" holds
 * on a busy machine as on a quiet one.
 */
export class TurnCounter {
  turns = 0;
  private counting = true;

  constructor() {
    const count = (): void => {
      this.turns++;
      if (this.counting) setImmediate(count);
    };
    setImmediate(count);
  }

  stop(): void {
    this.counting = false;
  }
}

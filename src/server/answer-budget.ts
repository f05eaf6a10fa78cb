/**
 * The global budget of large answers a node holds while their clients take them (`http.answerBytesHeldMax`), over all
 * connections. A value or a range page larger than a send slice is held in this process from the moment it is read
 * until node:http has handed its last byte to the kernel ('finish') or the connection ends ('close', at the latest
 * when the send deadline cuts a client that takes nothing). Each connection runs one answer at a time (pipelined ones
 * have their own budget, `pipelinedAheadMax`), but connections were many: 4,000 of one address each asking for a
 * 1 MiB value and reading nothing held about 4 GiB (the memory audit of 2026-12-07 left it; measured at 1 MiB a
 * connection). Past the budget a large answer is refused 503 OVERLOADED with Retry-After; small ones always go.
 */
import { MercuryError } from '../errors/index.js';
import type { ServerResponse } from 'node:http';

export class AnswerBudget {
  private held = 0;
  private refused: () => void = () => {};

  /** `uncountedBytesMax`: answers up to this size are not counted (they leave in one write, the kernel takes them). */
  constructor(
    readonly bytesMax: number,
    readonly uncountedBytesMax: number,
  ) {}

  /** `count` is called at each refusal (a metric). */
  onRefused(count: () => void): void {
    this.refused = count;
  }

  /** Bytes of answers held now. */
  get bytesHeld(): number {
    return this.held;
  }

  /** Holds `bytes` for the answer `res` until it is sent or its connection ends; throws OVERLOADED past the budget. */
  hold(res: ServerResponse, bytes: number): void {
    if (bytes <= this.uncountedBytesMax) return;
    if (this.held + bytes > this.bytesMax) {
      this.refused();
      throw new MercuryError(
        'OVERLOADED',
        `the node holds ${this.held} bytes of answers its clients have not taken yet, and at most ${this.bytesMax} at once; this answer needs ${bytes} more: retry after Retry-After, or read from another node`,
        { details: { limit: this.bytesMax } },
      );
    }
    this.held += bytes;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.held -= bytes;
    };
    res.once('finish', release);
    res.once('close', release);
  }
}

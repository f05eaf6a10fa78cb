/**
 * The global budget of request-body bytes a node holds at once (`http.bodyBytesInFlightMax`), over all connections.
 * A body reserves its declared Content-Length before its first byte is read (a chunked body reserves as its bytes
 * arrive) and keeps the reservation until its request is answered: the buffer, the parsed transaction and the queued
 * write all live that long. What does not fit is refused at once with 503 BODY_BUDGET_EXCEEDED and Retry-After, never
 * queued (docs/decisions.md, record 26). Accounting only; no I/O.
 */
import assert from 'node:assert/strict';
import { MercuryError } from '../errors/index.js';

export class BodyBudget {
  private inFlight = 0;
  private refused: () => void = () => {};

  constructor(readonly bytesMax: number) {
    assert.ok(Number.isSafeInteger(bytesMax) && bytesMax > 0);
  }

  /** `count` is called at each refusal (a metric). */
  onRefused(count: () => void): void {
    this.refused = count;
  }

  /** Bytes reserved by bodies not yet answered. */
  get bytesInFlight(): number {
    return this.inFlight;
  }

  /** Reserves `bytes` if they fit; false (and nothing reserved) if they do not. */
  tryReserve(bytes: number): boolean {
    assert.ok(Number.isSafeInteger(bytes) && bytes >= 0);
    if (this.inFlight + bytes > this.bytesMax) {
      this.refused();
      return false;
    }
    this.inFlight += bytes;
    return true;
  }

  /** BODY_BUDGET_EXCEEDED (503) for a body of `bytes` that did not fit. */
  refusal(bytes: number): MercuryError {
    return new MercuryError(
      'BODY_BUDGET_EXCEEDED',
      `the node holds ${this.inFlight} bytes of request bodies and accepts at most ${this.bytesMax} at once; this body needs ${bytes} more; retry after Retry-After`,
      { details: { limit: this.bytesMax } },
    );
  }

  release(bytes: number): void {
    assert.ok(bytes >= 0 && bytes <= this.inFlight, 'released more body bytes than were reserved');
    this.inFlight -= bytes;
  }
}

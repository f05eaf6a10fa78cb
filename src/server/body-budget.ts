/**
 * The global budget of request-body bytes a node holds at once (`http.bodyBytesInFlightMax`), over all connections.
 * A body reserves its declared Content-Length before its first byte is read (a chunked body reserves as its bytes
 * arrive) and keeps the reservation until its request is answered: the buffer, the parsed transaction and the queued
 * write all live that long. What does not fit is refused at once with 503 BODY_BUDGET_EXCEEDED and Retry-After, never
 * queued (docs/decisions.md, record 26). Accounting only; no I/O.
 */
import assert from 'node:assert/strict';

export class BodyBudget {
  private inFlight = 0;

  /** `onRefused` counts refusals (a metric). */
  constructor(
    readonly bytesMax: number,
    private readonly onRefused: () => void = () => {},
  ) {
    assert.ok(Number.isSafeInteger(bytesMax) && bytesMax > 0);
  }

  /** Bytes reserved by bodies not yet answered. */
  get bytesInFlight(): number {
    return this.inFlight;
  }

  /** Reserves `bytes` if they fit; false (and nothing reserved) if they do not. */
  tryReserve(bytes: number): boolean {
    assert.ok(Number.isSafeInteger(bytes) && bytes >= 0);
    if (this.inFlight + bytes > this.bytesMax) {
      this.onRefused();
      return false;
    }
    this.inFlight += bytes;
    return true;
  }

  release(bytes: number): void {
    assert.ok(bytes >= 0 && bytes <= this.inFlight, 'released more body bytes than were reserved');
    this.inFlight -= bytes;
  }
}

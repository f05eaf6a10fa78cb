/**
 * The global budget of request-body bytes a node holds at once (`http.bodyBytesInFlightMax`), over all connections.
 * A body reserves its declared Content-Length before its first byte is read (a chunked body reserves as its bytes
 * arrive) and keeps the reservation until its request is answered: the buffer, the parsed transaction and the queued
 * write all live that long. What does not fit is refused at once with 503 BODY_BUDGET_EXCEEDED and Retry-After, never
 * queued (docs/decisions.md, record 26). One remote host (`hostSlotKey`) holds at most `perAddressBytesMax` of it
 * (record 81): before, two connections that declared the largest transaction body and sent one byte of it held the
 * whole budget for the request timeout, and every other client's PUT was refused. Accounting only; no I/O.
 */
import assert from 'node:assert/strict';
import { MercuryError } from '../errors/index.js';
import { AddressShares } from '../net/index.js';

export class BodyBudget {
  private inFlight = 0;
  private refused: (byAddress: boolean) => void = () => {};
  private readonly addresses: AddressShares;

  constructor(
    readonly bytesMax: number,
    perAddressBytesMax: number = bytesMax,
  ) {
    assert.ok(Number.isSafeInteger(bytesMax) && bytesMax > 0);
    assert.ok(perAddressBytesMax <= bytesMax, "an address's share within the budget");
    this.addresses = new AddressShares(perAddressBytesMax);
  }

  /** `count` is called at each refusal (a metric), `byAddress` when the host's share was what was full. */
  onRefused(count: (byAddress: boolean) => void): void {
    this.refused = count;
  }

  /** Bytes reserved by bodies not yet answered. */
  get bytesInFlight(): number {
    return this.inFlight;
  }

  /** Reserves `bytes` for `address` (a `hostSlotKey`) if they fit its share and the budget; false (nothing reserved) if not. */
  tryReserve(bytes: number, address: string): boolean {
    assert.ok(Number.isSafeInteger(bytes) && bytes >= 0);
    const overBudget = this.inFlight + bytes > this.bytesMax;
    if (overBudget || !this.addresses.fits(address, bytes)) {
      this.refused(!overBudget);
      return false;
    }
    this.inFlight += bytes;
    this.addresses.add(address, bytes);
    return true;
  }

  /** BODY_BUDGET_EXCEEDED (503) for a body of `bytes` from `address` that did not fit: the node's budget named first. */
  refusal(bytes: number, address: string): MercuryError {
    if (this.inFlight + bytes <= this.bytesMax)
      return new MercuryError(
        'BODY_BUDGET_EXCEEDED',
        `your address (${address}) holds ${this.addresses.bytes(address)} bytes of request bodies not yet answered, and one address may hold at most ${this.addresses.perAddressMax}; this body needs ${bytes} more: finish or close the requests you started, then retry after Retry-After`,
        { details: { reason: 'ADDRESS_SHARE_FULL', limit: this.addresses.perAddressMax } },
      );
    return new MercuryError(
      'BODY_BUDGET_EXCEEDED',
      `the node holds ${this.inFlight} bytes of request bodies and accepts at most ${this.bytesMax} at once; this body needs ${bytes} more; retry after Retry-After`,
      { details: { limit: this.bytesMax } },
    );
  }

  release(bytes: number, address: string): void {
    assert.ok(bytes >= 0 && bytes <= this.inFlight, 'released more body bytes than were reserved');
    this.inFlight -= bytes;
    this.addresses.release(address, bytes);
  }
}

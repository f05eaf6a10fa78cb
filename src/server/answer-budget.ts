/**
 * The global budget of large answers a node holds while their clients take them (`http.answerBytesHeldMax`), over all
 * connections. A value or a range page larger than a send slice is held in this process from the moment it is read
 * until node:http has handed its last byte to the kernel ('finish') or the connection ends ('close', at the latest
 * when the send deadline cuts a client that takes nothing). Each connection runs one answer at a time (pipelined ones
 * have their own budget, `pipelinedAheadMax`), but connections were many: 4,000 of one address each asking for a
 * 1 MiB value and reading nothing held about 4 GiB (the memory audit of 2026-12-07 left it; measured at 1 MiB a
 * connection). Past the budget a large answer is refused 503 OVERLOADED with Retry-After; small ones always go.
 * One remote host holds at most `perAddressBytesMax` of it (record 81): before, 250 connections of one address asking
 * for an 8 MiB value and reading nothing held the whole 64 MiB, and every other client's large GET was refused 503.
 */
import { MercuryError } from '../errors/index.js';
import { AddressShares, hostSlotKey } from '../net/index.js';
import type { ServerResponse } from 'node:http';

export class AnswerBudget {
  private held = 0;
  private refused: (byAddress: boolean) => void = () => {};
  private readonly addresses: AddressShares;

  /**
   * `uncountedBytesMax`: answers up to this size are not counted (they leave in one write, the kernel takes them).
   * `perAddressBytesMax`: what one remote host's answers may hold together.
   */
  constructor(
    readonly bytesMax: number,
    readonly uncountedBytesMax: number,
    perAddressBytesMax: number = bytesMax,
  ) {
    this.addresses = new AddressShares(perAddressBytesMax);
  }

  /** `count` is called at each refusal (a metric), `byAddress` when the host's share was what was full. */
  onRefused(count: (byAddress: boolean) => void): void {
    this.refused = count;
  }

  /** Bytes of answers held now. */
  get bytesHeld(): number {
    return this.held;
  }

  /** Holds `bytes` for the answer `res` until it is sent or its connection ends; throws OVERLOADED past the budget. */
  hold(res: ServerResponse, bytes: number): void {
    if (bytes <= this.uncountedBytesMax) return;
    const address = hostSlotKey(res.req.socket.remoteAddress);
    if (this.held + bytes > this.bytesMax) {
      this.refused(false);
      throw new MercuryError(
        'OVERLOADED',
        `the node holds ${this.held} bytes of answers its clients have not taken yet, and at most ${this.bytesMax} at once; this answer needs ${bytes} more: retry after Retry-After, or read from another node`,
        { details: { limit: this.bytesMax } },
      );
    }
    if (!this.addresses.fits(address, bytes)) {
      this.refused(true);
      throw new MercuryError(
        'OVERLOADED',
        `your address (${address}) holds ${this.addresses.bytes(address)} bytes of answers its connections have not taken yet, and one address may hold at most ${this.addresses.perAddressMax}; this answer needs ${bytes} more: read the answers you asked for before asking for more, then retry after Retry-After`,
        { details: { reason: 'ADDRESS_SHARE_FULL', limit: this.addresses.perAddressMax } },
      );
    }
    this.held += bytes;
    this.addresses.add(address, bytes);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.held -= bytes;
      this.addresses.release(address, bytes);
    };
    res.once('finish', release);
    res.once('close', release);
  }
}

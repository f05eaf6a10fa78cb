/**
 * What each remote host holds of one process-wide budget (record 81): the budgets over all connections (request bodies,
 * large HTTP answers, the wire port's unsent answers) bound memory, and this bounds one host's part of them, so that a
 * host with many connections that read nothing, or send nothing, cannot take a budget whole and deny everyone else.
 * Pure bookkeeping, one sum per host kept as the budget keeps its total: a request pays a map lookup, never a scan of
 * connections. Hosts are keyed by the caller (`hostSlotKey`: an IPv4 address, or an IPv6 /64).
 */
import assert from 'node:assert/strict';

export class AddressShares {
  private readonly held = new Map<string, number>();

  constructor(readonly perAddressMax: number) {
    assert.ok(Number.isSafeInteger(perAddressMax) && perAddressMax > 0);
  }

  /** Bytes `address` holds now. */
  bytes(address: string): number {
    return this.held.get(address) ?? 0;
  }

  /** Whether `address` may take `bytes` more. */
  fits(address: string, bytes: number): boolean {
    return this.bytes(address) + bytes <= this.perAddressMax;
  }

  add(address: string, bytes: number): void {
    assert.ok(Number.isSafeInteger(bytes) && bytes >= 0);
    if (bytes > 0) this.held.set(address, this.bytes(address) + bytes);
  }

  release(address: string, bytes: number): void {
    const held = this.bytes(address);
    assert.ok(bytes >= 0 && bytes <= held, `released ${bytes} bytes that ${address} does not hold (${held})`);
    if (held === bytes) this.held.delete(address);
    else this.held.set(address, held - bytes);
  }
}

/**
 * Connections held per remote address: the one rule that keeps a single peer from taking every slot of a shared
 * cap (HTTP connections and watches, replication children). Pure bookkeeping; the listeners ask before they serve a
 * connection and release when it closes.
 */
import assert from 'node:assert/strict';

/** One key per peer: IPv4 addresses seen through a dual-stack socket ("::ffff:1.2.3.4") count as the IPv4 address. */
export function addressKey(remoteAddress: string | undefined): string {
  if (remoteAddress === undefined) return '?';
  return remoteAddress.startsWith('::ffff:') && remoteAddress.includes('.') ? remoteAddress.slice('::ffff:'.length) : remoteAddress;
}

/** "address:port" of a socket's peer for logs, "[v6]:port" for IPv6 so that the port reads apart (src/logging). */
export function remoteLabel(socket: { readonly remoteAddress?: string; readonly remotePort?: number }): string {
  const address = addressKey(socket.remoteAddress);
  return `${address.includes(':') ? `[${address}]` : address}:${socket.remotePort ?? '?'}`;
}

export class AddressSlots {
  private readonly held = new Map<string, number>();

  constructor(readonly perAddressMax: number) {
    assert.ok(Number.isSafeInteger(perAddressMax) && perAddressMax > 0);
  }

  /** Takes a slot for `address`; false (and nothing taken) when that address already holds `perAddressMax`. */
  tryAcquire(address: string): boolean {
    const count = this.held.get(address) ?? 0;
    if (count >= this.perAddressMax) return false;
    this.held.set(address, count + 1);
    return true;
  }

  release(address: string): void {
    const count = this.held.get(address);
    assert.ok(count !== undefined && count > 0, `released a slot that ${address} does not hold`);
    if (count === 1) this.held.delete(address);
    else this.held.set(address, count - 1);
  }

  count(address: string): number {
    return this.held.get(address) ?? 0;
  }
}

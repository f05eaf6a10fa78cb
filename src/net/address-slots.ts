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

/**
 * The key a per-address cap counts a peer under: `addressKey`, except that an IPv6 address counts as its /64, which is
 * what one host (one LAN, one cloud instance) is given. Keyed by the whole address, a host with an IPv6 /64 can bind as
 * many source addresses as it likes, and holds every slot a per-address cap was meant to keep from it.
 */
export function hostSlotKey(remoteAddress: string | undefined): string {
  const address = addressKey(remoteAddress);
  if (!address.includes(':')) return address;
  const groups = ipv6Groups(address);
  return groups === undefined ? address : `${groups.slice(0, 4).join(':')}::/64`;
}

/** The eight 16-bit groups of an IPv6 address, in hex without leading zeros (a zone id dropped); undefined if it is not one. */
function ipv6Groups(address: string): string[] | undefined {
  const bare = address.split('%')[0]!.toLowerCase();
  const halves = bare.split('::');
  if (halves.length > 2) return undefined;
  const split = (half: string): string[] => {
    if (half === '') return [];
    const parts = half.split(':');
    const last = parts[parts.length - 1]!;
    if (!last.includes('.')) return parts;
    // An embedded IPv4 address (64:ff9b::1.2.3.4) is the last two groups.
    const octets = last.split('.').map(Number);
    if (octets.length !== 4 || octets.some((octet) => !Number.isInteger(octet) || octet < 0 || octet > 255)) return ['x'];
    return [...parts.slice(0, -1), ((octets[0]! << 8) | octets[1]!).toString(16), ((octets[2]! << 8) | octets[3]!).toString(16)];
  };
  const head = split(halves[0]!);
  const tail = halves.length === 2 ? split(halves[1]!) : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...tail];
  if (groups.some((group) => !/^[0-9a-f]{1,4}$/.test(group))) return undefined;
  return groups.map((group) => parseInt(group, 16).toString(16));
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

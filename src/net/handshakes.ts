/**
 * Connections in their TLS handshake, counted from accept until the handshake ends (or the socket closes), over a port
 * and per remote host. A handshake in progress holds about 52 KB of OpenSSL state and a descriptor whatever the peer
 * sent (measured on `mercury serve`: 2,000 peers that sent one byte of a ClientHello, or all of it, and stopped held
 * 104 MB for the handshake timeout), so a port bounds how many it holds, and one host may not take them all.
 *
 * The listeners accept a plain socket and hand it to a TLS server, which makes a TLS socket of it: the two are linked
 * here by the peer's address and port, which they share and which no other open connection of the port has.
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { AddressSlots, hostSlotKey, remoteLabel } from './address-slots.js';

export class Handshakes {
  private readonly sockets = new Map<string, { readonly socket: Socket; readonly host: string }>();
  private readonly hosts: AddressSlots;
  /**
   * One close listener for every counted socket, taken off once its handshake is done: an idle watcher's connection
   * keeps nothing of this (node caches the peer's address and port, so they are known at the close).
   */
  private readonly closed: (this: Socket) => void;

  constructor(
    readonly max: number,
    perHostMax: number = max,
  ) {
    assert.ok(Number.isSafeInteger(max) && max > 0 && perHostMax <= max);
    this.hosts = new AddressSlots(perHostMax);
    const end = (socket: Socket): void => this.end(remoteLabel(socket), socket);
    this.closed = function (this: Socket) {
      end(this);
    };
  }

  get size(): number {
    return this.sockets.size;
  }

  /**
   * Counts `socket` (just accepted) until `done` or its close; false, and nothing counted, when the port holds `max`
   * handshakes or its host `perHostMax`: the caller destroys it. A socket whose peer is unknown (reset before it was
   * read) is refused too, since it could not be told apart.
   */
  begin(socket: Socket): boolean {
    if (socket.remoteAddress === undefined || this.sockets.size >= this.max) return false;
    const host = hostSlotKey(socket.remoteAddress);
    if (!this.hosts.tryAcquire(host)) return false;
    const peer = remoteLabel(socket);
    this.sockets.set(peer, { socket, host });
    socket.once('close', this.closed);
    return true;
  }

  /** The handshake of the TLS socket made from a counted one ended (or the socket turned out not to be TLS). */
  done(socket: Socket): void {
    const peer = remoteLabel(socket);
    const held = this.sockets.get(peer);
    if (held !== undefined) this.end(peer, held.socket);
  }

  /** Whether `socket` is counted still (its handshake not done, not closed). */
  has(socket: Socket): boolean {
    return this.sockets.get(remoteLabel(socket))?.socket === socket;
  }

  /** Destroys every socket still in its handshake (a closing server). */
  destroyAll(): void {
    for (const { socket } of [...this.sockets.values()]) socket.destroy();
  }

  private end(peer: string, socket: Socket): void {
    const held = this.sockets.get(peer);
    if (held?.socket !== socket) return;
    this.sockets.delete(peer);
    this.hosts.release(held.host);
    socket.off('close', this.closed);
  }
}

/**
 * The wire port's listener (frames: src/api/wire.ts; one connection: connection.ts). It admits connections by the
 * same rules as the HTTP port: a total and a per-address cap, TLS with the node's credentials when it has them (the
 * first byte decides: a plaintext peer on the TLS port gets a plaintext ERROR saying so), client certificates asked
 * for and checked here, a deadline for the handshake and HELLO. It owns the one timer that enforces every
 * connection's timeouts, and closes the connections of revoked tokens.
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import { MercuryError, encodeError, wireFrameBytesMaxFor } from '../api/index.js';
import { sleep, type Clock, type TimerHandle } from '../clock/index.js';
import type { Registry } from '../metrics/index.js';
import { AddressSlots, addressKey, hostSlotKey, peerCertificate, serverTlsOptions, sniffTls, tlsFailureMessage, tlsFailureReason, type TlsMaterial } from '../net/index.js';
import { WireConnection, type WireCounts } from './connection.js';
import type { WireLimits } from './limits.js';
import type { WireNode } from './wire-node.js';

export interface WireServerOptions {
  readonly node: WireNode;
  readonly clock: Clock;
  readonly metrics: Registry;
  readonly limits: WireLimits;
  /** The node's TLS credentials at start (reloads through `setTls`); undefined: plaintext. */
  readonly tls: TlsMaterial | undefined;
  /** A connection refused for TLS (wrong protocol, handshake, untrusted certificate). */
  readonly onTlsRejected: (reason: string, remote: string, message: string) => void;
  /** Each served TLS connection (TlsCredentials#track: closed if a new CA file no longer signs its certificate). */
  readonly trackTls?: (socket: TLSSocket) => void;
}

/** How long an answer to a refused connection may take to flush before the socket is destroyed. */
const REFUSAL_FLUSH_MS = 1_000;

/** Answer bytes held for `connections`, summed. */
function outputBytesOf(connections: Iterable<WireConnection>): number {
  let bytes = 0;
  for (const connection of connections) bytes += connection.outputBytes;
  return bytes;
}

export class WireServer {
  private readonly server: Server;
  private readonly tlsServer: TlsServer | undefined;
  private readonly connections = new Set<WireConnection>();
  /** The connections of each remote host (`hostSlotKey`), for its part of the output budget (record 81): at most 32 each. */
  private readonly byAddress = new Map<string, Set<WireConnection>>();
  private readonly slots: AddressSlots;
  private readonly counts: WireCounts = { requests: 0, errors: 0, connectionErrors: 0 };
  private sweepTimer: TimerHandle | undefined;
  private closing = false;

  constructor(private readonly options: WireServerOptions) {
    const { limits, tls, metrics } = options;
    this.slots = new AddressSlots(limits.connectionsPerAddressMax);
    this.server = createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.server.maxConnections = limits.connectionsMax;
    if (tls !== undefined) {
      // Never listens: it takes the sockets whose first byte is a TLS handshake, and gives back TLS sockets.
      this.tlsServer = createTlsServer({ ...serverTlsOptions(tls), handshakeTimeout: limits.helloTimeoutMs }, (socket) => this.secured(socket));
      this.tlsServer.on('tlsClientError', (error: Error & { code?: string }, socket: TLSSocket) => {
        const reason = tlsFailureReason(error);
        options.onTlsRejected(reason, addressKey(socket.remoteAddress), tlsFailureMessage(reason, error));
        socket.destroy();
      });
    }
    metrics.gauge('mercury_wire_connections', 'Open connections on the wire port.', () => this.connections.size);
    metrics.gauge('mercury_wire_requests', 'Requests (GET, PUT, DELETE) read on the wire port (a counter).', () => this.counts.requests);
    metrics.gauge('mercury_wire_request_errors', 'Requests on the wire port answered with an ERROR (a counter).', () => this.counts.errors);
    metrics.gauge('mercury_wire_output_bytes', `Answer bytes held for wire clients that have not read them yet (queued, and in socket buffers); at most ${limits.outputBytesTotalMax} beyond each connection's share.`, () => this.outputBytes());
    metrics.gauge(
      'mercury_wire_output_address_bytes_max',
      `Answer bytes held for the wire clients of the one remote host that holds the most; past ${limits.outputBytesPerAddressMax}, its connections beyond their share are sent nothing more until they read.`,
      () => this.outputBytesOfBusiestAddress(),
    );
    metrics.gauge('mercury_wire_connection_errors', 'Wire connections closed for a protocol error, a timeout or a revoked token (a counter).', () => this.counts.connectionErrors);
  }

  /** Answer bytes held for the port's clients, summed over its connections (at most connectionsMax of them). */
  private outputBytes(): number {
    return outputBytesOf(this.connections);
  }

  /** Answer bytes held for the connections of `address` (at most connectionsPerAddressMax of them). */
  private addressOutputBytes(address: string): number {
    return outputBytesOf(this.byAddress.get(address) ?? []);
  }

  /** For the gauge, at a scrape: every connection once. */
  private outputBytesOfBusiestAddress(): number {
    let most = 0;
    for (const address of this.byAddress.keys()) most = Math.max(most, this.addressOutputBytes(address));
    return most;
  }

  async listen(host: string, port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  /** "host:port" of the listener. */
  get address(): string {
    const address = this.server.address() as AddressInfo | null;
    if (address === null) return '';
    return address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
  }

  get secure(): boolean {
    return this.tlsServer !== undefined;
  }

  /** New handshakes use the reloaded credentials; open connections go on (a new CA re-checks them: src/net/tls-connections.ts). */
  setTls(material: TlsMaterial): void {
    this.tlsServer?.setSecureContext(serverTlsOptions(material));
  }

  /** Closes, with an ERROR naming the revocation (or expiry: `why`), every connection opened with one of these tokens. */
  revoke(tokenIds: readonly string[], why: (tokenId: string) => string = () => 'was revoked'): void {
    const revoked = new Set(tokenIds);
    for (const connection of this.connections) {
      const id = connection.tokenId;
      if (id !== undefined && revoked.has(id)) connection.fail(new MercuryError('UNAUTHENTICATED', `token ${id} ${why(id)}; connect again with another token`));
    }
  }

  /**
   * Tokens were given other grants: a connection opened with one of them is checked against its grant now, and closed
   * with an ERROR (UNAUTHENTICATED) if it no longer stands: its credential was replaced (a new secret, another subject),
   * or another grant names its certificate subject too. One whose scopes or name changed goes on under the new grant,
   * which each request checks (connection.ts `currentPrincipal`).
   */
  regranted(tokenIds: readonly string[]): void {
    const regranted = new Set(tokenIds);
    for (const connection of this.connections) {
      const id = connection.tokenId;
      if (id !== undefined && regranted.has(id)) connection.recheck();
    }
  }

  /**
   * Stops accepting; every connection answers what it read, says GOAWAY (its client sends the rest elsewhere) and
   * closes. Resolves once every connection is gone, at the latest after the frame timeout.
   */
  async close(): Promise<void> {
    this.closing = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const connection of this.connections) connection.goAway();
    const deadline = this.options.clock.monotonicMs() + this.options.limits.frameTimeoutMs;
    // These waits keep the process alive: nothing else may. A closing connection's socket is paused (not read), and a
    // client in this process unrefs its idle connection, so with unref'd sleeps the event loop emptied here and close()
    // never resolved; the process exited with the store open (audit, 2026-12-07).
    while (this.connections.size > 0 && this.options.clock.monotonicMs() < deadline) await sleep(this.options.clock, 5, { keepAlive: true });
    for (const connection of this.connections) connection.socket.destroy();
    this.stopSweeping();
    await closed;
  }

  private accept(socket: Socket): void {
    const remote = socket.remoteAddress;
    if (remote === undefined || this.closing) {
      socket.destroy();
      return;
    }
    // Per host: an IPv6 peer counts as its /64, or one host could bind an address per connection (hostSlotKey).
    const address = hostSlotKey(remote);
    if (!this.slots.tryAcquire(address)) {
      this.refuse(
        socket,
        new MercuryError(
          'OVERLOADED',
          `${address} holds ${this.slots.count(address)} wire connections, the most one address may; share connections (one per process carries many requests at once)`,
        ),
      );
      return;
    }
    socket.once('close', () => this.slots.release(address));
    socket.on('error', () => socket.destroy());
    if (this.tlsServer === undefined) {
      this.serve(socket);
      return;
    }
    const tlsServer = this.tlsServer;
    // A peer that connects and sends nothing is closed at the HELLO deadline; after its first byte the handshake has
    // its own (handshakeTimeout), and then the connection's HELLO deadline applies.
    const silent = this.options.clock.setTimeout(() => {
      if (socket.bytesRead === 0) socket.destroy();
    }, this.options.limits.helloTimeoutMs);
    socket.once('close', () => silent.cancel());
    sniffTls(socket, (isTls) => {
      if (isTls) {
        tlsServer.emit('connection', socket);
        return;
      }
      this.options.onTlsRejected('not_tls', address, 'plaintext on the TLS wire port');
      this.refuse(socket, new MercuryError('BAD_REQUEST', 'this wire port speaks TLS: use a mercury+tls:// URL and trust the cluster CA (the client\'s `ca` option)'));
    });
  }

  /** A TLS connection whose handshake finished: a certificate presented that does not verify is refused (as on HTTP). */
  private secured(socket: TLSSocket): void {
    const { error } = peerCertificate(socket);
    if (error !== undefined) {
      const address = addressKey(socket.remoteAddress);
      this.options.onTlsRejected(error === 'CERT_HAS_EXPIRED' ? 'certificate_expired' : 'untrusted_certificate', address, `client certificate: ${error}`);
      this.refuse(socket, new MercuryError('UNAUTHENTICATED', `the client certificate was rejected (${error}): present one signed by the cluster CA, or none`));
      return;
    }
    this.options.trackTls?.(socket);
    this.serve(socket);
  }

  private serve(socket: Socket): void {
    // A TLS handshake that finishes after close() began: not served (close has already told the others to go).
    if (this.closing) return void socket.destroy();
    const address = hostSlotKey(socket.remoteAddress);
    const connection = new WireConnection(socket, {
      node: this.options.node,
      limits: this.options.limits,
      frameBytesMax: wireFrameBytesMaxFor(this.options.node.valueBytesMax),
      nowMs: () => this.options.clock.monotonicMs(),
      counts: this.counts,
      portOutputBytes: () => this.outputBytes(),
      address,
      addressOutputBytes: () => this.addressOutputBytes(address),
      onClosed: (closed) => {
        this.connections.delete(closed);
        const ofAddress = this.byAddress.get(address);
        ofAddress?.delete(closed);
        if (ofAddress?.size === 0) this.byAddress.delete(address);
        if (this.connections.size === 0) this.stopSweeping();
      },
    });
    this.connections.add(connection);
    const ofAddress = this.byAddress.get(address) ?? new Set<WireConnection>();
    ofAddress.add(connection);
    this.byAddress.set(address, ofAddress);
    // The sweep runs only while there are connections to sweep: a node nobody uses the wire port of is not woken by it.
    this.sweepTimer ??= this.options.clock.setInterval(() => this.sweep(), this.options.limits.sweepIntervalMs);
  }

  private stopSweeping(): void {
    this.sweepTimer?.cancel();
    this.sweepTimer = undefined;
  }

  /** Answers a connection that will not be served with an ERROR (id 0), then closes it. */
  private refuse(socket: Socket, error: MercuryError): void {
    this.counts.connectionErrors++;
    socket.on('error', () => socket.destroy());
    socket.resume();
    socket.end(encodeError(0, error.code, error.message, error.details));
    this.options.clock.setTimeout(() => socket.destroy(), REFUSAL_FLUSH_MS);
  }

  private sweep(): void {
    const nowMs = this.options.clock.monotonicMs();
    for (const connection of this.connections) connection.sweep(nowMs);
  }
}

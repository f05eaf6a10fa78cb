/**
 * The serving side's TCP adapter: a listening socket for children, one `Upstream` state machine per accepted
 * connection. The node tells it what it applied (`localApplied`), the heartbeats it made or received (`heartbeat`) and
 * when its chain was replaced by a snapshot (`chainReset`); the machines decide what to send.
 *
 * Sockets are bounded by the machines' flow control: a session never has more than the window unacknowledged, so a
 * stalled child costs at most the window in socket buffers before it is closed for not acknowledging. What the
 * sockets hold unsent in this process is bounded over all children and per remote host (`queueRoom`), and so are the
 * snapshots one host's children hold (`snapshotRefusal`): docs/decisions.md, records 75 and 87.
 *
 * With TLS (src/net/tls.ts) the port is mutual TLS: the first byte of a connection must start a TLS handshake (else a
 * plaintext REFUSE UNAUTHENTICATED says how to configure the child), and the child's certificate must verify against
 * the cluster CA (else a REFUSE UNAUTHENTICATED over TLS names the reason). Without TLS, a child that starts a TLS
 * handshake is counted and closed; its own error says that the upstream does not serve TLS.
 */
import net from 'node:net';
import tls from 'node:tls';
import { TickTimer, type Clock } from '../clock/index.js';
import type { EncodedEntry } from '../log/index.js';
import type { Logger } from '../logging/index.js';
import { AddressSlots, Handshakes, TLS_HANDSHAKE_BYTE, hostSlotKey, remoteLabel, peerCertificate, serverTlsOptions, sniffTls, tlsFailureMessage, tlsFailureReason, type TlsMaterial } from '../net/index.js';
import { REPLICATION_LIMITS, type ReplicationLimits } from './limits.js';
import { encodeMessage, type Heartbeat } from './protocol.js';
import type { LogSource } from './source.js';
import { Upstream, type ChildAuthorization, type UpstreamAction, type UpstreamOptions, type UpstreamStatus } from './upstream.js';

/**
 * How long a closing socket may take to flush its last frames (a REFUSE, say) before it is destroyed. A hard deadline
 * on the node's clock: an idle timeout (`socket.setTimeout`) would be reset by every byte a refused peer trickles in.
 */
const CLOSE_FLUSH_MS = 1_000;

/**
 * Bytes queued on `socket` that no write has handed to the kernel yet: `writableLength` less the write in progress.
 * Node counts a write in progress (frames queued behind another are written together, one writev of megabytes) whole
 * until the kernel has taken all of it, while the child may already have read, and acknowledged, its first frames:
 * compared whole, an honest replica joining over loopback was dropped as lying once or twice per join (review,
 * 2026-12-08: "7340573 queued, 7340460 unacknowledged", a 113-byte heartbeat apart), and began its snapshot again.
 * Node exposes the write in progress only in the stream's state (`writing`, `writelen`, stable since Node 10).
 */
function undispatchedBytes(socket: net.Socket): number {
  const state = (socket as unknown as { _writableState?: { writing?: boolean; writelen?: number } })._writableState;
  const writing = state?.writing === true && typeof state.writelen === 'number' ? state.writelen : 0;
  return Math.max(0, socket.writableLength - writing);
}

export interface ReplicationServerOptions {
  readonly nodeId: string;
  /** This node's HTTP API, told to children for write forwarding. */
  readonly httpUrl: () => string;
  readonly source: LogSource;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly ancestors: () => readonly string[];
  readonly latestHeartbeat: () => Heartbeat | undefined;
  readonly limits?: ReplicationLimits;
  /** Children beyond this many are refused (each costs a socket, a file descriptor and a window of buffers). */
  readonly childrenMax: number;
  /** Serve mutual TLS with these credentials (reload with `setTls`); undefined: plaintext. */
  readonly tls?: TlsMaterial;
  /** A connection refused for TLS (wrong protocol, failed handshake, untrusted certificate): the node counts and logs it. */
  readonly onTlsRejected?: (reason: string, remote: string, message: string) => void;
  /** Each admitted child's TLS connection (TlsCredentials#track: closed if a new CA file no longer signs it). */
  readonly trackTls?: (socket: tls.TLSSocket) => void;
  /** Checks a child's HELLO credential, or its connection's verified certificate (src/auth/guard.ts). Absent: none. */
  readonly authorizeChild?: (credential: string | undefined, socket: net.Socket) => ChildAuthorization;
  /**
   * Judges an admitted child's principal again once its token's grant was replaced (src/auth/guard.ts `recheckChild`):
   * the principal it goes on as, or the refusal that ends its session. Absent: every such session ends.
   */
  readonly recheckChild?: (principal: { readonly id: string; readonly name: string } | undefined) => ChildAuthorization;
  /** The root's snapshot signer; undefined on a relay (see Upstream). */
  readonly signer?: UpstreamOptions['signer'];
  /** A relay: why it stopped following (see Upstream). */
  readonly diverged?: UpstreamOptions['diverged'];
}

interface ChildSession {
  readonly socket: net.Socket;
  readonly upstream: Upstream;
  readonly timer: TickTimer;
  readonly remote: string;
  /** The peer's host (its address, an IPv6 one as its /64: hostSlotKey): what its slot is counted under. */
  readonly address: string;
}

export interface ChildStatus extends UpstreamStatus {
  readonly remote: string;
}

export class ReplicationServer {
  private readonly options: ReplicationServerOptions;
  private readonly limits: ReplicationLimits;
  private readonly server: net.Server;
  private readonly sessions = new Set<ChildSession>();
  private readonly addressSlots: AddressSlots;
  /** Does the TLS handshakes of sockets the plain listener accepted; never listens itself. */
  private readonly tlsServer: tls.Server | undefined;
  /** Sockets between accept and the end of their TLS handshake (closed with the server). */
  private readonly handshaking: Handshakes;
  /** Sockets ended and flushing their last frames, at most `closingSocketsMax` (`endSocket`). */
  private readonly ending = new Set<net.Socket>();
  private closing = false;
  /** Children refused a snapshot because their host's children held `childSnapshotsPerAddressMax` (a counter). */
  private snapshotAddressRefusals = 0;

  constructor(options: ReplicationServerOptions) {
    this.options = options;
    this.limits = options.limits ?? REPLICATION_LIMITS;
    this.addressSlots = new AddressSlots(this.limits.childrenPerAddressMax);
    this.handshaking = new Handshakes(this.limits.handshakingSocketsMax, this.limits.handshakingSocketsPerAddressMax);
    if (options.tls === undefined) {
      this.tlsServer = undefined;
      this.server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
      return;
    }
    const tlsServer = new tls.Server({ ...serverTlsOptions(options.tls), handshakeTimeout: this.limits.handshakeTimeoutMs });
    this.tlsServer = tlsServer;
    tlsServer.on('secureConnection', (socket: tls.TLSSocket) => this.secured(socket));
    tlsServer.on('tlsClientError', (error: Error & { code?: string }, socket: tls.TLSSocket) => {
      const reason = tlsFailureReason(error);
      this.tlsRejected(reason, socket, tlsFailureMessage(reason, error));
      socket.destroy();
    });
    this.server = net.createServer({ noDelay: true }, (socket) => this.handshake(socket, tlsServer));
  }

  /** New credentials for new handshakes; open sessions keep theirs. */
  setTls(material: TlsMaterial): void {
    this.tlsServer?.setSecureContext(serverTlsOptions(material));
  }

  private tlsRejected(reason: string, socket: net.Socket, message: string): void {
    const remote = remoteLabel(socket);
    this.options.onTlsRejected?.(reason, remote, message);
  }

  /** Mutual TLS: the first bytes and then the handshake, each within the handshake timeout, then the session. */
  private handshake(socket: net.Socket, tlsServer: tls.Server): void {
    if (!this.handshaking.begin(socket)) {
      // Counted, not logged: a flood would fill the log.
      this.tlsRejected('handshakes_full', socket, `${this.handshaking.size} connections are already in their handshake (at most ${this.limits.handshakingSocketsMax}, ${this.limits.handshakingSocketsPerAddressMax} per host)`);
      socket.destroy();
      return;
    }
    socket.on('error', () => socket.destroy());
    const timer = this.options.clock.setTimeout(() => {
      if (this.handshaking.has(socket)) socket.destroy();
    }, this.limits.handshakeTimeoutMs);
    sniffTls(socket, (isTls) => {
      timer.cancel();
      if (isTls) {
        // Still counted until `secured`: a peer that sends the first bytes of a ClientHello (or all of it) and stops
        // holds the socket for the TLS server's handshakeTimeout, and about 52 KB of OpenSSL state with it. Counted
        // only up to the first byte, 2,000 such peers held 2,000 descriptors and 104 MB for 10 s (audit, 2026-12-07).
        tlsServer.emit('connection', socket);
        return;
      }
      this.handshaking.done(socket);
      this.tlsRejected('not_tls', socket, 'a plaintext child on the TLS replication port');
      const message = 'this upstream requires mutual TLS: start the replica with --tls-cert, --tls-key and --tls-ca (a certificate signed by the cluster CA)';
      this.refuse(socket, message);
    });
  }

  /** The TLS handshake is done: the child's certificate must be signed by the cluster CA. */
  private secured(socket: tls.TLSSocket): void {
    this.handshaking.done(socket);
    const certificate = peerCertificate(socket);
    if (certificate.name === undefined) {
      const why = certificate.error ?? 'no client certificate';
      this.tlsRejected(why === 'CERT_HAS_EXPIRED' ? 'certificate_expired' : why === 'no client certificate' ? 'no_certificate' : 'untrusted_certificate', socket, `child certificate rejected: ${why}`);
      this.refuse(socket, `your certificate was rejected (${why}): a replica must present a certificate signed by the cluster CA (--tls-cert, --tls-key)`);
      return;
    }
    this.options.trackTls?.(socket);
    this.accept(socket, certificate.name);
  }

  /** Sends a REFUSE UNAUTHENTICATED and closes once it is flushed (or after CLOSE_FLUSH_MS). */
  private refuse(socket: net.Socket, message: string): void {
    this.endSocket(socket, encodeMessage({ type: 'refuse', reason: 'UNAUTHENTICATED', message }));
  }

  /**
   * Ends a socket this port will not serve (any more): `last` (a REFUSE) and whatever was queued are flushed, then the
   * socket is destroyed after CLOSE_FLUSH_MS whatever the peer does. Nothing more is read from it, so a peer that keeps
   * sending is held back by TCP instead of costing the node CPU. With `closingSocketsMax` sockets already closing it is
   * destroyed at once: the peer misses its last frame, and the node keeps its descriptors.
   */
  private endSocket(socket: net.Socket, last?: Buffer): void {
    if (socket.destroyed || this.ending.has(socket)) return;
    socket.on('error', () => socket.destroy());
    if (this.ending.size >= this.limits.closingSocketsMax) {
      socket.destroy();
      return;
    }
    this.ending.add(socket);
    socket.pause();
    if (last === undefined) socket.end();
    else socket.end(last);
    const timer = this.options.clock.setTimeout(() => socket.destroy(), CLOSE_FLUSH_MS);
    socket.once('close', () => {
      timer.cancel();
      this.ending.delete(socket);
    });
  }

  listen(host: string, port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        this.server.on('error', (error) => this.options.logger.log('error', 'replication listener failed', { error: String(error) }));
        resolve();
      });
    });
  }

  /** "host:port" that children pass to `--upstream`. */
  get address(): string {
    const address = this.server.address() as net.AddressInfo;
    return address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
  }

  /** A replica's verified entries, just before its own write: caught-up children get them now (Upstream.forwardVerified). */
  forwardVerified(entries: readonly EncodedEntry[]): void {
    const nowMs = this.options.clock.monotonicMs();
    for (const session of this.sessions) this.perform(session, session.upstream.forwardVerified(nowMs, entries));
  }

  /** Entries this node has just applied (root: committed and durable), in seq order. */
  localApplied(entries: readonly EncodedEntry[]): void {
    const nowMs = this.options.clock.monotonicMs();
    for (const session of this.sessions) this.perform(session, session.upstream.localApplied(nowMs, entries));
  }

  heartbeat(heartbeat: Heartbeat): void {
    const nowMs = this.options.clock.monotonicMs();
    for (const session of this.sessions) this.perform(session, session.upstream.heartbeat(nowMs, heartbeat));
  }

  /** The node installed a snapshot: every child's position refers to the old log. */
  chainReset(): void {
    const nowMs = this.options.clock.monotonicMs();
    for (const session of this.sessions) this.perform(session, session.upstream.chainReset(nowMs));
  }

  /** Tokens were revoked (or expired: `why`): children that replicate with one of them are refused (UNAUTHENTICATED) and closed. */
  revoke(tokenIds: readonly string[], why?: (tokenId: string) => string): void {
    this.expel(tokenIds, (upstream, nowMs) => upstream.revoked(nowMs, why));
  }

  /**
   * Tokens were given other grants: children that replicate with one of them are checked against the new grant, and
   * closed (to reconnect under it) only if it no longer lets them replicate.
   */
  regranted(tokenIds: readonly string[]): void {
    const recheck = this.options.recheckChild ?? ((): ChildAuthorization => ({ refuse: 'UNAUTHENTICATED', message: 'this node does not check grants again' }));
    this.expel(tokenIds, (upstream, nowMs) => upstream.regranted(nowMs, recheck));
  }

  private expel(tokenIds: readonly string[], end: (upstream: Upstream, nowMs: number) => UpstreamAction[]): void {
    if (tokenIds.length === 0) return;
    const ids = new Set(tokenIds);
    const nowMs = this.options.clock.monotonicMs();
    for (const session of [...this.sessions]) {
      const id = session.upstream.principalId;
      if (id !== undefined && ids.has(id)) this.perform(session, end(session.upstream, nowMs));
    }
  }

  /** Bytes the children's sockets hold unsent in this process, summed (at most the children this node serves). */
  queuedBytes(): number {
    return this.queuedBytesOf(undefined).total;
  }

  /** Of `queuedBytes`, what the children of the one remote host that holds the most hold. */
  queuedBytesOfBusiestAddress(): number {
    const byAddress = new Map<string, number>();
    for (const session of this.sessions) byAddress.set(session.address, (byAddress.get(session.address) ?? 0) + session.socket.writableLength);
    return Math.max(0, ...byAddress.values());
  }

  /** Children refused a snapshot since start because their host's children held their most snapshots. */
  get snapshotAddressRefusalCount(): number {
    return this.snapshotAddressRefusals;
  }

  /**
   * What the children hold unsent, in total and those of `address`: one pass over the sessions (at most the children
   * this node serves), taken only for a frame past its child's share. Socket queues shrink on their own as the kernel
   * takes bytes, so a sum kept between events would only be an upper bound; this one is exact.
   */
  private queuedBytesOf(address: string | undefined): { total: number; address: number } {
    let total = 0;
    let ofAddress = 0;
    for (const session of this.sessions) {
      const bytes = session.socket.writableLength;
      total += bytes;
      if (session.address === address) ofAddress += bytes;
    }
    return { total, address: ofAddress };
  }

  /**
   * Whether `session`'s socket may queue a frame of `frameBytes` more: within the child's share whatever the others
   * hold; beyond it, within its host's part and the children's total. A host whose children hold nothing unsent may
   * always queue one frame, so that a frame larger than a share, a host's part or the total still goes out, one at a
   * time per host, and no host's children starve another's (record 87).
   */
  private queueRoom(session: ChildSession, frameBytes: number): boolean {
    if (session.socket.writableLength + frameBytes <= this.limits.childQueuedBytesShare) return true;
    const queued = this.queuedBytesOf(session.address);
    if (queued.address === 0) return true;
    return queued.address + frameBytes <= this.limits.childrenQueuedBytesPerAddressMax && queued.total + frameBytes <= this.limits.childrenQueuedBytesMax;
  }

  /** Why `session`'s child may not be sent a snapshot: its host's children hold `childSnapshotsPerAddressMax` of them. */
  private snapshotRefusal(session: ChildSession): string | undefined {
    let snapshots = 0;
    for (const other of this.sessions) if (other.address === session.address && other.upstream.sendingSnapshot) snapshots++;
    if (snapshots < this.limits.childSnapshotsPerAddressMax) return undefined;
    this.snapshotAddressRefusals++;
    return `this node is sending ${snapshots} snapshots to children at ${session.address}, the most per host (childSnapshotsPerAddressMax); try another upstream or later`;
  }

  children(): ChildStatus[] {
    return Array.from(this.sessions, (session) => ({ remote: session.remote, ...session.upstream.status() }));
  }

  async close(): Promise<void> {
    this.closing = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.handshaking.destroyAll();
    for (const socket of this.ending) socket.destroy();
    this.ending.clear();
    const nowMs = this.options.clock.monotonicMs();
    for (const session of [...this.sessions]) {
      session.upstream.closed(nowMs);
      this.drop(session);
      // Children fail over or retry; there is nothing left worth flushing.
      session.socket.destroy();
    }
    await closed;
  }

  /** `peer` is the verified certificate's subject under TLS (logged with the session). */
  private accept(socket: net.Socket, peer?: string): void {
    const remote = remoteLabel(socket);
    // Per host: an IPv6 peer counts as its /64, or one host could bind an address per fake child (hostSlotKey).
    const address = hostSlotKey(socket.remoteAddress);
    let reason: string | undefined;
    if (this.closing) reason = 'this node is shutting down';
    else if (this.sessions.size >= this.options.childrenMax) reason = `this node already serves ${this.options.childrenMax} children; use another upstream`;
    else if (!this.addressSlots.tryAcquire(address))
      reason = `this node already serves ${this.limits.childrenPerAddressMax} children from ${address} (the most per address); use another upstream`;
    if (reason !== undefined) {
      this.endSocket(socket, encodeMessage({ type: 'refuse', reason: 'UNAVAILABLE', message: reason }));
      this.options.logger.log('warn', 'child refused', { remote, reason });
      return;
    }
    const clock = this.options.clock;
    const upstream = new Upstream({
      nodeId: this.options.nodeId,
      httpUrl: this.options.httpUrl(),
      source: this.options.source,
      ancestors: this.options.ancestors,
      latestHeartbeat: this.options.latestHeartbeat,
      limits: this.limits,
      nowMs: clock.monotonicMs(),
      authorizeChild: this.options.authorizeChild === undefined ? undefined : (credential) => this.options.authorizeChild!(credential, socket),
      signer: this.options.signer,
      diverged: this.options.diverged,
      queueRoom: (frameBytes) => this.queueRoom(session, frameBytes),
      snapshotRefusal: () => this.snapshotRefusal(session),
    });
    const session: ChildSession = {
      socket,
      upstream,
      remote,
      address,
      timer: new TickTimer(clock, () => this.perform(session, upstream.tick(clock.monotonicMs()))),
    };
    this.sessions.add(session);
    if (peer !== undefined) this.options.logger.log('debug', 'child authenticated', { remote, certificate: peer });
    if (this.tlsServer === undefined) {
      // A child configured for TLS: its handshake would otherwise read as an absurd frame length.
      socket.once('data', (chunk: Buffer) => {
        if (chunk[0] !== TLS_HANDSHAKE_BYTE || !this.sessions.has(session)) return;
        this.tlsRejected('tls_on_plaintext', socket, 'a TLS handshake on the plaintext replication port');
        this.drop(session);
        socket.destroy();
      });
    }
    socket.on('data', (chunk: Buffer) => {
      if (!this.sessions.has(session)) return;
      this.perform(session, upstream.receive(clock.monotonicMs(), chunk));
      // Bytes the child acknowledged have left this socket. Still queued here, it acknowledged what it never received:
      // a child that does so to keep its window open (and everything sent to it queued without bound) is dropped.
      const undispatched = undispatchedBytes(socket);
      if (this.sessions.has(session) && undispatched > upstream.unackedBytes)
        this.drop(session, `the child acknowledged bytes still queued here (${undispatched} queued, ${upstream.unackedBytes} unacknowledged)`);
    });
    // A frame held for want of room goes out once the socket has sent what it held, not at the child's next ACK.
    socket.on('drain', () => {
      if (this.sessions.has(session)) this.perform(session, upstream.drained(clock.monotonicMs()));
    });
    socket.on('error', (error) => this.options.logger.log('debug', 'child socket error', { remote, error: error.message }));
    socket.on('close', () => {
      if (!this.sessions.has(session)) return;
      this.perform(session, upstream.closed(clock.monotonicMs()));
      this.drop(session);
    });
    this.perform(session, []);
  }

  private perform(session: ChildSession, actions: readonly UpstreamAction[]): void {
    for (const action of actions) {
      switch (action.type) {
        case 'send':
          if (!session.socket.destroyed) session.socket.write(action.bytes);
          break;
        case 'close':
          this.drop(session, action.reason);
          return;
        case 'log':
          this.options.logger.log(action.level, action.message, { ...action.fields, remote: session.remote });
          break;
        case 'continue':
          // After the frames above are written, and after whatever else waits for this turn (requests, other children).
          setImmediate(() => {
            if (this.sessions.has(session)) this.perform(session, session.upstream.resume(this.options.clock.monotonicMs()));
          });
          break;
      }
    }
    if (this.sessions.has(session)) session.timer.schedule(session.upstream.nextTickMs());
  }

  /** Ends the session: flushes what was queued (a REFUSE, say), then destroys the socket if the peer lingers. */
  private drop(session: ChildSession, reason?: string): void {
    if (!this.sessions.delete(session)) return;
    this.addressSlots.release(session.address);
    session.timer.cancel();
    if (reason !== undefined) this.options.logger.log('info', 'child session closed', { remote: session.remote, reason });
    this.endSocket(session.socket);
  }
}

/**
 * The serving side's TCP adapter: a listening socket for children, one `Upstream` state machine per accepted
 * connection. The node tells it what it applied (`localApplied`), the heartbeats it made or received (`heartbeat`) and
 * when its chain was replaced by a snapshot (`chainReset`); the machines decide what to send.
 *
 * Sockets are bounded by the machines' flow control: a session never has more than the window unacknowledged, so a
 * stalled child costs at most the window in socket buffers before it is closed for not acknowledging.
 */
import net from 'node:net';
import { TickTimer, type Clock } from '../clock/index.js';
import type { EncodedEntry } from '../log/index.js';
import type { Logger } from '../logging/index.js';
import { AddressSlots, addressKey } from '../net/index.js';
import { REPLICATION_LIMITS, type ReplicationLimits } from './limits.js';
import { encodeMessage, type Heartbeat } from './protocol.js';
import type { LogSource } from './source.js';
import { Upstream, type UpstreamAction, type UpstreamStatus } from './upstream.js';

/** How long a closing session may take to flush its last frames (a REFUSE, say) before the socket is destroyed. */
const CLOSE_FLUSH_MS = 1_000;

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
}

interface ChildSession {
  readonly socket: net.Socket;
  readonly upstream: Upstream;
  readonly timer: TickTimer;
  readonly remote: string;
  /** The peer's address (without port): what its slot is counted under. */
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
  private closing = false;

  constructor(options: ReplicationServerOptions) {
    this.options = options;
    this.limits = options.limits ?? REPLICATION_LIMITS;
    this.addressSlots = new AddressSlots(this.limits.childrenPerAddressMax);
    this.server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
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

  children(): ChildStatus[] {
    return Array.from(this.sessions, (session) => ({ remote: session.remote, ...session.upstream.status() }));
  }

  async close(): Promise<void> {
    this.closing = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const nowMs = this.options.clock.monotonicMs();
    for (const session of [...this.sessions]) {
      session.upstream.closed(nowMs);
      this.drop(session);
      // Children fail over or retry; there is nothing left worth flushing.
      session.socket.destroy();
    }
    await closed;
  }

  private accept(socket: net.Socket): void {
    const remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    const address = addressKey(socket.remoteAddress);
    let reason: string | undefined;
    if (this.closing) reason = 'this node is shutting down';
    else if (this.sessions.size >= this.options.childrenMax) reason = `this node already serves ${this.options.childrenMax} children; use another upstream`;
    else if (!this.addressSlots.tryAcquire(address))
      reason = `this node already serves ${this.limits.childrenPerAddressMax} children from ${address} (the most per address); use another upstream`;
    if (reason !== undefined) {
      socket.end(encodeMessage({ type: 'refuse', reason: 'UNAVAILABLE', message: reason }));
      socket.setTimeout(CLOSE_FLUSH_MS, () => socket.destroy());
      socket.on('error', () => socket.destroy());
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
    });
    const session: ChildSession = {
      socket,
      upstream,
      remote,
      address,
      timer: new TickTimer(clock, () => this.perform(session, upstream.tick(clock.monotonicMs()))),
    };
    this.sessions.add(session);
    socket.on('data', (chunk: Buffer) => this.perform(session, upstream.receive(clock.monotonicMs(), chunk)));
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
    session.socket.end();
    session.socket.setTimeout(CLOSE_FLUSH_MS, () => session.socket.destroy());
  }
}

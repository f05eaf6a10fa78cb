/**
 * The watch hub's adapter: the only watch module that touches `node:http`, sockets, timers and metrics. It serves
 * `/v1/watch` on the node's HTTP server over its own WebSocket end (websocket.ts), decodes client messages, and drives
 * the pure `WatchMachine` (machine.ts, where the subscription rules live): every socket event becomes a machine event,
 * every connection is handed to the machine as its `WatchConnection`, and one timer is kept armed for the machine's
 * `nextTickMs()` on the monotonic clock.
 *
 * A watcher costs its TCP socket and one `WsConnection` (which is its WebSocket too): an events message shared by
 * many watchers is framed once (frame.ts) and the same bytes are written on each socket.
 */
import assert from 'node:assert/strict';
import { STATUS_CODES, ServerResponse, type IncomingMessage, type Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { TickTimer, type Clock } from '../clock/index.js';
import type { ChainHead, EncodedEntry, Entry } from '../log/index.js';
import type { Logger } from '../logging/index.js';
import type { Registry } from '../metrics/index.js';
import { readersFull, type KeyRange, type SnapshotReader, type SnapshotReservation } from '../store/index.js';
import { isDataCorrupted, isReadersFull, type MercuryError } from '../errors/index.js';
import { hostSlotKey } from '../net/index.js';
import { validateWatchLimits, WATCH_LIMITS, type WatchLimits } from './limits.js';
import { WatchMachine, type WatchAction, type WatchConnection, type WatchCounters, type WatchInput } from './machine.js';
import { handshakeResponse, readHandshake, ServerWebSocket, type HeldBytesBudget, type ServerWebSocketOwner } from './websocket.js';
import { isMercuryError, parseClientMessage, parseRequestTarget, type ClientMessage, WATCH_PATH, WatchCloseCode, WatchProtocolError } from '../api/index.js';
import { requireReadPrefix, seesChain, type Principal } from '../auth/index.js';

/** What the hub reads from the node's store (a `Store` satisfies it). */
export interface WatchSource {
  head(): ChainHead;
  /**
   * Verified log records from `fromSeq`; none when fromSeq is no longer retained (or not yet written). Throws
   * DATA_CORRUPTED on a damaged record (so do snapshot pages): the machine ends the subscriptions that met it.
   */
  readLog(fromSeq: number, limit: number): EncodedEntry[];
  /** `reservation`: one of the node's snapshot readers, taken from `snapshotReaders` first. */
  openSnapshot(ranges: readonly KeyRange[] | undefined, reservation: SnapshotReservation): SnapshotReader;
  readonly snapshotReaders: { tryReserve(whenBusy: 'refuse' | 'wait'): SnapshotReservation | undefined };
}

export interface WatchHubOptions {
  readonly store: WatchSource;
  readonly clock: Clock;
  readonly metrics: Registry;
  readonly logger: Logger;
  /** This node is the root: a subscription past its head is from another chain (`WatchMachineOptions.root`). */
  readonly root?: boolean;
  /** Overrides of `WATCH_LIMITS` (tests pass `WATCH_LIMITS_TEST`); the result is validated. */
  readonly limits?: Partial<WatchLimits>;
  /**
   * Why an upgrade request must be refused (a foreign Origin, an unexpected Host: the node's request policy), or
   * undefined to accept it. Its status and message are answered in the JSON error form.
   */
  readonly refuseUpgrade?: (req: IncomingMessage) => { readonly code: string; readonly message: string; readonly status: number } | undefined;
  /**
   * Who an upgrade request is (src/auth/): throws UNAUTHENTICATED (answered 401 before the upgrade); undefined when
   * auth is off. Absent: every watch is allowed.
   */
  readonly authenticate?: (req: IncomingMessage) => Principal | undefined;
  /**
   * A principal that authenticated earlier as its token stands now (src/auth/guard.ts `current`): throws
   * UNAUTHENTICATED once its credential was replaced. Absent: a connection whose token was given another grant is
   * closed.
   */
  readonly current?: (principal: Principal) => Principal | undefined;
  /** Where connections reserve what they hold of incomplete messages (the node's request-body budget); absent: not counted. */
  readonly heldBudget?: HeldBytesBudget;
}

/** One watcher's connection: its WebSocket, and what the hub and the machine know it by. */
class WsConnection extends ServerWebSocket implements WatchConnection {
  constructor(
    owner: ServerWebSocketOwner,
    socket: Duplex,
    readonly id: number,
    /**
     * Whom the upgrade authenticated (undefined: auth off); each subscription is checked against its read scopes. The
     * token's grant as it is now, once it was replaced by one that still allows every subscription (`regranted`).
     */
    public principal: Principal | undefined,
  ) {
    super(owner, socket);
  }
}

/** Every prefix of a watch must lie inside one of the token's read prefixes (a wider one is refused, not clipped). */
function requireWatchPrefixes(principal: Principal | undefined, prefixes: readonly Buffer[]): void {
  for (const prefix of prefixes) requireReadPrefix(principal, prefix, 'watch');
}

/** Answers a request this hub took from node:http with a JSON error (`status`: "404 Not Found"), then closes. */
function endWithError(socket: Duplex, status: string, code: string, message: string, headers = ''): void {
  const body = JSON.stringify({ error: { code, message } });
  socket.end(`HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${headers}connection: close\r\n\r\n${body}`, () =>
    socket.destroy(),
  );
}

export class WatchHub {
  readonly limits: WatchLimits;
  private readonly store: WatchSource;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly refuseUpgrade: WatchHubOptions['refuseUpgrade'];
  /** What every WebSocket reports to: one object for all connections. */
  private readonly owner: ServerWebSocketOwner;
  private readonly machine: WatchMachine;
  private readonly snapshots = new Map<number, SnapshotReader>();
  /** Snapshot readers the machine reserved (reserveSnapshot) for the openSnapshot actions it is about to make, in order. */
  private readonly reservedSnapshots: SnapshotReservation[] = [];
  /** Snapshots the machine asked for that could not be opened (no LMDB reader free), until it releases them. */
  private readonly unopenedSnapshots = new Map<number, MercuryError>();
  private lastConnId = 0;
  private readonly timer: TickTimer;
  private server: Server | undefined;
  private closed = false;
  /** Resolves `close()` once the last connection is gone. */
  private allClosed: (() => void) | undefined;
  /** Entries published and not yet fanned out (see `publish`). */
  private unpublished: (EncodedEntry | Entry)[] = [];
  private readonly onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => this.upgrade(req, socket, head);
  private readonly authenticate: ((req: IncomingMessage) => Principal | undefined) | undefined;
  private readonly current: ((principal: Principal) => Principal | undefined) | undefined;

  constructor(options: WatchHubOptions) {
    this.limits = validateWatchLimits({ ...WATCH_LIMITS, ...options.limits });
    this.store = options.store;
    this.clock = options.clock;
    this.logger = options.logger;
    this.refuseUpgrade = options.refuseUpgrade;
    this.authenticate = options.authenticate;
    this.current = options.current;
    this.timer = new TickTimer(this.clock, () => {
      if (!this.closed) this.perform(this.machine.tick(this.clock.monotonicMs()));
    });
    const logger = this.logger;
    this.owner = {
      clock: this.clock,
      closeTimeoutMs: this.limits.closeTimeoutMs,
      frameTimeoutMs: this.limits.frameTimeoutMs,
      messageBytesMax: this.limits.clientMessageBytesMax,
      heldBudget: options.heldBudget,
      queueBytesMax: this.limits.queueBytesMax,
      message: (socket, data, isBinary) => this.receive(socket as WsConnection, data, isBinary),
      drained: (socket) => this.drained(socket as WsConnection),
      closed: (socket) => this.connectionClosed(socket as WsConnection),
      // Protocol violations (oversized or invalid frames: the close code is sent) and socket errors end here.
      failed: (_socket, message, code) => logger.log('debug', 'watch connection error', { error: message, code }),
    };
    const registry = options.metrics;
    const eventsSent = registry.counter('mercury_watch_events_sent_total', 'Watch events sent (an events message carries all events of one entry).');
    const messagesSent = registry.counter('mercury_watch_messages_sent_total', 'Watch messages sent, by type.');
    const catchups = registry.counter('mercury_watch_catchups_total', 'Times a subscription was served from the log on disk (it started behind, or its queue was full).');
    const snapshots = registry.counter('mercury_watch_snapshots_total', 'Snapshots sent because a subscription started before the retained log.');
    const slowCloses = registry.counter('mercury_watch_slow_closes_total', 'Connections closed with 4008 (slow watcher).');
    const silentCloses = registry.counter(
      'mercury_watch_silent_closes_total',
      `Connections closed with 4408: nothing, not even a pong, came from the client for ${this.limits.peerSilentMs} ms (its network vanished).`,
    );
    const refused = registry.counter(
      'mercury_watch_refused_total',
      'Client messages refused, by error code (BINARY_FRAME: closed 1003; INTERNAL: the node failed handling it, closed 1011).',
    );
    const labels = new Map<string, { type: string }>();
    const counters: WatchCounters = {
      sent(type, messages, events) {
        let label = labels.get(type);
        if (label === undefined) labels.set(type, (label = { type }));
        messagesSent.inc(messages, label);
        if (events > 0) eventsSent.inc(events);
      },
      catchup: () => catchups.inc(),
      snapshot: () => snapshots.inc(),
      slowClose: () => slowCloses.inc(),
      silentClose: () => silentCloses.inc(),
      refused: (code) => refused.inc(1, { code }),
    };
    this.machine = new WatchMachine({
      reads: {
        readLog: (fromSeq, limitEntries) => {
          try {
            return this.store.readLog(fromSeq, limitEntries);
          } catch (error) {
            throw readersFull(error) ?? error;
          }
        },
        snapshotPage: (snapshotId, pageBytes) => {
          const reader = this.snapshots.get(snapshotId);
          if (reader === undefined) throw this.unopenedSnapshots.get(snapshotId) ?? assert.fail(`watch snapshot ${snapshotId} is not open`);
          return { seq: reader.seq, hash: reader.hash, records: reader.nextPage(pageBytes) };
        },
        reserveSnapshot: () => {
          // A watch waits for a reader (the machine asks again later): not a refusal.
          const reservation = this.store.snapshotReaders.tryReserve('wait');
          if (reservation === undefined) return false;
          this.reservedSnapshots.push(reservation);
          return true;
        },
      },
      headSeq: options.store.head().seq,
      headHash: options.store.head().hash,
      root: options.root,
      nowMs: this.clock.monotonicMs(),
      limits: this.limits,
      counters,
    });
    registry.gauge('mercury_watch_connections', 'Open watch connections.', () => this.machine.connectionCount);
    registry.gauge('mercury_watch_subscriptions', 'Watch subscriptions (watchers).', () => this.machine.subscriptions);
    registry.gauge('mercury_watch_subscriptions_lagging', 'Watch subscriptions in catch-up or snapshot.', () => this.machine.laggingSubscriptions);
    registry.gauge(
      'mercury_watch_queued_bytes',
      `Bytes queued on watch connections, not yet taken by the kernel (a message shared by several counted for each; mercury_watch_queue_budget_bytes counts it once).`,
      () => this.machine.queuedBytes,
    );
    registry.gauge(
      'mercury_watch_queue_budget_bytes',
      `The watch queues' bytes as their budget counts them, a shared events body once however many connections hold it: a message that would take a connection past ${this.limits.queueBytesShareMax} is queued only while this stays within ${this.limits.queueBytesTotalMax}, else it is served from the log (record 85).`,
      () => this.machine.queueBudgetBytes,
    );
    registry.gauge(
      'mercury_watch_prefix_bytes',
      `Bytes of prefixes all watch subscriptions hold, each counted at least ${this.limits.subscriptionBytesMin}; past ${this.limits.prefixBytesMax}, or an address's share, a subscribe is refused TOO_MANY_PREFIXES.`,
      () => this.machine.prefixBytes,
    );
    this.schedule();
  }

  /** What `/v1/status` shows of the watches: the numbers of the gauges above. */
  counts(): { connections: number; subscriptions: number; laggingSubscriptions: number } {
    return { connections: this.machine.connectionCount, subscriptions: this.machine.subscriptions, laggingSubscriptions: this.machine.laggingSubscriptions };
  }

  /** Subscriptions due a snapshot that wait for one to be opened (no slot, or no reader of the node's budget free). */
  get waitingSnapshots(): number {
    return this.machine.waitingSnapshots;
  }

  /** Serves `/v1/watch` on the node's HTTP server; other upgrade requests are answered 404. */
  attach(server: Server): void {
    assert.ok(this.server === undefined, 'the watch hub is attached once');
    this.server = server;
    server.on('upgrade', this.onUpgrade);
  }

  /**
   * Hands the hub entries this node has applied, in seq order (the root's committer, or a replica's apply loop). The
   * fan-out runs on the check phase of this event-loop turn, not at once: the committer resolves its writes before it
   * publishes, and their acknowledgements (and a replica's apply acknowledgement) are written in the microtasks that
   * follow, instead of waiting behind a write to every watcher's socket (about 300 ms for 17,000 watchers here, see
   * decision 32). Entries published meanwhile join the same fan-out, in order.
   */
  publish(entries: readonly (EncodedEntry | Entry)[]): void {
    if (this.closed || entries.length === 0) return;
    for (const entry of entries) this.unpublished.push(entry);
    if (this.unpublished.length === entries.length) setImmediate(this.publishNow);
  }

  /** Fans out what `publish` queued (the machine ignores entries it has already seen, and closes nothing here). */
  private readonly publishNow = (): void => {
    const entries = this.unpublished;
    this.unpublished = [];
    if (this.closed || entries.length === 0) return;
    this.perform(this.machine.published(this.clock.monotonicMs(), entries));
  };

  /** This node installed a snapshot at `seq`: every watcher is reset to the new state now (see the machine). */
  chainReplaced(seq: number): void {
    if (this.closed) return;
    this.publishNow(); // entries applied before the snapshot go out first, as they would have without the deferral
    const head = this.store.head();
    assert.equal(head.seq, seq, 'the watch hub hears of an installed snapshot before any entry after it is applied');
    this.perform(this.machine.chainReplaced(this.clock.monotonicMs(), seq, head.hash));
  }

  /**
   * Tokens were revoked: every watch opened with one of them is closed with 4401 (CREDENTIAL_REVOKED), so a client
   * cannot keep reading with a token that no longer works. `why`: what ended it (an expiry: "expired at ...").
   */
  revoke(tokenIds: readonly string[], why: (tokenId: string) => string = () => 'was revoked'): void {
    for (const [connection, principal] of this.connectionsOf(tokenIds)) {
      this.logger.log('info', `watch closed: its token ${why(principal.id)}`, { token: principal.id, name: principal.name });
      this.perform(this.machine.expel(this.clock.monotonicMs(), connection.id, WatchCloseCode.CREDENTIAL_REVOKED, `token ${principal.id} ${why(principal.id)}`));
    }
  }

  /**
   * Tokens were given other grants (their records replaced): each watch opened with one of them is checked again, as a
   * read parked on `minSeq` is (src/server/http-io.ts `readSeqOptions`): the token as it is now (`current`: its
   * credential unchanged), then every subscription against the new scopes, as `authorize` checked it. A watch the new
   * grant still allows goes on under it, and later subscriptions are checked against it (decision 57): an operator
   * widening a token's scopes, or renaming it, does not make its watchers reconnect. A subscription keeps what it was
   * subscribed with: one admitted without hashes (its token could not see the chain) is still sent none after a
   * widening; subscribe again for them. A watch the new grant no longer allows (a prefix narrowed away, the chain's
   * hashes no longer visible, a new secret or subject) is closed with 4409 (CREDENTIAL_CHANGED): the client
   * reconnects, and each subscription is checked against the new grant (a token given a new secret is refused at the
   * upgrade: 401 naming the change).
   */
  regranted(tokenIds: readonly string[]): void {
    for (const [connection, principal] of this.connectionsOf(tokenIds)) {
      const refusal = this.regrantRefusal(connection, principal);
      if (refusal === undefined) continue;
      this.logger.log('info', 'watch closed: its token was given a grant that no longer allows it', { token: principal.id, name: principal.name, why: refusal });
      this.perform(this.machine.expel(this.clock.monotonicMs(), connection.id, WatchCloseCode.CREDENTIAL_CHANGED, `token ${principal.id} was given another grant (${refusal}): reconnect`));
    }
  }

  /**
   * The connections opened with one of `tokenIds`, and the principal each was opened as, once the entries applied
   * before the token change have gone out (to these watchers too: their grant was valid for them).
   */
  private connectionsOf(tokenIds: readonly string[]): [WsConnection, Principal][] {
    if (this.closed || tokenIds.length === 0) return [];
    this.publishNow();
    const ids = new Set(tokenIds);
    const found: [WsConnection, Principal][] = [];
    for (const connection of this.machine.ports() as WsConnection[]) {
      const principal = connection.principal;
      if (principal !== undefined && ids.has(principal.id)) found.push([connection, principal]);
    }
    return found;
  }

  /** Why `connection`'s watch no longer stands under its token's new grant, or undefined (then it goes on under it). */
  private regrantRefusal(connection: WsConnection, principal: Principal): string | undefined {
    if (this.current === undefined) return 'its scopes, name, secret or subject changed';
    let now: Principal | undefined;
    try {
      now = this.current(principal);
      for (const selection of this.machine.selections(connection.id)) {
        requireWatchPrefixes(now, selection.prefixes);
        if (selection.hashes && now !== undefined && !seesChain(now)) return 'it no longer sees entry hashes, which this watch is sent';
      }
    } catch (error) {
      if (!isMercuryError(error)) throw error;
      return error.code === 'UNAUTHENTICATED' ? 'a new secret or subject' : 'its scopes no longer cover this watch';
    }
    connection.principal = now;
    return undefined;
  }

  /** Closes every connection with 1001 and stops; resolves once the sockets are closed. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.timer.cancel();
    this.server?.off('upgrade', this.onUpgrade);
    const closing = this.machine.connectionCount === 0 ? Promise.resolve() : new Promise<void>((resolve) => (this.allClosed = resolve));
    this.perform(this.machine.shutdown(this.clock.monotonicMs()));
    // A peer that does not answer the close frame is cut off after closeTimeoutMs (websocket.ts).
    await closing;
  }

  // --- Machine ----------------------------------------------------------------------------------------------------

  private perform(actions: readonly WatchAction[]): void {
    for (const action of actions) {
      switch (action.type) {
        case 'openSnapshot': {
          // The machine reserved it (reserveSnapshot) just before it asked for this snapshot.
          const reservation = this.reservedSnapshots.shift() ?? assert.fail('a watch snapshot is opened with the reader reserved for it');
          try {
            this.snapshots.set(action.snapshotId, this.store.openSnapshot(action.ranges, reservation));
          } catch (error) {
            // LMDB's reader table is full (readers of other processes), or the head record is damaged; the reservation
            // was given back. The machine learns it at its first page: it tries again later, or ends that subscription
            // with DATA_CORRUPTED. Thrown from this timer, it would end the process.
            if (!isReadersFull(error) && !isDataCorrupted(error)) throw error;
            this.unopenedSnapshots.set(action.snapshotId, error);
          }
          break;
        }
        case 'releaseSnapshot':
          this.snapshots.get(action.snapshotId)?.close();
          this.snapshots.delete(action.snapshotId);
          this.unopenedSnapshots.delete(action.snapshotId);
          break;
        case 'log':
          this.logger.log(action.level, action.message, action.fields);
          break;
      }
    }
    this.schedule();
  }

  /** Keeps one timer armed for the machine's next tick. */
  private schedule(): void {
    if (this.closed) return;
    const atMs = this.machine.nextTickMs();
    if (atMs !== Infinity) this.timer.schedule(atMs);
  }

  // --- Connections ------------------------------------------------------------------------------------------------

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    // A malformed target routes nowhere here; refuseUpgrade (the request policy) answers it 400 when the path is ours.
    const path = parseRequestTarget(req.url ?? '/')?.path ?? '';
    // node:http hands here every request that asks for an upgrade, whatever the protocol (`curl --http2` on plain HTTP
    // sends "Upgrade: h2c"); one that is not for a WebSocket is answered as the HTTP/1.1 request it also is.
    if (path !== WATCH_PATH && req.headers.upgrade?.toLowerCase() !== 'websocket' && this.server !== undefined) return this.serveIgnoringUpgrade(req, socket);
    const refused = this.refuseUpgrade?.(req);
    let principal: Principal | undefined;
    let refusal: [string, string, string, string?] | undefined;
    if (path !== WATCH_PATH) refusal = ['404 Not Found', 'NOT_FOUND', `no WebSocket endpoint ${path}; watches are served on ${WATCH_PATH}`];
    else if (this.closed) refusal = ['503 Service Unavailable', 'SHUTTING_DOWN', 'node is shutting down; retry on another node or later'];
    else if (refused !== undefined) refusal = [`${refused.status} ${STATUS_CODES[refused.status]}`, refused.code, refused.message];
    else {
      try {
        principal = this.authenticate?.(req);
      } catch (error) {
        if (!isMercuryError(error)) throw error;
        refusal = [`${error.status} ${STATUS_CODES[error.status]}`, error.code, error.message];
      }
    }
    const handshake = refusal === undefined ? readHandshake(req) : undefined;
    if (handshake !== undefined && 'status' in handshake)
      refusal = [`${handshake.status} ${STATUS_CODES[handshake.status]}`, handshake.status === 405 ? 'METHOD_NOT_ALLOWED' : 'BAD_REQUEST', handshake.message, handshake.headers];
    if (refusal !== undefined || handshake === undefined || 'status' in handshake) {
      const [status, code, message, headers = ''] = refusal ?? assert.fail('a refused upgrade has a reason');
      socket.on('error', () => {}); // the client may be gone already; nothing to do about it
      endWithError(socket, status, code, message, headers);
      return;
    }
    socket.write(handshakeResponse(handshake));
    const connection = new WsConnection(this.owner, socket, ++this.lastConnId, principal);
    connection.start(head);
    this.perform(this.machine.opened(this.clock.monotonicMs(), connection.id, connection, hostSlotKey(req.socket.remoteAddress)));
  }

  /**
   * Serves a request whose Upgrade this node does not speak as a plain request (RFC 9110 lets a server ignore it), by the
   * server's own request listener, then closes the connection: node:http has let go of it. A request with a body is
   * refused instead, its bytes having left node:http's parser with the upgrade.
   */
  private serveIgnoringUpgrade(req: IncomingMessage, socket: Duplex): void {
    socket.on('error', () => socket.destroy());
    if (req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0') {
      const message = `this node does not speak "Upgrade: ${String(req.headers.upgrade).slice(0, 40)}"; send the request without the Upgrade header`;
      endWithError(socket, `400 ${STATUS_CODES[400]}`, 'BAD_REQUEST', message);
      return;
    }
    const res = new ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket as Socket);
    res.once('finish', () => {
      res.detachSocket(socket as Socket);
      socket.end();
    });
    this.server!.emit('request', req, res);
  }

  private receive(connection: WsConnection, data: Buffer, isBinary: boolean): void {
    let input: WatchInput;
    if (isBinary) input = { type: 'binary' };
    else {
      const text = data.toString('utf8');
      try {
        input = parseClientMessage(text, this.limits);
        if (input.type === 'subscribe' && connection.principal !== undefined) input = this.authorize(connection.principal, input);
      } catch (error) {
        if (error instanceof WatchProtocolError) input = { type: 'refused', error };
        else {
          // Decoding touches nothing shared, so a bug met there costs this connection only (closed 1011 by the
          // machine). Rethrown from the socket's data handler, it ended the node: one message of a `type` nested
          // 20,000 deep did (audit of 2026-12-06).
          this.logger.log('error', 'watch message failed: its connection is closed (1011)', { connection: connection.id, error: String((error as Error)?.stack ?? error) });
          input = { type: 'failed' };
        }
      }
    }
    this.perform(this.machine.received(this.clock.monotonicMs(), connection.id, input));
  }

  /**
   * Every prefix of a subscription must lie inside one of the token's read prefixes; a wider one is refused. A token
   * that may not see the hash chain (seesChain) gets its messages without hashes, and cannot resume with `afterHash`.
   */
  private authorize(principal: Principal, subscribe: ClientMessage & { type: 'subscribe' }): ClientMessage & { type: 'subscribe' } {
    try {
      requireWatchPrefixes(principal, subscribe.prefixes);
    } catch (error) {
      if (!isMercuryError(error)) throw error;
      throw new WatchProtocolError('PERMISSION_DENIED', error.message, subscribe.idJson);
    }
    if (seesChain(principal)) return subscribe;
    if (subscribe.afterHash !== undefined)
      throw new WatchProtocolError(
        'PERMISSION_DENIED',
        `"afterHash" needs a token that reads every key (read on the empty prefix, replicate or admin): token "${principal.name}" is not shown entry hashes, which would let it test guesses of values outside its scopes; resume with "fromSeq" alone`,
        subscribe.idJson,
      );
    return { ...subscribe, hashes: false };
  }

  private drained(connection: WsConnection): void {
    if (this.closed) return;
    this.perform(this.machine.drained(this.clock.monotonicMs(), connection.id, connection.bufferedBytes));
  }

  private connectionClosed(connection: WsConnection): void {
    this.perform(this.machine.closed(this.clock.monotonicMs(), connection.id));
    if (this.machine.connectionCount === 0) this.allClosed?.();
  }
}

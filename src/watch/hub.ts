/**
 * The watch hub of a node: WebSocket connections (the protocol is specified in src/api/watch.ts), their
 * subscriptions, and the fan-out of applied entries to them.
 *
 * Subscriptions are in one of three conditions, as etcd groups its watchers (synced / unsynced / victims):
 *
 * - **live**: it has everything up to the node's latest seq and takes new entries straight from `publish`. Live
 *   subscriptions with equal selections form a group: an entry's events are matched and encoded once per group, and
 *   the same text (or buffer) goes to every member.
 * - **catch-up**: it is behind, because it asked for an older `fromSeq`, or because its connection's queue was full
 *   (`queueBytesMax`) when an entry came: it then skipped the live fan-out, keeping no copy in memory. A background
 *   pump serves catch-up subscriptions from the log on disk, a bounded read at a time, only while their queues have
 *   room, and moves each back to live once it reaches the latest seq. Subscriptions at the same seq share the read.
 * - **snapshot**: its next seq is older than the retained log, so it is sent the current state of its prefixes
 *   first (one LMDB read transaction, a page per pump round), and continues from the snapshot's seq.
 *
 * A connection whose queue stays full without shrinking for `stallMs` (or whose snapshot takes longer than
 * `snapshotMsMax`) is closed with 4008 after a progress message per subscription, so it can resume exactly. One slow
 * connection costs the others nothing: the live fan-out only checks its queue size and moves on.
 *
 * Positions: `nextSeq` is the first seq a subscription has not been sent. For a live subscription it is a lower
 * bound only (its real position is `liveSeq + 1`, unless it asked for a seq the node has not reached yet), so that the
 * fan-out need not touch the subscriptions an entry does not select.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type ServerOptions, type WebSocket } from 'ws';
import type { Clock, TimerHandle } from '../clock/index.js';
import type { ChainHead, EncodedEntry, Entry } from '../log/index.js';
import type { Logger } from '../logging/index.js';
import type { Counter, Registry } from '../metrics/index.js';
import type { KeyRange, SnapshotReader } from '../store/index.js';
import { validateWatchLimits, WATCH_LIMITS, type WatchLimits } from './limits.js';
import {
  errorMessage,
  eventsBody,
  eventsHead,
  parseClientMessage,
  progressMessage,
  slowWatcherReason,
  snapshotMessage,
  subscribedMessage,
  unsubscribedMessage,
  WATCH_PATH,
  WatchCloseCode,
  WatchProtocolError,
  type ClientMessage,
} from '../api/index.js';
import { canonicalSelection, EventCache, selectEvents, SelectionIndex, selectionRanges, snapshotItemJson, type Selection } from './selection.js';

/** What the hub reads from the node's store (a `Store` satisfies it). */
export interface WatchSource {
  head(): ChainHead;
  /** Verified log records from `fromSeq`; none when fromSeq is no longer retained (or not yet written). */
  readLog(fromSeq: number, limit: number): EncodedEntry[];
  openSnapshot(ranges?: readonly KeyRange[]): SnapshotReader;
}

export interface WatchHubOptions {
  readonly store: WatchSource;
  readonly clock: Clock;
  readonly metrics: Registry;
  readonly logger: Logger;
  /** Overrides of `WATCH_LIMITS` (tests pass `WATCH_LIMITS_TEST`); the result is validated. */
  readonly limits?: Partial<WatchLimits>;
}

type State = 'live' | 'catchup' | 'snapshot';

const CONNECTION = Symbol('watch connection');
type HubSocket = WebSocket & { [CONNECTION]?: Connection };

/** Subscriptions with one selection. `live` holds the members that take entries from the fan-out. */
class Group {
  readonly live = new Set<Subscription>();
  members = 0;
  constructor(readonly selection: Selection) {}
}

class Connection {
  /** Usually one: the array is made with exactly its first element (a pushed-to empty array reserves 17 slots). */
  subscriptions: Subscription[] = [];
  readonly hub: WatchHub;
  /** The hub's tick count when a message was last sent (heartbeats); a small integer costs no heap number. */
  lastSendTick: number;
  /** When the queue was first seen full (-1: it was not), and its size then; a shrinking queue restarts the clock. */
  blockedSinceMs = -1;
  blockedBytes = 0;
  closing = false;
  constructor(
    hub: WatchHub,
    readonly socket: WebSocket,
    tick: number,
  ) {
    this.hub = hub;
    this.lastSendTick = tick;
  }
}

class Subscription {
  state: State = 'live';
  nextSeq: number;
  /** The highest seq the client was told it has everything up to (events, progress, snapshot or subscribed). */
  toldSeq: number;
  /** In state 'snapshot': the open snapshot, or undefined while waiting for a slot (`snapshotsMax`). */
  snapshot: SnapshotReader | undefined;
  snapshotStartedMs = 0;
  constructor(
    readonly connection: Connection,
    /** The client's id as JSON text (1 and "1" are different ids). */
    readonly idJson: string,
    readonly group: Group,
    fromSeq: number,
  ) {
    this.nextSeq = fromSeq;
    this.toldSeq = fromSeq - 1;
  }
}

/**
 * Distinct subscription ids whose whole small events message one SharedBody keeps encoded. Clients mostly number
 * their subscriptions from 1, so thousands of watchers of one prefix share a handful of ids; a fan-out to ids that
 * are all different encodes per watcher, as it would without the cache, and holds no more than this many copies.
 */
const MESSAGE_CACHE_IDS_MAX = 16;

/**
 * An entry's events for one group: the body text is built once, its Buffer only if a message is large. A small
 * message is sent as one Buffer per distinct subscription id: `ws` would otherwise measure and UTF-8-encode the same
 * text again for every socket (in the fan-out to 19,000 watchers that encoding was a tenth of the node's time).
 */
class SharedBody {
  private buffer: Buffer | undefined;
  private readonly messages = new Map<string, Buffer>();
  constructor(
    readonly seq: number,
    readonly text: string,
    readonly eventCount: number,
  ) {}

  bytes(): Buffer {
    this.buffer ??= Buffer.from(this.text, 'utf8');
    return this.buffer;
  }

  /**
   * The whole message for one subscription id as a complete WebSocket frame (server to client: unmasked, FIN, text),
   * framed once per id (up to MESSAGE_CACHE_IDS_MAX ids) and written as it is to every socket that shares it.
   */
  frame(idJson: string): Buffer {
    let frame = this.messages.get(idJson);
    if (frame === undefined) {
      frame = textFrame(Buffer.from(eventsHead(idJson) + this.text, 'utf8'));
      if (this.messages.size < MESSAGE_CACHE_IDS_MAX) this.messages.set(idJson, frame);
    }
    return frame;
  }
}

/** RFC 6455 section 5.2: FIN + opcode 1 (text), no mask, 7/16/64-bit payload length. */
function textFrame(payload: Buffer): Buffer {
  const length = payload.length;
  const headerBytes = length < 126 ? 2 : length < 0x10000 ? 4 : 10;
  const frame = Buffer.allocUnsafe(headerBytes + length);
  frame[0] = 0x81;
  if (length < 126) frame[1] = length;
  else if (length < 0x10000) {
    frame[1] = 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 127;
    frame.writeBigUInt64BE(BigInt(length), 2);
  }
  payload.copy(frame, headerBytes);
  return frame;
}

/** What `ws` keeps private and the fan-out needs: the TCP socket and whether its sender has anything queued. */
interface WsInternals {
  readonly _socket?: Socket;
  readonly _sender?: { readonly _state?: number };
}

/**
 * The socket to write a pre-framed message on directly, or undefined when `ws` must send it itself. `ws` (8.x, pinned)
 * queues inside its sender only while compressing or reading a Blob (`_state` not 0); neither happens here
 * (perMessageDeflate is off, we send Buffers), so a direct write keeps the order of everything sent on the socket.
 */
function rawSocket(socket: WebSocket): Socket | undefined {
  const internals = socket as unknown as WsInternals;
  if (socket.readyState !== socket.OPEN || internals._sender?._state !== 0) return undefined;
  return internals._socket;
}

export class WatchHub {
  readonly limits: WatchLimits;
  private readonly store: WatchSource;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly wss: WebSocketServer;
  private readonly connections = new Set<Connection>();
  private readonly groups = new Map<string, Group>();
  private readonly index = new SelectionIndex<Group>();
  /** Subscriptions in catch-up or snapshot. */
  private readonly lagging = new Set<Subscription>();
  private subscriptionCount = 0;
  private snapshotsOpen = 0;
  /** The last seq published: every live subscription has been sent everything it selects up to here. */
  private liveSeq: number;
  private readEntries: number;
  private pumpTimer: TimerHandle | undefined;
  private pumpRound = 0;
  /** Progress ticks so far: the clock of heartbeats. */
  private ticks = 0;
  private readonly tickTimer: TimerHandle;
  private server: Server | undefined;
  private closed = false;
  private readonly onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => this.upgrade(req, socket, head);
  private readonly metrics: {
    readonly eventsSent: Counter;
    readonly messagesSent: Counter;
    readonly catchups: Counter;
    readonly snapshots: Counter;
    readonly slowCloses: Counter;
    readonly refused: Counter;
  };

  constructor(options: WatchHubOptions) {
    this.limits = validateWatchLimits({ ...WATCH_LIMITS, ...options.limits });
    this.store = options.store;
    this.clock = options.clock;
    this.logger = options.logger;
    this.liveSeq = options.store.head().seq;
    this.readEntries = this.limits.catchupReadEntriesMax;
    // `closeTimeout` exists in ws 8.23 (the peer's time to answer a close frame) but not yet in @types/ws 8.18.
    const serverOptions: ServerOptions & { closeTimeout: number } = {
      noServer: true,
      // Compression costs tens of KiB of zlib state per connection; an idle watcher must stay at a few KiB.
      perMessageDeflate: false,
      maxPayload: this.limits.clientMessageBytesMax,
      clientTracking: false,
      closeTimeout: this.limits.closeTimeoutMs,
    };
    this.wss = new WebSocketServer(serverOptions);
    const registry = options.metrics;
    this.metrics = {
      eventsSent: registry.counter('mercury_watch_events_sent_total', 'Watch events sent (an events message carries all events of one entry).'),
      messagesSent: registry.counter('mercury_watch_messages_sent_total', 'Watch messages sent, by type.'),
      catchups: registry.counter('mercury_watch_catchups_total', 'Times a subscription was served from the log on disk (it started behind, or its queue was full).'),
      snapshots: registry.counter('mercury_watch_snapshots_total', 'Snapshots sent because a subscription started before the retained log.'),
      slowCloses: registry.counter('mercury_watch_slow_closes_total', 'Connections closed with 4008 (slow watcher).'),
      refused: registry.counter('mercury_watch_refused_total', 'Client messages refused, by error code.'),
    };
    registry.gauge('mercury_watch_connections', 'Open watch connections.', () => this.connections.size);
    registry.gauge('mercury_watch_subscriptions', 'Watch subscriptions (watchers).', () => this.subscriptionCount);
    registry.gauge('mercury_watch_subscriptions_lagging', 'Watch subscriptions in catch-up or snapshot.', () => this.lagging.size);
    this.tickTimer = this.clock.setInterval(() => this.tick(), this.limits.progressIntervalMs);
  }

  /** Serves `/v1/watch` on the node's HTTP server; other upgrade requests are answered 404. */
  attach(server: Server): void {
    assert.ok(this.server === undefined, 'the watch hub is attached once');
    this.server = server;
    server.on('upgrade', this.onUpgrade);
  }

  /**
   * Hands the hub entries this node has applied, in seq order (the root's committer, or a replica's apply loop).
   * Entries already published are ignored. A gap (a replica that installed a snapshot) moves every live
   * subscription to catch-up, where it finds the log no longer reaches back and gets a snapshot.
   */
  publish(entries: readonly (EncodedEntry | Entry)[]): void {
    if (this.closed) return;
    for (const item of entries) {
      const entry = 'entry' in item ? item.entry : item;
      if (entry.seq <= this.liveSeq) continue;
      if (entry.seq !== this.liveSeq + 1) this.skipTo(entry.seq - 1);
      this.liveSeq = entry.seq;
      this.fanOut(entry);
    }
    if (this.lagging.size > 0) this.schedulePump(0);
  }

  /** Closes every connection with 1001 and stops; resolves once the sockets are closed. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.tickTimer.cancel();
    this.pumpTimer?.cancel();
    this.pumpTimer = undefined;
    this.server?.off('upgrade', this.onUpgrade);
    const closing = Array.from(this.connections, (connection) => {
      const socket = connection.socket;
      const closed = new Promise<void>((resolve) => {
        if (socket.readyState === socket.CLOSED) resolve();
        else socket.once('close', () => resolve());
      });
      this.closeConnection(connection, WatchCloseCode.GOING_AWAY, 'node is shutting down; reconnect and resume');
      return closed;
    });
    // ws destroys a socket whose peer does not answer the close frame within closeTimeoutMs.
    await Promise.all(closing);
    this.wss.close();
  }

  // --- Connections ------------------------------------------------------------------------------------------------

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = req.url ?? '/';
    const queryAt = url.indexOf('?');
    const path = queryAt === -1 ? url : url.slice(0, queryAt);
    if (path !== WATCH_PATH || this.closed) {
      const [status, code, message] =
        path !== WATCH_PATH
          ? ['404 Not Found', 'NOT_FOUND', `no WebSocket endpoint ${path}; watches are served on ${WATCH_PATH}`]
          : ['503 Service Unavailable', 'SHUTTING_DOWN', 'node is shutting down; retry on another node or later'];
      const body = JSON.stringify({ error: { code, message } });
      socket.on('error', () => {}); // the client may be gone already; nothing to do about it
      socket.end(`HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`, () =>
        socket.destroy(),
      );
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws));
  }

  private accept(socket: WebSocket): void {
    if (this.closed) {
      socket.close(WatchCloseCode.GOING_AWAY, 'node is shutting down; reconnect and resume');
      return;
    }
    const connection = new Connection(this, socket, this.ticks);
    this.connections.add(connection);
    // Shared listeners that find their connection on the socket: no closures per connection (memory per idle watcher).
    (socket as HubSocket)[CONNECTION] = connection;
    /* eslint-disable @typescript-eslint/unbound-method -- ws calls each with the socket as `this`, which they expect */
    socket.on('message', WatchHub.onSocketMessage);
    socket.on('close', WatchHub.onSocketClose);
    socket.on('error', WatchHub.onSocketError);
    /* eslint-enable @typescript-eslint/unbound-method */
  }

  // Function expressions (not arrows): ws calls them with the socket as `this`.
  private static readonly onSocketMessage = function (this: HubSocket, data: RawData, isBinary: boolean): void {
    const connection = this[CONNECTION]!;
    connection.hub.receive(connection, data, isBinary);
  };

  private static readonly onSocketClose = function (this: HubSocket): void {
    const connection = this[CONNECTION]!;
    connection.hub.dropSubscriptions(connection);
    connection.hub.connections.delete(connection);
  };

  /** Protocol violations (oversized or invalid frames) end here after ws has sent its close code. */
  private static readonly onSocketError = function (this: HubSocket, error: Error & { code?: string }): void {
    this[CONNECTION]!.hub.logger.log('debug', 'watch connection error', { error: error.message, code: error.code });
  };

  private receive(connection: Connection, data: RawData, isBinary: boolean): void {
    if (connection.closing) return;
    if (isBinary) {
      this.metrics.refused.inc(1, { code: 'BINARY_FRAME' });
      this.closeConnection(connection, WatchCloseCode.UNSUPPORTED_DATA, 'binary frames are not accepted; send JSON text frames');
      return;
    }
    const text = (Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)).toString('utf8');
    let message: ClientMessage;
    try {
      message = parseClientMessage(text, this.limits);
      if (message.type === 'subscribe') this.subscribe(connection, message);
      else this.unsubscribe(connection, message.idJson);
    } catch (error) {
      if (!(error instanceof WatchProtocolError)) throw error;
      this.metrics.refused.inc(1, { code: error.code });
      this.reply(connection, errorMessage(error.code, error.message, error.idJson), 'error');
    }
  }

  /** Sends an answer to a client request; a client that keeps sending without reading is a slow watcher. */
  private reply(connection: Connection, text: string, type: string): void {
    if (!this.hasRoom(connection, this.clock.monotonicMs())) {
      this.slowClose(connection, 'requests sent while the replies queue is full');
      return;
    }
    this.send(connection, text, type);
  }

  private send(connection: Connection, text: string, type: string): void {
    connection.socket.send(text);
    connection.lastSendTick = this.ticks;
    this.metrics.messagesSent.inc(1, { type });
  }

  /** Room in the connection's queue; also tracks since when it has been full (see tick). */
  private hasRoom(connection: Connection, nowMs: number): boolean {
    const buffered = connection.socket.bufferedAmount;
    if (buffered < this.limits.queueBytesMax) {
      connection.blockedSinceMs = -1;
      return true;
    }
    if (connection.blockedSinceMs < 0) {
      connection.blockedSinceMs = nowMs;
      connection.blockedBytes = buffered;
    }
    return false;
  }

  private closeConnection(connection: Connection, code: number, reason: string): void {
    if (connection.closing) return;
    connection.closing = true;
    this.dropSubscriptions(connection);
    connection.socket.close(code, reason);
  }

  /** Closes a connection that cannot keep up, after telling each subscription exactly where to resume. */
  private slowClose(connection: Connection, why: string): void {
    if (connection.closing) return;
    const resume: number[] = [];
    for (const subscription of connection.subscriptions) {
      const done = this.position(subscription) - 1;
      // A subscription in a snapshot resumes from where it started (it gets a new snapshot); the client knows that seq.
      if (subscription.state !== 'snapshot') connection.socket.send(progressMessage(subscription.idJson, done));
      resume.push(done + 1);
    }
    this.metrics.slowCloses.inc();
    this.logger.log('info', 'watch connection closed: slow watcher', { why, subscriptions: resume.length, queuedBytes: connection.socket.bufferedAmount });
    this.closeConnection(connection, WatchCloseCode.SLOW_WATCHER, slowWatcherReason(resume.length === 1 ? resume[0] : undefined));
  }

  // --- Subscriptions ----------------------------------------------------------------------------------------------

  private subscribe(connection: Connection, message: ClientMessage & { type: 'subscribe' }): void {
    if (connection.subscriptions.some((subscription) => subscription.idJson === message.idJson))
      throw new WatchProtocolError('DUPLICATE_ID', `subscription ${message.idJson} exists on this connection; unsubscribe first or pick another id`, message.idJson);
    if (connection.subscriptions.length >= this.limits.subscriptionsPerConnectionMax)
      throw new WatchProtocolError(
        'TOO_MANY_SUBSCRIPTIONS',
        `this connection has ${connection.subscriptions.length} subscriptions, the most one connection may hold; put several prefixes in one subscription, or open another connection`,
        message.idJson,
      );
    const selection = canonicalSelection(message.prefixes, message.filters);
    let group = this.groups.get(selection.key);
    if (group === undefined) {
      group = new Group(selection);
      this.groups.set(selection.key, group);
      this.index.add(group);
    }
    const fromSeq = message.fromSeq ?? this.liveSeq + 1;
    const subscription = new Subscription(connection, message.idJson, group, fromSeq);
    group.members++;
    if (connection.subscriptions.length === 0) connection.subscriptions = [subscription];
    else connection.subscriptions.push(subscription);
    this.subscriptionCount++;
    this.reply(connection, subscribedMessage(message.idJson, fromSeq), 'subscribed');
    if (connection.closing) return;
    if (fromSeq <= this.liveSeq) {
      this.toCatchup(subscription, fromSeq);
      this.schedulePump(0);
    } else group.live.add(subscription);
  }

  private unsubscribe(connection: Connection, idJson: string): void {
    const subscription = connection.subscriptions.find((candidate) => candidate.idJson === idJson);
    if (subscription === undefined) throw new WatchProtocolError('UNKNOWN_ID', `no subscription ${idJson} on this connection`, idJson);
    this.remove(subscription);
    connection.subscriptions.splice(connection.subscriptions.indexOf(subscription), 1);
    this.reply(connection, unsubscribedMessage(idJson), 'unsubscribed');
  }

  private dropSubscriptions(connection: Connection): void {
    for (const subscription of connection.subscriptions) this.remove(subscription);
    connection.subscriptions.length = 0;
  }

  /** Detaches a subscription from the hub (not from its connection's list). */
  private remove(subscription: Subscription): void {
    const group = subscription.group;
    group.live.delete(subscription);
    this.lagging.delete(subscription);
    this.closeSnapshot(subscription);
    this.subscriptionCount--;
    if (--group.members === 0) {
      this.groups.delete(group.selection.key);
      this.index.remove(group);
    }
  }

  /** The first seq a subscription has not been sent. */
  private position(subscription: Subscription): number {
    return subscription.state === 'live' ? Math.max(subscription.nextSeq, this.liveSeq + 1) : subscription.nextSeq;
  }

  private toCatchup(subscription: Subscription, nextSeq: number): void {
    subscription.group.live.delete(subscription);
    subscription.state = 'catchup';
    subscription.nextSeq = nextSeq;
    this.lagging.add(subscription);
    this.metrics.catchups.inc();
  }

  private toLive(subscription: Subscription): void {
    this.lagging.delete(subscription);
    subscription.state = 'live';
    subscription.group.live.add(subscription);
  }

  /** Entries up to `seq` were applied but not published: live subscriptions that have not passed it fall behind. */
  private skipTo(seq: number): void {
    for (const group of this.groups.values())
      for (const subscription of group.live) {
        const position = this.position(subscription);
        if (position <= seq) this.toCatchup(subscription, position);
      }
    this.liveSeq = seq;
  }

  // --- Live fan-out ------------------------------------------------------------------------------------------------

  private fanOut(entry: Entry): void {
    if (this.subscriptionCount === this.lagging.size) return;
    const nowMs = this.clock.monotonicMs();
    let events = 0;
    let messages = 0;
    for (const [group, selected] of this.index.match(entry, (candidate) => candidate.live.size > 0)) {
      const body = new SharedBody(entry.seq, eventsBody(entry.seq, entry.timeMs, selected), selected.length);
      for (const subscription of group.live) {
        if (subscription.nextSeq > entry.seq) continue; // asked to start at a later seq
        if (!this.hasRoom(subscription.connection, nowMs)) {
          // Deleting the current member while iterating a Set is safe.
          this.toCatchup(subscription, entry.seq);
          continue;
        }
        this.sendEvents(subscription, body);
        events += body.eventCount;
        messages++;
      }
    }
    if (messages > 0) {
      this.metrics.eventsSent.inc(events);
      this.metrics.messagesSent.inc(messages, { type: 'events' });
    }
  }

  private sendEvents(subscription: Subscription, body: SharedBody): void {
    const connection = subscription.connection;
    if (body.text.length >= this.limits.sharedFragmentBytesMin) {
      // Two fragments of one message: the shared body is written to every socket without a copy.
      connection.socket.send(eventsHead(subscription.idJson), { binary: false, fin: false });
      connection.socket.send(body.bytes(), { binary: false, fin: true });
    } else {
      // Writing the frame framed once, instead of asking ws to frame it per socket, is most of the fan-out's user time.
      const frame = body.frame(subscription.idJson);
      const raw = rawSocket(connection.socket);
      if (raw !== undefined) raw.write(frame);
      else connection.socket.send(frame.subarray(frame[1] === 127 ? 10 : frame[1] === 126 ? 4 : 2), { binary: false });
    }
    connection.lastSendTick = this.ticks;
    subscription.toldSeq = body.seq;
  }

  // --- Catch-up and snapshots -------------------------------------------------------------------------------------

  private schedulePump(delayMs: number): void {
    if (this.pumpTimer !== undefined || this.closed) return;
    this.pumpTimer = this.clock.setTimeout(() => {
      this.pumpTimer = undefined;
      this.pump();
    }, delayMs);
  }

  /**
   * One round of catch-up: a page of snapshot for each subscription in a snapshot, then one log read per distinct
   * position of the catch-up subscriptions, while the round's byte budget lasts. Only subscriptions whose queue has
   * room take part; the others wait for the next round.
   */
  private pump(): void {
    if (this.closed) return;
    const nowMs = this.clock.monotonicMs();
    let budget = this.limits.catchupRoundBytesMax;
    let progressed = false;
    const positions = new Map<number, Subscription[]>();
    for (const subscription of Array.from(this.lagging)) {
      if (subscription.connection.closing) continue;
      if (subscription.state === 'snapshot') {
        if (budget <= 0 || !this.hasRoom(subscription.connection, nowMs)) continue;
        if (subscription.snapshot === undefined && !this.openSnapshot(subscription, nowMs)) continue;
        budget -= this.sendSnapshotPage(subscription);
        progressed = true;
        continue;
      }
      if (!this.hasRoom(subscription.connection, nowMs)) continue;
      const list = positions.get(subscription.nextSeq);
      if (list === undefined) positions.set(subscription.nextSeq, [subscription]);
      else list.push(subscription);
    }
    // Rotate the starting position between rounds, so that a budget spent early does not always favour the same seqs.
    const seqs = Array.from(positions.keys());
    const first = seqs.length === 0 ? 0 : this.pumpRound++ % seqs.length;
    for (let i = 0; i < seqs.length && budget > 0; i++) {
      const seq = seqs[(first + i) % seqs.length]!;
      const spent = this.catchUp(positions.get(seq)!, seq, nowMs);
      if (spent > 0) progressed = true;
      budget -= spent;
    }
    if (this.lagging.size > 0) this.schedulePump(progressed ? 0 : this.limits.catchupPollMs);
  }

  /** Serves subscriptions all at `seq` from one log read; returns the record bytes read (or 1 if it changed state). */
  private catchUp(subscriptions: Subscription[], seq: number, nowMs: number): number {
    if (seq > this.liveSeq) {
      for (const subscription of subscriptions) this.toLive(subscription);
      return 1;
    }
    const records = this.store.readLog(seq, this.readEntries);
    if (records.length === 0) {
      // Trimmed (or, on a replica after a snapshot install, never written here): send the current state instead.
      for (const subscription of subscriptions) this.toSnapshot(subscription);
      return 1;
    }
    let bytes = 0;
    let sent = 0;
    let events = 0;
    for (const { entry, record } of records) {
      if (entry.seq > this.liveSeq) break; // not published yet: the fan-out will bring it
      bytes += record.length;
      const cache = new EventCache(entry);
      const bodies = new Map<Group, SharedBody | null>();
      for (const subscription of subscriptions) {
        if (subscription.nextSeq !== entry.seq || subscription.state !== 'catchup') continue; // stopped earlier
        if (!this.hasRoom(subscription.connection, nowMs)) continue;
        let body = bodies.get(subscription.group);
        if (body === undefined) {
          const selected = selectEvents(entry, subscription.group.selection, cache);
          body = selected.length === 0 ? null : new SharedBody(entry.seq, eventsBody(entry.seq, entry.timeMs, selected), selected.length);
          bodies.set(subscription.group, body);
        }
        if (body !== null) {
          this.sendEvents(subscription, body);
          sent++;
          events += body.eventCount;
        }
        subscription.nextSeq = entry.seq + 1;
      }
    }
    // Aim the next read at about catchupReadBytesTarget, from the size of the entries just read.
    const average = bytes / Math.max(1, records.length);
    this.readEntries = Math.max(1, Math.min(this.limits.catchupReadEntriesMax, Math.floor(this.limits.catchupReadBytesTarget / Math.max(1, average))));
    for (const subscription of subscriptions)
      if (subscription.state === 'catchup' && subscription.nextSeq === this.liveSeq + 1) this.toLive(subscription);
    if (sent > 0) {
      this.metrics.eventsSent.inc(events);
      this.metrics.messagesSent.inc(sent, { type: 'events' });
    }
    return Math.max(1, bytes);
  }

  private toSnapshot(subscription: Subscription): void {
    subscription.state = 'snapshot';
    subscription.snapshot = undefined;
    this.metrics.snapshots.inc();
  }

  /** Takes a snapshot slot if one is free. */
  private openSnapshot(subscription: Subscription, nowMs: number): boolean {
    if (this.snapshotsOpen >= this.limits.snapshotsMax) return false;
    subscription.snapshot = this.store.openSnapshot(selectionRanges(subscription.group.selection));
    subscription.snapshotStartedMs = nowMs;
    this.snapshotsOpen++;
    return true;
  }

  private closeSnapshot(subscription: Subscription): void {
    if (subscription.snapshot === undefined) return;
    subscription.snapshot.close();
    subscription.snapshot = undefined;
    this.snapshotsOpen--;
  }

  /** Sends the next page (the last one with done: true) and returns its key and value bytes. */
  private sendSnapshotPage(subscription: Subscription): number {
    const reader = subscription.snapshot!;
    const records = reader.nextPage(this.limits.snapshotPageBytes);
    const keysOnly = subscription.group.selection.filters.keysOnly;
    const done = records.length === 0;
    const connection = subscription.connection;
    connection.socket.send(snapshotMessage(subscription.idJson, reader.seq, records.map((record) => snapshotItemJson(record, keysOnly)), done));
    connection.lastSendTick = this.ticks;
    this.metrics.messagesSent.inc(1, { type: 'snapshot' });
    let bytes = 1;
    for (const record of records) bytes += record.key.length + record.value.length;
    if (done) {
      const seq = reader.seq;
      this.closeSnapshot(subscription);
      subscription.toldSeq = seq;
      subscription.state = 'catchup';
      subscription.nextSeq = seq + 1;
      // The snapshot may be ahead of the last published seq (a replica applies before it publishes): live then waits.
      if (seq + 1 >= this.liveSeq + 1) this.toLive(subscription);
    }
    return bytes;
  }

  // --- Progress, heartbeats, stalls -------------------------------------------------------------------------------

  private tick(): void {
    this.ticks++;
    const nowMs = this.clock.monotonicMs();
    for (const connection of this.connections) {
      if (connection.closing) continue;
      if (connection.blockedSinceMs >= 0 && this.stalled(connection, nowMs)) {
        this.slowClose(connection, `send queue full and not shrinking for ${this.limits.stallMs} ms`);
        continue;
      }
      if (connection.subscriptions.some((subscription) => subscription.snapshot !== undefined && nowMs - subscription.snapshotStartedMs > this.limits.snapshotMsMax)) {
        this.slowClose(connection, `snapshot not received within ${this.limits.snapshotMsMax} ms`);
        continue;
      }
      const heartbeat = (this.ticks - connection.lastSendTick) * this.limits.progressIntervalMs >= this.limits.heartbeatIntervalMs;
      for (const subscription of connection.subscriptions) {
        if (subscription.state === 'snapshot') continue;
        const done = this.position(subscription) - 1;
        if (done <= subscription.toldSeq && !heartbeat) continue;
        if (!this.hasRoom(connection, nowMs)) break;
        this.send(connection, progressMessage(subscription.idJson, done), 'progress');
        subscription.toldSeq = done;
      }
    }
  }

  /** Whether a full queue has stopped shrinking for stallMs (a queue that shrinks restarts the clock). */
  private stalled(connection: Connection, nowMs: number): boolean {
    const buffered = connection.socket.bufferedAmount;
    if (buffered < this.limits.queueBytesMax) {
      connection.blockedSinceMs = -1;
      return false;
    }
    if (buffered < connection.blockedBytes) {
      connection.blockedSinceMs = nowMs;
      connection.blockedBytes = buffered;
      return false;
    }
    return nowMs - connection.blockedSinceMs >= this.limits.stallMs;
  }
}

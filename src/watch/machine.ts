/**
 * The watch subsystem of a node as a pure state machine: connections, their subscriptions (the protocol is specified
 * in src/api/watch.ts), and the fan-out of applied entries to them. No socket, no timer, no storage, no clock: the
 * adapter (hub.ts, or the simulation) feeds it events, each with the current monotonic time, and performs what it asks.
 *
 * Subscriptions are in one of three conditions, as etcd groups its watchers (synced / unsynced / victims):
 *
 * - **live**: it has everything up to the node's latest seq and takes new entries straight from `published`. Live
 *   subscriptions with equal selections form a group: an entry's events are matched and encoded once per group, and
 *   the same text (or frame) goes to every member.
 * - **catch-up**: it is behind, because it asked for an older `fromSeq`, or because its connection's queue was full
 *   (`queueBytesMax`, or past its share while the queues' budget is spent) when an entry came, or the entry's message
 *   did not fit the budget's room (`fits`, record 85): it then skipped the live fan-out, keeping no copy in memory. The
 *   pump serves catch-up subscriptions from the log, a bounded read at a time, only while their queues have room, and
 *   moves each back to live once it reaches the latest seq. Subscriptions at the same seq share the read.
 * - **snapshot**: its next seq is older than the retained log, so it is sent the current state of its prefixes
 *   first (a page per pump round), and continues from the snapshot's seq. Also a **reset**, after events on the same
 *   connection (src/api/watch.ts, docs/decisions.md record 40): the log it was served from was trimmed while it
 *   lagged, or this node's chain was replaced (`chainReplaced`: every subscription, since what it was sent above the
 *   installed seq may belong to an abandoned chain), or, on the root, it asked for a seq past the head, or its
 *   `afterHash` is not the hash of this node's entry fromSeq - 1 (the client followed another chain: record 45).
 *
 * A connection whose queue stays full without shrinking for `stallMs` (or whose snapshot takes longer than
 * `snapshotMsMax`) is closed with 4008 after a progress message per subscription, so it can resume exactly. One slow
 * connection costs the others nothing: the live fan-out only checks its queue size and moves on.
 *
 * Chain check (`afterHash`): a subscription resuming with the hash of entry fromSeq - 1 is compared with this node's
 * entry there, where the hash is already at hand, so that nothing is hashed or read for it: the latest published
 * hash when fromSeq - 1 is the node's head; the `prevHash` of entry fromSeq when the catch-up read brings it (it is
 * verified against entry fromSeq - 1, or the log's base when that one was trimmed); the published entry itself when a
 * replica gets there later (`hashChecks`, by seq, looked at only once an entry reaches the lowest awaited seq). A
 * different hash resets the subscription with a snapshot; so does a log that no longer holds entry fromSeq.
 *
 * Positions: `nextSeq` is the first seq a subscription has not been sent. For a live subscription it is a lower
 * bound only (its real position is `liveSeq + 1`, unless it asked for a seq the node has not reached yet), so that the
 * fan-out need not touch the subscriptions an entry does not select.
 *
 * ## The adapter contract
 *
 * - Events: `opened` (a connection was accepted; the adapter picks a new `connId` and passes its `WatchConnection`),
 *   `received` (a client message, already decoded, or why it was refused), `published` (entries this node applied, in
 *   seq order), `drained` (a connection's queue shrank; the bytes still buffered), `tick` (by `nextTickMs()`),
 *   `closed` (the socket is gone), `expel` (the adapter wants one connection closed), `shutdown`. Events naming a connId the machine does not know (closed, or closed by
 *   the machine itself) are ignored, so races between a close and late data are harmless.
 * - Sends and closes are performed through the connection's `WatchConnection` as calls, in order, while the machine
 *   handles the event: the fan-out to thousands of watchers then allocates nothing per watcher. The machine reads the
 *   connection's `bufferedBytes` to decide whether a message may be queued; it never sends to a connection it asked
 *   to close.
 * - The returned actions (open or release a snapshot, log) must be performed in order before the next event. After
 *   `openSnapshot`, the snapshot's pages are read through `WatchReads.snapshotPage` in later events only, until the
 *   machine releases it; every opened snapshot is released exactly once (also on close and shutdown).
 * - `WatchReads.readLog` answers synchronously from one consistent state; it may return fewer entries than asked
 *   (none when `fromSeq` is no longer retained, or not yet written).
 * - `nextTickMs()` says when `tick` must be called at the latest (progress every `progressIntervalMs`, and the
 *   catch-up pump, which runs in a tick of its own so that the live fan-out of `published` goes first).
 */
import assert from 'node:assert/strict';
import { isDataCorrupted, isReadersFull } from '../errors/index.js';
import type { EncodedEntry, Entry } from '../log/index.js';
import type { LogLevel } from '../logging/index.js';
import type { KeyRange, SnapshotRecord } from '../store/index.js';
import { textFrame } from './frame.js';
import { validateWatchLimits, WATCH_LIMITS, type WatchLimits } from './limits.js';
import {
  errorMessage,
  eventsBody,
  eventsHead,
  progressMessage,
  slowWatcherReason,
  snapshotMessage,
  subscribedMessage,
  unsubscribedMessage,
  WatchCloseCode,
  WatchProtocolError,
  type ClientMessage,
} from '../api/index.js';
import { canonicalSelection, prefixBytes, SelectionIndex, selectionRanges, snapshotItemJson, type Selection } from './selection.js';

/** One connection as the machine sees it: the adapter implements it over a WebSocket (or the simulation's network). */
export interface WatchConnection {
  /** Bytes queued on the connection and not yet handed to the network. */
  readonly bufferedBytes: number;
  /**
   * Bytes sent on the connection since it opened, handed to the network or not (its frames' headers included, as
   * `bufferedBytes` counts them): less `bufferedBytes`, how far the network has taken what was sent.
   */
  readonly writtenBytes: number;
  /** One text message. */
  send(text: string): void;
  /** One complete text frame made by `textFrame`: the same Buffer is written to many connections. */
  sendFramed(frame: Buffer): void;
  /** One text message in two fragments, the head then the shared body (written without a copy). */
  sendFragments(head: string, body: Buffer): void;
  /** Close with a WebSocket close code; nothing is sent after it. */
  close(code: number, reason: string): void;
  /**
   * When bytes last arrived from the client (a message, a pong, anything), on the machine's clock: a connection silent
   * for `peerSilentMs` is closed (its client vanished without a FIN), one silent for a heartbeat interval is pinged.
   */
  readonly heardMs: number;
  /** A WebSocket ping: a client that is there answers with a pong, which moves `heardMs`. */
  ping(): void;
}

/** What the machine reads from the node's storage. */
export interface WatchReads {
  /**
   * Verified log records from `fromSeq`, at most `limitEntries`; none when fromSeq is no longer retained (or not yet
   * written). Throws DATA_CORRUPTED (errors/index.ts) on a damaged record: the subscriptions that read it end alone;
   * OVERLOADED with reason READERS_FULL when no reader is free: they try again after `catchupPollMs`.
   */
  readLog(fromSeq: number, limitEntries: number): readonly EncodedEntry[];
  /**
   * The next page (about `pageBytes` of keys and values, at least one record; none at the end) of an opened snapshot.
   * Throws DATA_CORRUPTED on a damaged key record, as readLog does, and READERS_FULL when the adapter could not open
   * the snapshot (no reader free): the subscription gives its slot back and opens one again after `catchupPollMs`.
   */
  snapshotPage(snapshotId: number, pageBytes: number): WatchSnapshotPage;
  /**
   * Takes one of the node's snapshot readers (shared with backups and replication) for the `openSnapshot` action about
   * to be made; false when none is free: the subscription waits, as for a slot of `snapshotsMax`. Absent: no budget
   * beyond `snapshotsMax`.
   */
  reserveSnapshot?(): boolean;
}

export interface WatchSnapshotPage {
  /** The seq the snapshot's state is at (the same for every page of one snapshot). */
  readonly seq: number;
  /** The hash of entry `seq`, the chain position of the snapshot. */
  readonly hash: Buffer;
  readonly records: readonly SnapshotRecord[];
}

/**
 * A decoded client message, or why the adapter could not decode it: refused by the protocol, a binary frame, or
 * `failed`: decoding it threw what no rule of the protocol throws (a bug, which the adapter logs); that connection
 * is closed with 1011, the others go on.
 */
export type WatchInput =
  | ClientMessage
  | { readonly type: 'refused'; readonly error: WatchProtocolError }
  | { readonly type: 'binary' }
  | { readonly type: 'failed' };

export type WatchAction =
  /** Open a consistent snapshot of these key ranges at the node's current state (an LMDB read transaction). */
  | { readonly type: 'openSnapshot'; readonly snapshotId: number; readonly ranges: readonly KeyRange[] }
  | { readonly type: 'releaseSnapshot'; readonly snapshotId: number }
  | { readonly type: 'log'; readonly level: LogLevel; readonly message: string; readonly fields: Readonly<Record<string, unknown>> };

/** Where the machine counts what it does (the adapter's metrics). */
export interface WatchCounters {
  /** `messages` messages of `type` sent, carrying `events` events in all (events messages only). */
  sent(type: string, messages: number, events: number): void;
  catchup(): void;
  snapshot(): void;
  slowClose(): void;
  /** A connection closed with 4408: nothing came from its client for `peerSilentMs`. */
  silentClose(): void;
  refused(code: string): void;
}

const NO_COUNTERS: WatchCounters = Object.freeze({ sent() {}, catchup() {}, snapshot() {}, slowClose() {}, silentClose() {}, refused() {} });
const NO_ACTIONS: readonly WatchAction[] = Object.freeze([]);

export interface WatchMachineOptions {
  readonly reads: WatchReads;
  /** The seq the node has applied when the machine starts: watches without `fromSeq` start after it. */
  readonly headSeq: number;
  /** The hash of entry `headSeq` (GENESIS_HASH at seq 0). */
  readonly headHash: Buffer;
  /**
   * True on the root. A replica may be behind a client (which read a newer entry elsewhere), so a `fromSeq` past its
   * head waits for the node to get there; the root is never behind, so such a `fromSeq` comes from a chain the root
   * no longer has (it was restored from a backup), and the subscription gets a snapshot reset instead. Default false.
   */
  readonly root?: boolean;
  readonly nowMs: number;
  readonly limits?: WatchLimits;
  readonly counters?: WatchCounters;
}

type State = 'live' | 'catchup' | 'snapshot';

/** Subscriptions with one selection. `live` holds the members that take entries from the fan-out. */
class Group {
  readonly live = new Set<Subscription>();
  members = 0;
  constructor(readonly selection: Selection) {}
}

/**
 * The prefix bytes that one remote address's subscriptions hold over all its connections (`prefixBytesPerAddressMax`);
 * kept while the address has a connection.
 */
class AddressPrefixes {
  bytes = 0;
  connections = 0;
  constructor(readonly key: string) {}
}

class Connection {
  /** Usually one: the array is made with exactly its first element (a pushed-to empty array reserves 17 slots). */
  subscriptions: Subscription[] = [];
  /** The machine's tick count when a message was last sent (heartbeats); a small integer costs no heap number. */
  lastSendTick: number;
  /** The machine's tick count when the connection was last pinged (0: not since it was opened). */
  lastPingTick = 0;
  /** The send queue's size at the last progress round, and when a round last saw it shrink (the kernel took bytes). */
  silenceQueuedBytes = 0;
  tookMs = -Infinity;
  /** When the queue was first seen full (-1: it was not), and its size then; a shrinking queue restarts the clock. */
  blockedSinceMs = -1;
  blockedBytes = 0;
  /**
   * What the queue added to the budget's sum when the machine last looked (its part of `queuedBytesSeenTotal`): its
   * bytes, less the shared bodies in it, which count once for all connections (`sharedBodyBytes`).
   */
  queuedBytesSeen = 0;
  /**
   * The shared bodies of large events messages sent on the connection that the network may not have taken yet, oldest
   * first, each with where it ends in the connection's `writtenBytes`; undefined when none (most connections).
   */
  heldBodies: HeldBodyEnd[] | undefined = undefined;
  /** The bytes of those bodies. */
  heldBodyBytes = 0;
  /**
   * The bytes of the last message that did not fit past the connection's share (`fits`), until one is sent: it is
   * full while the budget has no room for that much, and its lagging subscriptions wait for that room (record 85).
   */
  wantedBytes = 0;
  closing = false;
  constructor(
    readonly id: number,
    readonly port: WatchConnection,
    /** What the remote address's subscriptions hold of prefixes, shared by its connections. */
    readonly address: AddressPrefixes,
    tick: number,
  ) {
    this.lastSendTick = tick;
  }
}

class Subscription {
  state: State = 'live';
  nextSeq: number;
  /** The highest seq the client was told it has everything up to (events, progress, snapshot or subscribed). */
  toldSeq: number;
  /**
   * The hash of entry nextSeq - 1 in catch-up, when known (progress carries it; a live subscription's is the latest
   * published hash).
   */
  doneHash: Buffer | undefined = undefined;
  /** The client's `afterHash` (entry nextSeq - 1), until it is checked against this node's chain. */
  expectHash: Buffer | undefined;
  /** In state 'snapshot': the open snapshot's id, or 0 while waiting for a slot (`snapshotsMax`). */
  snapshotId = 0;
  /** In state 'snapshot': no page of it was sent yet (the next one is marked `begin`). */
  snapshotBegins = false;
  /** The event count when the snapshot was opened: its pages are read from the next event on. */
  snapshotOpenedAt = 0;
  snapshotStartedMs = 0;
  /** In state 'snapshot' with no snapshot open: not before this time (the last one found no reader free). */
  snapshotRetryAtMs = 0;
  /**
   * In state 'snapshot': a page read that did not fit its connection's queue yet (`fits`), sent before the next is
   * read. Held only with a snapshot open, so at most `snapshotsMax` of them.
   */
  pendingPage: PendingPage | undefined = undefined;
  removed = false;
  constructor(
    readonly connection: Connection,
    /** The client's id as JSON text (1 and "1" are different ids). */
    readonly idJson: string,
    readonly group: Group,
    fromSeq: number,
    afterHash: Buffer | undefined,
  ) {
    this.nextSeq = fromSeq;
    this.toldSeq = fromSeq - 1;
    this.expectHash = afterHash;
  }
}

/**
 * One shared body of a large events message as the queue budget counts it: once, while any connection may hold it
 * (its `holders`), since every socket it went to holds the same buffer (record 85).
 */
class HeldBody {
  holders = 0;
  constructor(readonly bytes: number) {}
}

/** A shared body in one connection's queue, and where it ends in that connection's `writtenBytes`. */
interface HeldBodyEnd {
  readonly body: HeldBody;
  readonly endBytes: number;
}

/** A snapshot page's message, and what its sending completes. */
interface PendingPage {
  readonly text: string;
  readonly bytes: number;
  readonly page: WatchSnapshotPage;
  /** Key and value bytes of the page (what the pump's round budget counts). */
  readonly recordBytes: number;
}

/** The most header bytes of the two fragments of a large events message (frame.ts: 4 for the head, 10 for the body). */
const FRAGMENT_HEADERS_BYTES_MAX = 14;
/** The most header bytes of one frame (a 64-bit length). */
const FRAME_HEADER_BYTES_MAX = 10;

/**
 * Distinct subscription ids whose whole small events message one SharedBody keeps framed. Clients mostly number
 * their subscriptions from 1, so thousands of watchers of one prefix share a handful of ids; a fan-out to ids that
 * are all different frames per watcher, as it would without the cache, and holds no more than this many copies.
 */
const MESSAGE_CACHE_IDS_MAX = 16;

/**
 * An entry's events for one group: the body text is built once, its Buffer only if a message is large. A small
 * message is sent as one complete frame per distinct subscription id: `ws` would otherwise measure, UTF-8-encode and
 * frame the same text again for every socket (in the fan-out to 19,000 watchers that was most of the node's time).
 */
class SharedBody {
  private buffer: Buffer | undefined;
  private heldBody: HeldBody | undefined;
  private readonly frames = new Map<string, Buffer>();
  constructor(
    readonly seq: number,
    readonly text: string,
    readonly eventCount: number,
  ) {}

  bytes(): Buffer {
    this.buffer ??= Buffer.from(this.text, 'utf8');
    return this.buffer;
  }

  /** The body as the queue budget counts it, once for all the connections it is sent to. */
  held(): HeldBody {
    this.heldBody ??= new HeldBody(this.bytes().length);
    return this.heldBody;
  }

  /** The whole message for one subscription id as a complete WebSocket text frame, framed once per id. */
  frame(idJson: string): Buffer {
    let frame = this.frames.get(idJson);
    if (frame === undefined) {
      frame = textFrame(Buffer.from(eventsHead(idJson) + this.text, 'utf8'));
      if (this.frames.size < MESSAGE_CACHE_IDS_MAX) this.frames.set(idJson, frame);
    }
    return frame;
  }
}

/**
 * The progress messages of one round as complete frames. Every subscription that is caught up is told the same seq
 * (the latest published), and most share a handful of ids, so those are framed once per id, as events are; a
 * subscription still behind (its own seq) gets a frame of its own.
 */
class ProgressFrames {
  private readonly frames = new Map<string, Buffer>();
  private readonly latestHashHex: string;
  constructor(
    private readonly latestSeq: number,
    latestHash: Buffer,
  ) {
    this.latestHashHex = latestHash.toString('hex');
  }

  /** `hash`: the hash of entry `seq` when it is not the latest, if known; `hashes`: false leaves any hash out. */
  frame(idJson: string, seq: number, hash: Buffer | undefined, hashes: boolean): Buffer {
    if (seq !== this.latestSeq) return textFrame(Buffer.from(progressMessage(idJson, seq, hash?.toString('hex')), 'utf8'));
    const cacheKey = hashes ? idJson : `-${idJson}`;
    let frame = this.frames.get(cacheKey);
    if (frame === undefined) {
      frame = textFrame(Buffer.from(progressMessage(idJson, seq, hashes ? this.latestHashHex : undefined), 'utf8'));
      if (this.frames.size < MESSAGE_CACHE_IDS_MAX) this.frames.set(cacheKey, frame);
    }
    return frame;
  }
}

export class WatchMachine {
  readonly limits: WatchLimits;
  private readonly reads: WatchReads;
  private readonly counters: WatchCounters;
  private readonly root: boolean;
  private readonly connections = new Map<number, Connection>();
  /**
   * What the connections' queues held when the machine last looked at each (`see`: before and after it sends them
   * anything), less the shared bodies in them, summed: never below what they hold, since a queue only shrinks between
   * looks by the kernel taking bytes. With `sharedBodyBytes`, the budget's sum (`queueBudgetBytes`): past
   * `queueBytesTotalMax`, a connection holding more than `queueBytesShareMax` takes no more (record 76), and none takes
   * a message past its share that the sum has no room for (record 85).
   */
  private queuedBytesSeenTotal = 0;
  /** The bytes of the shared bodies that connections may hold, each counted once (`HeldBody`): part of the budget's sum. */
  private sharedBodyBytes = 0;
  /** Per remote address, while it has a connection; and the prefix bytes all subscriptions hold (`prefixBytesMax`). */
  private readonly addresses = new Map<string, AddressPrefixes>();
  private prefixBytesHeld = 0;
  private readonly groups = new Map<string, Group>();
  private readonly index = new SelectionIndex<Group>();
  /** Subscriptions in catch-up or snapshot. */
  private readonly lagging = new Set<Subscription>();
  private subscriptionCount = 0;
  private snapshotsOpen = 0;
  private lastSnapshotId = 0;
  /** The last seq published: every live subscription has been sent everything it selects up to here. */
  private liveSeq: number;
  /** The hash of entry `liveSeq`. */
  private liveHash: Buffer;
  /**
   * Live subscriptions whose `afterHash` names a seq this node has not reached yet (a replica behind), by that seq;
   * `hashCheckSeqMin` is at most the lowest key (Infinity when empty), so that `published` looks only when due.
   */
  private readonly hashChecks = new Map<number, Set<Subscription>>();
  private hashCheckSeqMin = Infinity;
  private readEntries: number;
  /** When the catch-up pump must run next (Infinity: nothing lags). */
  private pumpAtMs = Infinity;
  private pumpRound = 0;
  /** When the next progress round is due, and how many there were (the clock of heartbeats). */
  private progressAtMs: number;
  private ticks = 0;
  /** Events handled so far: a snapshot opened during one is read from the next one on. */
  private eventCount = 0;
  private stopped = false;
  private out: WatchAction[] | undefined;

  constructor(options: WatchMachineOptions) {
    this.limits = validateWatchLimits(options.limits ?? WATCH_LIMITS);
    this.reads = options.reads;
    this.counters = options.counters ?? NO_COUNTERS;
    this.root = options.root ?? false;
    this.liveSeq = options.headSeq;
    this.liveHash = options.headHash;
    this.readEntries = this.limits.catchupReadEntriesMax;
    this.progressAtMs = options.nowMs + this.limits.progressIntervalMs;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * The `WatchConnection` of every connection the machine knows (until its `closed` event), as a new array: the adapter
   * keeps no table of its own (a watcher's memory), and may send events for them while it walks it.
   */
  ports(): WatchConnection[] {
    return Array.from(this.connections.values(), (connection) => connection.port);
  }

  /** What each of a connection's subscriptions selects (none for a connection not known, or closing). */
  selections(connId: number): Selection[] {
    return this.connections.get(connId)?.subscriptions.map((subscription) => subscription.group.selection) ?? [];
  }

  get subscriptions(): number {
    return this.subscriptionCount;
  }

  get laggingSubscriptions(): number {
    return this.lagging.size;
  }

  /**
   * The queue budget's sum as the machine last saw it (a metric): what `queueBytesTotalMax` bounds, the queues' bytes
   * with each shared body counted once.
   */
  get queueBudgetBytes(): number {
    return this.queuedBytesSeenTotal + this.sharedBodyBytes;
  }

  /** Bytes queued on all connections and not yet handed to the kernel, as they are now (a metric). */
  get queuedBytes(): number {
    let bytes = 0;
    for (const connection of this.connections.values()) bytes += connection.port.bufferedBytes;
    return bytes;
  }

  /** Bytes of prefixes all subscriptions hold (`prefixBytesMax`). */
  get prefixBytes(): number {
    return this.prefixBytesHeld;
  }

  get openSnapshots(): number {
    return this.snapshotsOpen;
  }

  /** Subscriptions due a snapshot that wait for a slot (`snapshotsMax`, or a reader of the node's budget). For status. */
  get waitingSnapshots(): number {
    let waiting = 0;
    for (const subscription of this.lagging) if (subscription.state === 'snapshot' && subscription.snapshotId === 0 && !subscription.removed) waiting++;
    return waiting;
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** When `tick` must be called at the latest. */
  nextTickMs(): number {
    if (this.stopped) return Infinity;
    // Progress rounds only concern connections: a node nobody watches (most replicas) takes no timer every second.
    return this.connections.size === 0 ? this.pumpAtMs : Math.min(this.progressAtMs, this.pumpAtMs);
  }

  // --- Events -----------------------------------------------------------------------------------------------------

  /** A connection from `address` (the remote address's key, `addressKey`: the budget of prefix bytes it shares). */
  opened(nowMs: number, connId: number, port: WatchConnection, address: string): readonly WatchAction[] {
    this.begin();
    if (this.connections.has(connId)) assert.fail(`watch connection id ${connId} reused`);
    if (this.stopped) {
      port.close(WatchCloseCode.GOING_AWAY, 'node is shutting down; reconnect and resume');
      return this.end(nowMs);
    }
    // The first connection after a quiet spell starts the progress rounds afresh (none ran meanwhile).
    if (this.connections.size === 0) this.progressAtMs = Math.max(this.progressAtMs, nowMs + this.limits.progressIntervalMs);
    let prefixes = this.addresses.get(address);
    if (prefixes === undefined) {
      prefixes = new AddressPrefixes(address);
      this.addresses.set(address, prefixes);
    }
    prefixes.connections++;
    this.connections.set(connId, new Connection(connId, port, prefixes, this.ticks));
    return this.end(nowMs);
  }

  received(nowMs: number, connId: number, input: WatchInput): readonly WatchAction[] {
    this.begin();
    const connection = this.connections.get(connId);
    if (connection === undefined || connection.closing) return this.end(nowMs);
    if (input.type === 'binary') {
      this.counters.refused('BINARY_FRAME');
      this.closeConnection(connection, WatchCloseCode.UNSUPPORTED_DATA, 'binary frames are not accepted; send JSON text frames');
      return this.end(nowMs);
    }
    if (input.type === 'failed') {
      this.counters.refused('INTERNAL');
      this.closeConnection(connection, WatchCloseCode.INTERNAL_ERROR, 'internal error handling your message; see the node log');
      return this.end(nowMs);
    }
    try {
      if (input.type === 'refused') throw input.error;
      if (input.type === 'subscribe') this.subscribe(connection, input, nowMs);
      else this.unsubscribe(connection, input.idJson, nowMs);
    } catch (error) {
      if (!(error instanceof WatchProtocolError)) throw error;
      this.counters.refused(error.code);
      this.reply(connection, errorMessage(error.code, error.message, error.idJson), 'error', nowMs);
    }
    return this.end(nowMs);
  }

  /**
   * Entries this node has applied, in seq order (the root's committer, or a replica's apply loop). Entries already
   * published are ignored. A gap (a replica that installed a snapshot) moves every live subscription to catch-up,
   * where it finds the log no longer reaches back and gets a snapshot.
   */
  published(nowMs: number, entries: readonly (EncodedEntry | Entry)[]): readonly WatchAction[] {
    this.begin();
    if (this.stopped) return this.end(nowMs);
    for (const item of entries) {
      const entry = 'entry' in item ? item.entry : item;
      if (entry.seq <= this.liveSeq) continue;
      if (entry.seq !== this.liveSeq + 1) this.skipTo(entry.seq - 1, entry.prevHash);
      this.liveSeq = entry.seq;
      this.liveHash = entry.hash;
      if (entry.seq >= this.hashCheckSeqMin) this.checkAwaitedHashes(entry);
      this.fanOut(entry, nowMs);
    }
    if (this.lagging.size > 0) this.pumpAtMs = nowMs;
    return this.end(nowMs);
  }

  /**
   * This node's chain was replaced by a snapshot at `seq` (a replica that fell behind the log its upstream keeps, or
   * was resynced: then `seq` may be at or below what it had published). The log and state the subscriptions were
   * served from are gone, and what they were sent above `seq` may belong to the abandoned chain, so every subscription
   * is reset: it gets the new state as a snapshot now, and the stream after it. The next entry continues from `seq`.
   * Waiting for the next entry to reveal a gap would leave watchers stale for as long as nothing is written, which on
   * a configuration store can be hours.
   */
  chainReplaced(nowMs: number, seq: number, hash: Buffer): readonly WatchAction[] {
    this.begin();
    if (this.stopped) return this.end(nowMs);
    this.liveSeq = seq;
    this.liveHash = hash;
    for (const connection of this.connections.values()) for (const subscription of connection.subscriptions) this.toSnapshot(subscription);
    if (this.lagging.size > 0) this.pumpAtMs = nowMs;
    return this.end(nowMs);
  }

  /** The connection's queue shrank to `bufferedBytes`: its lagging subscriptions may continue now. */
  drained(nowMs: number, connId: number, bufferedBytes: number): readonly WatchAction[] {
    this.begin();
    const connection = this.connections.get(connId);
    if (connection === undefined || connection.closing) return this.end(nowMs);
    if (!this.full(connection, bufferedBytes)) connection.blockedSinceMs = -1;
    if (connection.subscriptions.some((subscription) => subscription.state !== 'live')) this.pumpAtMs = Math.min(this.pumpAtMs, nowMs);
    return this.end(nowMs);
  }

  tick(nowMs: number): readonly WatchAction[] {
    this.begin();
    if (this.stopped) return this.end(nowMs);
    if (nowMs >= this.progressAtMs) {
      // A late tick (a busy event loop) does not make up for the rounds it missed.
      this.progressAtMs = Math.max(this.progressAtMs + this.limits.progressIntervalMs, nowMs + 1);
      this.progressRound(nowMs);
    }
    if (nowMs >= this.pumpAtMs) {
      this.pumpAtMs = Infinity;
      this.pump(nowMs);
    }
    return this.end(nowMs);
  }

  /** The connection is gone (closed by the peer, by the network, or after the machine asked to close it). */
  closed(nowMs: number, connId: number): readonly WatchAction[] {
    this.begin();
    const connection = this.connections.get(connId);
    if (connection === undefined) return this.end(nowMs);
    this.dropSubscriptions(connection);
    this.connections.delete(connId);
    for (const held of connection.heldBodies ?? []) this.letGo(connection, held);
    connection.heldBodies = undefined;
    this.queuedBytesSeenTotal -= connection.queuedBytesSeen;
    if (--connection.address.connections === 0) this.addresses.delete(connection.address.key);
    // Its queue's bytes left the budget: subscriptions waiting for room there may go on.
    if (connection.queuedBytesSeen > 0 && this.lagging.size > 0) this.pumpAtMs = Math.min(this.pumpAtMs, nowMs);
    return this.end(nowMs);
  }

  /**
   * Closes one connection with `code` and `reason` (its credential was revoked, say); its subscriptions end. A
   * connection already closing is left as it is.
   */
  expel(nowMs: number, connId: number, code: number, reason: string): readonly WatchAction[] {
    this.begin();
    const connection = this.connections.get(connId);
    if (connection !== undefined) this.closeConnection(connection, code, reason);
    return this.end(nowMs);
  }

  /** Closes every connection with 1001 and stops: nothing more is sent, later connections are closed at once. */
  shutdown(nowMs: number): readonly WatchAction[] {
    this.begin();
    this.stopped = true;
    for (const connection of this.connections.values()) this.closeConnection(connection, WatchCloseCode.GOING_AWAY, 'node is shutting down; reconnect and resume');
    return this.end(nowMs);
  }

  /** Checks every invariant across the whole state (O(subscriptions): for tests and the simulation). */
  assertInvariants(): void {
    let subscriptions = 0;
    let snapshots = 0;
    const addressBytes = new Map<AddressPrefixes, number>();
    const addressConnections = new Map<AddressPrefixes, number>();
    let queuedBytesSeen = 0;
    for (const connection of this.connections.values()) {
      queuedBytesSeen += connection.queuedBytesSeen;
      assert.equal(this.addresses.get(connection.address.key), connection.address, 'a connection counts in its address');
      addressConnections.set(connection.address, (addressConnections.get(connection.address) ?? 0) + 1);
      if (connection.closing) assert.equal(connection.subscriptions.length, 0, 'a closing connection holds subscriptions');
      for (const subscription of connection.subscriptions) {
        subscriptions++;
        addressBytes.set(connection.address, (addressBytes.get(connection.address) ?? 0) + this.chargedBytes(subscription.group.selection));
        assert.ok(!subscription.removed);
        assert.equal(subscription.connection, connection);
        assert.equal(this.lagging.has(subscription), subscription.state !== 'live', 'lagging is exactly the subscriptions in catch-up or snapshot');
        assert.equal(subscription.group.live.has(subscription), subscription.state === 'live', 'a group live set holds exactly its live members');
        assert.equal(this.groups.get(subscription.group.selection.key), subscription.group);
        if (subscription.snapshotId !== 0) {
          assert.equal(subscription.state, 'snapshot');
          snapshots++;
        } else assert.equal(subscription.pendingPage, undefined, 'a page waits only with its snapshot open');
        assert.ok(subscription.toldSeq < this.position(subscription), 'told past what was sent');
        if (subscription.expectHash !== undefined) {
          assert.notEqual(subscription.state, 'snapshot', 'a snapshot replaces the state whatever its afterHash');
          const awaited = subscription.state === 'live' && this.hashChecks.get(subscription.nextSeq - 1)?.has(subscription) === true;
          assert.equal(awaited, subscription.state === 'live', 'a live subscription with an unchecked afterHash awaits its seq');
          if (awaited) assert.ok(subscription.nextSeq - 1 > this.liveSeq && subscription.nextSeq - 1 >= this.hashCheckSeqMin);
        }
      }
    }
    assert.equal(subscriptions, this.subscriptionCount);
    assert.equal(queuedBytesSeen, this.queuedBytesSeenTotal, "the queues' sum is of what was seen of each");
    const holders = new Map<HeldBody, number>();
    for (const connection of this.connections.values()) {
      let bytes = 0;
      for (const { body } of connection.heldBodies ?? []) {
        holders.set(body, (holders.get(body) ?? 0) + 1);
        bytes += body.bytes;
      }
      assert.equal(connection.heldBodyBytes, bytes, "a connection's held body bytes are its bodies'");
    }
    let sharedBodyBytes = 0;
    for (const [body, count] of holders) {
      assert.equal(body.holders, count, "a shared body's holders are the connections that hold it");
      sharedBodyBytes += body.bytes;
    }
    assert.equal(sharedBodyBytes, this.sharedBodyBytes, 'each shared body held counts once');
    assert.equal(this.addresses.size, addressConnections.size, 'an address is kept while it has a connection');
    let prefixBytesHeld = 0;
    for (const address of this.addresses.values()) {
      assert.equal(address.connections, addressConnections.get(address), "an address counts its connections");
      assert.equal(address.bytes, addressBytes.get(address) ?? 0, "an address's prefix bytes are its subscriptions'");
      assert.ok(address.bytes <= this.limits.prefixBytesPerAddressMax);
      prefixBytesHeld += address.bytes;
    }
    assert.equal(prefixBytesHeld, this.prefixBytesHeld, "the node's prefix bytes are its addresses'");
    assert.ok(prefixBytesHeld <= this.limits.prefixBytesMax);
    assert.equal(snapshots, this.snapshotsOpen);
    assert.ok(this.snapshotsOpen <= this.limits.snapshotsMax);
    for (const subscription of this.lagging) assert.ok(!subscription.removed, 'lagging subscriptions are a subset of all subscriptions');
    for (const waiting of this.hashChecks.values()) for (const subscription of waiting) assert.ok(!subscription.removed && subscription.expectHash !== undefined);
    let members = 0;
    for (const group of this.groups.values()) {
      assert.ok(group.members > 0);
      members += group.members;
    }
    assert.equal(members, this.subscriptionCount);
    assert.equal(this.index.size, this.groups.size);
  }

  private begin(): void {
    this.eventCount++;
    this.out = undefined;
  }

  private end(nowMs: number): readonly WatchAction[] {
    // The pump never waits past a progress round without a reason; a lagging set means the pump is armed.
    if (this.lagging.size > 0 && this.pumpAtMs === Infinity && !this.stopped) this.pumpAtMs = nowMs + this.limits.catchupPollMs;
    assert.ok(this.lagging.size <= this.subscriptionCount, 'lagging subscriptions are a subset of all subscriptions');
    assert.ok(this.snapshotsOpen >= 0 && this.snapshotsOpen <= this.limits.snapshotsMax, 'open snapshots within their limit');
    const out = this.out;
    this.out = undefined;
    return out ?? NO_ACTIONS;
  }

  private act(action: WatchAction): void {
    (this.out ??= []).push(action);
  }

  // --- Connections ------------------------------------------------------------------------------------------------

  /** Sends an answer to a client request; a client that keeps sending without reading is a slow watcher. */
  private reply(connection: Connection, text: string, type: string, nowMs: number): void {
    // Replies are small and few: only the connection's own queue bound refuses them, not the node's (`full`).
    if (!this.hasRoom(connection, nowMs) && connection.port.bufferedBytes >= this.limits.queueBytesMax) {
      this.slowClose(connection, 'requests sent while the replies queue is full');
      return;
    }
    this.send(connection, text, type);
  }

  private send(connection: Connection, text: string, type: string): void {
    connection.port.send(text);
    this.see(connection, connection.port.bufferedBytes);
    connection.lastSendTick = this.ticks;
    this.counters.sent(type, 1, 0);
  }

  /**
   * Whether a connection's queue of `buffered` bytes takes no more: past its own bound, or past its share of the
   * node's while the queues together are past theirs (`queueBytesTotalMax`), or have no room for the message it
   * could not queue last (`wantedBytes`). Full, it may be closed as stalled. Records what it saw in the total.
   */
  private full(connection: Connection, buffered: number): boolean {
    this.see(connection, buffered);
    const { queueBytesMax, queueBytesShareMax, queueBytesTotalMax } = this.limits;
    return buffered >= queueBytesMax || (buffered > queueBytesShareMax && this.queueBudgetBytes + connection.wantedBytes > queueBytesTotalMax);
  }

  /**
   * Records the connection's queue as `buffered` bytes in the budget's sum: its own bytes, and the shared bodies it
   * holds apart (counted once in `sharedBodyBytes`), letting go of those the network has taken.
   */
  private see(connection: Connection, buffered: number): void {
    let own = buffered;
    const held = connection.heldBodies;
    if (held !== undefined) {
      const taken = connection.port.writtenBytes - buffered;
      while (held.length > 0 && held[0]!.endBytes <= taken) this.letGo(connection, held.shift()!);
      if (held.length === 0) connection.heldBodies = undefined;
      else {
        // Only the oldest body can be partly taken; the socket holds its buffer whole until it is all taken.
        const first = held[0]!;
        own = Math.max(0, buffered - connection.heldBodyBytes + Math.max(0, taken - (first.endBytes - first.body.bytes)));
      }
    }
    this.queuedBytesSeenTotal += own - connection.queuedBytesSeen;
    connection.queuedBytesSeen = own;
  }

  /** The connection no longer holds a shared body: the budget counts it no more once no connection does. */
  private letGo(connection: Connection, held: HeldBodyEnd): void {
    connection.heldBodyBytes -= held.body.bytes;
    if (--held.body.holders === 0) this.sharedBodyBytes -= held.body.bytes;
  }

  /**
   * Whether a message of `bytes` may be queued on a connection that has room (`hasRoom`): within its share, or within
   * the room left in the budget (`queueBytesTotalMax`), the sum taken with the message; a message larger than the
   * whole budget goes out alone, when nothing else is queued. Before, a connection within its share took any message,
   * and messages that are not shared (distinct selections of one large value) held one each beyond the budget: 1,000
   * watchers reading nothing held 997 MiB of 1 MiB events (record 85). One that does not fit is not lost: the
   * subscription catches up from the log once there is room, and the connection, past its share, is full meanwhile.
   */
  private fits(connection: Connection, bytes: number, budgetBytes = bytes): boolean {
    const buffered = connection.port.bufferedBytes;
    this.see(connection, buffered);
    const { queueBytesShareMax, queueBytesTotalMax } = this.limits;
    if (buffered + bytes <= queueBytesShareMax) return true;
    // `budgetBytes`: what the message adds to the sum, less for a shared body some connection holds already.
    const total = this.queueBudgetBytes;
    if (total > 0 && total + budgetBytes > queueBytesTotalMax) {
      connection.wantedBytes = budgetBytes;
      return false;
    }
    return true;
  }

  /** After a send: the queue as it is now, so that the next message to any connection counts this one. */
  private queued(connection: Connection): void {
    connection.wantedBytes = 0;
    this.see(connection, connection.port.bufferedBytes);
  }

  /** Room in the connection's queue; also tracks since when it has been full (see `stalled`). */
  private hasRoom(connection: Connection, nowMs: number): boolean {
    const buffered = connection.port.bufferedBytes;
    if (!this.full(connection, buffered)) {
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
    connection.port.close(code, reason);
  }

  /** Closes a connection that cannot keep up, after telling each subscription exactly where to resume. */
  private slowClose(connection: Connection, why: string): void {
    if (connection.closing) return;
    const resume: number[] = [];
    for (const subscription of connection.subscriptions) {
      // A subscription in a snapshot (under way, or due and not begun) resumes after the last seq it was told: its
      // position may be past that, over entries a catch-up read skipped for having nothing selected before it found
      // the log's end, and the client cannot know those (the 4008 row of src/api/watch.ts; found by simulation seed 48062).
      const done = subscription.state === 'snapshot' ? subscription.toldSeq : this.position(subscription) - 1;
      if (subscription.state !== 'snapshot') {
        connection.port.send(progressMessage(subscription.idJson, done, this.doneHash(subscription, done)?.toString('hex')));
        this.tell(subscription, done);
      }
      resume.push(done + 1);
    }
    this.counters.slowClose();
    this.act({
      type: 'log',
      level: 'info',
      message: 'watch connection closed: slow watcher',
      fields: { why, subscriptions: resume.length, queuedBytes: connection.port.bufferedBytes },
    });
    this.closeConnection(connection, WatchCloseCode.SLOW_WATCHER, slowWatcherReason(resume.length === 1 ? resume[0] : undefined));
  }

  // --- Subscriptions ----------------------------------------------------------------------------------------------

  /**
   * What a subscription counts against the prefix budgets: its prefixes' bytes, at least `subscriptionBytesMin`. The
   * floor is the subscription's own cost: subscriptions of the empty prefix counted nothing, and 64 per connection
   * held some 390 MB over the node's connections that no budget saw (docs/decisions.md, record 79).
   */
  private chargedBytes(selection: Selection): number {
    return Math.max(prefixBytes(selection), this.limits.subscriptionBytesMin);
  }

  private subscribe(connection: Connection, message: ClientMessage & { type: 'subscribe' }, nowMs: number): void {
    if (connection.subscriptions.some((subscription) => subscription.idJson === message.idJson))
      throw new WatchProtocolError('DUPLICATE_ID', `subscription ${message.idJson} exists on this connection; unsubscribe first or pick another id`, message.idJson);
    if (connection.subscriptions.length >= this.limits.subscriptionsPerConnectionMax)
      throw new WatchProtocolError(
        'TOO_MANY_SUBSCRIPTIONS',
        `this connection has ${connection.subscriptions.length} subscriptions, the most one connection may hold; put several prefixes in one subscription, or open another connection`,
        message.idJson,
      );
    const selection = canonicalSelection(message.prefixes, message.filters, message.hashes !== false);
    // Bounded by bytes too, not only by counts: 64 subscriptions of 16 prefixes of 1 KiB each held about 5 MiB per
    // connection (WATCH_PREFIX_BYTES_PER_CONNECTION_MAX). Summed here rather than kept per connection, which would
    // cost every idle watcher a field for the rare one that subscribes many times.
    const held = connection.subscriptions.reduce((sum, subscription) => sum + this.chargedBytes(subscription.group.selection), 0);
    const asked = this.chargedBytes(selection);
    const counts = `this subscription counts ${asked} bytes (its prefixes, at least ${this.limits.subscriptionBytesMin})`;
    if (held + asked > this.limits.prefixBytesPerConnectionMax)
      throw new WatchProtocolError(
        'TOO_MANY_PREFIXES',
        `${counts} and this connection's subscriptions hold ${held}; a connection holds at most ${this.limits.prefixBytesPerConnectionMax} bytes of prefixes: unsubscribe some, use shorter prefixes, or open another connection`,
        message.idJson,
      );
    // And over connections: one address opening thousands of connections of full budgets held some 720 MB of the
    // node's memory (WATCH_PREFIX_BYTES_PER_ALLOWED_CONNECTION).
    const address = connection.address;
    if (address.bytes + asked > this.limits.prefixBytesPerAddressMax)
      throw new WatchProtocolError(
        'TOO_MANY_PREFIXES',
        `${counts} and the subscriptions of your address (${address.key}) hold ${address.bytes} over ${address.connections} connections; one address holds at most ${this.limits.prefixBytesPerAddressMax} bytes of prefixes: unsubscribe some or use shorter prefixes (the node's operator can raise --max-connections-per-address for a host that needs more)`,
        message.idJson,
      );
    if (this.prefixBytesHeld + asked > this.limits.prefixBytesMax)
      throw new WatchProtocolError(
        'TOO_MANY_PREFIXES',
        `${counts} and this node's subscriptions hold ${this.prefixBytesHeld} of the ${this.limits.prefixBytesMax} bytes of prefixes it holds at most; retry later, use shorter prefixes, or watch through another node`,
        message.idJson,
      );
    let group = this.groups.get(selection.key);
    if (group === undefined) {
      group = new Group(selection);
      this.groups.set(selection.key, group);
      this.index.add(group);
    }
    const fromSeq = message.fromSeq ?? this.liveSeq + 1;
    const subscription = new Subscription(connection, message.idJson, group, fromSeq, message.afterHash);
    group.members++;
    address.bytes += asked;
    this.prefixBytesHeld += asked;
    if (connection.subscriptions.length === 0) connection.subscriptions = [subscription];
    else connection.subscriptions.push(subscription);
    this.subscriptionCount++;
    this.reply(connection, subscribedMessage(message.idJson, fromSeq), 'subscribed', nowMs);
    if (connection.closing) return;
    if (this.root && fromSeq > this.liveSeq + 1) {
      this.toSnapshot(subscription);
      this.pumpAtMs = nowMs;
    } else if (fromSeq <= this.liveSeq) {
      // Its afterHash is checked against the prevHash of the first entry the catch-up reads.
      this.toCatchup(subscription, fromSeq, undefined);
      this.pumpAtMs = nowMs;
    } else {
      group.live.add(subscription);
      if (subscription.expectHash !== undefined) this.awaitHash(subscription, nowMs);
    }
  }

  /**
   * Checks a live subscription's `afterHash` against the latest published hash when it names the latest seq, or files
   * it to be checked when this node gets there (a replica behind the client).
   */
  private awaitHash(subscription: Subscription, nowMs: number): void {
    const seq = subscription.nextSeq - 1;
    if (seq === this.liveSeq) {
      this.checkHash(subscription, this.liveHash);
      if (subscription.state === 'snapshot') this.pumpAtMs = nowMs;
      return;
    }
    assert.ok(seq > this.liveSeq, 'a live subscription awaits a seq not yet published');
    const waiting = this.hashChecks.get(seq);
    if (waiting === undefined) this.hashChecks.set(seq, new Set([subscription]));
    else waiting.add(subscription);
    this.hashCheckSeqMin = Math.min(this.hashCheckSeqMin, seq);
  }

  /** The published `entry` reached seqs that live subscriptions' afterHash named. */
  private checkAwaitedHashes(entry: Entry): void {
    let seqMin = Infinity;
    for (const [seq, subscriptions] of this.hashChecks) {
      if (seq > entry.seq) {
        seqMin = Math.min(seqMin, seq);
        continue;
      }
      // A seq before entry.seq - 1 was skipped (a snapshot installed): skipTo took those to catch-up, which checks.
      assert.ok(seq >= entry.seq - 1, 'awaited hashes below the published entry were handed to catch-up');
      this.hashChecks.delete(seq);
      for (const subscription of subscriptions) this.checkHash(subscription, seq === entry.seq ? entry.hash : entry.prevHash);
    }
    this.hashCheckSeqMin = seqMin;
  }

  /** The subscription's afterHash against `hash`, this node's entry nextSeq - 1: another chain's is reset. */
  private checkHash(subscription: Subscription, hash: Buffer): void {
    const expected = subscription.expectHash;
    subscription.expectHash = undefined;
    if (expected === undefined || expected.equals(hash)) return;
    this.act({
      type: 'log',
      level: 'info',
      message: 'watch resumed from another chain: reset with a snapshot',
      fields: { fromSeq: subscription.nextSeq, afterHash: expected.toString('hex'), hash: hash.toString('hex') },
    });
    this.toSnapshot(subscription);
  }

  /** Takes a live subscription out of `hashChecks` (it is leaving the live state, or ends). */
  private unawait(subscription: Subscription): void {
    if (subscription.expectHash === undefined || subscription.state !== 'live') return;
    const seq = subscription.nextSeq - 1;
    const waiting = this.hashChecks.get(seq);
    if (waiting?.delete(subscription) === true && waiting.size === 0) this.hashChecks.delete(seq);
  }

  private unsubscribe(connection: Connection, idJson: string, nowMs: number): void {
    const subscription = connection.subscriptions.find((candidate) => candidate.idJson === idJson);
    if (subscription === undefined) throw new WatchProtocolError('UNKNOWN_ID', `no subscription ${idJson} on this connection`, idJson);
    this.remove(subscription);
    connection.subscriptions.splice(connection.subscriptions.indexOf(subscription), 1);
    this.reply(connection, unsubscribedMessage(idJson), 'unsubscribed', nowMs);
  }

  /** Ends one subscription whose read met damaged data (the store has logged and counted it); its connection goes on. */
  private endDamaged(subscription: Subscription, message: string): void {
    const connection = subscription.connection;
    this.remove(subscription);
    connection.subscriptions.splice(connection.subscriptions.indexOf(subscription), 1);
    this.send(connection, errorMessage('DATA_CORRUPTED', message, subscription.idJson), 'error');
  }

  private dropSubscriptions(connection: Connection): void {
    for (const subscription of connection.subscriptions) this.remove(subscription);
    connection.subscriptions.length = 0;
  }

  /** Detaches a subscription from the machine (not from its connection's list). */
  private remove(subscription: Subscription): void {
    assert.ok(!subscription.removed, 'a subscription is removed once');
    this.unawait(subscription);
    subscription.removed = true;
    const group = subscription.group;
    const bytes = this.chargedBytes(group.selection);
    subscription.connection.address.bytes -= bytes;
    this.prefixBytesHeld -= bytes;
    group.live.delete(subscription);
    this.lagging.delete(subscription);
    this.releaseSnapshot(subscription);
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

  /**
   * The hash of entry `done`, the seq a subscription (not in a snapshot) has everything up to, where this node knows
   * it: undefined for a live one waiting for a seq not reached yet (`done` is then the client's own seq), and for a
   * selection shown no hashes (its token may not see the chain: src/auth seesChain).
   */
  private doneHash(subscription: Subscription, done: number): Buffer | undefined {
    if (!subscription.group.selection.hashes) return undefined;
    if (done === this.liveSeq) return this.liveHash;
    return subscription.state === 'catchup' ? subscription.doneHash : undefined;
  }

  /** Records what the client now knows it has everything up to: that only grows. */
  private tell(subscription: Subscription, seq: number): void {
    // Checked before the message is built: this runs once per watcher per entry in the fan-out.
    if (seq < subscription.toldSeq) assert.fail(`a subscription's told seq only grows (${subscription.toldSeq} -> ${seq})`);
    subscription.toldSeq = seq;
  }

  /** `doneHash`: the hash of entry nextSeq - 1, if known. An afterHash not checked yet is checked by the read. */
  private toCatchup(subscription: Subscription, nextSeq: number, doneHash: Buffer | undefined): void {
    assert.ok(!subscription.removed, 'lagging subscriptions are a subset of all subscriptions');
    this.unawait(subscription);
    subscription.group.live.delete(subscription);
    subscription.state = 'catchup';
    subscription.nextSeq = nextSeq;
    subscription.doneHash = doneHash;
    this.lagging.add(subscription);
    this.counters.catchup();
  }

  private toLive(subscription: Subscription): void {
    assert.equal(subscription.snapshotId, 0, 'a subscription goes live with no snapshot open');
    this.lagging.delete(subscription);
    subscription.state = 'live';
    subscription.group.live.add(subscription);
  }

  /**
   * Entries up to `seq` (whose hash is `hash`) were applied but not published: live subscriptions that have not passed
   * it fall behind.
   */
  private skipTo(seq: number, hash: Buffer): void {
    for (const group of this.groups.values())
      for (const subscription of group.live) {
        const position = this.position(subscription);
        if (position <= seq) this.toCatchup(subscription, position, position === this.liveSeq + 1 ? this.liveHash : undefined);
      }
    this.liveSeq = seq;
    this.liveHash = hash;
  }

  // --- Live fan-out ------------------------------------------------------------------------------------------------

  private fanOut(entry: Entry, nowMs: number): void {
    if (this.subscriptionCount === this.lagging.size) return;
    let events = 0;
    let messages = 0;
    let hashHex: string | undefined;
    for (const [group, selected] of this.index.match(entry, (candidate) => candidate.live.size > 0)) {
      // Built for the first member with room: a group whose members' queues are all full costs no events text (the
      // CPU audit of 2026-12-07 found every group's message built, then dropped for want of room).
      let body: SharedBody | undefined;
      for (const subscription of group.live) {
        if (subscription.nextSeq > entry.seq) continue; // asked to start at a later seq
        if (!this.hasRoom(subscription.connection, nowMs)) {
          // Deleting the current member while iterating a Set is safe.
          this.toCatchup(subscription, entry.seq, entry.prevHash);
          continue;
        }
        if (body === undefined) {
          hashHex ??= entry.hash.toString('hex');
          body = new SharedBody(entry.seq, eventsBody(entry.seq, entry.timeMs, group.selection.hashes ? hashHex : undefined, selected), selected.length);
        }
        if (!this.sendEvents(subscription, body)) {
          this.toCatchup(subscription, entry.seq, entry.prevHash);
          continue;
        }
        events += body.eventCount;
        messages++;
      }
    }
    if (messages > 0) this.counters.sent('events', messages, events);
  }

  /** Sends the events if the message fits the connection's queue (`fits`); false: it did not, nothing was sent. */
  private sendEvents(subscription: Subscription, body: SharedBody): boolean {
    const connection = subscription.connection;
    if (body.text.length >= this.limits.sharedFragmentBytesMin) {
      // Two fragments of one message: the shared body is written to every socket without a copy.
      const head = eventsHead(subscription.idJson);
      const held = body.held();
      const ownBytes = Buffer.byteLength(head) + FRAGMENT_HEADERS_BYTES_MAX;
      if (!this.fits(connection, ownBytes + held.bytes, ownBytes + (held.holders === 0 ? held.bytes : 0))) return false;
      connection.port.sendFragments(head, body.bytes());
      if (held.holders++ === 0) this.sharedBodyBytes += held.bytes;
      connection.heldBodyBytes += held.bytes;
      (connection.heldBodies ??= []).push({ body: held, endBytes: connection.port.writtenBytes });
    } else {
      // Writing the message framed once, instead of asking ws to frame it per socket, is most of the fan-out's time.
      const frame = body.frame(subscription.idJson);
      if (!this.fits(connection, frame.length)) return false;
      connection.port.sendFramed(frame);
    }
    this.queued(connection);
    connection.lastSendTick = this.ticks;
    this.tell(subscription, body.seq);
    return true;
  }

  // --- Catch-up and snapshots -------------------------------------------------------------------------------------

  /**
   * One round of catch-up: a page of snapshot for each subscription in a snapshot, then one log read per distinct
   * position of the catch-up subscriptions, while the round's byte budget lasts. Only subscriptions whose queue has
   * room take part; the others wait for the next round.
   */
  private pump(nowMs: number): void {
    let budget = this.limits.catchupRoundBytesMax;
    let progressed = false;
    // Whether a subscription could have gone on but did not (a budget spent, a snapshot slot or reader to wait for):
    // those are looked at again after catchupPollMs. One held back only by its full queue needs no look before its
    // connection drains, which arms the pump (`drained`).
    let waiting = false;
    const positions = new Map<number, Subscription[]>();
    for (const subscription of Array.from(this.lagging)) {
      const connection = subscription.connection;
      if (subscription.removed || connection.closing) continue;
      if (!this.hasRoom(connection, nowMs)) continue;
      // Its last message did not fit the queues' budget: it waits for room there, which a close makes (`closed` arms
      // the pump) or a drain; a look every progress round otherwise, without reading the log in vain.
      if (connection.wantedBytes > 0 && !this.fits(connection, connection.wantedBytes)) continue;
      if (subscription.state === 'snapshot') {
        waiting = true;
        if (budget <= 0) continue;
        if (subscription.pendingPage !== undefined) {
          const spent = this.sendPendingPage(subscription);
          if (spent > 0) progressed = true;
          budget -= spent;
          continue;
        }
        if (subscription.snapshotId === 0) {
          if (nowMs >= subscription.snapshotRetryAtMs && this.openSnapshot(subscription, nowMs)) progressed = true;
          continue;
        }
        if (subscription.snapshotOpenedAt === this.eventCount) {
          progressed = true;
          continue;
        }
        const spent = this.sendSnapshotPage(subscription, nowMs);
        if (spent > 0) progressed = true;
        budget -= spent;
        continue;
      }
      waiting = true;
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
    // With every lagging subscription's queue full, the rounds waited only catchupPollMs: 256,000 such subscriptions
    // (one address's prefix budget) cost 16 ms a round, every 10 ms, until the stall close (CPU audit, 2026-12-07).
    // The progress round, which closes stalled connections, looks at them anyway.
    if (this.lagging.size > 0) this.pumpAtMs = progressed ? nowMs : nowMs + (waiting ? this.limits.catchupPollMs : this.limits.progressIntervalMs);
  }

  /** Serves subscriptions all at `seq` from one log read; returns the record bytes read (or 1 if it changed state). */
  private catchUp(subscriptions: Subscription[], seq: number, nowMs: number): number {
    if (seq > this.liveSeq) {
      for (const subscription of subscriptions) {
        this.toLive(subscription);
        if (subscription.expectHash !== undefined) this.awaitHash(subscription, nowMs);
      }
      return 1;
    }
    let records: readonly EncodedEntry[];
    try {
      records = this.reads.readLog(seq, this.readEntries);
    } catch (error) {
      if (isReadersFull(error)) return 0; // the next round, after catchupPollMs unless another made progress
      if (!isDataCorrupted(error)) throw error;
      for (const subscription of subscriptions) if (!subscription.removed) this.endDamaged(subscription, error.message);
      return 1;
    }
    if (records.length === 0) {
      // Trimmed (or, on a replica after a snapshot install, never written here): send the current state instead.
      for (const subscription of subscriptions) this.toSnapshot(subscription);
      return 1;
    }
    assert.equal(records[0]!.entry.seq, seq, 'the log read starts at the seq asked for');
    // The read verified entry seq against entry seq - 1 (or the log's base): its prevHash is this chain's hash there.
    for (const subscription of subscriptions) if (subscription.expectHash !== undefined) this.checkHash(subscription, records[0]!.entry.prevHash);
    let bytes = 0;
    let sent = 0;
    let events = 0;
    // The selections served here, matched as the live fan-out matches them: selecting each one's events apart cost
    // every op of the entry against every prefix of every selection, as the fan-out's range deletes did (audit,
    // 2026-12-07: 64 subscriptions of 16 prefixes, resubscribed from before an entry of 10,000 range deletes).
    const index = new SelectionIndex<Group>();
    for (const subscription of subscriptions) index.add(subscription.group);
    for (const { entry, record } of records) {
      if (entry.seq > this.liveSeq) break; // not published yet: the fan-out will bring it
      bytes += record.length;
      let hashHex: string | undefined;
      let matched: Map<Group, string[]> | undefined;
      const bodies = new Map<Group, SharedBody | null>();
      for (const subscription of subscriptions) {
        if (subscription.nextSeq !== entry.seq || subscription.state !== 'catchup' || subscription.removed) continue; // stopped earlier
        if (!this.hasRoom(subscription.connection, nowMs)) continue;
        let body = bodies.get(subscription.group);
        if (body === undefined) {
          // Every group's events at once, on the first that needs them: the others at this seq mostly do too.
          matched ??= index.match(entry, () => true);
          const selected = matched.get(subscription.group) ?? [];
          const shownHash = subscription.group.selection.hashes ? (hashHex ??= entry.hash.toString('hex')) : undefined;
          body = selected.length === 0 ? null : new SharedBody(entry.seq, eventsBody(entry.seq, entry.timeMs, shownHash, selected), selected.length);
          bodies.set(subscription.group, body);
        }
        if (body !== null) {
          // Not sent for want of room: it stays at this seq, and the pump passes it by until there is room.
          if (!this.sendEvents(subscription, body)) continue;
          sent++;
          events += body.eventCount;
        }
        subscription.nextSeq = entry.seq + 1;
        subscription.doneHash = entry.hash;
      }
    }
    // Aim the next read at about catchupReadBytesTarget, from the size of the entries just read.
    const average = bytes / Math.max(1, records.length);
    this.readEntries = Math.max(1, Math.min(this.limits.catchupReadEntriesMax, Math.floor(this.limits.catchupReadBytesTarget / Math.max(1, average))));
    for (const subscription of subscriptions)
      if (subscription.state === 'catchup' && !subscription.removed && subscription.nextSeq === this.liveSeq + 1) this.toLive(subscription);
    if (sent > 0) this.counters.sent('events', sent, events);
    return Math.max(1, bytes);
  }

  /**
   * Serves the subscription the current state next, from its first page (a snapshot it was in the middle of starts
   * over: it may be of a replaced chain). Its position and told seq come down to the latest published seq at most,
   * where the snapshot will be: a reset may go below what the client was told (src/api/watch.ts, "snapshot").
   */
  private toSnapshot(subscription: Subscription): void {
    assert.ok(!subscription.removed, 'lagging subscriptions are a subset of all subscriptions');
    const position = this.position(subscription);
    this.unawait(subscription);
    subscription.expectHash = undefined; // the snapshot replaces the client's state, whatever chain it followed
    this.releaseSnapshot(subscription);
    subscription.group.live.delete(subscription);
    this.lagging.add(subscription);
    subscription.state = 'snapshot';
    subscription.snapshotBegins = true;
    subscription.nextSeq = Math.min(position, this.liveSeq + 1);
    subscription.toldSeq = Math.min(subscription.toldSeq, this.liveSeq);
    this.counters.snapshot();
  }

  /** Takes a snapshot slot if one is free: the snapshot is opened by the adapter and read from the next event on. */
  private openSnapshot(subscription: Subscription, nowMs: number): boolean {
    if (this.snapshotsOpen >= this.limits.snapshotsMax || this.reads.reserveSnapshot?.() === false) return false;
    this.snapshotsOpen++;
    assert.ok(this.snapshotsOpen <= this.limits.snapshotsMax, 'open snapshots within their limit');
    subscription.snapshotId = ++this.lastSnapshotId;
    subscription.snapshotOpenedAt = this.eventCount;
    subscription.snapshotStartedMs = nowMs;
    this.act({ type: 'openSnapshot', snapshotId: subscription.snapshotId, ranges: selectionRanges(subscription.group.selection) });
    return true;
  }

  private releaseSnapshot(subscription: Subscription): void {
    subscription.pendingPage = undefined;
    if (subscription.snapshotId === 0) return;
    this.act({ type: 'releaseSnapshot', snapshotId: subscription.snapshotId });
    subscription.snapshotId = 0;
    this.snapshotsOpen--;
    assert.ok(this.snapshotsOpen >= 0);
  }

  /** Sends the next page (the last one with done: true) and returns its key and value bytes (0: no reader was free). */
  private sendSnapshotPage(subscription: Subscription, nowMs: number): number {
    let page: WatchSnapshotPage;
    try {
      page = this.reads.snapshotPage(subscription.snapshotId, this.limits.snapshotPageBytes);
    } catch (error) {
      if (isReadersFull(error)) {
        this.releaseSnapshot(subscription);
        subscription.snapshotRetryAtMs = nowMs + this.limits.catchupPollMs;
        return 0;
      }
      if (!isDataCorrupted(error)) throw error;
      this.endDamaged(subscription, error.message);
      return 1;
    }
    const keysOnly = subscription.group.selection.filters.keysOnly;
    const done = page.records.length === 0;
    const text = snapshotMessage(
      subscription.idJson,
      page.seq,
      page.records.map((record) => snapshotItemJson(record, keysOnly)),
      done,
      subscription.snapshotBegins,
      done && subscription.group.selection.hashes ? page.hash.toString('hex') : undefined,
    );
    subscription.snapshotBegins = false;
    let recordBytes = 1;
    for (const record of page.records) recordBytes += record.key.length + record.value.length;
    // A page is as large as its largest value (at least one record a page): it waits for room as events do.
    subscription.pendingPage = { text, bytes: Buffer.byteLength(text) + FRAME_HEADER_BYTES_MAX, page, recordBytes };
    return this.sendPendingPage(subscription);
  }

  /** Sends the page read last if it fits the connection's queue; returns its record bytes (0: it waits for room). */
  private sendPendingPage(subscription: Subscription): number {
    const { text, bytes, page, recordBytes } = subscription.pendingPage ?? assert.fail('a page is pending');
    const connection = subscription.connection;
    if (!this.fits(connection, bytes)) return 0;
    subscription.pendingPage = undefined;
    // The message it wanted room for went out (as `queued` says for events).
    connection.wantedBytes = 0;
    this.send(connection, text, 'snapshot');
    if (page.records.length === 0) {
      const seq = page.seq;
      this.releaseSnapshot(subscription);
      this.tell(subscription, seq);
      subscription.state = 'catchup';
      subscription.nextSeq = seq + 1;
      subscription.doneHash = page.hash;
      // The snapshot may be ahead of the last published seq (a replica applies before it publishes): live then waits.
      if (seq + 1 >= this.liveSeq + 1) this.toLive(subscription);
    }
    return recordBytes;
  }

  // --- Progress, heartbeats, stalls -------------------------------------------------------------------------------

  private progressRound(nowMs: number): void {
    this.ticks++;
    const frames = new ProgressFrames(this.liveSeq, this.liveHash);
    let sent = 0;
    for (const connection of this.connections.values()) {
      if (connection.closing) continue;
      if (this.silent(connection, nowMs)) continue;
      if (connection.blockedSinceMs >= 0 && this.stalled(connection, nowMs)) {
        this.slowClose(connection, `send queue full and not shrinking for ${this.limits.stallMs} ms`);
        continue;
      }
      if (connection.subscriptions.some((subscription) => subscription.snapshotId !== 0 && nowMs - subscription.snapshotStartedMs > this.limits.snapshotMsMax)) {
        this.slowClose(connection, `snapshot not received within ${this.limits.snapshotMsMax} ms`);
        continue;
      }
      const heartbeat = (this.ticks - connection.lastSendTick) * this.limits.progressIntervalMs >= this.limits.heartbeatIntervalMs;
      for (const subscription of connection.subscriptions) {
        if (subscription.state === 'snapshot') continue;
        const done = this.position(subscription) - 1;
        if (done <= subscription.toldSeq && !heartbeat) continue;
        if (!this.hasRoom(connection, nowMs)) break;
        connection.port.sendFramed(frames.frame(subscription.idJson, done, this.doneHash(subscription, done), subscription.group.selection.hashes));
        this.see(connection, connection.port.bufferedBytes);
        connection.lastSendTick = this.ticks;
        sent++;
        this.tell(subscription, done);
      }
    }
    if (sent > 0) this.counters.sent('progress', sent, 0);
  }

  /**
   * Whether the connection's client is gone: nothing came from it for `peerSilentMs`, pings included (it is then closed
   * with 4408). One quiet for a heartbeat interval is pinged, once per interval. Heartbeats alone do not tell: a
   * vanished client (no FIN, no RST) leaves them unacknowledged in the kernel, which retransmits for 15 minutes, and a
   * connection without subscriptions is sent none at all (docs/decisions.md, record 83).
   */
  private silent(connection: Connection, nowMs: number): boolean {
    // A queue that shrank since the last round is a client that takes bytes, however slowly, with a ping far behind
    // them: the kernel takes more once the client acknowledges what it had.
    const buffered = connection.port.bufferedBytes;
    if (buffered < connection.silenceQueuedBytes) connection.tookMs = nowMs;
    connection.silenceQueuedBytes = buffered;
    const quietMs = nowMs - Math.max(connection.port.heardMs, connection.tookMs);
    if (quietMs >= this.limits.peerSilentMs) {
      this.counters.silentClose();
      this.act({ type: 'log', level: 'info', message: 'watch connection closed: client silent', fields: { quietMs, subscriptions: connection.subscriptions.length } });
      this.closeConnection(connection, WatchCloseCode.PEER_SILENT, `nothing received for ${this.limits.peerSilentMs} ms, not even a pong: reconnect and resume`);
      return true;
    }
    const interval = this.limits.heartbeatIntervalMs;
    if (quietMs >= interval && (this.ticks - connection.lastPingTick) * this.limits.progressIntervalMs >= interval) {
      connection.port.ping();
      connection.lastPingTick = this.ticks;
    }
    return false;
  }

  /** Whether a full queue has stopped shrinking for stallMs (a queue that shrinks restarts the clock). */
  private stalled(connection: Connection, nowMs: number): boolean {
    const buffered = connection.port.bufferedBytes;
    if (!this.full(connection, buffered)) {
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

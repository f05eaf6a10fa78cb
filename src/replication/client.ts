/**
 * The replica side's TCP adapter: drives one `Downstream` state machine with real sockets, timers and the LMDB store.
 * It performs the machine's actions in order and tells the node what changed (`onApplied`, `onHeartbeat`,
 * `onChainReset`), so the node can forward entries to its own children, publish them to watchers and wake readers.
 *
 * Durability: a replica applies entries without fsync (its store is opened `noSync`, guarded against machine crashes
 * by src/store/unsynced-guard.ts). A process crash loses nothing it wrote; after a machine crash the replica starts
 * empty and bootstraps from a snapshot. Verified entries go to the node's children (`onVerified`) just before its own
 * write, so a crash between the two leaves children ahead of it: they are refused as BEHIND and use another upstream
 * meanwhile (docs/decisions.md, record 30).
 *
 * Batching (record 33): verified entries wait for the end of the event-loop turn (`setImmediate`), so that every entry
 * read in that turn (several socket reads under load, or what queued while the previous write ran) is forwarded and
 * written together, in one write transaction. Forwarding and the write still happen back to back, so a crash falls
 * before both or between them as before. Every other action of the machine (a send, a snapshot, a heartbeat, a close)
 * waits behind the entries held before it, so nothing leaves this node claiming entries it has not written, and the
 * store and the children see the upstream's stream in its order. A turn writes at most `applyBatchKeysMax` keys (puts,
 * deletes, keys of range deletes; an entry is never split): what is held beyond them, and the actions behind it, wait
 * for a later turn, so that a replica catching up on large range deletes still answers reads, runs its timers and
 * serves its children between transactions.
 */
import net from 'node:net';
import tls from 'node:tls';
import { randomInt, type KeyObject } from 'node:crypto';
import { tlsErrorHint } from '../client/index.js';
import { TickTimer, type Clock } from '../clock/index.js';
import { parseHostPort } from '../config/index.js';
import type { EncodedEntry } from '../log/index.js';
import type { Logger } from '../logging/index.js';
import { MercuryError, isDataCorrupted } from '../errors/index.js';
import { clientTlsOptions, type TlsMaterial } from '../net/index.js';
import type { Store } from '../store/index.js';
import { ROOT_KEY_KEY, TrustedKeys } from '../trust/index.js';
import { Downstream, type Divergence, type DownstreamAction, type DownstreamHistory, type DownstreamStatus } from './downstream.js';
import { REPLICATION_LIMITS, type ReplicationLimits } from './limits.js';
import type { Heartbeat } from './protocol.js';

export interface ReplicationClientOptions {
  readonly store: Store;
  /** Upstream replication addresses, "host:port", in order of preference. */
  readonly upstreams: readonly string[];
  readonly clock: Clock;
  readonly logger: Logger;
  readonly limits?: ReplicationLimits;
  /**
   * Entries were verified (chain, and signatures with trusted keys) and are about to be applied, in seq order: the
   * node forwards them to its children now, beside its own write (docs/decisions.md, record 30). Absent: nothing.
   */
  readonly onVerified?: (entries: readonly EncodedEntry[]) => void;
  /** Entries were applied (one write transaction), in seq order. */
  readonly onApplied: (entries: readonly EncodedEntry[], applyMs: number) => void;
  /** A heartbeat from the root arrived through the upstream (path: root .. upstream): forward it to children. */
  readonly onHeartbeat: (heartbeat: Heartbeat) => void;
  /** A snapshot replaced the node's chain. */
  readonly onChainReset: (seq: number) => void;
  /**
   * The upstream was dropped as stale, and `httpUrl` is the HTTP API it announced: the node ends the writes it forwarded
   * there, which would otherwise wait for their own timeout (record 86). Absent: nothing.
   */
  readonly onUpstreamSilent?: (httpUrl: string, reason: string) => void;
  /**
   * Mutual TLS to the upstream: the credentials for each new connection (a reload applies to the next one). The
   * upstream's certificate must verify against the CA and name the host of its `--upstream` address.
   */
  readonly tls?: () => TlsMaterial;
  /** Each upstream connection once its handshake verified (TlsCredentials#track: closed if a new CA file no longer signs it). */
  readonly trackTls?: (socket: tls.TLSSocket) => void;
  /** This node's HTTP API, told to each upstream in HELLO (shown in the upstream's status); read at each connection. */
  readonly httpUrl?: () => string;
  /** The bearer token presented in HELLO (it needs the `replicate` scope on an upstream with auth required). */
  readonly credential?: string;
  /** Public keys whose signatures entries and snapshots must carry (`--trust-key`); undefined: trust the upstream. */
  readonly trustKeys?: readonly KeyObject[];
}

const SNAPSHOT_PROGRESS_LOG_INTERVAL_MS = 5_000;
/**
 * Most verified entries written in one transaction; more held are written in the next. The upstream's window
 * (`childWindowEntriesMax`) bounds them already; this bounds the transaction should the limits grow.
 */
const APPLY_BATCH_ENTRIES_MAX = 4096;
/** After a failed store write, how long the replica waits before it reconnects and tries again. */
const STORAGE_RETRY_MS = 1_000;
/**
 * What one op of a held entry costs in memory once decoded, about (its object and the Buffer views of its key and
 * value): an entry of tiny puts takes some 20 times its record bytes decoded, so held entries are weighed by both
 * (`heldWeight`), not by their wire bytes alone.
 */
const HELD_OP_BYTES = 256;

/** The memory an entry held for writing takes, about: its record and its decoded ops. */
function heldWeight(entry: EncodedEntry): number {
  return entry.record.length + entry.entry.ops.length * HELD_OP_BYTES;
}

export class ReplicationClient {
  private readonly options: ReplicationClientOptions;
  private downstream: Downstream;
  private readonly timer: TickTimer;
  private readonly sockets = new Map<number, net.Socket>();
  private stopped = false;
  private lastProgressLogMs = 0;
  /** Verified entries not yet forwarded nor written, in seq order (the machine's head already includes them). */
  private pending: EncodedEntry[] = [];
  /**
   * The machine's actions not yet performed, in order: those that came behind held entries wait until the entries are
   * written (at the end of this turn, or of a later one when the turn's keys are spent).
   */
  private waiting: DownstreamAction[] = [];
  private turnEndArmed = false;
  /** Keys one turn writes at most, past its first entry (ReplicationLimits). */
  private readonly applyBatchKeysMax: number;
  /** The `heldWeight` of the entries of `apply` actions in `waiting` and `pending`: verified, not yet written. */
  private heldBytes = 0;
  /** The most `heldBytes` has been since start (a gauge: how close an upstream's flood came to the bound). */
  private heldBytesPeak = 0;
  /**
   * The storage failure that paused replication (storageFailed), until an install, an apply or a divergence record goes
   * through, or a halt on damaged data (see `storagePause`).
   */
  private pausedBy: MercuryError | undefined;
  /** Held weight past which the upstream's socket is paused (`replicaHeldBytesMax`; see `holdBack`). */
  private readonly heldBytesMax: number;
  /** Sockets paused because too much was held; resumed when the held entries are written (`resumeHeldBack`). */
  private readonly pausedSockets = new Set<net.Socket>();
  /**
   * Entries written and snapshots installed since start: what a machine made afresh counts from (`dropMachine`), since
   * the one it replaces counted what it verified, and what it held or failed to write or install is dropped unwritten.
   */
  private entriesWritten = 0;
  private snapshotsWritten = 0;

  constructor(options: ReplicationClientOptions) {
    this.options = options;
    const limits = options.limits ?? REPLICATION_LIMITS;
    this.applyBatchKeysMax = limits.applyBatchKeysMax;
    this.heldBytesMax = limits.replicaHeldBytesMax;
    this.downstream = this.machineFromStore();
    this.timer = new TickTimer(options.clock, () => this.perform(this.downstream.tick(options.clock.monotonicMs())));
  }

  /** A state machine that starts from what the store holds, and from `history` when it replaces one (see DownstreamHistory). */
  private machineFromStore(history?: DownstreamHistory): Downstream {
    const store = this.options.store;
    const head = store.head();
    const headTimeMs = head.seq === 0 ? undefined : store.readLog(head.seq, 1)[0]?.entry.timeMs;
    return new Downstream({
      nodeId: store.nodeId,
      upstreams: this.options.upstreams,
      datasetId: store.datasetId,
      head,
      headTimeMs,
      limits: this.options.limits ?? REPLICATION_LIMITS,
      random: () => randomInt(1 << 30) / (1 << 30),
      httpUrl: this.options.httpUrl,
      credential: this.options.credential,
      // The key of the last rotation this node applied is in its key space, when every entry there was verified; data
      // applied without the checks may hold a relay's key (the node resyncs it first, node.ts).
      trust: this.options.trustKeys === undefined ? undefined : new TrustedKeys(this.options.trustKeys, store.verified ? store.get(ROOT_KEY_KEY).record?.value : undefined),
      // Where the last run left replication (docs/decisions.md, record 58): a resync to carry on, or a divergence.
      resync: store.resyncRequested,
      divergence: store.recordedDivergence(),
      history,
    });
  }

  /**
   * A write to the store failed for the storage (disk full, I/O error; the store has logged and counted it). The
   * machine already counts the entries it asked to apply as its head, so it is dropped with its connections, and a
   * new one starts from what the store really holds once STORAGE_RETRY_MS has passed. The node keeps serving reads.
   */
  private storageFailed(fault: MercuryError): void {
    this.options.logger.log('error', 'replication paused: the store cannot write', { code: fault.code, retryMs: STORAGE_RETRY_MS });
    this.pausedBy = fault;
    this.timer.cancel();
    // Not forwarded either: children only ever get what this node was about to write. What waited behind it was the
    // dropped machine's, for its connections.
    this.dropMachine();
    this.options.clock.setTimeout(() => {
      if (!this.stopped) this.start();
    }, STORAGE_RETRY_MS);
  }

  /**
   * Applying an entry met damaged data in this node's store (a put reads the key's record for its createSeq and
   * version; the store has logged and counted it, and readiness reports DATA_CORRUPTED). Every retry would meet it
   * again, so replication halts until an operator resyncs the node (the snapshot replaces its key space) or restores its
   * data directory (README, "Damaged data"). As after a storage failure, the machine is made afresh from what the store
   * holds, and nothing held is forwarded; the node keeps serving reads and its own children. A halt is final like a
   * divergence, so it ends a storage pause: nothing is retried every second any more, and the halt says what is wrong.
   */
  private dataDamaged(error: MercuryError): void {
    this.pausedBy = undefined;
    this.timer.cancel();
    this.dropMachine();
    this.perform(this.downstream.halt(this.options.clock.monotonicMs(), `${error.code}: ${error.message}`));
  }

  /** Drops the machine with its connections and everything held for it, and makes one afresh from the store. */
  private dropMachine(): void {
    this.pending = [];
    this.waiting = [];
    this.heldBytes = 0;
    this.pausedSockets.clear();
    for (const socket of this.sockets.values()) socket.destroy();
    this.sockets.clear();
    // Not a new process: status and the gauges that are counters go on from what was done. A fresh count of installs
    // had `mercury resync --wait`, which waits for one more than it read, give up on a resync that a full disk delayed.
    this.downstream = this.machineFromStore({ ...this.downstream.history(), entriesApplied: this.entriesWritten, snapshotsInstalled: this.snapshotsWritten });
  }

  /** The weight of the verified entries held for writing (the gauge `mercury_replication_held_bytes`). */
  held(): number {
    return this.heldBytes;
  }

  /** The most held at once since start (the gauge `mercury_replication_held_bytes_peak`). */
  heldPeak(): number {
    return this.heldBytesPeak;
  }

  start(): void {
    this.perform(this.downstream.start(this.options.clock.monotonicMs()));
  }

  /**
   * The operator's decision after a divergence (or at any time): drop the chain and take a full snapshot. Recorded in
   * the store first (a storage failure throws, and nothing is acknowledged), so that a restart before the snapshot is
   * installed carries it on; the install removes the record.
   */
  resync(): void {
    this.options.store.requestResync();
    this.perform(this.downstream.resync(this.options.clock.monotonicMs()));
  }

  status(): DownstreamStatus {
    return this.downstream.status();
  }

  /**
   * The storage failure that paused replication, until a write that moves replication on goes through: a snapshot
   * install, an apply, or the record of a divergence (a final state: nothing is applied while diverged, so a pause
   * from a failed record stayed until the operator's resync, "retried every second" of a replica that retried nothing).
   * A halt on damaged data met by the retry ends it too, for the same reason: nothing is retried until the operator
   * resyncs or restores, and readiness says NOT_JOINED halted (audit, 2026-12-07). A resync request that fails for the
   * storage leaves the pause as it was: it is the store's write fault, answered to the operator, not a pause of
   * replication, which goes on retrying or stays halted.
   * Not any write: the store's own write fault does not last that long, since a snapshot too large for the disk fails,
   * its records are dropped, and the next small write (readiness's probe, the next install's start) succeeds, so a
   * replica that could never join said only NOT_JOINED "idle", with writable storage (audit, 2026-12-07).
   */
  storagePause(): MercuryError | undefined {
    return this.pausedBy;
  }

  /** Why this replica stopped following for divergence, and at which head (what its children are told): see Downstream. */
  divergence(): Divergence | undefined {
    return this.downstream.divergence();
  }

  /** Root .. the current upstream: what this node tells its own children. */
  ancestors(): readonly string[] {
    return this.downstream.currentAncestors();
  }

  close(): void {
    if (this.stopped) return;
    // Held entries are verified: written now, like those of a turn that ended, with what waited behind them (stop()
    // emits no action without a session). In transactions of the usual size, back to back: nothing waits for turns.
    this.guarded(() => {
      while (this.performWaiting()) this.writeHeld(true);
    });
    this.perform(this.downstream.stop(this.options.clock.monotonicMs()));
    this.stopped = true;
    this.timer.cancel();
    for (const socket of this.sockets.values()) socket.destroy();
    this.sockets.clear();
  }

  private connect(connId: number, address: string): void {
    // The config module validated every upstream address with the same parser at start-up.
    const { host, port } = parseHostPort(address, 'upstream');
    const clock = this.options.clock;
    const material = this.options.tls?.();
    const socket =
      material === undefined
        ? net.connect({ host, port, noDelay: true })
        : // SNI carries host names only; an IP address is checked against the certificate's IP entries all the same.
          tls.connect({ host, port, servername: net.isIP(host) === 0 ? host : undefined, ...clientTlsOptions(material) });
    if (material !== undefined) socket.setNoDelay(true);
    this.sockets.set(connId, socket);
    let failure = 'connection closed';
    socket.on(material === undefined ? 'connect' : 'secureConnect', () => {
      if (material !== undefined) this.options.trackTls?.(socket as tls.TLSSocket);
      this.perform(this.downstream.connected(clock.monotonicMs(), connId));
    });
    socket.on('data', (chunk: Buffer) => {
      this.perform(this.downstream.receive(clock.monotonicMs(), connId, chunk));
      this.holdBack(socket);
    });
    socket.on('error', (error: Error & { code?: string }) => {
      const hint = tlsErrorHint(error, material !== undefined);
      failure = hint === undefined ? error.message : `${error.message}: ${hint}`;
    });
    socket.on('close', () => {
      if (this.sockets.get(connId) !== socket) return;
      this.sockets.delete(connId);
      this.perform(this.downstream.closed(clock.monotonicMs(), connId, failure));
    });
  }

  private perform(actions: readonly DownstreamAction[]): void {
    for (const action of actions) {
      if (action.type === 'apply') for (const entry of action.entries) this.heldBytes += heldWeight(entry);
      this.waiting.push(action);
    }
    if (this.heldBytes > this.heldBytesPeak) this.heldBytesPeak = this.heldBytes;
    this.guarded(() => {
      if (this.performWaiting()) this.armTurnEnd();
      // Exactly the machine's next deadline, later ones included: a timer left at an earlier time would wake the
      // replica for nothing.
      this.timer.reschedule(this.downstream.nextTickMs());
    });
  }

  /**
   * Runs store work; a storage failure pauses replication (`storageFailed`), damaged data halts it (`dataDamaged`),
   * anything else is a bug and throws.
   */
  private guarded(work: () => void): void {
    if (this.stopped) return;
    try {
      work();
    } catch (error) {
      if (isDataCorrupted(error)) return this.dataDamaged(error);
      if (!(error instanceof MercuryError) || !error.code.startsWith('STORAGE_')) throw error;
      this.storageFailed(error);
    }
  }

  /**
   * Performs the waiting actions in order, holding the entries of `apply`, up to the first that must follow held
   * entries: an ACK names them, a snapshot replaces them, a heartbeat or a close must not overtake them on the way to
   * the children. True if entries are held (the waiting actions behind them, if any, need them written first).
   */
  private performWaiting(): boolean {
    // One at a time off the front: an action's callback into the node may perform more (a reentrant `perform`), which
    // must find only what is still to do.
    for (;;) {
      const action = this.waiting[0];
      if (action === undefined) return this.pending.length > 0;
      if (action.type !== 'apply' && action.type !== 'log' && this.pending.length > 0) return true;
      this.waiting.shift();
      if (action.type === 'apply') for (const entry of action.entries) this.pending.push(entry);
      else this.performAction(action);
    }
  }

  private performAction(action: Exclude<DownstreamAction, { type: 'apply' }>): void {
    const { store, logger } = this.options;
    switch (action.type) {
      case 'connect':
        this.connect(action.connId, action.upstream);
        break;
      case 'send':
        this.sockets.get(action.connId)?.write(action.bytes);
        break;
      case 'close': {
        const socket = this.sockets.get(action.connId);
        this.sockets.delete(action.connId);
        socket?.destroy();
        break;
      }
      case 'snapshotBegin':
        store.beginSnapshotInstall();
        break;
      case 'snapshotChunk':
        store.stageSnapshotPage(action.records);
        this.downstream.staged(action.connId, action.received);
        this.logSnapshotProgress();
        break;
      case 'snapshotAbort':
        store.beginSnapshotInstall(); // discards the staged records
        break;
      case 'snapshotFinish':
        // With trusted keys the machine verified the snapshot's signed head before this: the data is verified.
        store.finishSnapshotInstall(action.seq, action.hash, action.datasetId, this.options.trustKeys !== undefined);
        this.snapshotsWritten++;
        this.pausedBy = undefined;
        this.options.onChainReset(action.seq);
        break;
      case 'heartbeat':
        this.options.onHeartbeat(action.heartbeat);
        break;
      case 'upstreamSilent':
        this.options.onUpstreamSilent?.(action.httpUrl, action.reason);
        break;
      case 'diverged':
        store.recordDivergence(action.divergence.head, action.divergence.reason);
        // Nothing is applied while diverged: this write is the last replication makes until a resync, so it ends a pause.
        this.pausedBy = undefined;
        break;
      case 'log':
        logger.log(action.level, action.message, action.fields);
        break;
    }
  }

  /**
   * Pauses the upstream's socket while the entries held weigh more than `replicaHeldBytesMax`: TCP holds the rest back.
   * An honest upstream keeps at most a window unacknowledged, and this node's ACK waits behind the entries it names
   * until they are written, so with entries of a few ops it never gets here. One that ignores the window (a hostile
   * relay replaying a genuine signed backlog, or any upstream of a replica without --trust-key) made a replica hold
   * whatever it read faster than it wrote: 129 MB of entries of 10,000 puts each took one to 1.8 GB (docs/security.md).
   */
  private holdBack(socket: net.Socket): void {
    if (this.heldBytes <= this.heldBytesMax || socket.destroyed) return;
    socket.pause();
    this.pausedSockets.add(socket);
  }

  /** Held entries were written: sockets paused for them read again once what is held is within the bound. */
  private resumeHeldBack(): void {
    if (this.pausedSockets.size === 0 || this.heldBytes > this.heldBytesMax) return;
    for (const socket of this.pausedSockets) socket.resume();
    this.pausedSockets.clear();
  }

  /** Entries are held: they, and what waits behind them, are written and performed at the end of this turn. */
  private armTurnEnd(): void {
    if (this.turnEndArmed) return;
    this.turnEndArmed = true;
    setImmediate(() => {
      this.turnEndArmed = false;
      this.guarded(() => this.endTurn());
      this.resumeHeldBack();
    });
  }

  /**
   * The end of a turn: the held entries are forwarded and written, and the actions behind them performed, until the
   * turn's `applyBatchKeysMax` keys are spent; the rest waits for the end of the next turn, so that reads, timers and
   * the other sockets run in between. With entries of a few ops this is one transaction per turn, as before the budget.
   */
  private endTurn(): void {
    let keysLeft = this.applyBatchKeysMax;
    for (let first = true; this.performWaiting(); first = false) {
      const keys = this.writeHeld(first, keysLeft);
      if (keys === undefined) return this.armTurnEnd();
      keysLeft -= keys;
    }
  }

  /** Large snapshots take a while: say how far along they are every few seconds (status has it at any time). */
  private logSnapshotProgress(): void {
    const nowMs = this.options.clock.monotonicMs();
    if (nowMs - this.lastProgressLogMs < SNAPSHOT_PROGRESS_LOG_INTERVAL_MS) return;
    if (this.lastProgressLogMs !== 0) this.options.logger.log('info', 'snapshot progress', { ...this.downstream.status().snapshot });
    this.lastProgressLogMs = nowMs;
  }

  /**
   * Forwards the first held entries to the children, then writes them in one transaction (record 30, record 33): as
   * many as fit in `keysLeft` keys (Store.keysToApply) and APPLY_BATCH_ENTRIES_MAX, and at least one if `first` (the
   * turn's first transaction). Returns the keys written, or undefined when the next entry must wait for another turn.
   */
  private writeHeld(first: boolean, keysLeft = this.applyBatchKeysMax): number | undefined {
    // A spent turn need not count the next entry's keys: it would count them again in the next turn.
    if (!first && keysLeft <= 0) return undefined;
    const store = this.options.store;
    const cut = store.keysToApply(this.pending.length > APPLY_BATCH_ENTRIES_MAX ? this.pending.slice(0, APPLY_BATCH_ENTRIES_MAX) : this.pending, keysLeft);
    if (!first && cut.keys > keysLeft) return undefined;
    const entries = this.pending.splice(0, cut.entries);
    for (const entry of entries) this.heldBytes -= heldWeight(entry);
    const clock = this.options.clock;
    // Children first: their hop overlaps this node's write instead of waiting for it.
    this.options.onVerified?.(entries);
    const startedMs = clock.monotonicMs();
    store.applyVerified(entries);
    this.entriesWritten += entries.length;
    this.pausedBy = undefined;
    this.options.onApplied(entries, clock.monotonicMs() - startedMs);
    return cut.keys;
  }
}

/**
 * A seeded, deterministic simulation of a whole replication tree: the real `Downstream` and `Upstream` state
 * machines, in-memory stores, and a simulated network, all driven by one event queue and one seed.
 *
 * The network keeps TCP's promises and nothing more: bytes on one connection arrive in order, after a random delay,
 * possibly split; a connection can be reset (how TCP turns loss into an error), black-holed by a partition (neither
 * side hears anything, both must time out), refused by a host whose process is down, or silently abandoned by a
 * crashed host. Some links corrupt ENTRIES frames: either on the wire (caught by the frame CRC) or by a faulty relay
 * that re-frames the damage (caught only by the hash chain). Nodes crash and restart with only what they had made
 * durable; the root and the intermediates trim their logs, so rejoining nodes need snapshots.
 *
 * While faults run, every applied entry is checked against the root's chain, and every installed snapshot against
 * the root's key space at its seq. After the faults stop the run continues until every node holds the root's head,
 * then checks key spaces, retained logs and each node's apply history (ordered, no entry applied twice). Watches run
 * alongside (watchers.ts): the real watch machine on the root and seven replicas, with consumers whose every message is
 * checked against the root's log, and which must all reach the root's head before the run counts as converged. Any
 * violation throws a `SimulationFailure` whose message ends with "reproduce with seed=N".
 *
 * With `signing`, the root signs entries and snapshots, every replica trusts only the root's key (and lists the root
 * last, where it takes snapshots, which relays cannot sign), and a few intermediate nodes are forging relays: every
 * frame they send is rewritten by test/support/forge.ts (values changed, hashes recomputed, signatures kept, stripped
 * or made with another key). A forged frame that a child applies fails the run, as does a child that stays on the
 * forger's connection after a forged ENTRIES frame or snapshot end. With `withholders`, a few more intermediate nodes
 * are withholding relays (test/support/forge.ts `Withholder`): they drop every ENTRIES frame they send, and half of
 * them also pin their heartbeats' rootSeq; a child that still follows such a relay twice its stale time after an entry
 * was withheld from it (or after the first heartbeat that told it the root was past it, if later) fails the run.
 */
import { createPrivateKey } from 'node:crypto';
import { crc32 } from 'node:zlib';
import type { EncodedEntry, Op } from '../../../src/log/index.js';
import {
  Downstream,
  MessageType,
  REPLICATION_LIMITS_TEST,
  RootHeartbeats,
  Upstream,
  type DownstreamAction,
  type Heartbeat,
  type ReplicationLimits,
  type UpstreamAction,
} from '../../../src/replication/index.js';
import { Signer, TrustedKeys } from '../../../src/trust/index.js';
import { Forger, Withholder, type SignatureForgery } from '../forge.js';
import { EventQueue } from './event-queue.js';
import { MemoryStore } from './memory-store.js';
import { Prng } from './prng.js';
import { ReferenceChain, diffKeySpaces } from './reference.js';
import { SimWatchers, type WatchStats } from './watchers.js';

export interface SimulationOptions {
  readonly seed: number;
  /** Children per node at each level below the root. The default [4, 4, 12] makes 213 nodes, depth 3. */
  readonly fanout?: readonly number[];
  /** How long faults (crashes, partitions, resets, corruption, delay spikes) are injected. */
  readonly faultMs?: number;
  /** The root keeps writing this long after the faults stop. */
  readonly writeTailMs?: number;
  /** After the writes stop, the tree must converge within this long. */
  readonly settleMsMax?: number;
  readonly limits?: ReplicationLimits;
  /** false: no crashes, partitions, resets, corruption or delay spikes (a healthy tree, for checks of false alarms). */
  readonly faults?: boolean;
  /** The root writes an entry every [min, max] ms (default [5, 40]). Gaps longer than the stale time leave heartbeats alone to keep links alive. */
  readonly writeIntervalMs?: readonly [number, number];
  /**
   * The root's wall clock minus simulated time, at a simulated time (default 0): entry times and heartbeat times come
   * from it, so that a clock stepping forward or back reaches the replicas. Every deadline runs on simulated time,
   * which is each node's monotonic clock.
   */
  readonly rootClockOffsetMs?: (simMs: number) => number;
  /** Watch consumers (src/watch machines run on the root and a few replicas); 0 leaves watches out. */
  readonly watchConsumers?: number;
  /** Signed entries, `forgers` forging relays and `withholders` withholding relays among the intermediate nodes (see the header). */
  readonly signing?: { readonly forgers: number; readonly withholders?: number };
}

export interface SimulationStats {
  nodes: number;
  rootSeq: number;
  simMs: number;
  events: number;
  convergedAfterMs: number;
  crashes: number;
  restarts: number;
  partitions: number;
  resets: number;
  upstreamDrops: number;
  refusals: Record<string, number>;
  staleDrops: number;
  snapshotsInstalled: number;
  /** Snapshots installed by nodes that had joined before: they fell behind a trimmed log. */
  rejoinSnapshots: number;
  entriesApplied: number;
  corruptInjected: { wire: number; relay: number };
  corruptDetected: { wire: number; relay: number };
  /** Frames rewritten by forging relays, and forged ENTRIES frames or snapshot ends whose child dropped the forger. */
  forged: { injected: number; detected: number };
  /** Entries withheld by withholding relays, and connections to them their child left after an entry was withheld. */
  withheld: { entries: number; left: number };
  watch: WatchStats;
}

export class SimulationFailure extends Error {
  constructor(
    readonly seed: number,
    message: string,
  ) {
    super(`${message}\nreproduce with seed=${seed}`);
    this.name = 'SimulationFailure';
  }
}

const ROOT_ID = 'n0';
const DATASET_ID = 'sim-dataset';
const KEYS = 64;
/**
 * Beyond the window, an upstream may have one frame in flight that crossed it (at most one record past the frame
 * target), plus heartbeats, which it sends whatever the window: a child that stopped acknowledging collects them
 * until it is timed out.
 */
const UNACKED_SLACK_BYTES = 4 * 1024;

type Side = 0 | 1; // 0: the client (downstream) end, 1: the server (upstream) end.

interface Conn {
  readonly id: number;
  readonly client: SimNode;
  readonly server: SimNode;
  readonly clientIncarnation: number;
  serverIncarnation: number;
  readonly clientConnId: number;
  /** Whether each end still has the socket open. */
  readonly open: [boolean, boolean];
  /** Reset or black-holed: nothing more is delivered. */
  dead: boolean;
  accepted: boolean;
  /** FIFO per direction: the time of the last delivery scheduled towards each end. */
  readonly lastDeliveryMs: [number, number];
  /** The rewriter of a connection whose upstream is a forging relay. */
  forger?: Forger;
  /** The rewriter of a connection whose upstream is a withholding relay, and whether its child is being watched. */
  withholder?: Withholder;
  withholdWatched?: boolean;
  /** When a watched child first got a heartbeat saying the root is past its head, after an entry was withheld. */
  withholdRevealedMs?: number;
  /** Whether its child's leaving was counted (`withheld.left`). */
  withholdLeftCounted?: boolean;
}

interface Session {
  readonly conn: Conn;
  readonly upstream: Upstream;
}

type HistoryEvent =
  | { readonly kind: 'start'; readonly seq: number }
  | { readonly kind: 'apply'; readonly seq: number }
  | { readonly kind: 'snapshot'; readonly seq: number }
  | { readonly kind: 'crash'; readonly seq: number };

class SimNode {
  readonly store: MemoryStore;
  alive = true;
  incarnation = 0;
  downstream: Downstream | undefined;
  readonly sessions = new Map<number, Session>();
  readonly clientConns = new Map<number, Conn>();
  latestHeartbeat: Heartbeat | undefined;
  /** The last entry verified and forwarded but not yet written (0: none): children may be sent up to it meanwhile. */
  verifiedSeq = 0;
  scheduledTickMs = Infinity;
  ticksAtSameMs = 0;
  lastTickMs = -1;
  readonly history: HistoryEvent[] = [];

  constructor(
    readonly id: string,
    readonly depth: number,
    readonly upstreams: readonly string[],
    readonly retainEntries: number,
    readonly random: Prng,
  ) {
    this.store = new MemoryStore(id === ROOT_ID ? DATASET_ID : '');
  }

  get isRoot(): boolean {
    return this.id === ROOT_ID;
  }

  ancestors(): readonly string[] {
    return this.downstream?.currentAncestors() ?? [];
  }
}

export function runSimulation(options: SimulationOptions): SimulationStats {
  return new Simulation(options).run();
}

class Simulation {
  private readonly seed: number;
  private readonly limits: ReplicationLimits;
  private readonly queue = new EventQueue();
  private readonly nodes = new Map<string, SimNode>();
  private readonly root: SimNode;
  private readonly reference = new ReferenceChain();
  private readonly net: Prng;
  private readonly faults: Prng;
  private readonly writes: Prng;
  private readonly conns = new Set<Conn>();
  private readonly partitions: Set<string>[] = [];
  private readonly badLinks = new Set<string>();
  private readonly recentLogs: string[] = [];
  private readonly faultEndMs: number;
  private readonly writeEndMs: number;
  private readonly settleMsMax: number;
  private faultsActive: boolean;
  private readonly injectFaults: boolean;
  private readonly writeIntervalMs: readonly [number, number];
  private readonly rootClockOffsetMs: (simMs: number) => number;
  private lastEntryTimeMs = 0;
  private lastConnId = 0;
  private failure: SimulationFailure | undefined;
  private readonly stats: SimulationStats;
  private readonly watchers: SimWatchers;
  private readonly watchConsumers: number;
  /** The root's signer and the forging relays, with how each forges signatures (signing runs only). */
  private readonly signer: Signer | undefined;
  private readonly forgers = new Map<string, SignatureForgery>();
  /** Withholding relays, each with whether it pins its heartbeats' rootSeq (signing runs only). */
  private readonly withholders = new Map<string, boolean>();
  /** Connections from which a withholding relay withheld an entry (`watchWithheld`). */
  private readonly withheldConns: Conn[] = [];
  /** The root's heartbeats: signed in signing runs, with an epoch from the seed. */
  private readonly heartbeats: RootHeartbeats;

  constructor(options: SimulationOptions) {
    this.seed = options.seed;
    this.limits = options.limits ?? REPLICATION_LIMITS_TEST;
    const prng = new Prng(options.seed);
    this.net = prng.fork();
    this.faults = prng.fork();
    this.writes = prng.fork();
    const topology = prng.fork();
    this.faultEndMs = options.faultMs ?? 6_000;
    this.writeEndMs = this.faultEndMs + (options.writeTailMs ?? 1_000);
    this.settleMsMax = options.settleMsMax ?? 30_000;
    this.injectFaults = options.faults ?? true;
    this.faultsActive = this.injectFaults;
    this.writeIntervalMs = options.writeIntervalMs ?? [5, 40];
    this.rootClockOffsetMs = options.rootClockOffsetMs ?? (() => 0);

    // The tree: each replica lists its parent first, then a node of the parent's level under another grandparent
    // (or a sibling of its parent), then its grandparent. Level-1 nodes list the root, then a sibling: two of them
    // listing each other can form a cycle when the root is unreachable, which the protocol must break.
    this.root = new SimNode(ROOT_ID, 0, [], 150, prng.fork());
    this.nodes.set(ROOT_ID, this.root);
    let levels: SimNode[][] = [[this.root]];
    let nextId = 1;
    for (const [level, fanout] of (options.fanout ?? [4, 4, 12]).entries()) {
      const parents = levels[level]!;
      const created: SimNode[] = [];
      for (const [parentIndex, parent] of parents.entries()) {
        for (let c = 0; c < fanout; c++) {
          const id = `n${nextId++}`;
          const upstreams = [parent.id];
          if (level === 0) upstreams.push(`n${1 + ((c + 1) % fanout)}`);
          else {
            const cousin = parents[(parentIndex + 1 + topology.int(0, parents.length - 2)) % parents.length]!;
            if (cousin.id !== parent.id) upstreams.push(cousin.id);
            upstreams.push(parent.upstreams[0]!);
          }
          // A replica that trusts only signed data takes snapshots from the root alone: it lists the root last.
          if (options.signing !== undefined && !upstreams.includes(ROOT_ID)) upstreams.push(ROOT_ID);
          const node = new SimNode(id, level + 1, upstreams, topology.int(30, 150), prng.fork());
          this.nodes.set(id, node);
          created.push(node);
        }
      }
      levels = [...levels, created];
    }
    // A few links corrupt the ENTRIES frames they carry (while faults run).
    const replicas = [...this.nodes.values()].filter((node) => !node.isRoot);
    for (let i = 0; i < 10; i++) {
      const child = topology.pick(replicas);
      this.badLinks.add(`${topology.pick(child.upstreams)}>${child.id}`);
    }
    // Forked last, so that the streams above (and the replication runs of existing seeds) stay as they were.
    const watchRandom = prng.fork();
    if (options.signing === undefined) this.signer = undefined;
    else {
      const signingRandom = prng.fork();
      // The key from the seed (PKCS#8 of a 32-byte Ed25519 seed), so that a seed replays the same signatures.
      const keySeed = Buffer.from(Array.from({ length: 32 }, () => signingRandom.int(0, 255)));
      this.signer = new Signer(createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), keySeed]), format: 'der', type: 'pkcs8' }));
      const relays = [...this.nodes.values()].filter((node) => !node.isRoot && [...this.nodes.values()].some((other) => other.upstreams[0] === node.id));
      const modes: SignatureForgery[] = ['keep', 'strip', 'attacker'];
      for (let i = 0; i < options.signing.forgers && relays.length > 0; i++) {
        const relay = relays.splice(signingRandom.int(0, relays.length - 1), 1)[0]!;
        this.forgers.set(relay.id, modes[i % modes.length]!);
      }
      // Drawn after the forgers, so that runs without withholders stay as they were.
      for (let i = 0; i < (options.signing.withholders ?? 0) && relays.length > 0; i++) {
        const relay = relays.splice(signingRandom.int(0, relays.length - 1), 1)[0]!;
        this.withholders.set(relay.id, i % 2 === 1);
      }
    }
    this.heartbeats = new RootHeartbeats(this.signer, Buffer.alloc(8, options.seed % 251));
    const watchHosts: SimNode[] = [this.root];
    while (watchHosts.length < 8) {
      const node = watchRandom.pick(replicas);
      if (!watchHosts.includes(node)) watchHosts.push(node);
    }
    this.watchers = new SimWatchers(this.queue, watchRandom, this.reference, watchHosts, (message) => this.fail(message));
    this.watchConsumers = options.watchConsumers ?? 16;
    this.stats = {
      nodes: this.nodes.size,
      rootSeq: 0,
      simMs: 0,
      events: 0,
      convergedAfterMs: 0,
      crashes: 0,
      restarts: 0,
      partitions: 0,
      resets: 0,
      upstreamDrops: 0,
      refusals: {},
      staleDrops: 0,
      snapshotsInstalled: 0,
      rejoinSnapshots: 0,
      entriesApplied: 0,
      corruptInjected: { wire: 0, relay: 0 },
      corruptDetected: { wire: 0, relay: 0 },
      forged: { injected: 0, detected: 0 },
      withheld: { entries: 0, left: 0 },
      watch: this.watchers.stats,
    };
  }

  run(): SimulationStats {
    try {
      this.schedule();
      // A failed check throws out of the event that found it, through runUntil.
      this.queue.runUntil(this.writeEndMs);
      let t = this.writeEndMs;
      const deadline = this.writeEndMs + this.settleMsMax;
      while (!this.converged()) {
        if (t >= deadline) this.fail(`no convergence ${this.settleMsMax} ms after the writes stopped:\n${this.laggards()}`);
        t += 50;
        this.queue.runUntil(t);
      }
      this.stats.convergedAfterMs = t - this.writeEndMs;
      // A child behind a withholding relay late in the writes leaves it, and the tree converges, before its check is
      // due (seed 351381303: withheld at 4,924 ms, left at 5,909, converged at 5,950, check due at 6,624).
      for (const conn of this.withheldConns) this.countWithholdLeft(conn);
      this.checkFinalState();
      this.stats.rootSeq = this.root.store.head().seq;
      this.stats.simMs = this.queue.nowMs;
      this.stats.events = this.queue.processed;
      return this.stats;
    } catch (error) {
      if (error instanceof SimulationFailure) throw error;
      // An assertion inside a state machine or the store: still a failure of this seed.
      throw new SimulationFailure(this.seed, `${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n${this.recentLogs.join('\n')}`);
    }
  }

  private fail(message: string): never {
    this.failure ??= new SimulationFailure(this.seed, `at ${this.queue.nowMs} ms: ${message}\nrecent logs:\n${this.recentLogs.join('\n')}`);
    throw this.failure;
  }

  // Schedules ------------------------------------------------------------------------------------------------

  private schedule(): void {
    const q = this.queue;
    // Some history before anyone joins, so that the first snapshots carry keys.
    for (let i = 0; i < 30; i++) this.commit();
    this.watchers.nodeStarted(this.root);
    if (this.watchConsumers > 0) this.watchers.start(this.watchConsumers, this.injectFaults ? (host, downMs, silent) => this.crash(host as SimNode, downMs, silent) : undefined);
    for (const node of this.nodes.values()) {
      if (node.isRoot) continue;
      node.history.push({ kind: 'start', seq: 0 });
      q.at(this.net.int(0, 300), () => this.start(node));
      this.every(node, () => node.random.int(50, 400), () => node.store.checkpoint());
    }
    for (const node of this.nodes.values()) this.every(node, () => 250, () => node.store.trim(node.retainEntries));
    // Root: writes, heartbeats.
    const writeLoop = (): void => {
      if (q.nowMs >= this.writeEndMs) return;
      if (this.root.alive) this.commit();
      q.after(this.writes.int(...this.writeIntervalMs), writeLoop);
    };
    q.after(1, writeLoop);
    this.every(this.root, () => this.limits.heartbeatIntervalMs, () => this.rootHeartbeat());
    if (!this.injectFaults) return;
    // Faults.
    const crashLoop = (): void => {
      if (q.nowMs >= this.faultEndMs) return;
      const candidates = [...this.nodes.values()].filter((node) => node.alive && (!node.isRoot || this.faults.chance(0.05)));
      if (candidates.length > 0) this.crash(this.faults.pick(candidates), this.faults.int(200, 3_000));
      q.after(this.faults.int(100, 500), crashLoop);
    };
    q.after(this.faults.int(100, 500), crashLoop);
    const partitionLoop = (): void => {
      if (q.nowMs >= this.faultEndMs) return;
      this.partition(this.faults.int(300, 2_500));
      q.after(this.faults.int(400, 1_200), partitionLoop);
    };
    q.after(this.faults.int(200, 800), partitionLoop);
    q.at(this.faultEndMs, () => this.endFaults());
  }

  /** Runs `fn` on `node` every `intervalMs()` while it is alive (across restarts). */
  private every(node: SimNode, intervalMs: () => number, fn: () => void): void {
    const loop = (): void => {
      if (node.alive) fn();
      this.queue.after(intervalMs(), loop);
    };
    this.queue.after(intervalMs(), loop);
  }

  private endFaults(): void {
    this.faultsActive = false;
    this.watchers.endFaults();
    this.partitions.length = 0;
    for (const node of this.nodes.values()) if (!node.alive) this.queue.after(this.faults.int(0, 200), () => this.restart(node));
  }

  // Root -----------------------------------------------------------------------------------------------------

  private randomOps(): Op[] {
    const key = (): Buffer => Buffer.from(`key/${String(this.writes.int(0, KEYS - 1)).padStart(3, '0')}`);
    const ops: Op[] = [];
    const count = this.writes.int(1, 3);
    for (let i = 0; i < count; i++) {
      const roll = this.writes.next();
      // Mostly small values, some large enough that the byte limits of windows, frames and chunks bind.
      if (roll < 0.75) ops.push({ type: 'put', key: key(), value: this.writes.bytes(this.writes.chance(0.1) ? this.writes.int(256, 2048) : this.writes.int(0, 48)) });
      else if (roll < 0.95) ops.push({ type: 'delete', key: key() });
      else {
        const [a, b] = [key(), key()].sort((x, y) => Buffer.compare(x, y)) as [Buffer, Buffer];
        ops.push({ type: 'deleteRange', start: a, end: this.writes.chance(0.2) ? Buffer.alloc(0) : b });
      }
    }
    return ops;
  }

  private commit(): void {
    // The root acknowledges and forwards only durable entries: its store never loses a commit in a crash.
    // Entry times never go back, whatever the root's clock does (as in the group committer).
    this.lastEntryTimeMs = Math.max(this.lastEntryTimeMs, this.rootWallMs());
    const signer = this.signer;
    const encoded = this.root.store.commit(this.lastEntryTimeMs, this.randomOps(), signer === undefined ? undefined : (hash) => signer.signEntry(hash));
    this.root.store.checkpoint();
    this.reference.record(encoded);
    this.watchers.published(this.root, [encoded]);
    for (const session of [...this.root.sessions.values()]) this.execUpstream(this.root, session, session.upstream.localApplied(this.queue.nowMs, [encoded]));
    this.scheduleTick(this.root);
  }

  private rootLatestHeartbeat(): Heartbeat {
    return this.heartbeats.next(this.root.store.head().seq, this.rootWallMs());
  }

  private rootWallMs(): number {
    return Math.max(0, this.queue.nowMs + this.rootClockOffsetMs(this.queue.nowMs));
  }

  private rootHeartbeat(): void {
    const heartbeat = this.rootLatestHeartbeat();
    for (const session of [...this.root.sessions.values()]) this.execUpstream(this.root, session, session.upstream.heartbeat(this.queue.nowMs, heartbeat));
  }

  // Node lifecycle -------------------------------------------------------------------------------------------

  private start(node: SimNode): void {
    if (!node.alive || node.isRoot) return;
    const store = node.store;
    node.downstream = new Downstream({
      nodeId: node.id,
      upstreams: node.upstreams,
      datasetId: store.datasetId(),
      head: store.head(),
      headTimeMs: store.headTimeMs,
      limits: this.limits,
      random: () => node.random.next(),
      trust: this.signer === undefined ? undefined : new TrustedKeys([this.signer.publicKey]),
    });
    this.watchers.nodeStarted(node);
    this.execDownstream(node, node.downstream.start(this.queue.nowMs));
  }

  /** A process crash makes the host's kernel close the sockets (peers hear of it); a host crash is silent. */
  private crash(node: SimNode, downMs: number, silent = this.faults.chance(0.5)): void {
    this.stats.crashes++;
    node.alive = false;
    for (const conn of [...node.clientConns.values(), ...[...node.sessions.values()].map((session) => session.conn)]) {
      const side: Side = conn.client === node ? 0 : 1;
      conn.open[side] = false;
      if (!silent) this.reset(conn);
      else conn.dead = true;
    }
    node.clientConns.clear();
    node.sessions.clear();
    node.downstream = undefined;
    node.latestHeartbeat = undefined;
    node.scheduledTickMs = Infinity;
    if (!node.isRoot) {
      node.store.crash();
      node.history.push({ kind: 'crash', seq: node.store.head().seq });
    }
    node.store.openSnapshots = 0;
    this.watchers.nodeCrashed(node);
    this.log(node, `crashed (${silent ? 'silent' : 'sockets reset'}), down for ${downMs} ms, durable seq ${node.store.head().seq}`);
    const restartMs = Math.min(this.queue.nowMs + downMs, this.faultEndMs);
    this.queue.at(restartMs, () => this.restart(node));
  }

  private restart(node: SimNode): void {
    if (node.alive) return;
    this.stats.restarts++;
    node.alive = true;
    node.incarnation++;
    this.log(node, `restarted at seq ${node.store.head().seq}`);
    if (node.isRoot) this.watchers.nodeStarted(node);
    this.start(node);
  }

  // Actions --------------------------------------------------------------------------------------------------

  private execDownstream(node: SimNode, actions: readonly DownstreamAction[]): void {
    const now = this.queue.nowMs;
    for (const action of actions) {
      switch (action.type) {
        case 'connect':
          this.connect(node, action.connId, action.upstream);
          break;
        case 'send': {
          const conn = node.clientConns.get(action.connId);
          if (conn !== undefined) this.send(conn, 0, action.bytes);
          break;
        }
        case 'close': {
          const conn = node.clientConns.get(action.connId);
          if (conn !== undefined) this.closeSide(conn, 0);
          node.clientConns.delete(action.connId);
          break;
        }
        case 'apply':
          this.apply(node, action.entries);
          break;
        case 'snapshotBegin':
          node.store.beginSnapshot();
          break;
        case 'snapshotChunk':
          node.store.stageSnapshot(action.records);
          break;
        case 'snapshotAbort':
          node.store.abortSnapshot();
          break;
        case 'snapshotFinish': {
          if (node.store.datasetId() !== '') this.stats.rejoinSnapshots++;
          node.store.finishSnapshot(action.seq, action.hash, action.datasetId);
          this.stats.snapshotsInstalled++;
          node.history.push({ kind: 'snapshot', seq: action.seq });
          const rootHash = this.reference.hashAt(action.seq);
          if (rootHash === undefined || !rootHash.equals(action.hash)) this.fail(`${node.id} installed a snapshot at ${action.seq} off the root's chain`);
          const diff = diffKeySpaces(node.store.keySpace, this.reference.kvAt(action.seq));
          if (diff !== undefined) this.fail(`${node.id} installed a snapshot at ${action.seq} whose key space differs from the root's: ${diff}`);
          if (action.datasetId !== DATASET_ID) this.fail(`${node.id} joined dataset ${action.datasetId}`);
          for (const session of [...node.sessions.values()]) this.execUpstream(node, session, session.upstream.chainReset(now));
          this.watchers.chainReplaced(node, action.seq);
          break;
        }
        case 'heartbeat':
          node.latestHeartbeat = action.heartbeat;
          for (const session of [...node.sessions.values()]) this.execUpstream(node, session, session.upstream.heartbeat(now, action.heartbeat));
          break;
        case 'log':
          this.observe(node, action.message, action.fields);
          break;
      }
    }
    this.scheduleTick(node);
  }

  private apply(node: SimNode, entries: readonly EncodedEntry[]): void {
    const now = this.queue.nowMs;
    // As the node does (decision 27): caught-up children get verified entries before this node's write. A crash that
    // loses the write (the store's durability model) then leaves children ahead of the node.
    node.verifiedSeq = entries[entries.length - 1]!.entry.seq;
    for (const session of [...node.sessions.values()]) this.execUpstream(node, session, session.upstream.forwardVerified(now, entries));
    for (const { entry } of entries) {
      const rootHash = this.reference.hashAt(entry.seq);
      if (rootHash === undefined || !rootHash.equals(entry.hash)) this.fail(`${node.id} applied entry ${entry.seq}, which is not the root's`);
      node.history.push({ kind: 'apply', seq: entry.seq });
    }
    node.store.apply(entries);
    node.verifiedSeq = 0;
    this.stats.entriesApplied += entries.length;
    this.watchers.published(node, entries);
    for (const session of [...node.sessions.values()]) this.execUpstream(node, session, session.upstream.localApplied(now, entries));
  }

  private execUpstream(node: SimNode, session: Session, actions: readonly UpstreamAction[]): void {
    for (const action of actions) {
      switch (action.type) {
        case 'send':
          this.send(session.conn, 1, action.bytes);
          break;
        case 'close':
          this.closeSide(session.conn, 1);
          node.sessions.delete(session.conn.id);
          break;
        case 'log':
          this.observe(node, action.message, action.fields);
          break;
        case 'continue': {
          // The adapter's next turn (setImmediate): at the same virtual time, after what is already queued for it.
          const incarnation = node.incarnation;
          this.queue.at(this.queue.nowMs, () => {
            if (node.incarnation === incarnation && node.alive && node.sessions.get(session.conn.id) === session)
              this.execUpstream(node, session, session.upstream.resume(this.queue.nowMs));
          });
          break;
        }
      }
    }
    // Forward only what this node applied, or verified and is about to write (decision 27), and hold no more than the
    // window (and the slack above) unacknowledged.
    const status = session.upstream.status();
    if (status.sentSeq > Math.max(node.store.head().seq, node.verifiedSeq) && status.phase === 'streaming')
      this.fail(`${node.id} sent entry ${status.sentSeq} to ${status.childNodeId} before verifying it (head ${node.store.head().seq})`);
    if (status.unackedBytes > this.limits.childWindowBytesMax + this.limits.entryRecordBytesMax + UNACKED_SLACK_BYTES)
      this.fail(`${node.id} has ${status.unackedBytes} bytes unacknowledged by ${status.childNodeId}`);
    this.scheduleTick(node);
  }

  private observe(node: SimNode, message: string, fields: Readonly<Record<string, unknown>>): void {
    if (message === 'dropped upstream') {
      this.stats.upstreamDrops++;
      const reason = String(fields.reason);
      const refused = /^upstream refused: ([A-Z_]+)/.exec(reason);
      if (refused !== null) this.stats.refusals[refused[1]!] = (this.stats.refusals[refused[1]!] ?? 0) + 1;
      if (reason.startsWith('upstream stale')) this.stats.staleDrops++;
    }
    if (message.startsWith('chain diverged')) this.fail(`${node.id} diverged: ${String(fields.reason)}`);
    this.log(node, `${message} ${JSON.stringify(fields)}`);
  }

  private log(node: SimNode, line: string): void {
    this.recentLogs.push(`${this.queue.nowMs} ${node.id}: ${line}`);
    if (this.recentLogs.length > 40) this.recentLogs.shift();
  }

  // Time -----------------------------------------------------------------------------------------------------

  private scheduleTick(node: SimNode): void {
    if (!node.alive) return;
    let next = node.downstream?.nextTickMs() ?? Infinity;
    for (const session of node.sessions.values()) next = Math.min(next, session.upstream.nextTickMs() ?? Infinity);
    if (next === Infinity || next >= node.scheduledTickMs) return;
    node.scheduledTickMs = next;
    const incarnation = node.incarnation;
    this.queue.at(next, () => {
      if (node.scheduledTickMs !== next || node.incarnation !== incarnation || !node.alive) return;
      node.scheduledTickMs = Infinity;
      this.tick(node);
    });
  }

  private tick(node: SimNode): void {
    const now = this.queue.nowMs;
    // A machine that asks to be woken at a deadline it does not move past would spin: that is a busy loop.
    node.ticksAtSameMs = node.lastTickMs === now ? node.ticksAtSameMs + 1 : 0;
    node.lastTickMs = now;
    if (node.ticksAtSameMs > 100) this.fail(`${node.id} ticks in a busy loop`);
    if (node.downstream !== undefined) this.execDownstream(node, node.downstream.tick(now));
    for (const session of [...node.sessions.values()]) this.execUpstream(node, session, session.upstream.tick(now));
    this.scheduleTick(node);
  }

  // Network --------------------------------------------------------------------------------------------------

  private latencyMs(): number {
    if (this.faultsActive && this.net.chance(0.03)) return this.net.int(50, 250);
    return this.net.int(1, 8);
  }

  private partitioned(a: SimNode, b: SimNode): boolean {
    return this.partitions.some((members) => members.has(a.id) !== members.has(b.id));
  }

  private partition(durationMs: number): void {
    const all = [...this.nodes.values()];
    const members = new Set<string>();
    const roll = this.faults.next();
    if (roll < 0.4) members.add(this.faults.pick(all).id);
    else if (roll < 0.8) {
      // A node with the replicas that list it first: a subtree cut off from the rest.
      const head = this.faults.pick(all.filter((node) => node.depth <= 2));
      members.add(head.id);
      for (const node of all) if (node.upstreams[0] === head.id) members.add(node.id);
    } else for (const node of all) if (this.faults.chance(0.1)) members.add(node.id);
    this.partitions.push(members);
    this.stats.partitions++;
    for (const conn of this.conns) if (this.partitioned(conn.client, conn.server)) conn.dead = true;
    this.queue.after(durationMs, () => {
      const index = this.partitions.indexOf(members);
      if (index >= 0) this.partitions.splice(index, 1);
    });
  }

  private connect(client: SimNode, clientConnId: number, serverId: string): void {
    const server = this.nodes.get(serverId);
    if (server === undefined) throw new Error(`unknown upstream ${serverId}`);
    const conn: Conn = {
      id: ++this.lastConnId,
      client,
      server,
      clientIncarnation: client.incarnation,
      serverIncarnation: -1,
      clientConnId,
      open: [true, true],
      dead: false,
      accepted: false,
      lastDeliveryMs: [0, 0],
    };
    client.clientConns.set(clientConnId, conn);
    this.conns.add(conn);
    // Across a partition the SYN is never answered: the client's handshake timeout must notice.
    if (this.partitioned(client, server)) {
      conn.dead = true;
      return;
    }
    const delay = this.latencyMs();
    this.queue.after(delay, () => {
      if (!conn.open[0] || conn.dead) return;
      if (!server.alive) {
        this.queue.after(delay, () => this.peerClosed(conn, 0, 'connection refused'));
        return;
      }
      conn.accepted = true;
      conn.serverIncarnation = server.incarnation;
      const upstream = new Upstream({
        nodeId: server.id,
        source: server.store,
        ancestors: () => server.ancestors(),
        latestHeartbeat: () => (server.isRoot ? this.rootLatestHeartbeat() : server.latestHeartbeat),
        limits: this.limits,
        nowMs: this.queue.nowMs,
        signer: server.isRoot ? this.signer : undefined,
      });
      server.sessions.set(conn.id, { conn, upstream });
      this.scheduleTick(server);
      const at = this.queue.nowMs + this.latencyMs();
      conn.lastDeliveryMs[0] = at;
      this.queue.at(at, () => {
        if (!conn.open[0] || conn.dead || !this.current(conn, 0)) return;
        this.execDownstream(client, client.downstream!.connected(this.queue.nowMs, clientConnId));
      });
    });
  }

  /** Whether the end `side` of the connection still belongs to the same live process. */
  private current(conn: Conn, side: Side): boolean {
    const node = side === 0 ? conn.client : conn.server;
    return node.alive && node.incarnation === (side === 0 ? conn.clientIncarnation : conn.serverIncarnation);
  }

  private send(conn: Conn, from: Side, bytes: Buffer): void {
    if (!conn.open[from] || conn.dead) return;
    if (this.faultsActive && this.net.chance(0.0005)) {
      this.stats.resets++;
      this.reset(conn);
      return;
    }
    const to: Side = from === 0 ? 1 : 0;
    let payload = bytes;
    let corrupted: 'wire' | 'relay' | 'forged' | undefined;
    const forging = from === 1 ? this.forgers.get(conn.server.id) : undefined;
    if (forging !== undefined) {
      conn.forger ??= new Forger(forging);
      payload = conn.forger.rewriteFrame(bytes);
      // The frames that a child must refuse at once: forged entries, and the end of a forged snapshot.
      if (bytes[8] === MessageType.entries || bytes[8] === MessageType.snapshotEnd) {
        corrupted = 'forged';
        this.stats.forged.injected++;
      }
    }
    const pinning = from === 1 ? this.withholders.get(conn.server.id) : undefined;
    if (pinning !== undefined) {
      conn.withholder ??= new Withholder(pinning);
      const before = conn.withholder.withheld;
      payload = conn.withholder.push(bytes);
      if (conn.withholder.withheld > before) {
        this.stats.withheld.entries += conn.withholder.withheld - before;
        this.watchWithheld(conn);
      }
      if (payload.length === 0) return;
    }
    if (
      from === 1 &&
      this.faultsActive &&
      corrupted === undefined &&
      bytes[8] === MessageType.entries &&
      this.badLinks.has(`${conn.server.id}>${conn.client.id}`) &&
      this.net.chance(0.3)
    ) {
      corrupted = this.net.chance(0.5) ? 'wire' : 'relay';
      payload = corrupted === 'wire' ? this.corruptOnWire(bytes) : this.corruptInRelay(bytes);
      this.stats.corruptInjected[corrupted]++;
    }
    const chunks = payload.length > 1 && this.net.chance(0.1) ? splitAt(payload, this.net.int(1, payload.length - 1)) : [payload];
    const at = Math.max(this.queue.nowMs + this.latencyMs(), conn.lastDeliveryMs[to]);
    conn.lastDeliveryMs[to] = at;
    this.queue.at(at, () => this.deliver(conn, to, chunks, corrupted));
  }

  /**
   * An entry was withheld from `conn`'s child: it must leave the relay within its stale time (upstreamStaleMs plus a
   * hop per ancestor) of the first heartbeat that says the root is past its head, or of the last thing it got if none
   * comes; twice that, it fails the run if it has not. The bound counts from the withheld entry, or from that heartbeat
   * if it came later: a child learns that the root is past it only from heartbeats, and while the relay's own upstreams
   * are cut off from the root, those it forwards say the root is at the child's head, as an idle root's would (seed
   * 62050: a partition cut the root off from n2, n3 and n4, which then followed one another with n1 in a ring, passing
   * on the root's last beat, at seq 290, until n1 went back to the root; n190, at 290 behind withholding n19, got the
   * first heartbeat past 290 1,624 ms after seq 291 was withheld and left 1,200 ms after it, its stale time at depth 4,
   * as docs/security.md promises: 2,824 ms after the entry, where the bound from the entry allowed 2,600). The stale
   * time is the child's when the bound expires, if longer than when the entry was withheld: a relay that withholds
   * right after its own restart has no upstream yet, so its child counts no ancestor beyond it, and the relay's first
   * heartbeat, once it has an upstream, brings the whole path (seed 41006 of the withholding sweep: a child at depth 0
   * when withheld, at depth 3 when the relay's heartbeats came 521 ms later, left within its stale time of that
   * heartbeat, after the 1,400 ms a bound of depth 0 allowed).
   */
  private watchWithheld(conn: Conn): void {
    if (conn.withholdWatched === true) return;
    conn.withholdWatched = true;
    this.withheldConns.push(conn);
    const withheldMs = this.queue.nowMs;
    const boundMs = (): number => {
      const depth = conn.client.downstream?.currentAncestors().length ?? 0;
      return 2 * (this.limits.upstreamStaleMs + depth * this.limits.upstreamStaleHopMs + this.limits.heartbeatIntervalMs);
    };
    let allowedMs = boundMs();
    const check = (): void => {
      const child = conn.client;
      if (this.countWithholdLeft(conn)) return;
      allowedMs = Math.max(allowedMs, boundMs());
      const fromMs = conn.withholdRevealedMs ?? withheldMs;
      if (this.queue.nowMs < fromMs + allowedMs) return void this.queue.at(fromMs + allowedMs, check);
      const revealed =
        conn.withholdRevealedMs === undefined ? ', and no heartbeat said the root was past it' : `, ${this.queue.nowMs - conn.withholdRevealedMs} ms after a heartbeat said the root was past it`;
      this.fail(`${child.id} still follows withholding relay ${conn.server.id} ${this.queue.nowMs - withheldMs} ms after an entry was withheld${revealed}`);
    };
    this.queue.after(allowedMs, check);
  }

  /** Whether `conn`'s child has left it (or lost it); counted in `withheld.left` once. */
  private countWithholdLeft(conn: Conn): boolean {
    if (!conn.dead && conn.open[0] && conn.client.downstream?.currentConnId === conn.clientConnId) return false;
    if (conn.withholdLeftCounted !== true) this.stats.withheld.left++;
    conn.withholdLeftCounted = true;
    return true;
  }

  /**
   * After a delivery to a watched child: whether the heartbeats it has now say the root is past its head. Before the
   * relay's first heartbeat that may be the last one of the child's previous upstream: that only starts the bound
   * sooner, and never before the withheld entry.
   */
  private noteWithholdRevealed(conn: Conn, downstream: Downstream): void {
    if (conn.withholdWatched !== true || conn.withholdRevealedMs !== undefined || downstream.currentConnId !== conn.clientConnId) return;
    const status = downstream.status();
    if ((status.lastHeartbeatRootSeq ?? 0) > status.head.seq) conn.withholdRevealedMs = this.queue.nowMs;
  }

  /** A flipped bit anywhere after the length prefix: the frame CRC must catch it. */
  private corruptOnWire(frame: Buffer): Buffer {
    const copy = Buffer.from(frame);
    copy[this.net.int(4, copy.length - 1)]! ^= 1 << this.net.int(0, 7);
    return copy;
  }

  /** A relay that damages one record and frames the damage correctly: only the hash chain can catch it. */
  private corruptInRelay(frame: Buffer): Buffer {
    const copy = Buffer.from(frame);
    const count = copy.readUInt32BE(9);
    const target = this.net.int(0, count - 1);
    let offset = 13;
    for (let i = 0; i < target; i++) offset += 4 + copy.readUInt32BE(offset);
    const length = copy.readUInt32BE(offset);
    // A signature lies outside the hash (log/entry.ts): a relay may damage one without breaking the chain, and a
    // receiver checks only the last entry's. Damage the hashed bytes, which the chain must catch.
    const record = offset + 4;
    const signed = copy[record] === 2 && copy[record + length - 129] === 64;
    let at = this.net.int(0, length - 1 - (signed ? 64 : 0));
    if (signed && at >= length - 128) at += 64;
    copy[record + at]! ^= 1 << this.net.int(0, 7);
    copy.writeUInt32BE(crc32(copy.subarray(8)), 4);
    return copy;
  }

  private deliver(conn: Conn, to: Side, chunks: readonly Buffer[], corrupted: 'wire' | 'relay' | 'forged' | undefined): void {
    if (!conn.open[to] || conn.dead || !this.current(conn, to)) return;
    const now = this.queue.nowMs;
    if (to === 0) {
      const node = conn.client;
      const downstream = node.downstream!;
      const wasFollowing = downstream.currentConnId === conn.clientConnId;
      for (const chunk of chunks) this.execDownstream(node, downstream.receive(now, conn.clientConnId, chunk));
      this.noteWithholdRevealed(conn, downstream);
      if (corrupted !== undefined && wasFollowing) {
        if (downstream.currentConnId === conn.clientConnId)
          this.fail(`${node.id} accepted a frame ${corrupted === 'wire' ? 'corrupted on the wire' : corrupted === 'relay' ? 'corrupted by a relay' : `forged by ${conn.server.id}`}`);
        if (corrupted === 'forged') this.stats.forged.detected++;
        else this.stats.corruptDetected[corrupted]++;
      }
    } else {
      const node = conn.server;
      const session = node.sessions.get(conn.id);
      if (session === undefined) return;
      for (const chunk of chunks) {
        this.execUpstream(node, session, session.upstream.receive(now, chunk));
        if (session.upstream.isClosed) break;
      }
    }
  }

  /** An orderly close by one end: the other end hears of it after the data already in flight. */
  private closeSide(conn: Conn, side: Side): void {
    if (!conn.open[side]) return;
    conn.open[side] = false;
    const to: Side = side === 0 ? 1 : 0;
    if (!conn.accepted) conn.open[1] = false;
    if (conn.dead || !conn.open[to]) return this.forget(conn);
    const at = Math.max(this.queue.nowMs + this.latencyMs(), conn.lastDeliveryMs[to]);
    conn.lastDeliveryMs[to] = at;
    this.queue.at(at, () => this.peerClosed(conn, to, 'closed by peer'));
  }

  /** A reset: data in flight is lost and both ends hear of it. */
  private reset(conn: Conn): void {
    conn.dead = true;
    for (const side of [0, 1] as const) if (conn.open[side]) this.queue.after(this.latencyMs(), () => this.peerClosed(conn, side, 'connection reset'));
  }

  private peerClosed(conn: Conn, to: Side, reason: string): void {
    if (!conn.open[to]) return;
    conn.open[to] = false;
    this.forget(conn);
    if (!this.current(conn, to)) return;
    const now = this.queue.nowMs;
    if (to === 0) {
      const node = conn.client;
      node.clientConns.delete(conn.clientConnId);
      this.execDownstream(node, node.downstream!.closed(now, conn.clientConnId, reason));
    } else {
      const node = conn.server;
      const session = node.sessions.get(conn.id);
      if (session === undefined) return;
      node.sessions.delete(conn.id);
      this.execUpstream(node, session, session.upstream.closed(now));
    }
  }

  private forget(conn: Conn): void {
    if (!conn.open[0] && !conn.open[1]) this.conns.delete(conn);
  }

  // Checks ---------------------------------------------------------------------------------------------------

  private converged(): boolean {
    if (this.queue.nowMs < this.writeEndMs || !this.root.alive) return false;
    const head = this.root.store.head();
    for (const node of this.nodes.values()) {
      if (!node.alive) return false;
      if (node.isRoot) continue;
      const status = node.downstream!.status();
      if (status.phase !== 'streaming') return false;
      const nodeHead = node.store.head();
      if (nodeHead.seq !== head.seq || !nodeHead.hash.equals(head.hash)) return false;
    }
    return this.watchers.caughtUp();
  }

  private laggards(): string {
    const head = this.root.store.head();
    const lines: string[] = [`root at ${head.seq}`];
    for (const node of this.nodes.values()) {
      if (node.isRoot) continue;
      const seq = node.store.head().seq;
      const status = node.downstream?.status();
      if (node.alive && seq === head.seq && status?.phase === 'streaming') continue;
      lines.push(
        `${node.id} alive=${node.alive} seq=${seq} phase=${status?.phase} upstream=${status?.upstream} failures=${status?.consecutiveFailures} last=${status?.lastFailure}`,
      );
      if (lines.length > 25) break;
    }
    lines.push(this.watchers.laggards());
    return lines.join('\n');
  }

  private checkFinalState(): void {
    this.watchers.checkFinal();
    const head = this.root.store.head();
    const expected = this.reference.kvAt(head.seq);
    for (const node of this.nodes.values()) {
      const diff = diffKeySpaces(node.store.keySpace, expected);
      if (diff !== undefined) this.fail(`${node.id}'s key space differs from the root's at ${head.seq}: ${diff}`);
      for (const { entry } of node.store.retained())
        if (!this.reference.hashAt(entry.seq)!.equals(entry.hash)) this.fail(`${node.id}'s retained entry ${entry.seq} is not the root's`);
      if (node.store.openSnapshots !== 0) this.fail(`${node.id} holds ${node.store.openSnapshots} snapshot readers open after convergence`);
      if (node.isRoot) continue;
      // Ordered and unique: each apply is exactly one past the state it was applied to. A crash returns the state to
      // what was durable (never past what was applied), a snapshot replaces it.
      let seq = -1;
      for (const event of node.history) {
        if (event.kind === 'start') seq = event.seq;
        else if (event.kind === 'apply') {
          if (event.seq !== seq + 1) this.fail(`${node.id} applied ${event.seq} on top of ${seq}`);
          seq = event.seq;
        } else if (event.kind === 'snapshot') seq = event.seq;
        else {
          if (event.seq > seq) this.fail(`${node.id} came back from a crash at ${event.seq}, past its applied ${seq}`);
          seq = event.seq;
        }
      }
      if (seq !== head.seq) this.fail(`${node.id}'s history ends at ${seq}, the root at ${head.seq}`);
    }
  }
}

function splitAt(bytes: Buffer, at: number): Buffer[] {
  return [bytes.subarray(0, at), bytes.subarray(at)];
}

/**
 * Watches in the seeded simulation: the real `WatchMachine` on some of the simulated nodes, fed what each node applies,
 * and consumers that follow one subscription each across connections and nodes: fast ones, slow ones that read
 * rarely (their queues fill, so they are served from the log), ones that stop reading for seconds (closed with 4008)
 * and ones that hop to another node now and then. Node crashes drop their connections. Every consumer resumes from
 * the last seq it received, and every message it reads is checked against the root's log (`SubscriptionHistory`):
 * ordered, gap-free across resumes, no duplicates, snapshots equal to the key space at their seq. After the faults
 * stop, every consumer must reach the root's head.
 */
import assert from 'node:assert/strict';
import type { EncodedEntry, Op } from '../../../src/log/index.js';
import { framePayload } from '../../../src/watch/frame.js';
import { WATCH_LIMITS_TEST, WatchMachine, type WatchConnection } from '../../../src/watch/index.js';
import { WatchCloseCode, parseClientMessage, slowWatcherReason, WatchProtocolError } from '../../../src/api/index.js';
import { MemoryWatchReads, SubscriptionHistory, type CheckedSelection, type WatchOracle } from '../watch-machine.js';
import type { ServerMessage } from '../watch.js';
import type { EventQueue } from './event-queue.js';
import type { MemoryStore } from './memory-store.js';
import type { Prng } from './prng.js';
import type { ReferenceChain } from './reference.js';

export interface WatchStats {
  consumers: number;
  events: number;
  progress: number;
  snapshots: number;
  resumes: number;
  slowCloses: number;
  crashCloses: number;
  hops: number;
}

/** What the watch part needs from a simulated node. */
export interface WatchHost {
  readonly id: string;
  readonly store: MemoryStore;
  readonly alive: boolean;
  readonly incarnation: number;
}

type Kind = 'fast' | 'slow' | 'stalling' | 'hopping';

const SELECTIONS: readonly CheckedSelection[] = [
  { prefix: '', filters: {} },
  { prefix: 'key/0', filters: {} },
  { prefix: 'key/01', filters: { keysOnly: true } },
  { prefix: 'key/06', filters: { puts: false } },
  { prefix: 'key/', filters: { deletes: false } },
];

/** A connection from a consumer to one node's machine. */
class SimWatchConnection implements WatchConnection {
  bufferedBytes = 0;
  writtenBytes = 0;
  /** The simulation's consumers answer pings at once: always heard (its network faults are the nodes'). */
  readonly heardMs = Infinity;
  pending: string[] = [];
  /** Set when the machine closed it; the consumer learns it after reading what came before. */
  serverClose: { code: number; reason: string } | undefined;
  /** Gone for the machine too (closed event delivered, or the node crashed). */
  gone = false;
  /** The client closed it: what the machine sends until it hears of it is lost. */
  clientClosed = false;

  constructor(
    readonly id: number,
    readonly host: WatchHost,
    readonly incarnation: number,
  ) {}

  send(text: string): void {
    this.queue(text);
  }

  sendFramed(frame: Buffer): void {
    this.queue(framePayload(frame).toString('utf8'));
  }

  sendFragments(head: string, body: Buffer): void {
    this.queue(head + body.toString('utf8'));
  }

  ping(): void {}

  close(code: number, reason: string): void {
    assert.equal(this.serverClose, undefined, 'a watch connection closed twice by the machine');
    this.serverClose = { code, reason };
  }

  private queue(text: string): void {
    assert.equal(this.serverClose, undefined, 'the machine sent on a connection it closed');
    assert.ok(!this.gone, 'the machine sent on a connection it was told is closed');
    if (this.clientClosed) return;
    this.pending.push(text);
    this.bufferedBytes += Buffer.byteLength(text);
    this.writtenBytes += Buffer.byteLength(text);
  }
}

class Consumer {
  conn: SimWatchConnection | undefined;
  stalledUntilMs = 0;
  lastMessage: ServerMessage | undefined;
  subscribed = false;
  /** Subscribed without fromSeq: the first `subscribed` says where the history starts. */
  startsAtSubscribed = false;
  constructor(
    readonly name: string,
    readonly kind: Kind,
    readonly history: SubscriptionHistory,
    readonly firstFromSeq: number | undefined,
    public home: WatchHost,
  ) {}
}

interface NodeWatch {
  readonly machine: WatchMachine;
  readonly reads: MemoryWatchReads;
  readonly incarnation: number;
  scheduledMs: number;
}

export class SimWatchers implements WatchOracle {
  readonly stats: WatchStats = { consumers: 0, events: 0, progress: 0, snapshots: 0, resumes: 0, slowCloses: 0, crashCloses: 0, hops: 0 };
  private readonly machines = new Map<string, NodeWatch>();
  private readonly consumers: Consumer[] = [];
  private lastConnId = 0;
  private faultsActive = true;

  constructor(
    private readonly queue: EventQueue,
    private readonly random: Prng,
    private readonly reference: ReferenceChain,
    private readonly hosts: readonly WatchHost[],
    private readonly fail: (message: string) => never,
  ) {}

  // WatchOracle ----------------------------------------------------------------------------------------------

  get headSeq(): number {
    return this.reference.headSeq;
  }

  ops(seq: number): readonly Op[] {
    return this.reference.entryAt(seq).entry.ops;
  }

  kvAt(seq: number): ReturnType<ReferenceChain['kvAt']> {
    return this.reference.kvAt(seq);
  }

  // Hooks from the simulation -------------------------------------------------------------------------------

  /**
   * Creates the consumers; call once, after some history exists. `crash` crashes a node (with the simulation's own
   * bookkeeping; undefined in a run without faults); watch hosts other than the root are crashed now and then while faults last, so that connections are
   * cut under consumers often, whatever the simulation's own crash loop picks.
   */
  start(consumers: number, crash: ((host: WatchHost, downMs: number, silent: boolean) => void) | undefined): void {
    const crashLoop = (): void => {
      if (crash === undefined) return;
      if (!this.faultsActive) return;
      const candidates = this.hosts.filter((host, index) => index > 0 && host.alive);
      if (candidates.length > 0) crash(this.random.pick(candidates), this.random.int(200, 2_000), this.random.chance(0.5));
      this.queue.after(this.random.int(600, 1_500), crashLoop);
    };
    this.queue.after(this.random.int(300, 1_000), crashLoop);
    const kinds: Kind[] = ['fast', 'slow', 'stalling', 'hopping'];
    for (let i = 0; i < consumers; i++) {
      const kind = kinds[i % kinds.length]!;
      const selection = SELECTIONS[this.random.int(0, SELECTIONS.length - 1)]!;
      // From the next entry, from the start (catch-up or snapshot), or from a little while ago.
      const roll = this.random.next();
      const fromSeq = roll < 0.3 ? undefined : roll < 0.6 ? 1 : Math.max(1, this.reference.headSeq - this.random.int(0, 20));
      const home = this.random.pick(this.hosts);
      const history = new SubscriptionHistory(`consumer ${i} (${kind}, prefix "${selection.prefix}")`, selection, fromSeq ?? this.reference.headSeq + 1);
      const consumer = new Consumer(`c${i}`, kind, history, fromSeq, home);
      this.consumers.push(consumer);
      this.stats.consumers++;
      this.queue.after(this.random.int(0, 200), () => this.connect(consumer));
      this.readLoop(consumer);
      if (kind === 'hopping') this.hopLoop(consumer);
    }
  }

  /** A watch node (re)started: a new machine over its store. */
  nodeStarted(host: WatchHost): void {
    if (!this.hosts.includes(host)) return;
    const reads = new MemoryWatchReads(host.store);
    const machine = new WatchMachine({ reads, headSeq: host.store.head().seq, headHash: host.store.head().hash, nowMs: this.queue.nowMs, limits: WATCH_LIMITS_TEST });
    this.machines.set(host.id, { machine, reads, incarnation: host.incarnation, scheduledMs: Infinity });
    this.schedule(host);
  }

  /** The node installed a snapshot at `seq` (as the node's `onChainReset` tells its watch hub). */
  chainReplaced(host: WatchHost, seq: number): void {
    const watch = this.machines.get(host.id);
    if (watch === undefined) return;
    this.perform(host, watch, watch.machine.chainReplaced(this.queue.nowMs, seq, host.store.head().hash));
  }

  /** The node applied (or, the root, committed) these entries. */
  published(host: WatchHost, entries: readonly EncodedEntry[]): void {
    const watch = this.machines.get(host.id);
    if (watch === undefined) return;
    this.perform(host, watch, watch.machine.published(this.queue.nowMs, entries));
  }

  /** The node crashed: its machine is gone, and its connections with it (what was queued is lost). */
  nodeCrashed(host: WatchHost): void {
    const watch = this.machines.get(host.id);
    if (watch === undefined) return;
    this.machines.delete(host.id);
    for (const consumer of this.consumers)
      if (consumer.conn?.host === host) {
        consumer.conn.gone = true;
        consumer.conn.pending = [];
        this.stats.crashCloses++;
      }
  }

  endFaults(): void {
    this.faultsActive = false;
  }

  /** Every consumer is connected, subscribed and has been told the root's head. */
  caughtUp(): boolean {
    return this.consumers.every((consumer) => consumer.conn !== undefined && !consumer.conn.gone && consumer.history.cursor === this.reference.headSeq);
  }

  laggards(): string {
    return this.consumers
      .filter((consumer) => consumer.history.cursor !== this.reference.headSeq)
      .map((consumer) => `${consumer.history.label} at ${consumer.history.cursor} on ${consumer.conn?.host.id ?? 'no connection'}`)
      .join('\n');
  }

  checkFinal(): void {
    for (const [id, watch] of this.machines) {
      watch.machine.assertInvariants();
      if (watch.reads.open.size !== watch.machine.openSnapshots) this.fail(`watch machine on ${id} holds ${watch.reads.open.size} snapshots, counts ${watch.machine.openSnapshots}`);
    }
    for (const consumer of this.consumers) {
      const history = consumer.history;
      this.stats.events += history.events;
      this.stats.progress += history.progress;
      this.stats.snapshots += history.snapshots;
      this.stats.resumes += history.resumes;
    }
  }

  // Consumers ------------------------------------------------------------------------------------------------

  private connect(consumer: Consumer): void {
    const candidates = this.hosts.filter((host) => host.alive && this.machines.has(host.id));
    if (candidates.length === 0) {
      this.queue.after(50, () => this.connect(consumer));
      return;
    }
    const host = consumer.home.alive && this.machines.has(consumer.home.id) ? consumer.home : this.random.pick(candidates);
    const watch = this.machines.get(host.id)!;
    const conn = new SimWatchConnection(++this.lastConnId, host, host.incarnation);
    consumer.conn = conn;
    consumer.subscribed = false;
    consumer.lastMessage = undefined;
    this.perform(host, watch, watch.machine.opened(this.queue.nowMs, conn.id, conn, 'sim-consumers'));
    const first = consumer.history.resumes === 0 && consumer.history.events + consumer.history.progress + consumer.history.snapshots === 0 && consumer.firstFromSeq === undefined;
    const fromSeq = first ? undefined : consumer.history.resumeSeq();
    consumer.startsAtSubscribed = first;
    if (!first) consumer.history.resumes++;
    const message = {
      type: 'subscribe',
      id: 1,
      prefixes: [consumer.history.selection.prefix],
      ...(fromSeq === undefined ? {} : { fromSeq }),
      ...(Object.keys(consumer.history.selection.filters).length === 0 ? {} : { filters: consumer.history.selection.filters }),
    };
    this.queue.after(this.random.int(1, 8), () => {
      const current = this.machines.get(host.id);
      if (conn.gone || current !== watch) return;
      let input;
      try {
        input = parseClientMessage(JSON.stringify(message), WATCH_LIMITS_TEST);
      } catch (error) {
        if (!(error instanceof WatchProtocolError)) throw error;
        input = { type: 'refused' as const, error };
      }
      this.perform(host, watch, watch.machine.received(this.queue.nowMs, conn.id, input));
    });
  }

  private readIntervalMs(consumer: Consumer): number {
    switch (consumer.kind) {
      case 'slow':
        return this.random.int(100, 400);
      default:
        return this.random.int(1, 10);
    }
  }

  private readLoop(consumer: Consumer): void {
    const loop = (): void => {
      this.read(consumer);
      if (consumer.kind === 'stalling' && this.faultsActive && this.queue.nowMs >= consumer.stalledUntilMs && this.random.chance(0.004))
        consumer.stalledUntilMs = this.queue.nowMs + this.random.int(1_500, 5_000);
      this.queue.after(this.readIntervalMs(consumer), loop);
    };
    this.queue.after(this.readIntervalMs(consumer), loop);
  }

  private hopLoop(consumer: Consumer): void {
    this.queue.after(this.random.int(300, 1_500), () => {
      if (!this.faultsActive) return;
      const conn = consumer.conn;
      if (conn !== undefined && !conn.gone) {
        // The client closes; the node hears of it a little later. The consumer moves to another node.
        conn.clientClosed = true;
        this.stats.hops++;
        this.queue.after(this.random.int(1, 8), () => this.closedAtNode(conn));
        consumer.home = this.random.pick(this.hosts);
        consumer.conn = undefined;
        this.queue.after(this.random.int(1, 50), () => this.connect(consumer));
      }
      this.hopLoop(consumer);
    });
  }

  private read(consumer: Consumer): void {
    const conn = consumer.conn;
    if (conn === undefined) return;
    if (conn.gone) {
      // The node crashed under this connection.
      consumer.conn = undefined;
      this.queue.after(this.random.int(10, 200), () => this.connect(consumer));
      return;
    }
    if (this.queue.nowMs < consumer.stalledUntilMs) return;
    const texts = conn.pending;
    conn.pending = [];
    conn.bufferedBytes = 0;
    for (const text of texts) {
      const message = JSON.parse(text) as ServerMessage;
      if (message.type === 'error') this.fail(`${consumer.history.label}: refused: ${text}`);
      if (message.type === 'subscribed') {
        consumer.subscribed = true;
        if (consumer.startsAtSubscribed) consumer.history.cursor = message.fromSeq - 1;
        consumer.startsAtSubscribed = false;
      }
      try {
        consumer.history.check(message, this);
      } catch (error) {
        this.fail(`${consumer.name} on ${conn.host.id}: ${(error as Error).message}`);
      }
      consumer.lastMessage = message;
    }
    const watch = this.machines.get(conn.host.id);
    if (conn.serverClose !== undefined) {
      const { code, reason } = conn.serverClose;
      if (code === WatchCloseCode.SLOW_WATCHER) {
        this.stats.slowCloses++;
        // Each subscription is told where to resume just before a 4008 (a progress message), unless a snapshot was
        // under way for it, or due and not begun (waiting for a snapshot reader): then it resumes after the last
        // message it got, and the reason must name exactly that seq (one subscription per consumer here).
        const last = consumer.lastMessage;
        const resumesAfterLast = reason === slowWatcherReason(consumer.history.cursor + 1);
        if (last !== undefined && last.type !== 'progress' && !(last.type === 'snapshot' && !last.done) && !resumesAfterLast)
          this.fail(`${consumer.name}: closed 4008 (${reason}) after ${JSON.stringify(last)}: neither a progress message nor a resume after it`);
      } else if (code !== WatchCloseCode.GOING_AWAY) this.fail(`${consumer.name}: closed ${code} ${reason}`);
      conn.clientClosed = true;
      this.closedAtNode(conn);
      consumer.conn = undefined;
      this.queue.after(this.random.int(10, 100), () => this.connect(consumer));
      return;
    }
    if (watch !== undefined && texts.length > 0) this.perform(conn.host, watch, watch.machine.drained(this.queue.nowMs, conn.id, 0));
  }

  /** The node hears that the connection is closed. */
  private closedAtNode(conn: SimWatchConnection): void {
    const watch = this.machines.get(conn.host.id);
    if (watch === undefined || watch.incarnation !== conn.incarnation || conn.gone) return;
    conn.gone = true;
    this.perform(conn.host, watch, watch.machine.closed(this.queue.nowMs, conn.id));
  }

  // Machine plumbing -----------------------------------------------------------------------------------------

  private perform(host: WatchHost, watch: NodeWatch, actions: Parameters<MemoryWatchReads['perform']>[0]): void {
    watch.reads.perform(actions);
    watch.machine.assertInvariants();
    if (watch.reads.open.size !== watch.machine.openSnapshots) this.fail(`watch machine on ${host.id} holds ${watch.reads.open.size} snapshots, counts ${watch.machine.openSnapshots}`);
    this.schedule(host);
  }

  private schedule(host: WatchHost): void {
    const watch = this.machines.get(host.id);
    if (watch === undefined) return;
    // The adapter's timer fires no sooner than the next millisecond (setTimeout 0 in the real one).
    const next = Math.max(watch.machine.nextTickMs(), this.queue.nowMs + 1);
    if (next === Infinity || next >= watch.scheduledMs) return;
    watch.scheduledMs = next;
    this.queue.at(next, () => {
      if (this.machines.get(host.id) !== watch || watch.scheduledMs !== next) return;
      watch.scheduledMs = Infinity;
      this.perform(host, watch, watch.machine.tick(this.queue.nowMs));
    });
  }
}

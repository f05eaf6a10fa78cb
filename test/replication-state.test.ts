/**
 * The replication state machines, one rule at a time: joining through a snapshot, following the stream, failover on
 * a stale upstream or a bad entry, refusals (self, loop, dataset, version, behind, diverged), divergence stopping the
 * replica until a resync (decided by the upstreams' votes and abstentions), backoff growth and cap, flow control and
 * serving a lagging child from the log.
 *
 * The machines are driven directly, with explicit times; `Link` carries bytes between one Downstream connection and
 * one Upstream session and performs storage actions on in-memory stores (the simulation's).
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, test } from 'node:test';
import { crc32 } from 'node:zlib';
import { GENESIS_HEAD, type EncodedEntry, type Op } from '../src/log/index.js';
import { MercuryError } from '../src/errors/index.js';
import {
  Downstream,
  FrameDecoder,
  PATH_NODES_MAX,
  PROTOCOL_VERSION,
  REFUSE_MESSAGE_BYTES_MAX,
  REPLICATION_LIMITS_TEST,
  RootHeartbeats,
  SnapshotDigest,
  Upstream,
  backoffDelayMs,
  decodeMessage,
  encodeEntries,
  encodeMessage,
  encodeSnapshotRecord,
  type Divergence,
  type DownstreamAction,
  type Heartbeat,
  type HelloMessage,
  type LogSource,
  type Message,
  type UpstreamAction,
} from '../src/replication/index.js';
import { Signer, TrustedKeys } from '../src/trust/index.js';
import { MemoryStore, sortedRecords } from './support/sim/memory-store.js';

const L = REPLICATION_LIMITS_TEST;
const DATASET = 'dataset-1';
const T0 = 1_000_000;

/** A root store with `count` entries; every 5th value is large so that snapshots span several chunks. */
function rootStore(count: number): MemoryStore {
  const store = new MemoryStore(DATASET);
  for (let i = 1; i <= count; i++) commit(store, i);
  return store;
}

function commit(store: MemoryStore, i: number): EncodedEntry {
  const ops: Op[] = [{ type: 'put', key: Buffer.from(`key/${i % 40}`), value: Buffer.alloc(i % 5 === 0 ? 700 : 10, i) }];
  return store.commit(T0 + i, ops);
}

function sent(actions: readonly (DownstreamAction | UpstreamAction)[]): Message[] {
  const decoder = new FrameDecoder(L.frameBytesMax);
  const messages: Message[] = [];
  for (const action of actions) if (action.type === 'send') for (const frame of decoder.push(action.bytes)) messages.push(decodeMessage(frame));
  return messages;
}

function ofType<A extends DownstreamAction | UpstreamAction, T extends A['type']>(actions: readonly A[], type: T): Extract<A, { type: T }>[] {
  return actions.filter((action): action is Extract<A, { type: T }> => action.type === type);
}

function newReplica(options: { upstreams?: string[]; store?: MemoryStore; random?: () => number; nodeId?: string; trust?: TrustedKeys } = {}): { downstream: Downstream; store: MemoryStore } {
  const store = options.store ?? new MemoryStore('');
  const downstream = new Downstream({
    nodeId: options.nodeId ?? 'replica',
    upstreams: options.upstreams ?? ['up-a', 'up-b'],
    datasetId: store.datasetId(),
    head: store.head(),
    headTimeMs: store.headTimeMs,
    limits: L,
    random: options.random ?? (() => 0.5),
    trust: options.trust,
  });
  return { downstream, store };
}

function newUpstream(
  source: LogSource,
  options: {
    nodeId?: string;
    ancestors?: string[];
    heartbeat?: Heartbeat;
    nowMs?: number;
    diverged?: () => Divergence | undefined;
    queueRoom?: (frameBytes: number) => boolean;
    snapshotRefusal?: () => string | undefined;
  } = {},
): Upstream {
  return new Upstream({
    diverged: options.diverged,
    queueRoom: options.queueRoom,
    snapshotRefusal: options.snapshotRefusal,
    nodeId: options.nodeId ?? 'root',
    source,
    ancestors: () => options.ancestors ?? [],
    latestHeartbeat: () => options.heartbeat,
    limits: L,
    nowMs: options.nowMs ?? T0,
  });
}

function helloBytes(overrides: Partial<HelloMessage> = {}): Buffer {
  return encodeMessage({ type: 'hello', protocolVersion: PROTOCOL_VERSION, resync: false, datasetId: DATASET, nodeId: 'child', path: [], head: GENESIS_HEAD, httpUrl: '', ...overrides });
}

/** Carries bytes between one Downstream connection and one Upstream session, and applies storage actions. */
class Link {
  readonly downstreamActions: DownstreamAction[] = [];
  readonly upstreamActions: UpstreamAction[] = [];
  private toUpstream: Buffer[] = [];
  private toDownstream: Buffer[] = [];
  /** The upstream asked to be resumed on a later turn (its `continue` action). */
  private continues = 0;
  nowMs = T0;

  constructor(
    readonly downstream: Downstream,
    readonly replica: MemoryStore,
    readonly upstream: Upstream,
    readonly connId: number,
  ) {}

  /** Starts the downstream and completes the connection to this link's upstream. */
  static open(downstream: Downstream, replica: MemoryStore, source: LogSource, options: Parameters<typeof newUpstream>[1] = {}): Link {
    const [connect] = downstream.start(T0);
    assert.equal(connect?.type, 'connect');
    const link = new Link(downstream, replica, newUpstream(source, options), connect.connId);
    link.fromDownstream(downstream.connected(T0, connect.connId));
    link.settle();
    return link;
  }

  fromDownstream(actions: readonly DownstreamAction[]): void {
    for (const action of actions) {
      this.downstreamActions.push(action);
      switch (action.type) {
        case 'send':
          if (action.connId === this.connId) this.toUpstream.push(action.bytes);
          break;
        case 'apply':
          this.replica.apply(action.entries);
          break;
        case 'snapshotBegin':
          this.replica.beginSnapshot();
          break;
        case 'snapshotChunk':
          this.replica.stageSnapshot(action.records);
          break;
        case 'snapshotFinish':
          this.replica.finishSnapshot(action.seq, action.hash, action.datasetId);
          break;
        case 'snapshotAbort':
          this.replica.abortSnapshot();
          break;
        default:
          break;
      }
    }
  }

  fromUpstream(actions: readonly UpstreamAction[]): void {
    for (const action of actions) {
      this.upstreamActions.push(action);
      if (action.type === 'send') this.toDownstream.push(action.bytes);
      if (action.type === 'continue') this.continues++;
    }
  }

  /** Delivers everything in flight, both ways, until both sides are quiet. */
  settle(): void {
    while (this.toUpstream.length > 0 || this.toDownstream.length > 0 || this.continues > 0) {
      for (; this.continues > 0; this.continues--) this.fromUpstream(this.upstream.resume(this.nowMs));
      const up = this.toUpstream;
      this.toUpstream = [];
      for (const bytes of up) this.fromUpstream(this.upstream.receive(this.nowMs, bytes));
      const down = this.toDownstream;
      this.toDownstream = [];
      for (const bytes of down) this.fromDownstream(this.downstream.receive(this.nowMs, this.connId, bytes));
    }
  }

  /** Messages the upstream sent and the downstream has not taken yet are dropped (a black-holed link). */
  dropInFlight(): void {
    this.toUpstream = [];
    this.toDownstream = [];
  }
}

/** Counts disk reads, to tell entries served from the log from entries pushed from memory. */
class CountingSource implements LogSource {
  reads = 0;
  constructor(readonly store: MemoryStore) {}
  datasetId(): string {
    return this.store.datasetId();
  }
  head() {
    return this.store.head();
  }
  firstSeq(): number {
    return this.store.firstSeq();
  }
  hashAt(seq: number): Buffer | undefined {
    return this.store.hashAt(seq);
  }
  readLog(fromSeq: number, limitEntries: number, limitBytes: number): EncodedEntry[] {
    this.reads++;
    return this.store.readLog(fromSeq, limitEntries, limitBytes);
  }
  openSnapshot() {
    return this.store.openSnapshot();
  }
}

describe('replication state machines', () => {
  test('downstream: a new replica joins through a snapshot, then follows the live stream', () => {
    const root = rootStore(60);
    const { downstream, store } = newReplica();
    const link = Link.open(downstream, store, root);
    assert.equal(downstream.status().phase, 'streaming');
    assert.deepStrictEqual(store.head(), root.head());
    assert.deepStrictEqual(sortedRecords(new Map(store.keySpace)), sortedRecords(new Map(root.keySpace)));
    assert.equal(store.datasetId(), DATASET);
    assert.ok(ofType(link.downstreamActions, 'snapshotChunk').length > 1, 'the snapshot spans several chunks');
    // Live entries are pushed and applied as they commit.
    for (let i = 61; i <= 65; i++) link.fromUpstream(link.upstream.localApplied(T0, [commit(root, i)]));
    link.settle();
    assert.equal(store.head().seq, 65);
    assert.ok(store.head().hash.equals(root.head().hash));
    assert.equal(downstream.status().snapshotsInstalled, 1);
  });

  test('downstream: an upstream that sends nothing for the stale time is dropped for the next one', () => {
    const root = rootStore(5);
    const { downstream, store } = newReplica();
    const link = Link.open(downstream, store, root);
    const staleMs = L.upstreamStaleMs + 1 * L.upstreamStaleHopMs; // the root's child: one ancestor
    assert.equal(downstream.status().ancestors.length, 1);
    // Keep-alive ACKs go out meanwhile, but they are not progress.
    const early = downstream.tick(T0 + staleMs - 1);
    assert.ok(sent(early).every((message) => message.type === 'ack'));
    assert.equal(downstream.status().phase, 'streaming');
    const stale = downstream.tick(T0 + staleMs);
    assert.deepStrictEqual(
      ofType(stale, 'close').map((action) => action.connId),
      [link.connId],
    );
    assert.equal(downstream.status().phase, 'backoff');
    assert.match(downstream.status().lastFailure ?? '', /stale/);
    const retryMs = downstream.nextTickMs()!;
    assert.ok(retryMs >= T0 + staleMs + L.reconnectBackoffMsMin);
    assert.deepStrictEqual(downstream.tick(retryMs - 1), []);
    const [connect] = downstream.tick(retryMs);
    assert.deepStrictEqual(connect, { type: 'connect', connId: link.connId + 1, upstream: 'up-b', upstreamIndex: 1 });
  });

  test('downstream: an upstream dropped as stale is told as silent, with the HTTP URL it announced (the node ends the writes it forwarded there); one that closes is not', () => {
    const { downstream } = newReplica();
    const root = rootStore(2);
    const httpUrl = 'http://127.0.0.1:7070';
    const welcome = encodeMessage({ type: 'welcome', datasetId: DATASET, nodeId: 'root', httpUrl, path: ['root'], head: root.head(), mode: 'snapshot', fromSeq: 0 });
    const [connect] = downstream.start(T0);
    assert.ok(connect?.type === 'connect');
    downstream.connected(T0, connect.connId);
    assert.deepStrictEqual(ofType(downstream.receive(T0, connect.connId, welcome), 'upstreamSilent'), []);
    const staleMs = L.upstreamStaleMs + L.upstreamStaleHopMs; // the root's child
    assert.deepStrictEqual(ofType(downstream.tick(T0 + staleMs - 1), 'upstreamSilent'), []);
    const stale = downstream.tick(T0 + staleMs);
    assert.deepStrictEqual(ofType(stale, 'upstreamSilent'), [{ type: 'upstreamSilent', httpUrl, reason: `upstream stale: no progress for ${staleMs} ms` }]);
    // The next one closes: it is there, and a write forwarded to it is answered or fails on its own.
    const retryMs = downstream.nextTickMs()!;
    const [retry] = downstream.tick(retryMs);
    assert.ok(retry?.type === 'connect');
    downstream.connected(retryMs, retry.connId);
    downstream.receive(retryMs, retry.connId, welcome);
    assert.equal(downstream.status().upstreamHttpUrl, httpUrl);
    const closed = downstream.closed(retryMs + 1, retry.connId, 'read ECONNRESET');
    assert.equal(downstream.status().phase, 'backoff');
    assert.deepStrictEqual(ofType(closed, 'upstreamSilent'), []);
  });

  test('downstream: after streaming from a fallback for preferredUpstreamRetryMs, it tries the first upstream again', () => {
    const root = rootStore(5);
    const { downstream, store } = newReplica();
    const [first] = downstream.start(T0);
    assert.deepStrictEqual(first, { type: 'connect', connId: 1, upstream: 'up-a', upstreamIndex: 0 });
    downstream.closed(T0, 1, 'connect ECONNREFUSED');
    const retryMs = downstream.nextTickMs()!;
    const [second] = downstream.tick(retryMs);
    assert.deepStrictEqual(second, { type: 'connect', connId: 2, upstream: 'up-b', upstreamIndex: 1 });
    const link = new Link(downstream, store, newUpstream(root, { nowMs: retryMs }), 2);
    link.nowMs = retryMs;
    link.fromDownstream(downstream.connected(retryMs, 2));
    link.settle();
    assert.equal(downstream.status().phase, 'streaming');
    // Healthy meanwhile: heartbeats keep the session from going stale; nothing happens before the retry time.
    let now = retryMs;
    let actions: DownstreamAction[] = [];
    while (now < retryMs + L.preferredUpstreamRetryMs) {
      now = Math.min(now + 100, retryMs + L.preferredUpstreamRetryMs);
      link.nowMs = now;
      link.fromUpstream(link.upstream.heartbeat(now, { rootSeq: root.head().seq, rootTimeMs: now, path: [] }));
      link.settle();
      assert.ok(downstream.nextTickMs()! <= retryMs + L.preferredUpstreamRetryMs);
      actions = downstream.tick(now);
      if (ofType(actions, 'connect').length > 0) break;
    }
    assert.equal(now, retryMs + L.preferredUpstreamRetryMs);
    assert.deepStrictEqual(ofType(actions, 'close').map((action) => action.connId), [2]);
    assert.deepStrictEqual(ofType(actions, 'connect'), [{ type: 'connect', connId: 3, upstream: 'up-a', upstreamIndex: 0 }]);
    assert.equal(downstream.status().consecutiveFailures, 0, 'leaving a healthy fallback is not a failure');
  });

  test('downstream: a return to the first upstream that it does not welcome is given up after preferredHandshakeTimeoutMs, and the next return waits twice as long (a vanished first upstream cost a whole handshake timeout every return)', () => {
    const root = rootStore(5);
    const { downstream, store } = newReplica();
    downstream.start(T0);
    downstream.closed(T0, 1, 'connect ECONNREFUSED');
    /** Streams from up-b on connection `connId` from `atMs` until the machine returns to up-a; returns when it did. */
    const streamUntilReturn = (connId: number, atMs: number): { nowMs: number; connect: DownstreamAction[] } => {
      const link = new Link(downstream, store, newUpstream(root, { nowMs: atMs }), connId);
      link.nowMs = atMs;
      link.fromDownstream(downstream.connected(atMs, connId));
      link.settle();
      assert.equal(downstream.status().phase, 'streaming');
      for (let now = atMs + 100; ; now += 100) {
        link.nowMs = now;
        link.fromUpstream(link.upstream.heartbeat(now, { rootSeq: root.head().seq, rootTimeMs: now, path: [] }));
        link.settle();
        const connect = ofType(downstream.tick(now), 'connect');
        if (connect.length > 0) return { nowMs: now, connect };
        assert.ok(now < atMs + 10 * L.preferredUpstreamRetryMs, 'the replica never returned to its first upstream');
      }
    };
    const fallbackMs = downstream.nextTickMs()!;
    assert.deepStrictEqual(downstream.tick(fallbackMs), [{ type: 'connect', connId: 2, upstream: 'up-b', upstreamIndex: 1 }]);
    const first = streamUntilReturn(2, fallbackMs);
    assert.equal(first.nowMs, fallbackMs + L.preferredUpstreamRetryMs);
    assert.deepStrictEqual(first.connect, [{ type: 'connect', connId: 3, upstream: 'up-a', upstreamIndex: 0 }]);
    // up-a answers nothing (its host vanished): the return is given up after preferredHandshakeTimeoutMs.
    assert.equal(downstream.nextTickMs(), first.nowMs + L.preferredHandshakeTimeoutMs);
    assert.deepStrictEqual(ofType(downstream.tick(first.nowMs + L.preferredHandshakeTimeoutMs - 1), 'close'), []);
    assert.deepStrictEqual(ofType(downstream.tick(first.nowMs + L.preferredHandshakeTimeoutMs), 'close').map((action) => action.connId), [3]);
    assert.equal(downstream.status().lastFailure, `no answer to the handshake within ${L.preferredHandshakeTimeoutMs} ms`);
    const backMs = downstream.nextTickMs()!;
    assert.deepStrictEqual(downstream.tick(backMs), [{ type: 'connect', connId: 4, upstream: 'up-b', upstreamIndex: 1 }]);
    const second = streamUntilReturn(4, backMs);
    assert.equal(second.nowMs, backMs + 2 * L.preferredUpstreamRetryMs, 'the next return waits twice as long');
  });

  test('downstream: every heartbeat is progress; one older by seq is not forwarded', () => {
    // The replica has all 7 entries: no heartbeat below says the root is past it (see the withholding tests).
    const root = rootStore(7);
    const { downstream, store } = newReplica();
    const link = Link.open(downstream, store, root);
    const staleMs = L.upstreamStaleMs + L.upstreamStaleHopMs;
    const beat = (rootSeq: number, rootTimeMs: number, atMs: number): DownstreamAction[] => {
      const up = link.upstream.heartbeat(atMs, { rootSeq, rootTimeMs, path: [] });
      return downstream.receive(atMs, link.connId, Buffer.concat(ofType(up, 'send').map((action) => action.bytes)));
    };
    const fresh = beat(5, 500, T0 + 400);
    assert.deepStrictEqual(ofType(fresh, 'heartbeat'), [{ type: 'heartbeat', heartbeat: { rootSeq: 5, rootTimeMs: 500, path: ['root'] } }]);
    assert.equal(ofType(downstream.tick(T0 + staleMs), 'close').length, 0, 'the heartbeat moved the deadline');
    // An idle root repeats its seq: forwarded, since children need each beat to stay connected.
    assert.equal(ofType(beat(5, 500, T0 + 800), 'heartbeat').length, 1);
    // Older news (a lower seq) still proves the link alive, but is neither forwarded nor used for lag.
    beat(7, 600, T0 + 900);
    assert.deepStrictEqual(ofType(beat(6, 700, T0 + 1000), 'heartbeat'), []);
    assert.equal(downstream.status().lastHeartbeatRootSeq, 7);
    assert.equal(ofType(downstream.tick(T0 + 999 + staleMs), 'close').length, 0);
    assert.equal(ofType(downstream.tick(T0 + 1000 + staleMs), 'close').length, 1);
  });

  // Found by an audit (2026-12-06): a relay passes on whatever heartbeat its upstream sent (a hostile one, before the relay
  // dropped it as withholding), and its children took the relay's later, honest heartbeats as older news for the rest
  // of the session: lag pinned at 2^50 entries (the replica not ready), no heartbeat forwarded further down.
  test('downstream: after a heartbeat claiming a far seq, a lower one that this node\'s data does not make old news is taken', () => {
    const root = rootStore(7);
    const { downstream, store } = newReplica();
    const link = Link.open(downstream, store, root);
    const beat = (rootSeq: number, atMs: number): DownstreamAction[] =>
      downstream.receive(atMs, link.connId, encodeMessage({ type: 'heartbeat', rootSeq, rootTimeMs: atMs, path: ['root'] }));
    beat(2 ** 50, T0 + 100);
    assert.equal(downstream.status().lagEntries, 2 ** 50 - 7);
    // The relay is back on an honest upstream: the root is idle at this node's head.
    const honest = beat(7, T0 + 400);
    assert.equal(downstream.status().lagEntries, 0);
    assert.equal(downstream.status().lastHeartbeatRootSeq, 7);
    assert.equal(ofType(honest, 'heartbeat').length, 1, 'passed on to the children');
    // A heartbeat behind this node's own data is still old news.
    assert.deepStrictEqual(ofType(beat(6, T0 + 800), 'heartbeat'), []);
    assert.equal(downstream.status().lastHeartbeatRootSeq, 7);
  });

  // Found by an audit (2026-12-06): an upstream flooding heartbeats had each passed on to every child of the relay.
  test('downstream: a flood of heartbeats is passed on to the children at most twice per heartbeat interval, whatever seqs it claims', () => {
    const root = rootStore(7);
    const { downstream, store } = newReplica();
    const link = Link.open(downstream, store, root);
    let forwarded = 0;
    let atMs = T0;
    for (let i = 0; i < 1_000; i++, atMs += 1) {
      // Written by hand: an honest upstream (link.upstream) would stop at the window this test never acknowledges.
      const beat = encodeMessage({ type: 'heartbeat', rootSeq: 7 + i, rootTimeMs: atMs, path: ['root'] });
      forwarded += ofType(downstream.receive(atMs, link.connId, beat), 'heartbeat').length;
    }
    const intervals = 1_000 / L.heartbeatIntervalMs;
    assert.ok(forwarded >= intervals && forwarded <= 2 * intervals + 1, `${forwarded} of 1,000 heartbeats in ${intervals} intervals passed on`);
    assert.ok(downstream.status().lastHeartbeatRootSeq! >= 999, 'each still counts for the lag');
  });

  test('downstream: an upstream whose heartbeats say the root is past this node must send data within the stale time, or it is dropped as withholding', () => {
    // Found by review: heartbeats counted as progress whatever they said, so a relay that withheld entries behind them
    // kept its children for good.
    const root = rootStore(5);
    const { downstream, store } = newReplica();
    const link = Link.open(downstream, store, root);
    const staleMs = L.upstreamStaleMs + L.upstreamStaleHopMs;
    const beat = (rootSeq: number, atMs: number): void => {
      link.nowMs = atMs;
      assert.equal(ofType(downstream.tick(atMs), 'close').length, 0, `closed before the heartbeat at ${atMs - T0} ms`);
      link.fromUpstream(link.upstream.heartbeat(atMs, { rootSeq, rootTimeMs: atMs, path: [] }));
      link.settle();
    };
    // The heartbeat that says entry 6 exists comes first, the entry a moment later: no failure, however long after.
    let now = T0 + 100;
    beat(6, now);
    link.fromUpstream(link.upstream.localApplied(now, [commit(root, 6)]));
    link.settle();
    assert.equal(store.head().seq, 6);
    for (const end = now + 3 * staleMs; now < end; now += L.heartbeatIntervalMs) beat(6, now);
    // Now the heartbeats say the root is at 7, and the upstream never sends entry 7: heartbeats keep coming (the old
    // rule took each as progress), and the stale time after the first of them the upstream is dropped.
    const claimedAt = now;
    for (; now < claimedAt + staleMs; now += L.heartbeatIntervalMs) beat(7, now);
    assert.equal(ofType(downstream.tick(claimedAt + staleMs - 1), 'close').length, 0);
    assert.equal(ofType(downstream.tick(claimedAt + staleMs), 'close').length, 1);
    assert.match(downstream.status().lastFailure ?? '', /^upstream withholding: its heartbeats say the root is at seq 7, this node is at 6, and nothing more came for \d+ ms$/);
  });

  test('downstream with trusted keys: only the root\'s signed heartbeats, each newer than any taken, are progress, checked when progress is due', () => {
    const signer = new Signer(generateKeyPairSync('ed25519').privateKey);
    const root = rootStore(5);
    const { downstream, store } = newReplica({ store: rootStore(5), trust: new TrustedKeys([signer.publicKey]) });
    const link = Link.open(downstream, store, root);
    assert.equal(downstream.status().phase, 'streaming');
    const staleMs = L.upstreamStaleMs + L.upstreamStaleHopMs;
    const dueMs = staleMs / 2;
    const heartbeats = new RootHeartbeats(signer, Buffer.alloc(8, 1));
    const deliver = (heartbeat: Heartbeat, atMs: number): void => {
      assert.equal(ofType(downstream.tick(atMs), 'close').length, 0, `closed before the heartbeat at ${atMs - T0} ms`);
      const up = link.upstream.heartbeat(atMs, heartbeat);
      downstream.receive(atMs, link.connId, Buffer.concat(ofType(up, 'send').map((action) => action.bytes)));
    };
    const ignored = (): number => downstream.status().trust!.heartbeatsIgnored;
    // Before progress is due a heartbeat is not checked at all, good or bad (a busy link verifies none).
    deliver({ rootSeq: 5, rootTimeMs: 1, path: [] }, T0 + 100);
    assert.equal(ignored(), 0);
    // Due: the root's next beat is taken, and moves the deadline.
    const first = heartbeats.next(5, 2);
    let progressMs = T0 + dueMs;
    deliver(first, progressMs);
    assert.equal(ignored(), 0);
    // Replayed, unsigned, signed by another key, or with its rootSeq pinned lower: each checked once due, and refused.
    const other = new RootHeartbeats(new Signer(generateKeyPairSync('ed25519').privateKey), Buffer.alloc(8, 1)).next(5, 3);
    const later = heartbeats.next(5, 4);
    for (const [i, bad] of [first, { rootSeq: 5, rootTimeMs: 5, path: [] }, other, { ...later, rootSeq: 4 }].entries()) {
      deliver(bad, progressMs + dueMs + i);
      assert.equal(ignored(), i + 1, `heartbeat ${i} was taken`);
    }
    progressMs += dueMs + 10;
    deliver(later, progressMs);
    assert.equal(ignored(), 4, 'the next beat is taken');
    // A relay that replays what it has keeps nobody: the stale time after the last heartbeat taken, the link is dropped.
    for (let now = progressMs + L.heartbeatIntervalMs; now < progressMs + staleMs; now += L.heartbeatIntervalMs) deliver(later, now);
    assert.ok(ignored() > 4, 'the replays were checked and refused');
    assert.equal(ofType(downstream.tick(progressMs + staleMs), 'close').length, 1);
    assert.match(downstream.status().lastFailure ?? '', /^upstream stale/);
  });

  test('downstream with trusted keys: a signed heartbeat past this node\'s head, with the entries withheld, drops the upstream', () => {
    const signer = new Signer(generateKeyPairSync('ed25519').privateKey);
    const root = rootStore(5);
    const { downstream, store } = newReplica({ store: rootStore(5), trust: new TrustedKeys([signer.publicKey]) });
    const link = Link.open(downstream, store, root);
    const staleMs = L.upstreamStaleMs + L.upstreamStaleHopMs;
    const heartbeats = new RootHeartbeats(signer, Buffer.alloc(8, 2));
    let now = T0 + 100;
    const claimedAt = now;
    for (; now < claimedAt + staleMs; now += L.heartbeatIntervalMs) {
      assert.equal(ofType(downstream.tick(now), 'close').length, 0);
      const up = link.upstream.heartbeat(now, heartbeats.next(6, now));
      downstream.receive(now, link.connId, Buffer.concat(ofType(up, 'send').map((action) => action.bytes)));
    }
    assert.equal(ofType(downstream.tick(claimedAt + staleMs), 'close').length, 1);
    assert.match(downstream.status().lastFailure ?? '', /^upstream withholding: its heartbeats say the root is at seq 6, this node is at 5/);
    assert.equal(downstream.status().trust!.heartbeatsIgnored, 0);
  });

  test('downstream: a heartbeat from an hour ahead, or a root clock stepping back, never makes a healthy upstream stale', () => {
    const root = rootStore(5);
    const { downstream, store } = newReplica();
    const link = Link.open(downstream, store, root);
    const hourMs = 3_600_000;
    const wallMs = 1_700_000_000_000;
    const actions: DownstreamAction[] = [];
    // One heartbeat an hour ahead, then the root's clock as it was, then stepped back an hour: an idle root, beating
    // every heartbeatIntervalMs for many stale times. The replica's deadlines run on its own monotonic clock.
    const skews = [hourMs, ...Array<number>(20).fill(0), ...Array<number>(40).fill(-hourMs)];
    let now = T0;
    for (const [i, skew] of skews.entries()) {
      now = T0 + (i + 1) * L.heartbeatIntervalMs;
      link.nowMs = now;
      actions.push(...downstream.tick(now));
      const up = link.upstream.heartbeat(now, { rootSeq: 5, rootTimeMs: wallMs + i * L.heartbeatIntervalMs + skew, path: [] });
      const received = downstream.receive(now, link.connId, Buffer.concat(ofType(up, 'send').map((action) => action.bytes)));
      assert.equal(ofType(received, 'heartbeat').length, 1, `heartbeat ${i} was not forwarded`);
      actions.push(...received);
    }
    assert.ok(now - T0 > 5 * (L.upstreamStaleMs + L.upstreamStaleHopMs));
    assert.deepStrictEqual(ofType(actions, 'close'), []);
    assert.equal(downstream.status().phase, 'streaming');
    assert.equal(downstream.status().upstreamSwitches, 1);
    assert.equal(downstream.status().lagEntries, 0);
  });

  test('downstream: the stale time grows with the depth of the upstream', () => {
    const root = rootStore(3);
    const { downstream, store } = newReplica();
    Link.open(downstream, store, root, { nodeId: 'mid', ancestors: ['root', 'a', 'b'] });
    assert.deepStrictEqual(downstream.status().ancestors, ['root', 'a', 'b', 'mid']);
    const staleMs = L.upstreamStaleMs + 4 * L.upstreamStaleHopMs;
    assert.equal(ofType(downstream.tick(T0 + staleMs - 1), 'close').length, 0);
    assert.equal(ofType(downstream.tick(T0 + staleMs), 'close').length, 1);
  });

  test('downstream: an entry failing verification drops the upstream after applying the verified prefix', () => {
    const root = rootStore(10);
    const replicaStore = new MemoryStore(DATASET);
    replicaStore.apply(root.readLog(1, 5, Infinity));
    const { downstream, store } = newReplica({ store: replicaStore });
    const link = Link.open(downstream, store, root);
    assert.equal(store.head().seq, 10);
    const next = [11, 12, 13].map((i) => commit(root, i).record);
    const damaged = Buffer.from(next[2]!);
    damaged[30] = damaged[30]! ^ 0x01;
    const actions = downstream.receive(T0 + 1, link.connId, encodeEntries([next[0]!, next[1]!, damaged]));
    assert.deepStrictEqual(
      ofType(actions, 'apply').flatMap((action) => action.entries.map((encoded) => encoded.entry.seq)),
      [11, 12],
    );
    assert.equal(ofType(actions, 'close').length, 1);
    assert.match(downstream.status().lastFailure ?? '', /failed verification/);
    assert.equal(downstream.status().head.seq, 12);
    const [connect] = downstream.tick(downstream.nextTickMs()!);
    assert.equal(connect?.type === 'connect' && connect.upstream, 'up-b');
  });

  test('downstream: an entry that is not exactly head + 1 drops the upstream', () => {
    const root = rootStore(10);
    const { downstream, store } = newReplica();
    const link = Link.open(downstream, store, root);
    commit(root, 11);
    const twelve = commit(root, 12).record;
    const actions = downstream.receive(T0 + 1, link.connId, encodeEntries([twelve]));
    assert.equal(ofType(actions, 'apply').length, 0);
    assert.equal(ofType(actions, 'close').length, 1);
    assert.match(downstream.status().lastFailure ?? '', /expected seq 11, got 12/);
  });

  test('downstream: CHAIN_DIVERGED from every upstream stops following until an operator resyncs', () => {
    const { downstream } = newReplica({ store: rootStore(4) });
    const [connect] = downstream.start(T0);
    assert.ok(connect?.type === 'connect');
    downstream.connected(T0, connect.connId);
    const diverged = encodeMessage({ type: 'refuse', reason: 'CHAIN_DIVERGED', message: 'hash differs at 4' });
    // The first upstream's word alone (unsigned, perhaps a lying relay's) is a failure of that upstream: the next one is tried.
    downstream.receive(T0 + 1, connect.connId, diverged);
    assert.equal(downstream.status().phase, 'backoff');
    const [next] = downstream.tick(downstream.nextTickMs()!);
    assert.ok(next?.type === 'connect' && next.upstream === 'up-b');
    downstream.connected(T0 + 100, next.connId);
    const refused = downstream.receive(T0 + 101, next.connId, diverged);
    assert.equal(ofType(refused, 'close').length, 1);
    assert.ok(ofType(refused, 'log').some((action) => action.level === 'error'));
    const status = downstream.status();
    assert.equal(status.phase, 'diverged');
    assert.match(status.divergedReason ?? '', /CHAIN_DIVERGED/);
    // No retries, however long we wait.
    assert.equal(downstream.nextTickMs(), undefined);
    assert.deepStrictEqual(downstream.tick(T0 + 3_600_000), []);
    // The operator asks for a resync: the next HELLO requests a snapshot.
    const resync = downstream.resync(T0 + 3_600_000);
    const again = ofType(resync, 'connect')[0]!;
    const [hello] = sent(downstream.connected(T0 + 3_600_000, again.connId));
    assert.ok(hello?.type === 'hello' && hello.resync);
  });

  test('downstream: a divergence and a resync recorded before a restart: it starts stopped, or asks for a snapshot; halted, it takes a resync again', () => {
    const store = rootStore(4);
    const options = { nodeId: 'replica', upstreams: ['up-a'], datasetId: store.datasetId(), head: store.head(), limits: L, random: () => 0.5 };
    const { downstream } = newReplica({ store, upstreams: ['up-a'] });
    const [connect] = downstream.start(T0);
    assert.ok(connect?.type === 'connect');
    downstream.connected(T0, connect.connId);
    const refused = downstream.receive(T0 + 1, connect.connId, encodeMessage({ type: 'refuse', reason: 'CHAIN_DIVERGED', message: 'hash differs at 4' }));
    // The adapter records it, behind whatever was applied before.
    const [recorded] = ofType(refused, 'diverged');
    assert.deepEqual(recorded?.divergence, downstream.divergence());

    // Restarted with the record: stopped at once, no connection, and the children are judged by the recorded head.
    const restarted = new Downstream({ ...options, divergence: recorded!.divergence });
    assert.equal(ofType(restarted.start(T0), 'connect').length, 0);
    assert.equal(restarted.status().phase, 'diverged');
    assert.deepEqual(restarted.divergence(), recorded!.divergence);
    assert.equal(restarted.nextTickMs(), undefined);
    const again = ofType(restarted.resync(T0 + 1), 'connect')[0]!;
    const [hello] = sent(restarted.connected(T0 + 1, again.connId));
    assert.ok(hello?.type === 'hello' && hello.resync);
    // Following again, for the snapshot; the children are judged by the condemned chain until it is replaced.
    assert.equal(restarted.status().divergedReason, undefined);
    assert.deepEqual(restarted.divergence(), recorded!.divergence);

    // Restarted with a resync pending (which wins over a divergence): the first HELLO asks for the snapshot, and the
    // children are judged by the divergence until it installs.
    const resyncing = new Downstream({ ...options, resync: true, divergence: recorded!.divergence });
    const first = ofType(resyncing.start(T0), 'connect')[0]!;
    const [resyncHello] = sent(resyncing.connected(T0, first.connId));
    assert.ok(resyncHello?.type === 'hello' && resyncHello.resync);
    assert.equal(resyncing.status().resyncPending, true);
    assert.deepEqual(resyncing.divergence(), recorded!.divergence);
    // Halted on damaged data meanwhile: not stuck behind the pending request, an operator's resync starts one again.
    resyncing.halt(T0 + 1, 'DATA_CORRUPTED: key "a"');
    assert.equal(resyncing.status().resyncPending, false);
    assert.equal(ofType(resyncing.resync(T0 + 2), 'connect').length, 1);
  });

  test('downstream: an upstream that claims divergence while another welcomes the chain is failed over, not believed', () => {
    const root = rootStore(6);
    const { downstream, store } = newReplica({ store: rootStore(4) });
    const [connect] = downstream.start(T0);
    assert.ok(connect?.type === 'connect' && connect.upstream === 'up-a');
    downstream.connected(T0, connect.connId);
    downstream.receive(T0 + 1, connect.connId, encodeMessage({ type: 'refuse', reason: 'CHAIN_DIVERGED', message: 'a lie' }));
    assert.equal(downstream.status().phase, 'backoff');
    const [next] = downstream.tick(downstream.nextTickMs()!);
    assert.ok(next?.type === 'connect' && next.upstream === 'up-b');
    const link = new Link(downstream, store, newUpstream(root), next.connId);
    link.fromDownstream(downstream.connected(T0 + 100, next.connId));
    link.settle();
    assert.equal(downstream.status().phase, 'streaming');
    assert.equal(store.head().seq, 6);
    // up-b goes away and up-a lies again: its first word was cleared by up-b's entries, so this is one vote, not all.
    downstream.closed(T0 + 1_000, next.connId);
    const t2 = downstream.nextTickMs()!;
    const [again] = downstream.tick(t2);
    assert.ok(again?.type === 'connect' && again.upstream === 'up-a');
    downstream.connected(t2, again.connId);
    downstream.receive(t2 + 1, again.connId, encodeMessage({ type: 'refuse', reason: 'CHAIN_DIVERGED', message: 'a lie' }));
    assert.equal(downstream.status().phase, 'backoff');
  });

  test('downstream: CHAIN_DIVERGED votes last until an upstream gives entries, not until one merely welcomes the chain', () => {
    // Relays on the same forked chain welcome this node and have nothing to give it (they stopped following, or lost
    // their own upstream): their welcome says nothing about whether the chain is the root's.
    const { downstream, store } = newReplica({ store: rootStore(4), upstreams: ['root', 'relay-a', 'relay-b'] });
    const diverged = encodeMessage({ type: 'refuse', reason: 'CHAIN_DIVERGED', message: 'hash differs at 4' });
    const welcome = (nodeId: string): Buffer =>
      encodeMessage({ type: 'welcome', datasetId: DATASET, nodeId, httpUrl: '', path: ['root', nodeId], head: store.head(), mode: 'stream', fromSeq: 5 });
    let nowMs = T0;
    const attempt = (upstream: string, answer: 'refuse' | 'welcome'): void => {
      const [connect] = nowMs === T0 ? downstream.start(nowMs) : downstream.tick((nowMs = downstream.nextTickMs()!));
      assert.ok(connect?.type === 'connect' && connect.upstream === upstream, JSON.stringify(connect));
      downstream.connected(nowMs, connect.connId);
      downstream.receive(nowMs + 1, connect.connId, answer === 'refuse' ? diverged : welcome(upstream));
      if (answer === 'welcome') downstream.closed(nowMs + 2, connect.connId, 'upstream stale');
      nowMs += 3;
    };
    attempt('root', 'refuse');
    attempt('relay-a', 'refuse');
    attempt('relay-b', 'welcome');
    attempt('root', 'refuse');
    attempt('relay-a', 'welcome');
    assert.notEqual(downstream.status().phase, 'diverged');
    // Every upstream has now refused the chain since any gave it an entry.
    attempt('relay-b', 'refuse');
    assert.equal(downstream.status().phase, 'diverged');
    assert.match(downstream.status().divergedReason ?? '', /CHAIN_DIVERGED/);
  });

  test('downstream: CHAIN_DIVERGED is a vote, UPSTREAM_DIVERGED an abstention; the node stops once all answered and one voted', () => {
    type Answer = 'CHAIN_DIVERGED' | 'UPSTREAM_DIVERGED';
    /** Each upstream in turn answers the next of `answers` (wrapping round the list as the replica does). */
    const run = (upstreams: string[], answers: Answer[]): Downstream => {
      const { downstream } = newReplica({ store: rootStore(4), upstreams });
      let nowMs = T0;
      for (const [i, answer] of answers.entries()) {
        const [connect] = i === 0 ? downstream.start(nowMs) : downstream.tick((nowMs = downstream.nextTickMs()!));
        assert.ok(connect?.type === 'connect' && connect.upstream === upstreams[i % upstreams.length], JSON.stringify(connect));
        downstream.connected(nowMs, connect.connId);
        downstream.receive(nowMs + 1, connect.connId, encodeMessage({ type: 'refuse', reason: answer, message: `${answer} from ${connect.upstream}` }));
      }
      return downstream;
    };
    const stopped = (downstream: Downstream, votedBy: string): void => {
      const status = downstream.status();
      assert.equal(status.phase, 'diverged');
      assert.equal(status.divergedReason, `upstream refused: CHAIN_DIVERGED: CHAIN_DIVERGED from ${votedBy}`);
      assert.deepStrictEqual(status.divergedHead, rootStore(4).head());
      assert.equal(downstream.nextTickMs(), undefined);
    };
    stopped(run(['root', 'relay'], ['CHAIN_DIVERGED', 'CHAIN_DIVERGED']), 'relay');
    // The abstention completes the count; the reason is the vote's, not the abstention's.
    stopped(run(['root', 'relay'], ['CHAIN_DIVERGED', 'UPSTREAM_DIVERGED']), 'root');
    stopped(run(['relay', 'root'], ['UPSTREAM_DIVERGED', 'CHAIN_DIVERGED']), 'root');
    // Only abstentions, round after round: it never stops, and keeps trying every upstream.
    for (const upstreams of [['relay'], ['relay-a', 'relay-b']]) {
      const downstream = run(upstreams, Array.from({ length: 6 }, (): Answer => 'UPSTREAM_DIVERGED'));
      const status = downstream.status();
      assert.equal(status.phase, 'backoff', upstreams.join());
      assert.equal(status.divergedReason, undefined);
      assert.equal(status.divergedHead, undefined);
      assert.match(status.lastFailure ?? '', /^upstream refused: UPSTREAM_DIVERGED: /);
      assert.notEqual(downstream.nextTickMs(), undefined);
    }
  });

  test('downstream: a resync installs the upstream snapshot even below the local head', () => {
    const root = rootStore(20);
    // A replica that followed another chain further than the root.
    const diverged = new MemoryStore(DATASET);
    for (let i = 1; i <= 25; i++) diverged.commit(T0 + i, [{ type: 'put', key: Buffer.from('other'), value: Buffer.from(String(i)) }]);
    const { downstream, store } = newReplica({ store: diverged });
    downstream.resync(T0);
    Link.open(downstream, store, root);
    assert.equal(downstream.status().phase, 'streaming');
    assert.deepStrictEqual(store.head(), root.head());
    assert.equal(store.keySpace.get('other'), undefined);
  });

  test('downstream: reconnect backoff doubles per failure, is capped, and never spins', () => {
    const { downstream } = newReplica({ upstreams: ['a', 'b', 'c'], random: () => 0.999_999 });
    let now = T0;
    let [action] = downstream.start(now);
    const delays: number[] = [];
    const order: string[] = [];
    for (let i = 0; i < 12; i++) {
      assert.ok(action?.type === 'connect');
      order.push(action.upstream);
      downstream.closed(now, action.connId, 'connection refused');
      const next = downstream.nextTickMs()!;
      delays.push(next - now);
      assert.deepStrictEqual(downstream.tick(next - 1), [], 'nothing happens before the delay');
      now = next;
      [action] = downstream.tick(now);
    }
    assert.deepStrictEqual(delays, [20, 39, 79, 159, 319, 639, 999, 999, 999, 999, 999, 999]);
    assert.deepStrictEqual(order.slice(0, 6), ['a', 'b', 'c', 'a', 'b', 'c']);
    // The jitter never takes a delay below the minimum, nor below half the nominal one.
    for (let failures = 1; failures < 40; failures++) {
      const low = backoffDelayMs(failures, L, () => 0);
      const nominal = Math.min(L.reconnectBackoffMsMax, L.reconnectBackoffMsMin * 2 ** (failures - 1));
      assert.ok(low >= L.reconnectBackoffMsMin && low >= Math.floor(nominal / 2) && low <= L.reconnectBackoffMsMax);
    }
    assert.equal(backoffDelayMs(0, L, () => 0.5), 0);
  });

  test('downstream: a session that lasted backoffResetMs starts the backoff from the minimum again', () => {
    const root = rootStore(3);
    const { downstream, store } = newReplica({ random: () => 0.999_999 });
    const link = Link.open(downstream, store, root);
    // Keep it alive past the reset time with fresh heartbeats, then lose it.
    let now = T0;
    for (let i = 1; now < T0 + L.backoffResetMs; i++) {
      now = T0 + i * L.heartbeatIntervalMs;
      const up = link.upstream.heartbeat(now, { rootSeq: 3, rootTimeMs: now, path: [] });
      downstream.receive(now, link.connId, Buffer.concat(ofType(up, 'send').map((action) => action.bytes)));
    }
    downstream.closed(now, link.connId);
    assert.equal(downstream.nextTickMs()! - now, L.reconnectBackoffMsMin);
    assert.equal(downstream.status().consecutiveFailures, 1);
  });

  test('downstream: consecutiveFailures falls to 0 once a session has lasted backoffResetMs, not at the next failure', () => {
    const root = rootStore(3);
    const { downstream, store } = newReplica({ upstreams: ['up-a'] });
    let [connect] = downstream.start(T0);
    let now = T0;
    for (let attempt = 0; attempt < 2; attempt++) {
      assert.ok(connect?.type === 'connect');
      downstream.closed(now, connect.connId, 'connect ECONNREFUSED');
      now = downstream.nextTickMs()!;
      [connect] = downstream.tick(now);
    }
    assert.ok(connect?.type === 'connect');
    const link = new Link(downstream, store, newUpstream(root, { nowMs: now }), connect.connId);
    link.fromDownstream(downstream.connected(now, connect.connId));
    link.settle();
    assert.equal(downstream.status().phase, 'streaming');
    assert.equal(downstream.status().consecutiveFailures, 2, 'a session is not proven before backoffResetMs');
    // Heartbeats keep it alive past the reset time; the machine is ticked whenever it asks. Before, status kept saying 2
    // for as long as the session lasted (hours), the count being reset only by the next failure.
    const welcomedMs = now;
    while (now < welcomedMs + L.backoffResetMs + L.heartbeatIntervalMs) {
      now += L.heartbeatIntervalMs;
      while (downstream.nextTickMs()! <= now) downstream.tick(downstream.nextTickMs()!);
      const up = link.upstream.heartbeat(now, { rootSeq: 3, rootTimeMs: now, path: [] });
      downstream.receive(now, link.connId, Buffer.concat(ofType(up, 'send').map((action) => action.bytes)));
    }
    assert.equal(downstream.status().phase, 'streaming');
    assert.equal(downstream.status().consecutiveFailures, 0);
    downstream.closed(now, link.connId);
    assert.equal(downstream.status().consecutiveFailures, 1);
    assert.equal(downstream.nextTickMs()! - now, L.reconnectBackoffMsMin);
  });

  test('downstream: an upstream whose WELCOME or heartbeat path holds this node is a loop', () => {
    const root = rootStore(3);
    const { downstream } = newReplica({ store: rootStore(3) });
    const [connect] = downstream.start(T0);
    assert.ok(connect?.type === 'connect');
    downstream.connected(T0, connect.connId);
    const welcome = encodeMessage({ type: 'welcome', datasetId: DATASET, nodeId: 'mid', httpUrl: 'http://127.0.0.1:7070', path: ['root', 'replica', 'mid'], head: root.head(), mode: 'stream', fromSeq: 4 });
    assert.equal(ofType(downstream.receive(T0, connect.connId, welcome), 'close').length, 1);
    assert.match(downstream.status().lastFailure ?? '', /^LOOP/);

    const second = newReplica({ store: rootStore(3) });
    const link = Link.open(second.downstream, second.store, root, { nodeId: 'mid', ancestors: ['root'] });
    assert.equal(second.downstream.status().phase, 'streaming');
    const loop = encodeMessage({ type: 'heartbeat', rootSeq: 3, rootTimeMs: 9, path: ['root', 'replica', 'mid'] });
    assert.equal(ofType(second.downstream.receive(T0 + 1, link.connId, loop), 'close').length, 1);
    assert.match(second.downstream.status().lastFailure ?? '', /^LOOP/);
  });

  test('downstream: a snapshot whose digest does not match is discarded and the upstream dropped', () => {
    const { downstream } = newReplica();
    const [connect] = downstream.start(T0);
    assert.ok(connect?.type === 'connect');
    downstream.connected(T0, connect.connId);
    const root = rootStore(3);
    const frames = Buffer.concat([
      encodeMessage({ type: 'welcome', datasetId: DATASET, nodeId: 'root', httpUrl: 'http://127.0.0.1:7070', path: ['root'], head: root.head(), mode: 'snapshot', fromSeq: 0 }),
      encodeMessage({ type: 'snapshotBegin', seq: 3, hash: root.head().hash, keyCount: 1, signed: false }),
      encodeMessage({ type: 'snapshotChunk', records: [{ key: Buffer.from('k'), value: Buffer.from('v'), createSeq: 1, modSeq: 1, version: 1 }] }),
      encodeMessage({ type: 'snapshotEnd', digest: Buffer.alloc(32), signature: undefined }),
    ]);
    const actions = downstream.receive(T0 + 1, connect.connId, frames);
    assert.deepStrictEqual(
      actions.map((action) => action.type),
      ['log', 'snapshotBegin', 'log', 'snapshotChunk', 'close', 'snapshotAbort', 'log'],
    );
    assert.match(downstream.status().lastFailure ?? '', /digest mismatch/);
    assert.equal(downstream.status().head.seq, 0);
  });

  test('downstream: a record damaged in a snapshot chunk fails the digest, though its frame checksum was made to match', () => {
    const root = rootStore(3);
    const records = [
      { key: Buffer.from('a'), value: Buffer.from('first'), createSeq: 1, modSeq: 1, version: 1 },
      { key: Buffer.from('b'), value: Buffer.from('second'), createSeq: 1, modSeq: 2, version: 2 },
      { key: Buffer.from('c'), value: Buffer.from('third'), createSeq: 3, modSeq: 3, version: 1 },
    ];
    // The digest as the root computes it, one record at a time: the receiver hashes the chunk's bytes as received.
    const sent = new SnapshotDigest();
    for (const record of records) sent.updateEncoded(encodeSnapshotRecord(record));
    const digest = sent.digest();
    const join = (chunk: Buffer): { actions: DownstreamAction[]; failure: string | undefined } => {
      const { downstream } = newReplica();
      const [connect] = downstream.start(T0);
      assert.ok(connect?.type === 'connect');
      downstream.connected(T0, connect.connId);
      const frames = Buffer.concat([
        encodeMessage({ type: 'welcome', datasetId: DATASET, nodeId: 'root', httpUrl: 'http://127.0.0.1:7070', path: ['root'], head: root.head(), mode: 'snapshot', fromSeq: 0 }),
        encodeMessage({ type: 'snapshotBegin', seq: 3, hash: root.head().hash, keyCount: records.length, signed: false }),
        chunk,
        encodeMessage({ type: 'snapshotEnd', digest, signature: undefined }),
      ]);
      const actions = downstream.receive(T0 + 1, connect.connId, frames);
      return { actions, failure: downstream.status().lastFailure };
    };
    const chunk = encodeMessage({ type: 'snapshotChunk', records });
    assert.equal(ofType(join(chunk).actions, 'snapshotFinish').length, 1);

    const damaged = Buffer.from(chunk);
    const at = damaged.indexOf('second');
    damaged[at] = damaged[at]! ^ 1;
    damaged.writeUInt32BE(crc32(damaged.subarray(8)), 4);
    const { actions, failure } = join(damaged);
    assert.equal(ofType(actions, 'snapshotFinish').length, 0);
    assert.equal(ofType(actions, 'snapshotAbort').length, 1);
    assert.match(failure ?? '', /digest mismatch/);
  });

  test('downstream: entries before WELCOME and a stream offered to a new replica are protocol errors', () => {
    const { downstream } = newReplica();
    const [connect] = downstream.start(T0);
    assert.ok(connect?.type === 'connect');
    downstream.connected(T0, connect.connId);
    const root = rootStore(2);
    const offer = encodeMessage({ type: 'welcome', datasetId: DATASET, nodeId: 'root', httpUrl: 'http://127.0.0.1:7070', path: ['root'], head: root.head(), mode: 'stream', fromSeq: 1 });
    assert.equal(ofType(downstream.receive(T0, connect.connId, offer), 'close').length, 1);
    const [retry] = downstream.tick(downstream.nextTickMs()!);
    assert.ok(retry?.type === 'connect');
    downstream.connected(T0, retry.connId);
    const early = downstream.receive(T0, retry.connId, encodeEntries(root.readLog(1, 1, Infinity).map((encoded) => encoded.record)));
    assert.equal(ofType(early, 'close').length, 1);
    assert.match(downstream.status().lastFailure ?? '', /MESSAGE_UNEXPECTED/);
  });

  test('downstream: events for an old connection are ignored', () => {
    const { downstream } = newReplica();
    const [connect] = downstream.start(T0);
    assert.ok(connect?.type === 'connect');
    downstream.closed(T0, connect.connId);
    assert.deepStrictEqual(downstream.receive(T0, connect.connId, Buffer.from('junk')), []);
    assert.deepStrictEqual(downstream.closed(T0, connect.connId), []);
    assert.deepStrictEqual(downstream.connected(T0, connect.connId), []);
  });

  test('upstream: refuses SELF, LOOP, DATASET_MISMATCH, PROTOCOL_VERSION, UNAVAILABLE and PATH_TOO_LONG', () => {
    const root = rootStore(3);
    const cases: { name: string; source?: LogSource; ancestors?: string[]; hello: Buffer; reason: string }[] = [
      { name: 'self', hello: helloBytes({ nodeId: 'root' }), reason: 'SELF' },
      { name: 'ancestor', ancestors: ['top', 'child'], hello: helloBytes(), reason: 'LOOP' },
      { name: 'other dataset', hello: helloBytes({ datasetId: 'dataset-2' }), reason: 'DATASET_MISMATCH' },
      { name: 'other dataset, even when resyncing', hello: helloBytes({ datasetId: 'dataset-2', resync: true }), reason: 'DATASET_MISMATCH' },
      { name: 'unjoined upstream', source: new MemoryStore(''), hello: helloBytes({ datasetId: '' }), reason: 'UNAVAILABLE' },
      { name: 'too deep', ancestors: Array.from({ length: PATH_NODES_MAX - 1 }, (_, i) => `n${i}`), hello: helloBytes(), reason: 'PATH_TOO_LONG' },
    ];
    const versionHello = helloBytes();
    versionHello.writeUInt16BE(PROTOCOL_VERSION + 1, 9);
    versionHello.writeUInt32BE(crc32Of(versionHello), 4);
    cases.push({ name: 'protocol version', hello: versionHello, reason: 'PROTOCOL_VERSION' });
    for (const testCase of cases) {
      const upstream = newUpstream(testCase.source ?? root, { ancestors: testCase.ancestors ?? [] });
      const actions = upstream.receive(T0, testCase.hello);
      const messages = sent(actions);
      assert.equal(messages.length, 1, testCase.name);
      assert.ok(messages[0]!.type === 'refuse' && messages[0].reason === testCase.reason, `${testCase.name}: ${JSON.stringify(messages[0])}`);
      assert.equal(actions[actions.length - 1]!.type, 'close', testCase.name);
      assert.ok(upstream.isClosed);
    }
  });

  test('upstream: a relay that stopped following refuses CHAIN_DIVERGED only a child at the head it diverged at, any other UPSTREAM_DIVERGED', () => {
    const relay = rootStore(6);
    const divergence: Divergence = { reason: 'upstream refused: CHAIN_DIVERGED: hash differs at 6', head: relay.head() };
    const answer = (hello: Buffer): Message | undefined => sent(newUpstream(relay, { nodeId: 'relay', diverged: () => divergence }).receive(T0, hello))[0];
    const same = answer(helloBytes({ head: relay.head() }));
    assert.ok(same?.type === 'refuse' && same.reason === 'CHAIN_DIVERGED', JSON.stringify(same));
    assert.match(same.message, /stopped following at seq 6.*same head; resync the child/);
    const other = new MemoryStore(DATASET);
    for (let i = 1; i <= 6; i++) other.commit(T0 + i, [{ type: 'put', key: Buffer.from('x'), value: Buffer.from(String(i)) }]);
    const children = {
      // Behind the relay on its own chain: perhaps behind the fork too, consistent with the root's chain.
      behind: helloBytes({ head: { seq: 3, hash: relay.hashAt(3)! } }),
      // The relay's seq, another hash: not the chain the verdict was about.
      otherHash: helloBytes({ head: other.head() }),
      // Asking for a snapshot (joining, or resyncing at the very head): not asking whether its chain is the root's.
      joining: helloBytes({ datasetId: '' }),
      resyncing: helloBytes({ head: relay.head(), resync: true }),
    };
    for (const [name, hello] of Object.entries(children)) {
      const refusal = answer(hello);
      assert.ok(refusal?.type === 'refuse' && refusal.reason === 'UPSTREAM_DIVERGED', `${name}: ${JSON.stringify(refusal)}`);
      assert.match(refusal.message, /this relay stopped following at seq 6/, name);
    }
    // Following again (after its resync): served as before.
    const served = sent(newUpstream(relay, { nodeId: 'relay', diverged: () => undefined }).receive(T0, helloBytes({ head: relay.head() })));
    assert.equal(served[0]?.type, 'welcome');
  });

  test('upstream: a diverged relay\'s refusal keeps its remedy however long the reason it quotes: relays at the same head, each diverged by the one above, or an upstream\'s longest refusal text (found by review H: past 5 levels the REFUSE was cut at 1024 bytes before "resync the child")', () => {
    const relay = rootStore(6);
    const hello = helloBytes({ head: relay.head() });
    const refusalOf = (reason: string): Message | undefined =>
      sent(newUpstream(relay, { nodeId: 'relay', diverged: () => ({ reason, head: relay.head() }) }).receive(T0, hello))[0];
    // The root's words, then each relay quotes the refusal it got (Downstream.diverge), as a chain of relays does.
    let reason = `upstream refused: CHAIN_DIVERGED: the child's entry 6 has hash ${'ab'.repeat(32)}, this node's ${'cd'.repeat(32)}; resync the child`;
    for (let level = 1; level <= 8; level++) {
      const refusal = refusalOf(reason);
      assert.ok(refusal?.type === 'refuse' && refusal.reason === 'CHAIN_DIVERGED', `level ${level}: ${JSON.stringify(refusal)}`);
      assert.match(refusal.message, /^this relay stopped following at seq 6: .*, and the child holds the same head; resync the child from another upstream$/, `level ${level}`);
      reason = `upstream refused: CHAIN_DIVERGED: ${refusal.message}`;
    }
    // An upstream's longest refusal, in characters of several bytes: cut at a character, still followed by the remedy.
    const refusal = refusalOf(`upstream refused: CHAIN_DIVERGED: ${'é'.repeat(REFUSE_MESSAGE_BYTES_MAX / 2)}`);
    assert.ok(refusal?.type === 'refuse');
    assert.match(refusal.message, /é…\), and the child holds the same head; resync the child from another upstream$/);
  });

  test('upstream and downstream: a leaf behind the fork, behind a relay that diverged, keeps trying; one at the relay head diverges too', () => {
    // The old root's chain, 1..6, and the restored root's: the same 1..3, then other entries 4..8.
    const old = rootStore(6);
    const restored = rootStore(3);
    for (let i = 4; i <= 8; i++) restored.commit(T0 + 100 + i, [{ type: 'put', key: Buffer.from('new'), value: Buffer.from(String(i)) }]);
    const relay = newReplica({ store: old, upstreams: ['root'], nodeId: 'relay' }).downstream;
    Link.open(relay, old, restored);
    assert.equal(relay.status().phase, 'diverged');
    const divergence = relay.divergence();
    assert.deepStrictEqual(divergence?.head, old.head(), 'the relay records the head it held when it diverged');
    assert.deepStrictEqual(relay.status().divergedHead, old.head());

    // At seq 3 the leaf holds both histories: the relay's refusal is an abstention, and it retries for as long as it takes.
    const leafStore = rootStore(3);
    const leaf = newReplica({ store: leafStore, upstreams: ['relay'], nodeId: 'leaf' }).downstream;
    const link = Link.open(leaf, leafStore, old, { nodeId: 'relay', diverged: () => relay.divergence() });
    assert.ok(sent(link.upstreamActions).some((message) => message.type === 'refuse' && message.reason === 'UPSTREAM_DIVERGED'));
    for (let attempt = 0; attempt < 5; attempt++) {
      assert.equal(leaf.status().phase, 'backoff');
      const nowMs = leaf.nextTickMs()!;
      const [connect] = leaf.tick(nowMs);
      assert.ok(connect?.type === 'connect' && connect.upstream === 'relay');
      const retry = new Link(leaf, leafStore, newUpstream(old, { nodeId: 'relay', diverged: () => relay.divergence(), nowMs }), connect.connId);
      retry.nowMs = nowMs;
      retry.fromDownstream(leaf.connected(nowMs, connect.connId));
      retry.settle();
    }
    assert.equal(leaf.status().phase, 'backoff');
    assert.equal(leaf.status().divergedReason, undefined);
    assert.match(leaf.status().lastFailure ?? '', /^upstream refused: UPSTREAM_DIVERGED: .*says nothing about the child's chain/);

    // A leaf at the relay's own head shares the chain the root refused: CHAIN_DIVERGED, and it stops as the relay did.
    const twinStore = rootStore(6);
    const twin = newReplica({ store: twinStore, upstreams: ['relay'], nodeId: 'twin' }).downstream;
    Link.open(twin, twinStore, old, { nodeId: 'relay', diverged: () => relay.divergence() });
    assert.equal(twin.status().phase, 'diverged');
    assert.match(twin.status().divergedReason ?? '', /CHAIN_DIVERGED: this relay stopped following at seq 6/);
  });

  test('upstream and downstream: SELF says two nodes share one id (a copied data directory) and what to do', () => {
    const [refusal] = sent(newUpstream(rootStore(3)).receive(T0, helloBytes({ nodeId: 'root' })));
    assert.ok(refusal?.type === 'refuse' && refusal.reason === 'SELF');
    assert.match(refusal.message, /share this node id.*copied.*empty data directory.*snapshot save and restore/);
    const { downstream, store } = newReplica({ store: rootStore(3), nodeId: 'root', upstreams: ['up-a'] });
    const [connect] = downstream.start(T0);
    assert.ok(connect?.type === 'connect');
    downstream.connected(T0, connect.connId);
    const welcome = encodeMessage({ type: 'welcome', datasetId: DATASET, nodeId: 'root', httpUrl: '', path: ['root'], head: store.head(), mode: 'stream', fromSeq: 4 });
    downstream.receive(T0 + 1, connect.connId, welcome);
    assert.match(downstream.status().lastFailure ?? '', /^SELF: .*share this node id.*copied/);
  });

  test('upstream: a child ahead of this node is refused BEHIND; one with another hash at its head CHAIN_DIVERGED', () => {
    const root = rootStore(10);
    const other = new MemoryStore(DATASET);
    for (let i = 1; i <= 12; i++) other.commit(T0 + i, [{ type: 'put', key: Buffer.from('x'), value: Buffer.from(String(i)) }]);
    const behind = sent(newUpstream(root).receive(T0, helloBytes({ head: other.head() })));
    assert.ok(behind[0]?.type === 'refuse' && behind[0].reason === 'BEHIND');
    const diverged = sent(newUpstream(root).receive(T0, helloBytes({ head: { seq: 8, hash: other.hashAt(8)! } })));
    assert.ok(diverged[0]?.type === 'refuse' && diverged[0].reason === 'CHAIN_DIVERGED');
    // Behind the retained log the hash cannot be checked: the child gets a snapshot instead.
    root.trim(3);
    const old = sent(newUpstream(root).receive(T0, helloBytes({ head: { seq: 2, hash: other.hashAt(2)! } })));
    assert.ok(old[0]?.type === 'welcome' && old[0].mode === 'snapshot');
  });

  test('upstream: streams from the child head + 1 while the log reaches back, else sends a snapshot', () => {
    const root = rootStore(20);
    const stream = sent(newUpstream(root).receive(T0, helloBytes({ head: { seq: 15, hash: root.hashAt(15)! } })));
    assert.ok(stream[0]?.type === 'welcome' && stream[0].mode === 'stream' && stream[0].fromSeq === 16);
    assert.deepStrictEqual(
      stream.filter((message) => message.type === 'entries').flatMap((message) => (message.type === 'entries' ? message.records.length : [])).reduce((a, b) => a + b, 0),
      5,
    );
    root.trim(5); // retains 16..20, base 15
    const atBase = sent(newUpstream(root).receive(T0, helloBytes({ head: { seq: 15, hash: root.hashAt(15)! } })));
    assert.ok(atBase[0]?.type === 'welcome' && atBase[0].mode === 'stream');
    const genesis = sent(newUpstream(root).receive(T0, helloBytes({ head: GENESIS_HEAD })));
    assert.ok(genesis[0]?.type === 'welcome' && genesis[0].mode === 'snapshot', 'genesis is known, but entry 1 is trimmed');
    const newChild = sent(newUpstream(rootStore(2)).receive(T0, helloBytes({ datasetId: '' })));
    assert.deepStrictEqual(
      newChild.map((message) => message.type),
      ['welcome', 'snapshotBegin', 'snapshotChunk', 'snapshotEnd'],
    );
  });

  test('upstream: stops at the window, and serves a child that fell behind from the log once it acknowledges', () => {
    const root = rootStore(1);
    const source = new CountingSource(root);
    const { downstream, store } = newReplica({ store: rootStore(1) });
    const link = Link.open(downstream, store, source);
    assert.equal(downstream.status().phase, 'streaming');
    // Caught up: new entries go straight from memory, no disk read.
    const readsBefore = source.reads;
    link.fromUpstream(link.upstream.localApplied(T0, [commit(root, 2)]));
    link.settle();
    assert.equal(source.reads, readsBefore);
    assert.equal(store.head().seq, 2);
    // The child reads nothing for a while: the window fills, then nothing more is sent, whatever is committed. The
    // entries are large, so that the byte limit binds before the entry limit.
    for (let i = 3; i <= 200; i++) {
      const big = root.commit(T0 + i, [{ type: 'put', key: Buffer.from(`big/${i % 10}`), value: Buffer.alloc(700, i) }]);
      link.fromUpstream(link.upstream.localApplied(T0, [big]));
    }
    const status = link.upstream.status();
    assert.ok(status.sentSeq - status.ackedSeq <= L.childWindowEntriesMax, `${status.sentSeq - status.ackedSeq} entries unacknowledged`);
    assert.ok(status.unackedBytes <= L.childWindowBytesMax + L.entryRecordBytesMax, `${status.unackedBytes} bytes unacknowledged`);
    assert.ok(status.sentSeq < 200);
    assert.equal(source.reads, readsBefore, 'a full window costs no disk read');
    // The child catches up and acknowledges: the rest is read from the log.
    link.settle();
    assert.ok(source.reads > readsBefore, 'a lagging child is served from the log');
    assert.equal(store.head().seq, 200);
    assert.ok(store.head().hash.equals(root.head().hash));
  });

  test('upstream: a child that falls behind the retained log mid-stream gets a snapshot', () => {
    const root = rootStore(5);
    const { downstream, store } = newReplica({ store: rootStore(5) });
    const link = Link.open(downstream, store, root);
    // The child stalls (nothing delivered) while the root commits past the window and trims everything it had.
    for (let i = 6; i <= 120; i++) link.fromUpstream(link.upstream.localApplied(T0, [commit(root, i)]));
    root.trim(10);
    link.settle();
    assert.equal(store.head().seq, 120);
    assert.ok(store.head().hash.equals(root.head().hash));
    assert.equal(downstream.status().snapshotsInstalled, 1);
    assert.deepStrictEqual(sortedRecords(new Map(store.keySpace)), sortedRecords(new Map(root.keySpace)));
  });

  test('upstream: damaged data met opening a snapshot or reading the log base refuses that child UNAVAILABLE, at HELLO or later', () => {
    // Found: a damaged head record made the snapshot for a joining child throw from the socket handler; the process exited.
    const root = rootStore(5);
    const damage = new MercuryError('DATA_CORRUPTED', 'damaged data on this node: head record: it is 5 bytes where a u64 seq and a 32-byte hash take 40');
    const throwDamage = (): never => {
      throw damage;
    };
    const damaged = (overrides: Partial<LogSource>): LogSource => ({
      datasetId: () => root.datasetId(),
      head: () => root.head(),
      firstSeq: () => root.firstSeq(),
      hashAt: (seq) => root.hashAt(seq),
      readLog: (from, entries, bytes) => root.readLog(from, entries, bytes),
      openSnapshot: () => root.openSnapshot(),
      ...overrides,
    });
    const refusedDamaged = (actions: readonly UpstreamAction[], name: string): void => {
      const [refuse] = sent(actions);
      assert.ok(refuse?.type === 'refuse' && refuse.reason === 'UNAVAILABLE' && refuse.message === damage.message, `${name}: ${JSON.stringify(refuse)}`);
      assert.equal(actions[actions.length - 1]!.type, 'close', name);
    };
    refusedDamaged(newUpstream(damaged({ openSnapshot: throwDamage })).receive(T0, helloBytes({ datasetId: '' })), 'a joining child');
    refusedDamaged(newUpstream(damaged({ hashAt: throwDamage })).receive(T0, helloBytes({ head: { seq: 3, hash: root.hashAt(3)! } })), 'a child whose head needs the log base');

    // A streaming child that falls behind the retained log needs a snapshot as well.
    const behind = newUpstream(damaged({ openSnapshot: throwDamage }));
    let sentBytes = 0;
    let sentSeq = 5;
    const delivered = (actions: readonly UpstreamAction[]): void => {
      for (const action of actions) if (action.type === 'send') sentBytes += action.bytes.length;
      for (const message of sent(actions)) if (message.type === 'entries') sentSeq += message.records.length;
    };
    delivered(behind.receive(T0, helloBytes({ head: root.head() })));
    for (let i = 6; i <= 5 + 3 * L.childWindowEntriesMax; i++) delivered(behind.localApplied(T0, [commit(root, i)]));
    root.trim(10);
    assert.ok(sentSeq + 1 < root.firstSeq(), 'the child is behind the retained log');
    refusedDamaged(behind.receive(T0 + 1, encodeMessage({ type: 'ack', appliedSeq: sentSeq, receivedBytes: sentBytes })), 'a child behind the log');
  });

  test('upstream: closes a connection without HELLO, and a child that stops acknowledging', () => {
    const root = rootStore(3);
    const silent = newUpstream(root);
    assert.equal(silent.nextTickMs(), T0 + L.handshakeTimeoutMs);
    assert.deepStrictEqual(silent.tick(T0 + L.handshakeTimeoutMs - 1), []);
    assert.equal(ofType(silent.tick(T0 + L.handshakeTimeoutMs), 'close').length, 1);

    const mute = newUpstream(root);
    mute.receive(T0, helloBytes({ head: { seq: 3, hash: root.head().hash } }));
    mute.receive(T0 + 100, encodeMessage({ type: 'ack', appliedSeq: 3, receivedBytes: 0 }));
    assert.equal(mute.nextTickMs(), T0 + 100 + L.childAckTimeoutMs);
    assert.deepStrictEqual(mute.tick(T0 + 99 + L.childAckTimeoutMs), []);
    const closed = mute.tick(T0 + 100 + L.childAckTimeoutMs);
    assert.ok(ofType(closed, 'close')[0]?.reason.includes('no ACK'));
  });

  test('upstream: closes a child that keeps ACKing but acknowledges nothing while its window is full, and frees its snapshot', () => {
    // Big values, so that the snapshot fills the byte window well before it ends.
    const root = new MemoryStore(DATASET);
    for (let i = 1; i <= 40; i++) root.commit(T0 + i, [{ type: 'put', key: Buffer.from(`big/${i}`), value: Buffer.alloc(700, i) }]);
    const stalled = newUpstream(root);
    const welcome = stalled.receive(T0, helloBytes({ datasetId: '' }));
    assert.ok(sent(welcome).some((message) => message.type === 'snapshotBegin'));
    // One turn sends pumpTurnBytesMax; the turns after it (the adapter's resume) fill the window.
    for (let actions = welcome; ofType(actions, 'continue').length > 0; ) actions = stalled.resume(T0);
    assert.equal(root.openSnapshots, 1);
    const unacked = stalled.status().unackedBytes;
    assert.ok(unacked >= L.childWindowBytesMax, `the window is full (${unacked} bytes)`);
    // Keep-alive ACKs that acknowledge nothing new: proof of life, not of progress.
    const ack = encodeMessage({ type: 'ack', appliedSeq: 0, receivedBytes: 0 });
    for (let t = L.ackIntervalMs; t < L.childAckTimeoutMs; t += L.ackIntervalMs) assert.deepStrictEqual(ofType(stalled.receive(T0 + t, ack), 'close'), []);
    assert.equal(stalled.nextTickMs(), T0 + L.childAckTimeoutMs);
    assert.deepStrictEqual(stalled.tick(T0 + L.childAckTimeoutMs - 1), []);
    const actions = stalled.tick(T0 + L.childAckTimeoutMs);
    assert.match(ofType(actions, 'close')[0]?.reason ?? '', new RegExp(`CHILD_STALLED: the child acknowledged nothing for ${L.childAckTimeoutMs} ms with its window full \\(${unacked} bytes`));
    assert.equal(ofType(actions, 'log')[0]?.message, 'child stalled');
    assert.equal(root.openSnapshots, 0, 'the snapshot is released');

    // A slow child that acknowledges a little at a time is not stalled: each bit of progress restarts the clock.
    const slow = newUpstream(root);
    slow.receive(T0, helloBytes({ datasetId: '' }));
    let received = 0;
    for (let t = L.ackIntervalMs; t <= 3 * L.childAckTimeoutMs; t += L.ackIntervalMs) {
      received += 100;
      assert.deepStrictEqual(ofType(slow.receive(T0 + t, encodeMessage({ type: 'ack', appliedSeq: 0, receivedBytes: received })), 'close'), []);
      assert.deepStrictEqual(ofType(slow.tick(T0 + t), 'close'), [], `closed at ${t} ms though it acknowledged ${received} bytes`);
    }
    slow.closed(T0);
    assert.equal(root.openSnapshots, 0);
  });

  test('upstream: each frame is weighed before it is framed, or read from the log or a snapshot; one without room waits, costs no read, and goes once drained (record 87)', () => {
    const root = rootStore(30);
    const source = new CountingSource(root);
    let room = false;
    const weighed: number[] = [];
    const upstream = newUpstream(source, { queueRoom: (frameBytes) => (weighed.push(frameBytes), room) });
    // A child 20 entries behind: its first frame is weighed after the log read, and waits.
    let actions = upstream.receive(T0, helloBytes({ head: { seq: 10, hash: root.hashAt(10)! } }));
    assert.deepStrictEqual(sent(actions).map((message) => message.type), ['welcome']);
    assert.equal(source.reads, 1);
    assert.equal(weighed.length, 1);
    assert.ok(weighed[0]! > 0 && weighed[0]! <= L.entriesFrameBytesTarget + 1024, `weighed ${weighed[0]} bytes`);
    // Asked again (an entry committed, a drain, an ACK of nothing new): weighed again, the log not read again.
    actions = upstream.localApplied(T0 + 1, [commit(root, 31)]);
    actions = [...actions, ...upstream.drained(T0 + 2)];
    assert.deepStrictEqual(ofType(actions, 'send'), []);
    assert.equal(source.reads, 1, 'a child held back costs no log read');
    // The child acknowledges all it was sent (the WELCOME), then only keeps alive: held back with nothing to
    // acknowledge, it waits its turn and is not stalled.
    const keepAlive = encodeMessage({ type: 'ack', appliedSeq: 10, receivedBytes: upstream.status().sentBytes });
    const endMs = T0 + 3 * L.childAckTimeoutMs;
    for (let t = T0 + L.ackIntervalMs; t <= endMs; t += L.ackIntervalMs) {
      assert.deepStrictEqual(ofType(upstream.receive(t, keepAlive), 'send'), []);
      assert.deepStrictEqual(ofType(upstream.tick(t), 'close'), [], `closed at ${t - T0} ms, waiting for room with nothing to acknowledge`);
    }
    assert.equal(source.reads, 1, 'nor do its ACKs cost a read');
    // Room again: the drain sends what the window allows.
    room = true;
    actions = upstream.drained(endMs);
    const entries = sent(actions).filter((message) => message.type === 'entries');
    assert.ok(entries.length > 0, 'the frame held back goes once drained');
    assert.equal(upstream.status().sentSeq > 10, true);
    // With nothing held, a drain does nothing.
    assert.deepStrictEqual(upstream.drained(endMs + 1), []);

    // A snapshot chunk is weighed at its target before it is read; a child held back with bytes to acknowledge and
    // acknowledging none is stalled.
    room = false;
    weighed.length = 0;
    const joining = newUpstream(root, { queueRoom: (frameBytes) => (weighed.push(frameBytes), room) });
    actions = joining.receive(T0, helloBytes({ datasetId: '' }));
    assert.deepStrictEqual(sent(actions).map((message) => message.type), ['welcome', 'snapshotBegin']);
    assert.ok(weighed.every((bytes) => bytes >= L.snapshotChunkBytesTarget), `weighed ${weighed.join(', ')}`);
    assert.equal(joining.status().snapshot?.keysSent, 0, 'no chunk was read');
    assert.equal(ofType(joining.tick(T0 + L.childAckTimeoutMs), 'close').length, 1, 'held with bytes unacknowledged and no ACK: closed');
    assert.equal(root.openSnapshots, 0);
  });

  test('upstream: a child refused a snapshot by the adapter (its host holds its most) is refused UNAVAILABLE with that reason, and holds no snapshot', () => {
    const root = rootStore(5);
    const upstream = newUpstream(root, { snapshotRefusal: () => 'this node is sending 16 snapshots to children at 127.0.0.2, the most per host' });
    const actions = upstream.receive(T0, helloBytes({ datasetId: '' }));
    const refuse = sent(actions).find((message) => message.type === 'refuse');
    assert.ok(refuse?.type === 'refuse' && refuse.reason === 'UNAVAILABLE' && refuse.message.includes('the most per host'), JSON.stringify(refuse));
    assert.equal(ofType(actions, 'close').length, 1);
    assert.equal(root.openSnapshots, 0);
    // A child that streams needs no snapshot: welcomed.
    const streaming = sent(newUpstream(root, { snapshotRefusal: () => 'full' }).receive(T0, helloBytes({ head: { seq: 5, hash: root.head().hash } })));
    assert.equal(streaming[0]?.type, 'welcome');
  });

  test('upstream: one turn sends about pumpTurnBytesMax of a snapshot, then asks to continue; resumes fill the window', () => {
    const root = new MemoryStore(DATASET);
    for (let i = 1; i <= 40; i++) root.commit(T0 + i, [{ type: 'put', key: Buffer.from(`big/${i}`), value: Buffer.alloc(700, i) }]);
    const upstream = newUpstream(root);
    const bytesOf = (actions: readonly UpstreamAction[]): number => ofType(actions, 'send').reduce((sum, action) => sum + action.bytes.length, 0);
    // A frame is about a chunk: the turn stops at the first frame that reaches its budget.
    const turnMax = L.pumpTurnBytesMax + L.snapshotChunkBytesTarget + 1024;
    let actions = upstream.receive(T0, helloBytes({ datasetId: '' }));
    assert.ok(sent(actions).some((message) => message.type === 'snapshotBegin'));
    assert.equal(ofType(actions, 'continue').length, 1, 'the window is still open: a turn more');
    assert.ok(bytesOf(actions) <= turnMax, `the first turn sent ${bytesOf(actions)} bytes`);
    assert.ok(upstream.status().unackedBytes < L.childWindowBytesMax);
    let turns = 1;
    while (ofType(actions, 'continue').length > 0) {
      actions = upstream.resume(T0);
      assert.ok(bytesOf(actions) <= turnMax, `turn ${++turns} sent ${bytesOf(actions)} bytes`);
    }
    assert.ok(turns >= 2, `${turns} turns`);
    assert.ok(upstream.status().unackedBytes >= L.childWindowBytesMax, 'the resumes filled the window, and stopped there');
    // The child's ACK opens the window: that turn sends again, within its budget.
    const ack = encodeMessage({ type: 'ack', appliedSeq: 0, receivedBytes: upstream.status().unackedBytes });
    actions = upstream.receive(T0 + 1, ack);
    assert.ok(bytesOf(actions) > 0 && bytesOf(actions) <= turnMax, `the ACK's turn sent ${bytesOf(actions)} bytes`);
    // A resume after the session closed sends nothing.
    upstream.closed(T0 + 2);
    assert.deepStrictEqual(upstream.resume(T0 + 2), []);
    assert.equal(root.openSnapshots, 0);
  });

  test('upstream: a child that refuses SIGNATURE_MISSING the snapshot this relay announced unsigned is told at info; any other such refusal is warned of', () => {
    const refuse = encodeMessage({ type: 'refuse', reason: 'SIGNATURE_MISSING', message: 'only the root can sign a snapshot' });
    const logged = (actions: readonly UpstreamAction[]): { level: string; message: string }[] => ofType(actions, 'log').map(({ level, message }) => ({ level, message }));
    // No signer: this node is a relay, and the snapshot it announces is unsigned (record 65).
    const relay = newUpstream(rootStore(3), { nodeId: 'relay', ancestors: ['root'] });
    assert.ok(sent(relay.receive(T0, helloBytes({ datasetId: '' }))).some((message) => message.type === 'snapshotBegin' && !message.signed));
    const declined = relay.receive(T0 + 1, refuse);
    assert.deepEqual(logged(declined), [{ level: 'info', message: 'child takes its snapshot from the root: it verifies signatures, and only the root can sign a snapshot' }]);
    assert.equal(ofType(declined, 'close').length, 1);
    // A child streaming entries that refuses them unsigned: no snapshot was announced, so the refusal is news.
    const streaming = newUpstream(rootStore(3), { nodeId: 'relay', ancestors: ['root'] });
    const root = rootStore(3);
    streaming.receive(T0, helloBytes({ head: { seq: 3, hash: root.head().hash } }));
    assert.deepEqual(logged(streaming.receive(T0 + 1, refuse)), [{ level: 'warn', message: "child refused this node's data" }]);
  });

  test('upstream: forwards heartbeats with its own id, and the latest one right after WELCOME', () => {
    const root = rootStore(3);
    const upstream = newUpstream(root, { nodeId: 'mid', ancestors: ['root'], heartbeat: { rootSeq: 3, rootTimeMs: 77, path: ['root'] } });
    assert.deepStrictEqual(upstream.heartbeat(T0, { rootSeq: 3, rootTimeMs: 70, path: ['root'] }), [], 'nothing before the handshake');
    const welcome = sent(upstream.receive(T0, helloBytes({ head: { seq: 3, hash: root.head().hash } })));
    assert.deepStrictEqual(
      welcome.map((message) => message.type),
      ['welcome', 'heartbeat'],
    );
    assert.deepStrictEqual(welcome[1], { type: 'heartbeat', rootSeq: 3, rootTimeMs: 77, path: ['root', 'mid'] });
    const [forwarded] = sent(upstream.heartbeat(T0, { rootSeq: 4, rootTimeMs: 88, path: ['root'] }));
    assert.deepStrictEqual(forwarded, { type: 'heartbeat', rootSeq: 4, rootTimeMs: 88, path: ['root', 'mid'] });
  });

  test('upstream: a malformed frame or an unexpected message gets REFUSE PROTOCOL_ERROR and a close', () => {
    const root = rootStore(3);
    const garbage = newUpstream(root);
    const actions = garbage.receive(T0, Buffer.from([0, 0, 0, 0, 0, 0, 0, 0]));
    const [refuse] = sent(actions);
    assert.ok(refuse?.type === 'refuse' && refuse.reason === 'PROTOCOL_ERROR' && refuse.message.startsWith('FRAME_MALFORMED'));
    assert.equal(actions[actions.length - 1]!.type, 'close');

    const chatty = newUpstream(root);
    chatty.receive(T0, helloBytes({ head: { seq: 3, hash: root.head().hash } }));
    const [unexpected] = sent(chatty.receive(T0, encodeMessage({ type: 'heartbeat', rootSeq: 1, rootTimeMs: 1, path: ['x'] })));
    assert.ok(unexpected?.type === 'refuse' && unexpected.reason === 'PROTOCOL_ERROR');

    const liar = newUpstream(root);
    liar.receive(T0, helloBytes({ head: { seq: 3, hash: root.head().hash } }));
    const [overAck] = sent(liar.receive(T0, encodeMessage({ type: 'ack', appliedSeq: 3, receivedBytes: 1e9 })));
    assert.ok(overAck?.type === 'refuse' && overAck.reason === 'PROTOCOL_ERROR');
  });

  test('upstream: a child taking a snapshot cannot acknowledge the head it claimed, only what it was sent', () => {
    // Found by an audit: a child asking for a snapshot with a HELLO head of 2^50 (never checked: its head does not
    // matter to a snapshot) then ACKed seq 2^50. The upstream took it, showed the child in its status as acknowledged
    // far past the root, and, its window reckoned from that seq, counted every entry after the snapshot as acknowledged.
    const root = rootStore(3);
    const claimed = 2 ** 50;
    const liar = newUpstream(root);
    const welcome = sent(liar.receive(T0, helloBytes({ datasetId: '', head: { seq: claimed, hash: Buffer.alloc(32) } })));
    assert.ok(welcome[0]?.type === 'welcome' && welcome[0].mode === 'snapshot');
    assert.ok(welcome.some((message) => message.type === 'snapshotEnd'), 'three entries are one small snapshot');
    const ackAll = (): Buffer => encodeMessage({ type: 'ack', appliedSeq: claimed, receivedBytes: liar.status().sentBytes });
    // An honest child resyncing from a head past the snapshot's ACKs that head until the snapshot is applied: accepted.
    assert.deepStrictEqual(ofType(liar.receive(T0 + 1, ackAll()), 'close'), []);
    assert.equal(liar.status().ackedSeq, 3, 'acknowledged at most what was sent');
    // Entries of one tiny op after the snapshot (the entry window fills before the byte window): the window counts
    // them as unacknowledged, whatever seq the child claims.
    let entriesSent = 0;
    for (let i = 4; i <= 3 + 4 * L.childWindowEntriesMax; i++)
      for (const message of sent(liar.localApplied(T0 + 2, [root.commit(T0 + i, [{ type: 'put', key: Buffer.from('k'), value: Buffer.from('v') }])]))) if (message.type === 'entries') entriesSent += message.records.length;
    assert.equal(entriesSent, L.childWindowEntriesMax, 'the entry window holds with no ACK of what was sent');
    assert.deepStrictEqual(ofType(liar.receive(T0 + 3, ackAll()), 'close'), []);
    assert.equal(liar.status().ackedSeq, 3 + L.childWindowEntriesMax);
  });

  test('upstream: closing mid-snapshot releases the snapshot; chainReset closes the session', () => {
    // Forty keys of 700 bytes: far more than one window, so the snapshot is still being sent when the session ends.
    const root = new MemoryStore(DATASET);
    for (let i = 1; i <= 40; i++) root.commit(T0 + i, [{ type: 'put', key: Buffer.from(`key/${i}`), value: Buffer.alloc(700, i) }]);
    let open = 0;
    const source: LogSource = {
      datasetId: () => root.datasetId(),
      head: () => root.head(),
      firstSeq: () => root.firstSeq(),
      hashAt: (seq) => root.hashAt(seq),
      readLog: (from, entries, bytes) => root.readLog(from, entries, bytes),
      openSnapshot: () => {
        const snapshot = root.openSnapshot();
        open++;
        return { ...snapshot, nextChunk: (bytes: number) => snapshot.nextChunk(bytes), close: () => (open--, snapshot.close()) };
      },
    };
    const upstream = newUpstream(source);
    upstream.receive(T0, helloBytes({ datasetId: '' }));
    assert.equal(upstream.status().phase, 'snapshot', 'the window holds the snapshot back');
    assert.equal(open, 1);
    upstream.closed(T0);
    assert.equal(open, 0);

    const streaming = newUpstream(root);
    streaming.receive(T0, helloBytes({ head: root.head() }));
    const reset = streaming.chainReset(T0);
    assert.equal(ofType(reset, 'close').length, 1);
    assert.ok(streaming.isClosed);
  });

  test('upstream: verified entries go to a caught-up child before this node writes them, never from the log, and not twice', () => {
    const root = rootStore(12);
    // A relay at seq 10, with a child at its head.
    const relay = new MemoryStore(DATASET);
    relay.apply(root.readLog(1, 10, Infinity));
    const source = new CountingSource(relay);
    const child = newUpstream(source, { nodeId: 'relay' });
    child.receive(T0, helloBytes({ head: relay.head() }));
    const other = newUpstream(source, { nodeId: 'relay' });
    other.receive(T0, helloBytes({ head: relay.head() }));
    const verified = root.readLog(11, 2, Infinity);
    source.reads = 0;

    const early = sent(child.forwardVerified(T0, verified));
    assert.deepStrictEqual(
      early.map((message) => (message.type === 'entries' ? message.records.length : message.type)),
      [2],
      'the caught-up child gets both verified entries in one frame',
    );
    assert.equal(child.status().sentSeq, 12);
    assert.equal(relay.head().seq, 10, 'before the relay wrote them');
    assert.equal(source.reads, 0, 'from memory: the log does not hold them yet');

    // A batch that does not follow on from what a session was sent (12 after 10) is not sent early.
    assert.deepStrictEqual(sent(other.forwardVerified(T0, verified.slice(1))), []);

    // After the write, localApplied sends nothing again to the first, and the rest, in order, to the other.
    relay.apply(verified);
    assert.deepStrictEqual(sent(child.localApplied(T0, verified)), []);
    const after = sent(other.localApplied(T0, verified));
    assert.deepStrictEqual(
      after.map((message) => (message.type === 'entries' ? message.records.length : message.type)),
      [2],
    );
    assert.equal(other.status().sentSeq, 12);

    // After a crash that lost the write (the relay is back at 10), the child that holds 12 is refused BEHIND.
    const restarted = new MemoryStore(DATASET);
    restarted.apply(root.readLog(1, 10, Infinity));
    const refusal = sent(newUpstream(restarted, { nodeId: 'relay' }).receive(T0, helloBytes({ head: root.head() })));
    assert.ok(refusal[0]?.type === 'refuse' && refusal[0].reason === 'BEHIND');
  });
});

function crc32Of(frame: Buffer): number {
  return crc32(frame.subarray(8));
}

/**
 * One object holds every limit and timing of a node, in sections owned by the subsystems that enforce them:
 *
 *   store        LMDB map size, reader table, snapshot readers (src/store)
 *   commit       value size, commit queue, entry size (src/commit/limits.ts)
 *   http         HTTP timeouts and connections (src/server/http-server.ts)
 *   log          retention and the trimmer (this file: the node runs the trimmer)
 *   replication  frames, windows, heartbeats, failover (src/replication/limits.ts)
 *   watch        queues, stalls, progress, snapshots (src/watch/limits.ts)
 *   wire         the binary port's connections, timeouts and per-connection bounds (src/wire/limits.ts)
 *
 * A node takes it through `NodeOptions.limits` (default `NODE_LIMITS`), with the operator's flags applied by
 * src/config (`--max-value-bytes`, `--log-retain-entries`, `--log-retain-bytes`, `--max-connections-per-address`), and validates it once at start-up:
 * each section against its own rules, then the relations across sections below, each with its reason. No subsystem
 * reads a module constant for anything this object holds, so `NODE_LIMITS_TEST` runs a whole node at test timings.
 *
 * Client-visible limits (key size, transaction ops, JSON body, pages) are part of the wire contract and stay constants
 * (src/limits.ts); the relations here check this object against them.
 */
import assert from 'node:assert/strict';
import { txnBodyBytesFor, wireFrameBytesMaxFor } from '../api/index.js';
import { COMMIT_LIMITS, type CommitLimits } from '../commit/index.js';
import { MercuryError } from '../errors/index.js';
import {
  ANSWER_BYTES_HELD_MAX,
  ANSWER_BYTES_HELD_PER_ADDRESS_MAX,
  KEY_BYTES_MAX,
  LMDB_MAP_BYTES_DEFAULT,
  LMDB_READERS_MAX,
  LMDB_READERS_PER_SNAPSHOT_READER,
  LOG_RETAIN_BYTES_DEFAULT,
  LOG_RETAIN_ENTRIES_DEFAULT,
  LOG_TRIM_BATCH_ENTRIES,
  LOG_TRIM_INTERVAL_MS,
  NODE_IDLE_FILES_MAX,
  PROCESS_OPEN_FILES_MAX,
  COMPARE_READ_BYTES_MAX,
  RANGE_DELETE_KEYS_MAX,
  REPLICATION_CHILDREN_MAX_CEILING,
  SNAPSHOT_READERS_MAX,
  TXN_OPS_MAX,
} from '../limits.js';
import {
  ENTRY_RECORD_OVERHEAD_BYTES,
  FRAME_HEADER_BYTES,
  REPLICATION_LIMITS,
  REPLICATION_LIMITS_TEST,
  SNAPSHOT_RECORD_OVERHEAD_BYTES,
  validateReplicationLimits,
  type ReplicationLimits,
} from '../replication/index.js';
import { HTTP_LIMITS, type HttpLimits } from '../server/index.js';
import { WATCH_LIMITS, WATCH_LIMITS_TEST, validateWatchLimits, type WatchLimits } from '../watch/index.js';
import { WIRE_LIMITS, WIRE_LIMITS_TEST, validateWireLimits, type WireLimits } from '../wire/index.js';

const KiB = 1024;
const MiB = 1024 * KiB;
/** A put op's bytes beside its key and value in the entry body: type, key length, value length (log/entry.ts). */
const PUT_OP_OVERHEAD_BYTES = 1 + 2 + 4;

export interface StoreLimits {
  /** LMDB map size: the largest the data file may grow. Sparse, so a large figure costs nothing up front. */
  readonly mapBytes: number;
  /** Slots of LMDB's reader table, shared with other processes that open the data directory (LMDB_READERS_MAX). */
  readonly readersMax: number;
  /**
   * Long-lived snapshot readers at once: HTTP snapshots, snapshots sent to children, watch snapshots
   * (src/store/snapshot-readers.ts). Past it an HTTP snapshot is 503 OVERLOADED, a child REFUSE UNAVAILABLE, and a
   * watch snapshot waits.
   */
  readonly snapshotReadersMax: number;
}

export interface LogLimits {
  /** Retention: whichever limit is reached first trims the oldest entries. */
  readonly retainEntries: number;
  readonly retainBytes: number;
  /** The trimmer deletes at most this many entries per write transaction, so that it never holds the writer for long. */
  readonly trimBatchEntries: number;
  /** How often the trimmer runs. */
  readonly trimIntervalMs: number;
}

export interface NodeLimits {
  readonly store: StoreLimits;
  readonly commit: CommitLimits;
  readonly http: HttpLimits;
  readonly log: LogLimits;
  readonly replication: ReplicationLimits;
  readonly watch: WatchLimits;
  readonly wire: WireLimits;
}

/** A section replaced in part: `{ commit: { valueBytesMax: 4096 } }`. */
export type NodeLimitsOverrides = { readonly [S in keyof NodeLimits]?: Partial<NodeLimits[S]> };

function freeze(limits: NodeLimits): NodeLimits {
  return Object.freeze({
    store: Object.freeze({ ...limits.store }),
    commit: Object.freeze({ ...limits.commit }),
    http: Object.freeze({ ...limits.http }),
    log: Object.freeze({ ...limits.log }),
    replication: Object.freeze({ ...limits.replication }),
    watch: Object.freeze({ ...limits.watch }),
    wire: Object.freeze({ ...limits.wire }),
  });
}

/** `base` with some fields of some sections replaced; validate the result with `validateNodeLimits`. */
export function withLimits(base: NodeLimits, overrides: NodeLimitsOverrides): NodeLimits {
  return freeze({
    store: { ...base.store, ...overrides.store },
    commit: { ...base.commit, ...overrides.commit },
    http: { ...base.http, ...overrides.http },
    log: { ...base.log, ...overrides.log },
    replication: { ...base.replication, ...overrides.replication },
    watch: { ...base.watch, ...overrides.watch },
    wire: { ...base.wire, ...overrides.wire },
  });
}

/**
 * Asserts every rule of every section and the relations between sections, and returns the limits frozen. A violation
 * is a configuration bug (the operator's flags are range-checked with a CONFIG_INVALID error before they get here).
 */
export function validateNodeLimits(limits: NodeLimits): NodeLimits {
  const positive = (section: string, values: object): void => {
    for (const [name, value] of Object.entries(values)) assert.ok(Number.isSafeInteger(value) && (value as number) > 0, `${section} limit ${name} must be a positive integer`);
  };
  positive('store', limits.store);
  positive('commit', limits.commit);
  positive('http', limits.http);
  positive('log', limits.log);
  validateReplicationLimits(limits.replication);
  validateWatchLimits(limits.watch);
  validateWireLimits(limits.wire);
  const { commit, http, replication, store, watch } = limits;

  // Within sections.
  // Snapshot readers are held as long as their peers take; the short reads that serve requests, lmdb-js's threads and
  // other processes' readers need the rest of LMDB's reader table, or a node sending its most snapshots fails its reads.
  assert.ok(store.snapshotReadersMax * LMDB_READERS_PER_SNAPSHOT_READER <= store.readersMax, 'snapshot readers leave most of the LMDB reader table to short reads');
  assert.ok(commit.entryBytesMax <= commit.queueBytesMax, 'a full entry must fit in the commit queue');
  assert.ok(http.headersTimeoutMs <= http.requestTimeoutMs, 'the headers arrive within the request time');
  assert.ok(http.firstByteTimeoutMs <= http.headersTimeoutMs, 'the first byte arrives before the headers are complete');
  assert.ok(http.connectionsPerAddressMax <= http.connectionsMax, 'a per-address cap within the total');
  assert.ok(http.tlsHandshakesPerAddressMax <= http.tlsHandshakesMax && http.tlsHandshakesMax <= http.connectionsMax, 'TLS handshakes: a per-address cap within the total, within the connections');
  assert.ok(Number.isSafeInteger(http.seqWaitersMax) && http.seqWaitersMax > 0, 'at least one minSeq waiter');
  assert.ok(Number.isSafeInteger(http.pipelinedAheadMax) && http.pipelinedAheadMax > 0, 'at least one pipelined request may run ahead of its turn');
  assert.ok(http.jsonBodyBytesMax <= http.bodyBytesInFlightMax, 'the largest JSON body must fit in the in-flight budget, or it is never accepted');
  // A host's share of a budget over all connections is within it (record 81), and holds the largest body it may send.
  assert.ok(http.bodyBytesInFlightPerAddressMax <= http.bodyBytesInFlightMax, "a host's share of request bodies within the budget");
  assert.ok(http.jsonBodyBytesMax <= http.bodyBytesInFlightPerAddressMax, "the largest JSON body must fit in a host's share, or it is never accepted");
  assert.ok(http.answerBytesHeldPerAddressMax <= http.answerBytesHeldMax, "a host's share of large answers within the budget");

  // commit <-> client contract: a transaction of the most ops a client may send must fit in one entry, or a valid
  // request could never be committed (requests are never split across entries).
  assert.ok(commit.entryOpsMax >= TXN_OPS_MAX, 'a transaction of TXN_OPS_MAX ops must fit in one entry');
  // The largest put (a maximal key and value, plus its op header) must fit in one entry, for the same reason.
  assert.ok(commit.entryBytesMax >= commit.valueBytesMax + KEY_BYTES_MAX + PUT_OP_OVERHEAD_BYTES, 'the largest put must fit in one entry');

  // commit <-> http: the body limit is sized to the largest transaction a node commits, one that fills an entry (its
  // values in base64, as the formatter writes them): a smaller limit would refuse legal transactions, and a much larger
  // one only lets a client hold memory with a body that can never commit. A raw PUT body is bounded by the value limit,
  // and must fit in the in-flight budget too, as must the largest wire PUT frame, which reserves its whole length.
  assert.ok(http.jsonBodyBytesMax >= txnBodyBytesFor(commit.entryBytesMax), 'the largest transaction an entry holds must fit in a JSON body');
  assert.ok(wireFrameBytesMaxFor(commit.valueBytesMax) <= http.bodyBytesInFlightPerAddressMax, "a PUT of the largest value, over HTTP or the wire port, must fit in a host's share of the in-flight budget");
  // A host holding nothing else is always sent the largest value over HTTP.
  assert.ok(commit.valueBytesMax <= http.answerBytesHeldPerAddressMax, "the largest value fits a host's share of large answers");

  // commit <-> replication: every entry the root commits must travel down the tree. The protocol refuses records above
  // entryRecordBytesMax, so a larger entry would stop every replica for good.
  assert.ok(replication.entryRecordBytesMax >= commit.entryBytesMax + ENTRY_RECORD_OVERHEAD_BYTES, 'every entry must fit the replication record limit');
  // A snapshot carries each key with its value in one record, and each record must fit in a frame of its own.
  assert.ok(
    replication.frameBytesMax >= FRAME_HEADER_BYTES + 4 + commit.valueBytesMax + KEY_BYTES_MAX + SNAPSHOT_RECORD_OVERHEAD_BYTES,
    'a snapshot record of the largest value must fit in a frame',
  );

  // store <-> watch: watch snapshots take their readers from the node's budget; a budget smaller than their own cap
  // would leave the cap meaningless.
  assert.ok(watch.snapshotsMax <= store.snapshotReadersMax, 'the watch snapshots allowed at once fit the snapshot reader budget');

  // http <-> replication: a replica forwards a client write and waits to apply it. The wait must outlast one failover
  // (a stale upstream noticed, then the longest backoff), or writes acknowledged at the root are reported as timeouts
  // whenever a replica switches upstream.
  assert.ok(
    http.forwardedWriteWaitMs >= replication.upstreamStaleMs + replication.reconnectBackoffMsMax,
    'a forwarded write must outlast one replication failover',
  );

  // http <-> wire <-> replication <-> process: every connection is a file, and all of them must fit under the
  // open-files limit (openFilesNeeded).
  assert.ok(
    openFilesNeeded(limits) <= PROCESS_OPEN_FILES_MAX,
    'HTTP and wire connections, forwarded writes, replication children and closing or handshaking sockets must fit in the open files',
  );
  return freeze(limits);
}

/**
 * Files a node holds with every cap of `limits` full at once: HTTP connections (watches and TLS handshakes included),
 * wire connections, a replica's writes forwarded to its upstream, the most children a node may be configured to serve,
 * the replication sockets still closing or in their handshake, and what an idle node holds (NODE_IDLE_FILES_MAX).
 * Each is counted from accept (or connect) until its descriptor is closed, so none holds a file uncounted.
 */
export function openFilesNeeded(limits: NodeLimits): number {
  const { http, replication, wire } = limits;
  return (
    http.connectionsMax +
    wire.connectionsMax +
    http.forwardedWritesMax +
    REPLICATION_CHILDREN_MAX_CEILING +
    replication.closingSocketsMax +
    replication.handshakingSocketsMax +
    NODE_IDLE_FILES_MAX
  );
}

/**
 * The fewest HTTP connections a node starts with when its open-files limit makes it take fewer than `limits` allow
 * (`fitOpenFiles`). Below it the limit was surely set by mistake (an inherited `ulimit -n 1024`), and a node that
 * refused nearly every client would look up while serving nobody: it refuses to start instead (record 88).
 */
export const HTTP_CONNECTIONS_MIN = 256;

/** What `fitOpenFiles` made of a node's limits under the process's open-files limit. */
export interface FittedLimits {
  readonly limits: NodeLimits;
  /** The HTTP connections the limits allowed before, when they were lowered to fit; undefined when they fit as they were. */
  readonly loweredFrom: number | undefined;
}

/**
 * `limits` under an open-files limit of `openFilesMax` (the process's RLIMIT_NOFILE, which Node raises to its hard
 * value at start): when the caps full at once need more files than that, the HTTP connections (the one cap that is
 * most of the files) are lowered until they fit, and the TLS handshakes and per-host shares with them, rather than
 * let accept(), a forwarded write, a replica's reconnection or a certificate reload meet EMFILE under load. A limit
 * so low that fewer than HTTP_CONNECTIONS_MIN would be left is CONFIG_INVALID, saying how to raise it (record 88). A
 * limit above PROCESS_OPEN_FILES_MAX changes nothing: the caps are sized for memory and CPU too.
 */
export function fitOpenFiles(limits: NodeLimits, openFilesMax: number): FittedLimits {
  const needed = openFilesNeeded(limits);
  if (needed <= openFilesMax) return { limits, loweredFrom: undefined };
  const others = needed - limits.http.connectionsMax;
  const connectionsMax = openFilesMax - others;
  if (connectionsMax < HTTP_CONNECTIONS_MIN)
    throw new MercuryError(
      'CONFIG_INVALID',
      `the open-files limit of this process is ${openFilesMax} (ulimit -n), and a node needs at least ${others + HTTP_CONNECTIONS_MIN}: ${others} for LMDB, listeners, replication, wire connections and forwarded writes, and ${HTTP_CONNECTIONS_MIN} HTTP connections; ` +
        `raise it to ${needed} for the full caps (ulimit -n ${needed}, systemd LimitNOFILE=${needed}, docker run --ulimit nofile=${needed}:${needed})`,
      { details: { openFilesMax, openFilesNeeded: needed, openFilesMin: others + HTTP_CONNECTIONS_MIN } },
    );
  const { http } = limits;
  const tlsHandshakesMax = Math.min(http.tlsHandshakesMax, connectionsMax);
  return {
    limits: withLimits(limits, {
      http: {
        connectionsMax,
        connectionsPerAddressMax: Math.min(http.connectionsPerAddressMax, connectionsMax),
        tlsHandshakesMax,
        tlsHandshakesPerAddressMax: Math.min(http.tlsHandshakesPerAddressMax, tlsHandshakesMax),
      },
    }),
    loweredFrom: http.connectionsMax,
  };
}

/** Production limits: the constants of src/limits.ts and the replication and watch presets. */
export const NODE_LIMITS: NodeLimits = validateNodeLimits({
  store: { mapBytes: LMDB_MAP_BYTES_DEFAULT, readersMax: LMDB_READERS_MAX, snapshotReadersMax: SNAPSHOT_READERS_MAX },
  commit: COMMIT_LIMITS,
  http: HTTP_LIMITS,
  log: {
    retainEntries: LOG_RETAIN_ENTRIES_DEFAULT,
    retainBytes: LOG_RETAIN_BYTES_DEFAULT,
    trimBatchEntries: LOG_TRIM_BATCH_ENTRIES,
    trimIntervalMs: LOG_TRIM_INTERVAL_MS,
  },
  replication: REPLICATION_LIMITS,
  watch: WATCH_LIMITS,
  wire: WIRE_LIMITS,
});

/**
 * Small limits for tests: values of a few KiB and entries that fit the small replication frames, a short commit
 * queue, a log trimmed every 50 ms in batches of 16, short HTTP timeouts, and the replication and watch test presets
 * (fast failover, tiny windows and queues). A node under these limits meets its edge cases in every run.
 */
export const NODE_LIMITS_TEST: NodeLimits = validateNodeLimits({
  store: { mapBytes: 1024 * MiB, readersMax: 64, snapshotReadersMax: 4 },
  commit: { valueBytesMax: 4 * KiB, queueRequestsMax: 256, queueBytesMax: 64 * KiB, entryOpsMax: TXN_OPS_MAX, entryBytesMax: 8 * KiB - ENTRY_RECORD_OVERHEAD_BYTES, rangeDeleteKeysMax: RANGE_DELETE_KEYS_MAX, compareReadBytesMax: COMPARE_READ_BYTES_MAX },
  http: {
    headersTimeoutMs: 2_000,
    requestTimeoutMs: 5_000,
    keepAliveTimeoutMs: 1_000,
    firstByteTimeoutMs: 500,
    connectionsMax: 1_000,
    connectionsPerAddressMax: 250,
    tlsHandshakesMax: 256,
    tlsHandshakesPerAddressMax: 64,
    forwardedWriteWaitMs: 5_000,
    forwardedWritesMax: 8,
    seqWaitersMax: 20_000,
    pipelinedAheadMax: 16,
    jsonBodyBytesMax: txnBodyBytesFor(8 * KiB - ENTRY_RECORD_OVERHEAD_BYTES),
    bodyBytesInFlightMax: 4 * txnBodyBytesFor(8 * KiB - ENTRY_RECORD_OVERHEAD_BYTES),
    bodyBytesInFlightPerAddressMax: 2 * txnBodyBytesFor(8 * KiB - ENTRY_RECORD_OVERHEAD_BYTES),
    answerBytesHeldMax: ANSWER_BYTES_HELD_MAX,
    answerBytesHeldPerAddressMax: ANSWER_BYTES_HELD_PER_ADDRESS_MAX,
    rangePageBytesMax: 64 * KiB,
    logPageBytesMax: 64 * KiB,
    sendStallMs: 1_000,
    snapshotPaceWindowMs: 3_000,
    snapshotPaceBytesMin: 256 * KiB,
  },
  log: { retainEntries: 1_000, retainBytes: 1 * MiB, trimBatchEntries: 16, trimIntervalMs: 50 },
  replication: REPLICATION_LIMITS_TEST,
  watch: WATCH_LIMITS_TEST,
  wire: WIRE_LIMITS_TEST,
});

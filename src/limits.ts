/**
 * Every limit Mercury enforces, in one place, with units last in the name.
 *
 * Limits exist so that nothing a client or a peer sends can make a node use unbounded memory or time. The relations
 * between them are asserted at the bottom of this module, because a limit that is inconsistent with another one is a
 * bug that only shows up under load. A node does not read the per-node limits here directly: they are the production
 * values of its `NodeLimits` (src/node/limits.ts), which it takes through `NodeOptions` and validates again, across
 * sections, at start-up.
 */
import assert from 'node:assert/strict';
import { txnBodyBytesFor, WATCH_EVENTS_PER_PREFIX_MAX } from './api/index.js';
import {
  KEY_BYTES_MAX,
  LOG_PAGE_ANSWER_BYTES_MAX,
  LOG_PAGE_VALUES_MAX,
  LOG_PAGE_BYTES_MAX,
  LOG_READ_LIMIT_MAX,
  MIN_SEQ_WAIT_MS_DEFAULT,
  MIN_SEQ_WAIT_MS_MAX,
  COMPARE_READ_BYTES_MAX,
  RANGE_DELETE_KEYS_MAX,
  RANGE_LIMIT_DEFAULT,
  RANGE_LIMIT_MAX,
  TXN_OPS_MAX,
  VALUE_BYTES_CEILING,
  VALUE_BYTES_MAX_DEFAULT,
} from './api/limits.js';

// The limits a client can see (key and value sizes, transaction ops, pages, minSeq waits) are a wire contract.
export * from './api/limits.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** LMDB (lmdb-js 3.5) rejects keys longer than this. */
export const LMDB_KEY_BYTES_MAX = 1978;

/** An HTTP client must send all headers within this time, and the whole request within the next one. */
export const HTTP_HEADERS_TIMEOUT_MS = 10_000;
export const HTTP_REQUEST_TIMEOUT_MS = 60_000;
/** Idle keep-alive connections are closed after this long. */
export const HTTP_KEEP_ALIVE_TIMEOUT_MS = 5_000;
/**
 * A connection the node answers and closes itself (a request that timed out, malformed HTTP, headers too large,
 * CONNECT, HTTP on the TLS port) is destroyed this long after its answer, whatever the peer does. Ending it waited
 * for the peer's own FIN: a client that sent part of its headers and then nothing, and never closed, kept its
 * connection after the 408 for good; one whose host vanished, until the kernel gave up retransmitting (audit,
 * 2026-12-07; docs/security.md). A second lets the answer reach a client that reads, before unread bytes make the
 * kernel reset the connection.
 */
export const HTTP_CLOSE_FLUSH_MS = 1_000;
assert.ok(HTTP_CLOSE_FLUSH_MS <= HTTP_KEEP_ALIVE_TIMEOUT_MS, 'a connection being closed holds its slot no longer than an idle one');

/**
 * Open files a node process may hold: the hard RLIMIT_NOFILE of the machines Mercury runs on, which a node cannot
 * raise. Every socket is one.
 */
export const PROCESS_OPEN_FILES_MAX = 20_000;
/**
 * Files a node needs besides its HTTP connections: stdio, LMDB's data and lock files, libuv's epoll, eventfds and
 * pipes, listening sockets, replication peers (a measured idle node holds 24), the wire port's connections
 * (src/wire/limits.ts: 128) and a replica's writes forwarded to its upstream (FORWARDED_WRITES_MAX); asserted in
 * src/node/limits.ts.
 */
export const PROCESS_OPEN_FILES_RESERVED = 764;
/**
 * Open HTTP connections per node, watch WebSockets included: node:http counts a socket from accept to close, and an
 * upgraded socket is still one of the server's connections (`server.maxConnections`). Beyond it new connections are
 * closed at once, before the open-files limit would make accept() fail.
 */
export const HTTP_CONNECTIONS_MAX = PROCESS_OPEN_FILES_MAX - PROCESS_OPEN_FILES_RESERVED;
/**
 * Open HTTP connections per remote address, watches included, by default (`--max-connections-per-address` for a host
 * that needs more): a fifth of HTTP_CONNECTIONS_MAX, so that one host cannot hold them all.
 */
export const HTTP_CONNECTIONS_PER_ADDRESS_MAX = 4_000;
/**
 * HTTP connections in their TLS handshake at once (from their first byte to the handshake's end, at most the 5 s of
 * `firstByteTimeoutMs`), and per remote host; beyond either a new one is closed at once and counted
 * (`mercury_tls_rejected_total{reason="handshakes_full"}`). A handshake holds about 52 KB of OpenSSL state whatever the
 * peer sent: 4,000 peers that sent 1 byte of a ClientHello and stopped took a node from 69 to 280 MB, so that the
 * connection cap alone let 19,236 of them hold about 1 GB (audit, 2026-12-07). 1,024 hold about 54 MB; a handshake
 * takes the node a few milliseconds, so a burst of clients meets the cap only when it outruns the CPU, and those
 * refused retry (docs/decisions.md, record 80). A host takes at most a quarter, so at least four are needed to fill it.
 */
export const HTTP_TLS_HANDSHAKES_MAX = 1_024;
export const HTTP_TLS_HANDSHAKES_PER_ADDRESS_MAX = 256;

/**
 * Group commit: requests waiting for the next entry. When the queue is full new writes are refused with 503
 * (OVERLOADED) rather than buffered: the client retries, the node stays within memory.
 */
export const COMMIT_QUEUE_REQUESTS_MAX = 50_000;
export const COMMIT_QUEUE_BYTES_MAX = 512 * MiB;
/**
 * One entry (one LMDB write transaction) takes queued requests until it holds this many ops or bytes. Requests are
 * never split, so a single maximal request still fits in an entry of its own.
 */
export const ENTRY_OPS_MAX = 100_000;
export const ENTRY_BYTES_MAX = 96 * MiB;

/**
 * Largest `POST /v1/txn` body: what the largest transaction an entry can hold needs (src/api/txn.ts,
 * `txnBodyBytesFor`: ENTRY_BYTES_MAX of ops in base64, about 129 MiB). A raw PUT body is bounded by the value limit.
 */
export const JSON_BODY_BYTES_MAX = txnBodyBytesFor(ENTRY_BYTES_MAX);
/**
 * Request bodies a node holds at once, over all connections, from the first byte read until the request is answered
 * (two of the largest). A body that would go beyond it is refused with 503 BODY_BUDGET_EXCEEDED and Retry-After.
 */
export const BODY_BYTES_IN_FLIGHT_MAX = 2 * JSON_BODY_BYTES_MAX;
/**
 * Request bodies one remote host (an IPv4 address, an IPv6 /64) holds at once, over its connections: one of the largest,
 * half the node's budget, so that one host cannot refuse everyone else's writes (record 81). Before, two connections
 * that declared the largest transaction body and sent one byte of it held the whole budget for the request timeout
 * (60 s, then again), and every PUT from elsewhere was refused 503 (audit, 2026-12-07). Past it, 503
 * BODY_BUDGET_EXCEEDED with `reason: ADDRESS_SHARE_FULL`.
 */
export const BODY_BYTES_IN_FLIGHT_PER_ADDRESS_MAX = JSON_BODY_BYTES_MAX;

/**
 * Large answers (a value or a range page over a send slice) a node holds at once while their clients take them, over
 * all connections; past it such an answer is refused 503 OVERLOADED (src/server/answer-budget.ts). Four of the
 * largest values a node can be allowed.
 */
export const ANSWER_BYTES_HELD_MAX = 4 * VALUE_BYTES_CEILING;
/**
 * Large answers held for one remote host's connections at once: a quarter of the node's budget, the largest value a
 * node can be allowed, so that one host's connections that read nothing cannot take it whole (record 81). Before,
 * 250 connections of one address asking for an 8 MiB value held all 64 MiB, and every large GET from elsewhere was
 * refused 503 (audit, 2026-12-07). Past it, 503 OVERLOADED with `reason: ADDRESS_SHARE_FULL`.
 */
export const ANSWER_BYTES_HELD_PER_ADDRESS_MAX = VALUE_BYTES_CEILING;

/**
 * Reads parked at once on one node waiting for a `minSeq` it has not applied (HTTP `?minSeq=`, the wire port's GET,
 * read-your-writes after a forwarded write). Each holds a promise and a timer; beyond this a read is answered
 * OVERLOADED at once: an HTTP connection may pipeline any number of parked reads (none writes a byte, so node:http
 * never pauses it), and the wire port allows 1,024 per connection.
 */
export const SEQ_WAITERS_MAX = 20_000;

/**
 * Writes a replica has forwarded to its upstream and not yet had answered. Each holds a connection to the upstream
 * (the client's agent opens one per request in flight), a file beside the node's own connections: without a cap, a
 * slow or silent upstream and a burst of writes (19,236 HTTP connections, 1,024 in flight on each wire connection)
 * made the replica open a socket per write, past the open-files limit. Beyond it a write is refused at once with
 * OVERLOADED, before anything leaves the node (audit, 2026-12-06). One connection carries a write per round trip to
 * the root: 64 carry some 30,000 writes a second at a 2 ms round trip, more than a root commits durably here (about
 * 14,000/s); farther from the root, fewer (heavy writers write to the root). 64 is what the open files leave: the
 * HTTP connections stay above the 19,000 watchers a node must hold (below).
 */
export const FORWARDED_WRITES_MAX = 64;

/** Log retention defaults: whichever limit is reached first trims the oldest entries. */
export const LOG_RETAIN_ENTRIES_DEFAULT = 1_000_000;
export const LOG_RETAIN_BYTES_DEFAULT = 1024 * MiB;
/** The trimmer deletes at most this many entries per write transaction, so that it never holds the writer for long. */
export const LOG_TRIM_BATCH_ENTRIES = 1_000;
export const LOG_TRIM_INTERVAL_MS = 1_000;

/**
 * The longest node or dataset id, in bytes of UTF-8: the replication protocol carries both as a u8-length-prefixed
 * string (its NODE_ID_BYTES_MAX), and the store refuses an id record outside 1..this as damaged (records.ts). Ids a
 * store makes are UUIDs (36 bytes); the margin is for humans.
 */
export const ID_BYTES_MAX = 255;

/** LMDB map size: the largest the data file may grow. Sparse, so a large figure costs nothing up front. */
export const LMDB_MAP_BYTES_DEFAULT = 64 * 1024 * MiB;
/**
 * Slots of LMDB's reader table (its `maxReaders`; lmdb-js's default is 126): one per read transaction open at once, in
 * this process and in any other that opens the data directory (`mercury verify`, embedded readers). A full table fails
 * every read with MDB_READERS_FULL. 64 bytes of the lock file each.
 */
export const LMDB_READERS_MAX = 1_024;
/**
 * Long-lived snapshot readers a node holds at once (src/store/snapshot-readers.ts): `GET /v1/snapshot` answers,
 * snapshots sent to joining or fallen-behind children, and watch snapshots (at most WATCH_SNAPSHOTS_MAX of them),
 * each for as long as its peer takes to read it. The rest of the reader table is headroom for the short reads that
 * serve requests, lmdb-js's own, and other processes' readers.
 */
export const SNAPSHOT_READERS_MAX = 64;
/**
 * Slots of LMDB's reader table per snapshot reader: the snapshot readers may hold at most a quarter of the table. Each
 * holds its slot for as long as its peer takes; the rest serve what must never wait on them: the short read
 * transactions of point reads and ranges (one per turn of the event loop while an older one is still in use),
 * replication's log reads and handshakes, lmdb-js's own, and other processes on the data directory. A table found
 * smaller than configured (another process made it: src/store/store.ts) gets a budget of a quarter of it, at least 1.
 */
export const LMDB_READERS_PER_SNAPSHOT_READER = 4;
/**
 * An HTTP answer whose client takes none of the bytes queued for it for this long has its connection reset
 * (`SEND_STALLED` in the log): the answer would otherwise hold its socket, and a snapshot its read transaction, for as
 * long as the client keeps the connection open. A streamed answer (a snapshot, the log, a large JSON body, a large
 * value) progresses by slices of 64 KiB handed to the kernel, which Linux allows once the client has taken about half
 * of the socket's send buffer (up to 2 MiB with default buffers): a client must read some 35 KiB/s at least. Any
 * answer's tail, what the kernel had not taken when it ended, must be taken whole within this time of its end.
 */
export const HTTP_SEND_STALL_MS = 60_000;
/**
 * A `GET /v1/snapshot` must be taken at `HTTP_SNAPSHOT_PACE_BYTES_MIN` per `HTTP_SNAPSHOT_PACE_WINDOW_MS` at least
 * (17 KB/s, below any link a backup runs over), or its connection is reset (`SEND_TOO_SLOW` in the log). Its read
 * transaction keeps LMDB from reusing pages freed meanwhile, so the data file grows by every write while it is held;
 * the send deadline alone let a client that took a 64 KiB slice a minute hold one for days (audit, 2026-12-07).
 */
export const HTTP_SNAPSHOT_PACE_WINDOW_MS = 60_000;
export const HTTP_SNAPSHOT_PACE_BYTES_MIN = 1024 * 1024;
/**
 * Pipelined requests of one HTTP connection that run at once: the rest wait, parsed, until one of these is answered
 * (its last byte taken by the kernel). node:http parses every request in a chunk it read before it stops reading a
 * client that takes no answers, and holds each answer in memory until the ones before it are sent: without this, one
 * 64 KiB chunk of pipelined GETs of a 1 MiB value made the node hold some 1.4 GiB (an audit, 2026-12-06).
 */
export const HTTP_PIPELINED_RUNNING_MAX = 8;
/**
 * Pipelined requests that run ahead of their turn (an earlier request of their connection not yet answered) at once,
 * over all connections: each holds its answer in memory until the ones before it are sent. Beyond it, a pipelined
 * request waits, parsed, for its turn; the first unanswered request of each connection always runs. Without it,
 * connections that pipelined 8 GETs of a 1 MiB value and read nothing held 7 answers each: 200 of them took a node
 * 951 MiB of RSS in 6 s (audit, 2026-12-07), 4,000 from one address could take 28 GiB. 64 answers of the default
 * largest value are 64 MiB; Mercury's clients send one request at a time on a connection and never wait for it.
 */
export const HTTP_PIPELINED_AHEAD_MAX = 64;

// Relations between limits.
assert.ok(KEY_BYTES_MAX < LMDB_KEY_BYTES_MAX, 'keys must fit LMDB');
// Snapshot readers are held for minutes; the short reads of requests, lmdb-js's threads and other processes' readers
// need the rest of the table, or a node sending its most snapshots would fail its reads (MDB_READERS_FULL).
assert.ok(SNAPSHOT_READERS_MAX * LMDB_READERS_PER_SNAPSHOT_READER <= LMDB_READERS_MAX, 'snapshot readers leave most of the LMDB reader table to short reads');
assert.ok(VALUE_BYTES_MAX_DEFAULT <= VALUE_BYTES_CEILING);
// One host holds at most half of a budget over all connections, and may still send (or be sent) the largest body or value.
assert.ok(2 * BODY_BYTES_IN_FLIGHT_PER_ADDRESS_MAX <= BODY_BYTES_IN_FLIGHT_MAX && JSON_BODY_BYTES_MAX <= BODY_BYTES_IN_FLIGHT_PER_ADDRESS_MAX, "a host's share of request bodies");
assert.ok(2 * ANSWER_BYTES_HELD_PER_ADDRESS_MAX <= ANSWER_BYTES_HELD_MAX && VALUE_BYTES_CEILING <= ANSWER_BYTES_HELD_PER_ADDRESS_MAX, "a host's share of large answers");
// A transaction's ops must fit in one entry, however the batch is filled.
assert.ok(TXN_OPS_MAX <= ENTRY_OPS_MAX);
// A range delete may hold the event loop of every node no longer than an entry of single deletes does (record 41).
assert.ok(2 * VALUE_BYTES_CEILING <= COMPARE_READ_BYTES_MAX, 'a transaction may compare the largest value and still read many smaller records');
assert.ok(RANGE_DELETE_KEYS_MAX <= ENTRY_OPS_MAX, 'a range delete must remove no more keys than an entry holds deletes');
// A watch client refuses an events message of more events per prefix than an entry holds ops.
assert.ok(ENTRY_OPS_MAX <= WATCH_EVENTS_PER_PREFIX_MAX, 'a watch client must accept every event of the largest entry');
// The largest single PUT must fit in one entry.
assert.ok(VALUE_BYTES_CEILING + KEY_BYTES_MAX <= ENTRY_BYTES_MAX);
// A body of the largest value or transaction must fit in the in-flight budget, or it could never be accepted.
assert.ok(JSON_BODY_BYTES_MAX <= BODY_BYTES_IN_FLIGHT_MAX && VALUE_BYTES_CEILING <= BODY_BYTES_IN_FLIGHT_MAX);
assert.ok(ENTRY_BYTES_MAX <= COMMIT_QUEUE_BYTES_MAX);
assert.ok(RANGE_LIMIT_DEFAULT <= RANGE_LIMIT_MAX);
// A client must be able to read a log page that ends with the largest entry: its keys and values at most doubled by
// JSON, 384 bytes of fields per op (an op's names and seqs, and an author run of the longest subject), 1 KiB of
// fields (hashes, signature) per entry of the page.
assert.ok(2 * (LOG_PAGE_BYTES_MAX + ENTRY_BYTES_MAX) + 384 * ENTRY_OPS_MAX + 1024 * LOG_READ_LIMIT_MAX <= LOG_PAGE_ANSWER_BYTES_MAX, 'a log page must fit what a client reads');
assert.ok(12 * (LOG_PAGE_BYTES_MAX / 4 + ENTRY_OPS_MAX) + 16 * LOG_READ_LIMIT_MAX <= LOG_PAGE_VALUES_MAX, 'a log page must hold no more JSON values than a client parses');

assert.ok(MIN_SEQ_WAIT_MS_DEFAULT <= MIN_SEQ_WAIT_MS_MAX);
// Every connection is a file: the HTTP connections and what else the process holds must fit under the hard limit.
assert.ok(HTTP_CONNECTIONS_MAX + PROCESS_OPEN_FILES_RESERVED <= PROCESS_OPEN_FILES_MAX, 'HTTP connections must leave files for LMDB and peers');
// A node must hold a full fan-out of watchers (the issue: 19,000 watchers per node) plus some API clients.
assert.ok(HTTP_CONNECTIONS_MAX >= 19_000);

// --- Replication topology ---------------------------------------------------------------------------------------------

/** Upstreams a replica may list (`--upstream A,B,...`): it tries them in order, so a long list only adds failover time. */
export const UPSTREAMS_MAX = 16;
/**
 * Children one node serves. Each costs a socket, a file descriptor from the files reserved beside the HTTP
 * connections, and up to a flow-control window of socket buffers. Fan-out 256 reaches 16 million replicas in three
 * levels, so a wider node buys nothing but a larger blast radius when it fails.
 */
export const REPLICATION_CHILDREN_MAX_DEFAULT = 256;
export const REPLICATION_CHILDREN_MAX_CEILING = 400;
/** Files an idle node holds besides its connections: LMDB, listeners, the upstream link, stdio (measured: 24). */
export const NODE_IDLE_FILES_MAX = 64;
assert.ok(REPLICATION_CHILDREN_MAX_DEFAULT <= REPLICATION_CHILDREN_MAX_CEILING);
assert.ok(REPLICATION_CHILDREN_MAX_CEILING + NODE_IDLE_FILES_MAX <= PROCESS_OPEN_FILES_RESERVED, 'children must fit in the files reserved beside HTTP');

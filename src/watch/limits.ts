/**
 * Limits and timings of watches, with units last in the name, and the relations between them.
 *
 * The hub never reads these constants directly: it takes a `WatchLimits` object, so that tests can run with
 * `WATCH_LIMITS_TEST`, where queues are a few KiB and every timer is short, so that catch-up, stalls, progress and
 * snapshots in several pages happen in every run. `validateWatchLimits` asserts the relations below for any set, and
 * runs on both presets at module load.
 */
import assert from 'node:assert/strict';
import {
  WATCH_CLIENT_MESSAGE_BYTES_MAX,
  WATCH_HEARTBEAT_INTERVAL_MS,
  WATCH_ID_CHARS_MAX,
  WATCH_PEER_SILENT_MS,
  WATCH_PREFIX_BYTES_PER_ALLOWED_CONNECTION,
  WATCH_PREFIX_BYTES_PER_CONNECTION_MAX,
  WATCH_PREFIXES_PER_SUBSCRIPTION_MAX,
  WATCH_SUBSCRIPTIONS_PER_CONNECTION_MAX,
  WATCH_SUBSCRIPTION_BYTES_MIN,
  WATCH_SERVER_MESSAGE_BYTES_MAX,
  WATCH_SNAPSHOT_ITEMS_MAX,
} from '../api/index.js';
import { ENTRY_BYTES_MAX, ENTRY_OPS_MAX, HTTP_CONNECTIONS_MAX, HTTP_CONNECTIONS_PER_ADDRESS_MAX, KEY_BYTES_MAX } from '../limits.js';

// The limits a client can see are part of the wire contract (src/api/watch.ts); they are re-exported here so that the
// node's watch limits read as one list.
export {
  WATCH_CLIENT_MESSAGE_BYTES_MAX,
  WATCH_HEARTBEAT_INTERVAL_MS,
  WATCH_ID_CHARS_MAX,
  WATCH_PEER_SILENT_MS,
  WATCH_PREFIX_BYTES_PER_ALLOWED_CONNECTION,
  WATCH_PREFIX_BYTES_PER_CONNECTION_MAX,
  WATCH_PREFIXES_PER_SUBSCRIPTION_MAX,
  WATCH_SUBSCRIPTIONS_PER_CONNECTION_MAX,
  WATCH_SUBSCRIPTION_BYTES_MIN,
};

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * Bytes a connection may have queued and not yet handed to the kernel (`ws.bufferedAmount`) before its subscriptions
 * stop taking entries from the live fan-out and are served from the log on disk instead (catch-up). A message is
 * queued whole when the queue is below this, so a connection holds at most this plus one message.
 */
export const WATCH_QUEUE_BYTES_MAX = 256 * KiB;
/**
 * Bytes the queues of all connections may hold together. Past it, a connection whose queue holds more than
 * WATCH_QUEUE_BYTES_SHARE_MAX is full as if past its own bound: its subscriptions go to catch-up, and it is closed if it
 * stays so for WATCH_STALL_MS. Without it, connections that read nothing held WATCH_QUEUE_BYTES_MAX each: 260 KiB per
 * connection measured, 4.8 GiB over the node's 19,236 connections (audit, 2026-12-07; docs/decisions.md, record 76).
 */
export const WATCH_QUEUE_BYTES_TOTAL_MAX = 64 * MiB;
/**
 * Bytes a connection may have queued whatever the others hold: a watcher that reads keeps its live events of messages
 * within it while the node's queues are full of others'. A message that would take a connection past it is queued only
 * if WATCH_QUEUE_BYTES_TOTAL_MAX has room for it (or nothing else is queued: a message larger than the budget goes out
 * alone), so the node's queues hold at most WATCH_QUEUE_BYTES_TOTAL_MAX plus this per connection, 139 MiB over 19,236
 * connections. Before, a connection within it took any message: one large event each beyond the budget (record 85).
 */
export const WATCH_QUEUE_BYTES_SHARE_MAX = 4 * KiB;
/** A connection whose queue stays full and does not shrink for this long is closed (4008) and must resume. */
export const WATCH_STALL_MS = 15_000;
/**
 * How often progress is reported: a subscription that was not told about the node's latest seq (because no entry
 * since matched it) gets a progress message within this time, so an idle watcher can always resume exactly.
 */
export const WATCH_PROGRESS_INTERVAL_MS = 1_000;
/** After a close frame, the peer has this long to answer before the socket is destroyed. */
export const WATCH_CLOSE_TIMEOUT_MS = 2_000;
/**
 * A client frame, or a message of fragments, must arrive in full within this long of its first byte, else the
 * connection is closed with 1008 (as the wire port's `frameTimeoutMs`, src/wire/limits.ts). A watcher may stay silent
 * for hours, so only a message under way has a deadline: without it a peer held a partial frame, up to the message
 * limit, on each of its connections for as long as it liked (audit of 2026-12-06). The largest message (128 KiB) needs
 * about 4.4 KiB/s to make it.
 */
export const WATCH_FRAME_TIMEOUT_MS = 30_000;
/** Catch-up reads at most this many entries from the log at once ... */
export const WATCH_CATCHUP_READ_ENTRIES_MAX = 256;
/** ... fewer when entries are large: the read size is aimed at about this many record bytes. */
export const WATCH_CATCHUP_READ_BYTES_TARGET = 4 * MiB;
/** Record bytes that one round of catch-up may read before it yields to the event loop (live fan-out goes first). */
export const WATCH_CATCHUP_ROUND_BYTES_MAX = 8 * MiB;
/** When every lagging subscription's queue is full, catch-up looks again after this long. */
export const WATCH_CATCHUP_POLL_MS = 10;
/** A snapshot message carries about this many bytes of keys and values (always at least one item). */
export const WATCH_SNAPSHOT_PAGE_BYTES = 256 * KiB;
// A client refuses a snapshot message of more items than that (keys are at least one byte): src/client/watch.ts.
assert.ok(WATCH_SNAPSHOT_PAGE_BYTES + 1 <= WATCH_SNAPSHOT_ITEMS_MAX);
/**
 * Snapshots being sent at once; further ones wait for a slot. Each holds an LMDB read transaction (lmdb-js allows 126
 * readers per environment by default) and keeps LMDB from reusing the pages it sees.
 */
export const WATCH_SNAPSHOTS_MAX = 16;
/** A snapshot still being sent after this long is abandoned and its connection closed (4008), for the same reason. */
export const WATCH_SNAPSHOT_MS_MAX = 120_000;
/**
 * Events messages at least this large are sent without copying: the per-subscription head and the shared body go out
 * as two fragments of one WebSocket message, so thousands of watchers of one prefix share one buffer, and the queue
 * budget counts it once while any of their sockets holds it (record 85).
 */
export const WATCH_SHARED_FRAGMENT_BYTES_MIN = 16 * KiB;

export interface WatchLimits {
  readonly queueBytesMax: number;
  readonly queueBytesTotalMax: number;
  readonly queueBytesShareMax: number;
  readonly stallMs: number;
  readonly progressIntervalMs: number;
  readonly heartbeatIntervalMs: number;
  /** A connection that sent nothing (not even a pong) for this long is closed with 4408; pinged after a heartbeat's silence. */
  readonly peerSilentMs: number;
  readonly closeTimeoutMs: number;
  readonly frameTimeoutMs: number;
  readonly clientMessageBytesMax: number;
  readonly subscriptionsPerConnectionMax: number;
  readonly prefixesPerSubscriptionMax: number;
  readonly prefixBytesPerConnectionMax: number;
  /** What a subscription counts as at least against the prefix budgets (WATCH_SUBSCRIPTION_BYTES_MIN). */
  readonly subscriptionBytesMin: number;
  /**
   * Bytes of prefixes the subscriptions of one remote address hold together, over all its connections, and those of
   * the whole node (WATCH_PREFIX_BYTES_PER_ALLOWED_CONNECTION; `--max-connections-per-address` scales the first).
   */
  readonly prefixBytesPerAddressMax: number;
  readonly prefixBytesMax: number;
  readonly idCharsMax: number;
  readonly catchupReadEntriesMax: number;
  readonly catchupReadBytesTarget: number;
  readonly catchupRoundBytesMax: number;
  readonly catchupPollMs: number;
  readonly snapshotPageBytes: number;
  readonly snapshotsMax: number;
  readonly snapshotMsMax: number;
  readonly sharedFragmentBytesMin: number;
}

export const WATCH_LIMITS: WatchLimits = Object.freeze({
  queueBytesMax: WATCH_QUEUE_BYTES_MAX,
  queueBytesTotalMax: WATCH_QUEUE_BYTES_TOTAL_MAX,
  queueBytesShareMax: WATCH_QUEUE_BYTES_SHARE_MAX,
  stallMs: WATCH_STALL_MS,
  progressIntervalMs: WATCH_PROGRESS_INTERVAL_MS,
  heartbeatIntervalMs: WATCH_HEARTBEAT_INTERVAL_MS,
  peerSilentMs: WATCH_PEER_SILENT_MS,
  closeTimeoutMs: WATCH_CLOSE_TIMEOUT_MS,
  frameTimeoutMs: WATCH_FRAME_TIMEOUT_MS,
  clientMessageBytesMax: WATCH_CLIENT_MESSAGE_BYTES_MAX,
  subscriptionsPerConnectionMax: WATCH_SUBSCRIPTIONS_PER_CONNECTION_MAX,
  prefixesPerSubscriptionMax: WATCH_PREFIXES_PER_SUBSCRIPTION_MAX,
  prefixBytesPerConnectionMax: WATCH_PREFIX_BYTES_PER_CONNECTION_MAX,
  subscriptionBytesMin: WATCH_SUBSCRIPTION_BYTES_MIN,
  prefixBytesPerAddressMax: HTTP_CONNECTIONS_PER_ADDRESS_MAX * WATCH_PREFIX_BYTES_PER_ALLOWED_CONNECTION,
  prefixBytesMax: HTTP_CONNECTIONS_MAX * WATCH_PREFIX_BYTES_PER_ALLOWED_CONNECTION,
  idCharsMax: WATCH_ID_CHARS_MAX,
  catchupReadEntriesMax: WATCH_CATCHUP_READ_ENTRIES_MAX,
  catchupReadBytesTarget: WATCH_CATCHUP_READ_BYTES_TARGET,
  catchupRoundBytesMax: WATCH_CATCHUP_ROUND_BYTES_MAX,
  catchupPollMs: WATCH_CATCHUP_POLL_MS,
  snapshotPageBytes: WATCH_SNAPSHOT_PAGE_BYTES,
  snapshotsMax: WATCH_SNAPSHOTS_MAX,
  snapshotMsMax: WATCH_SNAPSHOT_MS_MAX,
  sharedFragmentBytesMin: WATCH_SHARED_FRAGMENT_BYTES_MIN,
});

/**
 * Small limits for tests: a queue of a few KiB fills as soon as a client stops reading, progress flows every 50 ms,
 * a stuck connection, or a message that does not arrive in full, is closed after a second, catch-up reads a few entries at a time and snapshots come in pages of
 * a few hundred bytes.
 */
export const WATCH_LIMITS_TEST: WatchLimits = Object.freeze({
  queueBytesMax: 16 * KiB,
  // Room for the queues of the tests' few connections: test/hostile-memory-watch.test.ts sets a small one.
  queueBytesTotalMax: 4 * MiB,
  queueBytesShareMax: 1 * KiB,
  stallMs: 1_000,
  progressIntervalMs: 50,
  heartbeatIntervalMs: 200,
  peerSilentMs: 1_500,
  closeTimeoutMs: 3_000,
  frameTimeoutMs: 1_000,
  clientMessageBytesMax: WATCH_CLIENT_MESSAGE_BYTES_MAX,
  subscriptionsPerConnectionMax: 8,
  prefixesPerSubscriptionMax: WATCH_PREFIXES_PER_SUBSCRIPTION_MAX,
  prefixBytesPerConnectionMax: WATCH_PREFIX_BYTES_PER_CONNECTION_MAX,
  subscriptionBytesMin: WATCH_SUBSCRIPTION_BYTES_MIN,
  prefixBytesPerAddressMax: HTTP_CONNECTIONS_PER_ADDRESS_MAX * WATCH_PREFIX_BYTES_PER_ALLOWED_CONNECTION,
  prefixBytesMax: HTTP_CONNECTIONS_MAX * WATCH_PREFIX_BYTES_PER_ALLOWED_CONNECTION,
  idCharsMax: 64,
  catchupReadEntriesMax: 8,
  catchupReadBytesTarget: 16 * KiB,
  catchupRoundBytesMax: 64 * KiB,
  catchupPollMs: 5,
  snapshotPageBytes: 256,
  snapshotsMax: 2,
  snapshotMsMax: 10_000,
  sharedFragmentBytesMin: 1 * KiB,
});

/** Asserts the relations between limits (a violation is a configuration bug, so it throws an AssertionError). */
export function validateWatchLimits(limits: WatchLimits): WatchLimits {
  for (const [name, value] of Object.entries(limits)) assert.ok(Number.isSafeInteger(value) && value > 0, `watch limit ${name} must be a positive integer`);
  // The largest subscribe (every prefix a maximal key, JSON-escaped at 6 characters per byte, plus the rest of the
  // message) must be acceptable, or a valid request would be refused as oversized.
  assert.ok(limits.clientMessageBytesMax >= limits.prefixesPerSubscriptionMax * (6 * KEY_BYTES_MAX + 4) + 1 * KiB + limits.idCharsMax * 6);
  // Any valid subscription fits a connection that holds no other: the client library opens one connection per watch,
  // so it never meets the per-connection budget of prefix bytes.
  assert.ok(limits.prefixBytesPerConnectionMax >= limits.prefixesPerSubscriptionMax * KEY_BYTES_MAX, 'one subscription of the longest prefixes fits a connection');
  assert.ok(limits.prefixBytesPerAddressMax >= limits.prefixBytesPerConnectionMax, "a full connection fits its address's budget");
  // The floor makes subscriptions of short prefixes count, never refuses what it was added for: a connection's most
  // subscriptions fit its own budget, and one per connection the node and an address may hold fits theirs.
  assert.ok(limits.subscriptionsPerConnectionMax * limits.subscriptionBytesMin <= limits.prefixBytesPerConnectionMax, "a connection's most subscriptions at the floor fit its budget");
  assert.ok(limits.subscriptionBytesMin <= WATCH_PREFIX_BYTES_PER_ALLOWED_CONNECTION, 'one subscription at the floor per allowed connection fits the address and node budgets');
  assert.ok(limits.prefixBytesMax >= limits.prefixBytesPerAddressMax, "an address's budget fits the node's");
  // A connection may fill its own queue while the others are idle, and holds its share whatever they hold.
  assert.ok(limits.queueBytesShareMax < limits.queueBytesMax && limits.queueBytesMax <= limits.queueBytesTotalMax, 'a share within a queue within the total');
  // A quiet client is pinged after a heartbeat interval of silence and has at least two more to answer: one lost pong
  // (a retransmitted segment) never closes a live watcher.
  assert.ok(limits.peerSilentMs >= 3 * limits.heartbeatIntervalMs, 'a quiet client has two heartbeat intervals to answer a ping');
  // A client that stops reading while events queue for it is a slow watcher: closed with 4008 and the seq to resume
  // from, not as silent (a client that reads nothing sends no pong either).
  assert.ok(limits.peerSilentMs > limits.stallMs, 'a stalled reader is closed as a slow watcher before it counts as silent');
  // Progress is checked on each tick, so the heartbeat and the stall time are whole numbers of ticks at least.
  assert.ok(limits.progressIntervalMs <= limits.heartbeatIntervalMs);
  assert.ok(limits.progressIntervalMs * 2 <= limits.stallMs, 'a stall is detected by the progress tick');
  assert.ok(limits.progressIntervalMs * 2 <= limits.snapshotMsMax);
  // One catch-up round reads at least one full read.
  assert.ok(limits.catchupReadBytesTarget <= limits.catchupRoundBytesMax);
  assert.ok(limits.catchupPollMs <= limits.progressIntervalMs);
  // Below the fragment threshold a message is copied per subscriber; that copy must stay small next to the queue.
  assert.ok(limits.sharedFragmentBytesMin <= limits.queueBytesMax);
  return limits;
}

// An events message holds one entry's keys and values as JSON (at most twice their bytes) and about a hundred bytes of
// fields per event: clients must accept the largest one (see WATCH_SERVER_MESSAGE_BYTES_MAX).
assert.ok(2 * ENTRY_BYTES_MAX + 128 * ENTRY_OPS_MAX <= WATCH_SERVER_MESSAGE_BYTES_MAX, 'clients must accept the events message of the largest entry');

validateWatchLimits(WATCH_LIMITS);
validateWatchLimits(WATCH_LIMITS_TEST);

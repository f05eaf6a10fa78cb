/**
 * Defaults and bounds of the TypeScript client, with units last in the name. Every option that `connect` takes is
 * checked against these bounds (see options.ts); the relations between the defaults are asserted at module load.
 */
import assert from 'node:assert/strict';
import { MIN_SEQ_WAIT_MS_DEFAULT, RANGE_LIMIT_MAX, WATCH_HEARTBEAT_INTERVAL_MS } from '../api/index.js';

/** One HTTP attempt (connect, send, answer) may take this long before it is abandoned. */
export const REQUEST_TIMEOUT_MS_DEFAULT = 10_000;
/**
 * A streamed answer (a snapshot) may be silent this long, before its first byte and between chunks, before it is
 * abandoned: the node walks its whole key space to size the snapshot before it answers, and a slow disk can pause it.
 */
export const STREAM_IDLE_TIMEOUT_MS = 120_000;
/** Attempts per call, the first included, across all URLs. */
export const ATTEMPTS_MAX_DEFAULT = 4;
/** Upper bound of `attemptsMax`: beyond it a dead cluster would hold a caller for minutes. */
export const ATTEMPTS_MAX_CEILING = 100;
/** Backoff before retry n is a random delay in [0, min(RETRY_DELAY_MS_MAX, RETRY_DELAY_MS_BASE * 2^n)] ("full jitter"). */
export const RETRY_DELAY_MS_BASE_DEFAULT = 50;
export const RETRY_DELAY_MS_MAX_DEFAULT = 2_000;
/**
 * A pooled connection is retired this long before the idle timeout its node advertised (`Keep-Alive: timeout=N`):
 * the node starts its idle timer when it has written an answer, this client when it has read it, and a request sent
 * at the last moment still has to cross the network. node:http's own margin is the same 1 s.
 */
export const KEEP_ALIVE_MARGIN_MS = 1_000;
/**
 * A pooled connection to a node that advertises no idle timeout is retired after this long idle: a Node server's
 * default keep-alive timeout, which Mercury's nodes keep, is 5 s.
 */
export const KEEP_ALIVE_IDLE_MS_DEFAULT = 4_000;
/** Advertised idle timeouts above this (s) count as this: a wild value must not keep a socket for days. */
export const KEEP_ALIVE_HINT_SECONDS_MAX = 3_600;
/** Range pages requested by default (a node allows 1..`RANGE_LIMIT_MAX`). */
export const RANGE_PAGE_LIMIT_DEFAULT = 1_000;

/**
 * A watch that received nothing (not even a progress heartbeat) for this long treats its connection as dead and
 * reconnects. The server sends a heartbeat at least every `WATCH_HEARTBEAT_INTERVAL_MS` (10 s).
 */
export const WATCH_IDLE_MS_DEFAULT = 30_000;
/** Delay before the n-th consecutive reconnect: full jitter as for retries, capped here. */
export const WATCH_RECONNECT_DELAY_MS_BASE_DEFAULT = 100;
export const WATCH_RECONNECT_DELAY_MS_MAX_DEFAULT = 5_000;
/**
 * Bytes of received messages a watch holds for a consumer that has not asked for them yet. Above this the client
 * stops reading the socket (TCP backpressure): the node then serves the watch from its log on disk, and closes it
 * (4008) if the consumer stays stuck, after which the watch resumes by itself. Reading resumes at half this.
 */
export const WATCH_BUFFER_BYTES_MAX_DEFAULT = 1024 * 1024;

/** `openLocal`: a read transaction older than this is renewed before the next read (0: renew on every read). */
export const LOCAL_STALE_MS_DEFAULT = 0;
/** `openLocal` reads with `minSeq` poll the data directory this often while they wait. */
export const LOCAL_MIN_SEQ_POLL_MS = 2;
/** `minSeq` waits (both kinds of reader) give up after this long unless told otherwise, as a node does. */
export { MIN_SEQ_WAIT_MS_DEFAULT };

assert.ok(RETRY_DELAY_MS_BASE_DEFAULT <= RETRY_DELAY_MS_MAX_DEFAULT);
assert.ok(WATCH_RECONNECT_DELAY_MS_BASE_DEFAULT <= WATCH_RECONNECT_DELAY_MS_MAX_DEFAULT);
assert.ok(ATTEMPTS_MAX_DEFAULT <= ATTEMPTS_MAX_CEILING);
assert.ok(RANGE_PAGE_LIMIT_DEFAULT <= RANGE_LIMIT_MAX, 'a default page must be one a node accepts');
// A healthy but quiet connection must never look dead: two heartbeats fit in the idle time.
assert.ok(WATCH_IDLE_MS_DEFAULT >= 2 * WATCH_HEARTBEAT_INTERVAL_MS, 'watch idle time must exceed two server heartbeats');
// Without a hint the pool must give up a connection before a default Node server (5 s) closes it, with the margin.
assert.ok(KEEP_ALIVE_IDLE_MS_DEFAULT + KEEP_ALIVE_MARGIN_MS <= 5_000, 'idle connections must be retired before a default server closes them');

/**
 * Defaults and bounds of the TypeScript client, with units last in the name. Every option that `connect` takes is
 * checked against these bounds (see options.ts); the relations between the defaults are asserted at module load.
 */
import assert from 'node:assert/strict';
import {
  KEY_BYTES_MAX,
  LOG_PAGE_ANSWER_BYTES_MAX,
  LOG_PAGE_VALUES_MAX,
  MIN_SEQ_WAIT_MS_DEFAULT,
  RANGE_LIMIT_MAX,
  RANGE_PAGE_BYTES_MAX,
  VALUE_BYTES_CEILING,
  WATCH_HEARTBEAT_INTERVAL_MS,
} from '../api/index.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** One HTTP attempt (connect, send, answer) may take this long before it is abandoned. */
export const REQUEST_TIMEOUT_MS_DEFAULT = 10_000;
/**
 * A streamed answer (a snapshot) may be silent this long, before its first byte and between chunks, before it is
 * abandoned: the node walks its whole key space to size the snapshot before it answers, and a slow disk can pause it.
 */
export const STREAM_IDLE_TIMEOUT_MS = 120_000;
/**
 * Waiting out a node that refuses for now (`retryWhileBusy`, busy.ts): each wait is the node's Retry-After, or
 * BUSY_RETRY_DELAY_MS_DEFAULT when it sent none, kept within [BUSY_RETRY_DELAY_MS_MIN, BUSY_RETRY_DELAY_MS_MAX] (a
 * Retry-After of 0 must not make a busy loop, nor one of an hour a wait nobody sees end), and the whole wait ends
 * after BUSY_WAIT_MS_DEFAULT unless the caller says otherwise: long enough for a backup of a node whose snapshot
 * readers are all taken by other backups or joining replicas to get one.
 */
export const BUSY_RETRY_DELAY_MS_MIN = 100;
export const BUSY_RETRY_DELAY_MS_DEFAULT = 1_000;
export const BUSY_RETRY_DELAY_MS_MAX = 30_000;
export const BUSY_WAIT_MS_DEFAULT = 5 * 60_000;
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
/**
 * How much of an answer the HTTP client reads, by what the call can legitimately receive; past it (or when
 * Content-Length announces more) the connection is dropped and the call fails with `InvalidAnswerError`
 * (`ANSWER_TOO_LARGE`), so a broken or hostile node cannot make a client hold an answer without bound.
 *
 * - An error answer: a Mercury error is a few hundred bytes; more is a proxy's page or a hostile node.
 * - A write's result, a status, a token: a few KiB; the margin leaves room for a newer node's fields.
 * - `get`: the value itself, at most the largest value any node accepts.
 * - A range page: keys and values up to the page budget plus one maximal item (the item that crosses the budget),
 *   at most doubled by JSON escaping (base64 is 4/3), and the fields of each item (under 256 bytes) for the most
 *   items a page holds.
 * - A log page (src/api/limits.ts says why), and the token list, which has no bound of its own.
 */
export const ERROR_ANSWER_BYTES_MAX = 64 * KiB;
export const SMALL_ANSWER_BYTES_MAX = 1 * MiB;
/**
 * The most characters of the code of an error answer the client takes. Codes are UPPER_SNAKE names of a few words;
 * anything longer is not a Mercury error body (errors.ts `serverError`).
 */
export const ERROR_CODE_CHARS_MAX = 64;
/**
 * The most characters of the message of an error answer. A node's longest names a key (1 KiB, its bytes escaped at
 * most 6 to 1) beside a limit or a remedy; a longer one is not a message an operator can read, and the answer is
 * refused as not Mercury's rather than shown.
 */
export const ERROR_MESSAGE_CHARS_MAX = 16 * KiB;
export const VALUE_ANSWER_BYTES_MAX = VALUE_BYTES_CEILING;
export const RANGE_PAGE_ANSWER_BYTES_MAX = 2 * (RANGE_PAGE_BYTES_MAX + KEY_BYTES_MAX + VALUE_BYTES_CEILING) + 256 * RANGE_LIMIT_MAX;
export const LARGE_ANSWER_BYTES_MAX = LOG_PAGE_ANSWER_BYTES_MAX;

/**
 * JSON values (containers, strings, numbers, literals) an answer may hold, checked before `JSON.parse` builds them
 * (answers.ts `AnswerCheck`, as the body arrives): parsed, a value costs up to 20 times its bytes (`{}` is 3 bytes and a 56-byte object),
 * so the byte bounds above alone let a node make a client build gigabytes. A small answer's bytes bound it well
 * enough; a range page holds at most its `limit` items of 8 values (12 counted, for fields a newer node adds); a log
 * page, LOG_PAGE_VALUES_MAX (src/api/limits.ts says why); the token list has no bound of its own, and is read up to a
 * million values (tens of thousands of tokens). Nesting deeper than ANSWER_DEPTH_MAX is refused too (an answer nests
 * 5 deep; `JSON.stringify` of a deeper one can overflow the stack), and member names longer than ANSWER_NAME_BYTES_MAX.
 */
export const SMALL_ANSWER_VALUES_MAX = SMALL_ANSWER_BYTES_MAX;
export const RANGE_ITEM_VALUES_MAX = 12;
export const ANSWER_VALUES_OVERHEAD = 16;
export const LOG_ANSWER_VALUES_MAX = LOG_PAGE_VALUES_MAX;
export const TOKEN_LIST_VALUES_MAX = 1_000_000;
export const ANSWER_DEPTH_MAX = 32;
export const ANSWER_NAME_BYTES_MAX = 256;
/** Answers of at most this many bytes are parsed without the check (answers.ts `AnswerCheck` says why). */
export const ANSWER_UNCHECKED_BYTES_MAX = 1024;
// Nested at most half its length deep: JSON.stringify of 2,048 levels ran here, of 5,000 overflowed the stack.
assert.ok(ANSWER_UNCHECKED_BYTES_MAX / 2 <= 2_048, 'an unchecked answer nests no deeper than JSON.stringify manages');

/** Range pages requested by default (a node allows 1..`RANGE_LIMIT_MAX`). */
export const RANGE_PAGE_LIMIT_DEFAULT = 1_000;

/**
 * A watch that received nothing (not even a progress heartbeat) for this long treats its connection as dead and
 * reconnects. The server sends a heartbeat at least every `WATCH_HEARTBEAT_INTERVAL_MS` (10 s).
 */
export const WATCH_IDLE_MS_DEFAULT = 30_000;
/** Bytes read of the body of a watch upgrade the node refused (a Mercury error is a few hundred bytes). */
export const UPGRADE_ERROR_BODY_BYTES_MAX = 4 * KiB;
/** Delay before the n-th consecutive reconnect: full jitter as for retries, capped here. */
export const WATCH_RECONNECT_DELAY_MS_BASE_DEFAULT = 100;
export const WATCH_RECONNECT_DELAY_MS_MAX_DEFAULT = 5_000;
/**
 * A subscribed connection that ends sooner than this counts as a failed attempt for the backoff (not for
 * `watchReconnectAttemptsMax`): a node that confirms the subscribe and closes at once (crashing on it, a proxy cutting
 * it) was otherwise reconnected to every 50 ms on average, for ever (audit, 2026-12-06). Longer than a heartbeat, so a
 * connection that lived through one is stable.
 */
export const WATCH_CONNECTION_STABLE_MS = 15_000;
/**
 * Bytes of received messages a watch holds for a consumer that has not asked for them yet. Above this the client
 * stops reading the socket (TCP backpressure): the node then serves the watch from its log on disk, and closes it
 * (4008) if the consumer stays stuck, after which the watch resumes by itself. Reading resumes at half this.
 */
export const WATCH_BUFFER_BYTES_MAX_DEFAULT = 1024 * 1024;

/**
 * What one received event costs the watch's queue besides its bytes of JSON: decoded, it is two objects and a Buffer
 * or two (about 800 bytes measured per tiny delete event, JSON parsing included, with a 200 MiB message of them).
 */
export const WATCH_EVENT_QUEUE_BYTES = 512;

/** `openLocal`: a read transaction older than this is renewed before the next read (0: renew on every read). */
export const LOCAL_STALE_MS_DEFAULT = 0;
/** `openLocal` reads with `minSeq` poll the data directory this often while they wait. */
export const LOCAL_MIN_SEQ_POLL_MS = 2;
/** `minSeq` waits (both kinds of reader) give up after this long unless told otherwise, as a node does. */
export { MIN_SEQ_WAIT_MS_DEFAULT };

assert.ok(ERROR_MESSAGE_CHARS_MAX + ERROR_CODE_CHARS_MAX < ERROR_ANSWER_BYTES_MAX, 'an error answer of the longest code and message is read whole');
assert.ok(RETRY_DELAY_MS_BASE_DEFAULT <= RETRY_DELAY_MS_MAX_DEFAULT);
assert.ok(BUSY_RETRY_DELAY_MS_MIN <= BUSY_RETRY_DELAY_MS_DEFAULT && BUSY_RETRY_DELAY_MS_DEFAULT <= BUSY_RETRY_DELAY_MS_MAX);
// A default wait must hold several of the longest single waits, or a node asking for it would be tried only once more.
assert.ok(BUSY_WAIT_MS_DEFAULT >= 4 * BUSY_RETRY_DELAY_MS_MAX, 'the busy wait spans several of its longest retries');
assert.ok(WATCH_RECONNECT_DELAY_MS_BASE_DEFAULT <= WATCH_RECONNECT_DELAY_MS_MAX_DEFAULT);
assert.ok(ATTEMPTS_MAX_DEFAULT <= ATTEMPTS_MAX_CEILING);
assert.ok(RANGE_PAGE_LIMIT_DEFAULT <= RANGE_LIMIT_MAX, 'a default page must be one a node accepts');
// A healthy but quiet connection must never look dead: two heartbeats fit in the idle time.
assert.ok(WATCH_IDLE_MS_DEFAULT >= 2 * WATCH_HEARTBEAT_INTERVAL_MS, 'watch idle time must exceed two server heartbeats');
// Without a hint the pool must give up a connection before a default Node server (5 s) closes it, with the margin.
assert.ok(KEEP_ALIVE_IDLE_MS_DEFAULT + KEEP_ALIVE_MARGIN_MS <= 5_000, 'idle connections must be retired before a default server closes them');

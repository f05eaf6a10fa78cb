/**
 * The limits a client can see: what a node accepts in one request and returns in one response. They are part of the
 * wire contract (a client that respects them is never refused for size), so they live here, beside the error codes
 * that enforce them; src/limits.ts takes them from here and adds the node's internal limits, and asserts the
 * relations between the two.
 */

const MiB = 1024 * 1024;

/** Keys are 1..1024 bytes (LMDB's own key limit is 1978 bytes; we stay well below it). A watch prefix may be empty. */
export const KEY_BYTES_MIN = 1;
export const KEY_BYTES_MAX = 1024;

/** Default largest value; an operator may raise it up to VALUE_BYTES_CEILING with `--max-value-bytes`. */
export const VALUE_BYTES_MAX_DEFAULT = 1 * MiB;
export const VALUE_BYTES_CEILING = 16 * MiB;

/** Operations in one transaction (each branch). etcd allows 128; we allow far more. */
export const TXN_OPS_MAX = 10_000;
/** Compares in one transaction. */
export const TXN_COMPARES_MAX = 10_000;
/**
 * Keys the range deletes (`deleteRange`, `deletePrefix`, `DELETE /v1/kv?prefix=`) of one transaction may remove
 * together; beyond it the transaction is refused (413 RANGE_DELETE_TOO_LARGE) and nothing of it is applied. A range
 * delete is atomic within its entry, and every node removes its keys in one write transaction on its event loop, so
 * a larger one is deleted in pieces: by narrower ranges, or by a page of keys read first. docs/decisions.md, record 41.
 */
export const RANGE_DELETE_KEYS_MAX = 100_000;
/**
 * Bytes of key records the compares (other than `exists`) of one transaction may read together, each key counted once
 * until an op of the entry writes it; beyond it the transaction is refused (413 COMPARE_READ_TOO_LARGE) and nothing of
 * it is applied. Every compare read a record of up to the value limit, checked whole against its crc, inside the
 * root's write transaction: 10,000 compares of one key holding a 1 MiB value (a 340 KB request) blocked the node's
 * loop 27 s (audit of CPU time, 2026-12-07). At about 2.7 ms a MiB here, 32 MiB is some 90 ms; a transaction may
 * compare the largest value (VALUE_BYTES_CEILING) and still read as many bytes of smaller records.
 */
export const COMPARE_READ_BYTES_MAX = 32 * MiB;

/**
 * Decoded bytes of one member name in any JSON a node or client reads (transactions, token requests, watch messages).
 * The longest field name is 13 bytes (`startEncoding`): a longer name is no field, and is refused at the byte that
 * passes this (400 INVALID_ARGUMENT), before it is gathered (src/api/json-validator.ts).
 */
export const JSON_NAME_BYTES_MAX = 64;

/** Range reads (`GET /v1/kv?prefix=`) return this many items per page unless `limit` says otherwise, at most the max. */
export const RANGE_LIMIT_DEFAULT = 100;
export const RANGE_LIMIT_MAX = 10_000;
/** `GET /v1/log` returns this many entries per call unless `limit` says otherwise, at most the max. */
export const LOG_READ_LIMIT_DEFAULT = 100;
export const LOG_READ_LIMIT_MAX = 1_000;
/**
 * Byte budgets of one response: a range page stops adding items once their keys and values reach
 * RANGE_PAGE_BYTES_MAX bytes (and `more` and `cursor` say where to continue), a `GET /v1/log` page once its entries'
 * records reach LOG_PAGE_BYTES_MAX (and `nextSeq` says where to continue). Each page holds at least one item, so one
 * maximal value or entry is still served; the response's JSON is about 4/3 of the budget (base64) at most, plus a
 * little per item. Nodes may use smaller budgets (`NodeLimits.http`); a client follows the cursor either way.
 */
// 1 MiB each: a page is built and encoded in one event-loop turn; at 4 MiB of 1 MiB values that turn reached 50 ms (the
// /healthz bound of the hostile tests) on an idle machine.
export const RANGE_PAGE_BYTES_MAX = 1 * MiB;
export const LOG_PAGE_BYTES_MAX = 1 * MiB;

/**
 * Largest JSON answer of one `GET /v1/log` page, which a client reads no further: the page's last entry may be the
 * largest an entry can be (ENTRY_BYTES_MAX, 96 MiB, src/limits.ts, which asserts the relation), whose keys and values
 * JSON at most doubles, besides the page budget of smaller entries and the fields around each op.
 */
export const LOG_PAGE_ANSWER_BYTES_MAX = 256 * MiB;
/**
 * JSON values (src/api/json-validator.ts counts them) of one `GET /v1/log` page, which a client parses no further: the
 * entries before the last hold under LOG_PAGE_BYTES_MAX of records, each op at least 4 bytes of one (a delete of a
 * one-byte key), and the last entry at most ENTRY_OPS_MAX ops (src/limits.ts asserts the relation); an op is 6 values
 * and its author run 3 (12 counted, for fields a newer node adds), an entry's own fields 8 (16 counted). A page's
 * bytes alone allow 40 times as many: 256 MiB of `{}` took a client past 5 GB of heap (audit, 2026-12-06).
 */
export const LOG_PAGE_VALUES_MAX = 4_500_000;

/** `minSeq` reads wait at most this long (`timeoutMs`) for the node to apply the requested seq. */
export const MIN_SEQ_WAIT_MS_DEFAULT = 5_000;
export const MIN_SEQ_WAIT_MS_MAX = 60_000;

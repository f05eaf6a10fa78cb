/**
 * The watch protocol: WebSocket on `/v1/watch` of every node (root or replica), one JSON object per text frame.
 *
 * This module is the wire contract shared by the node (src/watch/) and the clients (src/client/, src/cli/): it depends
 * on nothing but `Buffer`. The server's tuning (queues, stall and snapshot times) stays in src/watch/limits.ts.
 *
 * ## Client → server
 *
 * ```
 * {"type":"subscribe","id":ID,"prefixes":["app/","flags/"],"prefixesBase64":["/w=="],"fromSeq":N,"afterHash":H,
 *  "filters":{"puts":true,"deletes":true,"keysOnly":false,"authors":false}}
 * {"type":"unsubscribe","id":ID}
 * ```
 *
 * - `id`: chosen by the client, a string (1..256 characters) or a safe integer, unique among the connection's
 *   subscriptions. Every server message about a subscription carries it.
 * - `prefixes` (UTF-8 text: one with half of a surrogate pair, `"\uD800"`, is refused LONE_SURROGATE, as the HTTP API
 *   refuses it in a body) and/or `prefixesBase64` (any bytes): 1 to 16 prefixes in all
 *   (`WATCH_PREFIXES_PER_SUBSCRIPTION_MAX`), each 0 to 1024 bytes (`KEY_BYTES_MAX`). The empty prefix matches every key. Prefixes that another prefix of the subscription covers
 *   are dropped, so each change is delivered once. The subscriptions of one connection hold at most 32 KiB of prefixes
 *   together (`WATCH_PREFIX_BYTES_PER_CONNECTION_MAX`; one subscription of the most and longest prefixes always fits),
 *   and those of one remote address, and of the node, 1 KiB per connection they may hold
 *   (`WATCH_PREFIX_BYTES_PER_ALLOWED_CONNECTION`).
 * - `fromSeq` (optional, >= 1): the first seq whose changes the client wants; to resume, the seq after the last one
 *   it received (from an events, progress or snapshot message). Absent: from the next entry the node applies. On a
 *   replica, a seq the node has not reached yet is allowed: nothing is sent until it gets there. The root is never
 *   behind a client, so it answers a fromSeq past its head + 1 (a client that followed a chain this root no longer
 *   has: it was restored from a backup) with a snapshot, which resets the client.
 * - `afterHash` (optional, only with a `fromSeq` >= 2): the hash of entry fromSeq - 1, the last one the client applied,
 *   as 64 lowercase hex digits (the `hash` of the message that brought it there). It proves which chain the client
 *   followed: when the node's entry fromSeq - 1 has another hash (a root restored from an older backup, or rebuilt,
 *   whose new chain has since passed the client's seq), the subscription is answered with a snapshot of the current
 *   state (a reset, see below) instead of the entries after fromSeq, which would be applied over a state the node's
 *   chain never had. A node that has not reached fromSeq - 1 yet (a replica behind) checks when it gets there. Absent:
 *   the seq alone is trusted, as before (docs/decisions.md, record 45).
 * - `filters` (optional): `puts` and `deletes` (default true, not both false) select change types; `keysOnly`
 *   (default false) leaves values out; `authors` (default false) adds to each event who wrote it (the audit trail).
 * - Unknown fields are refused, so that a misspelt `fromSeq` cannot silently start a watch at the wrong place.
 *
 * ## Server → client
 *
 * ```
 * {"type":"subscribed","id":ID,"fromSeq":F}
 * {"type":"events","id":ID,"seq":S,"timeMs":T,"hash":H,"events":[EVENT, ...]}
 * {"type":"snapshot","id":ID,"seq":S,"items":[ITEM, ...],"done":false|true,"begin":true,"hash":H}
 *                                               ("begin" on a first page only, "hash" on the done page only)
 * {"type":"progress","id":ID,"seq":S,"hash":H}
 * {"type":"unsubscribed","id":ID}
 * {"type":"error","id":ID,"code":"...","message":"..."}          (id only when the message named one)
 * EVENT: {"type":"put","key":K,"keyEncoding":E,"value":V,"valueEncoding":E,"modSeq":S}   (no value with keysOnly)
 *        with filters.authors, every event also has "author":A (the token name or certificate subject that wrote
 *        it; null for an op whose writer was not recorded: written before authors existed, or without identity)
 *        {"type":"delete","key":K,"keyEncoding":E,"modSeq":S}
 *        {"type":"deleteRange","start":K,"startEncoding":E,"end":K|null,"endEncoding":E|null,"modSeq":S}
 * ITEM:  {"key":K,"keyEncoding":E,"value":V,"valueEncoding":E,"createSeq":N,"modSeq":N,"version":N} (no value w. keysOnly)
 * ```
 *
 * Keys and values are bytes: E is `utf8` when they are valid UTF-8 without control characters other than tab,
 * newline and carriage return (the text is the string itself), and `base64` otherwise: the one rule of bytes.ts, as
 * in the HTTP API (control characters choose base64 because JSON would write each as six characters, and one message
 * holds a whole entry).
 *
 * - `hash` (H): the hash of entry S as 64 lowercase hex digits, where S is the seq the client is at once it has the
 *   message (every events message, the done page of a snapshot, progress): the `afterHash` to resume with. A progress
 *   message leaves it out when the node does not hold entry S (a replica behind a client's `fromSeq`: its S is the
 *   client's own); nodes before decision 45 send none. The hash of a snapshot at seq 0 is 64 zeros.
 * - `subscribed`: the subscription is registered; F is the first seq it covers (`fromSeq`, or the next entry).
 * - `events`: every change of entry S that the subscription selects, in log order, in one message (atomic per
 *   entry); entries that select nothing send nothing. Messages of one subscription have strictly increasing seqs,
 *   with no entry left out. `timeMs` is the root's commit time of the entry. modSeq is S.
 * - A `delete` event is sent for every delete op of a selected key, whether or not the key existed.
 * - `deleteRange`: the log records a range delete as one op (docs/decisions.md, records 4 and 6), and the watch
 *   forwards it as one event, clipped to each of the subscription's prefixes it overlaps: every key k with
 *   start <= k < end (no upper bound when end is null) under that prefix is gone at seq S.
 * - `snapshot`: when `fromSeq` is older than the retained log, the subscription first receives the current state of
 *   its keys at seq S (every key under its prefixes, in key order, in pages), the last page with `done: true` (it
 *   may be empty). It replaces whatever the client held for those prefixes, and the stream continues with the
 *   entries after S. Filters `puts`/`deletes` do not apply to a snapshot (it is state, not changes); `keysOnly` does.
 *   A client that loses the connection before `done` holds part of a state: it resumes with `fromSeq` S + 1 and the
 *   `afterHash` of 64 zeros (`WATCH_HASH_NO_STATE`), which no entry has, and gets a whole new snapshot.
 *   The first page of every snapshot carries `"begin": true` (nodes before decision 40 sent no such field).
 * - A snapshot may also come after events (or after a completed snapshot) on the same connection: a **reset**. The
 *   node sends one when the log a subscription was being served from is gone: trimmed while the subscription lagged
 *   behind a full queue, or replaced on this node by an installed snapshot (a replica that fell behind its upstream's
 *   log, or `mercury resync`), or, on the root, when the client's `fromSeq` lies past the head (docs/decisions.md,
 *   record 40). A reset's seq may be lower than what the client received (the entries above it belonged to a chain
 *   that was abandoned); like any snapshot it replaces what the client held, and the stream continues after it. A
 *   page with `begin` while a snapshot is open starts over: the partial one is to be forgotten.
 * - `progress`: every selected change up to seq S has been sent; resume with `fromSeq` S + 1. Sent within about
 *   `WATCH_PROGRESS_INTERVAL_MS` (src/watch/limits.ts) when the node has applied entries that the subscription was not told about, at
 *   least every `WATCH_HEARTBEAT_INTERVAL_MS` on a connection that was sent nothing, and just before a slow-watcher
 *   close.
 * - `unsubscribed`: nothing more follows for that id; the id may be reused.
 * - `error`: the message was refused (`code` below); the connection and its other subscriptions go on. With code
 *   `DATA_CORRUPTED` and the id of a subscription, the node met damaged data while serving it: that subscription has
 *   ended (resume it on another node); the connection and its other subscriptions go on.
 *
 * ## Close codes
 *
 * | code | when |
 * | --- | --- |
 * | 1001 | the node is shutting down: reconnect (to another node) and resume |
 * | 1002 | a frame broke RFC 6455 (unmasked, an unknown opcode, RSV bits set, a bad close frame or fragment sequence) |
 * | 1003 | a binary frame was sent: the protocol is JSON text |
 * | 1007 | a text frame was not valid UTF-8 |
 * | 1008 | a frame, or a message of fragments, did not arrive in full within `WATCH_FRAME_TIMEOUT_MS` (30 s, src/watch/limits.ts) of its first byte |
 * | 1009 | a message over `WATCH_CLIENT_MESSAGE_BYTES_MAX` |
 * | 1013 | the node holds its budget of incomplete messages and request bodies (`http.bodyBytesInFlightMax`, over all connections): send each message whole, reconnect later |
 * | 1011 | the node failed handling one of the connection's messages (a bug: logged at error level, counted as refused `INTERNAL`); only that connection ends: reconnect and resume |
 * | 4401 | the connection's token was revoked (or its certificate's grant removed): do not reconnect with it |
 * | 4409 | the connection's token was given a grant (its record replaced) that no longer allows the watch: a subscription outside its new scopes, hashes it may no longer see, a new secret or subject: reconnect and resubscribe, checked against it. A grant only widened or renamed closes nothing |
 * | 4408 | nothing arrived from the client, not even a pong to the node's pings, for `WATCH_PEER_SILENT_MS` (30 s): its network vanished. Reconnect and resume as after 4008. A client must answer pings (RFC 6455 section 5.5.2) |
 * | 4008 | slow watcher: the connection's queue stayed full for `WATCH_STALL_MS`, a snapshot took longer than `WATCH_SNAPSHOT_MS_MAX` (src/watch/limits.ts), or the client sent requests without reading the replies. Resume from the seq after the last one received (each subscription was sent a progress message just before the close, unless a snapshot was under way or due for it: it resumes after the last message it received, or starts its snapshot again). |
 */
import { isStandardBase64 } from './bytes.js';
import { KEY_BYTES_MAX } from './limits.js';

const KiB = 1024;

// --- Limits a client can see -------------------------------------------------------------------------------------
// The node takes these through its `WatchLimits` (src/watch/limits.ts), whose production preset uses these values;
// the relations between them and the server's own limits are asserted there.

/**
 * Largest message a client may send (larger: close 1009). A subscribe with the most prefixes, each of the longest key
 * written as JSON-escaped text (6 characters per byte at worst), fits.
 */
export const WATCH_CLIENT_MESSAGE_BYTES_MAX = 128 * KiB;
/** Subscriptions one connection may hold at a time. */
export const WATCH_SUBSCRIPTIONS_PER_CONNECTION_MAX = 64;
/** Prefixes in one subscription. */
export const WATCH_PREFIXES_PER_SUBSCRIPTION_MAX = 16;
/**
 * Bytes of prefixes that the subscriptions of one connection hold together (after dropping prefixes another one of the
 * same subscription covers): two subscriptions of the most and longest prefixes, or 64 of 512 bytes each. Past it a
 * subscribe is refused with TOO_MANY_PREFIXES. Without it the two limits above multiplied: 64 subscriptions of 16
 * prefixes of 1 KiB held about 5 MiB of the node's memory per connection (the prefixes, the selection's key and its
 * index entries), 20 GB for the 4,000 connections one address may open, all for a token with one read scope.
 */
export const WATCH_PREFIX_BYTES_PER_CONNECTION_MAX = 32 * KiB;
/**
 * Bytes of prefixes the subscriptions of one remote address hold together over all its connections, per connection the
 * address may open (`--max-connections-per-address`: 4,000 KiB at its default of 4,000), and those of the whole node, per
 * connection the node may hold (19,236 KiB). Past either a subscribe is refused with TOO_MANY_PREFIXES, whose
 * message names the budget. The per-connection budget alone let one address hold 4,000 connections of 32 KiB of
 * prefixes: about 720 MB of the node's memory with what indexes them. Watchers whose prefixes average 1 KiB or less
 * never meet it.
 */
export const WATCH_PREFIX_BYTES_PER_ALLOWED_CONNECTION = 1 * KiB;
/**
 * What a subscription counts as at least against the three prefix budgets above: its prefixes' bytes, or this many if
 * they are fewer (the empty prefix, short ones). A subscription costs the node about 315 bytes whatever its prefixes
 * (measured: 64 empty-prefix subscriptions per connection on 2,000 connections, 20.1 KB each more than none); counted
 * as its prefixes alone, those of the empty prefix were free, and 64 per connection over 19,236 connections held some
 * 390 MB that no budget saw. At this floor the node's budget holds at most 76,944 subscriptions (4 per allowed
 * connection; 24 MB), one address's 16,000, and a connection's 64 still fit its own budget (docs/decisions.md, record 79).
 */
export const WATCH_SUBSCRIPTION_BYTES_MIN = 256;
/** A client-chosen subscription id that is a string has 1 to this many characters. */
export const WATCH_ID_CHARS_MAX = 256;
/** A connection that was sent nothing for this long gets a progress message anyway: the client's liveness check. */
export const WATCH_HEARTBEAT_INTERVAL_MS = 10_000;
/**
 * A connection from which nothing arrived (no message, no pong) for this long is closed with 4408: its client is gone.
 * The node pings a connection it has heard nothing from for `WATCH_HEARTBEAT_INTERVAL_MS`, so a client that answers
 * pings (RFC 6455 section 5.5.2 says it must; browsers and `ws` do) is never closed for being quiet. Without it, a
 * client whose host vanished (power lost, a firewall dropping, no FIN or RST) was held until the kernel gave up
 * retransmitting the heartbeats, 15 minutes, and forever on a connection with no subscription, where nothing is sent
 * (audit, 2026-12-07; docs/decisions.md, record 83).
 */
export const WATCH_PEER_SILENT_MS = 30_000;
/** An entry hash on the wire (`afterHash`, `hash`): a SHA-256, 32 bytes, as lowercase hex. */
export const WATCH_HASH_HEX_CHARS = 64;
const HASH_HEX = /^[0-9a-f]{64}$/;
/**
 * The `afterHash` of a client that holds no complete state: it was handed part of a snapshot, which told it to replace
 * what it held, and the connection ended before `done`. No entry's hash is 64 zeros (only a snapshot at seq 0 has
 * them, and afterHash names an entry >= 1), so every node answers such a subscribe with a whole snapshot: at once when
 * it holds entry fromSeq - 1 or is past it, when it gets there when it is behind (a replica).
 */
export const WATCH_HASH_NO_STATE = '0'.repeat(WATCH_HASH_HEX_CHARS);

/**
 * Whether a subscribe's error answer is that of a node before record 45, which refuses unknown fields and so
 * `afterHash` (its words: `subscribe has an unknown field "afterHash"; allowed: ...`). A node since then never says so.
 */
export function isAfterHashUnknown(error: { readonly code: string; readonly message: string }): boolean {
  return error.code === 'INVALID_ARGUMENT' && error.message.includes('unknown field "afterHash"');
}

/** Whether `text` is an entry hash as the watch protocol writes it (64 lowercase hex digits). */
export function isWatchHash(text: unknown): text is string {
  return typeof text === 'string' && HASH_HEX.test(text);
}

/** The limits `parseClientMessage` enforces (a node passes its own `WatchLimits`, which has them). */
export interface WatchMessageLimits {
  readonly idCharsMax: number;
  readonly prefixesPerSubscriptionMax: number;
}

export const WATCH_MESSAGE_LIMITS: WatchMessageLimits = Object.freeze({
  idCharsMax: WATCH_ID_CHARS_MAX,
  prefixesPerSubscriptionMax: WATCH_PREFIXES_PER_SUBSCRIPTION_MAX,
});

/** The WebSocket path. */
export const WATCH_PATH = '/v1/watch';

/** Error codes of refused client messages: stable, part of the API. */
export const WatchErrorCode = {
  /** The frame is not JSON. */
  INVALID_JSON: 'INVALID_JSON',
  /** `type` is missing or not one of subscribe / unsubscribe. */
  UNKNOWN_MESSAGE_TYPE: 'UNKNOWN_MESSAGE_TYPE',
  /** A field is missing, unknown, or breaks a rule (the message names it). */
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  /**
   * A text prefix holds a `\uD800`..`\uDFFF` escape without the other half of its pair: it encodes no character (the
   * HTTP API's code for the same thing in a body).
   */
  LONE_SURROGATE: 'LONE_SURROGATE',
  /** A prefix is longer than a key can be. */
  PREFIX_TOO_LARGE: 'PREFIX_TOO_LARGE',
  /** More than 16 prefixes in one subscription, or more prefix bytes than the connection may hold with it. */
  TOO_MANY_PREFIXES: 'TOO_MANY_PREFIXES',
  TOO_MANY_SUBSCRIPTIONS: 'TOO_MANY_SUBSCRIPTIONS',
  /** `subscribe` with an id that names a live subscription of this connection. */
  DUPLICATE_ID: 'DUPLICATE_ID',
  /** `unsubscribe` with an id that names no subscription of this connection. */
  UNKNOWN_ID: 'UNKNOWN_ID',
  /** The connection's token lacks read scope on a prefix (the message names it and the prefixes it may read). */
  PERMISSION_DENIED: 'PERMISSION_DENIED',
  /** Not a refusal: the node met damaged data serving this subscription, which has ended. */
  DATA_CORRUPTED: 'DATA_CORRUPTED',
} as const;
export type WatchErrorCode = (typeof WatchErrorCode)[keyof typeof WatchErrorCode];

/** WebSocket close codes the server uses (1007, 1008 and 1009 by its WebSocket end, src/watch/websocket.ts). */
export const WatchCloseCode = {
  GOING_AWAY: 1001,
  UNSUPPORTED_DATA: 1003,
  INVALID_PAYLOAD: 1007,
  /** A frame or message did not arrive in full within its deadline (see the table above). */
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  /** The node failed handling the connection's message (a bug, logged at error level); the node goes on. */
  INTERNAL_ERROR: 1011,
  /** The node holds its budget of incomplete messages and request bodies: reconnect later. */
  TRY_AGAIN_LATER: 1013,
  SLOW_WATCHER: 4008,
  /** The connection's token was revoked (or its certificate's grant removed): do not reconnect with it. */
  CREDENTIAL_REVOKED: 4401,
  /**
   * The connection's token (or grant) was given another record that no longer allows the connection's subscriptions
   * (narrower scopes, a new secret or subject): reconnect, and every subscription is checked again. A record that still
   * allows them (wider scopes, another name) leaves the connection open (decision 57).
   */
  CREDENTIAL_CHANGED: 4409,
  /** Nothing, not even a pong, arrived from the client for `WATCH_PEER_SILENT_MS`: its network is gone. */
  PEER_SILENT: 4408,
} as const;
export type WatchCloseCode = (typeof WatchCloseCode)[keyof typeof WatchCloseCode];

/** A client message the server refuses; the connection stays open. */
export class WatchProtocolError extends Error {
  readonly code: WatchErrorCode;
  /** The subscription id as JSON text, when the refused message named a valid one. */
  readonly idJson: string | undefined;

  constructor(code: WatchErrorCode, message: string, idJson?: string) {
    super(message);
    this.name = 'WatchProtocolError';
    this.code = code;
    this.idJson = idJson;
  }
}

export type SubscriptionId = string | number;

export interface WatchFilters {
  readonly puts: boolean;
  readonly deletes: boolean;
  readonly keysOnly: boolean;
  /** Events carry the author of their op. */
  readonly authors: boolean;
}

export const DEFAULT_FILTERS: WatchFilters = Object.freeze({ puts: true, deletes: true, keysOnly: false, authors: false });

export type ClientMessage =
  | {
      readonly type: 'subscribe';
      readonly id: SubscriptionId;
      readonly idJson: string;
      readonly prefixes: readonly Buffer[];
      readonly fromSeq: number | undefined;
      /** The hash of entry fromSeq - 1 the client applied (only with fromSeq >= 2). */
      readonly afterHash: Buffer | undefined;
      readonly filters: WatchFilters;
      /**
       * False: the node leaves entry hashes out of this subscription's messages. Set by the node for a token that may
       * not see the hash chain (src/auth seesChain), never read from the client.
       */
      readonly hashes?: boolean;
    }
  | { readonly type: 'unsubscribe'; readonly id: SubscriptionId; readonly idJson: string };

/** Half of a UTF-16 surrogate pair without the other half: with the u flag a whole pair is one code point, not matched. */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

const SUBSCRIBE_FIELDS = new Set(['type', 'id', 'prefixes', 'prefixesBase64', 'fromSeq', 'afterHash', 'filters']);
const UNSUBSCRIBE_FIELDS = new Set(['type', 'id']);
const FILTER_FIELDS = new Set(['puts', 'deletes', 'keysOnly', 'authors']);

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Characters of a peer's string that an error message quotes; the rest is cut. */
const QUOTED_CHARS_MAX = 64;

/**
 * A value of a peer's JSON as an error message shows it: a string quoted (its first QUOTED_CHARS_MAX characters), a
 * number, boolean or null as JSON writes it, an array or an object by its kind, and undefined as "missing". Never
 * recursive: `JSON.parse` is iterative and builds a structure as deep as the text nests, and `JSON.stringify` of a
 * `type` that was an array nested 20,000 deep (a 40 KB message) overflowed the stack; the RangeError escaped the
 * socket's data handler and ended the node (audit of 2026-12-06). Both sides' parsers describe what they refuse with it.
 */
function describeJsonValue(value: unknown): string {
  if (value === undefined) return 'missing';
  if (typeof value === 'string')
    return value.length <= QUOTED_CHARS_MAX ? JSON.stringify(value) : `${JSON.stringify(value.slice(0, QUOTED_CHARS_MAX))}... (${value.length} characters)`;
  if (Array.isArray(value)) return `an array of ${value.length} items`;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return value === null ? 'null' : 'an object';
}

function checkFields(object: Record<string, unknown>, allowed: ReadonlySet<string>, what: string, idJson?: string): void {
  for (const field of Object.keys(object))
    if (!allowed.has(field))
      throw new WatchProtocolError('INVALID_ARGUMENT', `${what} has an unknown field ${describeJsonValue(field)}; allowed: ${Array.from(allowed).join(', ')}`, idJson);
}

function readId(message: Record<string, unknown>, limits: WatchMessageLimits): { id: SubscriptionId; idJson: string } {
  const id = message.id;
  if (typeof id === 'string' && id.length >= 1 && id.length <= limits.idCharsMax) return { id, idJson: JSON.stringify(id) };
  if (typeof id === 'number' && Number.isSafeInteger(id)) return { id, idJson: String(id) };
  throw new WatchProtocolError('INVALID_ARGUMENT', `"id" must be a string of 1 to ${limits.idCharsMax} characters or a safe integer`);
}

function readPrefixes(message: Record<string, unknown>, limits: WatchMessageLimits, idJson: string): Buffer[] {
  const prefixes: Buffer[] = [];
  const readList = (field: 'prefixes' | 'prefixesBase64'): void => {
    const list = message[field];
    if (list === undefined) return;
    if (!Array.isArray(list)) throw new WatchProtocolError('INVALID_ARGUMENT', `"${field}" must be an array of strings`, idJson);
    for (const [index, item] of (list as unknown[]).entries()) {
      if (typeof item !== 'string') throw new WatchProtocolError('INVALID_ARGUMENT', `${field}[${index}] must be a string`, idJson);
      if (field === 'prefixesBase64' && !isStandardBase64(item))
        throw new WatchProtocolError('INVALID_ARGUMENT', `prefixesBase64[${index}] must be standard base64`, idJson);
      // UTF-8 has no encoding for it: Buffer.from would watch the bytes EF BF BD (U+FFFD), which the client never sent.
      if (field === 'prefixes' && LONE_SURROGATE.test(item))
        throw new WatchProtocolError(
          'LONE_SURROGATE',
          `prefixes[${index}] holds half of a UTF-16 surrogate pair (a \\u escape of D800..DFFF) without the other half: it encodes no character; send such bytes in prefixesBase64`,
          idJson,
        );
      const prefix = Buffer.from(item, field === 'prefixes' ? 'utf8' : 'base64');
      if (prefix.length > KEY_BYTES_MAX)
        throw new WatchProtocolError('PREFIX_TOO_LARGE', `${field}[${index}] is ${prefix.length} bytes; a prefix is at most ${KEY_BYTES_MAX} bytes (a key's limit)`, idJson);
      prefixes.push(prefix);
    }
  };
  readList('prefixes');
  readList('prefixesBase64');
  if (prefixes.length === 0)
    throw new WatchProtocolError('INVALID_ARGUMENT', 'subscribe needs at least one prefix in "prefixes" (or "prefixesBase64"); the empty prefix "" watches every key', idJson);
  if (prefixes.length > limits.prefixesPerSubscriptionMax)
    throw new WatchProtocolError('TOO_MANY_PREFIXES', `${prefixes.length} prefixes; a subscription has at most ${limits.prefixesPerSubscriptionMax}`, idJson);
  return prefixes;
}

function readFilters(message: Record<string, unknown>, idJson: string): WatchFilters {
  const filters = message.filters;
  if (filters === undefined) return DEFAULT_FILTERS;
  if (!isObject(filters)) throw new WatchProtocolError('INVALID_ARGUMENT', '"filters" must be an object', idJson);
  checkFields(filters, FILTER_FIELDS, '"filters"', idJson);
  const flag = (name: keyof WatchFilters): boolean => {
    const value = filters[name];
    if (value === undefined) return DEFAULT_FILTERS[name];
    if (typeof value !== 'boolean') throw new WatchProtocolError('INVALID_ARGUMENT', `filters.${name} must be true or false`, idJson);
    return value;
  };
  const result = { puts: flag('puts'), deletes: flag('deletes'), keysOnly: flag('keysOnly'), authors: flag('authors') };
  if (!result.puts && !result.deletes)
    throw new WatchProtocolError('INVALID_ARGUMENT', 'filters.puts and filters.deletes are both false: the subscription would select nothing', idJson);
  return result;
}

function readAfterHash(afterHash: unknown, fromSeq: number | undefined, idJson: string): Buffer | undefined {
  if (afterHash === undefined) return undefined;
  if (!isWatchHash(afterHash))
    throw new WatchProtocolError('INVALID_ARGUMENT', `"afterHash" must be the hash of entry fromSeq - 1 as ${WATCH_HASH_HEX_CHARS} lowercase hex digits`, idJson);
  if (fromSeq === undefined || fromSeq < 2)
    throw new WatchProtocolError('INVALID_ARGUMENT', '"afterHash" is the hash of entry fromSeq - 1, so it needs a "fromSeq" >= 2', idJson);
  return Buffer.from(afterHash, 'hex');
}

/** Parses and validates one client text frame; throws WatchProtocolError for anything the protocol does not allow. */
export function parseClientMessage(text: string, limits: WatchMessageLimits): ClientMessage {
  let message: unknown;
  try {
    message = JSON.parse(text);
  } catch (error) {
    throw new WatchProtocolError('INVALID_JSON', `message is not JSON: ${(error as Error).message}`);
  }
  if (!isObject(message)) throw new WatchProtocolError('INVALID_ARGUMENT', 'a message must be a JSON object with a "type"');
  const type = message.type;
  if (type === 'subscribe') {
    const { id, idJson } = readId(message, limits);
    checkFields(message, SUBSCRIBE_FIELDS, 'subscribe', idJson);
    const prefixes = readPrefixes(message, limits, idJson);
    const fromSeq = message.fromSeq;
    if (fromSeq !== undefined && (typeof fromSeq !== 'number' || !Number.isSafeInteger(fromSeq) || fromSeq < 1))
      throw new WatchProtocolError('INVALID_ARGUMENT', '"fromSeq" must be an integer >= 1 (omit it to start from the next entry)', idJson);
    const afterHash = readAfterHash(message.afterHash, fromSeq, idJson);
    return { type, id, idJson, prefixes, fromSeq, afterHash, filters: readFilters(message, idJson) };
  }
  if (type === 'unsubscribe') {
    const { id, idJson } = readId(message, limits);
    checkFields(message, UNSUBSCRIBE_FIELDS, 'unsubscribe', idJson);
    return { type, id, idJson };
  }
  throw new WatchProtocolError('UNKNOWN_MESSAGE_TYPE', `unknown message type ${describeJsonValue(type)}; a client sends "subscribe" or "unsubscribe"`);
}

// --- Server messages ----------------------------------------------------------------------------------------------

export function subscribedMessage(idJson: string, fromSeq: number): string {
  return `{"type":"subscribed","id":${idJson},"fromSeq":${fromSeq}}`;
}

export function unsubscribedMessage(idJson: string): string {
  return `{"type":"unsubscribed","id":${idJson}}`;
}

/** `hashHex`: the hash of entry `seq`, left out when the node does not hold that entry. */
export function progressMessage(idJson: string, seq: number, hashHex: string | undefined): string {
  return `{"type":"progress","id":${idJson},"seq":${seq}${hashField(hashHex)}}`;
}

function hashField(hashHex: string | undefined): string {
  return hashHex === undefined ? '' : `,"hash":"${hashHex}"`;
}

export function errorMessage(code: WatchErrorCode, message: string, idJson?: string): string {
  return `{"type":"error",${idJson === undefined ? '' : `"id":${idJson},`}"code":"${code}","message":${JSON.stringify(message)}}`;
}

/** The part of an events message that precedes its shared body (see `eventsBody`). */
export function eventsHead(idJson: string): string {
  return `{"type":"events","id":${idJson}`;
}

/** The part of an events message that is the same for every subscription of one selection. */
export function eventsBody(seq: number, timeMs: number, hashHex: string | undefined, events: readonly string[]): string {
  return `,"seq":${seq},"timeMs":${timeMs}${hashField(hashHex)},"events":[${events.join(',')}]}`;
}

/**
 * A snapshot page; `begin` marks the first page of a snapshot (see "snapshot" and resets above). `hashHex`, the hash of
 * entry `seq`, goes on the done page only.
 */
export function snapshotMessage(idJson: string, seq: number, items: readonly string[], done: boolean, begin: boolean, hashHex: string | undefined): string {
  return `{"type":"snapshot","id":${idJson},"seq":${seq},"items":[${items.join(',')}],"done":${done}${begin ? ',"begin":true' : ''}${done ? hashField(hashHex) : ''}}`;
}

/** Reason text of a 4008 close; a close reason is at most 123 bytes. */
export function slowWatcherReason(resumeSeq: number | undefined): string {
  return resumeSeq === undefined ? 'slow watcher: resume each subscription after its last progress seq' : `slow watcher: resume from seq ${resumeSeq}`;
}


// --- Client messages (client side) --------------------------------------------------------------------------------

/** A subscribe as a client sends it: prefixes as text or bytes (bytes go in `prefixesBase64`). */
export interface SubscribeRequest {
  readonly id: SubscriptionId;
  readonly prefixes: readonly (string | Buffer)[];
  readonly fromSeq?: number | undefined;
  /** The hash of entry fromSeq - 1 (hex), as the node sent it: sent only with a fromSeq >= 2. */
  readonly afterHash?: string | undefined;
  readonly filters?: Partial<WatchFilters> | undefined;
}

/** Encodes a subscribe message (the inverse of `parseClientMessage` for valid requests). */
export function subscribeMessage(request: SubscribeRequest): string {
  const text = request.prefixes.filter((prefix): prefix is string => typeof prefix === 'string');
  const binary = request.prefixes.filter((prefix): prefix is Buffer => typeof prefix !== 'string').map((prefix) => prefix.toString('base64'));
  return JSON.stringify({
    type: 'subscribe',
    id: request.id,
    ...(text.length > 0 ? { prefixes: text } : {}),
    ...(binary.length > 0 ? { prefixesBase64: binary } : {}),
    ...(request.fromSeq === undefined ? {} : { fromSeq: request.fromSeq }),
    ...(request.afterHash === undefined || request.fromSeq === undefined || request.fromSeq < 2 ? {} : { afterHash: request.afterHash }),
    ...(request.filters === undefined ? {} : { filters: request.filters }),
  });
}

// --- Server messages (client side) --------------------------------------------------------------------------------

/**
 * Largest message a client accepts from a node (larger: the client closes with 1009). A node sends one entry per
 * events message: an entry is at most ENTRY_BYTES_MAX (96 MiB) of keys and values, which JSON text at most doubles
 * (`"` and `\` are escaped as two characters; control characters choose base64, 4/3), plus about a hundred bytes of
 * fields around each of at most ENTRY_OPS_MAX events; a snapshot page is far smaller. 256 MiB holds that while
 * bounding what one message can make a client allocate (src/watch/limits.ts asserts the relation). The exception is a
 * range delete clipped to many long prefixes of one subscription, which repeats its bounds once per prefix.
 */
export const WATCH_SERVER_MESSAGE_BYTES_MAX = 256 * 1024 * 1024;

/**
 * Most events one events message holds per prefix of its subscription: an entry holds at most ENTRY_OPS_MAX (100,000)
 * ops (src/limits.ts asserts the relation), and each op gives at most one event per prefix (a put or a delete falls
 * under one of a subscription's prefixes, which never cover one another; a range delete is clipped to each prefix it
 * overlaps). A client refuses a message with more before decoding its events: each costs it far more decoded than its
 * few bytes of JSON, and 200 MiB of tiny events took about 2.9 GB to decode and queue.
 */
export const WATCH_EVENTS_PER_PREFIX_MAX = 100_000;

/**
 * Most items one snapshot message holds: a node fills a page to 256 KiB of keys and values (WATCH_SNAPSHOT_PAGE_BYTES
 * in src/watch/limits.ts, which asserts the relation), at least one byte each, plus the item that crosses the bound.
 */
export const WATCH_SNAPSHOT_ITEMS_MAX = 256 * 1024 + 1;

/**
 * One change of an events message, with its keys and values decoded. `author` is present with the `authors` filter
 * (null where the writer was not recorded).
 */
export type WatchChange = (
  /** `value` is undefined with `keysOnly`. */
  | { readonly type: 'put'; readonly key: Buffer; readonly value: Buffer | undefined; readonly modSeq: number }
  | { readonly type: 'delete'; readonly key: Buffer; readonly modSeq: number }
  /** Every key k with start <= k < end (no upper bound when end is null), within a watched prefix, is gone. */
  | { readonly type: 'deleteRange'; readonly start: Buffer; readonly end: Buffer | null; readonly modSeq: number }
) & { readonly author?: string | null };

/** One key of a snapshot page (`value` is undefined with `keysOnly`). */
export interface WatchSnapshotItem {
  readonly key: Buffer;
  readonly value: Buffer | undefined;
  readonly createSeq: number;
  readonly modSeq: number;
  readonly version: number;
}

/**
 * A server message, validated and with its bytes decoded (`parseServerMessage`). `hash`: the hash of entry `seq` as
 * hex, where the node sent one (see "hash" above).
 */
export type ServerMessage =
  | { readonly type: 'subscribed'; readonly id: SubscriptionId; readonly fromSeq: number }
  | {
      readonly type: 'events';
      readonly id: SubscriptionId;
      readonly seq: number;
      readonly timeMs: number;
      readonly events: readonly WatchChange[];
      readonly hash?: string;
    }
  /** `begin`: the first page of a snapshot (absent from a node that does not mark first pages, and on later pages). */
  | {
      readonly type: 'snapshot';
      readonly id: SubscriptionId;
      readonly seq: number;
      readonly items: readonly WatchSnapshotItem[];
      readonly done: boolean;
      readonly begin?: boolean;
      readonly hash?: string;
    }
  | { readonly type: 'progress'; readonly id: SubscriptionId; readonly seq: number; readonly hash?: string }
  | { readonly type: 'unsubscribed'; readonly id: SubscriptionId }
  /** `code` is a `WatchErrorCode`, or a code a newer node added. */
  | { readonly type: 'error'; readonly id: SubscriptionId | undefined; readonly code: string; readonly message: string };

/** A node sent something the protocol does not allow (the message says what and where). */
export class WatchServerMessageError extends Error {
  readonly code = 'PROTOCOL';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WatchServerMessageError';
  }
}

function invalid(path: string, rule: string): never {
  throw new WatchServerMessageError(`${path} ${rule}`);
}

function field(object: Record<string, unknown>, name: string, path: string): unknown {
  const value = object[name];
  if (value === undefined) invalid(`${path}.${name}`, 'is missing');
  return value;
}

function seqField(object: Record<string, unknown>, name: string, path: string, min: number): number {
  const value = field(object, name, path);
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) invalid(`${path}.${name}`, `must be an integer >= ${min}`);
  return value;
}

function stringField(object: Record<string, unknown>, name: string, path: string): string {
  const value = field(object, name, path);
  if (typeof value !== 'string') invalid(`${path}.${name}`, 'must be a string');
  return value;
}

/** `{ hash }` when the message has a valid one, `{}` when it has none. */
function hashOf(object: Record<string, unknown>, path: string): { hash?: string } {
  const hash = object.hash;
  if (hash === undefined) return {};
  if (!isWatchHash(hash)) invalid(`${path}.hash`, `must be ${WATCH_HASH_HEX_CHARS} lowercase hex digits`);
  return { hash };
}

function idField(object: Record<string, unknown>, path: string): SubscriptionId {
  const id = field(object, 'id', path);
  if ((typeof id === 'string' && id.length >= 1) || (typeof id === 'number' && Number.isSafeInteger(id))) return id;
  return invalid(`${path}.id`, 'must be a non-empty string or a safe integer');
}

function arrayField(object: Record<string, unknown>, name: string, path: string): unknown[] {
  const value = field(object, name, path);
  if (!Array.isArray(value)) invalid(`${path}.${name}`, 'must be an array');
  return value as unknown[];
}

/** Bytes `name` with `nameEncoding` (see "Keys and values are bytes" above); undefined when absent and optional. */
function bytesField(object: Record<string, unknown>, name: string, path: string, optional: boolean): Buffer | undefined {
  const text = object[name];
  if (text === undefined && optional) return undefined;
  if (typeof text !== 'string') return invalid(`${path}.${name}`, 'must be a string');
  const encoding = object[`${name}Encoding`];
  if (encoding === 'utf8') return Buffer.from(text, 'utf8');
  if (encoding === 'base64') {
    if (!isStandardBase64(text)) invalid(`${path}.${name}`, 'must be standard base64 (its encoding says base64)');
    return Buffer.from(text, 'base64');
  }
  return invalid(`${path}.${name}Encoding`, 'must be "utf8" or "base64"');
}

function decodeChange(value: unknown, path: string): WatchChange {
  if (!isObject(value)) invalid(path, 'must be an object');
  const modSeq = seqField(value, 'modSeq', path, 1);
  let author: { author: string | null } | undefined;
  if (value.author !== undefined) {
    if (value.author !== null && typeof value.author !== 'string') invalid(`${path}.author`, 'must be a string or null');
    author = { author: value.author };
  }
  switch (value.type) {
    case 'put':
      return { type: 'put', key: bytesField(value, 'key', path, false)!, value: bytesField(value, 'value', path, true), modSeq, ...author };
    case 'delete':
      return { type: 'delete', key: bytesField(value, 'key', path, false)!, modSeq, ...author };
    case 'deleteRange': {
      const end = field(value, 'end', path) === null ? null : bytesField(value, 'end', path, false)!;
      if (end === null && value.endEncoding !== null) invalid(`${path}.endEncoding`, 'must be null when end is null');
      return { type: 'deleteRange', start: bytesField(value, 'start', path, false)!, end, modSeq, ...author };
    }
    default:
      return invalid(`${path}.type`, `is ${describeJsonValue(value.type)}; an event is "put", "delete" or "deleteRange"`);
  }
}

function decodeItem(value: unknown, path: string): WatchSnapshotItem {
  if (!isObject(value)) invalid(path, 'must be an object');
  return {
    key: bytesField(value, 'key', path, false)!,
    value: bytesField(value, 'value', path, true),
    createSeq: seqField(value, 'createSeq', path, 1),
    modSeq: seqField(value, 'modSeq', path, 1),
    version: seqField(value, 'version', path, 1),
  };
}

/**
 * Parses and validates one server text frame (the client's decoder; the inverse of the encoders above). Throws
 * `WatchServerMessageError` naming the field and the rule for anything the protocol does not allow, refuses a
 * message over `bytesMax` before parsing it, and an events message of more than `eventsMax` events (for a subscription
 * of N prefixes, N * WATCH_EVENTS_PER_PREFIX_MAX) before decoding them. Fields it does not know are ignored, so that a
 * node may add some.
 */
export function parseServerMessage(
  text: string,
  bytesMax: number = WATCH_SERVER_MESSAGE_BYTES_MAX,
  eventsMax: number = WATCH_EVENTS_PER_PREFIX_MAX * WATCH_PREFIXES_PER_SUBSCRIPTION_MAX,
): ServerMessage {
  // A string's UTF-8 length is at most 3 bytes per UTF-16 unit: measure exactly only when that bound is over.
  if (text.length * 3 > bytesMax && Buffer.byteLength(text, 'utf8') > bytesMax)
    throw new WatchServerMessageError(`message of ${Buffer.byteLength(text, 'utf8')} bytes; at most ${bytesMax} bytes are accepted`);
  let message: unknown;
  try {
    message = JSON.parse(text);
  } catch (error) {
    throw new WatchServerMessageError(`message is not JSON: ${(error as Error).message}`, { cause: error });
  }
  if (!isObject(message)) return invalid('message', 'must be a JSON object with a "type"');
  const path = typeof message.type === 'string' ? message.type : 'message';
  switch (message.type) {
    case 'subscribed':
      return { type: 'subscribed', id: idField(message, path), fromSeq: seqField(message, 'fromSeq', path, 1) };
    case 'events': {
      const seq = seqField(message, 'seq', path, 1);
      const list = arrayField(message, 'events', path);
      if (list.length > eventsMax) invalid(`${path}.events`, `holds ${list.length} events; one entry gives a subscription of its prefixes at most ${eventsMax}`);
      const events = list.map((event, i) => decodeChange(event, `${path}.events[${i}]`));
      return { type: 'events', id: idField(message, path), seq, timeMs: seqField(message, 'timeMs', path, 0), events, ...hashOf(message, path) };
    }
    case 'snapshot': {
      const done = field(message, 'done', path);
      if (typeof done !== 'boolean') invalid(`${path}.done`, 'must be true or false');
      const begin = message.begin;
      if (begin !== undefined && typeof begin !== 'boolean') invalid(`${path}.begin`, 'must be true or false');
      const items = arrayField(message, 'items', path).map((item, i) => decodeItem(item, `${path}.items[${i}]`));
      return { type: 'snapshot', id: idField(message, path), seq: seqField(message, 'seq', path, 0), items, done, ...(begin === true ? { begin } : {}), ...hashOf(message, path) };
    }
    case 'progress':
      return { type: 'progress', id: idField(message, path), seq: seqField(message, 'seq', path, 0), ...hashOf(message, path) };
    case 'unsubscribed':
      return { type: 'unsubscribed', id: idField(message, path) };
    case 'error':
      return {
        type: 'error',
        id: message.id === undefined ? undefined : idField(message, path),
        code: stringField(message, 'code', path),
        message: stringField(message, 'message', path),
      };
    default:
      return invalid('message.type', `is ${describeJsonValue(message.type)}; a node sends subscribed, events, snapshot, progress, unsubscribed or error`);
  }
}

// --- Resuming -----------------------------------------------------------------------------------------------------

/**
 * Where a subscription resumes, the one rule for every client: `nextSeq`, the `fromSeq` of the next subscribe, is the
 * first seq not yet covered. It is the `fromSeq` the subscription asked for (or, when it asked for none, the one
 * `subscribed` confirms), then S + 1 after each events message of seq S, each progress message of seq S, and the
 * first and last (`done`) pages of a snapshot at seq S. Progress during a snapshot is ignored (the snapshot's done
 * page moves the cursor); progress at the last seq received (a heartbeat) leaves the cursor where it is.
 *
 * A snapshot that begins after events or a completed snapshot is a reset (see "snapshot" above): it is accepted at
 * any seq, even below the last one covered, since it replaces the client's state; its first page moves the cursor to
 * its seq + 1, back or forward.
 *
 * Beside `nextSeq` it keeps `afterHash`, the hash of entry nextSeq - 1 (the `afterHash` of the next subscribe), from
 * the `hash` of the message that moved the cursor: unknown (undefined) when that message had none, and unchanged by a
 * progress message at the last seq covered that has none (a replica behind the client does not hold that entry).
 *
 * A snapshot's first page tells the consumer to replace its state, so until the done page the consumer holds part of
 * one: `afterHash` is then `WATCH_HASH_NO_STATE`, which no node's entry matches. A connection that ends before done
 * resumes from S + 1 with it and receives a whole new snapshot from any node, a replica behind the old seq included,
 * which would otherwise wait to reach the seq the client had before a reset, holding the consumer on a part of a state
 * (docs/decisions.md, record 40). Resuming from the `fromSeq` of before would also have a node whose log still holds
 * it send entries over that part.
 *
 * A node before record 45 refuses `afterHash` as an unknown field (`isAfterHashUnknown`), whatever its value: the
 * client then subscribes again without it (`dropHash`), as a client before record 45 would have, by seq alone and, cut
 * off in a snapshot, from the `nextSeq` it had before that snapshot began (such a node sends it a whole snapshot again
 * where it sent this one).
 *
 * It also holds a node to the ordering rules of one connection (`reset` starts a new one), and throws
 * `WatchServerMessageError` for a message that breaks them, which would make a client skip or repeat entries:
 * `subscribed` first and once, with the `fromSeq` asked for; no events inside a snapshot, one seq for every page of a
 * snapshot (unless a page with `begin` starts it over); no seq below `nextSeq` (events) or below the last seq covered
 * (progress).
 */
export class WatchResumeCursor {
  private next: number | undefined;
  private hash: string | undefined;
  private snapshotOpen = false;
  /** On the current connection: `subscribed` arrived; the open snapshot's seq. */
  private subscribed = false;
  private snapshotSeq = 0;
  /** `next` when the snapshot that left `hash` at WATCH_HASH_NO_STATE began: the resume of a client before record 45. */
  private seqBeforeSnapshot: number | undefined;

  /** `afterHash`: the hash of entry fromSeq - 1, when the caller knows it. */
  constructor(fromSeq: number | undefined, afterHash?: string) {
    this.next = fromSeq;
    this.hash = fromSeq === undefined ? undefined : afterHash;
  }

  /** The `fromSeq` for the next subscribe (undefined: from the node's next entry; only before the first subscribed). */
  get nextSeq(): number | undefined {
    return this.next;
  }

  /** The hash of entry nextSeq - 1 (hex), when known: the `afterHash` for the next subscribe. */
  get afterHash(): string | undefined {
    return this.next === undefined || this.next < 2 ? undefined : this.hash;
  }

  /**
   * The node does not know `afterHash` (a node before record 45: `isAfterHashUnknown`): the next subscribe goes without
   * it, from the seq a client before record 45 would have asked for (the one before a snapshot cut off before done).
   */
  dropHash(): void {
    if (this.hash === WATCH_HASH_NO_STATE && this.seqBeforeSnapshot !== undefined) this.next = this.seqBeforeSnapshot;
    this.hash = undefined;
  }

  /** True between the first page of a snapshot and its done page. */
  get inSnapshot(): boolean {
    return this.snapshotOpen;
  }

  /** A new connection begins: a snapshot in progress on the old one is abandoned. */
  reset(): void {
    this.snapshotOpen = false;
    this.subscribed = false;
  }

  /** Whether `message` is the first page of a snapshot (marked `begin`, or any page while no snapshot is open). */
  startsSnapshot(message: ServerMessage): boolean {
    return message.type === 'snapshot' && (message.begin === true || !this.snapshotOpen);
  }

  /**
   * Moves the cursor past `message`; false when the message must not be delivered (progress inside a snapshot).
   * Throws `WatchServerMessageError` for a message that breaks the ordering rules above.
   */
  accept(message: ServerMessage): boolean {
    if (message.type === 'error' || message.type === 'unsubscribed') return true;
    if (message.type === 'subscribed') {
      if (this.subscribed) invalid('subscribed', 'came twice on one connection');
      if (this.next !== undefined && message.fromSeq !== this.next)
        invalid('subscribed.fromSeq', `is ${message.fromSeq}; the subscription asked for ${this.next}, so entries would be ${message.fromSeq > this.next ? 'skipped' : 'repeated'}`);
      this.subscribed = true;
      this.next ??= message.fromSeq;
      return true;
    }
    if (!this.subscribed || this.next === undefined) return invalid(message.type, 'came before "subscribed"');
    const covered = this.next - 1;
    switch (message.type) {
      case 'events':
        if (this.snapshotOpen) invalid('events', 'came inside a snapshot (before its done page)');
        if (message.seq <= covered) invalid('events.seq', `is ${message.seq}; everything up to ${covered} was received, so seqs would go back`);
        this.next = message.seq + 1;
        this.hash = message.hash;
        return true;
      case 'snapshot':
        // A snapshot replaces the client's state, so its first page may be at any seq (a reset: record 40).
        if (!this.startsSnapshot(message) && message.seq !== this.snapshotSeq)
          invalid('snapshot.seq', `is ${message.seq}; the pages before it were at ${this.snapshotSeq}`);
        // A snapshot that starts over one cut off (or one open) keeps the seq of the last whole state.
        if (this.startsSnapshot(message) && this.hash !== WATCH_HASH_NO_STATE) this.seqBeforeSnapshot = this.next;
        this.snapshotOpen = !message.done;
        this.snapshotSeq = message.seq;
        this.next = message.seq + 1;
        this.hash = message.done ? message.hash : WATCH_HASH_NO_STATE;
        return true;
      case 'progress':
        if (this.snapshotOpen) return false;
        if (message.seq < covered) invalid('progress.seq', `is ${message.seq}; everything up to ${covered} was received, so seqs would go back`);
        if (message.hash !== undefined || message.seq > covered) this.hash = message.hash;
        this.next = message.seq + 1;
        return true;
      default:
        return true;
    }
  }
}

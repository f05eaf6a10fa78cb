/**
 * The shapes of a node's JSON answers (README.md, HTTP API), checked before the client hands anything on: a proxy's
 * page, a broken node or a hostile one must end a call with `InvalidAnswerError` (`PROTOCOL`), naming the field and
 * the rule, never with a raw SyntaxError or TypeError, a NaN seq, bytes decoded with an encoding the API does not
 * have, or a page that ends a range early. Each reader returns a fresh object of the fields the client knows (a
 * node may add fields; they are left out), and throws `AnswerFault`, which `NodeClient` turns into the typed error.
 * Also the paging rules: a range cursor and a log page's `nextSeq` must move forward, or a walk would never end.
 */
import { decodeJsonBytes, JsonValidator, KEY_BYTES_MAX, MercuryError, parseValidatedJson } from '../api/index.js';
import { ANSWER_DEPTH_MAX, ANSWER_NAME_BYTES_MAX, ANSWER_UNCHECKED_BYTES_MAX } from './limits.js';

/** An answer broke the rule the message names. */
export class AnswerFault extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AnswerFault';
  }
}

function fault(path: string, rule: string): never {
  throw new AnswerFault(`${path} ${rule}`);
}

type Json = Record<string, unknown>;

/** Codes of the JSON validator that mean the body is not JSON at all (reported as a SyntaxError, as JSON.parse does). */
const NOT_JSON_CODES: ReadonlySet<string> = new Set(['INVALID_JSON', 'INVALID_UTF8', 'LONE_SURROGATE']);

/**
 * The check of an answer's body before `JSON.parse` builds it, run on the body as it arrives (http-client.ts readBody
 * hands it each chunk): a body that holds more than `valuesMax` JSON values, nests deeper than ANSWER_DEPTH_MAX or has a
 * longer member name than ANSWER_NAME_BYTES_MAX (limits.ts says why) is refused at the chunk that breaks the limit, and
 * its connection dropped, instead of once the whole body is held (audit, 2026-12-06: a log page of 256 MiB of `{}` was
 * refused only after the client peaked at ~600 MB). AnswerFault then, and a SyntaxError for a body that is not JSON.
 */
export class AnswerCheck {
  /** Bodies of at most this many bytes are not checked, see `push`. */
  private readonly uncheckedBytesMax: number;
  private validator: JsonValidator | undefined;
  /** The chunks of the body the validator has been given. */
  private checkedChunks = 0;

  /** `bytesMax`: the most the call reads of the body, so no string of it can be longer. */
  constructor(
    private readonly valuesMax: number,
    private readonly bytesMax: number,
  ) {
    this.uncheckedBytesMax = Math.min(ANSWER_UNCHECKED_BYTES_MAX, valuesMax);
  }

  /** Checks the chunks of `chunks` (the body so far, `bytes` long) not checked yet. */
  push(chunks: readonly Buffer[], bytes: number): void {
    // A body this short holds at most its length in values, nested at most half as deep, which JSON.stringify still
    // manages: the check would find nothing, and costs 2 to 3 us an answer, a put's or a get's (measured 2026-12-06).
    // A longer one is checked from its first byte, once it passes this size.
    if (bytes <= this.uncheckedBytesMax) return;
    this.validator ??= new JsonValidator({ depthMax: ANSWER_DEPTH_MAX, elementsMax: this.valuesMax, stringBytesMax: this.bytesMax, nameBytesMax: ANSWER_NAME_BYTES_MAX });
    const validator = this.validator;
    refused(() => {
      for (; this.checkedChunks < chunks.length; this.checkedChunks++) validator.push(chunks[this.checkedChunks]!);
    });
  }

  /** The value of the whole body, every chunk of which went through `push`. */
  value(body: Buffer): unknown {
    return refused(() => {
      this.validator?.end();
      return parseValidatedJson(body);
    });
  }
}

/** Runs a step of the check, its MercuryError a SyntaxError (not JSON at all) or an AnswerFault. */
function refused<T>(step: () => T): T {
  try {
    return step();
  } catch (error) {
    if (!(error instanceof MercuryError)) throw error;
    if (NOT_JSON_CODES.has(error.code)) throw new SyntaxError(ofAnswer(error.message));
    throw new AnswerFault(`refused before parsing: ${ofAnswer(error.message)}`);
  }
}

/**
 * A message of the node's JSON checks (src/api/json-validator.ts) said of an answer: they speak to a client about its
 * request ("request body is not valid JSON", "... send binary keys and values as base64"), which misleads here.
 */
function ofAnswer(message: string): string {
  return message.replace(/^(the )?request body/, 'the answer').replace(/; send binary keys and values as base64$/, '');
}

export function object(value: unknown, path: string): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fault(path, 'must be a JSON object');
  return value as Json;
}

export function integer(json: Json, name: string, path: string, min = 0): number {
  const value = json[name];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) fault(`${path}.${name}`, `must be an integer >= ${min}`);
  return value;
}

function boolean(json: Json, name: string, path: string): boolean {
  const value = json[name];
  if (typeof value !== 'boolean') fault(`${path}.${name}`, 'must be true or false');
  return value;
}

export function string(json: Json, name: string, path: string): string {
  const value = json[name];
  if (typeof value !== 'string') fault(`${path}.${name}`, 'must be a string');
  return value;
}

function array(json: Json, name: string, path: string): unknown[] {
  const value = json[name];
  if (!Array.isArray(value)) fault(`${path}.${name}`, 'must be an array');
  return value as unknown[];
}

/** Bytes `name` with `nameEncoding` (`utf8` or `base64`, src/api/bytes.ts). */
function bytes(json: Json, name: string, path: string): Buffer {
  const decoded = decodeJsonBytes(json[name], json[`${name}Encoding`]);
  if (decoded === undefined) fault(`${path}.${name}`, `must be a string with ${name}Encoding "utf8", or standard base64 with "base64"`);
  return decoded;
}

/** `{ seq }` of a put or a deletePrefix. */
export function writeAnswer(value: unknown): { seq: number } {
  const json = object(value, 'answer');
  return { seq: integer(json, 'seq', 'answer') };
}

export function deleteAnswer(value: unknown): { seq: number; deleted: boolean } {
  const json = object(value, 'answer');
  return { seq: integer(json, 'seq', 'answer'), deleted: boolean(json, 'deleted', 'answer') };
}

/** `hash` is optional: nodes before it was added do not send it. */
export function txnAnswer(value: unknown): { succeeded: boolean; seq: number; hash?: string } {
  const json = object(value, 'answer');
  const result = { succeeded: boolean(json, 'succeeded', 'answer'), seq: integer(json, 'seq', 'answer') };
  if (json.hash === undefined) return result;
  if (typeof json.hash !== 'string' || !/^[0-9a-f]{64}$/.test(json.hash)) fault('answer.hash', 'must be 64 lowercase hex digits');
  return { ...result, hash: json.hash };
}

export interface RangeAnswerItem {
  readonly key: Buffer;
  readonly value: Buffer;
  readonly createSeq: number;
  readonly modSeq: number;
  readonly version: number;
}

/**
 * A range page. Its items must be in strictly ascending key order, and `cursor` (base64url of the last key the node
 * read, src/server/cursor.ts) must be there when `more` is, and not before the last item.
 */
export function rangeAnswer(value: unknown): { seq: number; more: boolean; cursor: string | null; items: RangeAnswerItem[]; cursorKey: Buffer | undefined } {
  const json = object(value, 'answer');
  const items = array(json, 'items', 'answer').map((item, i): RangeAnswerItem => {
    const path = `answer.items[${i}]`;
    const fields = object(item, path);
    return {
      key: bytes(fields, 'key', path),
      value: bytes(fields, 'value', path),
      createSeq: integer(fields, 'createSeq', path, 1),
      modSeq: integer(fields, 'modSeq', path, 1),
      version: integer(fields, 'version', path, 1),
    };
  });
  for (let i = 1; i < items.length; i++) if (Buffer.compare(items[i - 1]!.key, items[i]!.key) >= 0) fault(`answer.items[${i}].key`, 'must sort after the key before it');
  const more = boolean(json, 'more', 'answer');
  const cursor = json.cursor;
  let cursorKey: Buffer | undefined;
  if (more) {
    if (typeof cursor !== 'string' || !/^[A-Za-z0-9_-]+$/.test(cursor)) fault('answer.cursor', 'must be a base64url string when "more" is true');
    cursorKey = Buffer.from(cursor, 'base64url');
    const last = items[items.length - 1];
    if (last !== undefined && Buffer.compare(cursorKey, last.key) < 0) fault('answer.cursor', 'must not be before the last item of its page');
  } else if (cursor !== null && cursor !== undefined) fault('answer.cursor', 'must be null when "more" is false');
  return { seq: integer(json, 'seq', 'answer'), more, cursor: more ? (cursor as string) : null, items, cursorKey };
}

/**
 * The paging rule of a range walk: each page must continue after the previous one (its first item and its cursor
 * after the previous cursor's key), or a walk would page for ever through the same keys.
 */
export function checkRangeAdvances(previousCursorKey: Buffer | undefined, page: { items: readonly RangeAnswerItem[]; cursorKey: Buffer | undefined }): void {
  if (previousCursorKey === undefined) return;
  const first = page.items[0];
  if (first !== undefined && Buffer.compare(first.key, previousCursorKey) <= 0) fault('answer.items[0].key', 'must sort after the cursor the page was asked from');
  if (page.cursorKey !== undefined && Buffer.compare(page.cursorKey, previousCursorKey) <= 0) fault('answer.cursor', 'must sort after the cursor the page was asked from');
}

/**
 * A range page must be what was asked for: at most `limit` items, each key and the cursor under `prefix` (a cursor is
 * a key, so at most KEY_BYTES_MAX bytes). Otherwise a node could hand a walk keys of another prefix, or lead it out of
 * its prefix, cursor after cursor (audit, 2026-12-06).
 */
export function checkRangePage(prefix: Buffer, limit: number, page: { items: readonly RangeAnswerItem[]; cursorKey: Buffer | undefined }): void {
  if (page.items.length > limit) fault('answer.items', `holds ${page.items.length} items; the page was asked for at most ${limit}`);
  page.items.forEach((item, i) => {
    if (!startsWith(item.key, prefix)) fault(`answer.items[${i}].key`, 'must start with the prefix the page was asked for');
  });
  if (page.cursorKey === undefined) return;
  if (page.cursorKey.length > KEY_BYTES_MAX) fault('answer.cursor', `is a key of ${page.cursorKey.length} bytes; keys are at most ${KEY_BYTES_MAX}`);
  if (!startsWith(page.cursorKey, prefix)) fault('answer.cursor', 'must start with the prefix the page was asked for');
}

function startsWith(key: Buffer, prefix: Buffer): boolean {
  return key.length >= prefix.length && key.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}

export function logAnswer(value: unknown): { firstSeq: number; lastSeq: number; nextSeq: number | null; entries: Record<string, unknown>[] } {
  const json = object(value, 'answer');
  const nextSeq = json.nextSeq === null ? null : integer(json, 'nextSeq', 'answer', 1);
  const entries = array(json, 'entries', 'answer').map((entry, i) => {
    const fields = object(entry, `answer.entries[${i}]`);
    integer(fields, 'seq', `answer.entries[${i}]`, 1);
    return fields;
  });
  return { firstSeq: integer(json, 'firstSeq', 'answer'), lastSeq: integer(json, 'lastSeq', 'answer'), nextSeq, entries };
}

/** The paging rule of a log walk: `nextSeq` must be after the seq the page was asked from. */
export function checkLogAdvances(from: number, nextSeq: number | null): void {
  if (nextSeq !== null && nextSeq <= from) fault('answer.nextSeq', `is ${nextSeq}; it must be after ${from}, the seq the page was asked from`);
}

/**
 * A log page must be the entries asked for: the log has no gaps, so they are `from`, `from + 1`, ..., at most `limit`
 * of them, and `nextSeq`, when there is one, follows the last and is at most `lastSeq` (audit, 2026-12-06: entries of
 * any seq, in any order and any number, were handed on).
 */
export function checkLogPage(from: number, limit: number, page: { lastSeq: number; nextSeq: number | null; entries: readonly Record<string, unknown>[] }): void {
  checkLogAdvances(from, page.nextSeq);
  if (page.entries.length > limit) fault('answer.entries', `holds ${page.entries.length} entries; the page was asked for at most ${limit}`);
  page.entries.forEach((entry, i) => {
    if (entry.seq !== from + i) fault(`answer.entries[${i}].seq`, `is ${String(entry.seq)}; the log has no gaps, so it must be ${from + i}`);
  });
  if (page.nextSeq === null) return;
  if (page.nextSeq !== from + page.entries.length) fault('answer.nextSeq', `is ${page.nextSeq}; it must follow the page's last entry (${from + page.entries.length})`);
  if (page.nextSeq > page.lastSeq) fault('answer.nextSeq', `is ${page.nextSeq}, past the lastSeq ${page.lastSeq} of the same page`);
}

/** A token as the node lists it (TokenInfo of http-client.ts). */
export function tokenAnswer(value: unknown, path: string): {
  id: string;
  name: string;
  scopes: string[];
  createdMs: number;
  expiresMs?: number;
  kind: 'token' | 'certificate';
  subject?: string;
} {
  const json = object(value, path);
  const scopes = array(json, 'scopes', path).map((scope, i) => (typeof scope === 'string' ? scope : fault(`${path}.scopes[${i}]`, 'must be a string')));
  const kind = json.kind;
  if (kind !== 'token' && kind !== 'certificate') fault(`${path}.kind`, 'must be "token" or "certificate"');
  return {
    id: string(json, 'id', path),
    name: string(json, 'name', path),
    ...(json.expiresMs === undefined ? {} : { expiresMs: integer(json, 'expiresMs', path) }),
    scopes,
    createdMs: integer(json, 'createdMs', path),
    kind,
    ...(json.subject === undefined ? {} : { subject: string(json, 'subject', path) }),
  };
}

export function tokenListAnswer(value: unknown): { tokens: ReturnType<typeof tokenAnswer>[]; unreadable: { id: string; damaged: true; why: string }[]; seq: number } {
  const json = object(value, 'answer');
  // `unreadable`: records the node could not read (absent from nodes older than the field).
  const unreadable = json.unreadable === undefined ? [] : array(json, 'unreadable', 'answer').map((record, i) => {
    const where = `answer.unreadable[${i}]`;
    const fields = object(record, where);
    return { id: string(fields, 'id', where), damaged: true as const, why: string(fields, 'why', where) };
  });
  return { tokens: array(json, 'tokens', 'answer').map((token, i) => tokenAnswer(token, `answer.tokens[${i}]`)), unreadable, seq: integer(json, 'seq', 'answer') };
}

export function createdTokenAnswer(value: unknown): ReturnType<typeof tokenAnswer> & { token?: string; seq: number } {
  const json = object(value, 'answer');
  return { ...tokenAnswer(json, 'answer'), ...(json.token === undefined ? {} : { token: string(json, 'token', 'answer') }), seq: integer(json, 'seq', 'answer') };
}

export function revokedTokenAnswer(value: unknown): { id: string; revoked: boolean; damaged?: boolean; seq: number } {
  const json = object(value, 'answer');
  return {
    id: string(json, 'id', 'answer'),
    revoked: boolean(json, 'revoked', 'answer'),
    ...(json.damaged === undefined ? {} : { damaged: boolean(json, 'damaged', 'answer') }),
    seq: integer(json, 'seq', 'answer'),
  };
}

export function resyncAnswer(value: unknown): { resync: string; seq: number } {
  const json = object(value, 'answer');
  return { resync: string(json, 'resync', 'answer'), seq: integer(json, 'seq', 'answer') };
}

/** A node's status: the fields NodeStatus names are checked; the rest is passed on as the node sent it. */
export function statusAnswer<T>(value: unknown): T {
  const json = object(value, 'answer');
  for (const name of ['role', 'version', 'nodeId', 'datasetId']) string(json, name, 'answer');
  // null for a token that may not see the hash chain (src/auth seesChain).
  if (json.headHash !== null) string(json, 'headHash', 'answer');
  integer(json, 'seq', 'answer');
  integer(json, 'keys', 'answer');
  // null: the node could not read its log's bounds (a damaged log key, shown under `storage`).
  if (json.log !== null) {
    const log = object(json.log, 'answer.log');
    for (const name of ['firstSeq', 'lastSeq', 'entries', 'bytes']) integer(log, name, 'answer.log');
  }
  return json as T;
}

/**
 * Refuses an answer read at a seq below the `minSeq` it was asked for: a node that ignored it (an older node, a proxy
 * that dropped the query) would silently break read-your-writes, and a range walk that failed over could go back in
 * time (found by an audit, 2026-12-06).
 */
export function checkMinSeq(seq: number, minSeq: number | undefined): void {
  if (minSeq !== undefined && seq < minSeq) throw new AnswerFault(`answered at seq ${seq}, below the minSeq ${minSeq} it was asked for`);
}

/**
 * Request and response plumbing shared by the routes: bounded body reading, JSON responses, and the single place
 * where a MercuryError becomes an HTTP status and a JSON error body:
 *
 * ```json
 * { "error": { "code": "KEY_TOO_LARGE", "message": "key is 2000 bytes; keys are at most 1024 bytes", "limit": 1024 } }
 * ```
 */
import type { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { PaceWindow, type Clock } from '../clock/index.js';
import { JsonValidator, MIN_SEQ_WAIT_MS_DEFAULT, MIN_SEQ_WAIT_MS_MAX, parseValidatedJson, type JsonLimits } from '../api/index.js';
import { MercuryError, isMercuryError, type ErrorCode } from '../errors/index.js';
import { hostSlotKey } from '../net/index.js';
import { readersFull } from '../store/index.js';
import type { Principal } from '../auth/index.js';
import { assertAdmitted, principalNow, principalOf } from './auth.js';
import type { BodyBudget } from './body-budget.js';
import type { NodeApi } from './node-api.js';

/** The seq a read reflects, or the seq of the entry that carries a write. */
export const SEQ_HEADER = 'x-mercury-seq';

/** A JSON body longer than this many characters goes out in pieces of this size, a turn of the event loop apart. */
export const JSON_PIECE_CHARS = 256 * 1024;

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string | number> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  if (text.length <= JSON_PIECE_CHARS) return void res.end(text);
  // A large body (a page of 1 MiB values: about 1.4 MB of JSON) is encoded and written a piece per turn, so requests
  // that arrive meanwhile (a liveness probe) wait for one piece, not for the whole body (test/hostile-pages.test.ts).
  writePieces(res, jsonPieces(text), { turnEach: true }).catch(() => res.destroy());
}

/** `text` in pieces of JSON_PIECE_CHARS, never between the two halves of a surrogate pair (each is encoded alone). */
function* jsonPieces(text: string): Generator<string> {
  for (let start = 0; start < text.length; ) {
    let end = Math.min(text.length, start + JSON_PIECE_CHARS);
    const next = text.charCodeAt(end);
    if (end < text.length && next >= 0xdc00 && next <= 0xdfff) end--;
    yield text.slice(start, end);
    start = end;
  }
}

/**
 * Answers with a JSON body written piece by piece (chunked), waiting for the socket to drain between pieces: for
 * responses too large to build as one string. Resolves when the last piece is handed over, or when the client left.
 */
export async function sendJsonPieces(res: ServerResponse, status: number, pieces: Iterable<string>, headers: Record<string, string | number> = {}): Promise<void> {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  await writePieces(res, pieces);
}

/**
 * How long an answer waits for its client to take what is queued (`http.sendStallMs`), and whom it tells when the
 * client took nothing for that long. The API handler sets one on every response (`setSendDeadline`): it covers the
 * slices of a streamed answer (writePieces) and the tail of every answer once it has ended (onAnswerEnded).
 */
export interface SendDeadline {
  readonly clock: Clock;
  readonly stallMs: number;
  /** The connection of `res` was closed for it: log and count it. */
  readonly onStalled: (res: ServerResponse) => void;
  /**
   * The pace floor of a paced answer (writePieces with `paced`: a snapshot, which holds a read transaction): in each
   * `windowMs` in which the node waited on the client, the client must take `bytesMin`, or its connection is reset and
   * `onTooSlow` told (with the bytes it took in the window and the window's length).
   */
  readonly pace?: {
    readonly windowMs: number;
    readonly bytesMin: number;
    readonly onTooSlow: (res: ServerResponse, takenBytes: number, windowMs: number) => void;
  };
}

/**
 * A symbol-keyed property of the response rather than a WeakMap: every response passes here, and V8's ephemeron tables
 * cost about 0.6 µs per request more (src/server/auth.ts measured it for the admitted principal).
 */
const SEND_DEADLINE = Symbol('mercury.sendDeadline');
type DeadlinedResponse = ServerResponse & { [SEND_DEADLINE]?: SendDeadline };

export function setSendDeadline(res: ServerResponse, deadline: SendDeadline): void {
  (res as DeadlinedResponse)[SEND_DEADLINE] = deadline;
  // One shared function, no closure: the common answer costs a listener slot and a getter read, never a timer.
  res.on('prefinish', onAnswerEnded);
}

/**
 * Runs when node:http has handed the whole answer to its socket ('prefinish': after end(), once the answer owns the
 * connection; a pipelined answer waits for the ones before it). What the kernel did not take yet is still queued in
 * this process: the answer must be taken within the send deadline, as each slice of a streamed one is, or its
 * connection is reset. Without it a client that sent `GET /v1/kv/KEY` of a large value, or pipelined a few, and read
 * nothing held the answers (up to HTTP_PIPELINED_RUNNING_MAX of them) and its connection for as long as it liked: no
 * node:http timeout runs while an answer is being written (an audit, 2026-12-06). The tail is one write (a body of at
 * most JSON_PIECE_CHARS, or a streamed answer's last slices), whose progress node:http shows only once it is taken
 * whole ('finish'), so one deadline covers it.
 */
function onAnswerEnded(this: DeadlinedResponse): void {
  if (this.writableLength === 0) return;
  const deadline = this[SEND_DEADLINE];
  if (deadline !== undefined) watchTail(this, deadline);
}

function watchTail(res: ServerResponse, deadline: SendDeadline): void {
  const timer = deadline.clock.setTimeout(() => {
    stop();
    cutOff(res, () => deadline.onStalled(res));
  }, deadline.stallMs);
  function stop(): void {
    timer.cancel();
    res.off('finish', stop);
    res.off('close', stop);
  }
  res.on('finish', stop);
  res.on('close', stop);
}

/**
 * Bytes handed to the socket at once: the socket drains (and the send deadline restarts) each time it has sent one
 * slice, so a client that reads slowly but steadily is never taken for a stalled one, whatever the size of a piece.
 */
export const SEND_SLICE_BYTES = 64 * 1024;

/** `piece` in slices of at most SEND_SLICE_BYTES (a short string as it is: at most 3 bytes a UTF-16 unit). */
function* slices(piece: string | Buffer): Generator<string | Buffer> {
  if (typeof piece === 'string' && piece.length * 3 <= SEND_SLICE_BYTES) {
    yield piece;
    return;
  }
  const bytes = typeof piece === 'string' ? Buffer.from(piece) : piece;
  for (let start = 0; start < bytes.length; start += SEND_SLICE_BYTES) yield bytes.subarray(start, start + SEND_SLICE_BYTES);
}

/**
 * Writes a body in pieces after the head was sent, waiting for 'drain' whenever the socket's buffer is full, so that a
 * slow reader holds one piece in memory rather than the whole body. Stops quietly if the client goes away; closes the
 * connection if the client takes nothing for the response's send deadline (`setSendDeadline`): without it a client
 * that stopped reading held the answer, and a snapshot's read transaction, for as long as it kept the connection.
 * With `turnEach`, also lets a turn of the event loop pass after each piece, whether or not it waited. With `paced`,
 * also holds the client to the deadline's pace floor (SendDeadline.pace): an answer that holds a read transaction. The answer to a
 * HEAD ends after the head: node:http would drop the body's bytes, but only after they were read (a whole snapshot).
 */
export async function writePieces(res: ServerResponse, pieces: Iterable<string | Buffer>, options: { readonly turnEach?: boolean; readonly paced?: boolean } = {}): Promise<void> {
  if (res.req.method === 'HEAD') {
    res.end();
    return;
  }
  const { turnEach = false, paced = false } = options;
  const deadline = (res as DeadlinedResponse)[SEND_DEADLINE];
  const floor = paced ? deadline?.pace : undefined;
  let pace: PaceWindow | undefined;
  let handedBytes = 0;
  for (const piece of pieces) {
    for (const slice of slices(piece)) {
      if (res.destroyed) return;
      handedBytes += slice.length;
      if (res.write(slice)) continue;
      await taken(res, deadline);
      // Judged only after a wait for the client, so a node slow to read its own pages never counts against it. The
      // first window begins at the end of the first wait: a pipelined answer waited for the answers before it first.
      if (floor === undefined || res.destroyed) continue;
      const takenBytes = handedBytes - res.writableLength;
      if (pace === undefined) {
        pace = new PaceWindow(floor.windowMs, deadline!.clock.monotonicMs(), takenBytes);
        continue;
      }
      const judged = pace.judge(deadline!.clock.monotonicMs(), takenBytes);
      if (judged !== undefined && judged.takenBytes < floor.bytesMin) {
        cutOff(res, () => floor.onTooSlow(res, judged.takenBytes, judged.elapsedMs));
        return;
      }
    }
    // Even after a wait for 'drain': a socket that the kernel emptied at once drains before the event loop turns (the
    // event comes on process.nextTick), so a client that reads as fast as the node writes would otherwise have the
    // whole answer written in one go, every other request waiting (review G: 2.4-3.5 s for an 11 MB snapshot).
    if (turnEach) await nextTurn();
  }
  if (!res.destroyed) res.end();
}

/**
 * Resolves once what `res` queued is taken (or its connection closed), or cuts the connection off past the deadline.
 * A pipelined answer that does not own its connection yet waits for the answers before it without a deadline of its
 * own: each of those has one, and the client may be reading them steadily. Counting that wait cut off pipelined GETs
 * of large values for a client that read them all.
 */
async function taken(res: ServerResponse, deadline: SendDeadline | undefined): Promise<void> {
  if (res.socket === null) {
    await socketOrClosed(res);
    // The socket came with a flush of what was queued, which may have drained it already ('drain' came and went).
    if (res.destroyed || !res.writableNeedDrain) return;
  }
  await drainedOrClosed(res, deadline === undefined ? undefined : { clock: deadline.clock, stallMs: deadline.stallMs, stalled: () => cutOff(res, () => deadline.onStalled(res)) });
}

/**
 * Resolves once `res` owns its connection (at once for the common answer; a pipelined one waits until the answers
 * before it are sent) or has closed: for an answer that must not hold anything while it waits, such as a snapshot's
 * read transaction, which would otherwise be held for as long as its client took to read the answers before it.
 */
export async function ownConnection(res: ServerResponse): Promise<void> {
  if (res.socket === null && !res.destroyed) await socketOrClosed(res);
}

/** Resolves once node:http gives `res` its connection (the answers before it are sent), or `res` closes. */
function socketOrClosed(res: ServerResponse): Promise<void> {
  return new Promise<void>((resolve) => {
    function done(): void {
      res.off('socket', done);
      res.off('close', done);
      resolve();
    }
    res.on('socket', done);
    res.on('close', done);
  });
}

/** Resets the connection of `res` (unless it is gone already), then calls `report`. */
function cutOff(res: ServerResponse, report: () => void): void {
  if (res.destroyed) return;
  // A reset rather than a FIN: the bytes queued for the client are dropped now, not kept by the kernel for a reader
  // that is gone. Only a TCP socket can be reset (a TLS one throws): that one is just destroyed.
  try {
    res.socket?.resetAndDestroy();
  } catch {
    // destroyed below
  }
  res.destroy();
  report();
}

/**
 * Resolves once a stream whose write returned false has drained, or has closed (its reader went away). With `stall`,
 * also once `stall.stallMs` passed without either, after calling `stall.stalled`.
 */
export function drainedOrClosed(stream: EventEmitter, stall?: { readonly clock: Clock; readonly stallMs: number; readonly stalled: () => void }): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer =
      stall === undefined
        ? undefined
        : stall.clock.setTimeout(() => {
            done();
            stall.stalled();
          }, stall.stallMs);
    function done(): void {
      timer?.cancel();
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    }
    stream.on('drain', done);
    stream.on('close', done);
  });
}

export function errorBody(code: ErrorCode, message: string, details?: Readonly<Record<string, unknown>>): unknown {
  return { error: { code, message, ...details } };
}

/**
 * Answers with the error's status and JSON body. Errors that are not MercuryErrors are bugs: reported as INTERNAL,
 * but for LMDB's full reader table, which is answered 503 OVERLOADED (readersFull) and still reported.
 */
export function sendError(res: ServerResponse, error: unknown, onInternal: (error: unknown) => void): number {
  const mercury = isMercuryError(error) ? error : (readersFull(error) ?? new MercuryError('INTERNAL', 'internal error; see the node log', { cause: error }));
  if (!isMercuryError(error)) onInternal(error);
  if (res.headersSent) {
    res.destroy();
    return mercury.status;
  }
  const headers: Record<string, string> = {};
  if (mercury.code === 'METHOD_NOT_ALLOWED' && typeof mercury.details?.allow === 'string') headers.allow = mercury.details.allow;
  if (mercury.code === 'OVERLOADED' || mercury.code === 'BODY_BUDGET_EXCEEDED') headers['retry-after'] = '1';
  // RFC 9110 section 15.5.22: a 426 names the protocol to switch to, and Upgrade is a connection option.
  if (mercury.code === 'UPGRADE_REQUIRED') Object.assign(headers, { upgrade: 'websocket', connection: 'upgrade' });
  if (bodyLeftUnread(res.req)) headers.connection = 'close';
  sendJson(res, mercury.status, errorBody(mercury.code, mercury.message, mercury.details), headers);
  return mercury.status;
}

/**
 * Whether an answer must close the connection: the request body may not have been read (too large, malformed, or
 * refused before it was), and the connection cannot be reused safely, unless the rest of the body is being dropped up
 * to its declared end (readBody, dropUnreadBody).
 */
export function bodyLeftUnread(req: IncomingMessage): boolean {
  return !req.complete && !discarding.has(req);
}

/** Requests whose refused body is read to its declared end and dropped (see readBody). */
const discarding = new WeakSet<IncomingMessage>();
/** Requests whose body a reader took (readBody): what happens to the rest of it is the reader's business. */
const bodyTaken = new WeakSet<IncomingMessage>();

/**
 * A request refused before its handler read the body (no credential, a missing scope, a bad key): the body is not
 * buffered and not charged to the in-flight budget. As readBody does for a body it refuses: a declared length of at
 * most `bytesMax` is read as it arrives and dropped (the connection stays usable, so pipelined requests after it are
 * answered), and anything else (a chunked body, a declared length beyond `bytesMax`) is not read at all: sendError
 * then closes the connection after the answer.
 */
export function dropUnreadBody(req: IncomingMessage, bytesMax: number): void {
  if (req.complete || bodyTaken.has(req) || discarding.has(req)) return;
  if (req.headers['transfer-encoding'] !== undefined) return;
  const declared = Number(req.headers['content-length'] ?? 0);
  // Without a body there is nothing to drop: the answer goes out as before (closing, as for any request answered
  // before node:http saw its end).
  if (!(declared > 0 && declared <= bytesMax)) return;
  discarding.add(req);
  req.resume();
}

export interface BodyOptions {
  /** The body's size limit, and the error for a body beyond it (by Content-Length up front, or while it streams). */
  readonly bytesMax: number;
  readonly tooLarge: (bytes: number) => MercuryError;
  /** Sees every chunk as it arrives (a JSON validator) and throws to refuse the body there, before the rest is read. */
  readonly onChunk?: (chunk: Buffer) => void;
}

/**
 * Reads the whole body within `options.bytesMax` and the node's in-flight `budget` (reserved from the declared length
 * before the first byte is read, or as a chunked body arrives; released once `res` is done). A body refused while it
 * arrives is answered at once; the rest of it is dropped unread up to its declared length (the connection stays
 * usable), or, for a chunked body, not read at all (the connection is closed after the answer). A body declared
 * larger than `bytesMax` is refused before it is read, and the connection closed. Slow bodies are cut off by the
 * server's requestTimeout.
 */
export function readBody(req: IncomingMessage, res: ServerResponse, budget: BodyBudget, options: BodyOptions): Promise<Buffer> {
  assertAdmitted(req);
  bodyTaken.add(req);
  const { bytesMax, tooLarge, onChunk } = options;
  const declaredHeader = req.headers['content-length'];
  const declared = declaredHeader === undefined ? undefined : Number(declaredHeader);
  if (declared !== undefined && declared > bytesMax) return Promise.reject(tooLarge(declared));
  let reserved = 0;
  const address = hostSlotKey(req.socket.remoteAddress);
  const reserve = (bytes: number): boolean => {
    if (!budget.tryReserve(bytes, address)) return false;
    if (reserved === 0) res.once('close', () => budget.release(reserved, address));
    reserved += bytes;
    return true;
  };
  if (declared !== undefined && declared > 0 && !reserve(declared)) {
    // Refused before a byte is kept; dropped as it arrives, so that the answer reaches a client that sends anyway.
    discarding.add(req);
    req.resume();
    return Promise.reject(budget.refusal(declared, address));
  }
  return new Promise((resolve, reject) => {
    const body = new BodyBytes(declared);
    const stop = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onCutOff);
      req.off('close', onCutOff);
    };
    const fail = (error: Error): void => {
      stop();
      if (declared !== undefined) {
        // Answered now; the rest of the body (at most bytesMax, and within the request timeout) is read and dropped
        // without being kept or parsed, and the connection stays usable. Closing instead would reset a connection
        // whose client is still sending, and the reset can destroy the answer before the client reads it.
        discarding.add(req);
        req.resume();
      } else {
        // A chunked body has no end we know of: read no further. node:http stops reading the socket once this
        // request's buffer is full, and closes the connection after the answer.
        req.pause();
      }
      reject(error);
    };
    function onData(chunk: Buffer): void {
      const total = body.bytes + chunk.length;
      if (total > bytesMax) return fail(tooLarge(total));
      if (total > reserved && !reserve(total - reserved)) return fail(budget.refusal(total - reserved, address));
      try {
        onChunk?.(chunk);
      } catch (error) {
        return fail(error as Error);
      }
      body.add(chunk);
    }
    function onEnd(): void {
      stop();
      resolve(body.whole());
    }
    // The client went away or the request timeout cut the body off: the client's doing, not a bug in the node.
    function onCutOff(error?: unknown): void {
      fail(new MercuryError('BAD_REQUEST', `the request body ended after ${body.bytes} bytes: the connection was closed or timed out`, { cause: error }));
    }
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onCutOff);
    req.on('close', onCutOff);
  });
}

/** The first block of a chunked body; each next one is as large as the body so far, up to BODY_BLOCK_BYTES_MAX. */
const BODY_BLOCK_BYTES_MIN = 256;
/** Chunks at least this large are kept as they came: their Buffer object is small beside their bytes. */
const BODY_BLOCK_BYTES_MAX = 16 * 1024;

/**
 * A request body as it arrives, in few buffers however the client splits it. Keeping each chunk as it came, a body
 * sent a byte per TCP segment cost a Buffer object (some 200 bytes of heap) per byte, while the in-flight budget
 * counts bytes. With a Content-Length, the body is copied into one buffer of that size (already within bytesMax and
 * reserved in the budget), unless it comes in one chunk; a chunked body's small chunks are copied into blocks that
 * grow with the body, so it holds at most about twice what arrived. Large chunks are kept without a copy, and a body
 * is copied once in all, as Buffer.concat did.
 */
class BodyBytes {
  private readonly pieces: Buffer[] = [];
  private block: Buffer | undefined = undefined;
  private blockFilled = 0;
  /** Bytes received so far. */
  bytes = 0;

  constructor(private readonly declared: number | undefined) {}

  add(chunk: Buffer): void {
    const block = this.block;
    if (block !== undefined && chunk.length <= block.length - this.blockFilled) {
      chunk.copy(block, this.blockFilled);
      this.blockFilled += chunk.length;
    } else {
      this.seal();
      // Zero without a Content-Length (and, defensively, for bytes beyond it, which node:http does not deliver).
      const remaining = this.declared === undefined ? 0 : Math.max(0, this.declared - this.bytes);
      if (chunk.length < remaining) this.startBlock(remaining, chunk);
      else if (remaining > 0 || chunk.length >= BODY_BLOCK_BYTES_MAX) this.pieces.push(chunk);
      else this.startBlock(Math.min(BODY_BLOCK_BYTES_MAX, Math.max(BODY_BLOCK_BYTES_MIN, this.bytes, chunk.length)), chunk);
    }
    this.bytes += chunk.length;
  }

  /** The body, in one buffer. */
  whole(): Buffer {
    this.seal();
    return this.pieces.length === 1 ? this.pieces[0]! : Buffer.concat(this.pieces, this.bytes);
  }

  private startBlock(bytes: number, chunk: Buffer): void {
    this.block = Buffer.allocUnsafe(bytes);
    chunk.copy(this.block);
    this.blockFilled = chunk.length;
  }

  private seal(): void {
    if (this.block !== undefined) this.pieces.push(this.block.subarray(0, this.blockFilled));
    this.block = undefined;
    this.blockFilled = 0;
  }
}

/**
 * Reads a JSON body: checked by a JsonValidator chunk by chunk as it arrives (so a hostile body is refused after a
 * bounded prefix, src/api/json-validator.ts), then parsed.
 */
export async function readJsonBody(
  req: IncomingMessage,
  res: ServerResponse,
  budget: BodyBudget,
  limits: JsonLimits,
  options: Omit<BodyOptions, 'onChunk'>,
): Promise<unknown> {
  const validator = new JsonValidator(limits);
  const body = await readBody(req, res, budget, { ...options, onChunk: (chunk) => validator.push(chunk) });
  validator.end();
  return parseValidatedJson(body);
}

/** Parses an optional non-negative integer query parameter. */
export function queryInteger(query: URLSearchParams, name: string, fallback: number, max = Number.MAX_SAFE_INTEGER, min = 0): number {
  const raw = query.get(name);
  if (raw === null) return fallback;
  // Not the fallback: `?ifModSeq=` meaning 0 would turn a forgotten number into "only if absent".
  if (raw === '') throw new MercuryError('INVALID_ARGUMENT', `query parameter ${name} is empty; give a non-negative integer, or leave the parameter out`);
  if (!/^\d+$/.test(raw)) throw new MercuryError('INVALID_ARGUMENT', `query parameter ${name} must be a non-negative integer, got "${raw}"`);
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < min || value > max)
    throw new MercuryError('INVALID_ARGUMENT', `query parameter ${name} must be between ${min} and ${max}, got ${raw}`);
  return value;
}

/** The query parameters of `readSeqOptions`. */
export const READ_SEQ_PARAMS: readonly string[] = ['minSeq', 'timeoutMs'];

/**
 * A read's `?minSeq=N[&timeoutMs=T]`: waits (bounded) until the node has applied seq N, then checks the request's
 * token again with `check` (the route's scope check, given the principal as it is now). Both parameters are checked
 * whether or not the node must wait, so that a request is refused or served by what it says, not by how far the node
 * has got. The wait ends when `res` or its request closes first (its client left): it must not hold one of the
 * node's parked reads (SEQ_WAITERS_MAX) after its connection is gone (src/node/seq-waiter.ts). It also ends as soon as
 * the request's token stops allowing the read: revoked (401), given a new secret or another subject (401), or its
 * scopes narrowed past this read (403). Before, only a revocation ended it; a narrowed or re-secreted token's read
 * stayed parked, holding its connection and waiter, until it woke or timed out (up to 60 s). A change that still
 * allows the read leaves it waiting.
 */
export async function readSeqOptions(node: NodeApi, query: URLSearchParams, res: ServerResponse, check: (principal: Principal | undefined) => void): Promise<void> {
  const minSeq = queryInteger(query, 'minSeq', 0);
  const timeoutMs = queryInteger(query, 'timeoutMs', MIN_SEQ_WAIT_MS_DEFAULT, MIN_SEQ_WAIT_MS_MAX);
  if (minSeq <= node.store.head().seq) return;
  const gone = new AbortController();
  const onClose = (): void => gone.abort();
  // The request's 'close' too: a pipelined request queued behind another has no socket on its `res` yet, and node:http
  // destroys it (without closing its `res`) when the connection closes; one already destroyed ends the wait at once.
  res.once('close', onClose);
  res.req.once('close', onClose);
  if (res.req.destroyed) gone.abort();
  const recheck = (): void => check(principalNow(res.req, node));
  const tokenId = principalOf(res.req)?.id;
  const forget =
    tokenId === undefined
      ? undefined
      : node.onGrantChanged?.(tokenId, () => {
          try {
            recheck();
          } catch (error) {
            // The refusal is the read's answer (seq-waiter.ts rejects with a MercuryError given as the reason).
            gone.abort(error);
          }
        });
  try {
    await node.waitForSeq(minSeq, timeoutMs, gone.signal);
  } finally {
    res.off('close', onClose);
    res.req.off('close', onClose);
    forget?.();
  }
  recheck();
}

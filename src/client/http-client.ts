/**
 * The HTTP layer: one node per call, no retries across nodes (the CLI uses it as it is; `MercuryClient` adds retries
 * across nodes on top). Its only resend: a request that failed on a pooled keep-alive connection before any byte of
 * the answer is sent once more on a fresh connection when that is safe (a read; a write never written), see
 * keep-alive.ts. Errors a node answers arrive as the typed `ServerError` subclasses of errors.ts; a node that
 * cannot be reached, or does not answer within the timeout, is `UnavailableError`, whose `requestSent` tells whether
 * the request may have reached the node.
 */
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import { encodeKeyPath, LOG_READ_LIMIT_MAX, MIN_SEQ_WAIT_MS_MAX, RANGE_LIMIT_MAX, type TxnJson } from '../api/index.js';
import {
  AnswerCheck,
  AnswerFault,
  checkLogPage,
  checkMinSeq,
  checkRangeAdvances,
  checkRangePage,
  createdTokenAnswer,
  deleteAnswer,
  integer,
  logAnswer,
  rangeAnswer,
  resyncAnswer,
  revokedTokenAnswer,
  statusAnswer,
  tokenListAnswer,
  txnAnswer,
  writeAnswer,
} from './answers.js';
import {
  ERROR_ANSWER_BYTES_MAX,
  ANSWER_VALUES_OVERHEAD,
  LARGE_ANSWER_BYTES_MAX,
  LOG_ANSWER_VALUES_MAX,
  MIN_SEQ_WAIT_MS_DEFAULT,
  RANGE_PAGE_ANSWER_BYTES_MAX,
  RANGE_ITEM_VALUES_MAX,
  RANGE_PAGE_LIMIT_DEFAULT,
  REQUEST_TIMEOUT_MS_DEFAULT,
  SMALL_ANSWER_BYTES_MAX,
  SMALL_ANSWER_VALUES_MAX,
  STREAM_IDLE_TIMEOUT_MS,
  TOKEN_LIST_VALUES_MAX,
  VALUE_ANSWER_BYTES_MAX,
} from './limits.js';
import type { NodeStatus } from './txn.js';
import { ClientOptionsError, InvalidAnswerError, NotFoundError, UnavailableError, serverError } from './errors.js';
import { integerOption } from './options.js';
import { tlsErrorHint, type ClientTls } from './tls.js';
import { afterNextPoll, connectionClosed, freshConnectionResends, KeepAliveHttpAgent, KeepAliveHttpsAgent, noteKeepAlive } from './keep-alive.js';
import { isWireUrl, wireChannel, type WireChannel } from './wire.js';

export interface KeyValue {
  readonly key: Buffer;
  readonly value: Buffer;
  readonly createSeq: number;
  readonly modSeq: number;
  readonly version: number;
}

export interface RangePageResult {
  readonly seq: number;
  readonly items: KeyValue[];
  readonly more: boolean;
  readonly cursor: string | null;
}

/** A token as the node lists it. */
export interface TokenInfo {
  readonly id: string;
  readonly name: string;
  readonly scopes: string[];
  readonly createdMs: number;
  /** Unix ms from which it authenticates nothing; absent: it never expires. */
  readonly expiresMs?: number;
  /** `token`: a bearer token; `certificate`: a grant to the client certificate whose subject CN is `subject`. */
  readonly kind: 'token' | 'certificate';
  readonly subject?: string;
}

/** The Authorization header value of a bearer token. */
export function bearer(token: string): string {
  return `Bearer ${token}`;
}

/** A page of `GET /v1/log`. */
export interface LogPage {
  readonly firstSeq: number;
  readonly lastSeq: number;
  /** The `from` of the next page; null when this page ends at `lastSeq`. */
  readonly nextSeq: number | null;
  readonly entries: Record<string, unknown>[];
}

/** A key with the seq its read reflects. */
export interface KeyValueAtSeq extends KeyValue {
  /** The node's applied seq when it answered: the value is the key's value as of this seq. */
  readonly seq: number;
}

/** Options of reads that can wait for a node to catch up. */
export interface ReadOptions extends CallSignal {
  /** Answer only once the node has applied this seq (read-your-writes on a replica: pass a write's seq). */
  readonly minSeq?: number;
  /** How long the node may wait for `minSeq` (server default 5 s, at most 60 s); then `SeqWaitTimeoutError`. */
  readonly minSeqTimeoutMs?: number;
}

/** Options of one call, any call. */
export interface CallSignal {
  /**
   * Abandons the call when it aborts (`AbortSignal.timeout(ms)` for a deadline of the caller's own): nothing more is
   * sent or retried, and its request in flight is dropped (over HTTP its connection is closed; over the wire port its
   * answer, when it comes, is ignored). `MercuryClient` then rejects with the signal's `reason`, except for a write
   * that may have reached a node, which is `OutcomeUnknownError` (the node may still apply it; `signal.reason` says
   * why it was abandoned). `NodeClient` rejects with `UnavailableError` saying whether the request was sent.
   */
  readonly signal?: AbortSignal;
}

/** Options of put and delete. */
export interface WriteOptions extends CallSignal {
  /** Only if the key's modSeq is this (0: only if the key is absent), else `CompareFailedError`. */
  readonly ifModSeq?: number;
}

/** What a write answered. */
export interface WriteResult {
  readonly seq: number;
}

export interface TxnResult {
  /** True when every compare held and `success` was applied; false when `failure` was. */
  readonly succeeded: boolean;
  readonly seq: number;
  /** The hash (hex) of the entry at `seq` as the node holds it; absent from nodes that do not send it. */
  readonly hash?: string;
}

/**
 * Throws ClientOptionsError unless `value` is a string or a Buffer (`what` names it: key, value, prefix). Checked
 * before anything is sent: HTTP put an `undefined` value as an empty one, and a number key was a TypeError over HTTP
 * and, over the wire port, a throw inside the socket's handler that ended the process (audit, 2026-12-07). Any other
 * Uint8Array is refused too, as the watch's prefixes are: the declared type is Buffer, and the wire encoder needs one
 * (docs/decisions.md, record 68).
 */
export function checkBytes(value: unknown, what: string): asserts value is string | Buffer {
  if (typeof value === 'string') return checkWellFormed(value, what);
  if (Buffer.isBuffer(value)) return;
  const got = value === null ? 'null' : value instanceof Uint8Array ? `a ${value.constructor.name} (wrap it: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))` : typeof value;
  throw new ClientOptionsError(`${what} must be a string (UTF-8) or a Buffer, got ${got}`);
}

/** Half of a UTF-16 surrogate pair (with the u flag a whole pair is one code point, which this does not match). */
const LONE_SURROGATE = /\p{Surrogate}/u;

/**
 * Throws ClientOptionsError when text holds half of a surrogate pair. UTF-8 cannot carry it, and Buffer.from wrote
 * it as U+FFFD, so `put('\ud800', v)` wrote the key "\ufffd" (and '\udc00' the same key), where a watch on such a
 * prefix was refused (LONE_SURROGATE; audit, 2026-12-07).
 */
export function checkWellFormed(text: string, what: string): void {
  // isWellFormed (Node 20, not in TypeScript's ES2023 lib) first: about 5 ns for a key, 1.5 µs for a MiB of text,
  // against 32 ns and 35 µs for the search, which runs only to say where the half pair is.
  if ((text as unknown as { isWellFormed(): boolean }).isWellFormed()) return;
  const at = text.search(LONE_SURROGATE);
  if (at >= 0) throw new ClientOptionsError(`${what} holds half of a UTF-16 surrogate pair at index ${at}, which UTF-8 cannot carry; give such bytes as a Buffer`);
}

/** UTF-8 bytes of a string key or value; a Buffer as it is; anything else ClientOptionsError (checkBytes). */
export function toBytes(value: string | Buffer, what = 'key'): Buffer {
  checkBytes(value, what);
  return typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
}

/** A request given a pooled connection that was closed (or due for retirement) failed with this before writing a byte. */
const CLOSED_BEFORE_SEND = 'MERCURY_CLOSED_BEFORE_SEND';

/**
 * The error of an attempt that got no answer. It may have reached the node unless it is known that not one byte
 * left this process: its connection was never made, or a pooled one was found closed first (EarlyFailure). The
 * error's code does not tell: a reset or a timeout can come before the connection or after the request.
 */
function unreachable(baseUrl: string, error: unknown): UnavailableError {
  const cause = (error as { cause?: { code?: unknown; message?: unknown; name?: unknown } }).cause;
  const code = typeof cause?.code === 'string' ? cause.code : undefined;
  const failure = error instanceof AttemptError ? error.failure : undefined;
  const timedOut = (error as Error).name === 'TimeoutError' || cause?.name === 'TimeoutError';
  const unsent = failure === 'unconnected' || failure === 'unwritten';
  const what = timedOut
    ? failure === 'unconnected'
      ? 'no connection in time'
      : 'no answer in time'
    : (code ?? (typeof cause?.message === 'string' ? cause.message : (error as Error).message));
  const hint = cause === undefined ? undefined : tlsErrorHint(cause, baseUrl.startsWith('https:'));
  return new UnavailableError(`cannot reach ${baseUrl}: ${what}${hint === undefined ? '' : ` (${hint})`}`, { url: baseUrl, requestSent: !unsent, cause: error });
}

/**
 * Keep-alive connections shared by every client in the process (fetch cost ~7x the CPU per request; measured), each
 * retired before the node that served it closes it for idleness (keep-alive.ts).
 */
const HTTP_AGENT = new KeepAliveHttpAgent({ keepAlive: true });
const HTTPS_AGENT = new KeepAliveHttpsAgent({ keepAlive: true });
/** One keep-alive agent per set of TLS options (a node reloading its certificate passes a new set). */
const TLS_AGENTS = new WeakMap<ClientTls, https.Agent>();

function httpsAgent(tls: ClientTls | undefined): https.Agent {
  if (tls === undefined) return HTTPS_AGENT;
  let agent = TLS_AGENTS.get(tls);
  if (agent === undefined) {
    agent = new KeepAliveHttpsAgent({ keepAlive: true, ca: tls.ca, cert: tls.cert, key: tls.key });
    TLS_AGENTS.set(tls, agent);
  }
  return agent;
}

/** A pooled connection or, for the one retry after a pooled connection failed, a connection of its own. */
function connectionOptions(secure: boolean, tls: ClientTls | undefined, fresh: boolean): https.RequestOptions {
  if (!fresh) return { agent: secure ? httpsAgent(tls) : HTTP_AGENT };
  return { agent: false, ...(secure && tls !== undefined ? { ca: tls.ca, cert: tls.cert, key: tls.key } : {}) };
}

interface HttpAnswer {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
}

/**
 * How far an attempt got when it failed before any byte of its answer arrived. `unconnected`: its new connection was
 * never made (the TCP connect or, for https, the TLS handshake had not completed), so not one byte of the request
 * left this process, whatever the error (a connect that hangs until the timeout: audit, 2026-12-07). On a connection
 * taken from the pool, `unwritten`: not one byte of the request had been written (the connection was found closed,
 * or closed while the request waited to be written); `unanswered`: the request was written and may have reached the
 * node.
 */
type EarlyFailure = 'unconnected' | 'unwritten' | 'unanswered';

/** An attempt that failed without an answer; `cause` is the system error (or the timeout), `failure` how far it got. */
class AttemptError extends Error {
  readonly failure: EarlyFailure | undefined;
  constructor(cause: Error, failure: EarlyFailure | undefined) {
    super(cause.message, { cause });
    this.failure = failure;
  }

  /** Whether sending it again on a fresh connection is safe: a read that failed on reuse, or any unwritten request. */
  retryOnFreshConnection(method: string): boolean {
    return this.failure === 'unwritten' || (this.failure === 'unanswered' && method === 'GET');
  }
}

/** An answer whose body (or announced Content-Length) went over what the call reads; the connection was dropped. */
class OversizedAnswer extends Error {
  constructor(
    readonly status: number,
    readonly bytesMax: number,
    announced: number | undefined,
  ) {
    super(`HTTP ${status} with a body of ${announced === undefined ? `more than ${bytesMax}` : announced} bytes; at most ${bytesMax} are read for this call`);
  }
}

/** How much of a body with this status a call reads: its own bound for a 2xx, ERROR_ANSWER_BYTES_MAX for an error. */
function bodyBytesMax(status: number, answerBytesMax: number): number {
  return status >= 200 && status <= 299 ? answerBytesMax : ERROR_ANSWER_BYTES_MAX;
}

/** The Content-Length a response announced when it is over `bytesMax`; then nothing of it needs to be read. */
function announcedOver(response: http.IncomingMessage, bytesMax: number): number | undefined {
  const length = Number(response.headers['content-length']);
  return Number.isFinite(length) && length > bytesMax ? length : undefined;
}

/**
 * Reads a response body of at most `bytesMax` bytes, within `deadlineMs`; rejects with OversizedAnswer past it (the
 * response is destroyed, so nothing more is read) and with a TimeoutError at the deadline. `check`, when given, sees
 * each chunk as it arrives, and its AnswerFault or SyntaxError rejects at once, the response destroyed likewise.
 */
function readBody(response: http.IncomingMessage, bytesMax: number, deadlineMs: number, check?: AnswerCheck): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const status = response.statusCode ?? 0;
    const announced = announcedOver(response, bytesMax);
    if (announced !== undefined) {
      response.destroy();
      return reject(new OversizedAnswer(status, bytesMax, announced));
    }
    const timer = setTimeout(() => {
      const timeout = new Error(`the body was not read within ${deadlineMs} ms`);
      timeout.name = 'TimeoutError';
      response.destroy();
      reject(timeout);
    }, deadlineMs);
    const chunks: Buffer[] = [];
    let bytes = 0;
    const refuse = (error: Error): void => {
      clearTimeout(timer);
      response.destroy();
      reject(error);
    };
    response.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > bytesMax) return refuse(new OversizedAnswer(status, bytesMax, undefined));
      chunks.push(chunk);
      try {
        check?.push(chunks, bytes);
      } catch (error) {
        refuse(error as Error);
      }
    });
    response.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    response.on('end', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
  });
}

/** Whether `error` is what an AnswerCheck refused a body with (not what the connection failed with). */
function refusedBody(error: Error): boolean {
  return error instanceof AnswerFault || error instanceof SyntaxError;
}

/** A node answered `101 Switching Protocols` to a request that asked for no upgrade. */
class UnaskedUpgrade extends Error {
  constructor(status: number) {
    super(`HTTP ${status} (a protocol switch) to a request that asked for none`);
  }
}

/**
 * Whether a response says where its body ends (Content-Length or chunked). Nodes always do; a body that runs to the
 * connection's close cannot be told from one cut short, and `get` handed a cut value on as the key's (audit,
 * 2026-12-06).
 */
function framed(response: http.IncomingMessage): boolean {
  return response.headers['content-length'] !== undefined || /\bchunked\s*$/i.test(response.headers['transfer-encoding'] ?? '');
}

/** A 2xx answer whose body runs to the connection's close (see `framed`). */
class UnframedAnswer extends Error {
  constructor(status: number) {
    super(`HTTP ${status} with neither Content-Length nor chunked framing, so a cut would pass for its end`);
  }
}

/**
 * Fails `request` with UnaskedUpgrade when the answer is a protocol switch. Without an 'upgrade' listener node:http
 * destroys the socket and marks the request answered, and then emits neither 'response' nor 'error': the call waited
 * for ever, and the CLI exited 0 having printed nothing (audit, 2026-12-06).
 */
function refuseUpgrade(request: http.ClientRequest, fail: (error: Error) => void): void {
  request.on('upgrade', (response: http.IncomingMessage, socket: Socket) => {
    socket.destroy();
    fail(new UnaskedUpgrade(response.statusCode ?? 101));
  });
}

/** A timeout or an abort as it is, or, when it came before the connection was made, as the AttemptError saying so. */
function beforeConnection(error: Error, howFar: () => EarlyFailure | undefined): Error {
  return howFar() === 'unconnected' ? new AttemptError(error, 'unconnected') : error;
}

function countResend(error: AttemptError): void {
  if (error.failure === 'unwritten') freshConnectionResends.unwritten++;
  else freshConnectionResends.reads++;
}

function closedBeforeSend(): Error {
  return Object.assign(new Error('the pooled connection was closed before the request was written'), { code: CLOSED_BEFORE_SEND });
}

/**
 * Writes the request (`send`) once it has a connection, unless that connection came from the pool and is closed or
 * due for retirement: then the request fails with CLOSED_BEFORE_SEND, not one byte written (node:http writes nothing
 * before `end`). A write on a pooled connection first waits for the next poll, so that a FIN the kernel already holds
 * is seen (node:http then fails the request with "socket hang up" before it was written). Returns how far a failure
 * got (undefined: a new connection that was made, or the answer had begun). A new connection counts as made at
 * `connect`, or for https at `secureConnect`: what node:http writes before then waits in the socket, unsent. node:http
 * emits 'socket' on the tick after it got the socket, before any I/O, so neither event can come before the listener.
 */
function sendOnConnection(request: http.ClientRequest, method: string, secure: boolean, send: () => void): () => EarlyFailure | undefined {
  let bytesReadBefore = 0;
  let connection: Socket | undefined;
  let connected = false;
  let answered = false;
  let written = false;
  const write = (): void => {
    written = true;
    send();
  };
  request.once('response', () => {
    answered = true;
  });
  request.once('socket', (socket: Socket) => {
    connection = socket;
    bytesReadBefore = socket.bytesRead;
    if (!request.reusedSocket) {
      socket.once(secure ? 'secureConnect' : 'connect', () => {
        connected = true;
      });
      return write();
    }
    connected = true;
    if (connectionClosed(socket)) return void request.destroy(closedBeforeSend());
    if (method === 'GET') return write();
    afterNextPoll(() => {
      if (request.destroyed) return;
      if (connectionClosed(socket)) request.destroy(closedBeforeSend());
      else write();
    });
  });
  return () => {
    if (!connected) return 'unconnected';
    if (!request.reusedSocket || answered || connection === undefined || connection.bytesRead !== bytesReadBefore) return undefined;
    return written ? 'unanswered' : 'unwritten';
  };
}

/** What one request over node:http sends, and how much of its answer it takes. */
interface HttpRequestOptions {
  readonly url: string;
  readonly method: string;
  /** The request body; absent for a GET or a DELETE. */
  readonly body?: Buffer | string;
  /** Its Content-Type, when there is a body. */
  readonly contentType?: string;
  /** The Authorization header value (`Bearer TOKEN`, or a forwarded caller's header as it came). */
  readonly authorization?: string;
  /** Bounds the whole attempt, from connect to the last byte of the answer. */
  readonly timeoutMs: number;
  /** The most a 2xx body may hold (an error's body is bounded by ERROR_ANSWER_BYTES_MAX). */
  readonly answerBytesMax: number;
  /** Applies to an https URL. */
  readonly tls?: ClientTls;
  /** Sees a 2xx body as it arrives, and refuses it at its first fault. */
  readonly check?: AnswerCheck;
  /** Aborts when nobody waits for the answer any more. */
  readonly signal?: AbortSignal;
}

/** One attempt of an HttpRequestOptions: the URL parsed, the headers made, the connection pooled or `fresh`. */
interface HttpAttempt extends Pick<HttpRequestOptions, 'method' | 'body' | 'timeoutMs' | 'answerBytesMax' | 'tls' | 'check' | 'signal'> {
  readonly target: URL;
  readonly headers: http.OutgoingHttpHeaders;
  /** A connection of its own, not one from the pool: the one resend after a pooled connection failed. */
  readonly fresh: boolean;
}

/**
 * One request over node:http, sent once more on a fresh connection when a pooled one failed in a way that makes
 * that safe (AttemptError.retryOnFreshConnection). Failures reject with an Error whose `cause` is the system error
 * (its `code` says whether the connection was ever made), after `timeoutMs` with an Error named TimeoutError, with
 * OversizedAnswer for a 2xx body over `answerBytesMax` or an error body over ERROR_ANSWER_BYTES_MAX, and with the
 * AnswerFault or SyntaxError of `check` (given a 2xx body as it arrives) as soon as it finds one. When `signal`
 * aborts (nobody waits for the answer any more), the request is destroyed and rejects with an Error named AbortError,
 * never sent again.
 */
async function httpRequest(options: HttpRequestOptions): Promise<HttpAnswer> {
  const { url, method, body, contentType, authorization } = options;
  const headers: http.OutgoingHttpHeaders = {};
  if (authorization !== undefined) headers.authorization = authorization;
  if (contentType !== undefined) headers['content-type'] = contentType;
  if (body !== undefined) headers['content-length'] = Buffer.byteLength(body);
  const target = new URL(url);
  // Fields named one by one, not by object rest and spread: those took 6% of a GET's client CPU (measured, --cpu-prof).
  const attempt = (fresh: boolean): HttpAttempt => ({
    target,
    method,
    headers,
    body,
    timeoutMs: options.timeoutMs,
    answerBytesMax: options.answerBytesMax,
    tls: options.tls,
    check: options.check,
    signal: options.signal,
    fresh,
  });
  try {
    return await httpAttempt(attempt(false));
  } catch (error) {
    // An abandoned call is not sent again, even when the pooled connection it failed on would allow it.
    if (!(error instanceof AttemptError && error.retryOnFreshConnection(method)) || options.signal?.aborted) throw error;
    countResend(error);
    return await httpAttempt(attempt(true));
  }
}

function httpAttempt(attempt: HttpAttempt): Promise<HttpAnswer> {
  const { target, method, headers, body, timeoutMs, answerBytesMax, tls, check, fresh, signal } = attempt;
  let onSettled = (): void => {};
  const answer = new Promise<HttpAnswer>((resolve, reject) => {
    const secure = target.protocol === 'https:';
    const request = (secure ? https : http).request(target, { method, headers, ...connectionOptions(secure, tls, fresh) });
    const howFar = sendOnConnection(request, method, secure, () => request.end(body));
    // The timer rejects by itself: a request node:http has already ended (see refuseUpgrade) emits nothing more.
    const timer = setTimeout(() => {
      const timeout = new Error(`no answer within ${timeoutMs} ms`);
      timeout.name = 'TimeoutError';
      reject(beforeConnection(timeout, howFar));
      request.destroy(timeout);
    }, timeoutMs);
    if (signal !== undefined) {
      // Like the timer: rejects by itself, and drops the connection (nothing of the request goes back to the pool).
      const abort = (): void => {
        clearTimeout(timer);
        const aborted = new Error('nobody waits for the answer any more');
        aborted.name = 'AbortError';
        reject(beforeConnection(aborted, howFar));
        request.destroy(aborted);
      };
      if (signal.aborted) return abort();
      signal.addEventListener('abort', abort, { once: true });
      onSettled = () => signal.removeEventListener('abort', abort);
    }
    refuseUpgrade(request, (error) => {
      clearTimeout(timer);
      reject(error);
    });
    request.on('error', (error) => {
      clearTimeout(timer);
      reject(error.name === 'TimeoutError' ? error : new AttemptError(error, howFar()));
    });
    request.on('response', (response) => {
      noteKeepAlive(response);
      const status = response.statusCode ?? 0;
      if (status >= 200 && status <= 299 && !framed(response)) {
        clearTimeout(timer);
        request.destroy();
        return reject(new UnframedAnswer(status));
      }
      // The request's own timer bounds the whole answer; the body's deadline is only a backstop. An error's body is
      // not the answer `check` is for.
      const ok = status >= 200 && status <= 299;
      readBody(response, bodyBytesMax(status, answerBytesMax), timeoutMs, ok ? check : undefined).then(
        (answer) => {
          clearTimeout(timer);
          resolve({ status, headers: response.headers, body: answer });
        },
        (error: Error) => {
          clearTimeout(timer);
          // Dropping the connection also ends the request: nothing of it goes back to the pool.
          const refused = error instanceof OversizedAnswer || refusedBody(error);
          if (refused) request.destroy();
          reject(refused || error.name === 'TimeoutError' ? error : new AttemptError(error, undefined));
        },
      );
    });
  });
  // The signal lets go of a settled request: a caller's signal may outlive it by far.
  return signal === undefined ? answer : answer.finally(() => onSettled());
}

/**
 * A GET whose answer is streamed to the caller (snapshots, entry streams): resolves with the response once its status
 * line arrived, and rejects with the node's typed error for a non-2xx answer. `timeoutMs` bounds the wait for the
 * status line and each silence after it, not the whole transfer, which may take minutes: `signal` ends it (the
 * request and the response) whenever its caller decides. Sent once more on a fresh connection when a pooled one
 * failed before the status line, as any read.
 */
async function httpStream(url: string, timeoutMs: number, tls: ClientTls | undefined, authorization: string | undefined, signal: AbortSignal | undefined): Promise<http.IncomingMessage> {
  const target = new URL(url);
  try {
    return await httpStreamAttempt(target, timeoutMs, tls, authorization, signal, false);
  } catch (error) {
    if (!(error instanceof AttemptError && error.retryOnFreshConnection('GET')) || signal?.aborted) throw error;
    countResend(error);
    return await httpStreamAttempt(target, timeoutMs, tls, authorization, signal, true);
  }
}

function httpStreamAttempt(
  target: URL,
  timeoutMs: number,
  tls: ClientTls | undefined,
  authorization: string | undefined,
  signal: AbortSignal | undefined,
  fresh: boolean,
): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const secure = target.protocol === 'https:';
    const headers: http.OutgoingHttpHeaders = authorization === undefined ? {} : { authorization };
    const request = (secure ? https : http).request(target, { method: 'GET', headers, signal, ...connectionOptions(secure, tls, fresh) });
    const howFar = sendOnConnection(request, 'GET', secure, () => request.end());
    request.setTimeout(timeoutMs, () => {
      const timeout = new Error(`no data for ${timeoutMs} ms`);
      timeout.name = 'TimeoutError';
      reject(beforeConnection(timeout, howFar));
      request.destroy(timeout);
    });
    refuseUpgrade(request, reject);
    request.on('error', (error) => reject(error.name === 'TimeoutError' ? error : new AttemptError(error, howFar())));
    request.on('response', (response) => {
      noteKeepAlive(response);
      resolve(response);
    });
  });
}

/** A header that must hold an integer >= `min` (the seqs of a get); AnswerFault otherwise. */
function integerHeader(answer: HttpAnswer, name: string, min: number): number {
  const value = answer.headers[name];
  const text = Array.isArray(value) ? value[0] : value;
  const number = text !== undefined && /^[0-9]{1,16}$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(number) || number < min) throw new AnswerFault(`header ${name} is ${JSON.stringify(text) ?? 'missing'}; it must be an integer >= ${min}`);
  return number;
}

function readQuery(options: ReadOptions, query = new URLSearchParams()): URLSearchParams {
  if (options.minSeq !== undefined) query.set('minSeq', String(options.minSeq));
  if (options.minSeqTimeoutMs !== undefined) query.set('timeoutMs', String(options.minSeqTimeoutMs));
  return query;
}

function queryString(query: URLSearchParams): string {
  return query.size === 0 ? '' : `?${query.toString()}`;
}

/** What a call of NodeClient sends beyond its method and path. */
interface CallOptions extends Pick<HttpRequestOptions, 'body' | 'contentType' | 'check' | 'signal'> {
  /** Time on top of the client's timeout: a read's `minSeqTimeoutMs`, which the node may legitimately wait. */
  readonly extraTimeMs?: number;
}

interface JsonCallOptions extends Omit<CallOptions, 'check'> {
  /** The most JSON values the answer may hold (default SMALL_ANSWER_VALUES_MAX), counted before it is parsed. */
  readonly valuesMax?: number;
}

/**
 * Checks the numbers a call sends (`minSeq`, `minSeqTimeoutMs`, `ifModSeq`) and throws ClientOptionsError naming a bad
 * one. Here, not only in MercuryClient, because NodeClient is public too and the wire frame cannot carry what the node
 * would refuse over HTTP: a NaN `ifModSeq` went as 0 ("only if absent") and wrote, and a negative `minSeq` threw out
 * of the socket's handler when the connection became ready, an uncaught exception that ended the process (audit,
 * 2026-12-07). Over HTTP the same mistakes are refused alike, before anything is sent.
 */
function checkCallOptions(options: ReadOptions & { ifModSeq?: number }): void {
  if (typeof options !== 'object' || options === null) throw new ClientOptionsError('options must be an object');
  checkSignal(options.signal);
  integerOption(options, 'minSeq', 0, 0, Number.MAX_SAFE_INTEGER);
  integerOption(options, 'minSeqTimeoutMs', 0, 0, MIN_SEQ_WAIT_MS_MAX);
  integerOption(options, 'ifModSeq', 0, 0, Number.MAX_SAFE_INTEGER);
}

/** A call's `signal`, when given, must be an AbortSignal: anything else would never abort, and the caller not know. */
export function checkSignal(signal: unknown): void {
  const problem = signalProblem(signal);
  if (problem !== undefined) throw problem;
}

/** The error of a `signal` that is not an AbortSignal, or undefined. */
export function signalProblem(signal: unknown): ClientOptionsError | undefined {
  if (signal === undefined || signal instanceof AbortSignal) return undefined;
  return new ClientOptionsError(`signal must be an AbortSignal, got ${signal === null ? 'null' : typeof signal}`);
}

/** Both signals, when a call has its own and the client one for all its calls (a replica forwarding a write). */
function eitherSignal(call: AbortSignal | undefined, client: AbortSignal | undefined): AbortSignal | undefined {
  if (call === undefined) return client;
  return client === undefined ? call : AbortSignal.any([call, client]);
}

/**
 * `call()`, with what it throws (an argument refused before anything is sent: checkCallOptions, toBytes) as a rejected
 * promise: get, put and delete reject rather than throw.
 */
function rejectingThrows<T>(call: () => Promise<T>): Promise<T> {
  try {
    return call();
  } catch (error) {
    return Promise.reject(error instanceof Error ? error : new ClientOptionsError(String(error)));
  }
}

export class NodeClient {
  /** For a wire URL (`mercury+tcp://`, `mercury+tls://`): get, put and delete go over the wire port (wire.ts). */
  private readonly wire: WireChannel | undefined;

  /**
   * `timeoutMs` bounds each request from connect to the last byte of the answer; a read with `minSeq` gets its
   * `minSeqTimeoutMs` on top, since the node may legitimately hold it that long. `tls` applies to https URLs.
   * `authorization` is the Authorization header sent with every request: `Bearer TOKEN` (see `bearer`), or, on a
   * replica forwarding a write, its caller's header as it came. `signal`, when it aborts, ends the HTTP requests in
   * flight (they reject with UnavailableError; one already sent may have been done): a replica forwarding a write
   * whose caller left.
   */
  constructor(
    readonly baseUrl: string,
    private readonly timeoutMs = REQUEST_TIMEOUT_MS_DEFAULT,
    readonly tls?: ClientTls,
    private readonly authorization?: string,
    private readonly signal?: AbortSignal,
  ) {
    this.wire = isWireUrl(baseUrl) ? wireChannel(baseUrl, tls, authorization, timeoutMs) : undefined;
  }

  /** Calls other than get, put and delete need the HTTP API. */
  private httpOnly(what: string): void {
    if (this.wire !== undefined)
      throw new ClientOptionsError(`${what}: ${this.baseUrl} is a wire URL, which carries get, put and delete only; give the node's http(s):// URL for ranges, transactions, status, tokens and watches`);
  }

  /** One request to this node's HTTP API: a 2xx answer, or the typed error of any other. */
  private async request(method: string, path: string, answerBytesMax: number, options: CallOptions = {}): Promise<HttpAnswer> {
    this.httpOnly(`${method} ${path}`);
    const { body, contentType, extraTimeMs = 0, check, signal } = options;
    let answer: HttpAnswer;
    try {
      answer = await httpRequest({
        url: `${this.baseUrl}${path}`,
        method,
        body,
        contentType,
        authorization: this.authorization,
        timeoutMs: this.timeoutMs + extraTimeMs,
        answerBytesMax,
        tls: this.tls,
        check,
        signal: eitherSignal(signal, this.signal),
      });
    } catch (error) {
      throw this.failed(`${method} ${path}`, error);
    }
    if (answer.status < 200 || answer.status > 299) throw serverError(answer.status, answer.body.toString('utf8'), { what: `${method} ${path}`, url: this.baseUrl }, answer.headers['retry-after']);
    return answer;
  }

  /**
   * GETs `path` and returns the response body as a stream, for answers too large to hold (a snapshot). Errors as
   * for every request: UnavailableError if the node cannot be reached, the typed ServerError for a non-2xx answer.
   * The stream itself errors if the connection breaks or stays silent for STREAM_IDLE_TIMEOUT_MS (or the client's
   * timeout, if longer). That bounds silence only, not a node that trickles: a caller that needs a deadline or a
   * minimum rate (src/cli/transfer-pace.ts) passes `signal` and aborts it; the call then rejects with its reason, and a
   * stream already returned is destroyed.
   */
  async stream(path: string, options: { signal?: AbortSignal } = {}): Promise<http.IncomingMessage> {
    this.httpOnly(`GET ${path}`);
    const { signal } = options;
    let response: http.IncomingMessage;
    try {
      response = await httpStream(`${this.baseUrl}${path}`, Math.max(this.timeoutMs, STREAM_IDLE_TIMEOUT_MS), this.tls, this.authorization, signal);
    } catch (error) {
      throw signal?.aborted ? (signal.reason as Error) : this.failed(`GET ${path}`, error);
    }
    const status = response.statusCode ?? 0;
    if (status >= 200 && status <= 299) return response;
    let body: Buffer;
    try {
      body = await readBody(response, ERROR_ANSWER_BYTES_MAX, this.timeoutMs);
    } catch (error) {
      throw signal?.aborted ? (signal.reason as Error) : this.failed(`GET ${path}`, error);
    }
    throw serverError(status, body.toString('utf8'), { what: `GET ${path}`, url: this.baseUrl }, response.headers['retry-after']);
  }

  /**
   * The error of a request that got no usable answer: InvalidAnswerError when what came was not an HTTP answer the call
   * can take (node:http's parser refuses it: HPE_ codes), UnavailableError when nothing came (audit, 2026-12-06: a
   * port that answered SSH's banner, or 64 KiB of headers, was "cannot reach URL: HPE_INVALID_CONSTANT").
   */
  private failed(what: string, error: unknown): UnavailableError {
    if (error instanceof OversizedAnswer) return this.invalid('ANSWER_TOO_LARGE', what, error);
    if (error instanceof UnaskedUpgrade || error instanceof UnframedAnswer) return this.invalid('PROTOCOL', what, error);
    if (refusedBody(error as Error)) return this.invalid('PROTOCOL', what, error as Error, unfitBody(error as Error));
    const code = (error as { cause?: { code?: unknown } }).cause?.code;
    if (code === 'HPE_HEADER_OVERFLOW')
      return this.invalid('ANSWER_TOO_LARGE', what, error as Error, `headers over the ${http.maxHeaderSize} bytes read of them`);
    if (typeof code === 'string' && code.startsWith('HPE_'))
      return this.invalid('PROTOCOL', what, error as Error, `something that is not HTTP (${code}: ${(error as Error).message}); is ${this.baseUrl} the node's HTTP port?`);
    return unreachable(this.baseUrl, error);
  }

  /** InvalidAnswerError `code`: `what` was answered `why` (a phrase), `cause` being what found it. */
  private invalid(code: 'PROTOCOL' | 'ANSWER_TOO_LARGE', what: string, cause: Error, why = cause.message): InvalidAnswerError {
    return new InvalidAnswerError(code, `${what}: ${this.baseUrl} answered ${why}; not a Mercury answer (a proxy in between, or a broken node)`, { url: this.baseUrl, cause });
  }

  /**
   * A JSON answer of at most `answerBytesMax` bytes and `valuesMax` JSON values (refused as it arrives, before it is
   * parsed: answers.ts AnswerCheck), checked and copied by `read` (answers.ts).
   */
  private async json<T>(method: string, path: string, answerBytesMax: number, read: (json: unknown) => T, options: JsonCallOptions = {}): Promise<T> {
    const check = new AnswerCheck(options.valuesMax ?? SMALL_ANSWER_VALUES_MAX, answerBytesMax);
    const answer = await this.request(method, path, answerBytesMax, { body: options.body, contentType: options.contentType, extraTimeMs: options.extraTimeMs, check, signal: options.signal });
    return this.checked(`${method} ${path}`, () => read(check.value(answer.body)));
  }

  /**
   * Runs a check of an answer: a body that is not JSON, an AnswerFault, or a RangeError (what V8 throws when an input is
   * too much for it: a stack, a string's length) becomes InvalidAnswerError (PROTOCOL), which fails over.
   */
  private checked<T>(what: string, check: () => T): T {
    try {
      return check();
    } catch (error) {
      if (!(error instanceof SyntaxError || error instanceof AnswerFault || error instanceof RangeError)) throw error;
      throw this.invalid('PROTOCOL', what, error, unfitBody(error));
    }
  }

  // get, put and delete hand a wire URL's call to the channel without an async layer of their own (wire.ts says why).

  /** Returns the key, or undefined if it does not exist. */
  get(key: string | Buffer, options: ReadOptions = {}): Promise<KeyValueAtSeq | undefined> {
    return rejectingThrows(() => {
      checkCallOptions(options);
      const bytes = toBytes(key);
      return this.wire !== undefined ? this.wire.get(bytes, options) : this.httpGet(bytes, options);
    });
  }

  private async httpGet(bytes: Buffer, options: ReadOptions): Promise<KeyValueAtSeq | undefined> {
    try {
      const path = `/v1/kv/${encodeKeyPath(bytes)}${queryString(readQuery(options))}`;
      const answer = await this.request('GET', path, VALUE_ANSWER_BYTES_MAX, { extraTimeMs: waitTimeMs(options), signal: options.signal });
      return this.checked(`GET ${path}`, () => {
        const seq = integerHeader(answer, 'x-mercury-seq', 0);
        checkMinSeq(seq, options.minSeq);
        return {
          key: bytes,
          value: answer.body,
          seq,
          createSeq: integerHeader(answer, 'x-mercury-create-seq', 1),
          modSeq: integerHeader(answer, 'x-mercury-mod-seq', 1),
          version: integerHeader(answer, 'x-mercury-version', 1),
        };
      });
    } catch (error) {
      if (!(error instanceof NotFoundError && error.code === 'KEY_NOT_FOUND')) throw error;
      // Absent at the seq it was read at (the error's `seq`), which must honour minSeq as a value's does.
      if (options.minSeq !== undefined) this.checked(`GET /v1/kv/${encodeKeyPath(bytes)}`, () => checkMinSeq(integer(error.details ?? {}, 'seq', 'error'), options.minSeq));
      return undefined;
    }
  }

  put(key: string | Buffer, value: string | Buffer, options: WriteOptions = {}): Promise<WriteResult> {
    return rejectingThrows(() => {
      checkCallOptions(options);
      const keyBytes = toBytes(key);
      const valueBytes = toBytes(value, 'value');
      if (this.wire !== undefined) return this.wire.put(keyBytes, valueBytes, options.ifModSeq, options.signal);
      const query = options.ifModSeq === undefined ? '' : `?ifModSeq=${options.ifModSeq}`;
      return this.json('PUT', `/v1/kv/${encodeKeyPath(keyBytes)}${query}`, SMALL_ANSWER_BYTES_MAX, writeAnswer, { body: valueBytes, contentType: 'application/octet-stream', signal: options.signal });
    });
  }

  delete(key: string | Buffer, options: WriteOptions = {}): Promise<{ seq: number; deleted: boolean }> {
    return rejectingThrows(() => {
      checkCallOptions(options);
      const bytes = toBytes(key);
      if (this.wire !== undefined) return this.wire.delete(bytes, options.ifModSeq, options.signal);
      const query = options.ifModSeq === undefined ? '' : `?ifModSeq=${options.ifModSeq}`;
      return this.json('DELETE', `/v1/kv/${encodeKeyPath(bytes)}${query}`, SMALL_ANSWER_BYTES_MAX, deleteAnswer, { signal: options.signal });
    });
  }

  async deletePrefix(prefix: string, options: CallSignal = {}): Promise<WriteResult> {
    checkWellFormed(prefix, 'prefix');
    checkCallOptions(options);
    return this.json('DELETE', `/v1/kv?prefix=${encodeURIComponent(prefix)}`, SMALL_ANSWER_BYTES_MAX, writeAnswer, { signal: options.signal });
  }

  /**
   * One page of keys under a prefix, from one snapshot of the node (`seq`); pass `cursor` on for the next. A page
   * asked from a cursor must continue after it (answers.ts), so that a walk cannot page for ever through the same keys.
   */
  async rangePage(prefix: string, options: { limit?: number; cursor?: string | null } & ReadOptions = {}): Promise<RangePageResult> {
    checkCallOptions(options);
    // A number would go as its digits, a Buffer as its text (any other bytes mangled), then fail the page check.
    if (typeof prefix !== 'string') throw new ClientOptionsError(`prefix must be a string ('' for every key), got ${prefix === null ? 'null' : typeof prefix}`);
    checkWellFormed(prefix, 'prefix');
    const query = new URLSearchParams({ prefix });
    if (options.limit !== undefined) query.set('limit', String(options.limit));
    if (options.cursor) query.set('cursor', options.cursor);
    readQuery(options, query);
    const path = `/v1/kv?${query.toString()}`;
    // Without a limit the node picks its default; a page holds no more than RANGE_LIMIT_MAX either way.
    const limit = options.limit ?? RANGE_LIMIT_MAX;
    const page = await this.json('GET', path, RANGE_PAGE_ANSWER_BYTES_MAX, rangeAnswer, {
      extraTimeMs: waitTimeMs(options),
      signal: options.signal,
      valuesMax: limit * RANGE_ITEM_VALUES_MAX + ANSWER_VALUES_OVERHEAD,
    });
    this.checked(`GET ${path}`, () => checkMinSeq(page.seq, options.minSeq));
    this.checked(`GET ${path}`, () => checkRangePage(Buffer.from(prefix, 'utf8'), limit, page));
    if (options.cursor) this.checked(`GET ${path}`, () => checkRangeAdvances(Buffer.from(options.cursor!, 'base64url'), page));
    return { seq: page.seq, more: page.more, cursor: page.cursor, items: page.items };
  }

  /** Every key under a prefix, page by page. */
  async *range(prefix: string, pageLimit = RANGE_PAGE_LIMIT_DEFAULT): AsyncGenerator<KeyValue> {
    let cursor: string | null = null;
    do {
      const page: RangePageResult = await this.rangePage(prefix, { limit: pageLimit, cursor });
      yield* page.items;
      cursor = page.more ? page.cursor : null;
    } while (cursor !== null);
  }

  async txn(txn: TxnJson, options: CallSignal = {}): Promise<TxnResult> {
    checkCallOptions(options);
    return this.json('POST', '/v1/txn', SMALL_ANSWER_BYTES_MAX, txnAnswer, { body: JSON.stringify(txn), contentType: 'application/json', signal: options.signal });
  }

  /**
   * One page of the log from `from` (default: the first retained seq): at most `limit` entries, fewer when the node's
   * byte budget ends the page first. `nextSeq` is the `from` of the next page, null once the page reaches `lastSeq`;
   * one that is not after `from` (or, without `from`, the first seq) is InvalidAnswerError, as a walk would not end.
   */
  async log(from?: number, limit?: number): Promise<LogPage> {
    const query = new URLSearchParams();
    if (from !== undefined) query.set('from', String(from));
    if (limit !== undefined) query.set('limit', String(limit));
    const path = `/v1/log?${query.toString()}`;
    const page = await this.json('GET', path, LARGE_ANSWER_BYTES_MAX, logAnswer, { valuesMax: LOG_ANSWER_VALUES_MAX });
    this.checked(`GET ${path}`, () => checkLogPage(from ?? page.firstSeq, limit ?? LOG_READ_LIMIT_MAX, page));
    return page;
  }

  /** Every entry from `from` to the last seq the node held when the walk reached it, page by page. */
  async *logEntries(from?: number, pageLimit?: number): AsyncGenerator<Record<string, unknown>> {
    let next: number | null | undefined = from;
    do {
      const page: LogPage = await this.log(next ?? undefined, pageLimit);
      yield* page.entries;
      next = page.nextSeq;
    } while (next !== null);
  }

  async status(options: CallSignal = {}): Promise<NodeStatus> {
    checkCallOptions(options);
    return this.json('GET', '/v1/status', SMALL_ANSWER_BYTES_MAX, statusAnswer<NodeStatus>, { signal: options.signal });
  }

  /** Creates a token (admin); the answer holds its secret, `token`, which no later call shows again. */
  /** `expiresInMs`: it authenticates nothing from that long after the node made it (1 s to 3650 days). */
  async createToken(name: string, scopes: readonly string[], options: { subject?: string; expiresInMs?: number } = {}): Promise<TokenInfo & { token?: string; seq: number }> {
    const body = JSON.stringify({
      name,
      scopes,
      ...(options.subject === undefined ? {} : { subject: options.subject }),
      ...(options.expiresInMs === undefined ? {} : { expiresInMs: options.expiresInMs }),
    });
    return this.json('POST', '/v1/auth/tokens', SMALL_ANSWER_BYTES_MAX, createdTokenAnswer, { body, contentType: 'application/json' });
  }

  /** The tokens the node knows (admin): never their secrets. */
  /** `unreadable`: token records the node could not read (grant nothing); revokeToken removes them by id. */
  async listTokens(): Promise<{ tokens: TokenInfo[]; unreadable: { id: string; damaged: true; why: string }[]; seq: number }> {
    return this.json('GET', '/v1/auth/tokens', LARGE_ANSWER_BYTES_MAX, tokenListAnswer, { valuesMax: TOKEN_LIST_VALUES_MAX });
  }

  /** Revokes a token by id (admin); NotFoundError when no such token exists. */
  async revokeToken(id: string): Promise<{ id: string; revoked: boolean; damaged?: boolean; seq: number }> {
    return this.json('DELETE', `/v1/auth/tokens?id=${encodeURIComponent(id)}`, SMALL_ANSWER_BYTES_MAX, revokedTokenAnswer);
  }

  /** Asks a replica to discard its chain and take a full snapshot from its upstream (NOT_A_REPLICA on the root, RESYNC_IN_PROGRESS while one runs). */
  async resync(): Promise<{ resync: string; seq: number }> {
    return this.json('POST', '/v1/replication/resync', SMALL_ANSWER_BYTES_MAX, resyncAnswer);
  }
}

/** What was wrong with a body a check refused (a phrase for InvalidAnswerError). */
function unfitBody(error: Error): string {
  if (error instanceof SyntaxError) return `a body that is not JSON (${error.message})`;
  if (error instanceof AnswerFault) return `a body that breaks the API: ${error.message}`;
  return `a body this client could not decode (${String(error)})`;
}

/** Extra time a read may take because the node waits for its `minSeq`. */
function waitTimeMs(options: ReadOptions): number {
  return options.minSeq === undefined ? 0 : (options.minSeqTimeoutMs ?? MIN_SEQ_WAIT_MS_DEFAULT);
}

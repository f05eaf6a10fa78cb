/**
 * The client side of the wire port (`mercury+tcp://HOST:PORT`, `mercury+tls://HOST:PORT`; frames in src/api/wire.ts):
 * get, put and delete of one key, with the HTTP API's semantics and errors. `NodeClient` uses it for those three
 * calls when given a wire URL.
 *
 * One connection per URL, credentials and TLS options is shared by every client in the process, and carries every
 * request in flight at once: requests issued in one event-loop turn leave in one write, and the node answers them as
 * they finish, in any order, matched by id. At most the node's READY limit are in flight; the rest wait here.
 *
 * What a caller learns when things go wrong, as with HTTP (errors.ts):
 * - an ERROR frame for a request: its typed `ServerError`;
 * - an ERROR frame for the connection (id 0: a bad credential, a revoked token, too many connections): that error for
 *   every request still unanswered, which the node did not process;
 * - GOAWAY (the node closed an idle connection, or is shutting down): every request still unanswered was never
 *   processed, so it is sent again on a new connection, once; this is the keep-alive race of HTTP, settled by the
 *   protocol;
 * - the connection failed or was cut: `UnavailableError`, with `requestSent` false for a request that never left this
 *   process (so even a write may go elsewhere), true for one that did (a write's outcome is then unknown);
 * - no answer within the timeout: `UnavailableError` with `requestSent` true; if no whole frame came on the connection
 *   since that request left, the connection is taken as stuck and ends (the other requests in flight fail the same
 *   way, those not yet sent go on a new connection);
 * - not sent within the timeout because the connection never became READY: `UnavailableError` with `requestSent`
 *   false, and the connection ends (the requests still waiting go on a new one).
 */
import { isIP, connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import {
  ERROR_STATUS,
  ErrorCode,
  KEY_BYTES_MAX,
  MIN_SEQ_WAIT_MS_DEFAULT,
  MercuryError,
  WIRE_ID_MAX,
  WireFrameReader,
  WireFrameType,
  decodeAnswer,
  encodeDelete,
  encodeGet,
  encodeHello,
  encodePut,
  validateKey,
  type WireAnswer,
} from '../api/index.js';
import { systemClock, type Clock, type TimerHandle } from '../clock/index.js';
import { ClientOptionsError, InvalidAnswerError, UnavailableError, serverError, type ServerError } from './errors.js';
import { TLS_VERIFY_CODES, tlsErrorHint, type ClientTls } from './tls.js';

/** What a GET returns (the shape of NodeClient's). */
export interface WireValue {
  readonly key: Buffer;
  readonly value: Buffer;
  readonly seq: number;
  readonly createSeq: number;
  readonly modSeq: number;
  readonly version: number;
}

/** Schemes of wire URLs: plaintext and TLS. */
export const WIRE_SCHEMES: readonly string[] = ['mercury+tcp:', 'mercury+tls:'];

export function isWireUrl(url: string): boolean {
  return url.startsWith('mercury+tcp://') || url.startsWith('mercury+tls://');
}

/** Before READY, requests wait; this many may be in flight until the node says its limit. */
const IN_FLIGHT_BEFORE_READY = 1;
/** The largest frame the client accepts from a node: a VALUE of the largest value any node may hold, and some. */
const ANSWER_FRAME_BYTES_MAX = 17 * 1024 * 1024 + 64;

/** Error codes of a connection that was never made: no byte of any request left this process. */
const NOT_CONNECTED_CODES: ReadonlySet<string> = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);

interface Request {
  readonly what: string;
  readonly encode: (id: number) => Buffer;
  readonly deadlineMs: number;
  /** The caller's result from the node's answer (GET: the value or undefined); throws on an unexpected frame. */
  readonly settle: (answer: WireAnswer) => unknown;
  readonly resolve: (result: unknown) => void;
  readonly reject: (error: Error) => void;
  id: number;
  /** Bytes of it left this process. */
  sent: boolean;
  /** When it was handed to the connection (monotonic ms): a timeout with nothing received since ends the connection. */
  sentMs: number;
  /** Sent again after a GOAWAY already: a second GOAWAY fails it (requestSent false). */
  resent: boolean;
  /** The connection that holds it (waiting or in flight), when its caller may abandon it (a signal). */
  link?: Link;
}

/** The error of a request its caller abandoned (its signal aborted): `sent` says whether any byte of it left. */
function abandoned(what: string, url: string, sent: boolean): UnavailableError {
  const cause = new Error('the call was abandoned: its signal aborted');
  cause.name = 'AbortError';
  return new UnavailableError(`${what} ${url}: abandoned by its caller ${sent ? 'after it was sent' : 'before it was sent'}`, { url, requestSent: sent, cause });
}

/** One connection: HELLO, READY, then requests. Ends on close, GOAWAY or a connection ERROR; a new one replaces it. */
class Link {
  private readonly socket: Socket;
  private readonly reader = new WireFrameReader(ANSWER_FRAME_BYTES_MAX);
  private readonly inFlight = new Map<number, Request>();
  private readonly waiting: Request[] = [];
  private readonly out: Buffer[] = [];
  private flushScheduled = false;
  private ready = false;
  private inFlightMax = IN_FLIGHT_BEFORE_READY;
  private nextId = 1;
  /**
   * When the node last completed a frame on this connection (monotonic ms). Frames, not bytes: a node that trickles a
   * frame that never ends (a byte a second of a 17 MiB one) otherwise kept the connection, and every later request
   * timed out on it (audit, 2026-12-06).
   */
  private receivedMs: number;
  ended = false;
  private readonly sweepTimer: TimerHandle;

  constructor(
    private readonly channel: WireChannel,
    private readonly clock: Clock,
  ) {
    const { host, port, secure, tls } = channel;
    this.socket = secure
      ? tlsConnect({ host, port, ca: tls?.ca, cert: tls?.cert, key: tls?.key, servername: isIP(host) === 0 ? host : undefined, minVersion: 'TLSv1.2' })
      : netConnect({ host, port });
    this.receivedMs = clock.monotonicMs();
    this.socket.setNoDelay(true);
    this.socket.on(secure ? 'secureConnect' : 'connect', () => this.queueFrame(encodeHello(channel.token)));
    this.socket.on('data', (chunk: Buffer) => this.received(chunk));
    this.socket.on('error', (error: Error) => this.end(this.unreachable(error)));
    this.socket.on('close', () => this.end(new Error('the node closed the connection')));
    this.sweepTimer = clock.setInterval(() => this.sweep(), channel.sweepIntervalMs);
  }

  submit(request: Request): void {
    if (request.link !== undefined) request.link = this;
    this.waiting.push(request);
    this.socket.ref();
    this.sendWaiting();
  }

  private sendWaiting(): void {
    while (this.ready && this.waiting.length > 0 && this.inFlight.size < this.inFlightMax) {
      const request = this.waiting.shift()!;
      const id = this.takeId();
      let frame: Buffer;
      try {
        frame = request.encode(id);
      } catch (error) {
        // Runs inside the socket's handlers (READY, an answer): a throw here was an uncaught exception that ended the
        // process. NodeClient checks what it sends (http-client.ts checkCallOptions); this keeps any miss to the one
        // request, refused, nothing of it sent.
        request.reject(error as Error);
        continue;
      }
      request.id = id;
      request.sent = true;
      request.sentMs = this.clock.monotonicMs();
      this.inFlight.set(id, request);
      this.queueFrame(frame);
    }
  }

  /**
   * Its caller abandoned `request`: one still waiting is dropped, nothing of it sent; one in flight is failed as sent
   * and keeps its id until its answer comes (dropped then) or its deadline passes, so that no later request takes an id
   * whose answer is still on its way.
   */
  abandon(request: Request): void {
    const waiting = this.waiting.indexOf(request);
    if (waiting >= 0) {
      this.waiting.splice(waiting, 1);
      request.reject(abandoned(request.what, this.channel.url, false));
    } else if (this.inFlight.get(request.id) === request) request.reject(abandoned(request.what, this.channel.url, true));
  }

  private takeId(): number {
    // Ids wrap; one still in flight after 4 billion requests is skipped.
    for (;;) {
      const id = this.nextId;
      this.nextId = id === WIRE_ID_MAX ? 1 : id + 1;
      if (!this.inFlight.has(id)) return id;
    }
  }

  private queueFrame(frame: Buffer): void {
    this.out.push(frame);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // Every request issued in this turn (a loop of callers answered by one read) leaves in one write.
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.ended || this.out.length === 0) return;
    this.socket.write(this.out.length === 1 ? this.out[0]! : Buffer.concat(this.out));
    this.out.length = 0;
  }

  private received(chunk: Buffer): void {
    this.reader.push(chunk);
    for (;;) {
      let answer: WireAnswer;
      try {
        const frame = this.reader.next();
        if (frame === undefined) break;
        this.receivedMs = this.clock.monotonicMs();
        // The reader returns only whole frames here, or an oversized one's header (this reader asks for no heads).
        if (!('body' in frame)) throw new Error(`the node sent a frame of ${frame.length} bytes`);
        answer = decodeAnswer(frame);
      } catch (error) {
        this.end(new InvalidAnswerError('PROTOCOL', `${this.channel.url}: not a Mercury wire port, or a broken connection (${(error as Error).message})`, { url: this.channel.url, cause: error }));
        this.socket.destroy();
        return;
      }
      this.answer(answer);
      if (this.ended) return;
    }
    if (this.inFlight.size === 0 && this.waiting.length === 0) this.socket.unref();
  }

  private answer(answer: WireAnswer): void {
    if (answer.type === WireFrameType.READY) {
      this.ready = true;
      this.inFlightMax = Math.max(1, answer.inFlightMax);
      this.sendWaiting();
      return;
    }
    if (answer.type === WireFrameType.GOAWAY) {
      this.goAway();
      return;
    }
    if (answer.type === WireFrameType.ERROR && answer.id === 0) {
      this.end(this.serverError(answer.json, 'connection'));
      this.socket.destroy();
      return;
    }
    const request = this.inFlight.get(answer.id);
    // Unknown: a request that timed out here; its answer is dropped.
    if (request === undefined) return;
    this.inFlight.delete(answer.id);
    if (answer.type === WireFrameType.ERROR) request.reject(this.serverError(answer.json, request.what));
    else {
      try {
        request.resolve(request.settle(answer));
      } catch (error) {
        request.reject(error as Error);
      }
    }
    this.sendWaiting();
  }

  /** The node read nothing after what it answered: everything unanswered goes to a new connection, once. */
  private goAway(): void {
    const unanswered = [...this.inFlight.values(), ...this.waiting];
    this.inFlight.clear();
    this.waiting.length = 0;
    this.finish();
    // Closed once our end is flushed, not when the node closes its own: a node that keeps its half open would otherwise
    // hold one socket here for each GOAWAY, without bound (an audit, 2026-12-06: 800 open after 100 gets).
    this.socket.destroySoon();
    for (const request of unanswered) {
      if (request.resent) {
        request.reject(new UnavailableError(`${request.what}: ${this.channel.url} closed two connections before answering; the request was not processed`, { url: this.channel.url, requestSent: false }));
        continue;
      }
      request.resent = true;
      request.sent = false;
      this.channel.resubmit(request);
    }
  }

  private finish(): void {
    this.ended = true;
    this.sweepTimer.cancel();
    this.channel.linkEnded(this);
  }

  /** Fails what is left: requests sent may have been processed (unless `error` is the node's own connection ERROR). */
  end(error: Error): void {
    if (this.ended) return;
    this.finish();
    // Nothing more is read or sent on it (close(), a timeout, the node's connection ERROR).
    this.socket.destroySoon();
    const nodeRefused = error instanceof MercuryError;
    for (const request of this.inFlight.values()) request.reject(nodeRefused ? error : this.withSent(error, true));
    for (const request of this.waiting) request.reject(nodeRefused ? error : this.withSent(error, false));
    this.inFlight.clear();
    this.waiting.length = 0;
  }

  private withSent(error: Error, sent: boolean): Error {
    if (!(error instanceof UnavailableError)) return new UnavailableError(`cannot reach ${this.channel.url}: ${error.message}`, { url: this.channel.url, requestSent: sent, cause: error });
    if (error.requestSent === sent) return error;
    return new UnavailableError(error.message, { url: this.channel.url, requestSent: sent && error.requestSent, cause: error.cause });
  }

  private unreachable(error: Error & { code?: string }): UnavailableError {
    const code = error.code;
    const hint = tlsErrorHint(error, this.channel.secure);
    const connected = code === undefined || !(NOT_CONNECTED_CODES.has(code) || TLS_VERIFY_CODES.has(code));
    return new UnavailableError(`cannot reach ${this.channel.url}: ${code ?? error.message}${hint === undefined ? '' : ` (${hint})`}`, {
      url: this.channel.url,
      requestSent: connected,
      cause: error,
    });
  }

  private serverError(json: string, what: string): ServerError | InvalidAnswerError {
    let code: string | undefined;
    try {
      code = (JSON.parse(json) as { error?: { code?: string } }).error?.code;
    } catch {
      // serverError reports a body it cannot read.
    }
    const status = code !== undefined && Object.hasOwn(ErrorCode, code) ? ERROR_STATUS[code as ErrorCode] : 500;
    return serverError(status, json, { what, url: this.channel.url });
  }

  /** Ends a stuck connection: what is in flight fails with `error`, as sent; what never left goes on a new connection. */
  private replace(error: Error): void {
    const unsent = this.waiting.splice(0);
    this.end(error);
    this.socket.destroy();
    for (const waiting of unsent) this.channel.resubmit(waiting);
  }

  private sweep(): void {
    const nowMs = this.clock.monotonicMs();
    for (const [id, request] of this.inFlight) {
      if (nowMs < request.deadlineMs) continue;
      const timeout = new UnavailableError(`cannot reach ${this.channel.url}: no answer to ${request.what} in time`, { url: this.channel.url, requestSent: true });
      if (this.receivedMs <= request.sentMs) {
        // Nothing came on this connection since the request left: it is stuck (a node that stopped answering, a path
        // that drops packets without a reset), and every request after it would time out on it too, retries included
        // (an audit, 2026-12-06: four attempts of every later get went to a black-holed connection, none to a new
        // one). It ends: what is in flight fails as sent, as on a cut; what never left goes on a new connection.
        return this.replace(timeout);
      }
      this.inFlight.delete(id);
      request.reject(timeout);
    }
    let expired = false;
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      const request = this.waiting[i]!;
      if (nowMs < request.deadlineMs) continue;
      expired = true;
      this.waiting.splice(i, 1);
      request.reject(new UnavailableError(`cannot reach ${this.channel.url}: ${request.what} was not sent in time (no connection ready)`, { url: this.channel.url, requestSent: false }));
    }
    if (expired && !this.ready) {
      // A connection not READY within a request's timeout (a node that accepts and never answers HELLO, a connect that
      // hangs) is stuck in its handshake: it was kept for ever, and every later request expired on it (audit,
      // 2026-12-06). It ends; the requests still waiting go on a new connection.
      return this.replace(new Error('the connection was not ready in time'));
    }
    if (this.inFlight.size === 0 && this.waiting.length === 0) this.socket.unref();
  }
}

/** The requests of one URL and credential over its current connection (see the header). */
export class WireChannel {
  readonly host: string;
  readonly port: number;
  readonly secure: boolean;
  readonly token: string | undefined;
  readonly sweepIntervalMs: number;
  private link: Link | undefined;

  constructor(
    readonly url: string,
    readonly tls: ClientTls | undefined,
    authorization: string | undefined,
    private readonly timeoutMs: number,
    private readonly clock: Clock = systemClock,
  ) {
    const parsed = new URL(url);
    if (!WIRE_SCHEMES.includes(parsed.protocol)) throw new ClientOptionsError(`${url} is not a wire URL (mercury+tcp:// or mercury+tls://)`);
    if (parsed.port === '') throw new ClientOptionsError(`${url} needs a port: the node's wire port (its listening line and status say it)`);
    this.host = parsed.hostname.replace(/^\[|\]$/g, '');
    this.port = Number(parsed.port);
    this.secure = parsed.protocol === 'mercury+tls:';
    this.token = authorization?.replace(/^Bearer +/i, '');
    this.sweepIntervalMs = Math.max(10, Math.min(1_000, Math.floor(timeoutMs / 4)));
  }

  // get, put and delete are plain functions over one Promise each, not async functions awaiting `send`: every layer
  // allocates per request (3.5 against 2.3 KB of heap per GET with the async layers, `npm run bench:wire-client --
  // --heap`). A bad key still rejects rather than throws.
  get(key: Buffer, options: { minSeq?: number; minSeqTimeoutMs?: number; signal?: AbortSignal }): Promise<WireValue | undefined> {
    const wait = options.minSeq === undefined ? undefined : { seq: options.minSeq, timeoutMs: options.minSeqTimeoutMs ?? MIN_SEQ_WAIT_MS_DEFAULT };
    return (
      this.refuseKey(key, 'get') ??
      this.send('get', (id) => encodeGet(id, key, wait), wait?.timeoutMs ?? 0, options.signal, (answer): WireValue | undefined => {
        if (answer.type !== WireFrameType.VALUE && answer.type !== WireFrameType.MISSING) throw this.unexpected(answer, 'get');
        // A key found absent below minSeq breaks read-your-writes as an old value does (audit, 2026-12-06).
        if (wait !== undefined && answer.seq < wait.seq)
          throw new InvalidAnswerError('PROTOCOL', `get ${this.url}: the node answered at seq ${answer.seq}, below the minSeq ${wait.seq} it was asked for`, { url: this.url });
        if (answer.type === WireFrameType.MISSING) return undefined;
        // As over HTTP: a key that exists was created, modified and put at seqs >= 1.
        if (answer.createSeq < 1 || answer.modSeq < 1 || answer.version < 1)
          throw new InvalidAnswerError('PROTOCOL', `get ${this.url}: the node answered a value with createSeq ${answer.createSeq}, modSeq ${answer.modSeq}, version ${answer.version}; each must be >= 1`, { url: this.url });
        return { key, value: answer.value, seq: answer.seq, createSeq: answer.createSeq, modSeq: answer.modSeq, version: answer.version };
      })
    );
  }

  put(key: Buffer, value: Buffer, ifModSeq: number | undefined, signal?: AbortSignal): Promise<{ seq: number }> {
    return (
      this.refuseKey(key, 'put') ??
      this.send('put', (id) => encodePut(id, key, value, ifModSeq), 0, signal, (answer) => {
        if (answer.type !== WireFrameType.WRITTEN) throw this.unexpected(answer, 'put');
        return { seq: answer.seq };
      })
    );
  }

  delete(key: Buffer, ifModSeq: number | undefined, signal?: AbortSignal): Promise<{ seq: number; deleted: boolean }> {
    return (
      this.refuseKey(key, 'delete') ??
      this.send('delete', (id) => encodeDelete(id, key, ifModSeq), 0, signal, (answer) => {
        if (answer.type !== WireFrameType.WRITTEN) throw this.unexpected(answer, 'delete');
        return { seq: answer.seq, deleted: answer.deleted };
      })
    );
  }

  /** Closes the connection (requests in flight fail as cut off); the next call opens a new one. */
  close(): void {
    this.link?.end(new Error('the client closed the connection'));
  }

  resubmit(request: Request): void {
    this.current().submit(request);
  }

  linkEnded(link: Link): void {
    if (this.link === link) this.link = undefined;
  }

  private current(): Link {
    if (this.link === undefined || this.link.ended) this.link = new Link(this, this.clock);
    return this.link;
  }

  private send<T>(what: string, encode: (id: number) => Buffer, extraTimeMs: number, signal: AbortSignal | undefined, settle: (answer: WireAnswer) => T): Promise<T> {
    // A call with a signal goes its own way: its listener and wrapped callbacks, held in the promise's closure, cost
    // every call about 85 bytes of heap when they shared this one (bench:wire-client --heap).
    if (signal !== undefined) return this.sendAbandonable(what, encode, extraTimeMs, signal, settle);
    return new Promise<T>((resolve, reject) => {
      const deadlineMs = this.clock.monotonicMs() + this.timeoutMs + extraTimeMs;
      this.current().submit({ what, encode, deadlineMs, settle, resolve: resolve as (result: unknown) => void, reject, id: 0, sent: false, sentMs: 0, resent: false, link: undefined });
    });
  }

  /** `send` for a call its caller may abandon: the signal takes it out of its connection (Link.abandon). */
  private sendAbandonable<T>(what: string, encode: (id: number) => Buffer, extraTimeMs: number, signal: AbortSignal, settle: (answer: WireAnswer) => T): Promise<T> {
    if (signal.aborted) return Promise.reject(abandoned(what, this.url, false));
    return new Promise<T>((resolve, reject) => {
      const abandon = (): void => request.link?.abandon(request);
      const settled = (): void => signal.removeEventListener('abort', abandon);
      const request: Request = {
        what,
        encode,
        deadlineMs: this.clock.monotonicMs() + this.timeoutMs + extraTimeMs,
        settle,
        resolve: (result) => {
          settled();
          resolve(result as T);
        },
        reject: (error) => {
          settled();
          reject(error);
        },
        id: 0,
        sent: false,
        sentMs: 0,
        resent: false,
        link: undefined,
      };
      signal.addEventListener('abort', abandon, { once: true });
      const link = this.current();
      request.link = link;
      link.submit(request);
    });
  }

  /**
   * A key the frame cannot carry is refused here with the error the node gives for it (KEY_EMPTY, KEY_TOO_LARGE), as
   * a rejected promise; undefined for a key that may be sent.
   */
  private refuseKey(key: Buffer, what: string): Promise<never> | undefined {
    if (key.length >= 1 && key.length <= KEY_BYTES_MAX) return undefined;
    try {
      validateKey(key);
      return undefined;
    } catch (error) {
      const { code, message, details } = error as MercuryError;
      return Promise.reject(serverError(ERROR_STATUS[code], JSON.stringify({ error: { code, message, ...details } }), { what, url: this.url }));
    }
  }

  private unexpected(answer: WireAnswer, what: string): InvalidAnswerError {
    return new InvalidAnswerError('PROTOCOL', `${what} ${this.url}: the node answered a frame of type 0x${answer.type.toString(16)}, which does not answer a ${what}`, { url: this.url });
  }
}

/** Channels shared by the process: one per URL, token, timeout and TLS options (a new TLS object: a new channel). */
const CHANNELS = new Map<string, WireChannel>();
const TLS_CHANNELS = new WeakMap<ClientTls, Map<string, WireChannel>>();

export function wireChannel(url: string, tls: ClientTls | undefined, authorization: string | undefined, timeoutMs: number): WireChannel {
  let channels = CHANNELS;
  if (tls !== undefined) {
    channels = TLS_CHANNELS.get(tls) ?? new Map<string, WireChannel>();
    TLS_CHANNELS.set(tls, channels);
  }
  const key = `${url}\u0000${authorization ?? ''}\u0000${timeoutMs}`;
  let channel = channels.get(key);
  if (channel === undefined) {
    channel = new WireChannel(url, tls, authorization, timeoutMs);
    channels.set(key, channel);
  }
  return channel;
}

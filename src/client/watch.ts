/**
 * `Watch`: a watch subscription over WebSocket (src/api/watch.ts) as an async iterator of `WatchEvent`s, which
 * keeps itself connected.
 *
 * - **Reconnect and resume.** When the connection ends for any reason other than `return()` (node restart or
 *   shutdown 1001, slow-watcher close 4008, network cut, no message for `watchIdleMs`), the watch connects again
 *   after a jittered backoff and subscribes with `fromSeq` = the first seq it has not received (watch-cursor.ts), so
 *   no entry is missed or repeated, and `afterHash` = the hash of the last entry it received, so that a node whose
 *   chain is another (a root restored from an older backup, past that seq since) answers with a snapshot of its state
 *   (a reset) instead of its entries after that seq; a node older than that field refuses it, and is subscribed again
 *   without it, by seq alone (WatchResumeCursor.dropHash). It moves to the next URL when the close was 1001 or the
 *   attempt failed, and stays on the same node otherwise. A subscribed connection that ends within
 *   `WATCH_CONNECTION_STABLE_MS` backs off as a failed attempt does (not counted in the attempts below). After `watchReconnectAttemptsMax` consecutive failed attempts (default: never) the
 *   iterator throws `NoNodeReachableError`.
 * - **Bounded buffering.** Received events wait in a queue until the consumer asks for them. When the queue holds
 *   more than `watchBufferBytesMax` bytes of messages, the watch stops reading the socket (`ws` pause), so TCP pushes
 *   back on the node, which then serves this watch from its log on disk instead of memory and, if the consumer stays
 *   stuck for 15 s, closes it with 4008; the watch then resumes from where it was, once the consumer catches up.
 *   Reading resumes when the queue is below half the limit. Each event is charged `WATCH_EVENT_QUEUE_BYTES` besides
 *   the bytes of its message, and a message holds at most `WATCH_EVENTS_PER_PREFIX_MAX` events per prefix (what one
 *   entry can give), so memory stays near the limit plus one message.
 * - **Errors.** A subscription the node refuses (bad prefix, ...) ends the iterator with a `WatchError` carrying the
 *   node's code, and a message that breaks the protocol (`parseServerMessage`: malformed, or more events than an
 *   entry can give; `WatchCursor`: another subscription's id, a key under none of the subscribed prefixes, or an
 *   order that would skip or repeat entries) with a
 *   `WatchError` of code `PROTOCOL`. The upgrade must complete within `requestTimeoutMs`; of an error answering it,
 *   `UPGRADE_ERROR_BODY_BYTES_MAX` are read. An `onSubscribed` that throws ends the watch, and the iterator rejects
 *   with what it threw. Nothing else is thrown to the consumer, unless the watch was opened with `reconnect: false`.
 * - **Without reconnecting** (`reconnect: false`, for a consumer that reports where to resume instead, such as
 *   `mercury watch`): a first connection that fails ends the iterator with `UnavailableError`, and the end of an
 *   established one with `WatchClosedError` (close code, reason and `resumeSeq`).
 */
import { createRequire } from 'node:module';
import type { WebSocket as WebSocketClass, RawData } from 'ws';
import type { Clock, TimerHandle } from '../clock/index.js';
import {
  isAfterHashUnknown,
  isWatchHash,
  JSON_NAME_BYTES_MAX,
  JsonValidator,
  parseServerMessage,
  subscribeMessage,
  WATCH_EVENTS_PER_PREFIX_MAX,
  WATCH_HASH_HEX_CHARS,
  WATCH_PATH,
  WATCH_PREFIXES_PER_SUBSCRIPTION_MAX,
  WATCH_SERVER_MESSAGE_BYTES_MAX,
  WATCH_SNAPSHOT_ITEMS_MAX,
  WatchCloseCode,
  WatchServerMessageError,
} from '../api/index.js';
import { backoffDelayMs } from './backoff.js';
import { ClientOptionsError, NoNodeReachableError, serverError, UnavailableError, WatchClosedError, WatchError } from './errors.js';
import { UPGRADE_ERROR_BODY_BYTES_MAX, WATCH_CONNECTION_STABLE_MS, WATCH_EVENT_QUEUE_BYTES } from './limits.js';
import { integerOption, type ValidatedClientOptions } from './options.js';
import { tlsErrorHint } from './tls.js';
import { SUBSCRIPTION_ID, WatchCursor, type CursorStep, type WatchEvent, type WatchFilterOptions } from './watch-cursor.js';

/** Options of `MercuryClient.watch`. */
export interface WatchOptions {
  /** One prefix or up to 16; text, or a Buffer for any bytes; '' watches every key. */
  readonly prefix: string | Buffer | readonly (string | Buffer)[];
  /** The first seq wanted (>= 1). Absent: from the next entry the node applies. Older than the node's log: a snapshot first. */
  readonly fromSeq?: number;
  /**
   * The hash (hex) of entry fromSeq - 1, where the consumer's state came from (the `hash` of the event or progress at
   * that seq): with it, a node whose entry there is another resets the watch with a snapshot. Needs fromSeq >= 2.
   */
  readonly afterHash?: string;
  readonly filters?: WatchFilterOptions;
  /** Also deliver `progress` events (to store a resume point). Default false. */
  readonly progress?: boolean;
  /**
   * Reconnect and resume when a connection ends (default true). False: the first failed connection ends the watch
   * with `UnavailableError`, and the end of an established one with `WatchClosedError`, which says where to resume.
   */
  readonly reconnect?: boolean;
  /** Called each time a node confirms the subscription (after every reconnect too), with the seq it continues from. */
  readonly onSubscribed?: (fromSeq: number) => void;
}

function prefixList(options: WatchOptions): (string | Buffer)[] {
  return ([] as (string | Buffer)[]).concat(options.prefix as string | Buffer | (string | Buffer)[]);
}

function validateWatchOptions(options: WatchOptions): void {
  if (typeof options !== 'object' || options === null) throw new ClientOptionsError('watch options must be an object with a "prefix"');
  const prefixes = ([] as unknown[]).concat(options.prefix);
  if (options.prefix === undefined || prefixes.length === 0 || prefixes.length > WATCH_PREFIXES_PER_SUBSCRIPTION_MAX)
    throw new ClientOptionsError(`prefix must be a string or Buffer, or a list of 1 to ${WATCH_PREFIXES_PER_SUBSCRIPTION_MAX} of them ('' watches every key)`);
  prefixes.forEach((prefix, i) => {
    if (typeof prefix !== 'string' && !Buffer.isBuffer(prefix)) throw new ClientOptionsError(`prefix[${i}] must be a string or a Buffer`);
  });
  integerOption(options, 'fromSeq', 1, 1, Number.MAX_SAFE_INTEGER);
  if (options.afterHash !== undefined) {
    if (!isWatchHash(options.afterHash)) throw new ClientOptionsError(`afterHash must be an entry hash: ${WATCH_HASH_HEX_CHARS} lowercase hex digits`);
    if (options.fromSeq === undefined || options.fromSeq < 2) throw new ClientOptionsError('afterHash is the hash of entry fromSeq - 1, so it needs a fromSeq >= 2');
  }
  const filters = options.filters ?? {};
  for (const name of ['puts', 'deletes', 'keysOnly', 'authors'] as const)
    if (filters[name] !== undefined && typeof filters[name] !== 'boolean') throw new ClientOptionsError(`filters.${name} must be true or false`);
  if (filters.puts === false && filters.deletes === false) throw new ClientOptionsError('filters.puts and filters.deletes are both false: the watch would select nothing');
  for (const name of ['progress', 'reconnect'] as const)
    if (options[name] !== undefined && typeof options[name] !== 'boolean') throw new ClientOptionsError(`${name} must be true or false`);
  if (options.onSubscribed !== undefined && typeof options.onSubscribed !== 'function') throw new ClientOptionsError('onSubscribed must be a function');
}

function watchUrl(baseUrl: string): string {
  return `${baseUrl.replace(/^http/, 'ws')}${WATCH_PATH}`;
}

/** Why a connection failed, with what to do when it is about TLS. */
function failureText(error: Error | undefined, url: string, code: number): string {
  if (error === undefined) return `closed with ${code}`;
  const hint = tlsErrorHint(error, url.startsWith('https:'));
  return hint === undefined ? error.message : `${error.message} (${hint})`;
}

interface Queued {
  readonly event: WatchEvent;
  /** What the event costs the queue: WATCH_EVENT_QUEUE_BYTES, plus the bytes of its message on its first event. */
  readonly bytes: number;
}

/**
 * `ws`, loaded on the first watch: every process that loads the client would otherwise pay for it at start (about
 * 50 ms here), the node among them, which serves watches with its own WebSocket code and opens none.
 */
let loadedWebSocket: typeof WebSocketClass | undefined;
function webSocketClass(): typeof WebSocketClass {
  loadedWebSocket ??= (createRequire(import.meta.url)('ws') as typeof import('ws')).WebSocket;
  return loadedWebSocket;
}

export class Watch implements AsyncIterableIterator<WatchEvent> {
  private readonly cursor: WatchCursor;
  /** Most events one message can hold for this watch's prefixes (parseServerMessage refuses more). */
  private readonly eventsMax: number;
  private queue: Queued[] = [];
  private queueHead = 0;
  private queuedBytes = 0;
  private waiter: { resolve: (result: IteratorResult<WatchEvent>) => void; reject: (error: Error) => void } | undefined;
  private failure: Error | undefined;
  private finished = false;
  private socket: WebSocketClass | undefined;
  private paused = false;
  private urlIndex = 0;
  private failedAttempts = 0;
  /** Consecutive subscribed connections that ended within WATCH_CONNECTION_STABLE_MS: they back off as failures do. */
  private shortConnections = 0;
  private readonly attemptErrors: Error[] = [];
  private idleTimer: TimerHandle | undefined;
  private retryTimer: TimerHandle | undefined;

  /** @internal Use `MercuryClient.watch`. */
  constructor(
    private readonly client: ValidatedClientOptions,
    private readonly options: WatchOptions,
    private readonly clock: Clock,
    private readonly onEnd: () => void,
  ) {
    validateWatchOptions(options);
    this.cursor = new WatchCursor(
      options.fromSeq,
      options.progress ?? false,
      options.afterHash,
      prefixList(options).map((prefix) => (Buffer.isBuffer(prefix) ? prefix : Buffer.from(prefix, 'utf8'))),
    );
    this.eventsMax = prefixList(options).length * WATCH_EVENTS_PER_PREFIX_MAX;
    this.open();
  }

  /** The seq a new watch would resume from to continue exactly after what this one received. */
  get resumeSeq(): number | undefined {
    return this.cursor.nextSeq;
  }

  /** The hash of entry resumeSeq - 1, when known: the `afterHash` to resume with. */
  get resumeHash(): string | undefined {
    return this.cursor.afterHash;
  }

  private open(): void {
    const url = this.client.urls[this.urlIndex]!;
    const tls = this.client.tls;
    const socket = new (webSocketClass())(watchUrl(url), {
      perMessageDeflate: false,
      maxPayload: WATCH_SERVER_MESSAGE_BYTES_MAX,
      handshakeTimeout: this.client.requestTimeoutMs,
      ...(tls === undefined ? {} : { ca: tls.ca, cert: tls.cert, key: tls.key }),
      headers: this.client.authorization === undefined ? undefined : { authorization: this.client.authorization },
    });
    this.socket = socket;
    this.cursor.reset();
    let subscribed = false;
    const openedMs = this.clock.monotonicMs();
    let lastError: Error | undefined;
    /** The node's own answer to the upgrade (or the deadline), kept over the abort error that follows it. */
    let answered = false;
    // `handshakeTimeout` is an idle timeout, which a node sending a byte now and then never trips: the whole upgrade
    // gets requestTimeoutMs, answer included.
    const deadline = this.clock.setTimeout(() => {
      lastError = new Error(`no WebSocket upgrade within ${this.client.requestTimeoutMs} ms`);
      answered = true;
      socket.terminate();
    }, this.client.requestTimeoutMs);
    socket.on('open', () => {
      deadline.cancel();
      this.subscribe(socket);
      this.armIdle(socket);
    });
    socket.on('message', (data: RawData, isBinary: boolean) => {
      if (this.socket !== socket) return;
      this.armIdle(socket);
      const buffer = data as Buffer;
      let step: CursorStep;
      try {
        if (isBinary) throw new WatchServerMessageError('a binary frame arrived; the protocol is JSON text');
        checkMessageShape(buffer, this.eventsMax);
        step = this.cursor.onMessage(parseServerMessage(buffer.toString('utf8'), WATCH_SERVER_MESSAGE_BYTES_MAX, this.eventsMax));
      } catch (error) {
        // A RangeError is what V8 throws when an input is too much for it (a stack, a string's length): the message's
        // fault, never to be thrown out of this socket handler into the application's process.
        if (error instanceof RangeError) return this.fail(new WatchError('PROTOCOL', `${url} sent a message this client could not decode: ${error.message}`, { cause: error }));
        if (!(error instanceof WatchServerMessageError)) throw error;
        return this.fail(new WatchError(error.code, `${url} broke the watch protocol: ${error.message}`, { cause: error }));
      }
      if (step.subscribedFromSeq !== undefined) {
        subscribed = true;
        this.failedAttempts = 0;
        this.attemptErrors.length = 0;
        try {
          this.options.onSubscribed?.(step.subscribedFromSeq);
        } catch (error) {
          // The application's callback, run inside this socket's handler: its throw was an uncaught exception that
          // ended the process, and the watch delivered nothing more (audit, 2026-12-07). It ends the watch instead,
          // and the iterator rejects with it as thrown.
          return this.fail(error instanceof Error ? error : new Error(String(error)));
        }
      }
      if (step.error !== undefined) {
        // A node before record 45 refuses the field, whatever its value; it trusts the seq alone, as clients before did.
        if (!subscribed && this.cursor.afterHash !== undefined && isAfterHashUnknown(step.error)) {
          this.cursor.dropHash();
          return this.subscribe(socket);
        }
        return this.fail(new WatchError(step.error.code, `${url} refused the watch: ${step.error.message}`));
      }
      // Charged per event too: decoded, an event costs far more than its bytes of JSON (a key of one byte is a Buffer).
      step.events.forEach((event, i) => this.queue.push({ event, bytes: WATCH_EVENT_QUEUE_BYTES + (i === 0 ? buffer.length : 0) }));
      if (step.events.length > 0) this.queuedBytes += buffer.length + step.events.length * WATCH_EVENT_QUEUE_BYTES;
      this.deliver();
      if (this.queuedBytes > this.client.watchBufferBytesMax && !this.paused) {
        // Backpressure: stop reading; the idle check is off meanwhile, since silence is now our doing.
        this.paused = true;
        this.idleTimer?.cancel();
        socket.pause();
      }
    });
    socket.on('error', (error: Error) => {
      if (!answered) lastError = error;
    });
    // A node that refuses the credential (401) or the scope (403) answers the upgrade with a JSON error: retrying
    // with the same token cannot succeed, so the watch ends with that error. Only the first
    // UPGRADE_ERROR_BODY_BYTES_MAX of a body are read (a Mercury error is far shorter): the rest is not waited for.
    socket.on('unexpected-response', (_request, response) => {
      const status = response.statusCode ?? 0;
      const chunks: Buffer[] = [];
      let bytes = 0;
      let settled = false;
      const settle = (): void => {
        if (settled) return;
        settled = true;
        if (this.socket !== socket) return void socket.terminate();
        if (status === 401 || status === 403) {
          const body = Buffer.concat(chunks).subarray(0, UPGRADE_ERROR_BODY_BYTES_MAX).toString('utf8');
          const error = serverError(status, body, { what: 'watch', url });
          this.socket = undefined;
          deadline.cancel();
          socket.terminate();
          return this.fail(new WatchError(error.code, `${url} refused the watch: ${error.message}`, { cause: error }));
        }
        lastError = new Error(`Unexpected server response: ${status}`);
        answered = true;
        socket.terminate();
      };
      response.on('data', (chunk: Buffer) => {
        if (settled) return;
        chunks.push(chunk);
        bytes += chunk.length;
        if (bytes >= UPGRADE_ERROR_BODY_BYTES_MAX) settle();
      });
      response.on('end', settle);
      response.on('error', () => socket.terminate());
    });
    socket.on('close', (code: number, reason: Buffer) => {
      deadline.cancel();
      if (this.socket !== socket) return;
      this.socket = undefined;
      this.paused = false;
      this.idleTimer?.cancel();
      if (this.finished) return;
      if (code === WatchCloseCode.CREDENTIAL_REVOKED)
        return this.fail(new WatchError('UNAUTHENTICATED', `${url} closed the watch: ${reason.toString('utf8') || 'its token was revoked'}`));
      if (this.options.reconnect === false) {
        if (!subscribed) return this.fail(new UnavailableError(`cannot reach ${watchUrl(url)}: ${failureText(lastError, url, code)}`, { url, cause: lastError }));
        return this.fail(new WatchClosedError(url, code, reason.toString('utf8'), this.cursor.nextSeq, this.cursor.afterHash));
      }
      if (!subscribed) {
        this.failedAttempts++;
        this.attemptErrors.push(new UnavailableError(`cannot watch at ${url}: ${failureText(lastError, url, code)}`, { url, cause: lastError }));
        if (this.failedAttempts >= this.client.watchReconnectAttemptsMax)
          return this.fail(new NoNodeReachableError(`watch: no node accepted the watch in ${this.failedAttempts} attempts`, [...this.attemptErrors]));
      }
      if (!subscribed || code === WatchCloseCode.GOING_AWAY) this.urlIndex = (this.urlIndex + 1) % this.client.urls.length;
      if (subscribed) this.shortConnections = this.clock.monotonicMs() - openedMs < WATCH_CONNECTION_STABLE_MS ? this.shortConnections + 1 : 0;
      const delayMs = backoffDelayMs(Math.max(this.failedAttempts, this.shortConnections), this.client.watchReconnectDelayMsBase, this.client.watchReconnectDelayMsMax);
      // Kept alive: between two connections nothing else may hold the event loop of a process that awaits this watch.
      this.retryTimer = this.clock.setTimeout(
        () => {
          this.retryTimer = undefined;
          if (!this.finished) this.open();
        },
        delayMs,
        { keepAlive: true },
      );
    });
  }

  /** Subscribes on a new connection, or again on this one (without `afterHash` for a node that does not know it). */
  private subscribe(socket: WebSocketClass): void {
    socket.send(
      subscribeMessage({ id: SUBSCRIPTION_ID, prefixes: prefixList(this.options), fromSeq: this.cursor.nextSeq, afterHash: this.cursor.afterHash, filters: this.options.filters }),
    );
  }

  /** A connection silent for `watchIdleMs` (the node heartbeats every 10 s) is dead: drop it and reconnect. */
  private armIdle(socket: WebSocketClass): void {
    this.idleTimer?.cancel();
    this.idleTimer = this.clock.setTimeout(() => socket.terminate(), this.client.watchIdleMs);
  }

  private deliver(): void {
    if (this.waiter === undefined) return;
    const waiter = this.waiter;
    if (this.queueHead < this.queue.length) {
      this.waiter = undefined;
      waiter.resolve({ value: this.take(), done: false });
    } else if (this.failure !== undefined) {
      this.waiter = undefined;
      const failure = this.failure;
      this.failure = undefined;
      waiter.reject(failure);
    } else if (this.finished) {
      this.waiter = undefined;
      waiter.resolve({ value: undefined, done: true });
    }
  }

  private take(): WatchEvent {
    const { event, bytes } = this.queue[this.queueHead++]!;
    this.queuedBytes -= bytes;
    // Compact now and then, so the array does not keep every delivered event.
    if (this.queueHead >= 1024 && this.queueHead * 2 >= this.queue.length) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
    if (this.paused && this.queuedBytes <= this.client.watchBufferBytesMax / 2 && this.socket !== undefined) {
      this.paused = false;
      this.socket.resume();
      this.armIdle(this.socket);
    }
    return event;
  }

  private fail(error: Error): void {
    if (this.finished) return;
    this.failure = error;
    this.stop();
    this.deliver();
  }

  private stop(): void {
    this.finished = true;
    this.idleTimer?.cancel();
    this.retryTimer?.cancel();
    const socket = this.socket;
    this.socket = undefined;
    socket?.close(1000);
    this.onEnd();
  }

  /** The next event; waits for one. Rejects once with the error that ended the watch, if one did. */
  next(): Promise<IteratorResult<WatchEvent>> {
    if (this.queueHead < this.queue.length) return Promise.resolve({ value: this.take(), done: false });
    if (this.waiter !== undefined) return Promise.reject(new Error('Watch.next() called again before the previous call resolved'));
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.deliver();
    });
  }

  /** Ends the watch and closes its connection (what `break` in `for await` calls). Events not yet taken are dropped. */
  return(): Promise<IteratorResult<WatchEvent>> {
    if (!this.finished) this.stop();
    this.queue = [];
    this.queueHead = 0;
    this.queuedBytes = 0;
    this.failure = undefined;
    this.deliver();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

/** JSON values one event or snapshot item takes at most: the object and its seven members (watch protocol, src/api). */
const VALUES_PER_EVENT_MAX = 8;
/** Values around a message's events or items: its type, id, seq, time, done, the array itself. */
const MESSAGE_VALUES_OVERHEAD = 16;

/**
 * Refuses a message with more JSON values than the largest one a node can send this watch (its events limit, or a
 * snapshot page of one-byte keys), before `JSON.parse` builds them: decoded, a tiny event costs hundreds of bytes, and
 * one 200 MiB message of 3.5 million of them took 2.9 GB (review, 2026-12-03). The validator holds a few numbers.
 */
function checkMessageShape(buffer: Buffer, eventsMax: number): void {
  const itemsMax = Math.max(eventsMax, WATCH_SNAPSHOT_ITEMS_MAX);
  const validator = new JsonValidator({
    depthMax: 8,
    elementsMax: itemsMax * VALUES_PER_EVENT_MAX + MESSAGE_VALUES_OVERHEAD,
    stringBytesMax: WATCH_SERVER_MESSAGE_BYTES_MAX,
    nameBytesMax: JSON_NAME_BYTES_MAX,
  });
  try {
    validator.push(buffer);
    validator.end();
  } catch (error) {
    throw new WatchServerMessageError(`message refused before parsing: ${(error as Error).message}`, { cause: error });
  }
}

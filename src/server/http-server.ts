/**
 * The node's HTTP server: `node:http` with every timeout and size limit set, and malformed requests answered with a
 * JSON error instead of a dropped socket. (No framework: routing is a map lookup, see docs/decisions.)
 */
import { STATUS_CODES, createServer, type IncomingMessage, type Server, type ServerOptions, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { ERROR_STATUS, MercuryError, type ErrorCode } from '../errors/index.js';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { systemClock, type Clock } from '../clock/index.js';
import { AddressSlots, Handshakes, TLS_HANDSHAKE_BYTE, addressKey, hostSlotKey, peerCertificate, serverTlsOptions, sniffTls, tlsFailureMessage, tlsFailureReason, type TlsMaterial } from '../net/index.js';
import {
  ANSWER_BYTES_HELD_MAX,
  ANSWER_BYTES_HELD_PER_ADDRESS_MAX,
  BODY_BYTES_IN_FLIGHT_MAX,
  BODY_BYTES_IN_FLIGHT_PER_ADDRESS_MAX,
  FORWARDED_WRITES_MAX,
  SEQ_WAITERS_MAX,
  HTTP_CLOSE_FLUSH_MS,
  HTTP_CONNECTIONS_MAX,
  HTTP_CONNECTIONS_PER_ADDRESS_MAX,
  HTTP_TLS_HANDSHAKES_MAX,
  HTTP_TLS_HANDSHAKES_PER_ADDRESS_MAX,
  HTTP_HEADERS_TIMEOUT_MS,
  HTTP_KEEP_ALIVE_TIMEOUT_MS,
  HTTP_REQUEST_TIMEOUT_MS,
  HTTP_PIPELINED_AHEAD_MAX,
  HTTP_PIPELINED_RUNNING_MAX,
  HTTP_SEND_STALL_MS,
  HTTP_SNAPSHOT_PACE_BYTES_MIN,
  HTTP_SNAPSHOT_PACE_WINDOW_MS,
  JSON_BODY_BYTES_MAX,
  LOG_PAGE_BYTES_MAX,
  RANGE_PAGE_BYTES_MAX,
} from '../limits.js';
import { errorBody } from './http-io.js';

/** The HTTP section of a node's limits (validated with the other sections in src/node/limits.ts). */
export interface HttpLimits {
  /** A client must send all headers within this time, and the whole request within the next one. */
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  /** Idle keep-alive connections are closed after this long. */
  readonly keepAliveTimeoutMs: number;
  /**
   * A connection that sends no byte for this long after it opens is closed. node:http's headers timeout only starts
   * with the first byte, so without this a silent connection holds a slot of `connectionsMax` for ever.
   */
  readonly firstByteTimeoutMs: number;
  /** Open connections, watch WebSockets included; beyond it new connections are closed at once (see src/limits.ts). */
  readonly connectionsMax: number;
  /**
   * Open connections per remote address, watches included: beyond it a new connection from that address is answered
   * 503 TOO_MANY_CONNECTIONS and closed, so that one host cannot hold every connection of the node.
   */
  readonly connectionsPerAddressMax: number;
  /** Connections in their TLS handshake at once, and per remote host (src/limits.ts `HTTP_TLS_HANDSHAKES_MAX`). */
  readonly tlsHandshakesMax: number;
  readonly tlsHandshakesPerAddressMax: number;
  /**
   * A write sent to a replica is forwarded to its upstream, then answered once the replica applied it; after this long
   * without the apply the answer is SEQ_WAIT_TIMEOUT (the write itself is committed). Enforced by the node.
   */
  readonly forwardedWriteWaitMs: number;
  /**
   * Writes a replica has forwarded to its upstream and not yet had answered, each on a connection of its own; beyond
   * it a write is refused at once with OVERLOADED (src/limits.ts, FORWARDED_WRITES_MAX). Enforced by the node.
   */
  readonly forwardedWritesMax: number;
  /** Reads parked on `minSeq` at once (HTTP and wire); beyond it OVERLOADED (src/limits.ts, SEQ_WAITERS_MAX). */
  readonly seqWaitersMax: number;
  /** Pipelined requests running ahead of their turn at once over all connections (src/limits.ts, HTTP_PIPELINED_AHEAD_MAX). */
  readonly pipelinedAheadMax: number;
  /**
   * Largest JSON request body (`POST /v1/txn`); at least what the largest transaction an entry holds needs (asserted
   * in src/node/limits.ts). Its structure is bounded too, by the limits of `txnJsonLimits` (src/api/txn.ts).
   */
  readonly jsonBodyBytesMax: number;
  /**
   * Request bodies held at once over all connections, from the first byte until the answer: a body that would go
   * beyond it is refused with 503 BODY_BUDGET_EXCEEDED and Retry-After (docs/decisions.md, record 26).
   */
  readonly bodyBytesInFlightMax: number;
  /** Request bodies one remote host holds at once, of `bodyBytesInFlightMax` (src/limits.ts, record 81). */
  readonly bodyBytesInFlightPerAddressMax: number;
  /**
   * Large answers (a value or a range page over a send slice) held at once over all connections while their clients
   * take them: past it such an answer is refused 503 OVERLOADED (src/server/answer-budget.ts).
   */
  readonly answerBytesHeldMax: number;
  /** Large answers held for one remote host's connections at once, of `answerBytesHeldMax` (record 81). */
  readonly answerBytesHeldPerAddressMax: number;
  /** Byte budgets of one range page (keys and values) and one `/v1/log` page (entry records); at least one item each. */
  readonly rangePageBytesMax: number;
  readonly logPageBytesMax: number;
  /**
   * An answer whose client takes none of the bytes queued for it for this long has its connection closed
   * (`SEND_STALLED`, src/server/http-io.ts writePieces and onAnswerEnded): it would hold its socket, and a snapshot its
   * read transaction, for as long as the client kept the connection open.
   */
  readonly sendStallMs: number;
  /**
   * A snapshot (`GET /v1/snapshot`) whose client, while the node waits on it, takes less than `snapshotPaceBytesMin`
   * in a `snapshotPaceWindowMs` has its connection reset (`SEND_TOO_SLOW`): the send deadline restarts at every slice
   * taken, so a client taking a trickle held the snapshot's read transaction, which keeps LMDB from reusing any page
   * freed after it began, for as long as it liked (audit, 2026-12-07). The floor of replication's CHILD_TOO_SLOW.
   */
  readonly snapshotPaceWindowMs: number;
  readonly snapshotPaceBytesMin: number;
}

export const HTTP_LIMITS: HttpLimits = Object.freeze({
  headersTimeoutMs: HTTP_HEADERS_TIMEOUT_MS,
  requestTimeoutMs: HTTP_REQUEST_TIMEOUT_MS,
  keepAliveTimeoutMs: HTTP_KEEP_ALIVE_TIMEOUT_MS,
  firstByteTimeoutMs: 5_000,
  connectionsMax: HTTP_CONNECTIONS_MAX,
  connectionsPerAddressMax: HTTP_CONNECTIONS_PER_ADDRESS_MAX,
  tlsHandshakesMax: HTTP_TLS_HANDSHAKES_MAX,
  tlsHandshakesPerAddressMax: HTTP_TLS_HANDSHAKES_PER_ADDRESS_MAX,
  forwardedWriteWaitMs: 30_000,
  forwardedWritesMax: FORWARDED_WRITES_MAX,
  seqWaitersMax: SEQ_WAITERS_MAX,
  pipelinedAheadMax: HTTP_PIPELINED_AHEAD_MAX,
  jsonBodyBytesMax: JSON_BODY_BYTES_MAX,
  bodyBytesInFlightMax: BODY_BYTES_IN_FLIGHT_MAX,
  bodyBytesInFlightPerAddressMax: BODY_BYTES_IN_FLIGHT_PER_ADDRESS_MAX,
  answerBytesHeldMax: ANSWER_BYTES_HELD_MAX,
  answerBytesHeldPerAddressMax: ANSWER_BYTES_HELD_PER_ADDRESS_MAX,
  rangePageBytesMax: RANGE_PAGE_BYTES_MAX,
  logPageBytesMax: LOG_PAGE_BYTES_MAX,
  sendStallMs: HTTP_SEND_STALL_MS,
  snapshotPaceWindowMs: HTTP_SNAPSHOT_PACE_WINDOW_MS,
  snapshotPaceBytesMin: HTTP_SNAPSHOT_PACE_BYTES_MIN,
});

/**
 * Pipelined requests and a malformed one after them. Clients may pipeline: send several requests without waiting.
 * When bytes that are not HTTP follow complete requests, each complete request is still answered, in order, then the
 * 400 for the rest, and the connection is closed. node:http reports the malformed bytes at once, while the earlier
 * requests may still wait for their commit: answering and closing right then would leave committed writes without an
 * answer. A request not received in full when the error comes (the one the error is about: a bad chunk, a timeout)
 * is not waited for. The properties exist only while a request is in flight or after a parse error, so an idle
 * connection carries nothing.
 */
const IN_FLIGHT = Symbol('inFlight');
const RUNNING = Symbol('running');
const FAILED = Symbol('failed');
const PENDING_ERROR = Symbol('pendingError');
const WAITING = Symbol('waiting');
const AHEAD = Symbol('ahead');
/** The requests of one server that run ahead of their turn (`HttpLimits.pipelinedAheadMax`); on the server as AHEAD. */
interface AheadBudget {
  running: number;
  readonly max: number;
}
interface PipelinedSocket extends Socket {
  [IN_FLIGHT]?: Set<ServerResponse>;
  /** The requests of IN_FLIGHT that started (their handler ran), not yet answered: at most HTTP_PIPELINED_RUNNING_MAX. */
  [RUNNING]?: Set<ServerResponse>;
  [FAILED]?: boolean;
  [PENDING_ERROR]?: () => void;
  [WAITING]?: { readonly res: ServerResponse; readonly start: () => void }[];
}

/**
 * Pipelined requests run in their order where it matters (RFC 9112, 9.3.2: only safe methods may be processed in
 * parallel). Safe requests (GET, HEAD, OPTIONS) run beside each other, up to HTTP_PIPELINED_RUNNING_MAX at once (each
 * holds its answer until its client takes it); a write runs alone: it starts once every request before it on the
 * connection is answered, and every request after it waits for its answer. Before this, a GET pipelined after a PUT of
 * the same key read the key as it was before the PUT (an audit, 2026-12-06). A connection with one request at a time,
 * as every client here uses, never waits.
 */
function isSafeMethod(method: string | undefined): boolean {
  return method === 'GET' || method === 'HEAD' || method === 'OPTIONS';
}

/**
 * Whether `res`'s request may start beside the requests of `socket` already started and not yet answered: beside
 * them, it runs ahead of its turn, which the server's budget must allow. Its own turn comes when they are answered.
 */
function mayStart(socket: PipelinedSocket, res: ServerResponse, ahead: AheadBudget): boolean {
  const running = socket[RUNNING];
  if (running === undefined) return true;
  if (running.size >= HTTP_PIPELINED_RUNNING_MAX || !isSafeMethod(res.req.method)) return false;
  // A write runs alone: when one runs, it is the only one.
  for (const other of running) if (!isSafeMethod(other.req.method)) return false;
  return ahead.running < ahead.max;
}

/** See the request listener: a request stream's error is its client's doing, and readBody reports a body cut off. */
function ignoreRequestError(): void {}

/** Runs `start` for the request of `res` now, or after the requests before it that it must not overlap. */
function startInOrder(socket: Socket, res: ServerResponse, start: () => void, ahead: AheadBudget): void {
  const pipelined = socket as PipelinedSocket;
  const run = (): void => {
    const running = (pipelined[RUNNING] ??= new Set());
    if (running.size > 0) {
      // Ahead of its turn: it holds the budget until it is answered.
      ahead.running++;
      res.once('close', () => {
        ahead.running--;
      });
    }
    running.add(res);
    start();
  };
  if (pipelined[WAITING] === undefined && mayStart(pipelined, res, ahead)) return run();
  (pipelined[WAITING] ??= []).push({ res, start: run });
}

/** Starts the held requests that may start now, in order: after an answer, or a held request given up. */
function startWaiting(socket: PipelinedSocket, ahead: AheadBudget): void {
  const waiting = socket[WAITING];
  while (waiting !== undefined && waiting.length > 0) {
    const first = waiting[0]!;
    if (!first.res.destroyed && !mayStart(socket, first.res, ahead)) return;
    waiting.shift();
    if (waiting.length === 0) delete socket[WAITING];
    if (!first.res.destroyed) first.start();
  }
}

/** Whether a request received in full is still waiting for its answer to be written. */
function owesAnswers(inFlight: ReadonlySet<ServerResponse> | undefined): boolean {
  if (inFlight === undefined) return false;
  for (const res of inFlight) if (res.req.complete) return true;
  return false;
}

function trackInFlight(socket: Socket, res: ServerResponse, ahead: AheadBudget): void {
  const pipelined = socket as PipelinedSocket;
  const inFlight = (pipelined[IN_FLIGHT] ??= new Set());
  inFlight.add(res);
  res.once('close', () => {
    inFlight.delete(res);
    if (inFlight.size === 0) delete pipelined[IN_FLIGHT];
    const running = pipelined[RUNNING];
    if (running?.delete(res) === true && running.size === 0) delete pipelined[RUNNING];
    startWaiting(pipelined, ahead);
    const pending = pipelined[PENDING_ERROR];
    if (pending !== undefined && !owesAnswers(inFlight)) {
      delete pipelined[PENDING_ERROR];
      if (socket.writable) pending();
      else socket.destroy();
    }
  });
}

/** Answers a request that never reached a handler (malformed, CONNECT) and closes, after the answers still owed. */
function endWithError(socket: Socket, clock: Clock, code: ErrorCode, message: string, headers: Readonly<Record<string, string>> = {}): void {
  const body = JSON.stringify(errorBody(code, message));
  const status = ERROR_STATUS[code];
  const extra = Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  const answer =
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n` +
    `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`;
  const pipelined = socket as PipelinedSocket;
  const close = (): void => endAndDestroy(socket, answer, clock);
  if (owesAnswers(pipelined[IN_FLIGHT])) pipelined[PENDING_ERROR] = close;
  else close();
}

/**
 * Writes the last answer and ends the connection, then destroys it HTTP_CLOSE_FLUSH_MS later whatever the peer does:
 * `end` alone waits for the peer's FIN (node:http sockets allow half-open), which a peer that vanished, or never
 * closes, does not send.
 */
function endAndDestroy(socket: Socket, answer: string, clock: Clock): void {
  socket.end(answer);
  clock.setTimeout(() => socket.destroy(), HTTP_CLOSE_FLUSH_MS);
}

/** TLS of the HTTP port (src/net/tls.ts). */
export interface HttpSecurity {
  /** Serve HTTPS with these credentials (at start; reloads go through setSecureContext); undefined: plaintext HTTP. */
  readonly tls: TlsMaterial | undefined;
  /** A connection that failed for TLS: a handshake, plaintext on the TLS port, a TLS client on the plaintext port. */
  readonly onRejected: (reason: string, remote: string, message: string) => void;
  /** Each TLS connection once its handshake is done (TlsCredentials#track: re-checked when the CA file changes). */
  readonly track?: (socket: TLSSocket) => void;
}

/** The answer to plaintext HTTP on the TLS port, in plaintext, so that curl or a browser shows what to do. */
const PLAINTEXT_ON_TLS_MESSAGE = 'this port serves HTTPS: use an https:// URL and trust the cluster CA (curl --cacert CA.pem, mercury --ca CA.pem)';

/**
 * The node's HTTP server; with `tls`, an HTTPS server (an https.Server is an http.Server on TLS sockets: the same
 * methods and events, so it is returned as one). Reload its certificate with `setSecureContext(serverTlsOptions(m))`.
 */
export function createHttpServer(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  limits: HttpLimits = HTTP_LIMITS,
  clock: Clock = systemClock,
  security?: HttpSecurity,
): Server {
  const tls = security?.tls;
  const { headersTimeoutMs, requestTimeoutMs } = limits;
  const options: ServerOptions =
    {
      headersTimeout: headersTimeoutMs,
      requestTimeout: requestTimeoutMs,
      // node:http enforces both timeouts only when it sweeps its connections, every 30 s by default: a 10 s headers
      // timeout would then really be up to 40 s. Sweep at a tenth of the shorter timeout (at most once a second).
      connectionsCheckingInterval: Math.max(10, Math.min(1_000, Math.floor(Math.min(headersTimeoutMs, requestTimeoutMs) / 10))),
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // Writes are acknowledged in small JSON bodies; Nagle would add up to 40 ms to every one of them.
      noDelay: true,
      // node:http's own check answers an HTTP/1.1 request without Host with an empty, non-JSON 400; do it below instead.
      requireHostHeader: false,
    };
  const ahead: AheadBudget = { running: 0, max: limits.pipelinedAheadMax };
  const listener = (req: IncomingMessage, res: ServerResponse): void => {
      // A request cut off by its client (or by close) emits 'error' ("aborted") only if something listens when node:http
      // decides to, and emits it a tick later: readBody listens while it reads and lets go when it fails or ends, so a
      // cut-off landing between the two would be an uncaught exception, the node's end. One listener for the request's
      // whole life closes that window (an uncaught "aborted" once ended a clean-clone CI run of the HTTP fuzzer, after
      // its tests had passed; not reproduced since). The failure itself is handled where it matters: readBody's 'close'.
      req.on('error', ignoreRequestError);
      if (security?.tls !== undefined && untrustedClientCertificate(req, res, security.onRejected)) return;
      if (req.headers.host === undefined && req.httpVersionMajor === 1 && req.httpVersionMinor >= 1) {
        const body = JSON.stringify(errorBody('BAD_REQUEST', 'an HTTP/1.1 request needs a Host header'));
        res.writeHead(400, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close' });
        res.end(body);
        return;
      }
      // Every answer: a value served as application/octet-stream or JSON must never run as a script that another site
      // includes with <script> (a browser sniffs it otherwise; with --auth off that read values across sites: an audit,
      // 2026-12-06).
      res.setHeader('x-content-type-options', 'nosniff');
      trackInFlight(req.socket, res, ahead);
      startInOrder(req.socket, res, () => handler(req, res), ahead);
    };
  // A handshake gets the first-byte timeout too (as the wire port gives it the HELLO deadline): Node's default, 120 s,
  // would let a peer that sends a few bytes of a ClientHello and stops hold a connection slot for two minutes.
  const server =
    tls === undefined
      ? createServer(options, listener)
      : (createHttpsServer({ ...options, ...serverTlsOptions(tls), handshakeTimeout: limits.firstByteTimeoutMs }, listener) as unknown as Server);
  if (security?.tls !== undefined) serveTlsOnly(server, security, clock, limits);
  server.maxConnections = limits.connectionsMax;
  const slots = new AddressSlots(limits.connectionsPerAddressMax);
  // Nothing is kept per connection but its slot: every idle watcher is one of these connections. The close listener
  // is shared (node caches the peer address, so it is still known after the close), and the first-byte timer is left
  // to fire (destroying a closed socket does nothing), so no closure or spent timer stays with an idle socket.
  function onClose(this: Socket): void {
    slots.release(hostSlotKey(this.remoteAddress));
  }
  server.on('connection', (socket: Socket) => {
    const remoteAddress = socket.remoteAddress;
    // Unknown only when the peer reset the connection before it was read: nothing to serve. Refusing it here also
    // means every admitted socket has its address cached for onClose.
    if (remoteAddress === undefined) {
      socket.destroy();
      return;
    }
    // Per host: an IPv6 peer counts as its /64, or one host could bind an address per connection (hostSlotKey).
    if (!slots.tryAcquire(hostSlotKey(remoteAddress))) {
      // Closed at once, like a connection beyond connectionsMax: node:http already owns the socket, and an answer
      // written here could race a request it parses and runs (docs/decisions.md, record 15).
      socket.destroy();
      return;
    }
    // bytesRead counts what node:http's parser consumed too (it reads the handle directly, without 'data' events).
    // With TLS these are the handshake's bytes: the TLS socket has a timer of its own once the handshake is over.
    closeIfSilent(socket, clock, limits.firstByteTimeoutMs);
    socket.on('close', onClose);
  });
  server.on('clientError', (error: Error & { code?: string }, socket: Socket) => {
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    // node:http may report the error again for bytes after it: one answer is enough.
    if ((socket as PipelinedSocket)[FAILED] === true) return;
    (socket as PipelinedSocket)[FAILED] = true;
    // A TLS handshake sent to this plaintext port: its bytes are no HTTP method. Counted apart, so an operator sees
    // clients configured for TLS against a node without it.
    const tlsOnPlaintext = tls === undefined && (error as { rawPacket?: Buffer }).rawPacket?.[0] === TLS_HANDSHAKE_BYTE;
    // The plaintext answer below still goes out: the client's TLS layer reads it as a record of a wrong version
    // (ERR_SSL_WRONG_VERSION_NUMBER), which says exactly that this port does not speak TLS.
    if (tlsOnPlaintext) security?.onRejected('tls_on_plaintext', addressKey(socket.remoteAddress), 'a TLS handshake on the plaintext HTTP port');
    const [code, message]: [ErrorCode, string] =
      tlsOnPlaintext
        ? ['BAD_REQUEST', 'this port serves plain HTTP, not TLS: use an http:// URL, or start the node with --tls-cert, --tls-key and --tls-ca']
        : error.code === 'HPE_HEADER_OVERFLOW'
        ? ['HEADERS_TOO_LARGE', 'request headers are too large (16 KiB at most)']
        : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? ['REQUEST_TIMEOUT', 'the request was not received in time; send headers and body promptly']
          : ['BAD_REQUEST', `malformed HTTP request (${error.code ?? error.message})`];
    endWithError(socket, clock, code, message);
  });
  // CONNECT asks a proxy for a tunnel. node:http would drop the connection without a word when nobody listens.
  server.on('connect', (req: IncomingMessage, socket: Socket) => {
    socket.on('error', () => {}); // the client may be gone already
    endWithError(socket, clock, 'METHOD_NOT_ALLOWED', `${req.method} is not supported: a Mercury node is not a proxy; see the API reference in the README`, {
      allow: 'GET, PUT, POST, DELETE',
    });
  });
  // An Expect header other than 100-continue: node:http would answer a bare 417 without a body.
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    const body = JSON.stringify(errorBody('EXPECTATION_FAILED', `Expect: ${req.headers.expect} is not supported; send the request without it`));
    res.writeHead(417, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close' });
    res.end(body);
  });
  (server as Server & { [AHEAD]?: AheadBudget })[AHEAD] = ahead;
  return server;
}

/** Closes `socket` if it has read nothing `timeoutMs` from now (the timer is left to fire: a closed socket ignores it). */
function closeIfSilent(socket: Socket, clock: Clock, timeoutMs: number): void {
  clock.setTimeout(() => {
    if (socket.bytesRead === 0) socket.destroy();
  }, timeoutMs);
}

/**
 * Makes an HTTPS server answer plaintext HTTP with a plaintext 400 that says to use https (instead of a reset), and
 * report failed handshakes. The TLS server's own connection listener runs only once the first byte shows a handshake.
 */
function serveTlsOnly(server: Server, { onRejected, track }: HttpSecurity, clock: Clock, limits: HttpLimits): void {
  const { firstByteTimeoutMs } = limits;
  const tlsListeners = server.listeners('connection') as ((socket: Socket) => void)[];
  // Counted from the first byte of the handshake to its end: each holds some 52 KB of OpenSSL state (src/limits.ts).
  const handshakes = new Handshakes(limits.tlsHandshakesMax, limits.tlsHandshakesPerAddressMax);
  server.removeAllListeners('connection');
  server.on('connection', (socket: Socket) => {
    sniffTls(socket, (isTls) => {
      if (isTls) {
        if (!handshakes.begin(socket)) {
          // Closed at once, like a connection over the connection caps. Counted; the log's budget bounds its lines.
          onRejected('handshakes_full', addressKey(socket.remoteAddress), `${handshakes.size} connections are in their TLS handshake (at most ${limits.tlsHandshakesMax}, ${limits.tlsHandshakesPerAddressMax} per host)`);
          socket.destroy();
          return;
        }
        for (const tlsListener of tlsListeners) tlsListener.call(server, socket);
        return;
      }
      const remote = addressKey(socket.remoteAddress);
      onRejected('not_tls', remote, 'plaintext HTTP on the HTTPS port');
      const body = JSON.stringify(errorBody('BAD_REQUEST', PLAINTEXT_ON_TLS_MESSAGE));
      socket.resume();
      endAndDestroy(socket, `HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`, clock);
    });
  });
  // A client that completes the handshake and sends nothing: the raw socket's first-byte timer saw the handshake's
  // bytes, and node:http's headers timeout starts only with the first byte of a request. A TLS socket's bytesRead
  // counts decrypted bytes, so this is the plain port's rule one layer up. A watch upgrade has sent its request by
  // then, so an open watch is never cut; neither is a keep-alive connection, whose idle time node:http bounds.
  server.on('secureConnection', (socket: TLSSocket) => {
    handshakes.done(socket);
    closeIfSilent(socket, clock, firstByteTimeoutMs);
    track?.(socket);
  });
  server.on('tlsClientError', (error: Error & { code?: string }, socket: TLSSocket) => {
    // The remote address is gone once the handshake failed (the socket is already destroyed): '?' then.
    const reason = tlsFailureReason(error);
    onRejected(reason, addressKey(socket.remoteAddress), tlsFailureMessage(reason, error));
    socket.destroy();
  });
}

/** Connections whose untrusted client certificate was counted already: one count per connection, as on replication. */
const certificateRejected = new WeakSet<Socket>();

/**
 * Why a request or a watch upgrade must be refused for its client certificate: one was presented but did not verify
 * against the cluster CA (another CA, expired, ...). Answered 401 on every request of that connection, naming the TLS
 * verify error: the client meant to identify itself and must learn that it did not, rather than be served as anyone.
 * Undefined without TLS or without a certificate (client certificates are optional on HTTP: tokens then), or with
 * one that verified. `onRejected` hears of it once per connection (`mercury_tls_rejected_total`).
 */
/** Pipelined requests of `server` (made by createHttpServer) running ahead of their turn now (a metric). */
export function pipelinedAhead(server: Server): number {
  return (server as Server & { [AHEAD]?: AheadBudget })[AHEAD]?.running ?? 0;
}

export function clientCertificateRefusal(socket: Socket, onRejected: HttpSecurity['onRejected']): MercuryError | undefined {
  if ((socket as Partial<TLSSocket>).encrypted !== true) return undefined;
  const { error } = peerCertificate(socket as TLSSocket);
  if (error === undefined) return undefined;
  if (!certificateRejected.has(socket)) {
    certificateRejected.add(socket);
    onRejected(error === 'CERT_HAS_EXPIRED' ? 'certificate_expired' : 'untrusted_certificate', addressKey(socket.remoteAddress), `client certificate: ${error}`);
  }
  return new MercuryError('UNAUTHENTICATED', `the client certificate was rejected (${error}): present one signed by the cluster CA (mercury --cert/--key), or none`);
}

function untrustedClientCertificate(req: IncomingMessage, res: ServerResponse, onRejected: HttpSecurity['onRejected']): boolean {
  const refusal = clientCertificateRefusal(req.socket, onRejected);
  if (refusal === undefined) return false;
  const body = JSON.stringify(errorBody(refusal.code, refusal.message));
  res.writeHead(401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close' });
  res.end(body);
  return true;
}

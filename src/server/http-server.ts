/**
 * The node's HTTP server: `node:http` with every timeout and size limit set, and malformed requests answered with a
 * JSON error instead of a dropped socket. (No framework: routing is a map lookup, see docs/decisions.)
 */
import { STATUS_CODES, createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { ERROR_STATUS, type ErrorCode } from '../errors/index.js';
import type { Socket } from 'node:net';
import { systemClock, type Clock } from '../clock/index.js';
import { AddressSlots, addressKey } from '../net/index.js';
import { HTTP_CONNECTIONS_MAX, HTTP_HEADERS_TIMEOUT_MS, HTTP_KEEP_ALIVE_TIMEOUT_MS, HTTP_REQUEST_TIMEOUT_MS } from '../limits.js';
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
  /**
   * A write sent to a replica is forwarded to its upstream, then answered once the replica applied it; after this long
   * without the apply the answer is SEQ_WAIT_TIMEOUT (the write itself is committed). Enforced by the node.
   */
  readonly forwardedWriteWaitMs: number;
}

export const HTTP_LIMITS: HttpLimits = Object.freeze({
  headersTimeoutMs: HTTP_HEADERS_TIMEOUT_MS,
  requestTimeoutMs: HTTP_REQUEST_TIMEOUT_MS,
  keepAliveTimeoutMs: HTTP_KEEP_ALIVE_TIMEOUT_MS,
  firstByteTimeoutMs: 5_000,
  connectionsMax: HTTP_CONNECTIONS_MAX,
  // A fifth of the connections: one host cannot hold them all (--max-connections-per-address for a host that must).
  connectionsPerAddressMax: 4_000,
  forwardedWriteWaitMs: 30_000,
});

export function createHttpServer(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  limits: HttpLimits = HTTP_LIMITS,
  clock: Clock = systemClock,
): Server {
  const { headersTimeoutMs, requestTimeoutMs } = limits;
  const server = createServer(
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
    },
    (req, res) => {
      if (req.headers.host === undefined && req.httpVersionMajor === 1 && req.httpVersionMinor >= 1) {
        const body = JSON.stringify(errorBody('BAD_REQUEST', 'an HTTP/1.1 request needs a Host header'));
        res.writeHead(400, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close' });
        res.end(body);
        return;
      }
      handler(req, res);
    },
  );
  server.maxConnections = limits.connectionsMax;
  const slots = new AddressSlots(limits.connectionsPerAddressMax);
  // Nothing is kept per connection but its slot: every idle watcher is one of these connections. The close listener
  // is shared (node caches the peer address, so it is still known after the close), and the first-byte timer is left
  // to fire (destroying a closed socket does nothing), so no closure or spent timer stays with an idle socket.
  function onClose(this: Socket): void {
    slots.release(addressKey(this.remoteAddress));
  }
  server.on('connection', (socket: Socket) => {
    const remoteAddress = socket.remoteAddress;
    // Unknown only when the peer reset the connection before it was read: nothing to serve. Refusing it here also
    // means every admitted socket has its address cached for onClose.
    if (remoteAddress === undefined) {
      socket.destroy();
      return;
    }
    if (!slots.tryAcquire(addressKey(remoteAddress))) {
      // Closed at once, like a connection beyond connectionsMax: node:http already owns the socket, and an answer
      // written here could race a request it parses and runs (docs/decisions.md, record 15).
      socket.destroy();
      return;
    }
    // bytesRead counts what node:http's parser consumed too (it reads the handle directly, without 'data' events).
    clock.setTimeout(() => {
      if (socket.bytesRead === 0) socket.destroy();
    }, limits.firstByteTimeoutMs);
    socket.on('close', onClose);
  });
  server.on('clientError', (error: Error & { code?: string }, socket: Socket) => {
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    const [code, message]: [ErrorCode, string] =
      error.code === 'HPE_HEADER_OVERFLOW'
        ? ['HEADERS_TOO_LARGE', 'request headers are too large (16 KiB at most)']
        : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? ['REQUEST_TIMEOUT', 'the request was not received in time; send headers and body promptly']
          : ['BAD_REQUEST', `malformed HTTP request (${error.code ?? error.message})`];
    const body = JSON.stringify(errorBody(code, message));
    const status = ERROR_STATUS[code];
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n` +
        `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  });
  // An Expect header other than 100-continue: node:http would answer a bare 417 without a body.
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    const body = JSON.stringify(errorBody('EXPECTATION_FAILED', `Expect: ${req.headers.expect} is not supported; send the request without it`));
    res.writeHead(417, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close' });
    res.end(body);
  });
  return server;
}

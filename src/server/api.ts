/**
 * The HTTP API of a node (`/v1`, `/healthz`, `/metrics`). Routes are matched on the raw request path, not on a parsed
 * URL: keys may contain "/", "." and ".." segments, and URL normalisation would silently rewrite them.
 *
 * The API talks to the node through `NodeApi`, so the same routes serve a root (writes go to its group commit) and a
 * replica (writes are forwarded toward the root).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Clock } from '../clock/index.js';
import type { WriteRequest, WriteResult } from '../commit/index.js';
import {
  JSON_BODY_BYTES_MAX,
  LOG_READ_BYTES_MAX,
  LOG_READ_LIMIT_DEFAULT,
  LOG_READ_LIMIT_MAX,
  MercuryError,
  MIN_SEQ_WAIT_MS_DEFAULT,
  MIN_SEQ_WAIT_MS_MAX,
  RANGE_LIMIT_DEFAULT,
  RANGE_LIMIT_MAX,
  decodeKeyPath,
  encodeJsonBytes,
  formatOp,
  parseTxn,
  validateKey,
  valueTooLarge,
} from '../api/index.js';
import { SECONDS_BUCKETS, type Registry } from '../metrics/index.js';
import { prefixEnd, type Store } from '../store/index.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import { parseJson, queryInteger, readBody, sendError, sendJson } from './http-io.js';

/** What the HTTP API needs from a node. */
export interface NodeApi {
  readonly store: Store;
  readonly clock: Clock;
  readonly metrics: Registry;
  readonly valueBytesMax: number;
  /** Commits (root) or forwards (replica) a write; resolves once it is durable and visible on this node. */
  write(request: WriteRequest): Promise<WriteResult>;
  /** Resolves once this node has applied `seq`; rejects with SEQ_WAIT_TIMEOUT after `timeoutMs`. */
  waitForSeq(seq: number, timeoutMs: number): Promise<void>;
  status(): Record<string, unknown>;
  /** Whether the node should take traffic, and why not (`/readyz`). */
  readiness(): { ready: boolean; reasons: string[] };
  /** Replica: discard the chain and take a full snapshot (throws NOT_A_REPLICA on the root, RESYNC_IN_PROGRESS while one runs). */
  resync(): void;
  log(message: string, fields?: Record<string, unknown>): void;
}

type Handler = (req: IncomingMessage, res: ServerResponse, query: URLSearchParams, key: Buffer | undefined) => Promise<void> | void;

interface Route {
  readonly name: string;
  readonly methods: Readonly<Record<string, Handler>>;
}

const SEQ_HEADER = 'x-mercury-seq';

export function createApiHandler(node: NodeApi): (req: IncomingMessage, res: ServerResponse) => void {
  const requests = node.metrics.counter('mercury_http_requests_total', 'HTTP requests by route, method and status.');
  const seconds = node.metrics.histogram('mercury_http_request_seconds', 'HTTP request duration.', SECONDS_BUCKETS);
  const internal = (error: unknown): void => node.log('internal error', { error: String((error as Error)?.stack ?? error) });

  const readSeqOptions = async (query: URLSearchParams): Promise<void> => {
    const minSeq = queryInteger(query, 'minSeq', 0);
    if (minSeq > node.store.head().seq) {
      await node.waitForSeq(minSeq, queryInteger(query, 'timeoutMs', MIN_SEQ_WAIT_MS_DEFAULT, MIN_SEQ_WAIT_MS_MAX));
    }
  };

  const ifModSeqCompare = (query: URLSearchParams, key: Buffer): WriteRequest['compares'] => {
    if (!query.has('ifModSeq')) return [];
    return [{ key, target: 'modSeq', operator: '=', number: queryInteger(query, 'ifModSeq', 0) }];
  };

  const compareFailed = (key: Buffer, query: URLSearchParams, seq: number): MercuryError => {
    const current = node.store.get(key).record;
    return new MercuryError('COMPARE_FAILED', `ifModSeq=${query.get('ifModSeq')} does not match the key's current modSeq ${current?.modSeq ?? 0}; read it again and retry`, {
      details: { modSeq: current?.modSeq ?? 0, seq },
    });
  };

  const kvKey: Route = {
    name: '/v1/kv/{key}',
    methods: {
      GET: async (_req, res, query, key) => {
        // Also for reads: LMDB throws on keys longer than it supports, and such a key can never exist anyway.
        validateKey(key!);
        await readSeqOptions(query);
        const { record, seq } = node.store.get(key!);
        if (record === undefined) throw new MercuryError('KEY_NOT_FOUND', `key "${key!.toString()}" does not exist at seq ${seq}`, { details: { seq } });
        res.writeHead(200, {
          'content-type': 'application/octet-stream',
          'content-length': record.value.length,
          [SEQ_HEADER]: seq,
          'x-mercury-mod-seq': record.modSeq,
          'x-mercury-create-seq': record.createSeq,
          'x-mercury-version': record.version,
        });
        res.end(record.value);
      },
      PUT: async (req, res, query, key) => {
        validateKey(key!);
        const value = await readBody(req, node.valueBytesMax, (bytes) => valueTooLarge(bytes, node.valueBytesMax));
        const result = await node.write({ compares: ifModSeqCompare(query, key!), success: [{ type: 'put', key: key!, value }], failure: [] });
        if (!result.succeeded) throw compareFailed(key!, query, result.seq);
        sendJson(res, 200, { seq: result.seq }, { [SEQ_HEADER]: result.seq });
      },
      DELETE: async (_req, res, query, key) => {
        validateKey(key!);
        const compares = ifModSeqCompare(query, key!);
        // Without ifModSeq, delete only when the key exists, so deleting a missing key commits no entry.
        const result = await node.write({
          compares: compares.length > 0 ? compares : [{ key: key!, target: 'exists', exists: true }],
          success: [{ type: 'delete', key: key! }],
          failure: [],
        });
        if (!result.succeeded && compares.length > 0) throw compareFailed(key!, query, result.seq);
        sendJson(res, 200, { seq: result.seq, deleted: result.succeeded }, { [SEQ_HEADER]: result.seq });
      },
    },
  };

  const kvRange: Route = {
    name: '/v1/kv',
    methods: {
      GET: async (_req, res, query) => {
        const prefix = Buffer.from(query.get('prefix') ?? '', 'utf8');
        if (prefix.length > 0) validateKey(prefix, 'prefix');
        const limit = queryInteger(query, 'limit', RANGE_LIMIT_DEFAULT, RANGE_LIMIT_MAX, 1);
        const cursor = query.get('cursor');
        const after = cursor === null ? undefined : decodeCursor(cursor);
        await readSeqOptions(query);
        const page = node.store.range(prefix, prefixEnd(prefix), limit, after);
        const last = page.items[page.items.length - 1];
        sendJson(
          res,
          200,
          {
            seq: page.seq,
            items: page.items.map(({ key, record }) => {
              const keyJson = encodeJsonBytes(key);
              const valueJson = encodeJsonBytes(record.value);
              return {
                key: keyJson.text,
                keyEncoding: keyJson.encoding,
                value: valueJson.text,
                valueEncoding: valueJson.encoding,
                createSeq: record.createSeq,
                modSeq: record.modSeq,
                version: record.version,
              };
            }),
            more: page.more,
            cursor: page.more && last !== undefined ? encodeCursor(last.key) : null,
          },
          { [SEQ_HEADER]: page.seq },
        );
      },
      DELETE: async (_req, res, query) => {
        const prefix = Buffer.from(query.get('prefix') ?? '', 'utf8');
        if (prefix.length === 0) throw new MercuryError('INVALID_ARGUMENT', 'DELETE /v1/kv needs a non-empty ?prefix=; deleting every key must be a deliberate deleteRange transaction');
        validateKey(prefix, 'prefix');
        const result = await node.write({ compares: [], success: [{ type: 'deleteRange', start: prefix, end: prefixEnd(prefix) }], failure: [] });
        sendJson(res, 200, { seq: result.seq }, { [SEQ_HEADER]: result.seq });
      },
    },
  };

  const txn: Route = {
    name: '/v1/txn',
    methods: {
      POST: async (req, res) => {
        const type = req.headers['content-type'];
        if (type !== undefined && !/^application\/json\s*(;|$)/i.test(type))
          throw new MercuryError('UNSUPPORTED_MEDIA_TYPE', `POST /v1/txn takes application/json, not "${type}"`);
        const body = await readBody(
          req,
          JSON_BODY_BYTES_MAX,
          (bytes) => new MercuryError('BODY_TOO_LARGE', `request body is ${bytes} bytes; at most ${JSON_BODY_BYTES_MAX} are accepted; split the transaction`, { details: { limit: JSON_BODY_BYTES_MAX } }),
        );
        const result = await node.write(parseTxn(parseJson(body), node.valueBytesMax));
        sendJson(res, 200, { succeeded: result.succeeded, seq: result.seq }, { [SEQ_HEADER]: result.seq });
      },
    },
  };

  const log: Route = {
    name: '/v1/log',
    methods: {
      GET: (_req, res, query) => {
        const bounds = node.store.logBounds();
        const from = queryInteger(query, 'from', bounds.firstSeq, Number.MAX_SAFE_INTEGER, 1);
        const limit = queryInteger(query, 'limit', LOG_READ_LIMIT_DEFAULT, LOG_READ_LIMIT_MAX, 1);
        if (from < bounds.firstSeq)
          throw new MercuryError('SEQ_NOT_RETAINED', `seq ${from} was trimmed from the log; the first retained seq is ${bounds.firstSeq}`, {
            details: { firstSeq: bounds.firstSeq },
          });
        const entries = [];
        let bytes = 0;
        for (const { entry, record } of node.store.readLog(from, limit)) {
          if (entries.length > 0 && bytes + record.length > LOG_READ_BYTES_MAX) break;
          bytes += record.length;
          entries.push({
            seq: entry.seq,
            timeMs: entry.timeMs,
            prevHash: entry.prevHash.toString('hex'),
            hash: entry.hash.toString('hex'),
            ops: entry.ops.map(formatOp),
          });
        }
        sendJson(res, 200, { firstSeq: bounds.firstSeq, lastSeq: bounds.lastSeq, entries });
      },
    },
  };

  const status: Route = { name: '/v1/status', methods: { GET: (_req, res) => sendJson(res, 200, node.status()) } };
  const resync: Route = {
    name: '/v1/replication/resync',
    methods: {
      POST: (_req, res) => {
        node.resync();
        sendJson(res, 202, { resync: 'started', seq: node.store.head().seq });
      },
    },
  };
  const healthz: Route = { name: '/healthz', methods: { GET: (_req, res) => sendJson(res, 200, { ok: true, seq: node.store.head().seq }) } };
  const readyz: Route = {
    name: '/readyz',
    methods: {
      GET: (_req, res) => {
        const { ready, reasons } = node.readiness();
        sendJson(res, ready ? 200 : 503, { ready, reasons, seq: node.store.head().seq });
      },
    },
  };
  const metrics: Route = {
    name: '/metrics',
    methods: {
      GET: (_req, res) => {
        const text = node.metrics.render();
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      },
    },
  };

  const exact = new Map<string, Route>([
    ['/v1/kv', kvRange],
    ['/v1/txn', txn],
    ['/v1/log', log],
    ['/v1/status', status],
    ['/v1/replication/resync', resync],
    ['/healthz', healthz],
    ['/readyz', readyz],
    ['/metrics', metrics],
  ]);

  return (req, res) => {
    const started = node.clock.monotonicMs();
    const url = req.url ?? '/';
    const queryAt = url.indexOf('?');
    const path = queryAt === -1 ? url : url.slice(0, queryAt);
    let route: Route | undefined = exact.get(path);
    let key: Buffer | undefined;
    let routeName = route?.name ?? 'unknown';
    const finish = (statusCode: number): void => {
      requests.inc(1, { route: routeName, method: req.method ?? '', status: String(statusCode) });
      seconds.observe((node.clock.monotonicMs() - started) / 1000);
    };
    res.once('finish', () => finish(res.statusCode));
    const fail = (error: unknown): void => {
      sendError(res, error, internal);
    };
    try {
      if (route === undefined && path.startsWith('/v1/kv/')) {
        route = kvKey;
        routeName = route.name;
        key = decodeKeyPath(path.slice('/v1/kv/'.length));
      }
      if (route === undefined) throw new MercuryError('NOT_FOUND', `no route ${path}; see the API reference in the README`);
      const handler = route.methods[req.method ?? ''];
      if (handler === undefined) {
        const allow = Object.keys(route.methods).join(', ');
        throw new MercuryError('METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${route.name}; allowed: ${allow}`, { details: { allow } });
      }
      const query = new URLSearchParams(queryAt === -1 ? '' : url.slice(queryAt + 1));
      const done = handler(req, res, query, key);
      if (done !== undefined) done.catch(fail);
    } catch (error) {
      fail(error);
    }
  };
}

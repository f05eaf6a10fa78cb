/**
 * `/v1/kv/{key}` (GET the raw value, PUT the raw body, DELETE) and `/v1/kv?prefix=` (GET a page of a range, DELETE a
 * prefix). Reads answer from one LMDB snapshot and name its seq; writes answer once durable and visible here.
 */
import { MercuryError, RANGE_LIMIT_DEFAULT, RANGE_LIMIT_MAX, encodeJsonBytes, prefixEnd, validateKey, valueTooLarge, isReservedKey, overlapsReserved } from '../../api/index.js';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { requireRead, requireReadPrefix, requireWriteRange } from '../../auth/index.js';
import type { RangePage } from '../../store/index.js';
import { principalNow, principalOf, writeFor } from '../auth.js';
import type { AnswerBudget } from '../answer-budget.js';
import type { BodyBudget } from '../body-budget.js';
import { decodeCursor, encodeCursor } from '../cursor.js';
import { JSON_PIECE_CHARS, READ_SEQ_PARAMS, SEND_SLICE_BYTES, SEQ_HEADER, queryInteger, readBody, readSeqOptions, sendJson, writePieces } from '../http-io.js';
import type { HttpLimits } from '../http-server.js';
import { compareFailed, deleteRequest, putRequest, requireKeyWrite } from '../kv-ops.js';
import type { NodeApi } from '../node-api.js';
import type { Query } from '../query.js';
import type { Route } from '../router.js';

/** `?ifModSeq=N`, or undefined. */
function ifModSeqOf(query: Query): number | undefined {
  return query.has('ifModSeq') ? queryInteger(query, 'ifModSeq', 0) : undefined;
}

/**
 * A page of the keys under `prefix`, from one snapshot, leaving out the reserved key space (src/api/keys.ts). The
 * reserved keys read are dropped from the page but still move the cursor (`lastKey`), so a page of only reserved keys
 * is empty with `more` set, and the next one goes on past them.
 */
function rangeSkippingReserved(node: NodeApi, prefix: Buffer, limit: number, after: Buffer | undefined, bytesMax: number): RangePage & { lastKey: Buffer | undefined } {
  const page = node.store.range(prefix, prefixEnd(prefix), limit, after, bytesMax);
  const lastKey = page.items[page.items.length - 1]?.key;
  if (!overlapsReserved(prefix, prefixEnd(prefix))) return { ...page, lastKey };
  return { ...page, items: page.items.filter((item) => !isReservedKey(item.key)), lastKey };
}

export function kvKeyRoute(node: NodeApi, budget: BodyBudget, answers: AnswerBudget): Route {
  return {
    name: '/v1/kv/{key}',
    params: { GET: READ_SEQ_PARAMS, PUT: ['ifModSeq'], DELETE: ['ifModSeq'] },
    methods: {
      GET: async (_req, res, query, key) => {
        // Also for reads: LMDB throws on keys longer than it supports, and such a key can never exist anyway.
        validateKey(key!);
        requireRead(principalOf(_req), key!);
        await readSeqOptions(node, query, res, (principal) => requireRead(principal, key!));
        const { record, seq } = node.store.get(key!);
        if (record === undefined) throw new MercuryError('KEY_NOT_FOUND', `key "${key!.toString()}" does not exist at seq ${seq}`, { details: { seq } });
        answers.hold(res, record.value.length);
        res.writeHead(200, {
          'content-type': 'application/octet-stream',
          'content-length': record.value.length,
          [SEQ_HEADER]: seq,
          'x-mercury-mod-seq': record.modSeq,
          'x-mercury-create-seq': record.createSeq,
          'x-mercury-version': record.version,
        });
        // A large value goes out in slices, so that its client is held to the send deadline slice by slice, as for a
        // streamed answer (src/server/http-io.ts), rather than for the whole value at once.
        if (record.value.length > SEND_SLICE_BYTES) return writePieces(res, [record.value]);
        res.end(record.value);
      },
      PUT: async (req, res, query, key) => {
        validateKey(key!);
        const ifModSeq = ifModSeqOf(query);
        // From the URL, before the body is read (or charged to the budget): a refused value is dropped unread.
        requireKeyWrite(principalOf(req), key!, ifModSeq !== undefined);
        const value = await readBody(req, res, budget, { bytesMax: node.valueBytesMax, tooLarge: (bytes) => valueTooLarge(bytes, node.valueBytesMax) });
        requireKeyWrite(principalNow(req, node), key!, ifModSeq !== undefined);
        const { request, caller } = writeFor(req, res, putRequest(key!, value, ifModSeq));
        const result = await node.write(request, caller);
        if (!result.succeeded) throw compareFailed(node.store, key!, ifModSeq!, result.seq);
        sendJson(res, 200, { seq: result.seq }, { [SEQ_HEADER]: result.seq });
      },
      DELETE: async (req, res, query, key) => {
        validateKey(key!);
        const ifModSeq = ifModSeqOf(query);
        requireKeyWrite(principalOf(req), key!, ifModSeq !== undefined);
        const { request, caller } = writeFor(req, res, deleteRequest(key!, ifModSeq));
        const result = await node.write(request, caller);
        if (!result.succeeded && ifModSeq !== undefined) throw compareFailed(node.store, key!, ifModSeq, result.seq);
        sendJson(res, 200, { seq: result.seq, deleted: result.succeeded }, { [SEQ_HEADER]: result.seq });
      },
    },
  };
}

export function kvRangeRoute(node: NodeApi, limits: HttpLimits, answers: AnswerBudget): Route {
  return {
    name: '/v1/kv',
    params: { GET: ['prefix', 'limit', 'cursor', ...READ_SEQ_PARAMS], DELETE: ['prefix'] },
    methods: {
      GET: async (req, res, query) => {
        const prefix = query.bytes('prefix') ?? Buffer.alloc(0);
        if (prefix.length > 0) validateKey(prefix, 'prefix');
        requireReadPrefix(principalOf(req), prefix, 'list');
        const limit = queryInteger(query, 'limit', RANGE_LIMIT_DEFAULT, RANGE_LIMIT_MAX, 1);
        const cursor = query.get('cursor');
        const after = cursor === null ? undefined : decodeCursor(cursor);
        await readSeqOptions(node, query, res, (principal) => requireReadPrefix(principal, prefix, 'list'));
        // The byte budget ends a page before the item limit does when values are large; the cursor continues after
        // the last key read either way, so a client pages through as it always did.
        const page = rangeSkippingReserved(node, prefix, limit, after, limits.rangePageBytesMax);
        const last = page.lastKey;
        const items = page.items.map(({ key, record }) => {
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
        });
        // What the page holds until it is sent: its values' text, which is most of it.
        answers.hold(res, items.reduce((sum, item) => sum + item.value.length + item.key.length, 0));
        const cursorOut = page.more && last !== undefined ? encodeCursor(last) : null;
        // A page of large values (up to the byte budget, base64 of control characters included) was read and encoded
        // in this turn; its JSON text is built in the next, and written a piece per turn (sendJson), so a request that
        // arrives meanwhile (a liveness probe) waits for one of those steps rather than for all of them.
        if (items.reduce((sum, item) => sum + item.value.length, 0) > JSON_PIECE_CHARS) await nextTurn();
        sendJson(res, 200, { seq: page.seq, items, more: page.more, cursor: cursorOut }, { [SEQ_HEADER]: page.seq });
      },
      DELETE: async (req, res, query) => {
        const prefix = query.bytes('prefix') ?? Buffer.alloc(0);
        if (prefix.length === 0) throw new MercuryError('INVALID_ARGUMENT', 'DELETE /v1/kv needs a non-empty ?prefix=; deleting every key must be a deliberate deleteRange transaction');
        validateKey(prefix, 'prefix');
        requireWriteRange(principalOf(req), prefix, prefixEnd(prefix));
        const { request, caller } = writeFor(req, res, { compares: [], success: [{ type: 'deleteRange', start: prefix, end: prefixEnd(prefix) }], failure: [] });
        const result = await node.write(request, caller);
        sendJson(res, 200, { seq: result.seq }, { [SEQ_HEADER]: result.seq });
      },
    },
  };
}

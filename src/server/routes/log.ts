/**
 * `GET /v1/log?from=S&limit=N`: entries of the retained log for audit, their ops in the transaction form (formatted
 * by src/api/txn.ts). A page holds at most `limit` entries and LOG_READ_BYTES_MAX record bytes, and at least one entry.
 *
 * Audit fields: `authors` lists who wrote the ops, as runs in op order (`{"author": "deploy-bot", "ops": 2}`; an
 * author of null where none was recorded; the field is absent when no op of the entry has one), and `signature` is the
 * root's Ed25519 signature of `hash` in hex (null for an entry written before signing, or stripped on the way).
 */
import { LOG_READ_BYTES_MAX, LOG_READ_LIMIT_DEFAULT, LOG_READ_LIMIT_MAX, MercuryError, formatOp } from '../../api/index.js';
import { requireAdmin } from '../../auth/index.js';
import { principalOf } from '../auth.js';
import { queryInteger, sendJson } from '../http-io.js';
import type { NodeApi } from '../node-api.js';
import type { Route } from '../router.js';

export function logRoute(node: NodeApi): Route {
  return {
    name: '/v1/log',
    methods: {
      GET: (req, res, query) => {
        requireAdmin(principalOf(req), 'read the log');
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
            ...(entry.authors !== undefined && { authors: entry.authors.map((run) => ({ author: run.author === '' ? null : run.author, ops: run.opCount })) }),
            signature: entry.signature?.toString('hex') ?? null,
          });
        }
        sendJson(res, 200, { firstSeq: bounds.firstSeq, lastSeq: bounds.lastSeq, entries });
      },
    },
  };
}

/**
 * `GET /v1/log?from=S&limit=N`: entries of the retained log for audit, their ops in the transaction form (formatted
 * by src/api/txn.ts). A page holds at most `limit` entries and LOG_READ_BYTES_MAX record bytes, and at least one entry.
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
          });
        }
        sendJson(res, 200, { firstSeq: bounds.firstSeq, lastSeq: bounds.lastSeq, entries });
      },
    },
  };
}

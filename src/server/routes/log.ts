/**
 * `GET /v1/log?from=S&limit=N`: entries of the retained log for audit, their ops in the transaction form (formatted
 * by src/api/txn.ts). A page holds at most `limit` entries and stops after the entry whose record reaches the node's
 * `http.logPageBytesMax` (so at least one entry). `nextSeq` is the `from` of the next page, null once the page reaches
 * the last seq.
 *
 * The response is streamed op by op with backpressure: one entry may hold up to an entry's bytes of ops (96 MiB), and
 * its JSON is never built as one string.
 *
 * Audit fields: `authors` lists who wrote the ops, as runs in op order (`{"author": "deploy-bot", "ops": 2}`; an
 * author of null where none was recorded; the field is absent when no op of the entry has one), and `signature` is the
 * root's Ed25519 signature of `hash` in hex (null for an entry written before signing, or stripped on the way).
 */
import { LOG_READ_LIMIT_DEFAULT, LOG_READ_LIMIT_MAX, MercuryError, formatOp } from '../../api/index.js';
import { requireAdmin } from '../../auth/index.js';
import { principalOf } from '../auth.js';
import { queryInteger, sendJsonPieces } from '../http-io.js';
import type { HttpLimits } from '../http-server.js';
import type { NodeApi } from '../node-api.js';
import type { Route } from '../router.js';
import type { EncodedEntry } from '../../log/index.js';

/**
 * The 410 for a seq below the first this node holds. "Was trimmed" was said on a replica of seqs it never held: its log
 * starts after the snapshot it joined from (audit of log retention, 2026-12-07).
 */
export function seqNotRetained(seq: number, firstSeq: number): MercuryError {
  return new MercuryError(
    'SEQ_NOT_RETAINED',
    `seq ${seq} is not in this node's log, which starts at seq ${firstSeq} (older entries were trimmed, or came before the snapshot it started from); read from ${firstSeq}, or take a snapshot`,
    { details: { firstSeq } },
  );
}

function* logPieces(firstSeq: number, lastSeq: number, entries: readonly EncodedEntry[]): Generator<string> {
  const last = entries[entries.length - 1];
  const nextSeq = last === undefined || last.entry.seq >= lastSeq ? null : last.entry.seq + 1;
  yield `{"firstSeq":${firstSeq},"lastSeq":${lastSeq},"nextSeq":${JSON.stringify(nextSeq)},"entries":[`;
  for (const [index, { entry }] of entries.entries()) {
    const head = {
      seq: entry.seq,
      timeMs: entry.timeMs,
      prevHash: entry.prevHash.toString('hex'),
      hash: entry.hash.toString('hex'),
      ...(entry.authors !== undefined && { authors: entry.authors.map((run) => ({ author: run.author === '' ? null : run.author, ops: run.opCount })) }),
      signature: entry.signature?.toString('hex') ?? null,
    };
    yield `${index === 0 ? '' : ','}${JSON.stringify(head).slice(0, -1)},"ops":[`;
    for (const [opIndex, op] of entry.ops.entries()) yield `${opIndex === 0 ? '' : ','}${JSON.stringify(formatOp(op))}`;
    yield ']}';
  }
  yield ']}';
}

export function logRoute(node: NodeApi, limits: HttpLimits): Route {
  return {
    name: '/v1/log',
    params: { GET: ['from', 'limit'] },
    methods: {
      GET: async (req, res, query) => {
        requireAdmin(principalOf(req), 'read the log');
        const bounds = node.store.logBounds();
        const from = queryInteger(query, 'from', bounds.firstSeq, Number.MAX_SAFE_INTEGER, 1);
        const limit = queryInteger(query, 'limit', LOG_READ_LIMIT_DEFAULT, LOG_READ_LIMIT_MAX, 1);
        if (from < bounds.firstSeq)
          throw seqNotRetained(from, bounds.firstSeq);
        // Read (and chain-checked) before the first byte is sent, so damage met here is still a clean error answer.
        const entries = node.store.readLog(from, limit, limits.logPageBytesMax);
        await sendJsonPieces(res, 200, logPieces(bounds.firstSeq, bounds.lastSeq, entries));
      },
    },
  };
}

/**
 * Backups: `GET /v1/snapshot` streams the node's whole key space at its current head as a snapshot file
 * (src/snapshot/format.ts), and `GET /v1/snapshot/entries?from=A&to=B` streams raw log records for a point-in-time
 * restore (a snapshot file at seq A - 1 plus these entries replayed to B). Both are admin work: they hand out every key.
 *
 * A snapshot is read from one LMDB read transaction, held for the whole transfer; on a busy root a long transfer
 * keeps the pages of the old versions from being reused (the data file grows until it ends). Writes go on meanwhile.
 * So the transfer holds one of the node's snapshot readers (refused 503 OVERLOADED past them), and a client that takes
 * nothing for `http.sendStallMs`, or less than `http.snapshotPaceBytesMin` in a `http.snapshotPaceWindowMs` while the
 * node waits on it (SEND_TOO_SLOW), is cut off (writePieces), which ends the transaction. The entry stream holds no
 * transaction between its batches (each is read whole, then sent), so only the send deadline bounds it.
 */
import { requireAdmin } from '../../auth/index.js';
import { principalOf } from '../auth.js';
import { MercuryError } from '../../api/index.js';
import { encodeEntryStreamRecord, snapshotFileStream } from '../../snapshot/index.js';
import { ownConnection, queryInteger, SEQ_HEADER, writePieces } from '../http-io.js';
import type { NodeApi } from '../node-api.js';
import { seqNotRetained } from './log.js';
import type { Route } from '../router.js';

/** Log records read per step of an entry stream. */
const ENTRY_STREAM_BATCH_ENTRIES = 1_000;
const ENTRY_STREAM_BATCH_BYTES = 4 * 1024 * 1024;

function joined(node: NodeApi): void {
  if (node.store.datasetId === '') throw new MercuryError('UPSTREAM_UNAVAILABLE', 'this replica has not joined a dataset yet: there is nothing to save');
}

export function snapshotRoute(node: NodeApi): Route {
  return {
    name: '/v1/snapshot',
    methods: {
      GET: async (req, res) => {
        // Every key, token records included (their hashes): admin only, like the log.
        requireAdmin(principalOf(req), 'take a snapshot');
        joined(node);
        // Opened once the answer has its connection: pipelined behind other answers, its transaction was held (and a
        // snapshot reader taken) for as long as the client took to read those, unjudged by any deadline of its own.
        await ownConnection(res);
        if (res.destroyed) return;
        // One of the node's snapshot readers (src/store/snapshot-readers.ts): 503 OVERLOADED when all are taken.
        const reader = node.store.openSnapshot();
        try {
          const file = await snapshotFileStream(reader, node.clock.nowMs(), () => res.destroyed);
          if (file === undefined) return;
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': file.fileBytes, [SEQ_HEADER]: file.header.seq });
          // A turn of the event loop after each piece: a client that reads as fast as the node writes would otherwise
          // have the whole file written in one go, every other request waiting.
          await writePieces(res, file.pieces(), { turnEach: true, paced: true });
        } finally {
          reader.close();
        }
      },
    },
  };
}

export function snapshotEntriesRoute(node: NodeApi): Route {
  return {
    name: '/v1/snapshot/entries',
    params: { GET: ['from', 'to'] },
    methods: {
      GET: async (req, res, query) => {
        requireAdmin(principalOf(req), 'read the log entries of a snapshot');
        joined(node);
        const bounds = node.store.logBounds();
        const from = queryInteger(query, 'from', bounds.firstSeq, Number.MAX_SAFE_INTEGER, 1);
        const to = queryInteger(query, 'to', bounds.lastSeq);
        if (to > bounds.lastSeq) throw new MercuryError('INVALID_ARGUMENT', `to=${to} is past this node's head (seq ${bounds.lastSeq})`);
        if (from < bounds.firstSeq && from <= to)
          throw seqNotRetained(from, bounds.firstSeq);
        res.writeHead(200, { 'content-type': 'application/octet-stream', [SEQ_HEADER]: bounds.lastSeq });
        const store = node.store;
        function* pieces(): Generator<Buffer> {
          for (let seq = from; seq <= to; ) {
            const batch = store.readLog(seq, Math.min(ENTRY_STREAM_BATCH_ENTRIES, to - seq + 1), ENTRY_STREAM_BATCH_BYTES);
            // Trimmed since the request began: cut the stream, so the client sees it short and says so.
            if (batch.length === 0) throw new MercuryError('SEQ_NOT_RETAINED', `seq ${seq} was trimmed while it was being sent`);
            yield Buffer.concat(batch.map(({ record }) => encodeEntryStreamRecord(record)));
            seq += batch.length;
          }
        }
        await writePieces(res, pieces());
      },
    },
  };
}

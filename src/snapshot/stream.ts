/**
 * The node's side of `GET /v1/snapshot`: a snapshot file (format.ts) made from one read transaction of the store, as
 * a sequence of pieces to write with back-pressure. The size is known before the first byte (`fileBytes`, sent as
 * Content-Length), so the client can show progress and tell a cut-off transfer from a complete one.
 */
import type { SnapshotReader } from '../store/index.js';
import { SNAPSHOT_FORMAT_VERSION, SnapshotEncoder, snapshotFileBytes, type SnapshotHeader } from './format.js';

/** Key and value bytes read from the store per piece: large enough to keep the socket busy, small enough to bound memory. */
export const SNAPSHOT_PIECE_BYTES = 256 * 1024;

export interface SnapshotFileStream {
  readonly header: SnapshotHeader;
  readonly fileBytes: number;
  /** The file in pieces: the header, records a page at a time, the trailer. Closes nothing; the caller closes the reader. */
  pieces(): Generator<Buffer>;
}

/** `reader` must belong to a node that holds a dataset (its datasetId is not ''). */
export function snapshotFileStream(reader: SnapshotReader, savedAtMs: number): SnapshotFileStream {
  const header: SnapshotHeader = Object.freeze({
    version: SNAPSHOT_FORMAT_VERSION,
    datasetId: reader.datasetId,
    seq: reader.seq,
    headHash: reader.hash,
    keyCount: reader.keyCount,
    dataBytes: reader.dataBytes(),
    savedAtMs,
  });
  return {
    header,
    fileBytes: snapshotFileBytes(header),
    *pieces() {
      const encoder = new SnapshotEncoder();
      yield encoder.header(header);
      for (;;) {
        const page = reader.nextPage(SNAPSHOT_PIECE_BYTES);
        if (page.length === 0) break;
        yield Buffer.concat(page.map((record) => encoder.record(record)));
      }
      yield encoder.trailer();
    },
  };
}

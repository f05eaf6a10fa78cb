/**
 * The node's side of `GET /v1/snapshot`: a snapshot file (format.ts) made from one read transaction of the store, as
 * a sequence of pieces to write with back-pressure. The size is known before the first byte (`fileBytes`, sent as
 * Content-Length), so the client can show progress and tell a cut-off transfer from a complete one.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { SnapshotReader } from '../store/index.js';
import { SNAPSHOT_FORMAT_VERSION, SnapshotEncoder, snapshotFileBytes, type SnapshotHeader } from './format.js';

/** Key and value bytes read from the store per piece: large enough to keep the socket busy, small enough to bound memory. */
export const SNAPSHOT_PIECE_BYTES = 256 * 1024;
/**
 * Keys the size of the file is summed over per turn of the event loop (a few milliseconds of work): at 2.4 million
 * keys one walk held the node's event loop for 1.2 s before the first byte, and every other request with it.
 */
export const SNAPSHOT_SIZE_KEYS_PER_TURN = 10_000;

export interface SnapshotFileStream {
  readonly header: SnapshotHeader;
  readonly fileBytes: number;
  /** The file in pieces: the header, records a page at a time, the trailer. Closes nothing; the caller closes the reader. */
  pieces(): Generator<Buffer>;
}

/**
 * `reader` must belong to a node that holds a dataset (its datasetId is not ''). Sizes the file first, in steps a turn
 * of the event loop apart; undefined if `abandoned()` (the client went away) turns true meanwhile.
 */
export async function snapshotFileStream(reader: SnapshotReader, savedAtMs: number, abandoned: () => boolean = () => false): Promise<SnapshotFileStream | undefined> {
  let dataBytes: number | undefined;
  while ((dataBytes = reader.sizeData(SNAPSHOT_SIZE_KEYS_PER_TURN)) === undefined) {
    await nextTurn();
    if (abandoned()) return undefined;
  }
  const header: SnapshotHeader = Object.freeze({
    version: SNAPSHOT_FORMAT_VERSION,
    datasetId: reader.datasetId,
    seq: reader.seq,
    headHash: reader.hash,
    keyCount: reader.keyCount,
    dataBytes,
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

/**
 * `LogSource` over the LMDB `Store`: what an upstream session reads when it serves a child. Every call answers from
 * the store's current state; log reads verify the chain as they go (Store.readLog).
 */
import type { ChainHead, EncodedEntry } from '../log/index.js';
import { readersFull, type Store } from '../store/index.js';
import { SnapshotChunkWriter } from './protocol.js';
import type { LogSource, SnapshotSource } from './source.js';

export class StoreLogSource implements LogSource {
  constructor(private readonly store: Store) {}

  datasetId(): string {
    return this.store.datasetId;
  }

  head(): ChainHead {
    return this.store.head();
  }

  firstSeq(): number {
    return this.store.logBounds().firstSeq;
  }

  // LMDB's full reader table (readers of other processes) arrives as OVERLOADED READERS_FULL, which the session
  // answers by sending the child on (UNAVAILABLE); as LMDB's raw error it would end the process.
  hashAt(seq: number): Buffer | undefined {
    try {
      return this.store.hashAt(seq);
    } catch (error) {
      throw readersFull(error) ?? error;
    }
  }

  readLog(fromSeq: number, limitEntries: number, limitBytes: number): EncodedEntry[] {
    try {
      return this.store.readLog(fromSeq, limitEntries, limitBytes);
    } catch (error) {
      throw readersFull(error) ?? error;
    }
  }

  openSnapshot(): SnapshotSource | undefined {
    const reservation = this.store.snapshotReaders.tryReserve();
    if (reservation === undefined) return undefined;
    // LMDB's reader table full (other processes' readers) throws OVERLOADED READERS_FULL, which the session answers
    // with UNAVAILABLE naming it: the child is sent on as for a spent budget, told why.
    const reader = this.store.openSnapshot(undefined, reservation);
    return {
      seq: reader.seq,
      hash: reader.hash,
      keyCount: reader.keyCount,
      // Unknown without a full scan; progress is reported in keys instead.
      nextChunk: (bytesTarget) => {
        const writer = new SnapshotChunkWriter(bytesTarget);
        reader.nextRecords(bytesTarget, writer);
        const frame = writer.finish();
        return frame === undefined ? undefined : { frame, count: writer.count };
      },
      close: () => reader.close(),
    };
  }
}

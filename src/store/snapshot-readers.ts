/**
 * The node's budget of long-lived snapshot readers (`store.snapshotReadersMax`): every snapshot that may be held for as
 * long as a peer takes to read it (a `GET /v1/snapshot`, a joining child's snapshot, a watch's snapshot) holds one of
 * these, taken before its LMDB read transaction is opened and given back when it is closed. Each holds a slot of
 * LMDB's reader table (`store.readersMax`) and keeps the pages of its version from being reused; without this budget,
 * slow snapshot clients filled the table and every other read of the node failed with MDB_READERS_FULL. Past the
 * budget a snapshot is refused (HTTP 503 OVERLOADED, a child REFUSE UNAVAILABLE, a watch waits for one), and the
 * short reads that serve requests keep the rest of the table. Accounting only; no I/O.
 */
import assert from 'node:assert/strict';
import { MercuryError } from '../errors/index.js';
import { LMDB_READERS_PER_SNAPSHOT_READER } from '../limits.js';

/**
 * The snapshot readers a store may hold: `configured`, or fewer when LMDB's reader table in force (`lmdbReadersMax`)
 * is smaller than configured, so that they never hold more than their share of it; at least one, or no backup, join
 * or watch snapshot could ever be served. A configured budget already fits a table of the configured size (asserted in
 * src/node/limits.ts), so a table as large as that or larger leaves it as it is.
 */
export function snapshotReadersFor(configured: number, lmdbReadersMax: number): number {
  return Math.min(configured, Math.max(1, Math.floor(lmdbReadersMax / LMDB_READERS_PER_SNAPSHOT_READER)));
}

/** One snapshot reader taken from the budget; `release` gives it back (once: later calls do nothing). */
export interface SnapshotReservation {
  release(): void;
}

export class SnapshotReaders {
  private open = 0;
  private refusals = 0;

  constructor(readonly readersMax: number) {
    assert.ok(Number.isSafeInteger(readersMax) && readersMax > 0);
  }

  /** Readers taken and not yet given back. */
  get inUse(): number {
    return this.open;
  }

  /** Snapshots refused since start for want of a reader (HTTP 503, a child refused); a waiting watch is not one. */
  get refused(): number {
    return this.refusals;
  }

  /**
   * A reader if one is free; undefined (nothing taken) when all `readersMax` are in use. `whenBusy` says what the
   * caller does then: `refuse` (an HTTP snapshot, a child's join: counted in `refused`) or `wait` (a watch, which asks
   * again at every turn of its machine and would otherwise be counted over and over).
   */
  tryReserve(whenBusy: 'refuse' | 'wait' = 'refuse'): SnapshotReservation | undefined {
    if (this.open >= this.readersMax) {
      if (whenBusy === 'refuse') this.refusals++;
      return undefined;
    }
    this.open++;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.open--;
        assert.ok(this.open >= 0, 'gave back more snapshot readers than were taken');
      },
    };
  }

  /** The error for a snapshot refused because every reader is in use: 503 with Retry-After (src/server/http-io.ts). */
  busy(): MercuryError {
    return new MercuryError(
      'OVERLOADED',
      `this node is sending ${this.open} snapshots at once, its most (backups, joining replicas and watches share them); retry after Retry-After, or take it from another node`,
      { details: { limit: this.readersMax } },
    );
  }
}

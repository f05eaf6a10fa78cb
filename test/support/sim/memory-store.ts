/**
 * An in-memory stand-in for the LMDB Store, as the simulation needs it: a key space with the same per-key records
 * (createSeq, modSeq, version), a trimmable log, staged snapshot installs, and a durability model.
 *
 * Durability: `checkpoint()` marks the current state durable (an fsync); `crash()` returns to the last checkpoint,
 * as LMDB with relaxed fsync does after a power loss (some committed transactions lost, never a torn one). The root
 * checkpoints after every commit, because it acknowledges and forwards only durable entries.
 */
import assert from 'node:assert/strict';
import { GENESIS_HEAD, sealEntry, type ChainHead, type EncodedEntry, type Entry, type Op } from '../../../src/log/index.js';
import type { LogSource, SnapshotSource } from '../../../src/replication/index.js';
import { encodeMessage } from '../../../src/replication/index.js';
import { nextVersion, type SnapshotRecord } from '../../../src/store/index.js';

export type KeySpace = Map<string, SnapshotRecord>;

interface State {
  datasetId: string;
  head: ChainHead;
  headTimeMs: number | undefined;
  /** Log array: entries[i] has seq origin + 1 + i. Append-only, so a checkpoint can share it. */
  entries: EncodedEntry[];
  origin: number;
  /** Index of the first retained entry in `entries`; entries before it are trimmed. */
  firstIndex: number;
  /** The entry just before the first retained one. */
  logBase: ChainHead;
  kv: KeySpace;
}

/** Applies one op at `seq`, exactly as Store.applyOp does. */
export function applyOp(kv: KeySpace, seq: number, op: Op): void {
  switch (op.type) {
    case 'put': {
      const id = op.key.toString('latin1');
      const previous = kv.get(id);
      kv.set(
        id,
        previous === undefined
          ? { key: op.key, value: op.value, createSeq: seq, modSeq: seq, version: 1 }
          : { key: op.key, value: op.value, createSeq: previous.createSeq, modSeq: seq, version: nextVersion(previous.version) },
      );
      return;
    }
    case 'delete':
      kv.delete(op.key.toString('latin1'));
      return;
    case 'deleteRange':
      for (const [id, record] of kv)
        if (Buffer.compare(record.key, op.start) >= 0 && (op.end.length === 0 || Buffer.compare(record.key, op.end) < 0)) kv.delete(id);
      return;
  }
}

export function sortedRecords(kv: KeySpace): SnapshotRecord[] {
  return [...kv.values()].sort((a, b) => Buffer.compare(a.key, b.key));
}

export class MemoryStore implements LogSource {
  private state: State;
  private durable: State;
  private staging: SnapshotRecord[] | undefined;
  openSnapshots = 0;

  constructor(datasetId: string) {
    this.state = { datasetId, head: GENESIS_HEAD, headTimeMs: undefined, entries: [], origin: 0, firstIndex: 0, logBase: GENESIS_HEAD, kv: new Map() };
    this.durable = this.copy(this.state);
  }

  get keySpace(): ReadonlyMap<string, SnapshotRecord> {
    return this.state.kv;
  }

  get headTimeMs(): number | undefined {
    return this.state.headTimeMs;
  }

  // LogSource ------------------------------------------------------------------------------------------------

  datasetId(): string {
    return this.state.datasetId;
  }

  head(): ChainHead {
    return this.state.head;
  }

  firstSeq(): number {
    return this.state.origin + 1 + this.state.firstIndex;
  }

  hashAt(seq: number): Buffer | undefined {
    const state = this.state;
    if (seq === 0) return GENESIS_HEAD.hash;
    if (seq === state.head.seq) return state.head.hash;
    if (seq === state.logBase.seq) return state.logBase.hash;
    const index = seq - state.origin - 1;
    if (index < state.firstIndex || index >= state.entries.length) return undefined;
    return state.entries[index]!.entry.hash;
  }

  readLog(fromSeq: number, limitEntries: number, limitBytes: number): EncodedEntry[] {
    const state = this.state;
    const result: EncodedEntry[] = [];
    let index = fromSeq - state.origin - 1;
    if (index < state.firstIndex) return result;
    let bytes = 0;
    while (index < state.entries.length && result.length < limitEntries) {
      const encoded = state.entries[index]!;
      if (result.length > 0 && bytes + encoded.record.length > limitBytes) break;
      result.push(encoded);
      bytes += encoded.record.length;
      index++;
    }
    return result;
  }

  openSnapshot(): SnapshotSource {
    // Like an LMDB read transaction: the records as of now, whatever is written later.
    const records = sortedRecords(this.state.kv);
    let next = 0;
    let closed = false;
    this.openSnapshots++;
    return {
      seq: this.state.head.seq,
      hash: this.state.head.hash,
      keyCount: records.length,
      nextChunk: (bytesTarget) => {
        assert.ok(!closed, 'snapshot read after close');
        const page: SnapshotRecord[] = [];
        let bytes = 0;
        while (next < records.length && (page.length === 0 || bytes < bytesTarget)) {
          const record = records[next++]!;
          page.push(record);
          bytes += record.key.length + record.value.length;
        }
        return page.length === 0 ? undefined : { frame: encodeMessage({ type: 'snapshotChunk', records: page }), count: page.length };
      },
      close: () => {
        assert.ok(!closed, 'snapshot closed twice');
        closed = true;
        this.openSnapshots--;
      },
    };
  }

  // Writes ---------------------------------------------------------------------------------------------------

  /** Root: seals (and signs, with `sign`) and applies the next entry. */
  commit(timeMs: number, ops: readonly Op[], sign?: (hash: Buffer) => Buffer): EncodedEntry {
    const state = this.state;
    const encoded = sealEntry({ seq: state.head.seq + 1, timeMs, ops }, state.head.hash, sign);
    this.append(encoded);
    return encoded;
  }

  /** Replica: applies verified entries (the chain link is asserted; the machine already verified the hashes). */
  apply(entries: readonly EncodedEntry[]): void {
    for (const encoded of entries) {
      assert.equal(encoded.entry.seq, this.state.head.seq + 1, 'apply out of order');
      assert.ok(encoded.entry.prevHash.equals(this.state.head.hash), 'apply off the chain');
      this.append(encoded);
    }
  }

  private append(encoded: EncodedEntry): void {
    const state = this.state;
    const entry: Entry = encoded.entry;
    for (const op of entry.ops) applyOp(state.kv, entry.seq, op);
    assert.equal(state.origin + 1 + state.entries.length, entry.seq);
    state.entries.push(encoded);
    state.head = { seq: entry.seq, hash: entry.hash };
    state.headTimeMs = entry.timeMs;
  }

  /** Drops the oldest entries beyond `retainEntries`, always keeping the head entry. */
  trim(retainEntries: number): number {
    const state = this.state;
    const retained = state.entries.length - state.firstIndex;
    const drop = Math.min(retained - Math.max(retainEntries, 1), retained - 1);
    if (drop <= 0) return 0;
    state.firstIndex += drop;
    const base = state.entries[state.firstIndex - 1]!.entry;
    state.logBase = { seq: base.seq, hash: base.hash };
    return drop;
  }

  beginSnapshot(): void {
    this.staging = [];
  }

  stageSnapshot(records: readonly SnapshotRecord[]): void {
    assert.ok(this.staging !== undefined, 'snapshot chunk without begin');
    // Copies: the records reference frame memory.
    for (const record of records) this.staging.push({ ...record, key: Buffer.from(record.key), value: Buffer.from(record.value) });
  }

  abortSnapshot(): void {
    this.staging = undefined;
  }

  finishSnapshot(seq: number, hash: Buffer, datasetId: string): void {
    assert.ok(this.staging !== undefined, 'snapshot finish without begin');
    const kv: KeySpace = new Map();
    for (const record of this.staging) kv.set(record.key.toString('latin1'), record);
    const head = { seq, hash: Buffer.from(hash) };
    this.state = { datasetId, head, headTimeMs: undefined, entries: [], origin: seq, firstIndex: 0, logBase: head, kv };
    this.staging = undefined;
  }

  // Durability -----------------------------------------------------------------------------------------------

  checkpoint(): void {
    this.durable = this.copy(this.state);
  }

  /** Back to the last checkpoint; a staged snapshot is lost as well. */
  crash(): void {
    this.state = this.copy(this.durable);
    this.staging = undefined;
  }

  private copy(state: State): State {
    return {
      ...state,
      // The log array is append-only: a prefix copy is exact and cheap enough for the simulation's sizes.
      entries: state.entries.slice(0, state.entries.length),
      kv: new Map(state.kv),
    };
  }

  /** The retained log (for the end-of-run prefix check). */
  retained(): readonly EncodedEntry[] {
    return this.state.entries.slice(this.state.firstIndex);
  }
}

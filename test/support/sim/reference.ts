/**
 * The root's chain as the simulation's oracle: every entry it ever committed (never trimmed), and the key space at
 * any seq, recomputed by replaying the entries. Replicas are checked against it at every apply and snapshot install.
 */
import { GENESIS_HASH, type EncodedEntry } from '../../../src/log/index.js';
import type { SnapshotRecord } from '../../../src/store/index.js';
import { applyOp, type KeySpace } from './memory-store.js';

export class ReferenceChain {
  /** hashes[seq]; hashes[0] is the genesis hash. */
  private readonly hashes: Buffer[] = [GENESIS_HASH];
  private readonly entries: EncodedEntry[] = [];
  private cached: { seq: number; kv: KeySpace } = { seq: 0, kv: new Map() };

  get headSeq(): number {
    return this.entries.length;
  }

  record(encoded: EncodedEntry): void {
    if (encoded.entry.seq !== this.entries.length + 1) throw new Error(`root committed seq ${encoded.entry.seq} after ${this.entries.length}`);
    this.entries.push(encoded);
    this.hashes.push(encoded.entry.hash);
  }

  entryAt(seq: number): EncodedEntry {
    const encoded = this.entries[seq - 1];
    if (encoded === undefined) throw new Error(`the root never committed seq ${seq}`);
    return encoded;
  }

  hashAt(seq: number): Buffer | undefined {
    return this.hashes[seq];
  }

  /** The key space after applying entries 1..seq. */
  kvAt(seq: number): KeySpace {
    if (seq < this.cached.seq) this.cached = { seq: 0, kv: new Map() };
    const kv = new Map(this.cached.kv);
    for (let s = this.cached.seq + 1; s <= seq; s++) for (const op of this.entries[s - 1]!.entry.ops) applyOp(kv, s, op);
    this.cached = { seq, kv };
    return new Map(kv);
  }
}

/** Describes the first difference between two key spaces, or undefined if they are equal. */
export function diffKeySpaces(actual: ReadonlyMap<string, SnapshotRecord>, expected: KeySpace): string | undefined {
  if (actual.size !== expected.size) return `${actual.size} keys, expected ${expected.size}`;
  for (const [id, want] of expected) {
    const got = actual.get(id);
    const key = want.key.toString('hex');
    if (got === undefined) return `key ${key} missing`;
    if (!got.value.equals(want.value)) return `key ${key} has another value`;
    if (got.createSeq !== want.createSeq || got.modSeq !== want.modSeq || got.version !== want.version)
      return `key ${key} has createSeq/modSeq/version ${got.createSeq}/${got.modSeq}/${got.version}, expected ${want.createSeq}/${want.modSeq}/${want.version}`;
  }
  return undefined;
}

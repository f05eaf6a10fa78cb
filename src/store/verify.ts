/**
 * Offline check of a data directory (`mercury verify`): the log's hash chain from the first retained entry to the
 * head, every key record's checksum, and the key space against the log where the log covers it (a key whose modSeq is
 * retained must hold exactly what the last put of that key in that entry wrote). Reads only; needs no lock.
 */
import { isDataCorrupted } from '../errors/index.js';
import type { Entry } from '../log/index.js';
import type { Store } from './store.js';

/** Entries read per log step; small enough that progress moves, large enough to be cheap. */
const VERIFY_LOG_BATCH_ENTRIES = 1_000;
/** Decoded entries kept for the key-space check (keys with the same modSeq come in bursts). */
const VERIFY_ENTRY_CACHE_MAX = 1_024;
/** Problems listed in the report; later ones are only counted. */
const VERIFY_PROBLEMS_MAX = 100;

export interface VerifyProgress {
  readonly done: number;
  readonly total: number;
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly head: { readonly seq: number; readonly hash: string };
  readonly log: { readonly firstSeq: number; readonly lastSeq: number; readonly verified: number };
  readonly keys: { readonly checked: number; readonly damaged: number; readonly checkedAgainstLog: number };
  readonly problemCount: number;
  readonly problems: readonly string[];
}

function keyText(key: Buffer): string {
  return JSON.stringify(key.toString('utf8').slice(0, 200));
}

/** The value the last put of `key` in `entry` wrote, null if the entry deletes it last, undefined if it does not touch it. */
function lastWrite(entry: Entry, key: Buffer): Buffer | null | undefined {
  let result: Buffer | null | undefined;
  for (const op of entry.ops) {
    if (op.type === 'put' && op.key.equals(key)) result = op.value;
    else if (op.type === 'delete' && op.key.equals(key)) result = null;
    else if (op.type === 'deleteRange' && Buffer.compare(key, op.start) >= 0 && (op.end.length === 0 || Buffer.compare(key, op.end) < 0)) result = null;
  }
  return result;
}

export function verifyStore(store: Store, onProgress: (progress: VerifyProgress) => void = () => {}): VerifyReport {
  const problems: string[] = [];
  let problemCount = 0;
  const problem = (text: string): void => {
    problemCount++;
    if (problems.length < VERIFY_PROBLEMS_MAX) problems.push(text);
  };
  const head = store.head();
  const bounds = store.logBounds();
  const keyTotal = store.sizes().keys;
  const logTotal = Math.max(0, bounds.lastSeq - bounds.firstSeq + 1);
  const total = logTotal + keyTotal;
  let done = 0;

  // 1. The chain, from the first retained entry (checked against the stored log base) to the head.
  let verified = 0;
  let lastHash: Buffer | undefined;
  for (let seq = bounds.firstSeq; seq <= bounds.lastSeq; ) {
    let batch;
    try {
      batch = store.readLog(seq, VERIFY_LOG_BATCH_ENTRIES);
    } catch (error) {
      if (!isDataCorrupted(error)) throw error;
      problem(`log: ${error.message}; entries after it were not checked`);
      break;
    }
    if (batch.length === 0) {
      problem(`log: entry ${seq} is missing (the log should hold ${bounds.firstSeq}..${bounds.lastSeq})`);
      break;
    }
    verified += batch.length;
    lastHash = batch[batch.length - 1]!.entry.hash;
    seq += batch.length;
    done += batch.length;
    onProgress({ done, total });
  }
  if (verified === logTotal && logTotal > 0 && !lastHash!.equals(head.hash)) problem(`log: the head hash does not match entry ${head.seq}'s hash`);

  // 2. Every key record's checksum, and 3. the key space against the log where the log covers it.
  const entries = new Map<number, Entry | null>();
  const entryAt = (seq: number): Entry | null => {
    let entry = entries.get(seq);
    if (entry === undefined) {
      try {
        entry = store.readLog(seq, 1)[0]?.entry ?? null;
      } catch (error) {
        if (!isDataCorrupted(error)) throw error;
        entry = null; // reported by the chain check
      }
      if (entries.size >= VERIFY_ENTRY_CACHE_MAX) entries.delete(entries.keys().next().value!);
      entries.set(seq, entry);
    }
    return entry;
  };
  let checked = 0;
  let damaged = 0;
  let checkedAgainstLog = 0;
  for (const { key, record, damage } of store.scanKeyRecords()) {
    checked++;
    done++;
    if (checked % VERIFY_LOG_BATCH_ENTRIES === 0) onProgress({ done, total });
    if (record === undefined) {
      damaged++;
      problem(`key ${keyText(key)}: ${damage}`);
      continue;
    }
    if (record.createSeq > record.modSeq || record.modSeq > head.seq || record.version < 1)
      problem(`key ${keyText(key)}: createSeq ${record.createSeq}, modSeq ${record.modSeq}, version ${record.version} are impossible at head ${head.seq}`);
    if (record.modSeq < bounds.firstSeq || record.modSeq > bounds.lastSeq) continue;
    const entry = entryAt(record.modSeq);
    if (entry === null) continue;
    checkedAgainstLog++;
    const written = lastWrite(entry, key);
    if (written === undefined || written === null) problem(`key ${keyText(key)}: modSeq ${record.modSeq}, but entry ${record.modSeq} does not put it`);
    else if (!written.equals(record.value)) problem(`key ${keyText(key)}: its value differs from what entry ${record.modSeq} put`);
  }
  onProgress({ done: total, total });
  return {
    ok: problemCount === 0,
    head: { seq: head.seq, hash: head.hash.toString('hex') },
    log: { firstSeq: bounds.firstSeq, lastSeq: bounds.lastSeq, verified },
    keys: { checked, damaged, checkedAgainstLog },
    problemCount,
    problems,
  };
}

/**
 * Which changes of an entry a watch selects, and their JSON events, without any I/O.
 *
 * A `Selection` is a canonical set of prefixes plus filters. Subscriptions with equal selections (whatever the order
 * or overlap of the prefixes they asked for) share one group in the hub, so an entry's events are matched and encoded
 * once per selection, not once per watcher. Within one entry, the JSON of a put or delete is also encoded only once
 * (`EventCache`), however many selections include it: base64 and JSON escaping of a value are the costly part.
 *
 * `SelectionIndex` finds the selections a key belongs to in one pass over the key's bytes (up to the longest
 * registered prefix) plus one map lookup per distinct prefix length, not per selection: see `match`.
 */
import { randomInt } from 'node:crypto';
import { encodeJsonBytes, isReservedKey, withoutReserved, type WatchFilters } from '../api/index.js';
import { opAuthors, type Entry, type Op } from '../log/index.js';
import type { KeyRange, SnapshotRecord } from '../store/index.js';
import { prefixEnd } from '../store/index.js';

export interface Selection {
  /** Sorted, and none is a prefix of another (so they are disjoint ranges in key order). */
  readonly prefixes: readonly Buffer[];
  readonly filters: WatchFilters;
  /** Whether its messages carry entry hashes (not for a token that may not see the chain: ClientMessage `hashes`). */
  readonly hashes: boolean;
  /** Equal for equal selections: the map key of the hub's groups. */
  readonly key: string;
}

/** Sorts the prefixes and drops those covered by a shorter one (and duplicates). */
export function canonicalSelection(prefixes: readonly Buffer[], filters: WatchFilters, hashes = true): Selection {
  const sorted = [...prefixes].sort((a, b) => Buffer.compare(a, b));
  const kept: Buffer[] = [];
  for (const prefix of sorted) {
    // In sorted order, a prefix that covers this one is the last one kept, if any.
    const last = kept[kept.length - 1];
    if (last !== undefined && prefix.length >= last.length && prefix.subarray(0, last.length).equals(last)) continue;
    kept.push(prefix);
  }
  const flags = `${filters.puts ? 'p' : ''}${filters.deletes ? 'd' : ''}${filters.keysOnly ? 'k' : ''}${filters.authors ? 'a' : ''}${hashes ? 'h' : ''}`;
  return { prefixes: kept, filters, hashes, key: `${flags}:${kept.map((prefix) => prefix.toString('hex')).join(',')}` };
}

/** The bytes of a selection's prefixes: what a subscription holds of a connection's budget (`prefixBytesPerConnectionMax`). */
export function prefixBytes(selection: Selection): number {
  return selection.prefixes.reduce((sum, prefix) => sum + prefix.length, 0);
}

/**
 * The key ranges of a selection's prefixes, in key order (for a snapshot of just those keys), without the reserved
 * key space (src/api/keys.ts): no watch ever sees token records, whatever its prefix.
 */
export function selectionRanges(selection: Selection): KeyRange[] {
  return selection.prefixes.flatMap((prefix) => withoutReserved(prefix, prefixEnd(prefix)));
}

/** A key or value as a JSON field and its encoding, by the one bytes rule of the wire contract (src/api/bytes.ts). */
function bytesField(name: string, bytes: Buffer): string {
  const json = encodeJsonBytes(bytes);
  return json.encoding === 'utf8' ? `"${name}":${JSON.stringify(json.text)},"${name}Encoding":"utf8"` : `"${name}":"${json.text}","${name}Encoding":"base64"`;
}

/** One snapshot item as JSON. */
export function snapshotItemJson(record: SnapshotRecord, keysOnly: boolean): string {
  const value = keysOnly ? '' : `,${bytesField('value', record.value)}`;
  return `{${bytesField('key', record.key)}${value},"createSeq":${record.createSeq},"modSeq":${record.modSeq},"version":${record.version}}`;
}

/**
 * The JSON of an entry's put and delete events, each built at most once per form (with and without the value, with
 * and without the author).
 */
export class EventCache {
  /** Indexed by form: 1 = keys only, 2 = with author. */
  private readonly forms: (string | undefined)[][] = [[], [], [], []];
  private authors: (string | undefined)[] | undefined;

  constructor(private readonly entry: Entry) {}

  /** `,"author":...` for op `index`: the audit field of the `authors` filter. */
  authorField(index: number): string {
    this.authors ??= opAuthors(this.entry);
    const author = this.authors[index];
    return `,"author":${author === undefined ? 'null' : JSON.stringify(author)}`;
  }

  event(index: number, keysOnly: boolean, withAuthor = false): string {
    const cache = this.forms[(keysOnly ? 1 : 0) + (withAuthor ? 2 : 0)]!;
    let text = cache[index];
    if (text === undefined) {
      const op = this.entry.ops[index]!;
      const author = withAuthor ? this.authorField(index) : '';
      if (op.type === 'put')
        text = `{"type":"put",${bytesField('key', op.key)}${keysOnly ? '' : `,${bytesField('value', op.value)}`}${author},"modSeq":${this.entry.seq}}`;
      else if (op.type === 'delete') text = `{"type":"delete",${bytesField('key', op.key)}${author},"modSeq":${this.entry.seq}}`;
      else throw new Error('range deletes are clipped per prefix, not cached');
      cache[index] = text;
    }
    return text;
  }
}

function maxBytes(a: Buffer, b: Buffer): Buffer {
  return Buffer.compare(a, b) >= 0 ? a : b;
}

/** The smaller of two range ends, where an empty end means unbounded. */
function minEnd(a: Buffer, b: Buffer): Buffer {
  if (a.length === 0) return b;
  if (b.length === 0) return a;
  return Buffer.compare(a, b) <= 0 ? a : b;
}

/** The deleteRange event of `op` clipped to `prefix`, or undefined where the two do not overlap. */
export function rangeEvent(op: Op & { type: 'deleteRange' }, prefix: Buffer, seq: number, author: string): string | undefined {
  const start = maxBytes(op.start, prefix);
  const end = minEnd(op.end, prefixEnd(prefix));
  if (end.length > 0 && Buffer.compare(start, end) >= 0) return undefined;
  const endFields = end.length === 0 ? '"end":null,"endEncoding":null' : bytesField('end', end);
  return `{"type":"deleteRange",${bytesField('start', start)},${endFields}${author},"modSeq":${seq}}`;
}

/** Anything registered in the index: the hub's groups. */
export interface Selected {
  readonly selection: Selection;
}

/**
 * A prime below 2^26: a fingerprint step (h * base + byte) stays below 2^53, exact in a double. The base is drawn at
 * random per index, so a client that chooses keys and prefixes cannot aim at a collision: two different strings of n
 * bytes collide for at most n of the prime's bases (a polynomial of degree n has at most n roots), a chance below
 * 2^-16 for the longest key. A collision costs one comparison of bytes, never a wrong match.
 */
const FINGERPRINT_PRIME = 67_108_859;

/** Whether `key` starts with `prefix` (no longer than it): short prefixes in a loop, cheaper than a native call. */
function startsWith(key: Buffer, prefix: Buffer): boolean {
  if (prefix.length > 32) return prefix.compare(key, 0, prefix.length) === 0;
  for (let i = 0; i < prefix.length; i++) if (key[i] !== prefix[i]) return false;
  return true;
}

/**
 * The registered prefixes in key order, as latin1 text (one char per byte, so JavaScript's string order is byte order),
 * for the prefixes a range delete covers. Additions wait unsorted and removals are only marked until they number more
 * than PENDING_MIN plus the square root of the sorted list; the first `between` after that merges them in. A sorted
 * insert per prefix moved the whole list (0.6 ms for a million prefixes, a subscribe's 16 prefixes 10 ms); this way
 * a prefix added or removed costs about the square root of the list, and a lookup skips at most as many marks.
 */
class SortedPrefixes {
  private sorted: string[] = [];
  private pending: string[] = [];
  private pendingSorted = true;
  private readonly removed = new Set<string>();

  add(text: string): void {
    if (this.removed.delete(text)) return; // still listed: it was removed since the last merge
    this.pending.push(text);
    this.pendingSorted = false;
  }

  remove(text: string): void {
    this.removed.add(text);
  }

  /** Calls `visit` for each prefix t with `start` < t < `end` (`end` undefined: no upper bound), in ascending order. */
  between(start: string, end: string | undefined, visit: (text: string) => void): void {
    this.settle();
    const { sorted, pending, removed } = this;
    let i = firstAbove(sorted, start);
    let j = firstAbove(pending, start);
    for (;;) {
      const fromSorted = i < sorted.length && (j >= pending.length || sorted[i]! < pending[j]!);
      const text = fromSorted ? sorted[i++] : pending[j++];
      if (text === undefined || (end !== undefined && text >= end)) return;
      if (!removed.has(text)) visit(text);
    }
  }

  private settle(): void {
    if (this.pending.length + this.removed.size > PENDING_MIN + Math.sqrt(this.sorted.length)) {
      const kept = (text: string): boolean => !this.removed.has(text);
      this.sorted = mergeSorted(this.sorted.filter(kept), this.pending.filter(kept).sort());
      this.pending = [];
      this.pendingSorted = true;
      this.removed.clear();
    } else if (!this.pendingSorted) {
      this.pending.sort();
      this.pendingSorted = true;
    }
  }
}

/** Additions and removals SortedPrefixes holds apart from its sorted list even when it is small. */
const PENDING_MIN = 64;

/** The index of the first element of sorted `list` above `text`. */
function firstAbove(list: readonly string[], text: string): number {
  let low = 0;
  let high = list.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (list[middle]! <= text) low = middle + 1;
    else high = middle;
  }
  return low;
}

function mergeSorted(a: readonly string[], b: readonly string[]): string[] {
  const merged: string[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) merged.push(a[i]! < b[j]! ? a[i++]! : b[j++]!);
  while (i < a.length) merged.push(a[i++]!);
  while (j < b.length) merged.push(b[j++]!);
  return merged;
}

/**
 * Finds, for an entry, every registered selection with at least one event, and those events (live path; the catch-up
 * path too, with an index of the selections it serves). Its work is the entry's bytes plus the events it finds: a
 * range delete looks up the prefixes it covers (those of its start, then those inside it, in key order) instead of
 * clipping itself to every prefix of every selection, which made a transaction of 10,000 range deletes that covered
 * nothing cost 17 s of the node's loop against 4 connections' 4,096 prefixes (audit, 2026-12-07).
 */
export class SelectionIndex<G extends Selected> {
  /**
   * latin1 text of a prefix (one char per byte) → its bytes and the groups that hold it. A set, in the order the groups
   * came: an array's `splice` moved the rest of it at each removal, so that closing the connections of 100,000
   * subscriptions that share a prefix took 4.8 s of the node's loop, a time square in their number.
   */
  private readonly byPrefix = new Map<string, { readonly bytes: Buffer; readonly groups: Set<G> }>();
  /** Fingerprint of a prefix's bytes (`fingerprint`) → the registered prefixes that have it (almost always one). */
  private readonly byFingerprint = new Map<number, { readonly bytes: Buffer; readonly text: string }[]>();
  /** Prefix length in bytes → how many (prefix, group) pairs have it; `lengths` lists them in ascending order. */
  private readonly lengthCounts = new Map<number, number>();
  /** Sorted when first needed after a length came or went: sorting at each new length made adding n lengths n² log n. */
  private lengths: number[] | undefined = [];
  private readonly sortedPrefixes = new SortedPrefixes();
  private readonly groups = new Set<G>();
  private readonly base = randomInt(256, FINGERPRINT_PRIME);

  get size(): number {
    return this.groups.size;
  }

  add(group: G): void {
    if (this.groups.has(group)) return;
    this.groups.add(group);
    for (const prefix of group.selection.prefixes) {
      const text = prefix.toString('latin1');
      const registered = this.byPrefix.get(text);
      if (registered === undefined) {
        this.byPrefix.set(text, { bytes: prefix, groups: new Set([group]) });
        this.sortedPrefixes.add(text);
        const fingerprint = this.fingerprint(prefix);
        const same = this.byFingerprint.get(fingerprint);
        if (same === undefined) this.byFingerprint.set(fingerprint, [{ bytes: prefix, text }]);
        else same.push({ bytes: prefix, text });
      } else registered.groups.add(group);
      const count = this.lengthCounts.get(prefix.length) ?? 0;
      this.lengthCounts.set(prefix.length, count + 1);
      if (count === 0) this.lengths = undefined;
    }
  }

  remove(group: G): void {
    if (!this.groups.delete(group)) return;
    for (const prefix of group.selection.prefixes) {
      const text = prefix.toString('latin1');
      const groups = this.byPrefix.get(text)!.groups;
      groups.delete(group);
      if (groups.size === 0) {
        this.byPrefix.delete(text);
        this.sortedPrefixes.remove(text);
        const fingerprint = this.fingerprint(prefix);
        const same = this.byFingerprint.get(fingerprint)!;
        same.splice(
          same.findIndex((candidate) => candidate.text === text),
          1,
        );
        if (same.length === 0) this.byFingerprint.delete(fingerprint);
      }
      const count = this.lengthCounts.get(prefix.length)! - 1;
      if (count === 0) {
        this.lengthCounts.delete(prefix.length);
        this.lengths = undefined;
      } else this.lengthCounts.set(prefix.length, count);
    }
  }

  /** A polynomial hash of `bytes` modulo FINGERPRINT_PRIME (what `prefixesOf` computes a byte at a time). */
  private fingerprint(bytes: Buffer): number {
    let hash = 0;
    for (let i = 0; i < bytes.length; i++) hash = (hash * this.base + bytes[i]! + 1) % FINGERPRINT_PRIME;
    return hash;
  }

  /** Events per group, for the groups `wanted` accepts and that select anything in `entry`. */
  match(entry: Entry, wanted: (group: G) => boolean): Map<G, string[]> {
    const result = new Map<G, string[]>();
    const cache = new EventCache(entry);
    const push = (group: G, event: string): void => {
      const events = result.get(group);
      if (events === undefined) result.set(group, [event]);
      else events.push(event);
    };
    entry.ops.forEach((op, index) => {
      if (op.type === 'deleteRange') {
        // Clipped once per prefix it covers, shared by the groups that hold the prefix (with or without the author).
        const visit = (text: string): void => {
          const { bytes, groups } = this.byPrefix.get(text)!;
          let plain: string | undefined;
          let withAuthor: string | undefined;
          for (const group of groups) {
            if (!group.selection.filters.deletes || !wanted(group)) continue;
            const event = group.selection.filters.authors
              ? (withAuthor ??= rangeEvent(op, bytes, entry.seq, cache.authorField(index)))
              : (plain ??= rangeEvent(op, bytes, entry.seq, ''));
            if (event !== undefined) push(group, event);
          }
        };
        // A prefix covers the start, or starts inside the range: the two sets are apart, and each in key order. A
        // canonical selection has no nested prefixes, so its events come in key order (as the tests' one-selection-at-a-time
        // reference, test/support/select-events.ts, gives them).
        this.prefixesOf(op.start, visit);
        this.sortedPrefixes.between(op.start.toString('latin1'), op.end.length === 0 ? undefined : op.end.toString('latin1'), visit);
        return;
      }
      if (isReservedKey(op.key)) return; // token records: never sent to a watcher
      this.prefixesOf(op.key, (text) => {
        for (const group of this.byPrefix.get(text)!.groups) {
          const { puts, deletes, keysOnly, authors } = group.selection.filters;
          if ((op.type === 'put' ? !puts : !deletes) || !wanted(group)) continue;
          // A canonical selection has no nested prefixes, so a key matches at most one prefix of a group.
          push(group, cache.event(index, keysOnly, authors));
        }
      });
    });
    return result;
  }

  /**
   * Calls `visit` with each registered prefix `key` starts with, shortest first. The key's fingerprint is extended a
   * byte at a time and looked up at each registered length, one pass over its bytes up to the longest prefix. Looking
   * up each length's slice of the key as text instead hashed the slice each time, lengths x key bytes per key: a client
   * that registered prefixes of 1,022 lengths made a transaction of 2,000 1 KiB keys cost 3.4 s of the node's loop.
   */
  private prefixesOf(key: Buffer, visit: (text: string) => void): void {
    const lengths = (this.lengths ??= Array.from(this.lengthCounts.keys()).sort((a, b) => a - b));
    let next = 0;
    let hash = 0;
    // `length` bytes of the key are in `hash`; the empty prefix (every key) is length 0.
    for (let length = 0; next < lengths.length; length++) {
      if (lengths[next] === length) {
        next++;
        const candidates = this.byFingerprint.get(hash);
        if (candidates !== undefined)
          for (const { bytes, text } of candidates) {
            // A fingerprint may collide (by chance only): the bytes decide.
            if (bytes.length === length && startsWith(key, bytes)) visit(text);
          }
      }
      if (length === key.length) break;
      hash = (hash * this.base + key[length]! + 1) % FINGERPRINT_PRIME;
    }
  }
}

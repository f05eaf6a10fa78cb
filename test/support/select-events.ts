/**
 * The events of an entry that one selection selects, found the plain way: every op against every prefix of the
 * selection. The node matches all selections at once through its index (SelectionIndex in src/watch/selection.ts;
 * catch-up did this until the CPU audit of 2026-12-07); the tests hold the index to this reference.
 */
import { isReservedKey } from '../../src/api/index.js';
import type { Entry } from '../../src/log/index.js';
import { rangeEvent, type EventCache, type Selection } from '../../src/watch/selection.js';

function hasPrefix(key: Buffer, prefix: Buffer): boolean {
  return key.length >= prefix.length && key.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}

/** The events of `entry` that `selection` selects, in log order; range deletes clipped to each prefix, in key order. */
export function selectEvents(entry: Entry, selection: Selection, cache: EventCache): string[] {
  const events: string[] = [];
  const { puts, deletes, keysOnly, authors } = selection.filters;
  entry.ops.forEach((op, index) => {
    if (op.type === 'deleteRange') {
      if (!deletes) return;
      const author = authors ? cache.authorField(index) : '';
      for (const prefix of selection.prefixes) {
        const event = rangeEvent(op, prefix, entry.seq, author);
        if (event !== undefined) events.push(event);
      }
      return;
    }
    if (op.type === 'put' ? !puts : !deletes) return;
    if (isReservedKey(op.key)) return;
    if (selection.prefixes.some((prefix) => hasPrefix(op.key, prefix))) events.push(cache.event(index, keysOnly, authors));
  });
  return events;
}

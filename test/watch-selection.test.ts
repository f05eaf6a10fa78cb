/**
 * The I/O-free parts of watches: which events an entry yields for a selection (the live index and the catch-up path
 * must agree with each other and with the test oracle, for random entries and selections), canonical selections,
 * the client message parser under random input, and the store's ranged snapshot that resuming watches read.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { assertProperty } from './support/seed.js';
import type { Entry, Op } from '../src/log/index.js';
import { GENESIS_HASH } from '../src/log/index.js';
import { Store } from '../src/store/index.js';
import { canonicalSelection, EventCache, SelectionIndex, WATCH_LIMITS, type Selection } from '../src/watch/index.js';
import { selectEvents } from './support/select-events.js';
import { DEFAULT_FILTERS, parseClientMessage, WatchProtocolError, type WatchFilters } from '../src/api/index.js';
import type { LogEntryJson } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';
import { expectedEvents } from './support/watch.js';

// Keys over a tiny alphabet (0xff, a byte that is not UTF-8 on its own, control characters) so that prefixes, ranges and
// prefix ends collide often.
const ALPHABET = [0x61, 0x62, 0x2f, 0xff, 0x80, 0x01, 0x0a];
const bytes = (minLength: number, maxLength: number): fc.Arbitrary<Buffer> =>
  fc.array(fc.constantFrom(...ALPHABET), { minLength, maxLength }).map((array) => Buffer.from(array));
const opArbitrary: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ type: fc.constant('put' as const), key: bytes(1, 4), value: bytes(0, 3) }),
  fc.record({ type: fc.constant('delete' as const), key: bytes(1, 4) }),
  fc.record({ type: fc.constant('deleteRange' as const), start: bytes(1, 3), end: bytes(0, 3) }),
);
const filtersArbitrary: fc.Arbitrary<WatchFilters> = fc
  .record({ puts: fc.boolean(), deletes: fc.boolean(), keysOnly: fc.boolean(), authors: fc.boolean() })
  .filter((filters) => filters.puts || filters.deletes);
const selectionInput = fc.record({ prefixes: fc.array(bytes(0, 3), { minLength: 1, maxLength: 4 }), filters: filtersArbitrary });

function entryOf(seq: number, ops: Op[]): Entry {
  return { seq, timeMs: 1_000 + seq, ops, prevHash: GENESIS_HASH, hash: GENESIS_HASH };
}

function jsonBytes(name: string, value: Buffer): Record<string, string> {
  const text = value.toString('utf8');
  return Buffer.from(text, 'utf8').equals(value) ? { [name]: text, [`${name}Encoding`]: 'utf8' } : { [name]: value.toString('base64'), [`${name}Encoding`]: 'base64' };
}

/** The entry as GET /v1/log shows it, for the oracle. */
function logJson(entry: Entry): LogEntryJson {
  return {
    seq: entry.seq,
    timeMs: entry.timeMs,
    prevHash: '',
    hash: '',
    ops: entry.ops.map((op) =>
      op.type === 'put'
        ? { op: 'put', ...jsonBytes('key', op.key), ...jsonBytes('value', op.value) }
        : op.type === 'delete'
          ? { op: 'delete', ...jsonBytes('key', op.key) }
          : { op: 'deleteRange', ...jsonBytes('start', op.start), ...jsonBytes('end', op.end) },
    ),
  };
}

test('watch: the live index, the catch-up path and the oracle select the same events for random entries', () => {
  assertProperty(
    fc.property(fc.array(selectionInput, { minLength: 1, maxLength: 6 }), fc.array(opArbitrary, { minLength: 1, maxLength: 8 }), (inputs, ops) => {
      const entry = entryOf(7, ops);
      const groups = inputs.map((input) => ({ selection: canonicalSelection(input.prefixes, input.filters) }));
      const index = new SelectionIndex<{ selection: Selection }>();
      for (const group of groups) index.add(group);
      const live = index.match(entry, () => true);
      const cache = new EventCache(entry);
      groups.forEach((group, i) => {
        const parse = (events: readonly string[]): unknown[] => events.map((event) => JSON.parse(event) as unknown);
        const catchup = parse(selectEvents(entry, group.selection, cache));
        assert.deepEqual(parse(live.get(group) ?? []), catchup, 'live index and catch-up path agree');
        const oracle = expectedEvents([logJson(entry)], { prefixes: inputs[i]!.prefixes, filters: inputs[i]!.filters });
        assert.deepEqual(catchup, oracle[0]?.events ?? []);
      });
      // Removing every group leaves an index that selects nothing.
      for (const group of groups) index.remove(group);
      assert.equal(index.match(entry, () => true).size, 0);
    }),
    { numRuns: 500 },
  );
});

test('watch: the live index finds a key\'s selections in one pass, however many prefix lengths are registered', () => {
  // The attack of review D (2026-12-05): a client registers a prefix of every length from 3 to 1,024 bytes, and long
  // keys are written. Looking up each length's slice of a key hashed that slice again: 2,000 keys of 1 KiB cost the
  // node's loop 3.4 s. Now the key's bytes are read once.
  const index = new SelectionIndex<{ selection: Selection }>();
  const attackers = [];
  for (let length = 3; length <= 1024; length++) {
    const group = { selection: canonicalSelection([Buffer.alloc(length, 'a')], DEFAULT_FILTERS) };
    attackers.push(group);
    index.add(group);
  }
  const honest = { selection: canonicalSelection([Buffer.from('cfg/')], DEFAULT_FILTERS) };
  index.add(honest);
  const keys = Array.from({ length: 2_000 }, (_, i) => Buffer.concat([Buffer.from(`cfg/${i}/`), Buffer.alloc(1_000, 'a')]));
  const entry = entryOf(
    9,
    keys.map((key) => ({ type: 'put', key, value: Buffer.from('v') })),
  );
  const started = performance.now();
  const matched = index.match(entry, () => true);
  const elapsedMs = performance.now() - started;
  assert.deepEqual([...matched.keys()], [honest]);
  assert.equal(matched.get(honest)!.length, keys.length);
  assert.ok(elapsedMs < 1_000, `matching took ${elapsedMs.toFixed(0)} ms (3.4 s before the change, tens of ms after)`);

  // A key under the attackers' prefixes reaches each of them; removing some leaves exactly the others.
  const long = entryOf(10, [{ type: 'put', key: Buffer.alloc(1_500, 'a'), value: Buffer.from('v') }]);
  assert.equal(index.match(long, () => true).size, attackers.length);
  for (const group of attackers.filter((_, i) => i % 2 === 0)) index.remove(group);
  assert.deepEqual(
    new Set(index.match(long, () => true).keys()),
    new Set(attackers.filter((_, i) => i % 2 === 1)),
  );
});

test('watch: equal selections share one key whatever the order, duplicates or nesting of their prefixes', () => {
  const key = (prefixes: string[], filters: WatchFilters = DEFAULT_FILTERS): string => canonicalSelection(prefixes.map((prefix) => Buffer.from(prefix)), filters).key;
  assert.equal(key(['b/', 'a/']), key(['a/', 'b/', 'a/']));
  assert.equal(key(['a/', 'a/x/', 'a/y']), key(['a/']));
  assert.equal(key(['', 'a/', 'zz']), key(['']));
  assert.notEqual(key(['a']), key(['a/']));
  assert.notEqual(key(['a/'], { puts: true, deletes: false, keysOnly: false, authors: false }), key(['a/']));
  assert.notEqual(key(['a/'], { ...DEFAULT_FILTERS, authors: true }), key(['a/']));
  assert.deepEqual(
    canonicalSelection(['a0', 'a/', 'a/b', 'a'].map((prefix) => Buffer.from(prefix)), DEFAULT_FILTERS).prefixes.map(String),
    ['a'],
  );
  assert.deepEqual(canonicalSelection(['b', 'a/', 'a/b', 'a0'].map((prefix) => Buffer.from(prefix)), DEFAULT_FILTERS).prefixes.map(String), ['a/', 'a0', 'b']);
});

test('watch: the client message parser accepts or refuses any input with a WatchProtocolError, never anything else', () => {
  const text = fc.oneof(
    fc.string({ maxLength: 60 }),
    fc.jsonValue({ maxDepth: 4 }).map((value) => JSON.stringify(value)),
    fc
      .record(
        {
          type: fc.constantFrom('subscribe', 'unsubscribe'),
          id: fc.oneof(fc.string({ maxLength: 300 }), fc.integer(), fc.double(), fc.jsonValue({ maxDepth: 1 })),
          prefixes: fc.oneof(fc.array(fc.string({ maxLength: 4 }), { maxLength: 20 }), fc.jsonValue({ maxDepth: 2 })),
          prefixesBase64: fc.oneof(fc.array(fc.base64String({ maxLength: 8 }), { maxLength: 3 }), fc.jsonValue({ maxDepth: 1 })),
          fromSeq: fc.oneof(fc.integer(), fc.double(), fc.jsonValue({ maxDepth: 1 })),
          afterHash: fc.oneof(fc.stringMatching(/^[0-9a-fA-F]{63,65}$/), fc.jsonValue({ maxDepth: 1 })),
          filters: fc.oneof(fc.record({ puts: fc.boolean(), deletes: fc.boolean(), keysOnly: fc.boolean(), authors: fc.boolean() }, { requiredKeys: [] }), fc.jsonValue({ maxDepth: 2 })),
        },
        { requiredKeys: ['type'] },
      )
      .map((value) => JSON.stringify(value)),
  );
  assertProperty(
    fc.property(text, (input) => {
      try {
        const message = parseClientMessage(input, WATCH_LIMITS);
        // Whatever is accepted is well-formed.
        assert.ok(message.type === 'subscribe' || message.type === 'unsubscribe');
        assert.equal(message.idJson, JSON.stringify(message.id));
        if (message.type === 'subscribe') {
          assert.ok(message.prefixes.length >= 1 && message.prefixes.length <= WATCH_LIMITS.prefixesPerSubscriptionMax);
          assert.ok(message.fromSeq === undefined || (Number.isSafeInteger(message.fromSeq) && message.fromSeq >= 1));
          assert.ok(message.afterHash === undefined || (message.afterHash.length === 32 && message.fromSeq !== undefined && message.fromSeq >= 2));
          assert.ok(message.filters.puts || message.filters.deletes);
        }
      } catch (error) {
        if (!(error instanceof WatchProtocolError)) throw error;
        assert.ok(error.message.length > 0);
      }
    }),
    { numRuns: 2_000 },
  );
  // A valid subscribe, spelled out.
  const afterHash = '0f'.repeat(32);
  const subscribe = `{"type":"subscribe","id":"w","prefixes":["a/"],"prefixesBase64":["/w=="],"fromSeq":5,"afterHash":"${afterHash}","filters":{"keysOnly":true}}`;
  assert.deepEqual(parseClientMessage(subscribe, WATCH_LIMITS), {
    type: 'subscribe',
    id: 'w',
    idJson: '"w"',
    prefixes: [Buffer.from('a/'), Buffer.from([0xff])],
    fromSeq: 5,
    afterHash: Buffer.from(afterHash, 'hex'),
    filters: { puts: true, deletes: true, keysOnly: true, authors: false },
  });
});

test('store: a snapshot limited to key ranges returns exactly their keys, in order, at one seq, across pages', async () => {
  const dir = makeTempDir('watch-ranged-snapshot');
  const store = Store.open({ path: dir });
  try {
    const keys = ['a', 'a/1', 'a/2', 'a/3', 'a0', 'b/1', 'b/2', 'c', 'c/\xff', 'd/1'].map((key) => Buffer.from(key, 'latin1'));
    store.commit(1, (view) => {
      for (const key of keys) view.apply({ type: 'put', key, value: Buffer.from(`value of ${key.toString('latin1')}`) });
    });
    const ranges = [
      { start: Buffer.from('a/'), end: Buffer.from('a0') },
      { start: Buffer.from('b/'), end: Buffer.from('b0') },
      { start: Buffer.from('c/'), end: Buffer.alloc(0) },
    ];
    for (const pageBytes of [1, 20, 60, 1_000_000]) {
      const reader = store.openSnapshot(ranges);
      // A write after opening is not seen: the snapshot is one read transaction.
      store.commit(2, (view) => view.apply({ type: 'put', key: Buffer.from('a/15'), value: Buffer.from('later') }));
      const seen: string[] = [];
      let pages = 0;
      for (let page = reader.nextPage(pageBytes); page.length > 0; page = reader.nextPage(pageBytes)) {
        pages++;
        seen.push(...page.map((record) => record.key.toString('latin1')));
      }
      assert.deepEqual(reader.nextPage(pageBytes), [], 'stays done');
      reader.close();
      store.commit(3, (view) => view.apply({ type: 'delete', key: Buffer.from('a/15') }));
      assert.deepEqual(seen, ['a/1', 'a/2', 'a/3', 'b/1', 'b/2', 'c/\xff', 'd/1'], `page size ${pageBytes}`);
      if (pageBytes === 1) assert.equal(pages, 7);
    }
    // Without ranges: the whole key space, as before.
    const reader = store.openSnapshot();
    const all: Buffer[] = [];
    for (let page = reader.nextPage(25); page.length > 0; page = reader.nextPage(25)) all.push(...page.map((record) => record.key));
    reader.close();
    assert.deepEqual(all, [...keys].sort((a, b) => Buffer.compare(a, b)));
  } finally {
    await store.close();
    removeDir(dir);
  }
});

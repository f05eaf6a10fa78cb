/**
 * Subscriptions that share a prefix, coming and going (audit of CPU time, 2026-12-07). The selection index kept the
 * groups of each prefix in an array and removed one with `splice`, which moved the rest of the array: closing the
 * connections of 100,000 subscriptions that all watch "a/" (each with a prefix of its own beside it, so that they are
 * distinct selections) took 4.8 s of the node's loop, and 4 times as many, 16 times as long. One address may hold some
 * 256,000 such subscriptions within its prefix budget. Timed, with a bound far from both sides: 150,000 removals took
 * 19 s before and 0.7 s after on the 2-core machine of record.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_FILTERS } from '../src/api/index.js';
import { GENESIS_HASH, type Entry } from '../src/log/index.js';
import { canonicalSelection, SelectionIndex, type Selection } from '../src/watch/index.js';

const GROUPS = 150_000;
const REMOVE_ALL_MS_MAX = 5_000;

test('watch churn: removing many selections that share a prefix takes time linear in their number', () => {
  const index = new SelectionIndex<{ selection: Selection }>();
  const groups = Array.from({ length: GROUPS }, (_, i) => ({ selection: canonicalSelection([Buffer.from('a/'), Buffer.from(`own/${i}`)], DEFAULT_FILTERS) }));
  for (const group of groups) index.add(group);
  const entry: Entry = { seq: 1, timeMs: 1, ops: [{ type: 'put', key: Buffer.from('a/k'), value: Buffer.from('v') }], prevHash: GENESIS_HASH, hash: GENESIS_HASH };
  assert.equal(index.match(entry, () => true).size, GROUPS);

  const started = performance.now();
  // Every other one first, then the rest: the order connections close in is the clients'.
  for (let i = 0; i < GROUPS; i += 2) index.remove(groups[i]!);
  const left = index.match(entry, () => true);
  assert.equal(left.size, GROUPS / 2);
  assert.deepEqual(Array.from(left.keys()).slice(0, 3), [groups[1], groups[3], groups[5]], 'the groups left are matched in the order they came');
  for (let i = 1; i < GROUPS; i += 2) index.remove(groups[i]!);
  const elapsedMs = performance.now() - started;
  assert.equal(index.size, 0);
  assert.equal(index.match(entry, () => true).size, 0);
  assert.ok(elapsedMs < REMOVE_ALL_MS_MAX, `removing ${GROUPS} selections that share a prefix took ${elapsedMs.toFixed(0)} ms`);
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { treeParents } from '../bench/peers/workloads/propagation.js';
import { shortfalls } from '../bench/peers/workloads/read-under-writes.js';
import { numberedValue, valueNumber } from '../bench/peers/workloads/watch-fanout.js';

test('peers workloads: a replication tree of the given fan-out has each level spread evenly over the one above', () => {
  assert.deepEqual(treeParents([]), [-1]);
  assert.deepEqual(treeParents([2]), [-1, 0, 0]);
  const parents = treeParents([4, 16]);
  assert.equal(parents.length, 21);
  assert.deepEqual(parents.slice(0, 5), [-1, 0, 0, 0, 0]);
  const children = new Map<number, number>();
  for (const parent of parents.slice(5)) children.set(parent, (children.get(parent) ?? 0) + 1);
  assert.deepEqual([...children.entries()].sort(), [[1, 4], [2, 4], [3, 4], [4, 4]]);
});

test('peers workloads: watch values carry their write number and keep the value size', () => {
  const value = numberedValue(1234, 256, Buffer.alloc(256, 'x'));
  assert.equal(value.length, 256);
  assert.equal(valueNumber(value), 1234);
  assert.equal(numberedValue(7, 1, Buffer.alloc(0)).toString(), '7:');
});

test('peers workloads: a system that did not absorb the offered write rate is called out', () => {
  const results = [
    { id: 'mercury', title: 'Mercury', mercury: true, runs: [{ writesPerSecond: 9990 }, { writesPerSecond: 9980 }] },
    { id: 'etcd', title: 'etcd', mercury: false, runs: [{ writesPerSecond: 2600 }, { writesPerSecond: 2700 }] },
  ];
  assert.deepEqual(shortfalls(results, 10_000), [
    'etcd absorbed 2,650 writes/s of the 10,000 offered (median): its reads ran under that write load, not the full 10,000/s.',
  ]);
});

/**
 * The writer thread: the same group commit, with transactions run on a worker. What matters beyond the in-thread
 * tests: a write is visible to this thread's reads as soon as it is acknowledged, results and entries cross the
 * thread boundary intact, trimming goes through the same queue, and close leaves a store that reopens.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { systemClock } from '../src/clock/index.js';
import { GroupCommitter, WorkerWriter } from '../src/commit/index.js';
import { verifyNext, GENESIS_HEAD, type ChainHead } from '../src/log/index.js';
import { Registry } from '../src/metrics/index.js';
import { Store } from '../src/store/index.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mercury-writer-worker-test-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

function open(dir: string): { store: Store; committer: GroupCommitter } {
  const store = Store.open({ path: dir });
  const committer = new GroupCommitter({ store, writer: new WorkerWriter(store), clock: systemClock, metrics: new Registry(), valueBytesMax: 1024 });
  return { store, committer };
}

test('writer worker: acknowledged writes are readable on this thread at once, in one entry per batch', async () => {
  const dir = path.join(root, 'visible');
  const { store, committer } = open(dir);
  const seen: number[] = [];
  committer.onCommitted(({ entry }) => seen.push(entry.seq));
  const results = await Promise.all(
    Array.from({ length: 50 }, (_, i) => committer.submit({ compares: [], success: [{ type: 'put', key: Buffer.from(`k${i}`), value: Buffer.from(`v${i}`) }], failure: [] })),
  );
  for (const [i, result] of results.entries()) {
    assert.ok(result.succeeded);
    const { record, seq } = store.get(Buffer.from(`k${i}`));
    assert.equal(record?.value.toString(), `v${i}`);
    assert.ok(seq >= result.seq);
  }
  assert.ok(seen.length < 50, `50 concurrent writes should share entries, got ${seen.length} entries`);
  assert.equal(store.head().seq, seen[seen.length - 1]);
  // The log written by the worker verifies from genesis, and matches what listeners saw.
  let head: ChainHead = GENESIS_HEAD;
  for (const { record } of store.readLog(1, 100)) head = verifyNext(head, record);
  assert.ok(head.hash.equals(store.head().hash));
  await committer.close();
  await store.close();
});

test('writer worker: compares run on the worker against the state left by earlier requests', async () => {
  const { store, committer } = open(path.join(root, 'compares'));
  const createIfAbsent = (value: string) =>
    committer.submit({ compares: [{ key: Buffer.from('lock'), target: 'exists', exists: false }], success: [{ type: 'put', key: Buffer.from('lock'), value: Buffer.from(value) }], failure: [] });
  const [first, second] = await Promise.all([createIfAbsent('a'), createIfAbsent('b')]);
  assert.deepEqual([first.succeeded, second.succeeded], [true, false]);
  assert.equal(store.get(Buffer.from('lock')).record?.value.toString(), 'a');
  await committer.close();
  await store.close();
});

test('writer worker: trimming goes through the writer and the store reopens with everything', async () => {
  const dir = path.join(root, 'trim');
  const { store, committer } = open(dir);
  for (let i = 0; i < 20; i++) await committer.submit({ compares: [], success: [{ type: 'put', key: Buffer.from('k'), value: Buffer.from(String(i)) }], failure: [] });
  assert.equal(await committer.trimLog(5, Number.MAX_SAFE_INTEGER, 100), 15);
  assert.deepEqual(store.logBounds().firstSeq, 16);
  const headBefore = store.head();
  await committer.close();
  await store.close();
  const reopened = Store.open({ path: dir });
  assert.equal(reopened.head().seq, headBefore.seq);
  assert.ok(reopened.head().hash.equals(headBefore.hash));
  assert.equal(reopened.get(Buffer.from('k')).record?.value.toString(), '19');
  assert.equal(reopened.readLog(16, 100).length, 5);
  await reopened.close();
});

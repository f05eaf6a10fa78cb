/**
 * Transaction compares against keys that hold large values (audit of CPU time, 2026-12-07). Each compare read its
 * key's record whole (a copy, and a crc over it) inside the root's write transaction: 10,000 compares of one key
 * holding a 1 MiB value, a 340 KB request, blocked the node's loop 27 s. Now a key is read once per entry until an op
 * writes it, and the records compares read are bounded per entry (COMPARE_READ_BYTES_MAX): beyond it a request alone
 * is refused with 413 COMPARE_READ_TOO_LARGE, and one that would take an entry past it waits for the next. The reads
 * are counted here, not timed. Real LMDB in a temp dir; one check over real HTTP.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { systemClock } from '../src/clock/index.js';
import { COMMIT_LIMITS, GroupCommitter } from '../src/commit/index.js';
import { validateConfig } from '../src/config/index.js';
import { MercuryError } from '../src/errors/index.js';
import type { TxnCompare } from '../src/api/index.js';
import { Registry } from '../src/metrics/index.js';
import { MercuryNode, NODE_LIMITS_TEST, withLimits } from '../src/node/index.js';
import { Store } from '../src/store/index.js';
import { assertError, request } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';

const VALUE_BYTES = 64 * 1024;
/** Room for three of the values below (a record is the value and a 24-byte header). */
const READ_BYTES_MAX = 3 * VALUE_BYTES + 100;
const b = (text: string): Buffer => Buffer.from(text);
const newer = (key: string): TxnCompare => ({ key: b(key), target: 'modSeq', operator: '>', number: 0 });

describe('compare reads: group commit', () => {
  let dir: string;
  let store: Store;
  let committer: GroupCommitter;
  /** Reads of each key's record in LMDB's `kv` (point reads, copied or not). */
  const reads = new Map<string, number>();

  before(async () => {
    dir = makeTempDir('compare-reads');
    store = Store.open({ path: dir });
    committer = new GroupCommitter({ clock: systemClock, limits: { ...COMMIT_LIMITS, compareReadBytesMax: READ_BYTES_MAX }, store, metrics: new Registry() });
    const value = Buffer.alloc(VALUE_BYTES, 'x');
    await committer.submit({ compares: [], success: ['big0', 'big1', 'big2', 'big3', 'big4'].map((key) => ({ type: 'put', key: b(key), value })), failure: [] });
    const kv = (store as unknown as { kv: Record<'get' | 'getBinaryFast', (key: Buffer) => unknown> }).kv;
    for (const method of ['get', 'getBinaryFast'] as const) {
      const read = kv[method].bind(kv);
      kv[method] = (key: Buffer) => {
        const name = key.toString();
        reads.set(name, (reads.get(name) ?? 0) + 1);
        return read(key);
      };
    }
  });

  after(async () => {
    await committer.close();
    await store.close();
    removeDir(dir);
  });

  test('compare reads: 10,000 compares of one key read its record once', async () => {
    reads.clear();
    const result = await committer.submit({ compares: Array.from({ length: 10_000 }, () => newer('big0')), success: [{ type: 'put', key: b('flag'), value: b('1') }], failure: [] });
    assert.equal(result.succeeded, true);
    // Before: once per compare (10,000 copies and checksums of 64 KiB).
    assert.equal(reads.get('big0'), 1);
  });

  test('compare reads: a key written between compares is read again, and the compares see the new record', async () => {
    const first = await committer.submit({ compares: [newer('big0')], success: [{ type: 'put', key: b('big0'), value: b('small') }], failure: [] });
    const results = await Promise.all([
      committer.submit({ compares: [{ key: b('big0'), target: 'value', operator: '=', value: b('small') }], success: [{ type: 'delete', key: b('big0') }], failure: [] }),
      committer.submit({ compares: [{ key: b('big0'), target: 'exists', exists: false }, newer('big1')], success: [], failure: [] }),
      committer.submit({ compares: [{ key: b('big0'), target: 'version', operator: '=', number: 0 }], success: [], failure: [] }),
    ]);
    assert.equal(first.succeeded, true);
    assert.deepEqual(
      results.map((result) => result.succeeded),
      [true, true, true],
    );
  });

  test('compare reads: compares that would read more than the limit are refused with COMPARE_READ_TOO_LARGE, nothing applied', async () => {
    const seq = store.head().seq;
    await assert.rejects(
      committer.submit({ compares: ['big1', 'big2', 'big3', 'big1', 'big4', 'absent'].map(newer), success: [{ type: 'put', key: b('flag'), value: b('2') }], failure: [] }),
      (error: unknown) => error instanceof MercuryError && error.code === 'COMPARE_READ_TOO_LARGE' && error.details?.limit === READ_BYTES_MAX,
    );
    assert.equal(store.head().seq, seq, 'no entry was committed');
    // Three of them fit: a key compared twice is read once.
    const result = await committer.submit({ compares: ['big1', 'big2', 'big3', 'big1', 'big2'].map(newer), success: [{ type: 'put', key: b('flag'), value: b('3') }], failure: [] });
    assert.equal(result.succeeded, true);
  });

  test('compare reads: requests whose compares fit alone but not together are committed in separate entries', async () => {
    const results = await Promise.all([
      committer.submit({ compares: [newer('big1'), newer('big2')], success: [{ type: 'put', key: b('a'), value: b('1') }], failure: [] }),
      committer.submit({ compares: [newer('big3'), newer('big2')], success: [{ type: 'put', key: b('b'), value: b('1') }], failure: [] }),
      committer.submit({ compares: [newer('big1')], success: [{ type: 'put', key: b('c'), value: b('1') }], failure: [] }),
    ]);
    assert.ok(results.every((result) => result.succeeded));
    assert.equal(results[1].seq, results[0].seq, 'the second reads only big3 beyond what the first read: the entry holds both');
    assert.equal(results[2].seq, results[1].seq, 'big1 was read already');
    const more = await Promise.all([
      committer.submit({ compares: [newer('big1'), newer('big2')], success: [{ type: 'put', key: b('d'), value: b('1') }], failure: [] }),
      committer.submit({ compares: [newer('big3'), newer('big4')], success: [{ type: 'put', key: b('e'), value: b('1') }], failure: [] }),
    ]);
    assert.ok(more.every((result) => result.succeeded));
    assert.equal(more[1].seq, more[0].seq + 1, 'the second would take the entry past the limit: it starts the next');
  });
});

describe('compare reads: HTTP', () => {
  let dir: string;
  let node: MercuryNode;

  before(async () => {
    dir = makeTempDir('compare-reads-http');
    node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0 }), {
      auth: 'off',
      limits: withLimits(NODE_LIMITS_TEST, { commit: { compareReadBytesMax: 3 * 4096 } }),
    });
    for (const key of ['k0', 'k1', 'k2', 'k3']) assert.equal((await request(node.url, 'PUT', `/v1/kv/${key}`, { body: 'x'.repeat(4000) })).status, 200);
  });

  after(async () => {
    await node.close();
    removeDir(dir);
  });

  test('compare reads: a transaction over the limit is 413 COMPARE_READ_TOO_LARGE naming the limit', async () => {
    const compare = ['k0', 'k1', 'k2', 'k3'].map((key) => ({ key, modSeq: 0, op: '>' }));
    const body = JSON.stringify({ compare, success: [{ op: 'put', key: 'flag', value: 'v' }] });
    const error = assertError(await request(node.url, 'POST', '/v1/txn', { body, headers: { 'content-type': 'application/json' } }), 'COMPARE_READ_TOO_LARGE', 413);
    assert.equal(error.limit, 3 * 4096);
    assert.match(error.message, /compare fewer keys/);
  });
});

/**
 * Range deletes are bounded per entry (RANGE_DELETE_KEYS_MAX, docs/decisions.md record 41): a transaction whose range
 * deletes would remove more keys is refused whole with 413 RANGE_DELETE_TOO_LARGE, and requests whose range deletes
 * fit alone but not together go into separate entries. Real node, real HTTP on port 0, real LMDB in a temp dir.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { systemClock } from '../src/clock/index.js';
import { COMMIT_LIMITS, GroupCommitter } from '../src/commit/index.js';
import { validateConfig } from '../src/config/index.js';
import type { Op } from '../src/log/index.js';
import { Registry } from '../src/metrics/index.js';
import { MercuryNode, NODE_LIMITS_TEST, withLimits } from '../src/node/index.js';
import { Store, prefixEnd } from '../src/store/index.js';
import { assertError, request, requestJson } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';

const KEYS_MAX = 50;
const GROUP_KEYS = 40;

const keysOf = (group: string): string[] => Array.from({ length: GROUP_KEYS }, (_, i) => `big/${group}${String(i).padStart(2, '0')}`);

describe('range delete limit: HTTP', () => {
  let dir: string;
  let node: MercuryNode;

  before(async () => {
    dir = makeTempDir('range-delete-limit');
    node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0 }), {
      auth: 'off',
      limits: withLimits(NODE_LIMITS_TEST, { commit: { rangeDeleteKeysMax: KEYS_MAX } }),
    });
    for (const group of ['a', 'b', 'c']) {
      const success = keysOf(group).map((key) => ({ op: 'put', key, value: 'v' }));
      await requestJson(node.url, 'POST', '/v1/txn', { body: JSON.stringify({ success }), headers: { 'content-type': 'application/json' } });
    }
  });

  after(async () => {
    await node.close();
    removeDir(dir);
  });

  const keyCount = async (prefix: string): Promise<number> => {
    const page = await requestJson<{ items: unknown[] }>(node.url, 'GET', `/v1/kv?prefix=${prefix}&limit=1000`);
    return page.items.length;
  };
  const headSeq = async (): Promise<number> => (await requestJson<{ seq: number }>(node.url, 'GET', '/healthz')).seq;

  test('range delete limit: a prefix delete of more keys than the limit is 413 RANGE_DELETE_TOO_LARGE and removes nothing', async () => {
    const seq = await headSeq();
    const error = assertError(await request(node.url, 'DELETE', '/v1/kv?prefix=big/'), 'RANGE_DELETE_TOO_LARGE');
    assert.equal(error.limit, KEYS_MAX);
    assert.match(error.message, /in pieces/);
    assert.equal(await keyCount('big/'), 3 * GROUP_KEYS);
    assert.equal(await headSeq(), seq, 'no entry was committed');
  });

  test('range delete limit: the range deletes of one transaction count together, and the whole transaction is refused', async () => {
    const seq = await headSeq();
    const body = JSON.stringify({
      success: [
        { op: 'put', key: 'marker', value: 'x' },
        { op: 'deletePrefix', prefix: 'big/a' },
        { op: 'deleteRange', start: 'big/b', end: 'big/c' },
      ],
    });
    assertError(await request(node.url, 'POST', '/v1/txn', { body, headers: { 'content-type': 'application/json' } }), 'RANGE_DELETE_TOO_LARGE');
    assert.equal((await request(node.url, 'GET', '/v1/kv/marker')).status, 404, 'the put of the refused transaction was not applied');
    assert.equal(await keyCount('big/'), 3 * GROUP_KEYS);
    assert.equal(await headSeq(), seq);
  });

  test('range delete limit: a range within the limit is deleted in one entry, and the node goes on committing', async () => {
    const seq = await headSeq();
    const deleted = await requestJson<{ seq: number }>(node.url, 'DELETE', '/v1/kv?prefix=big/a');
    assert.equal(deleted.seq, seq + 1);
    assert.equal(await keyCount('big/a'), 0);
    assert.equal(await keyCount('big/'), 2 * GROUP_KEYS);
    assert.equal((await requestJson<{ seq: number }>(node.url, 'PUT', '/v1/kv/after', { body: 'x' })).seq, seq + 2);
  });
});

describe('range delete limit: group commit', () => {
  test('range delete limit: requests whose range deletes fit alone but not together are committed in separate entries', async () => {
    const dir = makeTempDir('range-delete-batch');
    const store = Store.open({ path: dir });
    const committer = new GroupCommitter({ clock: systemClock, limits: { ...COMMIT_LIMITS, rangeDeleteKeysMax: KEYS_MAX }, store, metrics: new Registry() });
    try {
      const put = (key: string): Op => ({ type: 'put', key: Buffer.from(key), value: Buffer.from('v') });
      const deletePrefix = (prefix: string): Op => ({ type: 'deleteRange', start: Buffer.from(prefix), end: prefixEnd(Buffer.from(prefix)) });
      await committer.submit({ compares: [], success: [...keysOf('a'), ...keysOf('b')].map(put), failure: [] });
      // Submitted in one turn: the committer takes them as one batch, which the limit splits before the second.
      const results = await Promise.all([
        committer.submit({ compares: [], success: [put('first')], failure: [] }),
        committer.submit({ compares: [], success: [deletePrefix('big/a')], failure: [] }),
        committer.submit({ compares: [], success: [deletePrefix('big/b')], failure: [] }),
        committer.submit({ compares: [], success: [put('last')], failure: [] }),
      ]);
      const seqs = results.map((result) => result.seq);
      assert.ok(results.every((result) => result.succeeded));
      assert.equal(seqs[0], seqs[1], 'the first range delete joins the entry of the requests before it');
      assert.equal(seqs[2], seqs[1]! + 1, 'the second range delete starts the next entry');
      assert.equal(seqs[3], seqs[2], 'the requests after it join its entry');
      assert.equal(store.range(Buffer.from('big/'), prefixEnd(Buffer.from('big/')), 1000).items.length, 0);
    } finally {
      await committer.close();
      await store.close();
      removeDir(dir);
    }
  });
});

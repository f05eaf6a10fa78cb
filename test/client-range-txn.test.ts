/**
 * TypeScript client: range iteration over several pages, and transactions in both forms (typed builder and plain
 * object), including binary keys and values.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { cmp, connect, op, type MercuryClient, type RangePage } from '../src/index.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';

async function collect(pages: AsyncIterable<RangePage>): Promise<RangePage[]> {
  const result: RangePage[] = [];
  for await (const page of pages) result.push(page);
  return result;
}

describe('client range and txn', () => {
  let dir: string;
  let node: ServeProcess;
  let client: MercuryClient;

  before(async () => {
    dir = makeTempDir('client-range');
    node = await startServe(dir);
    client = connect(node.url);
  });

  after(async () => {
    await stopProcess(node.child);
    removeDir(dir);
  });

  test('client range: 25 keys in pages of 7 come back in key order, each page with its seq', async () => {
    const keys = Array.from({ length: 25 }, (_, i) => `range/${String(i).padStart(2, '0')}`);
    const { seq } = await client.txn({ success: keys.map((key) => ({ op: 'put' as const, key, value: `v${key}` })) });
    await client.put('rangeX/outside', 'no');
    const pages = await collect(client.range('range/', { pageLimit: 7 }));
    assert.deepEqual(pages.map((page) => page.items.length), [7, 7, 7, 4]);
    assert.deepEqual(pages.flatMap((page) => page.items.map((item) => item.key.toString())), keys);
    for (const page of pages) {
      assert.ok(page.seq >= seq);
      for (const item of page.items) {
        assert.equal(item.value.toString(), `v${item.key.toString()}`);
        assert.equal(item.modSeq, seq);
        assert.equal(item.version, 1);
      }
    }
    const empty = await collect(client.range('range/none/'));
    assert.equal(empty.length, 1, 'an empty range is one empty page');
    assert.deepEqual(empty[0]!.items, []);
  });

  test('client txn: the builder applies success when every compare holds, failure otherwise', async () => {
    await client.put('app/mode', 'blue');
    const first = await client
      .txn()
      .compare(cmp.value('app/mode', '=', 'blue'), cmp.missing('app/lock'), cmp.version('app/mode', '>', 0))
      .success(op.put('app/mode', 'green'), op.put('app/old', 'x'))
      .failure(op.put('app/conflicts', '1'))
      .commit();
    assert.equal(first.succeeded, true);
    assert.equal((await client.get('app/mode'))?.value.toString(), 'green');
    const second = await client
      .txn()
      .compare(cmp.value('app/mode', '=', 'blue'))
      .success(op.put('app/mode', 'red'))
      .failure(op.put('app/conflicts', '1'), op.delete('app/old'))
      .commit();
    assert.equal(second.succeeded, false);
    assert.ok(second.seq > first.seq);
    assert.equal((await client.get('app/mode'))?.value.toString(), 'green');
    assert.equal((await client.get('app/conflicts'))?.value.toString(), '1');
    assert.equal(await client.get('app/old'), undefined);
    const modSeq = (await client.get('app/mode'))!.modSeq;
    const third = await client.txn().compare(cmp.modSeq('app/mode', '=', modSeq), cmp.exists('app/conflicts')).success(op.deletePrefix('app/')).commit();
    assert.equal(third.succeeded, true);
    assert.deepEqual((await collect(client.range('app/'))).flatMap((page) => page.items), []);
  });

  test('client txn: bytes that are not text travel as base64, and toJSON is the plain-object form', async () => {
    const key = Buffer.from([0x62, 0x69, 0x6e, 0x2f, 0xff, 0x00]);
    const value = Buffer.from([0, 1, 2, 0xfe]);
    const builder = client.txn().compare(cmp.missing(key)).success(op.put(key, value), op.deleteRange('bin/a', Buffer.from('bin/b')));
    assert.deepEqual(builder.toJSON(), {
      compare: [{ key: key.toString('base64'), keyEncoding: 'base64', exists: false }],
      success: [
        { op: 'put', key: key.toString('base64'), keyEncoding: 'base64', value: value.toString('base64'), valueEncoding: 'base64' },
        { op: 'deleteRange', start: 'bin/a', startEncoding: 'utf8', end: 'bin/b', endEncoding: 'utf8' },
      ],
      failure: [],
    });
    assert.equal((await builder.commit()).succeeded, true);
    const read = await client.get(key);
    assert.deepEqual(read?.value, value);
    assert.deepEqual(read?.key, key);
    const page = (await collect(client.range('bin/')))[0]!;
    assert.deepEqual(page.items[0]?.key, key);
  });

  test('client txn: the plain-object form and single-key writes', async () => {
    const result = await client.txn({
      compare: [{ key: 'plain/a', exists: false }],
      success: [{ op: 'put', key: 'plain/a', value: '1' }, { op: 'put', key: 'plain/b', valueBase64: Buffer.from('2').toString('base64') }],
    });
    assert.equal(result.succeeded, true);
    assert.equal((await client.get('plain/b'))?.value.toString(), '2');
    assert.deepEqual(await client.delete('plain/a'), { seq: result.seq + 1, deleted: true });
    assert.equal((await client.delete('plain/a')).deleted, false);
    const { seq } = await client.deletePrefix('plain/');
    assert.ok(seq > result.seq);
    assert.equal(await client.get('plain/b'), undefined);
  });
});

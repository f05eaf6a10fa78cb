/**
 * Hostile input - response sizes. Found on a real node: `GET /v1/kv?prefix=P&limit=10000` over 100 values of 1 MiB of
 * control characters answered 500 `RangeError: Invalid string length` after allocating 560 MB, and one `GET /v1/log`
 * returned up to 60 MB. Now a range page stops at `http.rangePageBytesMax` bytes of keys and values (the cursor
 * continues after its last item), a log page after the entry that reaches `http.logPageBytesMax` (`nextSeq`
 * continues), such values go out in base64 (4/3 of their bytes, not the 6 of `\u0001`), and the log is streamed. The
 * attack runs on a real `mercury serve` process (production limits) with `/healthz` probed and RSS sampled.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LOG_PAGE_BYTES_MAX, RANGE_PAGE_BYTES_MAX } from '../src/api/index.js';
import { NodeClient, connect } from '../src/client/index.js';
import { request, requestJson } from './support/http.js';
import { assertHealthzAnswers, rssBytes, sampleResident } from './support/hostile.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';

const MiB = 1024 * 1024;
const VALUES = 100;
const VALUE_BYTES = 1 * MiB;
/** JSON around one item of a page or op of an entry: names, encodings, seqs (a few hundred bytes at most). */
const ITEM_JSON_OVERHEAD_BYTES = 512;
/**
 * What serving the pages may add to the node's RSS: one page's records, their base64 and the JSON text (each about the
 * 4 MiB budget), with the allocator's slack. Before, one page allocated 560 MB and failed.
 */
const PAGE_RSS_BYTES_MAX = 96 * MiB;

interface RangePageJson {
  seq: number;
  more: boolean;
  cursor: string | null;
  items: { key: string; keyEncoding: string; value: string; valueEncoding: string; modSeq: number }[];
}

const keyOf = (i: number): string => `cc/${String(i).padStart(3, '0')}`;
/** 1 MiB of control characters, different per key. */
const valueOf = (i: number): Buffer => Buffer.alloc(VALUE_BYTES, (i % 8) + 1);

describe('hostile input - response sizes', () => {
  const dir = makeTempDir('hostile-pages');
  let node: ServeProcess;
  before(async () => {
    node = await startServe(join(dir, 'node'));
    for (let i = 0; i < VALUES; i++) assert.equal((await request(node.url, 'PUT', `/v1/kv/${keyOf(i)}`, { body: valueOf(i) })).status, 200);
  });
  after(async () => {
    await stopProcess(node.child);
    removeDir(dir);
  });

  test('pages: limit=10000 over 100 values of 1 MiB of control characters stops at the byte budget and continues by cursor', async (t) => {
    const rssBefore = rssBytes(node.child.pid);
    const sampler = sampleResident(node.child.pid!);
    const first = request(node.url, 'GET', '/v1/kv?prefix=cc/&limit=10000');
    await assertHealthzAnswers(node.url, 'during a range page of 1 MiB values', node.child.pid);
    const response = await first;
    const rssGrowth = sampler.stop() - rssBefore;
    assert.equal(response.status, 200, response.body.toString().slice(0, 300));
    const page = JSON.parse(response.body.toString()) as RangePageJson;
    // Base64, not \u0001 escapes: about 4/3 of the value bytes, and the page within the budget.
    const perItemMax = Math.ceil(VALUE_BYTES / 3) * 4 + ITEM_JSON_OVERHEAD_BYTES;
    const pageItemsMax = Math.floor(RANGE_PAGE_BYTES_MAX / VALUE_BYTES);
    assert.ok(page.items.length >= 1 && page.items.length <= pageItemsMax, `${page.items.length} items in the first page`);
    assert.ok(response.body.length <= page.items.length * perItemMax + ITEM_JSON_OVERHEAD_BYTES, `${response.body.length} bytes for ${page.items.length} items`);
    for (const item of page.items) assert.equal(item.valueEncoding, 'base64');
    assert.equal(page.more, true);
    assert.equal(page.cursor !== null, true);

    for (const [index, item] of page.items.entries()) {
      assert.equal(item.key, keyOf(index));
      assert.ok(Buffer.from(item.value, 'base64').equals(valueOf(index)), `value of ${item.key}`);
    }
    // The cursor continues right after the last item returned (the whole walk is the next test's).
    const second = await requestJson<RangePageJson>(node.url, 'GET', `/v1/kv?prefix=cc/&limit=10000&cursor=${page.cursor}`);
    assert.equal(second.items[0]!.key, keyOf(page.items.length));
    t.diagnostic(`range: first page ${page.items.length} items, ${response.body.length} bytes, RSS +${(rssGrowth / MiB).toFixed(1)} MiB`);
    assert.ok(rssGrowth <= PAGE_RSS_BYTES_MAX, `RSS grew by ${(rssGrowth / MiB).toFixed(1)} MiB`);
  });

  test('pages: the TypeScript client pages across budget-truncated pages, every key once and in order', async () => {
    const client = connect(node.url);
    try {
      const keys: string[] = [];
      for await (const page of client.range('cc/', { pageLimit: 10_000 })) {
        assert.ok(page.items.length <= Math.floor(RANGE_PAGE_BYTES_MAX / VALUE_BYTES));
        for (const item of page.items) {
          assert.ok(item.value.equals(valueOf(Number(item.key.toString().slice(3)))));
          keys.push(item.key.toString());
        }
      }
      assert.deepEqual(keys, Array.from({ length: VALUES }, (_, i) => keyOf(i)));
    } finally {
      client.close();
    }
  });

  test('log: one call returns at most the byte budget and one entry; nextSeq walks the whole log', async (t) => {
    const rssBefore = rssBytes(node.child.pid);
    const sampler = sampleResident(node.child.pid!);
    const pending = request(node.url, 'GET', '/v1/log?limit=1000');
    await assertHealthzAnswers(node.url, 'during a log page of 1 MiB entries', node.child.pid);
    const response = await pending;
    assert.equal(response.status, 200);
    const page = JSON.parse(response.body.toString()) as { firstSeq: number; lastSeq: number; nextSeq: number | null; entries: { seq: number; ops: { valueEncoding: string }[] }[] };
    assert.equal(page.lastSeq, VALUES);
    // Entries are ~1 MiB records: the page ends with the one that reaches the budget.
    const entriesMax = Math.ceil(LOG_PAGE_BYTES_MAX / VALUE_BYTES);
    assert.ok(page.entries.length >= 1 && page.entries.length <= entriesMax, `${page.entries.length} entries`);
    assert.ok(response.body.length <= entriesMax * (Math.ceil(VALUE_BYTES / 3) * 4 + ITEM_JSON_OVERHEAD_BYTES) + ITEM_JSON_OVERHEAD_BYTES, `${response.body.length} bytes`);
    assert.equal(page.entries[0]!.ops[0]!.valueEncoding, 'base64');
    assert.equal(page.nextSeq, page.entries[page.entries.length - 1]!.seq + 1);
    const rssGrowth = sampler.stop() - rssBefore;
    t.diagnostic(`log: ${page.entries.length} entries, ${response.body.length} bytes in one call; RSS +${(rssGrowth / MiB).toFixed(1)} MiB`);
    assert.ok(rssGrowth <= PAGE_RSS_BYTES_MAX, `RSS grew by ${(rssGrowth / MiB).toFixed(1)} MiB`);

    // The client's walk follows the pages to the head.
    const seqs: number[] = [];
    for await (const entry of new NodeClient(node.url).logEntries(undefined, 1000)) seqs.push(entry.seq as number);
    assert.deepEqual(seqs, Array.from({ length: VALUES }, (_, i) => i + 1));
    const last = await requestJson<{ nextSeq: number | null; entries: unknown[] }>(node.url, 'GET', `/v1/log?from=${VALUES}`);
    assert.equal(last.nextSeq, null);
    assert.equal(last.entries.length, 1);
  });
});

/**
 * The HTTP API against a real node on port 0 with a temp data directory: every route, every error code a client can
 * provoke, the headers, the limits, the timeouts of the HTTP server, and a restart on the same directory.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { systemClock } from '../src/clock/index.js';
import { COMMIT_LIMITS, GroupCommitter } from '../src/commit/index.js';
import { validateConfig } from '../src/config/index.js';
import type { ErrorCode } from '../src/errors/index.js';
import { JSON_BODY_BYTES_MAX, KEY_BYTES_MAX, TXN_OPS_MAX } from '../src/limits.js';
import { Registry } from '../src/metrics/index.js';
import { MercuryNode, NODE_LIMITS, SeqWaiter, withLimits } from '../src/node/index.js';
import { OPEN_REQUEST_POLICY, createApiHandler, createHttpServer } from '../src/server/index.js';
import { Store } from '../src/store/index.js';
import {
  assertError,
  auditLog,
  parseRawResponse,
  rawExchange,
  request,
  requestJson,
  type HttpResponse,
  type LogPage,
  recordingLogger,
} from './support/http.js';
import { ManualClock } from './support/manual-clock.js';
import { makeTempDir, removeDir } from './support/process.js';

const VALUE_BYTES_MAX = 1024;
const JSON_TYPE = { 'content-type': 'application/json' };


interface RangeItemJson {
  key: string;
  keyEncoding: 'utf8' | 'base64';
  value: string;
  valueEncoding: 'utf8' | 'base64';
  createSeq: number;
  modSeq: number;
  version: number;
}

interface RangePageJson {
  seq: number;
  items: RangeItemJson[];
  more: boolean;
  cursor: string | null;
}

interface StatusJson {
  role: string;
  version: string;
  nodeId: string;
  datasetId: string;
  seq: number;
  headHash: string;
  log: { firstSeq: number; lastSeq: number; entries: number; bytes: number };
  keys: number;
  dataFileBytes: number;
  url: string;
  uptimeMs: number;
}

describe('http api', () => {
  let dir: string;
  let node: MercuryNode;
  let url: string;
  const errorLog: string[] = [];

  const put = (path: string, body: Buffer | string, headers: Record<string, string | number> = {}): Promise<HttpResponse> =>
    request(url, 'PUT', path, { body, headers });
  const get = (path: string): Promise<HttpResponse> => request(url, 'GET', path);
  const txn = (body: unknown, headers: Record<string, string | number> = JSON_TYPE): Promise<HttpResponse> =>
    request(url, 'POST', '/v1/txn', { body: typeof body === 'string' ? body : JSON.stringify(body), headers });
  const status = (): Promise<StatusJson> => requestJson<StatusJson>(url, 'GET', '/v1/status');
  const json = <T = Record<string, unknown>>(response: HttpResponse): T => JSON.parse(response.body.toString('utf8')) as T;

  before(async () => {
    dir = makeTempDir('http-api');
    node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0, valueBytesMax: VALUE_BYTES_MAX }), { auth: 'off', logger: recordingLogger(errorLog) });
    url = node.url;
  });

  after(async () => {
    await node.close();
    removeDir(dir);
  });

  test('kv: put then get returns the exact bytes and the record headers', async () => {
    const value = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0xc3, 0x28, 0x0a, 0x41]);
    const created = await put('/v1/kv/app/binary', value);
    assert.equal(created.status, 200);
    assert.match(String(created.headers['content-type']), /^application\/json/);
    const { seq } = json<{ seq: number }>(created);
    assert.ok(Number.isSafeInteger(seq) && seq >= 1);
    assert.equal(created.headers['x-mercury-seq'], String(seq));

    const read = await get('/v1/kv/app/binary');
    assert.equal(read.status, 200);
    assert.equal(read.headers['content-type'], 'application/octet-stream');
    assert.equal(read.headers['content-length'], String(value.length));
    assert.deepEqual(read.body, value);
    assert.ok(Number(read.headers['x-mercury-seq']) >= seq);
    assert.equal(read.headers['x-mercury-mod-seq'], String(seq));
    assert.equal(read.headers['x-mercury-create-seq'], String(seq));
    assert.equal(read.headers['x-mercury-version'], '1');

    const updated = json<{ seq: number }>(await put('/v1/kv/app/binary', 'second'));
    assert.ok(updated.seq > seq);
    const again = await get('/v1/kv/app/binary');
    assert.equal(again.body.toString(), 'second');
    assert.equal(again.headers['x-mercury-mod-seq'], String(updated.seq));
    assert.equal(again.headers['x-mercury-create-seq'], String(seq), 'createSeq stays at the first put');
    assert.equal(again.headers['x-mercury-version'], '2');
  });

  test('kv: an empty value is a value', async () => {
    assert.equal((await put('/v1/kv/app/empty', Buffer.alloc(0))).status, 200);
    const read = await get('/v1/kv/app/empty');
    assert.equal(read.status, 200);
    assert.equal(read.body.length, 0);
    assert.equal(read.headers['content-length'], '0');
  });

  test('kv: keys with "/", "." and ".." segments are stored exactly as given', async () => {
    const keys = ['dots/a/../b', 'dots/b', 'dots/./c', 'dots/c', 'dots//d', 'dots/..', 'dots/.'];
    for (const [i, key] of keys.entries()) assert.equal((await put(`/v1/kv/${key}`, `value ${i}`)).status, 200, key);
    for (const [i, key] of keys.entries()) {
      const read = await get(`/v1/kv/${key}`);
      assert.equal(read.status, 200, key);
      assert.equal(read.body.toString(), `value ${i}`, `key ${key} was not kept apart from its normalised form`);
    }
    const page = await requestJson<RangePageJson>(url, 'GET', '/v1/kv?prefix=dots/');
    assert.deepEqual(page.items.map((item) => item.key), [...keys].sort());
  });

  test('kv: percent-encoded bytes in the path are the key bytes, in any case', async () => {
    const key = Buffer.concat([Buffer.from('bin/'), Buffer.from([0x00, 0xff, 0x2f]), Buffer.from('€')]);
    assert.equal((await put('/v1/kv/bin%2F%00%ff%2f%E2%82%AC', 'binary key')).status, 200);
    // The same bytes spelled differently: "/" raw instead of %2F, upper-case hex, the € as its escaped UTF-8 bytes.
    const read = await get('/v1/kv/bin/%00%FF/%e2%82%ac');
    assert.equal(read.status, 200);
    assert.equal(read.body.toString(), 'binary key');
    const page = await requestJson<RangePageJson>(url, 'GET', '/v1/kv?prefix=bin/');
    assert.equal(page.items.length, 1);
    assert.equal(page.items[0]!.keyEncoding, 'base64', 'a key that is not UTF-8 is given in base64');
    assert.deepEqual(Buffer.from(page.items[0]!.key, 'base64'), key);
    assertError(await get('/v1/kv/bad%zzkey'), 'BAD_REQUEST');
    assertError(await get('/v1/kv/bad%f'), 'BAD_REQUEST');
  });

  test('kv: a missing key is 404 KEY_NOT_FOUND with the seq it was read at', async () => {
    const error = assertError(await get('/v1/kv/no/such/key'), 'KEY_NOT_FOUND');
    assert.equal(error.seq, (await status()).seq);
    assert.match(error.message, /no\/such\/key/);
  });

  test('kv: ifModSeq is compare-and-set: the current modSeq succeeds, any other is 412 COMPARE_FAILED', async () => {
    const first = json<{ seq: number }>(await put('/v1/kv/cas/k', 'v1'));
    const swapped = await put(`/v1/kv/cas/k?ifModSeq=${first.seq}`, 'v2');
    assert.equal(swapped.status, 200);
    const second = json<{ seq: number }>(swapped);

    const stale = assertError(await put(`/v1/kv/cas/k?ifModSeq=${first.seq}`, 'v3'), 'COMPARE_FAILED');
    assert.equal(stale.modSeq, second.seq, 'the error carries the current modSeq');
    assert.match(stale.message, new RegExp(`ifModSeq=${first.seq}`));
    assert.equal((await get('/v1/kv/cas/k')).body.toString(), 'v2', 'a failed compare changes nothing');

    // ifModSeq=0 means "only if absent".
    assert.equal((await put('/v1/kv/cas/new?ifModSeq=0', 'created')).status, 200);
    assertError(await put('/v1/kv/cas/new?ifModSeq=0', 'again'), 'COMPARE_FAILED');

    assertError(await request(url, 'DELETE', `/v1/kv/cas/k?ifModSeq=${first.seq}`), 'COMPARE_FAILED');
    const deleted = await request(url, 'DELETE', `/v1/kv/cas/k?ifModSeq=${second.seq}`);
    assert.equal(deleted.status, 200);
    assert.equal(json<{ deleted: boolean }>(deleted).deleted, true);
  });

  test('kv: delete removes a key; deleting a missing key commits no entry', async () => {
    await put('/v1/kv/del/k', 'v');
    const deleted = await request(url, 'DELETE', '/v1/kv/del/k');
    assert.equal(deleted.status, 200);
    const body = json<{ seq: number; deleted: boolean }>(deleted);
    assert.equal(body.deleted, true);
    assert.equal(deleted.headers['x-mercury-seq'], String(body.seq));
    assertError(await get('/v1/kv/del/k'), 'KEY_NOT_FOUND');

    const before = await status();
    const missing = await request(url, 'DELETE', '/v1/kv/del/k');
    assert.equal(missing.status, 200);
    assert.deepEqual(json(missing), { seq: before.seq, deleted: false });
    const afterwards = await status();
    assert.equal(afterwards.seq, before.seq, 'no entry for a delete that deletes nothing');
    assert.equal(afterwards.headHash, before.headHash);
  });

  test('kv: keys are 1 to 1024 bytes: 1025 is 413 KEY_TOO_LARGE, empty is 400 KEY_EMPTY, on every method', async () => {
    const longest = 'k'.repeat(KEY_BYTES_MAX);
    assert.equal((await put(`/v1/kv/${longest}`, 'v')).status, 200);
    assert.equal((await get(`/v1/kv/${longest}`)).status, 200);
    const tooLong = 'k'.repeat(KEY_BYTES_MAX + 1);
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const error = assertError(await request(url, method, `/v1/kv/${tooLong}`, { body: method === 'PUT' ? 'v' : undefined }), 'KEY_TOO_LARGE');
      assert.equal(error.limit, KEY_BYTES_MAX);
      assert.match(error.message, /1025 bytes/);
      assertError(await request(url, method, '/v1/kv/', { body: method === 'PUT' ? 'v' : undefined }), 'KEY_EMPTY');
    }
    // Far beyond LMDB's own key limit: still a clear error, not an internal one.
    assertError(await get(`/v1/kv/${'k'.repeat(5000)}`), 'KEY_TOO_LARGE');
    // 1025 bytes counted as bytes, not characters: 512 two-byte characters and one more byte.
    assertError(await put(`/v1/kv/${'%C3%A9'.repeat(512)}x`, 'v'), 'KEY_TOO_LARGE');
  });

  test('kv: a value above valueBytesMax is 413 VALUE_TOO_LARGE, by content-length and while streaming', async () => {
    assert.equal((await put('/v1/kv/big/ok', Buffer.alloc(VALUE_BYTES_MAX, 7))).status, 200);
    assert.equal((await get('/v1/kv/big/ok')).body.length, VALUE_BYTES_MAX);

    const declared = await put('/v1/kv/big/declared', Buffer.alloc(VALUE_BYTES_MAX + 1, 7));
    const error = assertError(declared, 'VALUE_TOO_LARGE');
    assert.equal(error.limit, VALUE_BYTES_MAX);
    assert.equal(declared.headers.connection, 'close', 'an unread body makes the connection unusable');

    // Chunked: no content-length, so the limit must hit while the body streams in.
    const chunk = Buffer.alloc(300, 1).toString('latin1');
    const head = 'PUT /v1/kv/big/streamed HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n';
    const pieces = [head, ...Array.from({ length: 5 }, () => `${chunk.length.toString(16)}\r\n${chunk}\r\n`), '0\r\n\r\n'];
    const streamed = parseRawResponse(await rawExchange(url, pieces, { pauseMs: 20 }));
    assert.equal(streamed.status, 413);
    assert.equal((JSON.parse(streamed.body) as { error: { code: string } }).error.code, 'VALUE_TOO_LARGE');

    assertError(await get('/v1/kv/big/declared'), 'KEY_NOT_FOUND');
    assertError(await get('/v1/kv/big/streamed'), 'KEY_NOT_FOUND');
  });

  test('kv: malformed query parameters are 400 INVALID_ARGUMENT naming the parameter', async () => {
    const cases: [string, string, RegExp][] = [
      ['PUT', '/v1/kv/q?ifModSeq=abc', /ifModSeq/],
      ['PUT', '/v1/kv/q?ifModSeq=-1', /ifModSeq/],
      ['DELETE', '/v1/kv/q?ifModSeq=1.5', /ifModSeq/],
      ['GET', '/v1/kv/q?minSeq=x', /minSeq/],
      ['GET', '/v1/kv/q?minSeq=99999999999999999999', /minSeq/],
      ['GET', '/v1/kv/q?minSeq=999999&timeoutMs=60001', /timeoutMs/],
      ['GET', '/v1/kv?limit=0', /limit/],
      ['GET', '/v1/kv?limit=10001', /limit/],
      ['GET', '/v1/kv?limit=ten', /limit/],
      ['GET', '/v1/kv?cursor=not*a*cursor', /cursor/],
      ['GET', `/v1/kv?cursor=${Buffer.alloc(KEY_BYTES_MAX + 1, 97).toString('base64url')}`, /cursor/],
      ['GET', '/v1/log?from=0', /from/],
      ['GET', '/v1/log?from=abc', /from/],
      ['GET', '/v1/log?limit=0', /limit/],
      ['GET', '/v1/log?limit=1001', /limit/],
    ];
    for (const [method, path, names] of cases) {
      const error = assertError(await request(url, method, path, { body: method === 'PUT' ? 'v' : undefined }), 'INVALID_ARGUMENT');
      assert.match(error.message, names, `${method} ${path}: ${error.message}`);
    }
  });

  test('range: delete by prefix removes exactly the keys under it', async () => {
    for (const key of ['pfx', 'pfx/a', 'pfx/b/c', 'pfx/b/d', 'pfx0', 'pfy']) await put(`/v1/kv/${key}`, 'v');
    const deleted = await request(url, 'DELETE', '/v1/kv?prefix=pfx/');
    assert.equal(deleted.status, 200);
    const { seq } = json<{ seq: number }>(deleted);
    assert.equal(deleted.headers['x-mercury-seq'], String(seq));
    const remaining = await requestJson<RangePageJson>(url, 'GET', '/v1/kv?prefix=pf');
    assert.deepEqual(remaining.items.map((item) => item.key), ['pfx', 'pfx0', 'pfy']);

    assertError(await request(url, 'DELETE', '/v1/kv?prefix='), 'INVALID_ARGUMENT');
    assertError(await request(url, 'DELETE', '/v1/kv'), 'INVALID_ARGUMENT');
    assertError(await request(url, 'DELETE', `/v1/kv?prefix=${'p'.repeat(KEY_BYTES_MAX + 1)}`), 'KEY_TOO_LARGE');
    assertError(await get(`/v1/kv?prefix=${'p'.repeat(3000)}`), 'KEY_TOO_LARGE');
  });

  test('range: pages through a prefix with limit and cursor; values are utf8 or base64, said per item', async () => {
    const expected = new Map<string, Buffer>();
    for (let i = 0; i < 23; i++) {
      const key = `page/${String(i).padStart(2, '0')}`;
      const value = i % 3 === 0 ? Buffer.from([0xff, i, 0xfe]) : Buffer.from(`text ${i} ✓`);
      expected.set(key, value);
      await put(`/v1/kv/${key}`, value);
    }
    const seen: RangeItemJson[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const response = await get(`/v1/kv?prefix=page/&limit=5${cursor === null ? '' : `&cursor=${cursor}`}`);
      assert.equal(response.status, 200);
      const page = json<RangePageJson>(response);
      assert.equal(response.headers['x-mercury-seq'], String(page.seq));
      assert.ok(page.items.length <= 5);
      pages++;
      seen.push(...page.items);
      assert.equal(page.more, seen.length < expected.size);
      assert.equal(page.cursor === null, !page.more);
      cursor = page.cursor;
    } while (cursor !== null);
    assert.equal(pages, 5);
    assert.deepEqual(seen.map((item) => item.key), [...expected.keys()]);
    for (const item of seen) {
      const value = expected.get(item.key)!;
      const isText = !value.includes(0xff);
      assert.equal(item.keyEncoding, 'utf8');
      assert.equal(item.valueEncoding, isText ? 'utf8' : 'base64', item.key);
      assert.deepEqual(Buffer.from(item.value, item.valueEncoding), value);
      assert.equal(item.version, 1);
      assert.equal(item.createSeq, item.modSeq);
    }
    const all = await requestJson<RangePageJson>(url, 'GET', '/v1/kv?prefix=page/&limit=10000');
    assert.equal(all.items.length, expected.size);
    assert.equal(all.more, false);
    assert.equal(all.cursor, null);
  });

  test('range: one page is one snapshot, even while writes land', async () => {
    // Every write sets all 50 keys to the same value in one transaction: a page that mixed two snapshots would show two.
    const writeAll = (round: number): Promise<HttpResponse> =>
      txn({ success: Array.from({ length: 50 }, (_, i) => ({ op: 'put', key: `snap/${String(i).padStart(2, '0')}`, value: `v${round}` })) });
    await writeAll(0);
    let writing = true;
    const writer = (async () => {
      for (let round = 1; writing; round++) assert.equal((await writeAll(round)).status, 200);
    })();
    try {
      for (let i = 0; i < 30; i++) {
        const page = await requestJson<RangePageJson>(url, 'GET', '/v1/kv?prefix=snap/&limit=50');
        assert.equal(page.items.length, 50);
        assert.equal(new Set(page.items.map((item) => item.value)).size, 1, `a page mixes writes: ${page.items.map((item) => item.value).join(' ')}`);
        assert.equal(new Set(page.items.map((item) => item.modSeq)).size, 1);
        assert.ok(page.items[0]!.modSeq <= page.seq, `items at modSeq ${page.items[0]!.modSeq} in a page at seq ${page.seq}`);
      }
    } finally {
      writing = false;
      await writer;
    }
  });

  test('txn: the success branch applies when every compare holds', async () => {
    await put('/v1/kv/tx/a', 'alpha');
    await put('/v1/kv/tx/gone/1', 'x');
    await put('/v1/kv/tx/gone/2', 'x');
    await put('/v1/kv/tx/range/b', 'x');
    const response = await txn({
      compare: [
        { key: 'tx/a', exists: true },
        { key: 'tx/missing', exists: false },
        { key: 'tx/a', value: 'alpha' },
        { keyBase64: Buffer.from('tx/a').toString('base64'), valueBase64: Buffer.from('alpha').toString('base64') },
        { key: 'tx/a', version: 1 },
        { key: 'tx/a', modSeq: 0, op: '>' },
      ],
      success: [
        { op: 'put', key: 'tx/b', value: 'beta' },
        { op: 'put', keyBase64: Buffer.from([0x74, 0x78, 0x2f, 0xff]).toString('base64'), valueBase64: Buffer.from([1, 2, 0xff]).toString('base64') },
        { op: 'delete', key: 'tx/a' },
        { op: 'deletePrefix', prefix: 'tx/gone/' },
        { op: 'deleteRange', start: 'tx/range/a', end: 'tx/range/c' },
      ],
      failure: [{ op: 'put', key: 'tx/failed', value: 'yes' }],
    });
    assert.equal(response.status, 200);
    const result = json<{ succeeded: boolean; seq: number }>(response);
    assert.equal(result.succeeded, true);
    assert.equal(response.headers['x-mercury-seq'], String(result.seq));
    assert.equal((await get('/v1/kv/tx/b')).body.toString(), 'beta');
    assert.deepEqual((await get('/v1/kv/tx/%ff')).body, Buffer.from([1, 2, 0xff]));
    assertError(await get('/v1/kv/tx/a'), 'KEY_NOT_FOUND');
    assertError(await get('/v1/kv/tx/gone/1'), 'KEY_NOT_FOUND');
    assertError(await get('/v1/kv/tx/range/b'), 'KEY_NOT_FOUND');
    assertError(await get('/v1/kv/tx/failed'), 'KEY_NOT_FOUND');
    // All of it is one entry.
    const log = await requestJson<LogPage>(url, 'GET', `/v1/log?from=${result.seq}&limit=1`);
    assert.equal(log.entries[0]!.ops.length, 5);
  });

  test('txn: the failure branch applies when a compare fails', async () => {
    const response = await txn({
      compare: [{ key: 'tx/b', value: 'beta' }, { key: 'tx/b', version: 7 }],
      success: [{ op: 'put', key: 'tx/branch', value: 'success' }],
      failure: [{ op: 'put', key: 'tx/branch', value: 'failure' }],
    });
    assert.equal(response.status, 200);
    assert.equal(json<{ succeeded: boolean }>(response).succeeded, false);
    assert.equal((await get('/v1/kv/tx/branch')).body.toString(), 'failure');
  });

  test('txn: a failed compare with an empty failure branch commits no entry', async () => {
    const before = await status();
    const { hash, ...result } = json<{ succeeded: boolean; seq: number; hash: string }>(
      await txn({ compare: [{ key: 'tx/b', exists: false }], success: [{ op: 'delete', key: 'tx/b' }] }),
    );
    assert.deepEqual(result, { succeeded: false, seq: before.seq });
    // The hash of the entry at that seq (the head it was evaluated at): what a forwarding replica checks its own against.
    assert.match(hash, /^[0-9a-f]{64}$/);
    assert.equal((await status()).seq, before.seq);
  });

  test('txn: every compare target and operator', async () => {
    const first = json<{ seq: number }>(await put('/v1/kv/cmp/k', 'm'));
    const second = json<{ seq: number }>(await put('/v1/kv/cmp/k', 'm'));
    const [created, modified] = [first.seq, second.seq];
    const cases: [Record<string, unknown>, boolean][] = [
      [{ key: 'cmp/k', exists: true }, true],
      [{ key: 'cmp/k', exists: false }, false],
      [{ key: 'cmp/none', exists: false }, true],
      [{ key: 'cmp/none', exists: true }, false],
      [{ key: 'cmp/k', value: 'm' }, true],
      [{ key: 'cmp/k', value: 'm', op: '=' }, true],
      [{ key: 'cmp/k', value: 'm', op: '!=' }, false],
      [{ key: 'cmp/k', value: 'a', op: '>' }, true],
      [{ key: 'cmp/k', value: 'z', op: '>' }, false],
      [{ key: 'cmp/k', value: 'z', op: '<' }, true],
      [{ key: 'cmp/k', value: 'mm', op: '<' }, true],
      [{ key: 'cmp/k', valueBase64: Buffer.from('m').toString('base64') }, true],
      [{ key: 'cmp/none', value: 'm', op: '!=' }, false],
      [{ key: 'cmp/k', modSeq: modified }, true],
      [{ key: 'cmp/k', modSeq: created }, false],
      [{ key: 'cmp/k', modSeq: modified, op: '!=' }, false],
      [{ key: 'cmp/k', modSeq: modified + 1, op: '<' }, true],
      [{ key: 'cmp/k', modSeq: modified, op: '>' }, false],
      [{ key: 'cmp/none', modSeq: 0 }, true],
      [{ key: 'cmp/k', version: 2 }, true],
      [{ key: 'cmp/k', version: 1, op: '>' }, true],
      [{ key: 'cmp/k', version: 2, op: '<' }, false],
      [{ key: 'cmp/k', version: 3, op: '!=' }, true],
      [{ key: 'cmp/none', version: 0 }, true],
      [{ key: 'cmp/k', createSeq: created }, true],
      [{ key: 'cmp/k', createSeq: created, op: '<' }, false],
      [{ key: 'cmp/k', createSeq: created - 1, op: '>' }, true],
      [{ key: 'cmp/none', createSeq: 0 }, true],
    ];
    for (const [compare, holds] of cases) {
      const result = json<{ succeeded: boolean }>(await txn({ compare: [compare] }));
      assert.equal(result.succeeded, holds, JSON.stringify(compare));
    }
    // Several compares: all must hold.
    assert.equal(json<{ succeeded: boolean }>(await txn({ compare: [cases[0]![0], cases[1]![0]] })).succeeded, false);
  });

  test('txn: every malformed transaction is a 4xx naming the offending field, and commits nothing', async () => {
    const long = 'k'.repeat(KEY_BYTES_MAX + 1);
    const big = 'v'.repeat(VALUE_BYTES_MAX + 1);
    const cases: [unknown, ErrorCode, RegExp][] = [
      [[], 'INVALID_ARGUMENT', /transaction must be an object/],
      ['"text"', 'INVALID_ARGUMENT', /transaction must be an object/],
      [null, 'INVALID_ARGUMENT', /transaction must be an object/],
      [{ compare: [], nope: 1 }, 'INVALID_ARGUMENT', /unknown field "nope"/],
      [{ success: {} }, 'INVALID_ARGUMENT', /^success must be an array/],
      [{ failure: 'x' }, 'INVALID_ARGUMENT', /^failure must be an array/],
      [{ compare: {} }, 'INVALID_ARGUMENT', /^compare must be an array/],
      [{ success: [1] }, 'INVALID_ARGUMENT', /^success\[0\] must be an object/],
      [{ success: [{ op: 'put', key: 'a', value: 'b' }, { op: 'nope' }] }, 'INVALID_ARGUMENT', /^success\[1\]\.op must be/],
      [{ failure: [{ op: 'put', value: 'x' }] }, 'INVALID_ARGUMENT', /^failure\[0\]: "key" \(or "keyBase64"\) is required/],
      [{ success: [{ op: 'put', key: 1, value: 'x' }] }, 'INVALID_ARGUMENT', /^success\[0\]\.key must be a string/],
      [{ success: [{ op: 'put', key: 'a', keyBase64: 'YQ==', value: 'x' }] }, 'INVALID_ARGUMENT', /^success\[0\]: give either "key" or "keyBase64"/],
      [{ success: [{ op: 'put', keyBase64: '!!', value: 'x' }] }, 'INVALID_ARGUMENT', /^success\[0\]\.keyBase64 must be a standard base64/],
      [{ success: [{ op: 'put', key: 'a', valueBase64: 'YQ' }] }, 'INVALID_ARGUMENT', /^success\[0\]\.valueBase64 must be/],
      [{ success: [{ op: 'put', key: 'a' }] }, 'INVALID_ARGUMENT', /^success\[0\]: "value"/],
      [{ success: [{ op: 'deletePrefix' }] }, 'INVALID_ARGUMENT', /^success\[0\]: "prefix"/],
      [{ success: [{ op: 'deleteRange', end: 'b' }] }, 'INVALID_ARGUMENT', /^success\[0\]: "start"/],
      [{ compare: [{ key: 'a' }] }, 'INVALID_ARGUMENT', /^compare\[0\] needs exactly one of/],
      [{ compare: [{ key: 'a', version: 1, modSeq: 1 }] }, 'INVALID_ARGUMENT', /^compare\[0\] needs exactly one of/],
      [{ compare: [{ value: 'x' }] }, 'INVALID_ARGUMENT', /^compare\[0\]: "key"/],
      [{ compare: [{ key: 'a', exists: true }, { key: 'a', version: 1, op: '>=' }] }, 'INVALID_ARGUMENT', /^compare\[1\]\.op must be one of/],
      [{ compare: [{ key: 'a', exists: 'yes' }] }, 'INVALID_ARGUMENT', /^compare\[0\]\.exists must be true or false/],
      [{ compare: [{ key: 'a', exists: true, op: '=' }] }, 'INVALID_ARGUMENT', /^compare\[0\]: "exists" takes no "op"/],
      [{ compare: [{ key: 'a', modSeq: -1 }] }, 'INVALID_ARGUMENT', /^compare\[0\]\.modSeq must be a non-negative integer/],
      [{ compare: [{ key: 'a', version: 1.5 }] }, 'INVALID_ARGUMENT', /^compare\[0\]\.version must be/],
      [{ compare: [{ key: 'a', createSeq: '1' }] }, 'INVALID_ARGUMENT', /^compare\[0\]\.createSeq must be/],
      [{ success: [{ op: 'put', key: 'a', value: 'x' }, { op: 'put', key: long, value: 'x' }] }, 'KEY_TOO_LARGE', /^success\[1\]\.key is 1025 bytes/],
      [{ success: [{ op: 'delete', key: '' }] }, 'KEY_EMPTY', /^success\[0\]\.key is empty/],
      [{ success: [{ op: 'deletePrefix', prefix: '' }] }, 'KEY_EMPTY', /^success\[0\]\.prefix is empty/],
      [{ success: [{ op: 'deleteRange', start: 'a', end: long }] }, 'KEY_TOO_LARGE', /^success\[0\]\.end is 1025 bytes/],
      [{ compare: [{ key: '', exists: true }] }, 'KEY_EMPTY', /^compare\[0\]\.key is empty/],
      [{ failure: [{ op: 'put', key: 'a', value: big }] }, 'VALUE_TOO_LARGE', /^failure\[0\]\.value is 1025 bytes/],
      [{ compare: [{ key: 'a', value: big }] }, 'VALUE_TOO_LARGE', /^compare\[0\]\.value is 1025 bytes/],
    ];
    const before = await status();
    for (const [body, code, message] of cases) {
      const error = assertError(await txn(typeof body === 'string' ? body : JSON.stringify(body)), code);
      assert.match(error.message, message, `${JSON.stringify(body).slice(0, 120)}: ${error.message}`);
    }
    assert.equal((await status()).seq, before.seq, 'no malformed transaction was committed');
  });

  test('txn: a body that is not declared as JSON, or not declared at all, is 415; with a charset it is accepted', async () => {
    const body = JSON.stringify({ success: [{ op: 'put', key: 'ct/k', value: 'v' }] });
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/jsonx', 'multipart/form-data; boundary=x']) {
      const error = assertError(await txn(body, { 'content-type': type }), 'UNSUPPORTED_MEDIA_TYPE');
      assert.match(error.message, /Content-Type: application\/json/);
    }
    assert.match(assertError(await txn(body, {}), 'UNSUPPORTED_MEDIA_TYPE').message, /had no Content-Type/);
    assert.equal(node.store.get(Buffer.from('ct/k')).record, undefined, 'nothing refused was committed');
    assert.equal((await txn(body, { 'content-type': 'Application/JSON; charset=utf-8' })).status, 200);
  });

  test('txn: a body that is not JSON is 400 INVALID_JSON', async () => {
    for (const body of ['', '{', '{"success": [}', 'nul', '\u00ff\u00fe']) assertError(await txn(body), 'INVALID_JSON');
  });

  test('txn: 10,000 ops are one entry; 10,001 ops or compares are 413 TOO_MANY_OPS', async () => {
    const ops = (count: number): Record<string, string>[] => Array.from({ length: count }, (_, i) => ({ op: 'put', key: `many/${i}`, value: 'v' }));
    const accepted = await txn({ success: ops(TXN_OPS_MAX) });
    assert.equal(accepted.status, 200);
    const { seq } = json<{ seq: number }>(accepted);
    const entry = await requestJson<LogPage>(url, 'GET', `/v1/log?from=${seq}&limit=1`);
    assert.equal(entry.entries[0]!.ops.length, TXN_OPS_MAX);

    for (const body of [
      { success: ops(TXN_OPS_MAX + 1) },
      { failure: ops(TXN_OPS_MAX + 1) },
      { compare: Array.from({ length: TXN_OPS_MAX + 1 }, () => ({ key: 'a', exists: true })) },
    ]) {
      const error = assertError(await txn(body), 'TOO_MANY_OPS');
      assert.equal(error.limit, TXN_OPS_MAX);
      assert.match(error.message, /10001/);
    }
  });

  test('txn: a body declared larger than the limit is 413 BODY_TOO_LARGE before it is read', async () => {
    const text = await rawExchange(url, `POST /v1/txn HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: ${JSON_BODY_BYTES_MAX + 1}\r\n\r\n{`);
    const response = parseRawResponse(text);
    assert.equal(response.status, 413);
    assert.equal(response.headers.connection, 'close');
    const error = (JSON.parse(response.body) as { error: { code: string; limit: number } }).error;
    assert.equal(error.code, 'BODY_TOO_LARGE');
    assert.equal(error.limit, JSON_BODY_BYTES_MAX);
  });

  test('log: from and limit select entries; every prevHash is the previous hash', async () => {
    const entries = await auditLog(url, 7);
    const head = await status();
    assert.equal(entries.length, head.seq, 'nothing trimmed yet: the log holds every entry');
    const page = await requestJson<LogPage>(url, 'GET', '/v1/log?from=2&limit=3');
    assert.deepEqual(page.entries.map((entry) => entry.seq), [2, 3, 4]);
    assert.equal(page.firstSeq, 1);
    assert.equal(page.lastSeq, head.seq);
    assert.equal(page.entries[0]!.prevHash, entries[0]!.hash);
    for (const entry of page.entries) {
      assert.match(entry.hash, /^[0-9a-f]{64}$/);
      assert.ok(entry.timeMs > 0);
    }
    const first = page.entries[0]!.ops[0]!;
    assert.equal(first.op, 'put');
    assert.ok(first.keyEncoding === 'utf8' || first.keyEncoding === 'base64');

    const beyond = await requestJson<LogPage>(url, 'GET', `/v1/log?from=${head.seq + 1}`);
    assert.deepEqual(beyond.entries, []);
    const defaults = await requestJson<LogPage>(url, 'GET', '/v1/log');
    assert.equal(defaults.entries[0]!.seq, 1);
    assert.equal(defaults.entries.length, Math.min(100, head.seq));
  });

  test('reads: minSeq waits until a later write is applied', async () => {
    const { seq } = await status();
    const started = performance.now();
    const waiting = get(`/v1/kv/wait/k?minSeq=${seq + 1}&timeoutMs=10000`);
    const waitingRange = get(`/v1/kv?prefix=wait/&minSeq=${seq + 1}&timeoutMs=10000`);
    await new Promise((resolve) => setTimeout(resolve, 150));
    await put('/v1/kv/wait/k', 'arrived');
    const read = await waiting;
    assert.equal(read.status, 200);
    assert.equal(read.body.toString(), 'arrived');
    assert.ok(Number(read.headers['x-mercury-seq']) >= seq + 1);
    assert.ok(performance.now() - started >= 140, 'the read waited for the write');
    const range = json<RangePageJson>(await waitingRange);
    assert.deepEqual(range.items.map((item) => item.key), ['wait/k']);
    // Already applied: no wait at all.
    assert.equal((await get(`/v1/kv/wait/k?minSeq=${seq + 1}`)).status, 200);
  });

  test('reads: a minSeq beyond the head is 504 SEQ_WAIT_TIMEOUT after timeoutMs', async () => {
    const { seq } = await status();
    const started = performance.now();
    const error = assertError(await get(`/v1/kv/wait/k?minSeq=${seq + 1000}&timeoutMs=200`), 'SEQ_WAIT_TIMEOUT');
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 190 && elapsed < 3000, `waited ${elapsed} ms for a 200 ms timeout`);
    assert.equal(error.seq, seq, 'the error says which seq the node has applied');
    assertError(await get(`/v1/kv?prefix=x&minSeq=${seq + 1000}&timeoutMs=50`), 'SEQ_WAIT_TIMEOUT');
  });

  test('status: seq, head hash, dataset id, role and sizes', async () => {
    const current = await status();
    assert.equal(current.role, 'root');
    assert.equal(typeof current.version, 'string');
    assert.match(current.datasetId, /\S/);
    assert.match(current.nodeId, /\S/);
    assert.match(current.headHash, /^[0-9a-f]{64}$/);
    const last = await requestJson<LogPage>(url, 'GET', `/v1/log?from=${current.seq}`);
    assert.equal(last.entries[0]!.hash, current.headHash);
    assert.equal(current.log.lastSeq, current.seq);
    assert.equal(current.log.firstSeq, 1);
    assert.equal(current.log.entries, current.seq);
    assert.ok(current.log.bytes > 0);
    assert.ok(current.dataFileBytes > 0);
    assert.equal(current.url, url);
    assert.ok(current.uptimeMs >= 0);
    let keys = 0;
    let cursor: string | null = null;
    do {
      const page: RangePageJson = await requestJson<RangePageJson>(url, 'GET', `/v1/kv?limit=10000${cursor === null ? '' : `&cursor=${cursor}`}`);
      keys += page.items.length;
      cursor = page.cursor;
    } while (cursor !== null);
    assert.equal(current.keys, keys);
  });

  test('healthz: 200 with ok and the applied seq', async () => {
    const response = await get('/healthz');
    assert.equal(response.status, 200);
    const body = json<{ ok: boolean; seq: number }>(response);
    assert.equal(body.ok, true);
    assert.equal(body.seq, (await status()).seq);
  });

  test('routing: an unknown route is 404 NOT_FOUND', async () => {
    for (const path of ['/', '/v2/kv/a', '/v1', '/v1/kvx', '/v1/txn/more', '/v1/status/', '/healthz/', '/metricsx', '/v1/log/1']) {
      const error = assertError(await request(url, 'GET', path), 'NOT_FOUND');
      assert.match(error.message, /no route/);
    }
  });

  test('routing: a method a route does not take is 405 with an Allow header', async () => {
    const cases: [string, string, string][] = [
      ['POST', '/v1/kv/a', 'GET, HEAD, PUT, DELETE'],
      ['PATCH', '/v1/kv/a', 'GET, HEAD, PUT, DELETE'],
      ['PUT', '/v1/kv', 'GET, HEAD, DELETE'],
      ['GET', '/v1/txn', 'POST'],
      ['DELETE', '/v1/log', 'GET, HEAD'],
      ['POST', '/v1/status', 'GET, HEAD, OPTIONS'],
      ['PUT', '/healthz', 'GET, HEAD'],
      ['POST', '/metrics', 'GET, HEAD'],
    ];
    for (const [method, path, allow] of cases) {
      const response = await request(url, method, path, { body: 'x' });
      assertError(response, 'METHOD_NOT_ALLOWED');
      assert.equal(response.headers.allow, allow, `${method} ${path}`);
    }
  });

  test('http: malformed requests on a raw socket get a 400 JSON error and a closed connection', async () => {
    const garbage = [
      'garbage\r\n\r\n',
      'GET /healthz HTTP/9.9\r\n\r\n',
      'GET /healthz HTTP/1.1\r\nbad header line\r\n\r\n',
      'GET /healthz HTTP/1.1\r\nhost: localhost\r\ncontent-length: abc\r\n\r\n',
      'GET /healthz HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n',
      'PUT /v1/kv/a HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n',
      'GET /v1/kv/\u00ff\u00fe HTTP/1.1\r\nhost: localhost\r\n\r\n',
      Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0x0d, 0x0a, 0x0d, 0x0a]),
      // HTTP/1.1 without Host (node:http's own answer to this would be an empty, non-JSON 400).
      'GET /healthz HTTP/1.1\r\n\r\n',
    ];
    for (const data of garbage) {
      const response = parseRawResponse(await rawExchange(url, data));
      assert.equal(response.status, 400, JSON.stringify(data.toString()));
      assert.equal(response.headers['content-type'], 'application/json');
      assert.equal(response.headers.connection, 'close');
      assert.equal((JSON.parse(response.body) as { error: { code: string } }).error.code, 'BAD_REQUEST');
    }
    // HTTP/1.0 has no Host header and is served.
    const legacy = parseRawResponse(await rawExchange(url, 'GET /healthz HTTP/1.0\r\n\r\n'));
    assert.equal(legacy.status, 200);
    assert.equal((await get('/healthz')).status, 200, 'the node keeps serving');
  });

  test('http: request headers above 16 KiB are refused with 431 and a JSON error', async () => {
    const response = parseRawResponse(await rawExchange(url, `GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-filler: ${'a'.repeat(20_000)}\r\n\r\n`));
    assert.equal(response.status, 431);
    assert.equal(response.headers['content-type'], 'application/json');
    const error = (JSON.parse(response.body) as { error: { code: string; message: string } }).error;
    assert.equal(error.code, 'HEADERS_TOO_LARGE');
    assert.match(error.message, /headers are too large/);
  });

  test('http: an Expect header other than 100-continue gets 417 and a JSON error', async () => {
    const response = parseRawResponse(await rawExchange(url, `GET /healthz HTTP/1.1\r\nhost: localhost\r\nexpect: teapot\r\n\r\n`));
    assert.equal(response.status, 417);
    assert.equal(response.headers['content-type'], 'application/json');
    const error = (JSON.parse(response.body) as { error: { code: string; message: string } }).error;
    assert.equal(error.code, 'EXPECTATION_FAILED');
    assert.equal((await get('/healthz')).status, 200, 'the node keeps serving');
  });

  test('metrics: Prometheus text with commit latency, batch sizes and requests by route and status', async () => {
    const response = await get('/metrics');
    assert.equal(response.status, 200);
    assert.match(String(response.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    const text = response.body.toString();
    assert.match(text, /^# TYPE mercury_commit_seconds histogram$/m);
    assert.match(text, /^mercury_commit_seconds_bucket\{le="\+Inf"\} [1-9]\d*$/m);
    assert.match(text, /^mercury_commit_seconds_count [1-9]\d*$/m);
    assert.match(text, /^# TYPE mercury_commit_batch_requests histogram$/m);
    assert.match(text, /^mercury_commit_batch_requests_count [1-9]\d*$/m);
    assert.match(text, /^# TYPE mercury_http_requests_total counter$/m);
    assert.match(text, /^mercury_http_requests_total\{method="PUT",route="\/v1\/kv\/\{key\}",status="200"\} [1-9]\d*$/m);
    assert.match(text, /^mercury_http_requests_total\{method="GET",route="\/v1\/kv\/\{key\}",status="404"\} [1-9]\d*$/m);
    assert.match(text, /^mercury_http_requests_total\{method="POST",route="\/v1\/txn",status="415"\} [1-9]\d*$/m);
    assert.match(text, /^mercury_http_requests_total\{method="GET",route="unknown",status="404"\} [1-9]\d*$/m);
    assert.match(text, /^mercury_entries_written_total [1-9]\d*$/m);
    // Every sample line is "name{labels} number".
    for (const line of text.split('\n').filter((l) => l !== '' && !l.startsWith('#'))) assert.match(line, /^[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)+\})? -?[\d.e+-]+$/, line);
  });

  test('node log: no request in this suite caused an internal error', () => {
    assert.deepEqual(errorLog, []);
  });
});

describe('http api: log retention', () => {
  let dir: string;
  let node: MercuryNode;
  // The trimmer runs on the node's clock: the test fires it instead of waiting for its period.
  const clock = new ManualClock();

  before(async () => {
    dir = makeTempDir('http-trim');
    // Trimming in batches of 2 entries: the trimmer's loop over several transactions runs too.
    node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0, logRetainEntries: 5 }), { auth: 'off', clock, limits: withLimits(NODE_LIMITS, { log: { trimBatchEntries: 2 } }) });
  });

  after(async () => {
    await node.close();
    removeDir(dir);
  });

  test('log: seqs trimmed by retention are 410 SEQ_NOT_RETAINED; the retained log still verifies', async () => {
    for (let i = 0; i < 20; i++) await request(node.url, 'PUT', `/v1/kv/trim/${i}`, { body: `v${i}` });
    assert.equal((await requestJson<LogPage>(node.url, 'GET', '/v1/log?limit=1')).firstSeq, 1, 'nothing is trimmed before the trimmer runs');
    clock.advance(NODE_LIMITS.log.trimIntervalMs);
    // One run trims in several short transactions, yielding to the event loop between them.
    let firstSeq = 1;
    for (let turns = 0; firstSeq !== 16 && turns < 1_000; turns++) {
      await new Promise((resolve) => setImmediate(resolve));
      firstSeq = node.store.logBounds().firstSeq;
    }
    assert.equal(firstSeq, 16, 'five entries are retained');
    const error = assertError(await request(node.url, 'GET', '/v1/log?from=1'), 'SEQ_NOT_RETAINED');
    assert.equal(error.firstSeq, 16);
    // Not "was trimmed": a replica's log starts after the snapshot it joined from (retention audit, 2026-12-07).
    assert.equal(error.message, "seq 1 is not in this node's log, which starts at seq 16 (older entries were trimmed, or came before the snapshot it started from); read from 16, or take a snapshot");
    assertError(await request(node.url, 'GET', '/v1/log?from=15'), 'SEQ_NOT_RETAINED');
    const entries = await auditLog(node.url);
    assert.deepEqual(entries.map((entry) => entry.seq), [16, 17, 18, 19, 20]);
    const status = await requestJson<StatusJson>(node.url, 'GET', '/v1/status');
    assert.deepEqual([status.log.firstSeq, status.log.lastSeq, status.log.entries], [16, 20, 5]);
    // Trimming the log never touches the data.
    assert.equal(status.keys, 20);
    assert.equal((await request(node.url, 'GET', '/v1/kv/trim/0')).body.toString(), 'v0');
  });
});

describe('http api: timeouts', () => {
  let dir: string;
  let node: MercuryNode;
  let url: string;
  const errorLog: string[] = [];

  before(async () => {
    dir = makeTempDir('http-timeout');
    // The production timeouts are 10 s and 60 s; the node's limits take short ones.
    node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0 }), { auth: 'off',
      logger: recordingLogger(errorLog),
      limits: withLimits(NODE_LIMITS, { http: { firstByteTimeoutMs: 300, headersTimeoutMs: 300, requestTimeoutMs: 600 } }),
    });
    url = node.url;
  });

  after(async () => {
    await node.close();
    removeDir(dir);
  });

  const assertTimedOut = (text: string): void => {
    const response = parseRawResponse(text);
    assert.equal(response.status, 408);
    assert.equal((JSON.parse(response.body) as { error: { code: string } }).error.code, 'REQUEST_TIMEOUT');
  };

  test('http: a slow body is cut off by the request timeout with 408 and nothing is written', async () => {
    const started = performance.now();
    const trickle = Array.from({ length: 40 }, () => 'a');
    const text = await rawExchange(url, ['PUT /v1/kv/slow HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\n', ...trickle], { pauseMs: 100, timeoutMs: 5000 });
    const elapsed = performance.now() - started;
    assertTimedOut(text);
    assert.ok(elapsed >= 550 && elapsed < 2500, `cut off after ${elapsed} ms for a 600 ms request timeout`);
    assert.equal(node.store.get(Buffer.from('slow')).record, undefined);
  });

  test('http: an endless chunked body is cut off by the request timeout', async () => {
    // Whitespace: valid JSON so far, so the body reader waits for more rather than refusing it as it arrives.
    const chunks = Array.from({ length: 40 }, () => '1\r\n \r\n');
    assertTimedOut(await rawExchange(url, ['POST /v1/txn HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n', ...chunks], { pauseMs: 100 }));
  });

  test('http: slow headers are cut off by the headers timeout with 408', async () => {
    const started = performance.now();
    const text = await rawExchange(url, ['GET /healthz HTTP/1.1\r\n', ...Array.from({ length: 30 }, (_, i) => `x-${i}: y\r\n`)], { pauseMs: 100 });
    const elapsed = performance.now() - started;
    assertTimedOut(text);
    assert.ok(elapsed >= 250 && elapsed < 2000, `cut off after ${elapsed} ms for a 300 ms headers timeout`);
  });

  test('http: a request sent promptly is served normally', async () => {
    assert.equal((await request(url, 'PUT', '/v1/kv/prompt', { body: 'v' })).status, 200);
    assert.equal((await request(url, 'GET', '/v1/kv/prompt')).body.toString(), 'v');
  });

  test('node log: a cut-off request is not an internal error', () => {
    assert.deepEqual(errorLog, []);
  });
});

describe('http api: restart', () => {
  let dir: string;
  let node: MercuryNode | undefined;

  before(() => {
    dir = makeTempDir('http-restart');
  });

  after(async () => {
    await node?.close();
    removeDir(dir);
  });

  test('restart: close and start on the same directory keeps every key, seq, head hash and the log', async () => {
    node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0 }), { auth: 'off' });
    let url = node.url;
    for (let i = 0; i < 30; i++) await request(url, 'PUT', `/v1/kv/r/${i}`, { body: Buffer.from([i, 0xff, i]) });
    await request(url, 'DELETE', '/v1/kv/r/3');
    await request(url, 'DELETE', '/v1/kv?prefix=r/2');
    await request(url, 'POST', '/v1/txn', { body: JSON.stringify({ success: [{ op: 'put', key: 'r/txn', value: 'one' }] }), headers: JSON_TYPE });
    await request(url, 'PUT', '/v1/kv/r/5', { body: 'overwritten' });

    const snapshot = async (): Promise<{ status: StatusJson; keys: RangePageJson; log: unknown[] }> => {
      const status = await requestJson<StatusJson>(url, 'GET', '/v1/status');
      const keys = await requestJson<RangePageJson>(url, 'GET', '/v1/kv?prefix=r/&limit=10000');
      const log = await auditLog(url);
      return { status, keys, log };
    };
    const before = await snapshot();
    assert.equal(before.status.seq, 34);
    await node.close();
    node = undefined;

    node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0 }), { auth: 'off' });
    url = node.url;
    const afterwards = await snapshot();
    assert.equal(afterwards.status.seq, before.status.seq);
    assert.equal(afterwards.status.headHash, before.status.headHash);
    assert.equal(afterwards.status.datasetId, before.status.datasetId);
    assert.equal(afterwards.status.nodeId, before.status.nodeId);
    assert.deepEqual(afterwards.status.log, before.status.log);
    assert.equal(afterwards.status.keys, before.status.keys);
    assert.deepEqual(afterwards.keys, before.keys);
    assert.deepEqual(afterwards.log, before.log);

    // The chain continues from the old head.
    const next = await requestJson<{ seq: number }>(url, 'PUT', '/v1/kv/r/after', { body: 'x' });
    assert.equal(next.seq, before.status.seq + 1);
    const entry = await requestJson<LogPage>(url, 'GET', `/v1/log?from=${next.seq}`);
    assert.equal(entry.entries[0]!.prevHash, before.status.headHash);
    assert.ok(entry.entries[0]!.timeMs >= (before.log.at(-1) as { timeMs: number }).timeMs, 'with a steady clock, entry times go forward across a restart');
  });
});

describe('http api: overload and shutdown', () => {
  // The node's commit queue holds 50,000 requests; to reach its bound in a test, serve a store through the same API
  // with a committer whose queue holds one request.
  let dir: string;
  let store: Store;
  let committer: GroupCommitter;
  let server: Server;
  let url: string;
  const errorLog: string[] = [];

  before(async () => {
    dir = makeTempDir('http-overload');
    store = Store.open({ path: dir });
    const metrics = new Registry();
    committer = new GroupCommitter({ store, clock: systemClock, metrics, limits: { ...COMMIT_LIMITS, valueBytesMax: 1024, queueRequestsMax: 1 } });
    const waiter = new SeqWaiter(systemClock, () => store.head().seq);
    committer.onCommitted(() => waiter.notify());
    server = createHttpServer(
      createApiHandler({
        store,
        clock: systemClock,
        metrics,
        valueBytesMax: 1024,
        requestPolicy: OPEN_REQUEST_POLICY,
        write: (request) => committer.submit(request),
        waitForSeq: (seq, timeoutMs) => waiter.wait(seq, timeoutMs),
        status: () => ({ seq: store.head().seq }),
        readiness: () => ({ ready: true, reasons: [] }),
        resync: () => undefined,
        log: (message, fields) => errorLog.push(`${message} ${JSON.stringify(fields)}`),
        authenticate: () => undefined,
        currentPrincipal: () => undefined,
        tokens: () => [],
        unreadableTokens: () => [],
      }),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await committer.close();
    await store.close();
    removeDir(dir);
  });

  test('overload: writes beyond a full commit queue are 503 OVERLOADED with Retry-After; the rest commit', async (t) => {
    // Large transactions keep the committer busy (an in-thread commit blocks the event loop), so that the small
    // writes pile up behind them and find the one-request queue full. Whether a given round overflows depends on
    // scheduling, so rounds repeat (a few at most) until one does.
    const big = (round: number, part: number): string =>
      JSON.stringify({ success: Array.from({ length: 10_000 }, (_, i) => ({ op: 'put', key: `bulk/${round}/${part}/${i}`, value: 'x'.repeat(50) })) });
    let refusedTotal = 0;
    let acceptedTotal = 0;
    for (let round = 0; round < 5 && refusedTotal === 0; round++) {
      const bulk = [0, 1, 2].map((part) => request(url, 'POST', '/v1/txn', { body: big(round, part), headers: JSON_TYPE }));
      const responses = await Promise.all(Array.from({ length: 64 }, (_, i) => request(url, 'PUT', `/v1/kv/load/${round}/${i}`, { body: 'v' })));
      for (const response of await Promise.all(bulk)) assert.ok(response.status === 200 || response.status === 503, String(response.status));
      const refused = responses.filter((response) => response.status === 503);
      const accepted = responses.filter((response) => response.status === 200);
      t.diagnostic(`round ${round}: ${refused.length} of ${responses.length} small writes refused`);
      assert.equal(accepted.length + refused.length, responses.length, 'every write is committed or refused, nothing else');
      for (const response of refused) {
        assertError(response, 'OVERLOADED');
        assert.equal(response.headers['retry-after'], '1');
      }
      for (const response of accepted) {
        const { seq } = JSON.parse(response.body.toString()) as { seq: number };
        assert.ok(seq >= 1 && seq <= store.head().seq);
      }
      refusedTotal += refused.length;
      acceptedTotal += accepted.length;
    }
    assert.ok(refusedTotal > 0, 'a queue of one request overflows under concurrent writes');
    // Refused writes were not applied; accepted ones were.
    const page = await requestJson<RangePageJson>(url, 'GET', '/v1/kv?prefix=load/&limit=10000');
    assert.equal(page.items.length, acceptedTotal);
  });

  test('shutdown: a write after the committer closed is 503 SHUTTING_DOWN; reads still work', async () => {
    await committer.close();
    assertError(await request(url, 'PUT', '/v1/kv/late', { body: 'v' }), 'SHUTTING_DOWN');
    assertError(await request(url, 'POST', '/v1/txn', { body: '{"success":[{"op":"delete","key":"a"}]}', headers: JSON_TYPE }), 'SHUTTING_DOWN');
    assert.equal((await request(url, 'GET', '/healthz')).status, 200);
  });

  test('node log: overload and shutdown are not internal errors', () => {
    assert.deepEqual(errorLog, []);
  });
});

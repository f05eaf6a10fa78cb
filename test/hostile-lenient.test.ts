/**
 * Hostile input - leniency. Found by review on a real node: what a request misspelt was ignored, so the node ran
 * another request than the one meant. `{"op":"deleteRange","start":"b","End":"c"}` deleted every key from b on;
 * `"valueEncodng":"base64"` stored the base64 text; `PUT ?ifmodseq=0` overwrote unconditionally; `GET ?minseq=N`
 * answered at once; `{"success":[put],"success":[]}` dropped the put (the last name won); `timeoutMs=abc` was refused
 * only when the node had to wait. HEAD, which HTTP asks of every GET resource, was 405.
 *
 * Now each is refused with a code and a message naming what to fix, and HEAD is served as GET without the body.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../src/node/index.js';
import { assertError, request } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';

const JSON_TYPE = { 'content-type': 'application/json' };

describe('hostile input - leniency', () => {
  const dir = makeTempDir('hostile-lenient');
  let node: MercuryNode;
  before(async () => {
    node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'node'), port: 0 }), { limits: NODE_LIMITS_TEST, auth: 'off' });
    for (const key of ['a', 'b', 'c', 'd', 'zz']) assert.equal((await request(node.url, 'PUT', `/v1/kv/${key}`, { body: 'v' })).status, 200);
  });
  after(async () => {
    await node?.close();
    removeDir(dir);
  });
  const seq = (): number => node.store.head().seq;
  const txn = (body: unknown): ReturnType<typeof request> => request(node.url, 'POST', '/v1/txn', { headers: JSON_TYPE, body: typeof body === 'string' ? body : JSON.stringify(body) });

  test('lenient: an unknown field of an op or a compare is refused with INVALID_ARGUMENT naming it', async () => {
    const before = seq();
    const refused: [unknown, RegExp][] = [
      [{ success: [{ op: 'deleteRange', start: 'b', End: 'c' }] }, /^success\[0\]: unknown field "End"; a deleteRange op has op, start, startEncoding, startBase64, end, endEncoding, endBase64$/],
      [{ success: [{ op: 'put', key: 'k1', value: 'eA==', valueEncodng: 'base64' }] }, /^success\[0\]: unknown field "valueEncodng"/],
      [{ failure: [{ op: 'delete', key: 'a', value: 'x' }] }, /^failure\[0\]: unknown field "value"; a delete op has/],
      [{ success: [{ op: 'deletePrefix', prefix: 'a', end: 'b' }] }, /^success\[0\]: unknown field "end"; a deletePrefix op has/],
      [{ success: [{ op: 'put', key: 'a', value: 'x', ifModSeq: 0 }] }, /^success\[0\]: unknown field "ifModSeq"/],
      [{ compare: [{ key: 'a', modseq: 0 }], success: [{ op: 'put', key: 'a', value: 'x' }] }, /^compare\[0\]: unknown field "modseq"; a compare has/],
      [{ compare: [{ key: 'a', version: 1, opp: '>' }] }, /^compare\[0\]: unknown field "opp"/],
    ];
    for (const [body, message] of refused) {
      const error = assertError(await txn(body), 'INVALID_ARGUMENT', 400);
      assert.match(error.message, message, JSON.stringify(body));
    }
    assert.equal(seq(), before, 'nothing committed');
    assert.equal(node.store.get(Buffer.from('c')).record?.value.toString(), 'v');
    // Every field the JSON form defines is still taken.
    const fine = await txn({
      compare: [{ keyBase64: 'YQ==', valueEncoding: 'utf8', value: 'v', op: '=' }, { key: 'a', keyEncoding: 'utf8', exists: true }],
      success: [{ op: 'put', keyBase64: 'azE=', valueBase64: 'eA==' }, { op: 'deleteRange', startBase64: 'eQ==', endEncoding: 'utf8', end: 'yz' }, { op: 'deletePrefix', prefixEncoding: 'utf8', prefix: 'q' }],
    });
    assert.equal(fine.status, 200, fine.body.toString());
    assert.equal(node.store.get(Buffer.from('k1')).record?.value.toString(), 'x');
  });

  test('lenient: an unknown query parameter is refused with INVALID_ARGUMENT naming it and the allowed ones', async () => {
    const before = seq();
    const refused: [string, string, RegExp][] = [
      ['PUT', '/v1/kv/a?ifmodseq=0', /^unknown query parameter "ifmodseq": PUT \/v1\/kv\/\{key\} takes ifModSeq \(names are case-sensitive\)$/],
      ['DELETE', '/v1/kv/a?ifModseq=3', /"ifModseq": DELETE \/v1\/kv\/\{key\} takes ifModSeq/],
      ['GET', '/v1/kv/a?minseq=999999', /"minseq": GET \/v1\/kv\/\{key\} takes minSeq, timeoutMs/],
      ['GET', '/v1/kv?prefix=a&limt=1', /"limt": GET \/v1\/kv takes prefix, limit, cursor, minSeq, timeoutMs/],
      ['DELETE', '/v1/kv?prefix=a&limit=1', /"limit": DELETE \/v1\/kv takes prefix/],
      ['GET', '/v1/log?form=1', /"form": GET \/v1\/log takes from, limit/],
      ['GET', '/v1/status?verbose', /"verbose": GET \/v1\/status takes no query parameters/],
      ['GET', '/healthz?x=1', /"x": GET \/healthz takes no query parameters/],
      ['POST', '/v1/txn?ifModSeq=0', /"ifModSeq": POST \/v1\/txn takes no query parameters/],
    ];
    for (const [method, path, message] of refused) {
      const response = await request(node.url, method, path, method === 'PUT' ? { body: 'overwritten' } : method === 'POST' ? { headers: JSON_TYPE, body: '{}' } : {});
      assert.match(assertError(response, 'INVALID_ARGUMENT', 400).message, message, `${method} ${path}`);
    }
    assert.equal(seq(), before, 'nothing committed');
    assert.equal(node.store.get(Buffer.from('a')).record?.value.toString(), 'v');
    // The parameters a route defines are still read.
    assertError(await request(node.url, 'PUT', '/v1/kv/a?ifModSeq=0', { body: 'x' }), 'COMPARE_FAILED');
    assertError(await request(node.url, 'GET', `/v1/kv/a?minSeq=${seq() + 1000}&timeoutMs=10`), 'SEQ_WAIT_TIMEOUT');
    assert.equal((await request(node.url, 'GET', '/v1/kv?prefix=a&limit=1&minSeq=1&timeoutMs=10')).status, 200);
  });

  test('lenient: timeoutMs is checked whether or not the node must wait', async () => {
    for (const minSeq of [1, seq() + 1000]) {
      for (const path of [`/v1/kv/a?minSeq=${minSeq}&timeoutMs=abc`, `/v1/kv?minSeq=${minSeq}&timeoutMs=999999999`]) {
        const error = assertError(await request(node.url, 'GET', path), 'INVALID_ARGUMENT', 400);
        assert.match(error.message, /timeoutMs must be/, path);
      }
    }
    assertError(await request(node.url, 'GET', '/v1/kv/a?timeoutMs='), 'INVALID_ARGUMENT');
  });

  test('lenient: a JSON member name given twice is refused with INVALID_JSON naming it; nothing is committed', async () => {
    const before = seq();
    const error = assertError(await txn('{"success":[{"op":"put","key":"dup","value":"x"}],"success":[]}'), 'INVALID_JSON', 400);
    assert.match(error.message, /member name "success" twice in one object/);
    assert.match(assertError(await txn('{"success":[{"op":"put","key":"dup","key":"other","value":"x"}]}'), 'INVALID_JSON').message, /"key" twice/);
    assert.match(assertError(await txn('{"success":[{"op":"put","key":"dup","\\u006bey":"other","value":"x"}]}'), 'INVALID_JSON').message, /"key" twice/);
    assert.equal(seq(), before);
    assert.equal(node.store.get(Buffer.from('dup')).record, undefined);
  });

  test('lenient: HEAD is served as GET without a body, and listed in Allow', async () => {
    for (const path of ['/v1/kv/a', '/v1/status', '/healthz', '/readyz', '/v1/kv?prefix=a', '/v1/log', '/v1/snapshot', '/v1/snapshot/entries']) {
      // /v1/status carries uptimeMs, whose digits can grow between two requests (999 -> 1000): the HEAD is taken
      // between two GETs and its length must lie between theirs, which is exact whenever the two GETs agree.
      const get = await request(node.url, 'GET', path);
      const head = await request(node.url, 'HEAD', path);
      const getAfter = await request(node.url, 'GET', path);
      assert.equal(head.status, get.status, path);
      assert.equal(head.body.length, 0, path);
      assert.equal(head.headers['content-type'], get.headers['content-type'], path);
      if (get.headers['content-length'] !== undefined) {
        const [low, length, high] = [get, head, getAfter].map((answer) => Number(answer.headers['content-length'])) as [number, number, number];
        assert.ok(low <= length && length <= high, `${path}: HEAD Content-Length ${length} is not between the GETs' ${low} and ${high}`);
      }
    }
    assert.equal((await request(node.url, 'HEAD', '/v1/kv/missing')).status, 404);
    assert.equal((await request(node.url, 'HEAD', '/v1/kv/a?minseq=1')).status, 400, 'the same parameters as GET');
    const refused = await request(node.url, 'PATCH', '/v1/kv/a');
    assertError(refused, 'METHOD_NOT_ALLOWED');
    assert.equal(refused.headers.allow, 'GET, HEAD, PUT, DELETE');
    assert.equal((await request(node.url, 'PUT', '/v1/status')).headers.allow, 'GET, HEAD, OPTIONS');
    assert.equal((await request(node.url, 'GET', '/v1/txn')).headers.allow, 'POST');
  });
});

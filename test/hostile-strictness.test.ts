/**
 * Hostile input - strictness. Found on a real node: `?prefix=a%zz` was accepted while the path refuses `%zz`; an empty
 * `ifModSeq=` meant 0 (only if absent); a `deleteRange` with start > end committed an empty entry; a `CONNECT` was
 * dropped without a reply; after 20 pipelined PUTs followed by garbage, all 20 were committed but the client received
 * one 400. (Invalid UTF-8 in transaction JSON is the body parser's, tested with it.)
 *
 * Now each is refused with a stable code and a message saying what to send instead, and pipelined requests before
 * garbage are each answered, in order, before the 400 and the close.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../src/node/index.js';
import { assertError, parseRawResponse, parseRawResponses, rawExchange, request } from './support/http.js';
import { assertHealthzAnswers } from './support/hostile.js';
import { makeTempDir, removeDir } from './support/process.js';

const PIPELINED_PUTS = 20;

describe('hostile input - strictness', () => {
  const dir = makeTempDir('hostile-strictness');
  let node: MercuryNode;
  after(async () => {
    await node?.close();
    removeDir(dir);
  });
  const seq = (): number => node.store.head().seq;

  test('strict: a malformed percent-escape in the query is refused like in the path; a prefix is bytes like a key', async () => {
    node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'node'), port: 0 }), { limits: NODE_LIMITS_TEST, auth: 'off' });
    for (const key of ['a%zz', 'a\u00ff', 'a b+c']) assert.equal((await request(node.url, 'PUT', `/v1/kv/${encodeURIComponent(key)}`, { body: 'v' })).status, 200);
    assert.equal((await request(node.url, 'PUT', '/v1/kv/b%ff', { body: 'byte' })).status, 200);
    const before = seq();
    for (const [method, path] of [
      ['GET', '/v1/kv?prefix=a%zz'],
      ['GET', '/v1/kv?prefix=a%z'],
      ['GET', '/v1/kv?prefix=a%'],
      ['DELETE', '/v1/kv?prefix=a%zz'],
      ['GET', '/v1/kv/a%zz'],
      ['GET', '/v1/log?from=1%'],
    ] as const) {
      const error = assertError(await request(node.url, method, path), 'BAD_REQUEST', 400);
      assert.match(error.message, /malformed percent-encoding "%z?z?".*two hex digits/, `${method} ${path}: ${error.message}`);
    }
    assert.equal(seq(), before, 'the refused DELETE deleted nothing');
    // Escapes are bytes (not UTF-8 text with U+FFFD for what is not UTF-8), + is a space, as the client sends them.
    const page = async (query: string): Promise<string[]> =>
      (JSON.parse((await request(node.url, 'GET', `/v1/kv?${query}`)).body.toString()) as { items: { key: string; keyEncoding: string }[] }).items.map((item) =>
        Buffer.from(item.key, item.keyEncoding as BufferEncoding).toString('latin1'),
      );
    assert.deepEqual(await page('prefix=b%ff'), ['b\u00ff']);
    assert.deepEqual(await page('prefix=a%25'), ['a%zz']);
    assert.deepEqual(await page('prefix=a+b'), ['a b+c']);
    assertError(await request(node.url, 'GET', '/v1/kv?prefix=a&prefix=b'), 'BAD_REQUEST');
  });

  test('strict: an empty ifModSeq= (or any empty number) is refused, not taken as 0', async () => {
    const before = seq();
    // As found: `PUT ?ifModSeq=` on a missing key succeeded, as "only if absent".
    const error = assertError(await request(node.url, 'PUT', '/v1/kv/cas/new?ifModSeq=', { body: 'v' }), 'INVALID_ARGUMENT', 400);
    assert.match(error.message, /ifModSeq is empty; give a non-negative integer, or leave the parameter out/);
    assertError(await request(node.url, 'DELETE', '/v1/kv/a%25zz?ifModSeq='), 'INVALID_ARGUMENT');
    for (const path of ['/v1/kv?prefix=a&limit=', '/v1/log?from=', '/v1/kv/a%25zz?minSeq='])
      assert.match(assertError(await request(node.url, 'GET', path), 'INVALID_ARGUMENT').message, /is empty/, path);
    assert.equal(seq(), before);
    assert.equal(node.store.get(Buffer.from('a%zz')).record?.value.toString(), 'v');
    assert.equal((await request(node.url, 'PUT', '/v1/kv/cas/new?ifModSeq=0', { body: 'v' })).status, 200, 'ifModSeq=0 still means only if absent');
  });

  test('strict: a deleteRange whose end does not sort after its start is refused, not committed as an empty entry', async () => {
    const before = seq();
    for (const [start, end] of [
      ['b', 'a'],
      ['a', 'a'],
      ['ab', 'a'],
    ]) {
      const response = await request(node.url, 'POST', '/v1/txn', {
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ success: [{ op: 'put', key: 'range/x', value: 'v' }, { op: 'deleteRange', start, end }] }),
      });
      const error = assertError(response, 'INVALID_ARGUMENT', 400);
      assert.match(error.message, /^success\[1\]: deleteRange deletes the keys k with start <= k < end, so end must sort after start/);
    }
    assert.equal(seq(), before, 'nothing committed, not even the put beside it');
    const unbounded = await request(node.url, 'POST', '/v1/txn', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ success: [{ op: 'deleteRange', start: 'zz', end: '' }] }) });
    assert.equal(unbounded.status, 200, 'an empty end still means no upper bound');
  });

  test('strict: a request with two Host headers is refused 400 (RFC 9112), whatever the second names', async () => {
    // Found by review: the second Host line was ignored, so a proxy in front and the node could each read another name.
    const host = new URL(node.url).host;
    for (const second of [host, 'evil.example']) {
      const response = parseRawResponse(await rawExchange(node.url, `GET /v1/status HTTP/1.1\r\nhost: ${host}\r\nhost: ${second}\r\nconnection: close\r\n\r\n`));
      assert.equal(response.status, 400, second);
      const error = (JSON.parse(response.body) as { error: { code: string; message: string } }).error;
      assert.equal(error.code, 'BAD_REQUEST');
      assert.match(error.message, /more than one Host header/);
    }
    const one = parseRawResponse(await rawExchange(node.url, `GET /healthz HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\n\r\n`));
    assert.equal(one.status, 200);
  });

  test('strict: an absolute-form target (RFC 9112 3.2.2) is served, its host judged instead of Host; user information is refused', async () => {
    // Found by review: `GET http://node/v1/kv/a` (what a client configured with a proxy sends) was answered 404.
    const host = new URL(node.url).host;
    assert.equal((await request(node.url, 'PUT', '/v1/kv/absolute', { body: 'abs' })).status, 200);
    const served = parseRawResponse(await rawExchange(node.url, `GET http://${host}/v1/kv/absolute?timeoutMs=100 HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\n\r\n`));
    assert.equal(served.status, 200, served.body);
    assert.equal(served.body, 'abs');
    // The target's name is the request's host, whatever the Host header says, both ways.
    const rebound = parseRawResponse(await rawExchange(node.url, `GET HTTP://evil.example:${new URL(node.url).port}/v1/kv/absolute HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\n\r\n`));
    assert.equal(rebound.status, 403, rebound.body);
    assert.equal((JSON.parse(rebound.body) as { error: { code: string } }).error.code, 'HOST_NOT_ALLOWED');
    const allowed = parseRawResponse(await rawExchange(node.url, `GET http://${host}/healthz HTTP/1.1\r\nhost: evil.example\r\nconnection: close\r\n\r\n`));
    assert.equal(allowed.status, 200, allowed.body);
    for (const target of [`http://user:pw@${host}/v1/kv/absolute`, 'http:///v1/kv/absolute']) {
      const refused = parseRawResponse(await rawExchange(node.url, `GET ${target} HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\n\r\n`));
      assert.equal(refused.status, 400, target);
      assert.match((JSON.parse(refused.body) as { error: { message: string } }).error.message, /not a usable http\(s\) URL/);
    }
  });

  test('strict: CONNECT is answered 405 METHOD_NOT_ALLOWED with a JSON body, not dropped', async () => {
    const text = await rawExchange(node.url, 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nhost: 127.0.0.1:22\r\n\r\n');
    const response = parseRawResponse(text);
    assert.equal(response.status, 405);
    assert.equal(response.headers.connection, 'close');
    assert.match(response.headers.allow!, /GET/);
    const error = (JSON.parse(response.body) as { error: { code: string; message: string } }).error;
    assert.equal(error.code, 'METHOD_NOT_ALLOWED');
    assert.match(error.message, /CONNECT is not supported: a Mercury node is not a proxy/);
    await assertHealthzAnswers(node.url, 'after a CONNECT');
  });

  // Found by an audit (2026-12-06): a GET pipelined after a PUT of the same key ran beside it and answered 404.
  test('strict: pipelined requests see the writes before them on the connection, and none after (RFC 9112, 9.3.2)', async () => {
    const key = '/v1/kv/pipe-order';
    const get = `GET ${key} HTTP/1.1\r\nhost: localhost\r\n\r\n`;
    const put = (value: string): string => `PUT ${key} HTTP/1.1\r\nhost: localhost\r\ncontent-length: ${value.length}\r\n\r\n${value}`;
    const pipeline = get + put('one') + get + get + put('two') + get + `DELETE ${key} HTTP/1.1\r\nhost: localhost\r\n\r\n` + get + `GET ${key} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n`;
    const responses = parseRawResponses(await rawExchange(node.url, pipeline, { timeoutMs: 10_000 }));
    assert.deepEqual(
      responses.map((response) => `${response.status} ${response.status === 200 && !response.body.startsWith('{') ? response.body : ''}`.trim()),
      ['404', '200', '200 one', '200 one', '200', '200 two', '200', '404', '404'],
    );
    await assertHealthzAnswers(node.url, 'after ordered pipelining');
  });

  test('strict: pipelined PUTs followed by garbage: each PUT is answered in order, then a 400, then the connection closes', async () => {
    let pipeline = '';
    for (let i = 0; i < PIPELINED_PUTS; i++) pipeline += `PUT /v1/kv/pipe/${i} HTTP/1.1\r\nhost: localhost\r\ncontent-length: ${String(i).length}\r\n\r\n${i}`;
    pipeline += '\x16\x03\x01 garbage that is not HTTP\r\n\r\n';
    const responses = parseRawResponses(await rawExchange(node.url, pipeline, { timeoutMs: 10_000 }));
    assert.equal(responses.length, PIPELINED_PUTS + 1, responses.map((response) => response.statusLine).join(' | '));
    const seqs: number[] = [];
    for (const [i, response] of responses.slice(0, PIPELINED_PUTS).entries()) {
      assert.equal(response.status, 200, `PUT ${i}: ${response.body}`);
      const answered = (JSON.parse(response.body) as { seq: number }).seq;
      assert.equal(response.headers['x-mercury-seq'], String(answered));
      seqs.push(answered);
    }
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'answered in order');
    const last = responses[PIPELINED_PUTS]!;
    assert.equal(last.status, 400);
    assert.equal(last.headers.connection, 'close');
    assert.equal((JSON.parse(last.body) as { error: { code: string } }).error.code, 'BAD_REQUEST');
    // Every answered write is committed, with the seq it was answered with.
    for (let i = 0; i < PIPELINED_PUTS; i++) {
      const response = await request(node.url, 'GET', `/v1/kv/pipe/${i}`);
      assert.equal(response.body.toString(), String(i));
      assert.ok(Number(response.headers['x-mercury-mod-seq']) === seqs[i], `pipe/${i} modSeq ${String(response.headers['x-mercury-mod-seq'])}, answered ${seqs[i]}`);
    }
    await assertHealthzAnswers(node.url, 'after pipelined garbage');
  });
});

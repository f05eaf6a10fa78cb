/**
 * Hostile input - attacks from a browser, and naming. Found on a real node: `POST /v1/txn` without a Content-Type was
 * committed, so any web page could write to a node on localhost (a browser sends such a request without asking the
 * node first); the watch endpoint accepted a foreign `Origin` and streamed every key; any `Host` was accepted (DNS
 * rebinding); and `--listen 0.0.0.0:P` advertised `http://0.0.0.0:P` to children for write forwarding, so a replica on
 * another host forwarded writes to itself.
 *
 * Now: a transaction needs `Content-Type: application/json` (415 UNSUPPORTED_MEDIA_TYPE); a request or watch from a
 * page of another origin is refused (403 ORIGIN_NOT_ALLOWED) unless `--allowed-origins` lists it; a Host that is not
 * an IP, localhost, the node's own name or in `--allowed-hosts` is refused (403 HOST_NOT_ALLOWED); and a node that
 * would advertise an unspecified address refuses to start, naming `--advertise-url`.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { WebSocket } from 'ws';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../src/node/index.js';
import { assertError, parseRawResponse, rawExchange, request, type HttpResponse } from './support/http.js';
import { assertHealthzAnswers } from './support/hostile.js';
import { freePort } from './support/net.js';
import { makeTempDir, removeDir, runCli } from './support/process.js';
import { eventually } from './support/tree.js';
import { watchUrl } from './support/watch.js';

const EVIL = 'https://evil.example';

/** Opens a watch with the given Origin; resolves with the refusal (status and JSON body) or 'open'. */
function tryWatch(url: string, headers: { origin?: string; host?: string }): Promise<'open' | HttpResponse> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(watchUrl(url), { perMessageDeflate: false, ...(headers.origin === undefined ? {} : { origin: headers.origin }), headers: headers.host === undefined ? {} : { host: headers.host } });
    socket.once('open', () => {
      socket.terminate();
      resolve('open');
    });
    socket.once('unexpected-response', (_req, res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    socket.once('error', (error) => {
      if (!/Unexpected server response/.test(error.message)) reject(error);
    });
  });
}

/** A write as a web page sends it: `fetch(url, {method: 'POST', mode: 'no-cors', body})` (text/plain, with Origin). */
function rawTxn(url: string, headers: string, body: string): Promise<string> {
  return rawExchange(url, `POST /v1/txn HTTP/1.1\r\nhost: ${new URL(url).host}\r\n${headers}content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}

describe('hostile input - browsers and naming', () => {
  const dir = makeTempDir('hostile-browser');
  const nodes: MercuryNode[] = [];
  after(async () => {
    for (const node of nodes.reverse()) await node.close();
    removeDir(dir);
  });
  const start = async (name: string, config: Parameters<typeof validateConfig>[0] = {}): Promise<MercuryNode> => {
    const node = await MercuryNode.start(validateConfig({ dataDir: join(dir, name), port: 0, ...config }), { limits: NODE_LIMITS_TEST, auth: 'off' });
    nodes.push(node);
    return node;
  };
  const body = (key: string): string => JSON.stringify({ success: [{ op: 'put', key, value: 'from a web page' }] });
  const exists = (node: MercuryNode, key: string): boolean => node.store.get(Buffer.from(key)).record !== undefined;

  let node: MercuryNode;

  test('browser: a transaction without Content-Type: application/json is refused 415; nothing is committed', async () => {
    node = await start('node');
    assert.equal((await request(node.url, 'PUT', '/v1/kv/acknowledged', { body: 'kept' })).status, 200);
    // The attack as found: a page's no-cors fetch (or a form) sends text/plain or no type at all.
    for (const headers of ['', 'content-type: text/plain;charset=UTF-8\r\n', 'content-type: application/x-www-form-urlencoded\r\n']) {
      const response = parseRawResponse(await rawTxn(node.url, headers, body('web/typeless')));
      assert.equal(response.status, 415, response.body);
      const error = (JSON.parse(response.body) as { error: { code: string; message: string } }).error;
      assert.equal(error.code, 'UNSUPPORTED_MEDIA_TYPE');
      assert.match(error.message, /Content-Type: application\/json/);
    }
    await assertHealthzAnswers(node.url, 'after typeless transactions');
    assert.equal(exists(node, 'web/typeless'), false, 'nothing was committed');
    // Declared JSON is accepted (clients, the CLI and write forwarding all declare it).
    assert.equal(parseRawResponse(await rawTxn(node.url, 'content-type: application/json\r\n', body('web/json'))).status, 200);
  });

  // Found by an audit (2026-12-06): with --auth off, another site's <script src> of a value holding JavaScript ran it in
  // its page (Chromium sniffs application/octet-stream), reading the value.
  test('browser: every answer, value, JSON or error, says nosniff, so no value runs as another site\'s script', async () => {
    assert.equal((await request(node.url, 'PUT', '/v1/kv/app.js', { body: 'window.leaked = {"db_password":"s3cret"}' })).status, 200);
    for (const [method, path] of [['GET', '/v1/kv/app.js'], ['GET', '/v1/kv?prefix=app'], ['GET', '/v1/kv/missing'], ['GET', '/v1/status'], ['DELETE', '/v1/nowhere']] as const) {
      const response = await request(node.url, method, path);
      assert.equal(response.headers['x-content-type-options'], 'nosniff', `${method} ${path} answered ${response.status} without nosniff`);
    }
  });

  test('browser: a request from a page of another origin is refused 403 ORIGIN_NOT_ALLOWED; the node\'s own origin is served', async () => {
    const response = parseRawResponse(await rawTxn(node.url, `origin: ${EVIL}\r\ncontent-type: application/json\r\n`, body('web/cross')));
    assert.equal(response.status, 403, response.body);
    const error = (JSON.parse(response.body) as { error: { code: string; message: string } }).error;
    assert.equal(error.code, 'ORIGIN_NOT_ALLOWED');
    assert.match(error.message, /--allowed-origins https:\/\/evil\.example/);
    // A simple POST needs no preflight: resync must not be reachable from a page either.
    assertError(await request(node.url, 'POST', '/v1/replication/resync', { headers: { origin: EVIL } }), 'ORIGIN_NOT_ALLOWED', 403);
    assertError(await request(node.url, 'DELETE', '/v1/kv?prefix=web/', { headers: { origin: EVIL } }), 'ORIGIN_NOT_ALLOWED', 403);
    assert.equal(exists(node, 'web/cross'), false);
    // The node's own origin (same host and port as Host, as when it serves a page itself).
    const own = await request(node.url, 'POST', '/v1/txn', { body: body('web/own'), headers: { 'content-type': 'application/json', origin: node.url } });
    assert.equal(own.status, 200, own.body.toString());
    assertError(
      await request(node.url, 'POST', '/v1/txn', { body: body('web/other-port'), headers: { 'content-type': 'application/json', origin: 'http://127.0.0.1:1' } }),
      'ORIGIN_NOT_ALLOWED',
    );
  });

  test('browser: a watch from a foreign Origin is refused 403 before it can stream; the own origin and listed origins watch', async () => {
    const refused = await tryWatch(node.url, { origin: EVIL });
    assert.notEqual(refused, 'open', 'the watch of a foreign page was accepted');
    assertError(refused as HttpResponse, 'ORIGIN_NOT_ALLOWED', 403);
    assert.match((refused as HttpResponse).body.toString(), /--allowed-origins/);
    assert.equal(await tryWatch(node.url, { origin: node.url }), 'open');
    assert.equal(await tryWatch(node.url, {}), 'open', 'programs send no Origin');
    const dashboard = await start('dashboard', { allowedOrigins: ['https://Dash.Example.com/'] });
    assert.equal(await tryWatch(dashboard.url, { origin: 'https://dash.example.com' }), 'open');
    assertError((await tryWatch(dashboard.url, { origin: EVIL })) as HttpResponse, 'ORIGIN_NOT_ALLOWED');
    await assertHealthzAnswers(node.url, 'after refused watches');
  });

  test('browser: an unexpected Host (DNS rebinding) is refused 403 HOST_NOT_ALLOWED on reads, writes and watches', async () => {
    const rebound = 'evil.example:80';
    const read = assertError(await request(node.url, 'GET', '/v1/kv/acknowledged', { headers: { host: rebound } }), 'HOST_NOT_ALLOWED', 403);
    assert.match(read.message, /--allowed-hosts evil\.example/);
    assertError(await request(node.url, 'PUT', '/v1/kv/web/rebound', { body: 'x', headers: { host: rebound } }), 'HOST_NOT_ALLOWED');
    assertError((await tryWatch(node.url, { host: rebound })) as HttpResponse, 'HOST_NOT_ALLOWED');
    assert.equal(exists(node, 'web/rebound'), false);
    // Expected by default: IP literals, localhost and its subdomains, with any port.
    for (const host of ['127.0.0.1', `127.0.0.1:${new URL(node.url).port}`, '[::1]:7070', 'localhost', 'LOCALHOST.:9', 'app.localhost'])
      assert.equal((await request(node.url, 'GET', '/v1/kv/acknowledged', { headers: { host } })).status, 200, host);
    // --allowed-hosts: a name, or every name under a domain; the node's own listen and advertised names.
    const named = await start('named', { allowedHosts: ['.corp.example', 'mercury.example.com'] });
    for (const host of ['mercury.example.com:7070', 'a.b.corp.example', 'corp.example'])
      assert.equal((await request(named.url, 'GET', '/healthz', { headers: { host } })).status, 200, host);
    for (const host of ['example.com', 'corp.example.evil.example', 'mercury.example.com.evil.example'])
      assertError(await request(named.url, 'GET', '/healthz', { headers: { host } }), 'HOST_NOT_ALLOWED');
    const port = await freePort();
    const advertised = await start('advertised', { port, advertiseUrl: `http://node-7.mercury.example:${port}` });
    assert.equal((await request(advertised.url, 'GET', '/healthz', { headers: { host: `node-7.mercury.example:${port}` } })).status, 200);
    const open = await start('open', { allowedHosts: ['*'] });
    assert.equal((await request(open.url, 'GET', '/healthz', { headers: { host: 'anything.example' } })).status, 200);
    assert.equal((await request(node.url, 'GET', '/v1/kv/acknowledged')).body.toString(), 'kept');
  });

  test('naming: a node that would advertise an unspecified address refuses to start and names --advertise-url', async () => {
    for (const args of [['--listen', '0.0.0.0:7999'], ['--listen', '[::]:7999']]) {
      const result = await runCli(['serve', '--data-dir', join(dir, 'unspecified'), ...args]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, /^mercury: CONFIG_INVALID: --listen .*:7999 listens on every address.*--advertise-url http:\/\/NAME:7999/);
    }
    const result = await runCli(['serve', '--data-dir', join(dir, 'unspecified'), '--listen', '0.0.0.0:7999', '--advertise-url', 'http://0.0.0.0:7999']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /CONFIG_INVALID: --advertise-url http:\/\/0\.0\.0\.0:7999 names the unspecified address/);
    for (const bad of ['ftp://node:1', 'http://node:1/path', 'node:7070'])
      assert.match((await runCli(['serve', '--data-dir', join(dir, 'unspecified'), '--advertise-url', bad])).stderr, /CONFIG_INVALID: advertiseUrl \(--advertise-url\) must be/);
  });

  test('naming: a root on 0.0.0.0 advertises --advertise-url; a replica forwards writes there; replication binds its own address', async () => {
    const port = await freePort();
    // --insecure: plaintext on every address is refused otherwise (not what this test is about).
    const root = await start('root', { host: '0.0.0.0', port, advertiseUrl: `http://localhost:${port}`, replicationHost: '127.0.0.2', replicationPort: 0, insecure: true });
    assert.match(root.replicationAddress, /^127\.0\.0\.2:\d+$/, 'the replication port binds on its own address');
    assert.equal((root.status() as { advertisedUrl: string }).advertisedUrl, `http://localhost:${port}`);
    const replica = await start('replica', { upstreams: [root.replicationAddress] });
    await eventually(
      () => Promise.resolve(replica.replicationClient!.status().phase === 'streaming'),
      () => JSON.stringify(replica.replicationClient!.status()),
    );
    assert.equal(replica.replicationClient!.status().upstreamHttpUrl, `http://localhost:${port}`, 'children forward to the advertised URL');
    // Forwarded under the advertised name, which the root answers to as its own.
    const write = await request(replica.url, 'PUT', '/v1/kv/forwarded', { body: 'via the advertised url' });
    assert.equal(write.status, 200, write.body.toString());
    assert.equal((await request(`http://127.0.0.1:${port}`, 'GET', '/v1/kv/forwarded')).body.toString(), 'via the advertised url');
    assert.equal((await request(replica.url, 'GET', '/v1/kv/forwarded')).body.toString(), 'via the advertised url');
  });
});

/**
 * A request that asks for an Upgrade this node does not speak (`curl --http2` on plain HTTP sends "Upgrade: h2c") is
 * answered as the HTTP/1.1 request it also is (RFC 9110 lets a server ignore the header). node:http hands every such
 * request to the watch hub's upgrade listener, which answered 404 "no WebSocket endpoint" on every route (found by
 * review, 2026-12-03). One with a body is refused precisely, and a WebSocket upgrade elsewhere than /v1/watch is still
 * a 404.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from './support/http.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';

/** Sends `text` and resolves with everything the node sent until it closed the connection. */
function exchange(baseUrl: string, text: string): Promise<string> {
  const url = new URL(baseUrl);
  return new Promise((resolve) => {
    const socket = connect(Number(url.port), url.hostname);
    let out = '';
    socket.on('data', (data: Buffer) => (out += data.toString('latin1')));
    socket.on('error', () => resolve(out));
    socket.on('close', () => resolve(out));
    socket.write(text);
    setTimeout(() => socket.destroy(), 5_000);
  });
}

describe('requests with an Upgrade the node does not speak', () => {
  const dir = makeTempDir('upgrade-ignored');
  let node: ServeProcess;
  before(async () => {
    node = await startServe(join(dir, 'node'));
    assert.equal((await request(node.url, 'PUT', '/v1/kv/k', { body: 'value' })).status, 200);
  });
  after(async () => {
    await stopProcess(node.child);
    removeDir(dir);
  });

  test('a GET asking for h2c is served as HTTP/1.1, and the connection closed after it', async () => {
    const host = new URL(node.url).host;
    const answer = await exchange(node.url, `GET /v1/kv/k HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n`);
    assert.match(answer, /^HTTP\/1\.1 200 /);
    assert.match(answer, /\r\nconnection: close\r\n/i);
    assert.ok(answer.endsWith('\r\n\r\nvalue'), JSON.stringify(answer));
  });

  test('one with a body is refused 400 saying to drop the header; a WebSocket upgrade elsewhere is still 404', async () => {
    const host = new URL(node.url).host;
    const put = await exchange(node.url, `PUT /v1/kv/k2 HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: foo\r\nContent-Length: 1\r\n\r\nx`);
    assert.match(put, /^HTTP\/1\.1 400 /);
    assert.match(put, /without the Upgrade header/);
    assert.equal((await request(node.url, 'GET', '/v1/kv/k2')).status, 404);
    const ws = await exchange(
      node.url,
      `GET /v1/kv/k HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
    );
    assert.match(ws, /^HTTP\/1\.1 404 /);
    assert.match(ws, /no WebSocket endpoint/);
  });
});

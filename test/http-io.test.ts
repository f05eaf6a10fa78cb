/**
 * sendJson on a real HTTP server: a large body goes out in pieces a turn apart (src/server/http-io.ts), and arrives
 * whole, with a content-length that matches it, even where a piece boundary falls inside a surrogate pair.
 */
import assert from 'node:assert/strict';
import { createServer, get, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { JSON_PIECE_CHARS, sendJson } from '../src/server/http-io.js';

let server: Server;
let body: unknown;
let sent = 0;

before(async () => {
  server = createServer((_req, res) => {
    sent++;
    sendJson(res, 200, body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
});
after(() => new Promise<void>((resolve) => server.close(() => resolve())));

function fetchBody(): Promise<{ length: number; text: string }> {
  return new Promise((resolve, reject) => {
    get(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ length: Number(res.headers['content-length']), text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    }).on('error', reject);
  });
}

test('sendJson: a body of several pieces, every character a surrogate pair, arrives whole at its content-length', async () => {
  // `{"text":"` is 9 characters, so the pairs start at odd offsets and the first piece boundary (an even offset) falls
  // inside one: encoded on its own, each half would become U+FFFD.
  const text = '😀'.repeat(2 * JSON_PIECE_CHARS);
  body = { text };
  const answer = await fetchBody();
  assert.equal(answer.length, Buffer.byteLength(answer.text));
  assert.equal((JSON.parse(answer.text) as { text: string }).text, text);
});

test('sendJson: a small body is written at once, with its content-length', async () => {
  body = { ok: true };
  const answer = await fetchBody();
  assert.equal(answer.text, '{"ok":true}');
  assert.equal(answer.length, 11);
  assert.ok(sent >= 2);
});

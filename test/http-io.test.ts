/**
 * sendJson and readBody on a real HTTP server: a large body goes out in pieces a turn apart (src/server/http-io.ts),
 * and arrives whole, with a content-length that matches it, even where a piece boundary falls inside a surrogate pair;
 * a request body sent in pieces of every size is read whole, with a Content-Length and chunked.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, get, request, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { MercuryError } from '../src/errors/index.js';
import { admit } from '../src/server/auth.js';
import { BodyBudget } from '../src/server/body-budget.js';
import { JSON_PIECE_CHARS, readBody, sendJson, writePieces } from '../src/server/http-io.js';
import { TurnCounter } from './support/turns.js';

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

/** Sends `head`, then each piece as its own write once the previous one was handed to the kernel; resolves with the answer. */
async function sendInPieces(port: number, head: string, pieces: readonly Buffer[]): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  let answer = '';
  socket.on('data', (data: Buffer) => (answer += data.toString('latin1')));
  const closed = new Promise<void>((resolve, reject) => {
    socket.once('close', () => resolve());
    socket.once('error', reject);
  });
  const write = (bytes: Buffer | string): Promise<void> => new Promise((resolve, reject) => socket.write(bytes, (error) => (error ? reject(error) : resolve())));
  await write(head);
  for (const piece of pieces) {
    await write(piece);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  await closed;
  return answer.slice(answer.indexOf('\r\n\r\n') + 4);
}

test('readBody: a body sent in pieces of every size, a byte to 70 KB, arrives whole, with a Content-Length and chunked', async () => {
  const bytesMax = 1024 * 1024;
  const bodyServer = createServer((req, res) => {
    admit(req, undefined);
    readBody(req, res, new BodyBudget(bytesMax), { bytesMax, tooLarge: (bytes) => new MercuryError('BODY_TOO_LARGE', `${bytes} bytes`) }).then(
      (received) => res.end(received.toString('base64')),
      (error: unknown) => {
        res.statusCode = 500;
        res.end(String(error));
      },
    );
  });
  await new Promise<void>((resolve) => bodyServer.listen(0, '127.0.0.1', resolve));
  try {
    const port = (bodyServer.address() as AddressInfo).port;
    // Small pieces go into growing blocks (or the Content-Length buffer), pieces of 16 KiB and more are kept as they come.
    const sizes = [1, 1, 2, 3, 100, 1, 20_000, 1, 5_000, 7, 70_000, 300, 1, 16_384, 2];
    const body = Buffer.alloc(sizes.reduce((sum, size) => sum + size, 0));
    for (let i = 0; i < body.length; i++) body[i] = (i * 7 + (i >> 8)) & 0xff;
    const pieces: Buffer[] = [];
    for (let at = 0, i = 0; at < body.length; at += sizes[i++]!) pieces.push(body.subarray(at, at + sizes[i]!));
    const head = (framing: string): string => `PUT / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${framing}\r\n\r\n`;
    const declared = await sendInPieces(port, head(`Content-Length: ${body.length}`), pieces);
    assert.ok(Buffer.from(declared, 'base64').equals(body), 'the Content-Length body arrives whole');
    const chunks = pieces.map((piece) => Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]));
    const chunked = await sendInPieces(port, head('Transfer-Encoding: chunked'), [...chunks, Buffer.from('0\r\n\r\n')]);
    assert.ok(Buffer.from(chunked, 'base64').equals(body), 'the chunked body arrives whole');
  } finally {
    await new Promise<void>((resolve) => bodyServer.close(() => resolve()));
  }
});

test('writePieces: the answer to a HEAD ends after its head, without reading the pieces; a GET reads them all', async () => {
  // Found by review: HEAD /v1/snapshot read the whole store for node:http to drop every byte of it.
  let pulled = 0;
  const pieces = function* (): Generator<Buffer> {
    for (let i = 0; i < 3; i++) {
      pulled++;
      yield Buffer.from('piece');
    }
  };
  const streaming = createServer((_req, res) => {
    res.writeHead(200, { 'content-length': 15 });
    void writePieces(res, pieces());
  });
  await new Promise<void>((resolve) => streaming.listen(0, '127.0.0.1', resolve));
  try {
    const port = (streaming.address() as AddressInfo).port;
    const answer = (method: string): Promise<{ status: number; length: string | undefined; body: string }> =>
      new Promise((resolve, reject) => {
        request({ host: '127.0.0.1', port, method, path: '/' }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, length: res.headers['content-length'], body: Buffer.concat(chunks).toString() }));
        })
          .on('error', reject)
          .end();
      });
    assert.deepEqual(await answer('HEAD'), { status: 200, length: '15', body: '' });
    assert.equal(pulled, 0, 'no piece read for a HEAD');
    assert.deepEqual(await answer('GET'), { status: 200, length: '15', body: 'piecepiecepiece' });
    assert.equal(pulled, 3);
  } finally {
    await new Promise<void>((resolve) => streaming.close(() => resolve()));
  }
});

test('writePieces with turnEach: a turn of the event loop passes after every piece, also when a fast reader drained the socket at once', async () => {
  // Found by review G: a piece larger than the socket's buffer makes write() return false, and when the kernel takes
  // it all at once 'drain' comes before the loop turns; the piece after it was written in the same turn, so a fast
  // client had a whole snapshot written in one go (2.4-3.5 s of the event loop held for 11 MB).
  const PIECES = 40;
  const loop = new TurnCounter();
  const turnsAtPiece: number[] = [];
  const pieces = function* (): Generator<Buffer> {
    for (let i = 0; i < PIECES; i++) {
      turnsAtPiece.push(loop.turns);
      yield Buffer.alloc(64 * 1024, 97);
    }
  };
  let written: Promise<void> | undefined;
  const streaming = createServer((_req, res) => {
    res.writeHead(200, { 'content-length': PIECES * 64 * 1024 });
    written = writePieces(res, pieces(), { turnEach: true });
  });
  await new Promise<void>((resolve) => streaming.listen(0, '127.0.0.1', resolve));
  try {
    // The reader is another process, so it reads while this one writes, as fast as loopback goes.
    const reader = spawn(process.execPath, [
      '-e',
      `require('node:http').get('http://127.0.0.1:${(streaming.address() as AddressInfo).port}/', (res) => { let n = 0; res.on('data', (c) => (n += c.length)); res.on('end', () => process.stdout.write(String(n))); });`,
    ]);
    let received = '';
    reader.stdout.on('data', (chunk: Buffer) => (received += chunk.toString()));
    const [code] = (await once(reader, 'exit')) as [number];
    assert.equal(code, 0);
    assert.equal(received, String(PIECES * 64 * 1024), 'the whole answer arrived');
    await written;
    assert.equal(turnsAtPiece.length, PIECES);
    const sameTurn = turnsAtPiece.slice(1).filter((turnsThen, i) => turnsThen === turnsAtPiece[i]).length;
    assert.equal(sameTurn, 0, `pieces pulled in the same turn as the one before: ${sameTurn} of ${PIECES - 1}`);
  } finally {
    loop.stop();
    await new Promise<void>((resolve) => streaming.close(() => resolve()));
  }
});

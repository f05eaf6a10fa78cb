/**
 * A node stopping (SIGTERM) answers the reads parked on `minSeq` with SHUTTING_DOWN, on HTTP and on the wire port,
 * instead of cutting their connections with no answer (HTTP) or waiting out the frame timeout for them (the wire port
 * held the exit 20-30 s). Found by review, 2026-12-03.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, test } from 'node:test';
import { encodeGet } from '../src/api/index.js';
import { SeqWaiter } from '../src/node/seq-waiter.js';
import { MercuryError } from '../src/errors/index.js';
import { requestJson } from './support/http.js';
import { ManualClock } from './support/manual-clock.js';
import { makeTempDir, removeDir, startServe } from './support/process.js';
import { RawWire } from './support/wire.js';
import { connect } from 'node:net';

const dir = makeTempDir('shutdown-parked');
after(() => removeDir(dir));

test('closing the waiter answers every parked read SHUTTING_DOWN, and later ones at once', async () => {
  const waiter = new SeqWaiter(new ManualClock(), () => 0);
  const parked = [waiter.wait(3, 60_000), waiter.wait(9, 60_000)];
  waiter.close();
  for (const wait of [...parked, waiter.wait(4, 1_000)]) await assert.rejects(wait, (error: MercuryError) => error.code === 'SHUTTING_DOWN');
  assert.equal(waiter.waiting, 0);
});

test('SIGTERM answers reads parked on minSeq (HTTP and wire) with SHUTTING_DOWN and exits promptly', async () => {
  const node = await startServe(join(dir, 'node'));
  const { seq } = await requestJson<{ seq: number }>(node.url, 'GET', '/v1/status');
  const url = new URL(node.url);
  const socket = connect(Number(url.port), url.hostname);
  socket.on('error', () => {});
  let http = '';
  socket.on('data', (data: Buffer) => (http += data.toString('latin1')));
  socket.write(`GET /v1/kv/a?minSeq=${seq + 5}&timeoutMs=30000 HTTP/1.1\r\nHost: ${url.host}\r\n\r\n`);
  const wire = await RawWire.ready(node.wire);
  wire.send(encodeGet(1, Buffer.from('a'), { seq: seq + 5, timeoutMs: 30_000 }));
  await new Promise((resolve) => setTimeout(resolve, 200));
  const stopping = performance.now();
  node.child.kill('SIGTERM');
  await node.exited;
  const exitMs = performance.now() - stopping;
  assert.match(http, /^HTTP\/1\.1 503/);
  assert.match(http, /SHUTTING_DOWN/);
  const answer = await wire.next();
  assert.equal(RawWire.code(answer), 'SHUTTING_DOWN');
  assert.ok(exitMs < 10_000, `exited ${exitMs.toFixed(0)} ms after SIGTERM`);
  socket.destroy();
  wire.close();
});

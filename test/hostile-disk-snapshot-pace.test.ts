/**
 * Hostile disk - a backup client that takes a snapshot at a trickle. `GET /v1/snapshot` holds an LMDB read transaction
 * until its last byte is taken, and LMDB reuses no page freed after it began: the data file grows by every write while
 * it is held. The send deadline (`http.sendStallMs`) restarts at every slice the client takes, so a client that took a
 * 64 KiB slice a minute held the transaction for as long as it liked (audit, 2026-12-07: a reader taking 2 KB/s of a
 * default node's snapshot grew data.mdb by 91 MB in 40 s of 3 KB overwrites, 7 MB without it). Now a client that takes
 * less than `http.snapshotPaceBytesMin` in a `http.snapshotPaceWindowMs` while the node waits on it is cut off,
 * SEND_TOO_SLOW, and its snapshot reader released.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import type { Logger } from '../src/logging/index.js';
import { MercuryNode, NODE_LIMITS_TEST, withLimits } from '../src/node/index.js';
import { metricValue, request } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';
import { prefill } from './support/snapshot-readers.js';
import { eventually } from './support/tree.js';

const KiB = 1024;
/**
 * 1.3 MB/s: a third of the floor below, and enough that the node's socket drains within every send deadline (Linux
 * frees it once about half its send buffer, up to 2 MiB, was taken; 320 KB/s was cut off SEND_STALLED instead).
 */
const READ_BYTES = 64 * KiB;
const READ_EVERY_MS = 50;
const LIMITS = withLimits(NODE_LIMITS_TEST, { http: { sendStallMs: 3_000, snapshotPaceWindowMs: 4_000, snapshotPaceBytesMin: 16 * 1024 * KiB } });

describe('hostile disk: snapshot pace', () => {
  const dir = makeTempDir('hostile-disk-snapshot-pace');
  let node: MercuryNode | undefined;
  let socket: net.Socket | undefined;
  after(async () => {
    socket?.destroy();
    await node?.close();
    removeDir(dir);
  });

  test('snapshot pace: a GET /v1/snapshot taken at a trickle is cut off SEND_TOO_SLOW, and its reader released', async () => {
    // 40 MiB: at 1.3 MB/s the transfer would hold its read transaction about 30 s.
    await prefill(join(dir, 'root'), 10_000, 4 * KiB);
    const lines: { level: string; fields: Record<string, unknown> | undefined }[] = [];
    const logger: Logger = { log: (level, _message, fields) => void lines.push({ level, fields }), child: () => logger };
    node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'root'), port: 0, upstreams: [] }), { auth: 'off', limits: LIMITS, logger });
    const { hostname, port } = new URL(node.url);
    const slow = net.connect(Number(port), hostname);
    socket = slow;
    let received = 0;
    let head = '';
    let closed = false;
    slow.on('error', () => {});
    slow.on('close', () => (closed = true));
    // READ_BYTES a tick on average: reading resumes each tick until the tick's budget is spent.
    let budget = 0;
    slow.on('data', (chunk: Buffer) => {
      if (head === '') head = chunk.subarray(0, 400).toString('latin1');
      received += chunk.length;
      budget -= chunk.length;
      if (budget <= 0) slow.pause();
    });
    slow.pause();
    slow.write('GET /v1/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    const reading = setInterval(() => {
      budget = Math.min(budget + READ_BYTES, READ_BYTES);
      if (budget > 0) slow.resume();
    }, READ_EVERY_MS);
    try {
      await eventually(
        async () => (await metricValue(node!.url, /^mercury_snapshot_readers /)) === 1,
        () => 'the snapshot never took a reader',
      );
      // Writes go on meanwhile, as on a busy root.
      for (let i = 0; i < 20; i++) assert.equal((await request(node.url, 'PUT', `/v1/kv/churn/${i % 4}`, { body: 'v'.repeat(2_000) })).status, 200);
      await eventually(
        async () => (await metricValue(node!.url, /^mercury_http_send_too_slow_total\{route="\/v1\/snapshot"\}/)) === 1,
        () => `the slow snapshot was not cut off (the client took ${received} bytes, its connection ${closed ? "closed" : "open"}; logged ${JSON.stringify(lines.filter((l) => l.level !== "info" && l.level !== "debug"))})`,
        20_000,
      );
      assert.equal(await metricValue(node.url, /^mercury_snapshot_readers /), 0, 'the snapshot reader was released');
      assert.equal(await metricValue(node.url, /^mercury_http_send_stalls_total\{route="\/v1\/snapshot"\}/), 0, 'it was not taken for a stalled client');
      await eventually(
        () => Promise.resolve(closed),
        () => `the cut-off connection is still open on the client's side (received ${received} bytes)`,
      );
      const length = Number(/content-length: (\d+)/i.exec(head)?.[1]);
      assert.ok(received < length, `the client got ${received} bytes of a ${length}-byte snapshot`);
      const line = lines.find((candidate) => candidate.fields?.code === 'SEND_TOO_SLOW');
      assert.ok(line !== undefined, 'a SEND_TOO_SLOW line was logged');
      assert.equal(line.level, 'warn');
      assert.equal(line.fields?.route, '/v1/snapshot');
      assert.ok(typeof line.fields?.takenBytes === 'number' && line.fields.takenBytes < 16 * 1024 * KiB, JSON.stringify(line.fields));
    } finally {
      clearInterval(reading);
    }
  });

  test('snapshot pace: a snapshot pipelined behind another opens no read transaction until the one before it is sent', async () => {
    // Each held a snapshot reader, and a read transaction as old as the first answer, while it waited unjudged.
    const pipelined = net.connect(Number(new URL(node!.url).port), '127.0.0.1');
    socket = pipelined;
    pipelined.on('error', () => {});
    pipelined.pause();
    const get = 'GET /v1/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';
    pipelined.write(get + get + get);
    await eventually(
      async () => (await metricValue(node!.url, /^mercury_snapshot_readers /)) >= 1,
      () => 'the first snapshot never took a reader',
    );
    // The handlers of all three have run by now (pipelined GETs run beside each other): only the first holds one.
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(await metricValue(node!.url, /^mercury_snapshot_readers /), 1, 'the snapshots waiting for their turn hold no reader');
    pipelined.destroy();
    await eventually(
      async () => (await metricValue(node!.url, /^mercury_snapshot_readers /)) === 0,
      () => 'the readers were not released when the client left',
    );
  });

  test('snapshot pace: a snapshot pipelined after another is judged from when it owns the connection, not while it waits', async () => {
    // The second answer opens its snapshot at once and waits for the first to be sent (5 s here, above the floor):
    // counted from its start, its first window held 5 s of waiting and was cut off SEND_TOO_SLOW.
    const pipelined = net.connect(Number(new URL(node!.url).port), '127.0.0.1');
    socket = pipelined;
    let received = 0;
    let budget = 0;
    let closed = false;
    pipelined.on('error', () => {});
    pipelined.on('close', () => (closed = true));
    pipelined.on('data', (chunk: Buffer) => {
      received += chunk.length;
      budget -= chunk.length;
      if (budget <= 0) pipelined.pause();
    });
    pipelined.pause();
    const get = (connection: string): string => `GET /v1/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: ${connection}\r\n\r\n`;
    pipelined.write(get('keep-alive') + get('close'));
    // 8 MB/s: twice the floor.
    const reading = setInterval(() => {
      budget = Math.min(budget + 8 * READ_BYTES, 8 * READ_BYTES);
      if (budget > 0) pipelined.resume();
    }, READ_EVERY_MS);
    const tooSlowBefore = await metricValue(node!.url, /^mercury_http_send_too_slow_total\{route="\/v1\/snapshot"\}/);
    try {
      await eventually(
        () => Promise.resolve(closed),
        () => `the pipelined snapshots were not sent within 60 s (received ${received} bytes)`,
        60_000,
      );
      const length = Number((await request(node!.url, 'HEAD', '/v1/snapshot')).headers['content-length']);
      assert.ok(received > 2 * length, `the client got ${received} bytes of two ${length}-byte snapshots`);
      assert.equal(await metricValue(node!.url, /^mercury_http_send_too_slow_total\{route="\/v1\/snapshot"\}/), tooSlowBefore, 'neither was cut off');
    } finally {
      clearInterval(reading);
    }
  });
});

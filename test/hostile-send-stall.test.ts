/**
 * Hostile input - a client that asks and never reads. Found by an audit (2026-12-06): a plain answer (not streamed)
 * had no send deadline. 300 connections that each sent `GET /v1/kv/KEY` of a 1 MiB value and read nothing were still
 * open 90 s later, and a client that pipelined GETs held up to HTTP_PIPELINED_RUNNING_MAX answers, and its connection,
 * for as long as it liked: `http.sendStallMs` covered only streamed answers (ranges, the log, snapshots). Now every
 * answer whose bytes the client takes none of for `sendStallMs` has its connection reset, logged as SEND_STALLED and
 * counted in `mercury_http_send_stalls_total`, as a streamed answer's is. The node runs in this process with a short
 * send deadline; the answers are larger in all than what loopback's socket buffers take from a client that reads
 * nothing (about 4 MiB here), so that the node, not the kernel, holds the rest.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import type { Logger } from '../src/logging/index.js';
import { MercuryNode, NODE_LIMITS, withLimits } from '../src/node/index.js';
import { SEND_SLICE_BYTES } from '../src/server/http-io.js';
import { metricValue, request } from './support/http.js';
import { MiB } from './support/hostile.js';
import { makeTempDir, removeDir } from './support/process.js';
import { eventually } from './support/tree.js';

/**
 * The send deadline. A steady reader must take about half the socket's send buffer (up to 2 MiB on loopback) within
 * it for the kernel to take the next bytes: the slow reader below does that in about 350 ms at most.
 */
const STALL_MS = 1_000;
const LIMITS = withLimits(NODE_LIMITS, { http: { sendStallMs: STALL_MS } });
/** Pipelined answers a connection asks for: 12 MiB of either value, three times what the kernel takes. */
const PIPELINED_BYTES = 12 * MiB;
const STALLS_METRIC = /^mercury_http_send_stalls_total\{route="\/v1\/kv\/\{key\}"\}/;

interface LogLine {
  readonly level: string;
  readonly message: string;
  readonly fields: Record<string, unknown> | undefined;
}

function keepingLogger(lines: LogLine[]): Logger {
  const logger: Logger = {
    log(level, message, fields) {
      lines.push({ level, message, fields });
    },
    child: () => logger,
  };
  return logger;
}

/** A connection that sends `count` pipelined GETs of `key` (the last one closing) and reads nothing until resumed. */
function pipelineGets(url: string, key: string, count: number): Promise<net.Socket> {
  const { hostname, port } = new URL(url);
  const socket = net.connect(Number(port), hostname);
  socket.on('error', () => {});
  socket.pause();
  let gets = '';
  for (let i = 0; i < count; i++) gets += `GET /v1/kv/${key} HTTP/1.1\r\nhost: localhost\r\n${i === count - 1 ? 'connection: close\r\n' : ''}\r\n`;
  return new Promise((resolve, reject) => {
    socket.once('connect', () => {
      socket.write(gets);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** Reads the rest of `socket` (paused so far) to its end or reset; `pauseMs` between reads makes a slow reader. */
function readToEnd(socket: net.Socket, pauseMs = 0): Promise<{ bytes: number; reset: boolean }> {
  return new Promise((resolve) => {
    let bytes = 0;
    let reset = false;
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (pauseMs === 0) return;
      socket.pause();
      setTimeout(() => socket.resume(), pauseMs);
    });
    socket.on('error', () => (reset = true));
    socket.on('close', () => resolve({ bytes, reset }));
    socket.resume();
  });
}

describe('hostile input - send stalls', () => {
  const dir = makeTempDir('hostile-send-stall');
  const lines: LogLine[] = [];
  let node: MercuryNode;
  const sockets: net.Socket[] = [];
  after(async () => {
    for (const socket of sockets) socket.destroy();
    await node?.close();
    removeDir(dir);
  });

  /** Values answered in one write (at most a slice) and in slices (a streamed answer's path), each pipelined. */
  const cases = [
    { key: 'small', valueBytes: SEND_SLICE_BYTES, what: 'a value answered in one write' },
    { key: 'large', valueBytes: 1 * MiB, what: 'a 1 MiB value, answered in slices' },
  ];

  test('send stalls: a client that pipelines GETs and reads nothing has its connection reset after sendStallMs', async () => {
    node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'node'), port: 0 }), { auth: 'off', limits: LIMITS, logger: keepingLogger(lines) });
    for (const { key, valueBytes } of cases) assert.equal((await request(node.url, 'PUT', `/v1/kv/${key}`, { body: Buffer.alloc(valueBytes, 0x61) })).status, 200);
    let stalls = 0;
    for (const { key, valueBytes, what } of cases) {
      const count = PIPELINED_BYTES / valueBytes;
      const socket = await pipelineGets(node.url, key, count);
      sockets.push(socket);
      const startedMs = performance.now();
      await eventually(
        async () => (await metricValue(node.url, STALLS_METRIC)) > stalls,
        () => `${what}: the connection was not cut off within ${Math.round(performance.now() - startedMs)} ms of a ${STALL_MS} ms send deadline`,
        STALL_MS + 10_000,
      );
      stalls++;
      // One stall: the answer that owned the connection. Those waiting behind it close with it, uncounted.
      assert.equal(await metricValue(node.url, STALLS_METRIC), stalls, `${what}: one stall counted for the connection`);
      // The client, reading at last, finds the connection reset before all its answers came.
      const { bytes } = await readToEnd(socket);
      assert.ok(bytes < PIPELINED_BYTES, `${what}: the client got ${bytes} bytes of ${count} answers of ${valueBytes} bytes`);
    }
    const stalled = lines.filter((line) => line.fields?.code === 'SEND_STALLED');
    assert.equal(stalled.length, cases.length, 'one SEND_STALLED line per connection cut off');
    for (const line of stalled) {
      assert.equal(line.level, 'warn');
      assert.equal(line.fields?.route, '/v1/kv/{key}');
    }
  });

  test('send stalls: a client that reads slowly but steadily gets every answer, though it takes longer than sendStallMs', async () => {
    const before = await metricValue(node.url, STALLS_METRIC);
    for (const { key, valueBytes, what } of cases) {
      const count = PIPELINED_BYTES / valueBytes;
      const socket = await pipelineGets(node.url, key, count);
      sockets.push(socket);
      // At most 64 KiB a read and a read every 10 ms: some 6 MiB/s at best, 2 s or more for the 12 MiB.
      const startedMs = performance.now();
      const { bytes, reset } = await readToEnd(socket, 10);
      const tookMs = performance.now() - startedMs;
      assert.equal(reset, false, `${what}: the connection was reset after ${bytes} bytes`);
      assert.ok(bytes > PIPELINED_BYTES, `${what}: the client got ${bytes} bytes of ${count} answers of ${valueBytes} bytes`);
      assert.ok(tookMs > STALL_MS, `${what}: the slow client took only ${Math.round(tookMs)} ms`);
    }
    assert.equal(await metricValue(node.url, STALLS_METRIC), before, 'no answer was cut off');
  });
});

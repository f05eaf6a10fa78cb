/**
 * Snapshot readers - what a node's long-lived snapshots may hold. Found by review F on a real node: a `GET /v1/snapshot`
 * client that stopped reading was never timed out, and held its LMDB read transaction (so LMDB could not reuse freed
 * pages, and data.mdb grew without bound under rewrites). Now a streamed answer whose client takes nothing for
 * `http.sendStallMs` is cut off (SEND_STALLED).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import type { Logger } from '../src/logging/index.js';
import { MercuryNode, NODE_LIMITS_TEST, withLimits, type NodeLimits } from '../src/node/index.js';
import { metricValue } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';
import { eventually } from './support/tree.js';

const KiB = 1024;
/** The test preset's send deadline, set here too, so that a node without it fails the tests. */
const STALL_MS = 1_000;
const LIMITS = withLimits(NODE_LIMITS_TEST, { http: { sendStallMs: STALL_MS } });

/**
 * Writes `keys` keys of `valueBytes` each straight into a new root's data directory, a few MiB per entry. In a process
 * of its own: the garbage of millions of buffers left in this one, where the node runs, would be collected while it is
 * measured.
 */
async function prefill(dir: string, keys: number, valueBytes: number): Promise<void> {
  const storeModule = new URL('../src/store/index.js', import.meta.url).href;
  const script = `
    const { Store } = await import(${JSON.stringify(storeModule)});
    const store = Store.open({ path: ${JSON.stringify(dir)} });
    const value = Buffer.alloc(${valueBytes}, 0x61);
    const perEntry = Math.max(1, Math.floor(${4 * 1024 * KiB} / (${valueBytes} + 16)));
    for (let i = 0; i < ${keys}; i += perEntry)
      store.commit(1_700_000_000_000 + i, (view) => {
        for (let k = i; k < Math.min(${keys}, i + perEntry); k++) view.apply({ type: 'put', key: Buffer.from('k/' + String(k).padStart(8, '0')), value });
      });
    await store.close();`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'inherit', 'inherit'] });
  const code = await new Promise((resolve) => child.once('exit', resolve));
  assert.equal(code, 0, 'the prefill process failed');
}

/** A logger that keeps every line. */
function keepingLogger(lines: { level: string; message: string; fields: Record<string, unknown> | undefined }[]): Logger {
  const logger: Logger = {
    log(level, message, fields) {
      lines.push({ level, message, fields });
    },
    child: () => logger,
  };
  return logger;
}

/** A raw `GET /v1/snapshot` that takes the first bytes and then reads nothing more, as a stalled backup client does. */
class StalledSnapshot {
  received = 0;
  closed = false;
  head = '';
  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.received += chunk.length;
      if (this.head === '') this.head = chunk.subarray(0, 400).toString('latin1');
      socket.pause();
    });
    socket.on('error', () => {});
    socket.on('close', () => (this.closed = true));
  }

  static async open(url: string): Promise<StalledSnapshot> {
    const { hostname, port } = new URL(url);
    const socket = net.connect(Number(port), hostname);
    await new Promise((resolve) => socket.once('connect', resolve));
    const stalled = new StalledSnapshot(socket);
    socket.write(`GET /v1/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    await eventually(
      () => Promise.resolve(stalled.received > 0),
      () => 'no answer to GET /v1/snapshot',
    );
    return stalled;
  }
}

describe('snapshot readers', () => {
  const dir = makeTempDir('snapshot-readers');
  const nodes: MercuryNode[] = [];
  const sockets: net.Socket[] = [];
  after(async () => {
    for (const socket of sockets) socket.destroy();
    for (const node of nodes.reverse()) await node.close();
    removeDir(dir);
  });
  const start = async (name: string, limits: NodeLimits, options: { upstreams?: string[]; logger?: Logger } = {}): Promise<MercuryNode> => {
    const config = validateConfig({ dataDir: join(dir, name), port: 0, upstreams: options.upstreams ?? [] });
    const node = await MercuryNode.start(config, { auth: 'off', limits, logger: options.logger });
    nodes.push(node);
    return node;
  };

  test('snapshot readers: a GET /v1/snapshot whose client stops reading is cut off after sendStallMs, and its reader freed', async () => {
    // 8 MiB: more than loopback's socket buffers take from a client that reads nothing (about 4 MiB).
    await prefill(join(dir, 'stall'), 2_000, 4 * KiB);
    const lines: { level: string; message: string; fields: Record<string, unknown> | undefined }[] = [];
    const node = await start('stall', LIMITS, { logger: keepingLogger(lines) });
    const stallMs = STALL_MS;
    const stalled = await StalledSnapshot.open(node.url);
    sockets.push(stalled.socket);
    assert.match(stalled.head, /^HTTP\/1\.1 200/);
    const startedMs = performance.now();
    await eventually(
      async () => (await metricValue(node.url, /^mercury_http_send_stalls_total\{route="\/v1\/snapshot"\}/)) === 1,
      () => `the stalled snapshot was not cut off within ${Math.round(performance.now() - startedMs)} ms (the client received ${stalled.received} bytes)`,
      stallMs + 10_000,
    );
    // The client, reading again, finds its answer cut short (reset, or ended before its Content-Length).
    const length = Number(/content-length: (\d+)/i.exec(stalled.head)?.[1]);
    stalled.socket.removeAllListeners('data');
    stalled.socket.on('data', (chunk: Buffer) => (stalled.received += chunk.length));
    stalled.socket.resume();
    await eventually(
      () => Promise.resolve(stalled.closed),
      () => `the cut-off connection is still open on the client's side (received ${stalled.received} bytes)`,
    );
    const headBytes = stalled.head.indexOf('\r\n\r\n') + 4;
    assert.ok(headBytes > 4 && stalled.received - headBytes < length, `the client got ${stalled.received - headBytes} bytes of a ${length}-byte snapshot`);
    assert.equal(await metricValue(node.url, /^mercury_snapshot_readers /), 0, 'the snapshot reader was released');
    const line = lines.find((candidate) => candidate.fields?.code === 'SEND_STALLED');
    assert.ok(line !== undefined, 'a SEND_STALLED line was logged');
    assert.equal(line.level, 'warn');
    assert.equal(line.fields?.route, '/v1/snapshot');
  });

  test('snapshot readers: a client that takes longer than sendStallMs for the whole snapshot, but keeps reading, gets all of it', async () => {
    const node = nodes[0]!;
    const stallMs = STALL_MS;
    const { hostname, port } = new URL(node.url);
    const socket = net.connect(Number(port), hostname);
    sockets.push(socket);
    let received = 0;
    let sincePause = 0;
    let head = '';
    const startedMs = performance.now();
    const done = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      if (head === '') head = chunk.subarray(0, 400).toString('latin1');
      received += chunk.length;
      sincePause += chunk.length;
      // A pause of 0.4 deadlines after each MiB: the deadline is on progress, not on the whole answer.
      if (sincePause >= 1024 * KiB) {
        sincePause = 0;
        socket.pause();
        setTimeout(() => socket.resume(), (stallMs * 2) / 5);
      }
    });
    socket.write(`GET /v1/snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    await done;
    const length = Number(/content-length: (\d+)/i.exec(head)?.[1]);
    const headBytes = head.indexOf('\r\n\r\n') + 4;
    assert.ok(length > 4 * 1024 * KiB, head);
    assert.equal(received - headBytes, length, 'the whole snapshot arrived');
    assert.ok(performance.now() - startedMs > 2 * stallMs, 'the transfer took more than two send deadlines');
  });

});

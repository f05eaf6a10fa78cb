/**
 * Helpers for tests of the snapshot reader budget (docs/decisions.md record 44): a root's data directory filled with
 * enough data that a snapshot of it outlasts the sockets' buffers, and a backup client that stops reading, which holds
 * one of the node's snapshot readers until it is closed (or cut off after `http.sendStallMs`).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { request } from './http.js';
import { eventually } from './tree.js';

const KiB = 1024;

/**
 * Writes `keys` keys of `valueBytes` each straight into a new root's data directory, a few MiB per entry. In a process
 * of its own: the garbage of millions of buffers left in this one, where the node runs, would be collected while it is
 * measured.
 */
export async function prefill(dir: string, keys: number, valueBytes: number): Promise<void> {
  const storeModule = new URL('../../src/store/index.js', import.meta.url).href;
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

/**
 * Another process that holds `dir`'s LMDB environment open, opened read-only with a reader table of `slots` (as a
 * backup tool or a user's embedded reader does), and one read transaction in it. LMDB gives the table the size its
 * first opener asks for when it makes the lock file, so `dir` must have none: a node opening the directory meanwhile
 * gets this table. `close` ends the process.
 */
export async function holdReaderTable(dir: string, slots: number): Promise<{ readonly child: ChildProcess; close(): Promise<void> }> {
  const lmdbModule = import.meta.resolve('lmdb');
  const script = `
    const { open } = await import(${JSON.stringify(lmdbModule)});
    const env = open({ path: ${JSON.stringify(dir)}, readOnly: true, maxReaders: ${slots} });
    const meta = env.openDB({ name: 'meta', encoding: 'binary' });
    meta.get('head', { transaction: env.useReadTransaction() });
    process.stdout.write(JSON.stringify({ maxReaders: env.getStats().maxReaders }) + '\\n');
    process.stdin.on('end', () => process.exit(0)).resume();`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    let text = '';
    child.stdout.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      if (text.includes('\n')) resolve(text);
    });
    child.once('exit', (code) => reject(new Error(`the process holding the reader table exited (${code}) before it opened it`)));
  });
  assert.deepEqual(JSON.parse(line), { maxReaders: slots }, 'the holder made the reader table');
  return {
    child,
    close: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.stdin.end();
      await exited;
    },
  };
}

/** A raw `GET /v1/snapshot` that takes the first bytes and then reads nothing more, as a stalled backup client does. */
export class StalledSnapshot {
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

/**
 * Takes `count` of the node's snapshot readers with stalled backup clients (closing their sockets frees them), a write
 * between two, so that each holds a read transaction of its own (as on a busy root).
 */
export async function fillSnapshotReaders(url: string, count: number): Promise<StalledSnapshot[]> {
  const stalled: StalledSnapshot[] = [];
  for (let i = 0; i < count; i++) {
    stalled.push(await StalledSnapshot.open(url));
    const answer = await request(url, 'PUT', '/v1/kv/tick', { body: String(i) });
    assert.equal(answer.status, 200, answer.body.toString());
  }
  return stalled;
}

/**
 * Mercury under test: `mercury serve` with its defaults (group commit, one fsync per log entry) on loopback.
 *
 * The client is Mercury's own `connect()` (src/client, retries on connection errors), one per load-driver client, given
 * the node's wire URL: gets and puts travel as binary frames over one connection the process shares, many in flight
 * (src/api/wire.ts); batches (transactions) over HTTP. Workloads 1 and 3 also measure the same client given the HTTP
 * URL (node:http keep-alive connections), as the row "Mercury (HTTP client)", and the HTTP API through undici, a
 * standard HTTP client of its own (mercury-undici.ts), as "Mercury (HTTP API, undici)". Watches use `ws` directly.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { CLI_PATH } from '../../support/node-process.js';
import { connect, type NodeClient } from '../../../src/client/index.js';
import { batchTxn } from './mercury-txn.js';
import { connectUndici } from './mercury-undici.js';
import type { ProcessGroup } from '../processes.js';
import type { KvClient, RunningSystem, SystemAdapter, Watch } from '../system.js';

/** Subscriptions per watch connection: the node's limit (WATCH_SUBSCRIPTIONS_PER_CONNECTION_MAX). */
const MERCURY_SUBSCRIPTIONS_PER_CONNECTION_MAX = 64;

/**
 * With `ca`, the node serves HTTPS (`--tls-*`) and the client trusts that CA; with `token`, requests carry it. With
 * `wireUrl`, gets and puts go over the wire port (batches stay on HTTP: the wire port has no transactions).
 */
export function connectMercury(host: string, port: number, ca?: Buffer, token?: string, wireUrl?: string): KvClient {
  const auth = token === undefined ? {} : { token };
  const http = ca === undefined ? connect(`http://${host}:${port}`, auth) : connect(`https://${host}:${port}`, { ca, ...auth });
  const client = wireUrl === undefined ? http : connect(wireUrl, ca === undefined ? auth : { ca, ...auth });
  return {
    async put(key, value) {
      await client.put(key, value);
    },
    async get(key) {
      return (await client.get(key))?.value;
    },
    async putBatch(entries) {
      await http.txn(batchTxn(entries));
    },
    close() {
      client.close();
      http.close();
      return Promise.resolve();
    },
  };
}

/**
 * Resolves once the node behind `client` has applied `seq`: a read of `key` with `minSeq` (held up to `waitMs` by the
 * node), sent again every `retryMs` while the node refuses it (a replica that has not joined yet, or does not know the
 * token yet), until `deadline` (a performance.now() time), when the last refusal is thrown.
 */
export async function untilApplied(client: NodeClient, seq: number, key: string, timing: { deadline: number; retryMs: number; waitMs: number }): Promise<void> {
  for (;;) {
    try {
      await client.get(key, { minSeq: seq, minSeqTimeoutMs: timing.waitMs });
      return;
    } catch (error) {
      if (performance.now() > timing.deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, timing.retryMs));
    }
  }
}

interface EventsMessage {
  type: string;
  id?: number;
  events?: { type: string; key: string; keyEncoding: string; value?: string; valueEncoding?: string }[];
}

/** One WebSocket to a node with one subscription of `prefix` per id; `listener` gets every put. */
export async function openWatchConnection(
  url: string,
  ids: readonly number[],
  prefix: string,
  listener: (watcher: number, key: string, value: Buffer) => void,
  ca?: Buffer,
  token?: string,
): Promise<WebSocket> {
  const socket = new WebSocket(url, { ...(ca === undefined ? {} : { ca }), ...(token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } }) });
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  let pending = ids.length;
  const subscribed = new Promise<void>((resolve, reject) => {
    socket.on('message', (data: Buffer) => {
      const message = JSON.parse(data.toString()) as EventsMessage;
      if (message.type === 'subscribed' && --pending === 0) resolve();
      else if (message.type === 'error') reject(new Error(`mercury watch: ${data.toString()}`));
      else if (message.type === 'events' && message.id !== undefined) {
        for (const event of message.events ?? []) {
          if (event.type !== 'put' || event.value === undefined) continue;
          listener(message.id, event.key, Buffer.from(event.value, event.valueEncoding === 'base64' ? 'base64' : 'utf8'));
        }
      }
    });
  });
  for (const id of ids) socket.send(JSON.stringify({ type: 'subscribe', id, prefixes: [prefix] }));
  await subscribed;
  return socket;
}

export const mercuryAdapter: SystemAdapter = {
  name: 'mercury',
  title: 'Mercury',
  requires: [],
  settings: '`mercury serve` defaults but `--auth off` (as etcd and Redis run by default): group commit, one fsync per log entry (LMDB)',
  clientDescription:
    'Mercury\'s own `connect()` (src/client, retries across URLs), one per load-driver client, given the node\'s `mercury+tcp://` wire URL: binary frames, one connection shared by the process with every request in flight on it; batches over HTTP. "Mercury (HTTP client)": the same client given the `http://` URL (node:http keep-alive connections); "Mercury (HTTP API, undici)": the HTTP API through undici 7, one keep-alive `Client` per load-driver client; watches over `ws`',
  version() {
    const { version } = JSON.parse(readFileSync(new URL('../../../../package.json', import.meta.url), 'utf8')) as { version: string };
    let commit = 'unknown';
    try {
      commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      // Not a git checkout: the package version alone.
    }
    return Promise.resolve(`Mercury ${version} (${commit})`);
  },
  async start(group: ProcessGroup): Promise<RunningSystem> {
    const dataDir = group.tempDir('mercury');
    const child = await group.start({
      name: 'mercury',
      command: process.execPath,
      // Compared with etcd and Redis as they run by default: without authorization (the tree workload has --auth).
      args: [CLI_PATH, 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--auth', 'off'],
      ready: /listening on http:\/\/([\d.]+):(\d+) replication \S+ wire (mercury\+tcp:\/\/\S+)/,
    });
    const host = child.readyMatch[1]!;
    const port = Number(child.readyMatch[2]);
    const wireUrl = child.readyMatch[3]!;
    return {
      name: 'mercury',
      pid: child.pid,
      dataDir,
      connect: () => Promise.resolve(connectMercury(host, port, undefined, undefined, wireUrl)),
      alternativeClients: [
        { id: 'mercury-http', title: 'Mercury (HTTP client)', connect: () => Promise.resolve(connectMercury(host, port)) },
        { id: 'mercury-undici', title: 'Mercury (HTTP API, undici)', connect: () => Promise.resolve(connectUndici(`http://${host}:${port}`)) },
      ],
      async watchMany(prefix, watchers, connections, listener): Promise<Watch> {
        if (watchers > connections * MERCURY_SUBSCRIPTIONS_PER_CONNECTION_MAX)
          throw new Error(`mercury: ${watchers} watchers need at least ${Math.ceil(watchers / MERCURY_SUBSCRIPTIONS_PER_CONNECTION_MAX)} connections (64 subscriptions each)`);
        const groups: number[][] = Array.from({ length: connections }, () => []);
        for (let watcher = 0; watcher < watchers; watcher++) groups[watcher % connections]!.push(watcher);
        const sockets = await Promise.all(groups.map((ids) => openWatchConnection(`ws://${host}:${port}/v1/watch`, ids, prefix, listener)));
        return {
          async close() {
            await Promise.all(
              sockets.map(
                (socket) =>
                  new Promise<void>((resolve) => {
                    socket.once('close', () => resolve());
                    socket.close();
                  }),
              ),
            );
          },
        };
      },
      stop: () => child.stop(),
    };
  },
};

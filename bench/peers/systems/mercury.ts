/**
 * Mercury under test: `mercury serve` with its defaults (group commit, one fsync per log entry) on loopback.
 *
 * The client is the swap point for Mercury's own richer `connect()` client when it lands: everything the load driver
 * needs is `connectMercury(url)` below. Until then it uses bench/support/raw-http.ts, one keep-alive HTTP/1.1
 * connection per client, and `ws` for watches.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { CLI_PATH } from '../../support/node-process.js';
import { RawHttpConnection } from '../../support/raw-http.js';
import type { ProcessGroup } from '../processes.js';
import type { KvClient, RunningSystem, SystemAdapter, Watch } from '../system.js';

/** Subscriptions per watch connection: the node's limit (WATCH_SUBSCRIPTIONS_PER_CONNECTION_MAX). */
const MERCURY_SUBSCRIPTIONS_PER_CONNECTION_MAX = 64;

function expectOk(status: number, body: Buffer, what: string): void {
  if (status !== 200) throw new Error(`mercury: ${what} answered HTTP ${status}: ${body.toString().slice(0, 200)}`);
}

function isAscii(value: Buffer): boolean {
  for (const byte of value) if (byte >= 0x80) return false;
  return true;
}

/** Keys in the harness are ASCII without reserved characters, so they go into the path as they are. */
export function connectMercury(host: string, port: number): KvClient {
  let open = new RawHttpConnection(host, port);
  // The node closes keep-alive connections idle for a few seconds, which they are while the other systems take their
  // turn: reconnect then, as any HTTP client does.
  const live = (): RawHttpConnection => {
    if (!open.isOpen) open = new RawHttpConnection(host, port);
    return open;
  };
  const connection = { request: (...args: Parameters<RawHttpConnection['request']>) => live().request(...args), close: () => open.close() };
  return {
    async put(key, value) {
      const response = await connection.request('PUT', `/v1/kv/${key}`, value);
      expectOk(response.status, response.body, 'PUT');
    },
    async get(key) {
      const response = await connection.request('GET', `/v1/kv/${key}`);
      if (response.status === 404) return undefined;
      expectOk(response.status, response.body, 'GET');
      return response.body;
    },
    async putBatch(entries) {
      const success = entries.map(([key, value]) =>
        isAscii(value) ? { op: 'put', key, value: value.toString('latin1') } : { op: 'put', key, valueBase64: value.toString('base64') },
      );
      const response = await connection.request('POST', '/v1/txn', Buffer.from(JSON.stringify({ success })), 'application/json');
      expectOk(response.status, response.body, 'POST /v1/txn');
    },
    close() {
      connection.close();
      return Promise.resolve();
    },
  };
}

interface EventsMessage {
  type: string;
  id?: number;
  events?: { type: string; key: string; keyEncoding: string; value?: string; valueEncoding?: string }[];
}

/** One WebSocket to a node with one subscription of `prefix` per id; `listener` gets every put. */
export async function openWatchConnection(url: string, ids: readonly number[], prefix: string, listener: (watcher: number, key: string, value: Buffer) => void): Promise<WebSocket> {
  const socket = new WebSocket(url);
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
  settings: '`mercury serve` defaults: group commit, one fsync per log entry (LMDB)',
  clientDescription:
    'a minimal keep-alive HTTP/1.1 client, one connection per client (bench/support/raw-http.ts, until Mercury\'s own client lands); it costs the driver less CPU per request than a full client library would, which favours Mercury on a shared 2-core machine (see driver CPU); watches over `ws`',
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
      args: [CLI_PATH, 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0'],
      ready: /listening on http:\/\/([\d.]+):(\d+)/,
    });
    const host = child.readyMatch[1]!;
    const port = Number(child.readyMatch[2]);
    return {
      name: 'mercury',
      pid: child.pid,
      dataDir,
      connect: () => Promise.resolve(connectMercury(host, port)),
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

/**
 * TypeScript client: keep-alive connection reuse never fails a call by itself. A pooled connection is retired before
 * the node's advertised idle timeout; when the node closes an idle connection at the very moment the client reuses
 * it (reproduced deterministically: a proxy in front of a real node closes the client's idle connection in the same
 * event-loop turn as the call), a read and a write both succeed, the write applied once. A write that was written
 * and then lost its connection before any answer stays OutcomeUnknownError: the node did apply it.
 */
import assert from 'node:assert/strict';
import { createServer as createHttpServer, get as httpGet } from 'node:http';
import { connect as netConnect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { connect, OutcomeUnknownError } from '../src/index.js';
import { freshConnectionResends, idleBudgetMs, keepAliveTimeoutMs } from '../src/client/keep-alive.js';
import { KEEP_ALIVE_IDLE_MS_DEFAULT, KEEP_ALIVE_MARGIN_MS } from '../src/client/limits.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';

interface RaceProxy {
  readonly url: string;
  /** Connections accepted from the client so far. */
  accepted(): number;
  /** Closes every client connection now (a FIN, as a node closing idle connections does); the node's side stays. */
  closeClientConnections(): void;
  /** Drops the node's next answer and closes that client's connection instead: the request was applied, unanswered. */
  cutAfterNextRequest(): void;
  close(): Promise<void>;
}

/** A TCP proxy to `targetUrl` that can close its client connections at a chosen moment. */
async function startRaceProxy(targetUrl: string): Promise<RaceProxy> {
  const target = new URL(targetUrl);
  const clients = new Set<Socket>();
  const upstreams = new Set<Socket>();
  let accepted = 0;
  let cutNext = false;
  const server: Server = createServer((client) => {
    accepted++;
    const upstream = netConnect({ host: target.hostname, port: Number(target.port) });
    clients.add(client);
    upstreams.add(upstream);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      clients.delete(client);
      upstreams.delete(upstream);
    };
    client.on('error', end).on('close', () => clients.delete(client));
    upstream.on('error', end).on('close', end);
    client.on('data', (chunk: Buffer) => upstream.write(chunk));
    client.on('end', () => upstream.end());
    upstream.on('data', (chunk: Buffer) => {
      if (!cutNext) return void client.write(chunk);
      // The node read the whole request and answered it: the answer is dropped and the client's connection ends.
      cutNext = false;
      client.destroy();
      upstream.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    accepted: () => accepted,
    closeClientConnections: () => {
      for (const client of clients) client.destroy();
      clients.clear();
    },
    cutAfterNextRequest: () => (cutNext = true),
    close: async () => {
      for (const socket of [...clients, ...upstreams]) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function eventually<T>(read: () => Promise<T | undefined>, what: string): Promise<T> {
  for (let i = 0; i < 200; i++) {
    const value = await read();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.fail(`${what} did not happen within 2 s`);
}

describe('client keep-alive', () => {
  let dir: string;
  let node: ServeProcess;
  let proxy: RaceProxy;

  before(async () => {
    dir = makeTempDir('client-keepalive');
    node = await startServe(dir);
    proxy = await startRaceProxy(node.url);
  });

  after(async () => {
    await proxy.close();
    await stopProcess(node.child);
    removeDir(dir);
  });

  test('client keep-alive: the idle timeout is read from Keep-Alive, and kept a margin short of', () => {
    assert.equal(keepAliveTimeoutMs('timeout=5'), 5_000);
    assert.equal(keepAliveTimeoutMs('timeout=5, max=1000'), 5_000);
    assert.equal(keepAliveTimeoutMs('max=10, timeout = 2'), 2_000);
    assert.equal(keepAliveTimeoutMs(['timeout=3']), 3_000);
    assert.equal(keepAliveTimeoutMs('timeout=1.5'), undefined);
    assert.equal(keepAliveTimeoutMs('timeouts=5'), undefined);
    assert.equal(keepAliveTimeoutMs(undefined), undefined);
    assert.equal(keepAliveTimeoutMs('timeout=999999999'), 3_600_000, 'a wild hint is capped');
    assert.equal(idleBudgetMs(5_000), 5_000 - KEEP_ALIVE_MARGIN_MS);
    assert.equal(idleBudgetMs(1_000), 0, 'a 1 s timeout leaves no safe idle time: the connection is not kept');
    assert.equal(idleBudgetMs(undefined), KEEP_ALIVE_IDLE_MS_DEFAULT);
  });

  test('client keep-alive: a node advertises its idle timeout in every answer', async () => {
    const header = await new Promise<string | string[] | undefined>((resolve, reject) => {
      httpGet(`${node.url}/v1/status`, (response) => {
        response.resume();
        resolve(response.headers['keep-alive']);
      }).on('error', reject);
    });
    assert.equal(keepAliveTimeoutMs(header), 5_000, `Keep-Alive: ${String(header)}`);
  });

  test('client keep-alive: a read reused as the node closes the connection is sent again on a fresh one', async () => {
    const client = connect(proxy.url, { attemptsMax: 1 });
    await client.put('race/read', 'r');
    const accepted = proxy.accepted();
    const resends = freshConnectionResends.reads;
    // The same turn: the client's pool still holds the connection, whose FIN has not been read yet.
    proxy.closeClientConnections();
    const read = client.get('race/read');
    assert.equal((await read)?.value.toString(), 'r');
    assert.equal(freshConnectionResends.reads, resends + 1, 'the read went out on the closed connection first');
    assert.equal(proxy.accepted(), accepted + 1);
  });

  test('client keep-alive: a write reused as the node closes the connection is applied exactly once', async () => {
    const client = connect(proxy.url, { attemptsMax: 1 });
    const direct = connect(node.url);
    const { seq } = await client.put('race/warm', 'w');
    for (const [i, write] of [
      () => client.put('race/write', 'once'),
      () => client.txn({ success: [{ op: 'put', key: 'race/txn', value: 'once' }] }),
      () => client.delete('race/warm'),
    ].entries()) {
      await client.status(); // a pooled connection to reuse (the previous resend's fresh connection was not pooled)
      const resends = freshConnectionResends.unwritten;
      proxy.closeClientConnections();
      const result = await write();
      assert.equal(result.seq, seq + i + 1, 'one entry per write');
      assert.equal(freshConnectionResends.unwritten, resends + 1, 'the write found its pooled connection closed before writing');
    }
    assert.equal((await direct.get('race/write'))?.version, 1);
    assert.equal((await direct.get('race/txn'))?.version, 1);
    assert.equal(await direct.get('race/warm'), undefined);
    assert.equal((await direct.status()).seq, seq + 3, 'nothing was applied twice');
  });

  test('client keep-alive: a write cut after it was written is OutcomeUnknownError, and was in fact applied', async () => {
    const client = connect(proxy.url, { attemptsMax: 1 });
    const direct = connect(node.url);
    await client.put('cut/warm', 'w');
    proxy.cutAfterNextRequest();
    await assert.rejects(client.put('cut/write', 'maybe'), (error: unknown) => {
      assert.ok(error instanceof OutcomeUnknownError, String(error));
      assert.equal(error.requestSent, true);
      return true;
    });
    const applied = await eventually(() => direct.get('cut/write'), 'the cut write being applied');
    assert.equal(applied.version, 1, 'sending it again would have applied it twice');
    // A read cut the same way is simply sent again.
    await client.status();
    const resends = freshConnectionResends.reads;
    proxy.cutAfterNextRequest();
    assert.equal((await client.get('cut/write'))?.value.toString(), 'maybe');
    assert.equal(freshConnectionResends.reads, resends + 1);
  });

  test('client keep-alive: a connection idle past its budget is not reused, even when its timer runs late', async () => {
    let connections = 0;
    let requests = 0;
    const server = createHttpServer((req, res) => {
      requests++;
      req.resume();
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"seq":1}');
    });
    // timeout=2 is advertised: the client keeps an idle connection 1 s.
    server.keepAliveTimeout = 2_000;
    server.on('connection', () => connections++);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const client = connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, { attemptsMax: 1 });
      await client.put('budget/a', '1');
      await client.put('budget/a', '2');
      assert.equal(connections, 1, 'a connection within its budget is reused');
      // Hold the event loop past the budget (not past the server's timeout): the retirement timer cannot run.
      const resends = freshConnectionResends.unwritten;
      const until = performance.now() + 1_100;
      while (performance.now() < until);
      await client.put('budget/a', '3');
      assert.equal(freshConnectionResends.unwritten, resends + 1, 'the stale connection was refused before writing');
      assert.equal(connections, 2);
      assert.equal(requests, 3, 'each write reached the server once');
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

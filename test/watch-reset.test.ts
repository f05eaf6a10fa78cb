/**
 * Watch resets (src/api/watch.ts, "snapshot"; docs/decisions.md, record 40): when the log a watch was served from is
 * gone, the node sends the current state as a snapshot on the same connection, after the events it already sent, and
 * the client library hands it to the consumer as snapshotBegin / snapshot / snapshotEnd and goes on. Three ways to get
 * there, each once a bug (review E): the log trimmed past a watch that lagged (the library used to end the watch with
 * PROTOCOL), a replica resynced at or below what its watchers were sent (they used to be left on the abandoned chain,
 * silently), and a client resuming on the root from a seq past its head (a root restored from a backup: the watch used
 * to wait for that seq, skipping the new chain's entries up to it). A fourth, found since: a reset cut off before its
 * done page, resumed on a replica behind the seq the client had before it (the client used to ask for the entries
 * after that seq, and the replica to wait for it). Real nodes on port 0, data in temp dirs; the node that cuts the
 * reset off is a scripted WebSocket server.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import { WebSocketServer } from 'ws';
import { validateConfig } from '../src/config/index.js';
import { connect, type Watch, type WatchEvent } from '../src/index.js';
import { MercuryNode, NODE_LIMITS, NODE_LIMITS_TEST, withLimits } from '../src/node/index.js';
import { WATCH_LIMITS_TEST } from '../src/watch/index.js';
import { request, requestJson } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';
import { eventually } from './support/tree.js';

const EVENT_TIMEOUT_MS = 15_000;

async function put(url: string, key: string, value: string): Promise<number> {
  const response = await request(url, 'PUT', `/v1/kv/${key}`, { body: value });
  assert.equal(response.status, 200, response.body.toString());
  return (JSON.parse(response.body.toString()) as { seq: number }).seq;
}

interface Status {
  seq: number;
  log: { firstSeq: number };
  watch: { laggingSubscriptions: number };
}

function status(url: string): Promise<Status> {
  return requestJson<Status>(url, 'GET', '/v1/status');
}

/** The watch's next event, or a failure naming what was awaited (a missing reset would otherwise hang the test). */
async function nextEvent(watch: Watch, awaited: string): Promise<WatchEvent> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no watch event within ${EVENT_TIMEOUT_MS} ms; awaited ${awaited}`)), EVENT_TIMEOUT_MS);
  });
  try {
    const result = await Promise.race([watch.next(), timeout]);
    assert.ok(result.done !== true, `the watch ended; awaited ${awaited}`);
    return result.value;
  } finally {
    clearTimeout(timer);
  }
}

/** Events up to and including the first one `until` accepts, as "type@seq:key" lines. */
async function eventsUntil(watch: Watch, awaited: string, until: (event: WatchEvent) => boolean): Promise<string[]> {
  const lines: string[] = [];
  for (;;) {
    const event = await nextEvent(watch, `${awaited} (received: ${lines.slice(-6).join(', ')})`);
    lines.push(`${event.type}@${event.seq}${'key' in event ? `:${event.key.toString()}` : ''}`);
    if (until(event)) return lines;
  }
}

describe('watch reset', () => {
  const dir = makeTempDir('watch-reset');
  const nodes: MercuryNode[] = [];
  after(async () => {
    for (const node of nodes.reverse()) await node.close();
    removeDir(dir);
  });

  test('watch reset: a watch whose log was trimmed while it lagged gets the state as a snapshot on the same connection, and goes on', async () => {
    // The stall limit is long, so that the connection that carried events is the one the snapshot comes on (a 4008
    // close and a new connection would hide the reset).
    const node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'trim'), port: 0, logRetainEntries: 3 }), {
      auth: 'off',
      limits: withLimits(NODE_LIMITS, { watch: { ...WATCH_LIMITS_TEST, stallMs: 120_000, peerSilentMs: 240_000 }, log: { trimIntervalMs: 20 } }),
    });
    nodes.push(node);
    await put(node.url, 'k/0', 'first');
    const watch = connect([node.url], { requestTimeoutMs: 5_000, watchBufferBytesMax: 1024 }).watch({ prefix: 'k/', fromSeq: 1 });
    try {
      assert.deepEqual(await eventsUntil(watch, 'the first put', () => true), ['put@1:k/0']);
      // The consumer stops taking events: the library stops reading, the node's queue fills, the subscription leaves
      // the fan-out, and the log is trimmed far past it (20 MiB, more than the sockets' buffers hold).
      const big = 'x'.repeat(512 * 1024);
      let last = 0;
      for (let i = 1; i <= 40; i++) last = await put(node.url, `k/${i}`, big);
      await eventually(
        async () => {
          const now = await status(node.url);
          return now.watch.laggingSubscriptions === 1 && now.log.firstSeq > 20;
        },
        async () => JSON.stringify(await status(node.url)),
      );
      const reached = (event: WatchEvent): boolean => (event.type === 'put' && event.seq === last) || (event.type === 'snapshotEnd' && event.seq >= last);
      const lines = await eventsUntil(watch, `seq ${last}`, reached);
      const begin = lines.findIndex((line) => line.startsWith('snapshotBegin@'));
      assert.ok(begin >= 0, `a reset after the events: ${lines.join(', ')}`);
      const end = lines.findIndex((line) => line.startsWith('snapshotEnd@'));
      assert.ok(end > begin, lines.join(', '));
      const snapshotSeq = Number(lines[begin]!.slice('snapshotBegin@'.length));
      // The snapshot holds every key (k/0 too), then the stream continues after its seq.
      assert.equal(lines.slice(begin + 1, end).length, 41, lines.slice(begin, end + 1).join(', '));
      assert.ok(lines.slice(end + 1).every((line) => Number(/@(\d+)/.exec(line)![1]) > snapshotSeq), lines.join(', '));
      const after = await put(node.url, 'k/after', 'after');
      assert.deepEqual(await eventsUntil(watch, 'the put after the reset', (event) => event.type === 'put' && event.seq === after), [`put@${after}:k/after`]);
    } finally {
      await watch.return();
    }
  });

  test('watch reset: a replica resynced at its own head resets its watchers to the new state, and the stream goes on after it', async () => {
    const root = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'root'), port: 0 }), { auth: 'off', limits: NODE_LIMITS_TEST });
    nodes.push(root);
    await put(root.url, 'k/a', 'a');
    await put(root.url, 'k/b', 'b');
    const replica = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'replica'), port: 0, upstreams: [root.replicationAddress] }), {
      auth: 'off',
      limits: NODE_LIMITS_TEST,
    });
    nodes.push(replica);
    await eventually(
      async () => (await status(replica.url)).seq === root.store.head().seq,
      async () => JSON.stringify(await status(replica.url)),
    );
    let subscribed = false;
    const watch = connect([replica.url], { requestTimeoutMs: 5_000 }).watch({ prefix: 'k/', onSubscribed: () => (subscribed = true) });
    try {
      await eventually(
        () => Promise.resolve(subscribed),
        () => 'the watch was not confirmed',
      );
      const seqC = await put(root.url, 'k/c', 'c');
      assert.deepEqual(await eventsUntil(watch, 'the put of k/c', () => true), [`put@${seqC}:k/c`]);

      // The operator resyncs the replica: it installs a snapshot at the root's head, which is its own head.
      const resync = await request(replica.url, 'POST', '/v1/replication/resync');
      assert.equal(resync.status, 202, resync.body.toString());
      const reset = await eventsUntil(watch, 'a reset to the installed state', (event) => event.type === 'snapshotEnd');
      assert.deepEqual(reset, [`snapshotBegin@${seqC}`, `snapshot@${seqC}:k/a`, `snapshot@${seqC}:k/b`, `snapshot@${seqC}:k/c`, `snapshotEnd@${seqC}`]);
      const seqD = await put(root.url, 'k/d', 'd');
      assert.deepEqual(await eventsUntil(watch, 'the put of k/d', () => true), [`put@${seqD}:k/d`]);
    } finally {
      await watch.return();
    }
  });

  test('watch reset: the root answers a fromSeq past its head with a snapshot at its head, which the client takes as a reset', async () => {
    const node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'ahead'), port: 0 }), { auth: 'off', limits: NODE_LIMITS_TEST });
    nodes.push(node);
    await put(node.url, 'k/a', 'a');
    const head = await put(node.url, 'k/b', 'b');
    // A client that followed another chain to seq head + 4 (this root was restored from an older backup since).
    const subscribedFrom: number[] = [];
    const watch = connect([node.url], { requestTimeoutMs: 5_000 }).watch({ prefix: 'k/', fromSeq: head + 5, onSubscribed: (fromSeq) => subscribedFrom.push(fromSeq) });
    try {
      const reset = await eventsUntil(watch, 'a reset to the root state', (event) => event.type === 'snapshotEnd');
      assert.deepEqual(subscribedFrom, [head + 5]);
      assert.deepEqual(reset, [`snapshotBegin@${head}`, `snapshot@${head}:k/a`, `snapshot@${head}:k/b`, `snapshotEnd@${head}`]);
      assert.equal(watch.resumeSeq, head + 1, 'resumes after the snapshot, not from the seq of the abandoned chain');
      const next = await put(node.url, 'k/c', 'c');
      assert.equal(next, head + 1);
      assert.deepEqual(await eventsUntil(watch, 'the put of k/c', () => true), [`put@${next}:k/c`]);
    } finally {
      await watch.return();
    }
  });

  test('watch reset: a reset cut off before done resumes on a replica behind the old seq with a whole snapshot at once, not a wait for that seq', async () => {
    const root = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'cut-root'), port: 0 }), { auth: 'off', limits: NODE_LIMITS_TEST });
    nodes.push(root);
    const replica = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'cut-replica'), port: 0, upstreams: [root.replicationAddress] }), {
      auth: 'off',
      limits: NODE_LIMITS_TEST,
    });
    nodes.push(replica);
    // Written once the replica follows, so that its log holds every entry (the subscribe's hash is checked there).
    await eventually(
      async () => (await status(replica.url)).seq === root.store.head().seq && (await request(replica.url, 'GET', '/readyz')).status === 200,
      async () => JSON.stringify(await status(replica.url)),
    );
    await put(root.url, 'k/a', 'a');
    const seqB = await put(root.url, 'k/b', 'b');
    const head = await put(root.url, 'k/c', 'c');
    await eventually(
      async () => (await status(replica.url)).seq === head,
      async () => JSON.stringify(await status(replica.url)),
    );
    // The first node the client reaches had taken it to seq 60 of a chain, then began a reset at seqB, the state of
    // the chain this replica follows, and shut down before the reset's done page. The client moves to the replica,
    // which is at `head`, far below 60: asked for the entries after 60, it would wait for seq 60 and leave the
    // consumer holding a part of a state meanwhile.
    const fake = new WebSocketServer({ port: 0, host: '127.0.0.1', path: '/v1/watch' });
    await new Promise<void>((resolve) => fake.once('listening', () => resolve()));
    fake.on('connection', (socket) =>
      socket.on('message', (data: Buffer) => {
        const subscribe = JSON.parse(data.toString('utf8')) as { id: number };
        const key = { key: 'k/a', keyEncoding: 'utf8', value: 'a', valueEncoding: 'utf8', createSeq: seqB - 1, modSeq: seqB - 1, version: 1 };
        for (const message of [
          { type: 'subscribed', fromSeq: 10 },
          { type: 'events', seq: 60, timeMs: 1, hash: 'ab'.repeat(32), events: [{ type: 'put', key: 'k/x', keyEncoding: 'utf8', value: 'x', valueEncoding: 'utf8', modSeq: 60 }] },
          { type: 'snapshot', seq: seqB, items: [key], done: false, begin: true },
        ])
          socket.send(JSON.stringify({ id: subscribe.id, ...message }));
        socket.close(1001, 'node is shutting down; reconnect and resume');
        fake.close();
      }),
    );
    const fakeUrl = `http://127.0.0.1:${(fake.address() as AddressInfo).port}`;
    const subscribedFrom: number[] = [];
    const watch = connect([fakeUrl, replica.url], { requestTimeoutMs: 5_000, watchReconnectDelayMsBase: 1, watchReconnectDelayMsMax: 5 }).watch({
      prefix: 'k/',
      fromSeq: 10,
      afterHash: 'cd'.repeat(32),
      onSubscribed: (fromSeq) => subscribedFrom.push(fromSeq),
    });
    try {
      const events = await eventsUntil(watch, 'a whole snapshot from the replica', (event) => event.type === 'snapshotEnd');
      assert.deepEqual(events, [
        'put@60:k/x',
        `snapshotBegin@${seqB}`,
        `snapshot@${seqB}:k/a`,
        `snapshotBegin@${head}`,
        `snapshot@${head}:k/a`,
        `snapshot@${head}:k/b`,
        `snapshot@${head}:k/c`,
        `snapshotEnd@${head}`,
      ]);
      assert.deepEqual(subscribedFrom, [10, seqB + 1], 'resumed after the reset\'s seq, not after 60');
    } finally {
      await watch.return();
      fake.close();
    }
  });
});

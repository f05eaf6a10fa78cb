/**
 * Resuming watches: across a node restart (the client is closed with 1001 and resumes on the new process), and from
 * a seq the log no longer holds (a snapshot of the subscription's keys at a seq, marked as such, then the stream from
 * that seq, never a "compacted" error). The log is kept short (logRetainEntries) so that the node's trimmer, run
 * every 20 ms in these tests (a limit), drops the early entries during the test.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS, withLimits } from '../src/node/index.js';
import { WATCH_LIMITS_TEST } from '../src/watch/index.js';
import { WatchCloseCode } from '../src/api/index.js';
import { request, requestJson } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';
import { assertEventsMatchLog, expectedEvents, readLog, WatchClient, type ServerMessage, type SnapshotItem } from './support/watch.js';

async function put(url: string, key: string, value: string): Promise<number> {
  const response = await request(url, 'PUT', `/v1/kv/${key}`, { body: value });
  assert.equal(response.status, 200, response.body.toString());
  return (JSON.parse(response.body.toString()) as { seq: number }).seq;
}

async function status(url: string): Promise<{ seq: number; log: { firstSeq: number; entries: number } }> {
  return requestJson(url, 'GET', '/v1/status');
}

interface RangeJson {
  items: { key: string; keyEncoding: string; value: string; valueEncoding: string; createSeq: number; modSeq: number; version: number }[];
  seq: number;
}

test('watch: a client closed by a node restart resumes on the new process with exactly the rest', async () => {
  const dir = makeTempDir('watch-restart');
  try {
    let node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0 }), { auth: 'off', limits: withLimits(NODE_LIMITS, { watch: WATCH_LIMITS_TEST }) });
    const client = await WatchClient.connect(node.url);
    await client.subscribe('r', ['r/']);
    for (let i = 0; i < 6; i++) await put(node.url, `r/k${i % 3}`, `first life ${i}`);
    const before = (await status(node.url)).seq;
    await client.waitForSeq('r', before);
    const last = Math.max(...client.of('r').map((message) => ('seq' in message ? message.seq : 0)));
    await node.close();
    const closed = await client.closed;
    assert.equal(closed.code, WatchCloseCode.GOING_AWAY);
    assert.match(closed.reason, /shutting down/);

    node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0 }), { auth: 'off', limits: withLimits(NODE_LIMITS, { watch: WATCH_LIMITS_TEST }) });
    try {
      for (let i = 0; i < 4; i++) await put(node.url, `r/k${i}`, `second life ${i}`);
      const resumed = await WatchClient.connect(node.url);
      await resumed.subscribe('r', ['r/'], { fromSeq: last + 1 });
      for (let i = 0; i < 3; i++) await put(node.url, `r/k${i}`, `live ${i}`);
      const head = (await status(node.url)).seq;
      await resumed.waitForSeq('r', head);
      const log = await readLog(node.url, 1);
      const selection = { prefixes: [Buffer.from('r/')] };
      assertEventsMatchLog(client.eventsOf('r'), expectedEvents(log.filter((entry) => entry.seq <= last), selection), 'first life');
      assertEventsMatchLog(resumed.eventsOf('r'), expectedEvents(log.filter((entry) => entry.seq > last), selection), 'resumed');
      resumed.close();
      await resumed.closed;
    } finally {
      await node.close();
    }
  } finally {
    removeDir(dir);
  }
});

test('watch: a fromSeq older than the retained log gets a snapshot of its keys at a seq, then the stream from there', async () => {
  const dir = makeTempDir('watch-snapshot');
  const node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0, logRetainEntries: 3 }), { auth: 'off',
    limits: withLimits(NODE_LIMITS, { watch: WATCH_LIMITS_TEST, log: { trimIntervalMs: 20 } }),
  });
  const clients: WatchClient[] = [];
  try {
    const url = node.url;
    // State under the watched prefixes, built by puts, overwrites, a delete and a range delete; values of 100 bytes
    // so that a snapshot takes several pages (256 bytes each in the test limits).
    for (let i = 0; i < 12; i++) await put(url, `snap/a/k${String(i).padStart(2, '0')}`, `${i}`.padEnd(100, '.'));
    for (let i = 0; i < 5; i++) await put(url, `snap/c/k${i}`, `c${i}`.padEnd(100, '-'));
    await put(url, 'snap/a/k03', 'overwritten'.padEnd(100, '!'));
    await put(url, 'snap/b/k0', 'not watched');
    await request(url, 'DELETE', '/v1/kv/snap/a/k05');
    await requestJson(url, 'POST', '/v1/txn', { body: JSON.stringify({ success: [{ op: 'deleteRange', start: 'snap/c/k1', end: 'snap/c/k3' }] }), headers: { 'content-type': 'application/json' } });
    // Wait for the trimmer to drop the early entries.
    const deadline = performance.now() + 5_000;
    while ((await status(url)).log.firstSeq <= 2) {
      assert.ok(performance.now() < deadline, 'the log was not trimmed within 5 s');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }

    const subscribe = async (id: string, prefixes: string[], keysOnly = false): Promise<WatchClient> => {
      const client = await WatchClient.connect(url);
      clients.push(client);
      const answer = await client.subscribe(id, prefixes, { fromSeq: 1, ...(keysOnly ? { filters: { keysOnly } } : {}) });
      assert.deepEqual(answer, { type: 'subscribed', id, fromSeq: 1 });
      return client;
    };
    // Four at once with two snapshot slots in the test limits: the others wait for a slot, none is refused.
    const watched = await subscribe('ac', ['snap/c/', 'snap/a/']);
    const keysOnly = await subscribe('keys', ['snap/a/'], true);
    const extra = [await subscribe('x1', ['snap/']), await subscribe('x2', ['snap/b/'])];
    const snapshotOf = async (client: WatchClient, id: string): Promise<{ seq: number; items: SnapshotItem[]; pages: number }> => {
      const done = (await client.waitFor((message) => message.type === 'snapshot' && message.id === id && message.done)) as Extract<ServerMessage, { type: 'snapshot' }>;
      const pages = client.of(id).filter((message): message is Extract<ServerMessage, { type: 'snapshot' }> => message.type === 'snapshot');
      assert.ok(pages.every((page) => page.seq === done.seq), 'every page of a snapshot is at one seq');
      assert.ok(pages.slice(0, -1).every((page) => !page.done));
      return { seq: done.seq, items: pages.flatMap((page) => page.items), pages: pages.length };
    };

    const snapshot = await snapshotOf(watched, 'ac');
    const head = (await status(url)).seq;
    assert.equal(snapshot.seq, head, 'the snapshot is at the head seq');
    assert.ok(snapshot.pages > 3, `the snapshot came in ${snapshot.pages} pages`);
    // The items are the current state of exactly the watched keys, in key order, with their records.
    const a = await requestJson<RangeJson>(url, 'GET', '/v1/kv?prefix=snap/a/&limit=1000');
    const c = await requestJson<RangeJson>(url, 'GET', '/v1/kv?prefix=snap/c/&limit=1000');
    assert.deepEqual(snapshot.items, [...a.items, ...c.items]);
    assert.equal(snapshot.items.length, 11 + 3);
    const keys = await snapshotOf(keysOnly, 'keys');
    assert.deepEqual(keys.items, a.items.map(({ value: _value, valueEncoding: _encoding, ...rest }) => rest));
    for (const [i, client] of extra.entries()) await snapshotOf(client, `x${i + 1}`);
    // Nothing but the snapshot came before it was done: no events, and never an error.
    for (const client of [watched, keysOnly, ...extra]) assert.ok(client.messages.every((message) => message.type !== 'error' && message.type !== 'events'));

    // Then the stream continues from the snapshot's seq.
    const seqs = [await put(url, 'snap/a/k99', 'after'), await put(url, 'snap/b/k1', 'unwatched'), await put(url, 'snap/c/k0', 'after')];
    await watched.waitForSeq('ac', seqs[2]!);
    const log = await readLog(url, snapshot.seq + 1);
    assertEventsMatchLog(watched.eventsOf('ac'), expectedEvents(log, { prefixes: [Buffer.from('snap/a/'), Buffer.from('snap/c/')] }), 'after the snapshot');
    assert.ok(watched.eventsOf('ac').every((message) => message.seq > snapshot.seq));

    // A fromSeq that the log still holds gets no snapshot. Read it once the trimmer has caught up with the puts above
    // (the log holds at most logRetainEntries), or it may trim that seq before the subscription reads it.
    const settleDeadline = performance.now() + 5_000;
    let settled = await status(url);
    while (settled.log.entries > 3) {
      assert.ok(performance.now() < settleDeadline, 'the log was not trimmed to 3 entries within 5 s');
      await new Promise((resolve) => setTimeout(resolve, 10));
      settled = await status(url);
    }
    const retained = settled.log.firstSeq;
    const plain = await WatchClient.connect(url);
    clients.push(plain);
    await plain.subscribe('plain', ['snap/'], { fromSeq: retained });
    await plain.waitForSeq('plain', seqs[2]!);
    assert.ok(plain.messages.every((message) => message.type !== 'snapshot'));
    assertEventsMatchLog(plain.eventsOf('plain'), expectedEvents(await readLog(url, retained), { prefixes: [Buffer.from('snap/')] }), 'retained');
    assert.match(node.metrics.render(), /^mercury_watch_snapshots_total 4$/m);
  } finally {
    for (const client of clients) client.terminate();
    await node.close();
    removeDir(dir);
  }
});

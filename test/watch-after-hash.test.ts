/**
 * Resuming a watch with the hash of the last entry applied (`afterHash`, src/api/watch.ts; docs/decisions.md, record
 * 45). A client resuming by seq alone on a root restored from an older backup, whose new chain has since passed the
 * client's seq, used to be sent the new chain's entries from there on, over a state built from the old chain: keys it
 * held could never have existed in the new chain (found by review). With the hash, the node sees that its entry at
 * fromSeq - 1 is another and answers with its state as a snapshot (a reset). Real nodes on port 0 (or a port reused
 * across a restart), data in temp dirs, backups made and restored by the CLI.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import { connect, type Watch, type WatchEvent } from '../src/index.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../src/node/index.js';
import { request, requestJson } from './support/http.js';
import { freePort } from './support/net.js';
import { makeTempDir, removeDir, runCli } from './support/process.js';
import { eventually } from './support/tree.js';
import { readLog, WatchClient, type ServerMessage, type SubscribeOptions } from './support/watch.js';

const EVENT_TIMEOUT_MS = 15_000;
const OTHER_CHAIN_HASH = 'ab'.repeat(32);

async function put(url: string, key: string, value: string): Promise<number> {
  const response = await request(url, 'PUT', `/v1/kv/${key}`, { body: value });
  assert.equal(response.status, 200, response.body.toString());
  return (JSON.parse(response.body.toString()) as { seq: number }).seq;
}

async function hashAt(url: string, seq: number): Promise<string> {
  const entry = (await readLog(url, seq))[0];
  assert.equal(entry?.seq, seq);
  return entry.hash;
}

/** The node's keys under `prefix` as "key=value" lines, in key order. */
async function stateOf(url: string, prefix: string): Promise<string[]> {
  const page = await requestJson<{ items: { key: string; value: string }[] }>(url, 'GET', `/v1/kv?prefix=${encodeURIComponent(prefix)}&limit=1000`);
  return page.items.map((item) => `${item.key}=${item.value}`);
}

/**
 * A consumer of a watch that keeps the state the events build, as an application does: puts and deletes change it,
 * a snapshot replaces it. `lines` records what arrived, as "type@seq:key".
 */
class Consumer {
  readonly state = new Map<string, string>();
  readonly lines: string[] = [];
  private snapshot: Map<string, string> | undefined;

  constructor(readonly watch: Watch) {}

  /** Takes events until one that `until` accepts; fails naming what was awaited if none comes in time. */
  async takeUntil(awaited: string, until: (event: WatchEvent) => boolean): Promise<void> {
    for (;;) {
      const event = await this.next(awaited);
      this.apply(event);
      if (until(event)) return;
    }
  }

  sortedState(): string[] {
    return Array.from(this.state, ([key, value]) => `${key}=${value}`).sort();
  }

  private async next(awaited: string): Promise<WatchEvent> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no watch event within ${EVENT_TIMEOUT_MS} ms; awaited ${awaited}; received ${this.lines.slice(-8).join(', ')}`)), EVENT_TIMEOUT_MS);
    });
    try {
      const result = await Promise.race([this.watch.next(), timeout]);
      assert.ok(result.done !== true, `the watch ended; awaited ${awaited}`);
      return result.value;
    } finally {
      clearTimeout(timer);
    }
  }

  private apply(event: WatchEvent): void {
    this.lines.push(`${event.type}@${event.seq}${'key' in event ? `:${event.key.toString()}` : ''}`);
    switch (event.type) {
      case 'put':
        this.state.set(event.key.toString(), event.value?.toString() ?? '');
        break;
      case 'delete':
        this.state.delete(event.key.toString());
        break;
      case 'snapshotBegin':
        this.snapshot = new Map();
        break;
      case 'snapshot':
        this.snapshot?.set(event.key.toString(), event.value?.toString() ?? '');
        break;
      case 'snapshotEnd':
        this.state.clear();
        for (const [key, value] of this.snapshot ?? []) this.state.set(key, value);
        this.snapshot = undefined;
        break;
      default:
        break;
    }
  }
}

function ofType<T extends ServerMessage['type']>(messages: readonly ServerMessage[], type: T): Extract<ServerMessage, { type: T }>[] {
  return messages.filter((message): message is Extract<ServerMessage, { type: T }> => message.type === type);
}

describe('watch after hash', () => {
  const dir = makeTempDir('watch-after-hash');
  const nodes: MercuryNode[] = [];
  const start = async (dataDir: string, fields: Record<string, unknown> = {}): Promise<MercuryNode> => {
    const node = await MercuryNode.start(validateConfig({ dataDir: join(dir, dataDir), port: 0, ...fields }), { auth: 'off', limits: NODE_LIMITS_TEST });
    nodes.push(node);
    return node;
  };
  const stop = async (node: MercuryNode): Promise<void> => {
    await node.close();
    nodes.splice(nodes.indexOf(node), 1);
  };
  after(async () => {
    for (const node of nodes.reverse()) await node.close();
    removeDir(dir);
  });

  test('watch after hash: a client that followed a chain to seq N and resumes on the root restored from an older backup, written past N since, gets the new state as a reset, not the new chain\'s entries over its old state (found by review)', async () => {
    const port = await freePort();
    const first = await start('restore', { port, replicationPort: 0 });
    const backupSeq = await put(first.url, 'k/a', 'a1');
    const backup = join(dir, 'restore.snap');
    const saved = await runCli(['snapshot', 'save', backup, '--url', first.url]);
    assert.equal(saved.code, 0, saved.stderr);
    await put(first.url, 'k/b', 'b-lost');
    const lostSeq = await put(first.url, 'k/c', 'c-lost');

    const watch = connect([first.url], { requestTimeoutMs: 5_000, watchReconnectDelayMsBase: 20, watchReconnectDelayMsMax: 200 }).watch({ prefix: 'k/', fromSeq: 1 });
    const consumer = new Consumer(watch);
    try {
      await consumer.takeUntil(`seq ${lostSeq}`, (event) => event.seq === lostSeq);
      assert.deepEqual(consumer.sortedState(), ['k/a=a1', 'k/b=b-lost', 'k/c=c-lost']);
      assert.equal(watch.resumeSeq, lostSeq + 1);
      assert.equal(watch.resumeHash, await hashAt(first.url, lostSeq), 'the client holds the hash of the last entry it received');

      // The root is lost and restored from the backup; the new chain passes the client's seq before it reconnects
      // (written while the restored root listens elsewhere), then the root comes back on the address the watch uses.
      await stop(first);
      const restoredDir = join(dir, 'restored');
      const restored = await runCli(['snapshot', 'restore', backup, '--data-dir', restoredDir]);
      assert.equal(restored.code, 0, restored.stderr);
      let node = await start('restored');
      for (const key of ['d', 'e', 'f', 'g']) await put(node.url, `k/${key}`, `${key}1`);
      const head = node.store.head().seq;
      assert.ok(head > lostSeq && backupSeq < lostSeq, `the new chain (head ${head}) passed the client's seq ${lostSeq}`);
      await stop(node);
      node = await start('restored', { port, replicationPort: 0 });

      const seen = consumer.lines.length;
      await consumer.takeUntil('a reset to the restored root\'s state', (event) => event.type === 'snapshotEnd' || (event.type === 'put' && event.seq === head));
      const resumed = consumer.lines.slice(seen);
      assert.deepEqual(
        resumed,
        [`snapshotBegin@${head}`, ...['a', 'd', 'e', 'f', 'g'].map((key) => `snapshot@${head}:k/${key}`), `snapshotEnd@${head}`],
        'a reset, not the new chain\'s entries after the old seq',
      );
      assert.deepEqual(consumer.sortedState(), await stateOf(node.url, 'k/'), 'the consumer holds the restored root\'s state');
      assert.equal(watch.resumeHash, await hashAt(node.url, head));

      // The stream goes on after the reset.
      const next = await put(node.url, 'k/h', 'h1');
      await consumer.takeUntil('the put after the reset', (event) => event.seq === next);
      assert.deepEqual(consumer.lines.slice(-1), [`put@${next}:k/h`]);
      assert.deepEqual(consumer.sortedState(), await stateOf(node.url, 'k/'));
    } finally {
      await watch.return();
    }
  });

  test('watch after hash: the node\'s own hash resumes with the entries after fromSeq, whether fromSeq - 1 is the head or inside the log; messages carry the hash of their seq', async () => {
    const node = await start('same');
    const seq1 = await put(node.url, 's/a', 'a1');
    const seq2 = await put(node.url, 's/b', 'b1');
    const client = await WatchClient.connect(node.url);
    try {
      // fromSeq - 1 inside the log: the catch-up read checks it.
      assert.equal((await client.subscribe('old', ['s/'], { fromSeq: seq1 + 1, afterHash: await hashAt(node.url, seq1) })).type, 'subscribed');
      // fromSeq - 1 at the head: checked against the latest published hash.
      assert.equal((await client.subscribe('head', ['s/'], { fromSeq: seq2 + 1, afterHash: await hashAt(node.url, seq2) })).type, 'subscribed');
      const seq3 = await put(node.url, 's/c', 'c1');
      await client.waitFor((message) => message.type === 'events' && message.id === 'old' && message.seq === seq3);
      await client.waitFor((message) => message.type === 'events' && message.id === 'head' && message.seq === seq3);
      assert.deepEqual(
        ofType(client.of('old'), 'events').map((message) => [message.seq, message.hash]),
        [
          [seq2, await hashAt(node.url, seq2)],
          [seq3, await hashAt(node.url, seq3)],
        ],
      );
      assert.deepEqual(
        ofType(client.of('head'), 'events').map((message) => [message.seq, message.hash]),
        [[seq3, await hashAt(node.url, seq3)]],
      );
      assert.equal(ofType(client.messages, 'snapshot').length, 0, 'no reset');
      // Progress names the hash of its seq too (an entry that selects nothing is told by progress).
      const other = await put(node.url, 'elsewhere', 'x');
      const progress = (await client.waitFor((message) => message.type === 'progress' && message.id === 'head' && message.seq === other, 5_000)) as { hash?: string };
      assert.equal(progress.hash, await hashAt(node.url, other));
    } finally {
      client.close();
    }
  });

  test('watch after hash: another chain\'s hash gets a reset at the head, whether fromSeq - 1 is the head or inside the log', async () => {
    const node = await start('other');
    const seq1 = await put(node.url, 'o/a', 'a1');
    const seq2 = await put(node.url, 'o/b', 'b1');
    const headHash = await hashAt(node.url, seq2);
    const client = await WatchClient.connect(node.url);
    try {
      for (const [id, fromSeq] of [
        ['old', seq1 + 1],
        ['head', seq2 + 1],
      ] as const) {
        assert.equal((await client.subscribe(id, ['o/'], { fromSeq, afterHash: OTHER_CHAIN_HASH })).type, 'subscribed');
        await client.waitFor((message) => message.type === 'snapshot' && message.id === id && message.done);
        const pages = ofType(client.of(id), 'snapshot');
        assert.equal(pages[0]!.begin, true);
        assert.deepEqual(
          pages.flatMap((page) => page.items.map((item) => item.key)),
          ['o/a', 'o/b'],
        );
        assert.deepEqual([pages.at(-1)!.seq, pages.at(-1)!.hash], [seq2, headHash], 'the done page names the hash of its seq');
        assert.equal(ofType(client.of(id), 'events').length, 0, 'no entries of the node\'s chain after a seq of another');
      }
      const seq3 = await put(node.url, 'o/c', 'c1');
      for (const id of ['old', 'head']) await client.waitFor((message) => message.type === 'events' && message.id === id && message.seq === seq3);
    } finally {
      client.close();
    }
  });

  test('watch after hash: a malformed afterHash, or one without a fromSeq >= 2, is refused with INVALID_ARGUMENT naming the rule', async () => {
    const node = await start('refused');
    await put(node.url, 'r/a', 'a1');
    const hash = await hashAt(node.url, 1);
    const client = await WatchClient.connect(node.url);
    try {
      const cases: [string, SubscribeOptions, RegExp][] = [
        ['upper', { fromSeq: 2, afterHash: hash.toUpperCase() }, /"afterHash" must be the hash of entry fromSeq - 1 as 64 lowercase hex digits/],
        ['short', { fromSeq: 2, afterHash: hash.slice(1) }, /64 lowercase hex digits/],
        ['long', { fromSeq: 2, afterHash: `${hash}00` }, /64 lowercase hex digits/],
        ['not-hex', { fromSeq: 2, afterHash: `${hash.slice(2)}zz` }, /64 lowercase hex digits/],
        ['number', { fromSeq: 2, afterHash: 7 }, /64 lowercase hex digits/],
        ['null', { fromSeq: 2, afterHash: null }, /64 lowercase hex digits/],
        ['no-from', { afterHash: hash }, /needs a "fromSeq" >= 2/],
        ['from-1', { fromSeq: 1, afterHash: hash }, /needs a "fromSeq" >= 2/],
      ];
      for (const [id, fields, message] of cases) {
        const answer = await client.subscribe(id, ['r/'], fields);
        assert.equal(answer.type, 'error', `${id}: ${JSON.stringify(answer)}`);
        assert.equal((answer as { code: string }).code, 'INVALID_ARGUMENT', id);
        assert.match((answer as { message: string }).message, message, id);
      }
      // Nothing was registered: the ids are free, and a valid afterHash is taken.
      assert.equal((await client.subscribe('upper', ['r/'], { fromSeq: 2, afterHash: hash })).type, 'subscribed');
    } finally {
      client.close();
    }
  });

  test('watch after hash: a replica behind the client checks the hash when it gets there: its own chain\'s hash streams on, another chain\'s gets a reset', async () => {
    const replicationPort = await freePort();
    let root = await start('behind-root', { replicationPort });
    await put(root.url, 'b/a', 'a1');
    let replica = await start('behind-replica', { upstreams: [`127.0.0.1:${replicationPort}`] });
    await eventually(
      () => Promise.resolve(replica.store.head().seq === 1),
      () => `replica at ${replica.store.head().seq}`,
    );
    await stop(replica);
    await put(root.url, 'b/b', 'b1');
    const clientSeq = await put(root.url, 'b/c', 'c1');
    const clientHash = await hashAt(root.url, clientSeq);
    await stop(root);

    // The replica comes back while its upstream is down: it is behind the clients, which followed the root.
    replica = await start('behind-replica', { upstreams: [`127.0.0.1:${replicationPort}`] });
    assert.equal(replica.store.head().seq, 1);
    const client = await WatchClient.connect(replica.url);
    try {
      assert.equal((await client.subscribe('same', ['b/'], { fromSeq: clientSeq + 1, afterHash: clientHash })).type, 'subscribed');
      assert.equal((await client.subscribe('other', ['b/'], { fromSeq: clientSeq + 1, afterHash: OTHER_CHAIN_HASH })).type, 'subscribed');
      root = await start('behind-root', { replicationPort });
      const next = await put(root.url, 'b/d', 'd1');
      await client.waitFor((message) => message.type === 'events' && message.id === 'same' && message.seq === next, EVENT_TIMEOUT_MS);
      await client.waitFor((message) => message.type === 'snapshot' && message.id === 'other' && message.done, EVENT_TIMEOUT_MS);
      assert.deepEqual(
        ofType(client.of('same'), 'events').map((message) => message.seq),
        [next],
        'the replica\'s chain is the client\'s: the entries after it, no reset',
      );
      assert.equal(ofType(client.of('same'), 'snapshot').length, 0);
      const pages = ofType(client.of('other'), 'snapshot');
      assert.equal(pages[0]!.begin, true);
      const resetSeq = pages.at(-1)!.seq;
      assert.ok(resetSeq >= clientSeq, `the reset is at the replica's state once it got there (${resetSeq})`);
      assert.equal(pages.at(-1)!.hash, await hashAt(replica.url, resetSeq));
      const keys = pages.flatMap((page) => page.items.map((item) => item.key));
      assert.deepEqual(keys, ['b/a', 'b/b', 'b/c', 'b/d'].slice(0, resetSeq));
      assert.ok(
        ofType(client.of('other'), 'events').every((message) => message.seq > resetSeq),
        'no entry before the reset',
      );
    } finally {
      client.close();
    }
  });
});

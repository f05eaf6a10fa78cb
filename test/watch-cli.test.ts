/**
 * `mercury watch` as a user runs it: a child process against a node on port 0. One line per change (human or JSON),
 * Ctrl-C exits 0, and every failure is one stderr line with the usual exit codes (2 usage, 3 unreachable, 1 refused
 * or closed by the node, with the --from that resumes). A snapshot is framed by marker lines: `snapshotBegin` and
 * `snapshotEnd` around a first one, `reset` when the node replaces the stream in-band (docs/decisions.md record 40).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS, NODE_LIMITS_TEST, withLimits } from '../src/node/index.js';
import { WATCH_LIMITS_TEST } from '../src/watch/index.js';
import { request, requestJson } from './support/http.js';
import { makeTempDir, removeDir, runCli, RunningClis, startCli, type RunningCli } from './support/process.js';
import { eventually } from './support/tree.js';
import { readLog } from './support/watch.js';

function startWatch(args: readonly string[]): RunningCli {
  return startCli(['watch', ...args]);
}

async function waitForLines(running: RunningCli, count: number, timeoutMs = 10_000): Promise<string[]> {
  const deadline = performance.now() + timeoutMs;
  while (true) {
    const lines = running.stdout().split('\n').filter((line) => line.length > 0);
    if (lines.length >= count) return lines;
    assert.ok(performance.now() < deadline, `only ${lines.length} lines within ${timeoutMs} ms: ${running.stdout()} / ${running.stderr()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('cli watch', () => {
  let dir: string;
  let node: MercuryNode;
  let url: string;

  const put = async (key: string, value: string | Buffer): Promise<void> => {
    assert.equal((await request(url, 'PUT', `/v1/kv/${key}`, { body: value })).status, 200);
  };

  before(async () => {
    dir = makeTempDir('watch-cli');
    node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0 }), { auth: 'off', limits: withLimits(NODE_LIMITS, { watch: WATCH_LIMITS_TEST }) });
    url = node.url;
    await put('app/a', '1');
    await put('other/x', 'ignored');
    await put('app/b', 'two words');
    await request(url, 'DELETE', '/v1/kv/app/a');
  });

  after(async () => {
    await node.close();
    removeDir(dir);
  });

  test('cli: mercury watch prints one line per change and exits 0 on Ctrl-C', async () => {
    const human = startWatch(['app/', '--from', '1', '--url', url]);
    const json = startWatch(['app/', '--from', '1', '--json', '--url', url]);
    assert.deepEqual(await waitForLines(human, 3), ['1 put app/a 1', '3 put app/b "two words"', '4 delete app/a']);
    const events = (await waitForLines(json, 3)).map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.type !== 'progress');
    // Each change carries the hash of its entry: `--from SEQ+1 --after-hash HASH` resumes after it.
    const hashes = new Map((await readLog(url)).map((entry) => [entry.seq, entry.hash]));
    assert.deepEqual(
      events.slice(0, 3).map((event) => [event.seq, event.hash]),
      [1, 3, 4].map((seq) => [seq, hashes.get(seq)]),
    );
    assert.deepEqual(events.slice(0, 3).map(({ hash: _hash, ...event }) => event), [
      { seq: 1, type: 'put', key: 'app/a', keyEncoding: 'utf8', value: '1', valueEncoding: 'utf8', modSeq: 1 },
      { seq: 3, type: 'put', key: 'app/b', keyEncoding: 'utf8', value: 'two words', valueEncoding: 'utf8', modSeq: 3 },
      { seq: 4, type: 'delete', key: 'app/a', keyEncoding: 'utf8', modSeq: 4 },
    ]);
    // Live changes follow, binary values shown as base64.
    await put('app/bin', Buffer.from([0xff, 0x00]));
    assert.equal((await waitForLines(human, 4))[3], '5 put app/bin base64:/wA=');
    // JSON mode also prints progress (heartbeats every 200 ms in the test limits), so a script knows where to resume.
    const deadline = performance.now() + 5_000;
    while (!json.stdout().includes('{"type":"progress","seq":5,"hash":"')) {
      assert.ok(performance.now() < deadline, json.stdout());
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    for (const running of [human, json]) {
      running.child.kill('SIGINT');
      assert.equal(await running.exited, 0);
      assert.equal(running.stderr(), '');
    }
  });

  test('cli: mercury watch fails with one line and the usual exit codes', async () => {
    const usage = await runCli(['watch', '--url', url]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /^mercury: watch needs a PREFIX[^\n]*\n$/);
    const unreachable = await runCli(['watch', 'app/', '--url', 'http://127.0.0.1:1']);
    assert.equal(unreachable.code, 3);
    assert.match(unreachable.stderr, /^mercury: cannot reach ws:\/\/127\.0\.0\.1:1\/v1\/watch[^\n]*\n$/);
    const refused = await runCli(['watch', 'x'.repeat(1025), '--url', url]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^mercury: PREFIX_TOO_LARGE: [^\n]+\n$/);

    // A node that shuts down closes the watch: exit 1, and the line says where to resume.
    const running = startWatch(['app/', '--url', url]);
    // Without --from the watch starts at the next entry: write once the node has the subscription.
    const deadline = performance.now() + 10_000;
    while (!/^mercury_watch_subscriptions 1$/m.test(node.metrics.render())) {
      assert.ok(performance.now() < deadline, `the CLI did not subscribe: ${running.stderr()}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await put('app/c', 'seen');
    await waitForLines(running, 1);
    await node.close();
    assert.equal(await running.exited, 1);
    assert.match(
      running.stderr(),
      /^mercury: watch closed by the node \(1001: node is shutting down; reconnect and resume\); resume with --from \d+ --after-hash [0-9a-f]{64}\n$/,
    );
    node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0 }), { auth: 'off', limits: withLimits(NODE_LIMITS, { watch: WATCH_LIMITS_TEST }) });
    url = node.url;
  });

  test('cli: mercury watch --after-hash resumes after the entry it names, resets when the node holds another there, and is checked as usage', async () => {
    const hashes = new Map((await readLog(url)).map((entry) => [entry.seq, entry.hash]));
    // The node's own hash of entry 3: the changes from seq 4 follow, no reset.
    const same = startWatch(['app/', '--from', '4', '--after-hash', hashes.get(3)!, '--json', '--url', url]);
    assert.deepEqual(JSON.parse((await waitForLines(same, 1))[0]!), {
      seq: 4,
      type: 'delete',
      key: 'app/a',
      keyEncoding: 'utf8',
      modSeq: 4,
      hash: hashes.get(4),
    });
    // A hash this node never had at seq 3 (the state came from another chain): the node's state at its head comes
    // first, as when --from is older than the log (the caller replaces what it held), not the changes from seq 4.
    const other = startWatch(['app/', '--from', '4', '--after-hash', hashes.get(2)!, '--json', '--url', url]);
    const head = Math.max(...hashes.keys());
    const replaced = jsonEvents(await linesUntil(other, (line) => line.includes('snapshotEnd')));
    assert.deepEqual(replaced[0], { type: 'snapshotBegin', seq: head });
    assert.deepEqual(replaced.at(-1), { type: 'snapshotEnd', seq: head, keys: 3, hash: hashes.get(head) });
    for (const running of [same, other]) {
      running.child.kill('SIGINT');
      assert.equal(await running.exited, 0);
    }

    const malformed = await runCli(['watch', 'app/', '--from', '4', '--after-hash', 'ABC', '--url', url]);
    assert.equal(malformed.code, 2);
    assert.match(malformed.stderr, /^mercury: --after-hash must be an entry's hash, 64 lowercase hex digits[^\n]*\n$/);
    const withoutFrom = await runCli(['watch', 'app/', '--after-hash', hashes.get(3)!, '--url', url]);
    assert.equal(withoutFrom.code, 2);
    assert.match(withoutFrom.stderr, /^mercury: --after-hash is the hash of entry --from - 1[^\n]*\n$/);
  });
});

/** The lines of a JSON watch, without its progress lines, parsed. */
function jsonEvents(lines: readonly string[]): Record<string, unknown>[] {
  return lines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((event) => event.type !== 'progress');
}

/** Waits until the watch printed a line that `done` accepts; returns every line so far (progress lines left out). */
async function linesUntil(running: RunningCli, done: (line: string) => boolean, timeoutMs = 15_000): Promise<string[]> {
  const lines = (): string[] => running.stdout().split('\n').filter((line) => line.length > 0 && !line.startsWith('{"type":"progress"'));
  await eventually(
    () => Promise.resolve(lines().some(done)),
    () => `no such line within ${timeoutMs} ms: ${running.stdout()} / ${running.stderr()}`,
    timeoutMs,
  );
  return lines();
}

describe('cli watch markers', () => {
  const dir = makeTempDir('watch-cli-markers');
  const nodes: MercuryNode[] = [];
  const clis = new RunningClis();
  const start = (args: readonly string[]): RunningCli => clis.start(['watch', ...args]);
  const put = async (url: string, key: string, value: string): Promise<number> => {
    const answer = await request(url, 'PUT', `/v1/kv/${key}`, { body: value });
    assert.equal(answer.status, 200, answer.body.toString());
    return (JSON.parse(answer.body.toString()) as { seq: number }).seq;
  };
  const subscribed = (node: MercuryNode, count: number): Promise<void> =>
    eventually(
      () => Promise.resolve(new RegExp(`^mercury_watch_subscriptions ${count}$`, 'm').test(node.metrics.render())),
      () => `not ${count} subscriptions on ${node.url}`,
    );

  after(async () => {
    await clis.stopAll();
    for (const node of nodes.reverse()) await node.close();
    removeDir(dir);
  });

  test('cli: mercury watch --from older than the log frames the first snapshot with begin and end markers, in both outputs', async () => {
    const node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'trimmed'), port: 0, logRetainEntries: 3 }), {
      auth: 'off',
      limits: withLimits(NODE_LIMITS, { watch: WATCH_LIMITS_TEST, log: { trimIntervalMs: 20 } }),
    });
    nodes.push(node);
    await put(node.url, 'k/a', 'a');
    let head = await put(node.url, 'k/b', 'b');
    for (let i = 0; i < 5; i++) head = await put(node.url, `other/${i}`, 'x');
    await eventually(
      async () => (await requestJson<{ log: { firstSeq: number } }>(node.url, 'GET', '/v1/status')).log.firstSeq > 1,
      () => 'the log was not trimmed',
    );
    const human = start(['k/', '--from', '1', '--url', node.url]);
    const json = start(['k/', '--from', '1', '--json', '--url', node.url]);
    assert.deepEqual(await linesUntil(human, (line) => line.includes('complete')), [
      `--- snapshot at seq ${head}: the current state of the keys under "k/" follows ---`,
      `${head} snapshot k/a a`,
      `${head} snapshot k/b b`,
      `--- snapshot at seq ${head} complete: 2 keys; changes after seq ${head} follow ---`,
    ]);
    const events = jsonEvents(await linesUntil(json, (line) => line.includes('snapshotEnd')));
    assert.deepEqual(events[0], { type: 'snapshotBegin', seq: head });
    assert.deepEqual(events.slice(1, 3).map((event) => [event.type, event.key]), [['snapshot', 'k/a'], ['snapshot', 'k/b']]);
    assert.deepEqual(events[3], { type: 'snapshotEnd', seq: head, keys: 2, hash: (await readLog(node.url, head))[0]!.hash });
    // Changes follow, without a marker.
    const next = await put(node.url, 'k/c', 'c');
    assert.equal((await linesUntil(human, (line) => line.startsWith(`${next} `))).at(-1), `${next} put k/c c`);
  });

  test('cli: mercury watch prints a reset marker when the node replaces the stream (a replica resynced, a root behind --from)', async () => {
    const root = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'root'), port: 0 }), { auth: 'off', limits: NODE_LIMITS_TEST });
    nodes.push(root);
    await put(root.url, 'k/a', 'a');
    const seqB = await put(root.url, 'k/b', 'b');
    const replica = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'replica'), port: 0, upstreams: [root.replicationAddress] }), {
      auth: 'off',
      limits: NODE_LIMITS_TEST,
    });
    nodes.push(replica);
    await eventually(
      () => Promise.resolve(replica.store.head().seq === seqB),
      () => `the replica is at seq ${replica.store.head().seq}`,
    );
    const human = start(['k/', '--url', replica.url]);
    const json = start(['k/', '--json', '--url', replica.url]);
    await subscribed(replica, 2);
    const seqC = await put(root.url, 'k/c', 'c');
    await linesUntil(human, (line) => line === `${seqC} put k/c c`);
    await linesUntil(json, (line) => line.includes('"put"'));
    // The operator resyncs the replica: it installs a snapshot at its own head, and its watchers are reset.
    assert.equal((await request(replica.url, 'POST', '/v1/replication/resync')).status, 202);
    assert.deepEqual(await linesUntil(human, (line) => line.includes('complete')), [
      `${seqC} put k/c c`,
      `--- RESET at seq ${seqC}: the node replaced the stream; the state of the keys under "k/" below replaces everything printed before (up to seq ${seqC}) ---`,
      `${seqC} snapshot k/a a`,
      `${seqC} snapshot k/b b`,
      `${seqC} snapshot k/c c`,
      `--- snapshot at seq ${seqC} complete: 3 keys; changes after seq ${seqC} follow ---`,
    ]);
    const events = jsonEvents(await linesUntil(json, (line) => line.includes('snapshotEnd')));
    const hashC = (await readLog(root.url, seqC))[0]!.hash;
    assert.deepEqual(
      events.filter((event) => event.type !== 'snapshot'),
      [
        { seq: seqC, type: 'put', key: 'k/c', keyEncoding: 'utf8', value: 'c', valueEncoding: 'utf8', modSeq: seqC, hash: hashC },
        { type: 'reset', seq: seqC, previousSeq: seqC },
        { type: 'snapshotEnd', seq: seqC, keys: 3, hash: hashC },
      ],
    );

    // A client that followed another chain further than this root's head: reset to the root's state at once.
    const ahead = start(['k/', '--from', String(seqC + 5), '--json', '--url', root.url]);
    const reset = jsonEvents(await linesUntil(ahead, (line) => line.includes('snapshotEnd')));
    assert.deepEqual(reset[0], { type: 'reset', seq: seqC, previousSeq: seqC + 4 });
    assert.deepEqual(reset.at(-1), { type: 'snapshotEnd', seq: seqC, keys: 3, hash: hashC });
  });
});


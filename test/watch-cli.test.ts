/**
 * `mercury watch` as a user runs it: a child process against a node on port 0. One line per change (human or JSON),
 * Ctrl-C exits 0, and every failure is one stderr line with the usual exit codes (2 usage, 3 unreachable, 1 refused
 * or closed by the node, with the --from that resumes).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS, withLimits } from '../src/node/index.js';
import { WATCH_LIMITS_TEST } from '../src/watch/index.js';
import { request } from './support/http.js';
import { makeTempDir, removeDir, runCli, startCli, type RunningCli } from './support/process.js';

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
    assert.deepEqual(events.slice(0, 3), [
      { seq: 1, type: 'put', key: 'app/a', keyEncoding: 'utf8', value: '1', valueEncoding: 'utf8', modSeq: 1 },
      { seq: 3, type: 'put', key: 'app/b', keyEncoding: 'utf8', value: 'two words', valueEncoding: 'utf8', modSeq: 3 },
      { seq: 4, type: 'delete', key: 'app/a', keyEncoding: 'utf8', modSeq: 4 },
    ]);
    // Live changes follow, binary values shown as base64.
    await put('app/bin', Buffer.from([0xff, 0x00]));
    assert.equal((await waitForLines(human, 4))[3], '5 put app/bin base64:/wA=');
    // JSON mode also prints progress (heartbeats every 200 ms in the test limits), so a script knows where to resume.
    const deadline = performance.now() + 5_000;
    while (!json.stdout().includes('{"type":"progress","seq":5}')) {
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
    assert.match(running.stderr(), /^mercury: watch closed by the node \(1001: node is shutting down; reconnect and resume\); resume with --from \d+\n$/);
    node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0 }), { auth: 'off', limits: withLimits(NODE_LIMITS, { watch: WATCH_LIMITS_TEST }) });
    url = node.url;
  });
});

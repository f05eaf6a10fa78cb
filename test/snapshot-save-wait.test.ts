/**
 * `mercury snapshot save` against a node whose snapshot readers are all in use (docs/decisions.md record 44): it waits,
 * saying so on stderr, and saves once a reader is freed; it gives up past --wait-timeout-ms with the node's code and
 * leaves nothing behind; Ctrl-C while it waits removes its partial file. The node's Retry-After is honoured, and an
 * error that waiting would not change fails at once. The CLI runs as a child process against a real node on port 0
 * with 4 snapshot readers, filled by backup clients that stop reading, and against a scripted HTTP server.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS_TEST, withLimits } from '../src/node/index.js';
import { requestJson } from './support/http.js';
import { makeTempDir, removeDir, runCli, RunningClis, type RunningCli } from './support/process.js';
import { fillSnapshotReaders, prefill, type StalledSnapshot } from './support/snapshot-readers.js';
import { eventually } from './support/tree.js';

const KiB = 1024;
const SNAPSHOT_READERS = 4;
/** Long enough a send deadline that the stalled clients hold their readers for the whole test. */
const LIMITS = withLimits(NODE_LIMITS_TEST, { http: { sendStallMs: 120_000 }, store: { snapshotReadersMax: SNAPSHOT_READERS } });

interface SnapshotReadersJson {
  inUse: number;
  max: number;
  refused: number;
  watchesWaiting: number;
}

async function readersOf(url: string): Promise<SnapshotReadersJson> {
  return (await requestJson<{ snapshotReaders: SnapshotReadersJson }>(url, 'GET', '/v1/status')).snapshotReaders;
}

function waitForStderr(running: RunningCli, pattern: RegExp, timeoutMs = 10_000): Promise<void> {
  return eventually(
    () => Promise.resolve(pattern.test(running.stderr())),
    () => `stderr did not match ${pattern}: ${JSON.stringify(running.stderr())}`,
    timeoutMs,
  );
}

/** Files in `dir` whose name starts with `name` (the file and its `.partial-PID`). */
function filesNamed(dir: string, name: string): string[] {
  return readdirSync(dir).filter((entry) => entry.startsWith(name));
}

describe('snapshot save wait', () => {
  const dir = makeTempDir('snapshot-save-wait');
  const out = join(dir, 'out');
  let node: MercuryNode;
  let stalled: StalledSnapshot[] = [];
  const clis = new RunningClis();

  /** Takes every snapshot reader of the node with backup clients that stop reading. */
  const fillReaders = async (): Promise<void> => {
    stalled = await fillSnapshotReaders(node.url, SNAPSHOT_READERS);
    assert.equal((await readersOf(node.url)).inUse, SNAPSHOT_READERS);
  };
  const freeReaders = (): void => {
    for (const client of stalled) client.socket.destroy();
    stalled = [];
  };

  before(async () => {
    // 8 MiB: more than loopback's socket buffers take from a client that reads nothing.
    await prefill(join(dir, 'node'), 2_000, 4 * KiB);
    node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'node'), port: 0 }), { auth: 'off', limits: LIMITS });
    mkdirSync(out);
  });

  after(async () => {
    await clis.stopAll();
    freeReaders();
    await node.close();
    removeDir(dir);
  });

  test('snapshot save wait: a save refused 503 OVERLOADED waits, says what for on stderr, and saves once a reader is freed', async () => {
    await fillReaders();
    const file = join(out, 'waited.snap');
    const save = clis.start(['snapshot', 'save', file, '--url', node.url, '--json']);
    await waitForStderr(save, /is busy \(OVERLOADED: this node is sending 4 snapshots at once/);
    assert.match(save.stderr(), /trying again in 1\.0 s, giving up in (4m59s|5m00s) \(--wait-timeout-ms\)/);
    assert.ok((await readersOf(node.url)).refused >= 1, 'the node counted the refusal');
    // Still waiting: no file yet, only its partial file.
    assert.deepEqual(filesNamed(out, 'waited.snap'), [`waited.snap.partial-${save.child.pid}`]);
    freeReaders();
    assert.equal(await save.exited, 0, save.stderr());
    const saved = JSON.parse(save.stdout()) as { file: string; keys: number };
    assert.equal(saved.file, file);
    assert.equal(saved.keys, 2_001, 'the prefilled keys and tick');
    assert.deepEqual(filesNamed(out, 'waited.snap'), ['waited.snap'], 'the file, and no partial file');
  });

  test('snapshot save wait: past --wait-timeout-ms it fails with OVERLOADED and the time it waited, and writes nothing', async () => {
    await fillReaders();
    const file = join(out, 'gave-up.snap');
    const startedMs = performance.now();
    const result = await runCli(['snapshot', 'save', file, '--url', node.url, '--wait-timeout-ms', '2500']);
    const tookMs = performance.now() - startedMs;
    assert.equal(result.code, 1, result.stderr);
    const lines = result.stderr.split('\n').filter((line) => line !== '');
    assert.match(lines[0]!, /^mercury: http:\/\/127\.0\.0\.1:\d+ is busy \(OVERLOADED: /);
    assert.match(lines[lines.length - 1]!, /^mercury: OVERLOADED: gave up waiting for http:\/\/127\.0\.0\.1:\d+ after 2\.\d s \(--wait-timeout-ms to wait longer\): this node is sending 4 snapshots at once.*; \S+gave-up\.snap was not written$/);
    // One line per reason and per 10 s, not one per retry.
    assert.equal(lines.length, 2, result.stderr);
    assert.ok(tookMs >= 2_500 && tookMs < 10_000, `took ${Math.round(tookMs)} ms`);
    assert.deepEqual(filesNamed(out, 'gave-up.snap'), []);

    // Without a wait: one attempt.
    const once = await runCli(['snapshot', 'save', file, '--url', node.url, '--wait-timeout-ms', '0']);
    assert.equal(once.code, 1);
    assert.match(once.stderr, /^mercury: OVERLOADED: gave up waiting for \S+ after \d+ ms/);
    assert.deepEqual(filesNamed(out, 'gave-up.snap'), []);
  });

  test('snapshot save wait: Ctrl-C while it waits removes the partial file', async () => {
    const file = join(out, 'interrupted.snap');
    const save = clis.start(['snapshot', 'save', file, '--url', node.url]);
    await waitForStderr(save, /is busy \(OVERLOADED/);
    assert.equal(filesNamed(out, 'interrupted.snap').length, 1, 'the partial file, while it waits');
    save.child.kill('SIGINT');
    assert.equal(await save.exited, 130);
    assert.match(save.stderr(), /mercury: SIGINT: snapshot save stopped; nothing was written\n$/);
    assert.deepEqual(filesNamed(out, 'interrupted.snap'), []);
  });
});

describe('snapshot save wait, against a scripted node', () => {
  let server: Server;
  let url: string;
  /** The answers still to give, in order; each request takes the first, and its time is kept. */
  let script: { status: number; code: string; retryAfter?: string }[] = [];
  const requestsMs: number[] = [];
  const dir = makeTempDir('snapshot-save-scripted');

  before(async () => {
    server = createServer((_req, res) => {
      requestsMs.push(performance.now());
      const answer = script.shift() ?? { status: 500, code: 'INTERNAL' };
      res.writeHead(answer.status, { 'content-type': 'application/json', ...(answer.retryAfter === undefined ? {} : { 'retry-after': answer.retryAfter }) });
      res.end(JSON.stringify({ error: { code: answer.code, message: `scripted ${answer.code}` } }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    await new Promise((resolve) => server.close(resolve));
    removeDir(dir);
  });

  test('snapshot save wait: it waits as long as Retry-After says, and a 503 SHUTTING_DOWN or a 403 fails at once with its code', async () => {
    script = [
      { status: 503, code: 'OVERLOADED', retryAfter: '2' },
      { status: 503, code: 'SHUTTING_DOWN' },
    ];
    requestsMs.length = 0;
    const shutting = await runCli(['snapshot', 'save', join(dir, 'a.snap'), '--url', url]);
    assert.equal(shutting.code, 1);
    assert.equal(requestsMs.length, 2);
    assert.ok(requestsMs[1]! - requestsMs[0]! >= 1_900, `asked again after ${Math.round(requestsMs[1]! - requestsMs[0]!)} ms, not the 2 s of Retry-After`);
    assert.match(shutting.stderr, /^mercury: \S+ is busy \(OVERLOADED: scripted OVERLOADED\); trying again in 2\.0 s/);
    assert.match(shutting.stderr, /\nmercury: SHUTTING_DOWN: scripted SHUTTING_DOWN\n$/);

    script = [{ status: 403, code: 'PERMISSION_DENIED' }];
    requestsMs.length = 0;
    const denied = await runCli(['snapshot', 'save', join(dir, 'b.snap'), '--url', url]);
    assert.equal(denied.code, 1);
    assert.equal(requestsMs.length, 1);
    assert.equal(denied.stderr, 'mercury: PERMISSION_DENIED: scripted PERMISSION_DENIED\n');
    assert.deepEqual(readdirSync(dir), [], 'no file, no partial file');
    assert.equal(existsSync(join(dir, 'a.snap')), false);
  });
});

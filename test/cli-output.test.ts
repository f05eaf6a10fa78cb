/**
 * Output a person reads and a script parses (issue 13, item 6), on real processes: `resync --wait` follows the
 * snapshot to the end, `status` shows human units, help answers --json, and
 * `serve --json` announces itself as JSON.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { requestJson } from './support/http.js';
import { CLI_PATH, makeTempDir, removeDir, runCli, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { converged } from './support/tree.js';

describe('cli output', () => {
  let dir: string;
  let root: ServeProcess;
  let replica: ServeProcess;

  before(async () => {
    dir = makeTempDir('cli-output');
    root = await startServe(join(dir, 'root'));
    for (let i = 0; i < 20; i++) await requestJson(root.url, 'PUT', `/v1/kv/k${i}`, { body: `value ${i}` });
    replica = await startServe(join(dir, 'replica'), ['--upstream', root.replication]);
    await converged(root, [replica]);
  });

  after(async () => {
    await stopProcess(replica.child);
    await stopProcess(root.child);
    removeDir(dir);
  });

  test('cli output: resync --wait returns once the replica installed its new snapshot and streams again', async () => {
    const done = await runCli(['resync', '--wait', '--json', '--url', replica.url]);
    assert.equal(done.code, 0, done.stderr);
    const result = JSON.parse(done.stdout.toString()) as { resync: string; seq: number; keys: number };
    assert.deepEqual({ resync: result.resync, keys: result.keys }, { resync: 'done', keys: 20 });
    const status = await requestJson<{ replication: { snapshotsInstalled: number; resyncPending: boolean; phase: string } }>(replica.url, 'GET', '/v1/status');
    assert.deepEqual({ pending: status.replication.resyncPending, phase: status.replication.phase }, { pending: false, phase: 'streaming' });
    assert.ok(status.replication.snapshotsInstalled >= 2, 'the first join and the resync');
    const human = await runCli(['resync', '--wait', '--url', replica.url]);
    assert.match(human.stdout.toString(), /^resync done in [\d.]+ (ms|s): seq \d+, 20 keys, streaming from its upstream\n$/);
  });

  test('cli output: status shows sizes and times in human units, and the replication in a few lines', async () => {
    const human = (await runCli(['status', '--url', replica.url])).stdout.toString();
    assert.match(human, /^dataFileBytes +[\d.]+ (B|KiB|MiB|GiB)$/m);
    assert.match(human, /^uptimeMs +[\d.]+ ?(ms|s)$|^uptimeMs +\d+m\d\ds$/m);
    assert.match(human, /^log +seqs \d+\.\.\d+, [\d,]+ entries, [\d.]+ (B|KiB|MiB)$/m);
    assert.match(human, /^ +streaming from 127\.0\.0\.1:\d+ \(node [\w-]+\); lag \d+ entries, /m);
    assert.match(human, /^storage +sound, writable$/m);
  });

  test('cli output: help answers --json too', async () => {
    assert.equal((JSON.parse((await runCli(['--help', '--json'])).stdout.toString()) as { usage: string }).usage.split('\n')[0], 'usage: mercury <command> [options]');
  });

  test('cli output: serve --json announces the node as one JSON line', async () => {
    const child = spawn(process.execPath, [CLI_PATH, 'serve', '--json', '--data-dir', join(dir, 'json-serve'), '--listen', '127.0.0.1:0', '--auth', 'off'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let stdout = '';
        child.stdout.setEncoding('utf8').on('data', (text: string) => {
          stdout += text;
          if (stdout.includes('\n')) resolve(stdout.slice(0, stdout.indexOf('\n')));
        });
        child.once('exit', (code) => reject(new Error(`serve exited ${code}`)));
      });
      const announced = JSON.parse(line) as { event: string; url: string; role: string; seq: number; auth: string };
      assert.deepEqual({ event: announced.event, role: announced.role, seq: announced.seq, auth: announced.auth }, { event: 'listening', role: 'root', seq: 0, auth: 'off' });
      assert.equal((await requestJson<{ role: string }>(announced.url, 'GET', '/v1/status')).role, 'root');
    } finally {
      await stopProcess(child);
    }
  });

  // Found by an audit (2026-12-07): with no listener on stderr's error event, the node's first log line after the
  // reader of its log went away (a closed pipe: EPIPE; a log file on a full disk: ENOSPC) ended it with exit 1.
  test('cli output: serve goes on when the reader of its log is gone, and the lines are lost', async () => {
    const node = await startServe(join(dir, 'log-gone'));
    try {
      node.child.stderr?.destroy();
      // Each connection of junk on the replication port is a log line ("refused child").
      const [host, port] = node.replication.split(':');
      for (let i = 0; i < 3; i++)
        await new Promise<void>((resolve) => {
          // Refused as soon as its frame head is read; the node closes the connection, or the test does.
          const socket = connect(Number(port), host, () => socket.write(Buffer.alloc(64, 0xff)));
          socket.setTimeout(500, () => socket.destroy());
          socket.on('close', () => resolve()).on('error', () => resolve());
        });
      assert.equal((await requestJson<{ role: string }>(node.url, 'GET', '/v1/status')).role, 'root');
      assert.equal(node.child.exitCode, null, 'the node is alive');
    } finally {
      await stopProcess(node.child);
    }
  });
});

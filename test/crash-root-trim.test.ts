/**
 * The root under kill -9 while it trims its log and while it commits a signing-key rotation. A root that keeps only a
 * few entries (--log-retain-entries 5) trims, one short transaction after another, all the time it takes writes; it is
 * killed at random moments of that load, three times. After each kill: `mercury verify` passes on its directory, the
 * restarted root holds every write it acknowledged and a trimmed log, and a replica (trusting the root's key) that
 * followed it converges to its chain. Then the root is started to rotate its key (--signing-key NEW
 * --previous-signing-key OLD) and killed during that start: at a random moment, and just after the rotation entry was
 * written. Each time the directory verifies; the next start completes the rotation (or finds it done), and the replica,
 * trusting only the old key, follows across it.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { NodeClient } from '../src/client/index.js';
import { request, requestJson } from './support/http.js';
import { freePort } from './support/net.js';
import { makeTempDir, removeDir, runCli, RunningClis, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { converged, eventually, get } from './support/tree.js';

const WRITERS = 8;
const CYCLES = 3;

/** PUTs fresh keys until the node stops answering; records each acknowledged write's seq. */
async function writer(url: string, prefix: string, acknowledged: Map<string, number>): Promise<void> {
  for (let n = 0; ; n++) {
    const key = `${prefix}/${n}`;
    try {
      const response = await request(url, 'PUT', `/v1/kv/${key}`, { body: key });
      if (response.status !== 200) throw new Error(`PUT answered ${response.status}: ${response.body.toString()}`);
      acknowledged.set(key, (JSON.parse(response.body.toString()) as { seq: number }).seq);
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === 'ECONNRESET' || code === 'ECONNREFUSED' || code === 'EPIPE' || (error as Error).message === 'socket hang up') return;
      throw error;
    }
  }
}

async function assertVerifies(dataDir: string, what: string): Promise<void> {
  const verified = await runCli(['verify', '--data-dir', dataDir]);
  assert.equal(verified.code, 0, `${what}: verify failed: ${verified.stdout.toString()} ${verified.stderr}`);
}

describe('crash: the root killed while trimming its log and while rotating its key', () => {
  const dir = makeTempDir('crash-root-trim');
  const rootDir = join(dir, 'root');
  const clis = new RunningClis();
  let rootArgs: string[];
  let root: ServeProcess | undefined;
  let replica: ServeProcess | undefined;
  const acknowledged = new Map<string, number>();

  before(async () => {
    // Fixed ports: the replica reconnects to the restarted root where it was.
    rootArgs = ['--listen', `127.0.0.1:${await freePort()}`, '--replication-listen', `127.0.0.1:${await freePort()}`, '--log-retain-entries', '5'];
    root = await startServe(rootDir, rootArgs);
    replica = await startServe(join(dir, 'replica'), ['--upstream', root.replication, '--trust-key', join(rootDir, 'signing-key.pub.pem')]);
  });
  after(async () => {
    await clis.stopAll();
    if (replica !== undefined) await stopProcess(replica.child);
    if (root !== undefined) await stopProcess(root.child);
    removeDir(dir);
  });

  for (let cycle = 1; cycle <= CYCLES; cycle++) {
    test(`crash root trim: cycle ${cycle}: killed under writes while it trims, it restarts with every acknowledged write and a sound trimmed log`, async () => {
      root ??= await startServe(rootDir, rootArgs);
      const writers = Array.from({ length: WRITERS }, (_, i) => writer(root!.url, `c${cycle}/w${i}`, acknowledged));
      const firstSeq = async (): Promise<number> => (await requestJson<{ log: { firstSeq: number } }>(root!.url, 'GET', '/v1/status')).log.firstSeq;
      const trimmedFrom = await firstSeq();
      // The trimmer runs every second: killed once it has trimmed under this load, at a random moment after.
      await eventually(async () => (await firstSeq()) > trimmedFrom + 20, () => `the root did not trim past seq ${trimmedFrom} under the writes`, 20_000);
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 1_000));
      await stopProcess(root.child, 'SIGKILL');
      root = undefined;
      await Promise.all(writers);
      await assertVerifies(rootDir, `cycle ${cycle}`);

      root = await startServe(rootDir, rootArgs);
      const status = await requestJson<{ seq: number; log: { firstSeq: number; lastSeq: number } }>(root.url, 'GET', '/v1/status');
      assert.equal(status.log.lastSeq, status.seq);
      assert.ok(status.log.firstSeq > 1, `the log was trimmed (first retained seq ${status.log.firstSeq})`);
      for (const [key, seq] of acknowledged) {
        assert.ok(seq <= status.seq, `${key} was acknowledged at seq ${seq}, the root restarted at ${status.seq}`);
        if (key.startsWith(`c${cycle}/`)) assert.equal(await get(root, key), key, `acknowledged ${key} (seq ${seq}) survives`);
      }
      // The same seq and head hash: the same chain (hash-chained; the root's trimmed log cannot be compared entry by entry).
      await converged(root, [replica!]);
    });
  }

  test('crash root rotation: killed while it commits a key rotation, the next start completes it and the replica follows', async (t) => {
    const newKey = join(dir, 'new-key.pem');
    writeFileSync(newKey, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    const oldKey = join(dir, 'old-key.pem');
    copyFileSync(join(rootDir, 'signing-key.pem'), oldKey);
    if (root !== undefined) await stopProcess(root.child, 'SIGKILL');
    root = undefined;
    const rotate = ['serve', '--data-dir', rootDir, ...rootArgs, '--auth', 'off', '--wire-listen', '127.0.0.1:0', '--signing-key', newKey, '--previous-signing-key', oldKey];
    // Killed at a random moment of its start, then just after it wrote the rotation entry (or, if the first one
    // already had, once it listens).
    for (const when of ['random', 'rotated'] as const) {
      const starting = clis.start(rotate);
      if (when === 'random') await new Promise((resolve) => setTimeout(resolve, 100 + Math.random() * 700));
      else
        await eventually(
          () => Promise.resolve(/rotated the root signing key/.test(starting.stderr()) || /listening on/.test(starting.stdout())),
          () => `the rotating root neither rotated nor started: ${starting.stderr()}`,
          15_000,
        );
      await stopProcess(starting.child, 'SIGKILL');
      t.diagnostic(`killed (${when}) ${/rotated the root signing key/.test(starting.stderr()) ? 'after' : 'before'} it logged the rotation`);
      await assertVerifies(rootDir, `killed (${when}) while rotating`);
    }
    root = await startServe(rootDir, [...rootArgs, '--signing-key', newKey, '--previous-signing-key', oldKey]);
    await stopProcess(root.child);
    root = await startServe(rootDir, [...rootArgs, '--signing-key', newKey]);
    await new NodeClient(root.url).put('after-rotation', 'new key');
    await converged(root, [replica!]);
    assert.equal(await get(replica!, 'after-rotation'), 'new key');
    await assertVerifies(rootDir, 'after the rotation');
  });
});

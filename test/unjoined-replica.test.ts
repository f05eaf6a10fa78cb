/**
 * The data directory of a replica that has not joined yet (its upstream never reached, or stopped mid-join): a node
 * id, no dataset, nothing at seq 0. `serve` opens it; before, the read-only openers (`mercury verify`, `openLocal`)
 * refused it as "not a Mercury data directory" (review E, finding 08).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openLocal } from '../src/index.js';
import { freePort } from './support/net.js';
import { makeTempDir, removeDir, runCli, startServe, stopProcess } from './support/process.js';
import { requestJson } from './support/http.js';

describe('unjoined replica directory', () => {
  const dir = makeTempDir('unjoined-replica');
  const dataDir = join(dir, 'replica');

  before(async () => {
    // Nothing listens on the upstream's port: the replica never joins.
    const replica = await startServe(dataDir, ['--upstream', `127.0.0.1:${await freePort()}`]);
    const status = await requestJson<{ seq: number; replication: { phase: string } }>(replica.url, 'GET', '/v1/status');
    assert.equal(status.seq, 0);
    await stopProcess(replica.child, 'SIGTERM');
  });
  after(() => removeDir(dir));

  test('unjoined replica: mercury verify says it has not joined yet and exits 0', async () => {
    const text = await runCli(['verify', '--data-dir', dataDir]);
    assert.equal(text.code, 0, `${text.stdout.toString()} ${text.stderr}`);
    assert.match(text.stdout.toString(), /a replica that has not joined yet \(seq 0\)/);
    assert.match(text.stdout.toString(), /OK: the store is sound/);
    const json = await runCli(['verify', '--data-dir', dataDir, '--json']);
    assert.equal(json.code, 0, json.stderr);
    const report = JSON.parse(json.stdout.toString()) as { ok: boolean; joined: boolean; head: { seq: number } };
    assert.deepEqual([report.ok, report.joined, report.head.seq], [true, false, 0]);
  });

  test('unjoined replica: openLocal opens it empty at seq 0', async () => {
    const reader = await openLocal(dataDir);
    try {
      assert.equal(reader.seq(), 0);
      assert.equal(reader.getSync('any/key'), undefined);
    } finally {
      await reader.close();
    }
  });
});

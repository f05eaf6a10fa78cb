/**
 * `mercury snapshot restore` killed (kill -9) mid-way. It makes the new store in DIR/restore.partial and renames it in
 * only once whole, so a kill leaves that directory behind. A node must not start on DIR then as if it were whole
 * (into a fresh DIR it would make a new, empty dataset), nor `verify` pass it: both refuse with DATA_DIR_INVALID
 * naming the partial store and what to do. The next restore must work, and a node started after it serves the whole
 * snapshot. Then restores with --force over a restored DIR, killed at random moments: after each, DIR is refused or
 * holds one of the two snapshots whole, and a last restore completes. Killed at two exact moments (a test-only preload,
 * test/support/kill-at.ts): after its last file was moved in, DIR is whole, so `verify` passes and a node starts on it,
 * finishing the restore (the partial directory goes), while a restore without --force says what DIR holds; between its
 * first and second rename, DIR is refused as before (docs/decisions.md, record 58); between the unlink of its record
 * and the removal of the emptied directory that held the store, DIR is whole too.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SNAPSHOT_FORMAT_VERSION, SnapshotEncoder } from '../src/snapshot/index.js';
import { makeTempDir, removeDir, runCli, RunningClis, serveRefused, startServe, stopProcess } from './support/process.js';
import { killAtEnv } from './support/kill-at.js';
import { statusOf } from './support/tree.js';

const RECORDS = 40;
const REFUSED = /DATA_DIR_INVALID: \S+restore\.partial is there: a `mercury snapshot restore` into \S+ was stopped before it finished/;

/** A snapshot file of RECORDS values of 1 MiB: large enough that a restore takes a while. */
function writeSnapshot(file: string, datasetId: string): void {
  const encoder = new SnapshotEncoder();
  const value = Buffer.alloc(1024 * 1024, datasetId[0]);
  const records = Array.from({ length: RECORDS }, (_, index) => ({ key: Buffer.from(`big/${String(index).padStart(3, '0')}`), value, createSeq: 1, modSeq: 1, version: 1 }));
  const header = { version: SNAPSHOT_FORMAT_VERSION, datasetId, seq: 1, headHash: Buffer.alloc(32, 1), keyCount: RECORDS, dataBytes: records.reduce((sum, record) => sum + record.key.length + record.value.length, 0), savedAtMs: 1 };
  writeFileSync(file, Buffer.concat([encoder.header(header), ...records.map((record) => encoder.record(record)), encoder.trailer()]));
}

describe('crash: snapshot restore killed mid-way', () => {
  const dir = makeTempDir('crash-restore');
  const clis = new RunningClis();
  const first = join(dir, 'first.snap');
  const second = join(dir, 'second.snap');

  before(() => {
    writeSnapshot(first, 'first');
    writeSnapshot(second, 'second');
  });
  after(async () => {
    await clis.stopAll();
    removeDir(dir);
  });

  /**
   * A node on `target` serves a whole snapshot (or refuses, naming the partial store); returns the dataset, or undefined
   * when refused. A partial store that `verify` accepts is a restore killed after its last move: the node finishes it.
   */
  async function startedOrRefused(target: string): Promise<string | undefined> {
    if (existsSync(join(target, 'restore.partial'))) {
      const verified = await runCli(['verify', '--data-dir', target]);
      if (verified.code !== 0) {
        // Into a fresh DIR too (no data.mdb), verify names the stopped restore, not only the missing data file.
        assert.match(verified.stderr, REFUSED);
        const refused = await serveRefused(target);
        assert.equal(refused.code, 1, refused.stderr);
        assert.match(refused.stderr, REFUSED);
        return undefined;
      }
    }
    const node = await startServe(target);
    try {
      assert.ok(!existsSync(join(target, 'restore.partial')), 'a node started on DIR finished the restore');
      const status = await statusOf(node);
      assert.equal(status.keys, RECORDS, `the node serves the whole snapshot of ${status.datasetId}`);
      assert.equal(status.seq, 1);
      return status.datasetId;
    } finally {
      await stopProcess(node.child);
    }
  }

  test('crash restore: a node refuses a directory whose restore was killed, and the next restore makes it whole', async () => {
    const target = join(dir, 'fresh');
    const restore = clis.start(['snapshot', 'restore', first, '--data-dir', target]);
    const deadline = Date.now() + 15_000;
    while (!existsSync(join(target, 'restore.partial', 'data.mdb')) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 2));
    await stopProcess(restore.child, 'SIGKILL');
    assert.ok(existsSync(join(target, 'restore.partial')), `the kill fell inside the restore; stderr: ${restore.stderr()}`);
    assert.equal(await startedOrRefused(target), undefined);
    assert.ok(!existsSync(join(target, 'data.mdb')), 'the refused start wrote no store');
    assert.ok(!existsSync(join(target, 'signing-key.pem')), 'nor a signing key');

    const again = await runCli(['snapshot', 'restore', first, '--data-dir', target]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(await startedOrRefused(target), 'first');
    const verified = await runCli(['verify', '--data-dir', target]);
    assert.equal(verified.code, 0, `${verified.stdout.toString()} ${verified.stderr}`);
  });

  test('crash restore: --force restores killed at random moments leave DIR refused or whole, and the last one completes', async (t) => {
    const target = join(dir, 'forced');
    assert.equal((await runCli(['snapshot', 'restore', first, '--data-dir', target])).code, 0);
    for (let kill = 0; kill < 3; kill++) {
      const restore = clis.start(['snapshot', 'restore', second, '--data-dir', target, '--force']);
      await new Promise((resolve) => setTimeout(resolve, 50 + Math.random() * 500));
      await stopProcess(restore.child, 'SIGKILL');
      const dataset = await startedOrRefused(target);
      assert.ok(dataset === undefined || dataset === 'first' || dataset === 'second', `dataset ${dataset}`);
      t.diagnostic(`kill ${kill + 1}: ${dataset === undefined ? 'refused (partial store left)' : `serves ${dataset}`}`);
    }
    const last = await runCli(['snapshot', 'restore', second, '--data-dir', target, '--force']);
    assert.equal(last.code, 0, last.stderr);
    assert.equal(await startedOrRefused(target), 'second');
    const verified = await runCli(['verify', '--data-dir', target]);
    assert.equal(verified.code, 0, `${verified.stdout.toString()} ${verified.stderr}`);
  });

  test('crash restore: killed after its last move, DIR is whole and the next open finishes the restore; killed between two moves, it is refused', async () => {
    const moved = join(dir, 'moved');
    const killed = await runCli(['snapshot', 'restore', first, '--data-dir', moved], { env: killAtEnv('restore-moved') });
    assert.equal(killed.code, null, `killed, not exited: ${killed.stderr}`);
    assert.ok(existsSync(join(moved, 'restore.partial')), 'the kill fell before the partial directory was removed');
    assert.ok(existsSync(join(moved, 'data.mdb')), 'and after the store was moved in');
    const verified = await runCli(['verify', '--data-dir', moved]);
    assert.equal(verified.code, 0, `verify: ${verified.stdout.toString()} ${verified.stderr}`);
    assert.ok(existsSync(join(moved, 'restore.partial')), 'a reader writes nothing');
    const again = await runCli(['snapshot', 'restore', second, '--data-dir', moved]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /DATA_DIR_NOT_EMPTY: \S+ holds the store of a restore that was stopped after it had moved it in, whole/);
    assert.equal(await startedOrRefused(moved), 'first');

    const moving = join(dir, 'moving');
    const cut = await runCli(['snapshot', 'restore', first, '--data-dir', moving], { env: killAtEnv('restore-moving') });
    assert.equal(cut.code, null, `killed, not exited: ${cut.stderr}`);
    assert.ok(existsSync(join(moving, 'data.mdb')), 'the kill fell after the first move');
    assert.ok(existsSync(join(moving, 'restore.partial', 'store-initialised')), 'and before the last');
    assert.equal(await startedOrRefused(moving), undefined);
    const restored = await runCli(['snapshot', 'restore', first, '--data-dir', moving, '--force']);
    assert.equal(restored.code, 0, restored.stderr);
    assert.equal(await startedOrRefused(moving), 'first');
  });

  test('crash restore: killed while it removed its emptied partial directory, DIR is whole and a node starts on it', async () => {
    // A recursive removal unlinks the record (moving-in) before it removes the directory: a kill between the two left
    // an empty restore.partial, which every open refused as a restore stopped midway, DIR holding the whole store.
    const emptied = join(dir, 'emptied');
    const killed = await runCli(['snapshot', 'restore', first, '--data-dir', emptied], { env: killAtEnv('restore-emptied') });
    assert.equal(killed.code, null, `killed, not exited: ${killed.stderr}`);
    assert.ok(existsSync(join(emptied, 'data.mdb')), 'the kill fell after the store was moved in');
    const verified = await runCli(['verify', '--data-dir', emptied]);
    assert.equal(verified.code, 0, `verify: ${verified.stdout.toString()} ${verified.stderr}`);
    assert.equal(await startedOrRefused(emptied), 'first');
    assert.deepEqual(
      readdirSync(emptied).filter((name) => name.startsWith('restore.')),
      [],
      'a node started on DIR removed what the restore left',
    );
  });
});

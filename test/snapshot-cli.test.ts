/**
 * `mercury snapshot save|inspect|restore` against real `mercury serve` processes (issue 13, item 1): round trips, a
 * damaged or truncated file refused before anything is installed, a restored root that a replica tree follows,
 * point-in-time restore from the retained log, and FILE never left partial.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { auditLog, requestJson } from './support/http.js';
import { CLI_PATH, makeTempDir, removeDir, runCli, serveRefused, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { SNAPSHOT_FORMAT_VERSION, SnapshotEncoder } from '../src/snapshot/index.js';
import { assertSameChain, converged, statusOf } from './support/tree.js';

interface SnapshotJson {
  datasetId: string;
  seq: number;
  headHash: string;
  keys: number;
  dataBytes: number;
  fileBytes: number;
  replayedEntries?: number;
}

async function cliJson<T>(args: readonly string[]): Promise<T> {
  const result = await runCli([...args, '--json']);
  assert.equal(result.code, 0, `mercury ${args.join(' ')}: ${result.stderr}`);
  return JSON.parse(result.stdout.toString()) as T;
}

async function keysOf(node: ServeProcess): Promise<Record<string, string>> {
  const page = await requestJson<{ items: { key: string; value: string; valueEncoding: string }[] }>(node.url, 'GET', '/v1/kv?prefix=&limit=1000');
  return Object.fromEntries(page.items.map((item) => [item.key, `${item.valueEncoding}:${item.value}`]));
}

/** Takes the data directory lock on `dir` in a process that is then killed, as a restore killed half-way leaves it. */
function lockThenDie(dir: string): void {
  const lockModule = fileURLToPath(new URL('../src/fs/dir-lock.js', import.meta.url));
  const script = `const { lockDataDir } = await import(${JSON.stringify(lockModule)}); lockDataDir(${JSON.stringify(dir)}, new Date().toISOString()); process.kill(process.pid, 'SIGKILL');`;
  const result = spawnSync(process.execPath, ['--input-type=module', '-e', script]);
  assert.equal(result.signal, 'SIGKILL', result.stderr.toString());
}

describe('snapshot cli', () => {
  let dir: string;
  let source: ServeProcess;
  const nodes: ServeProcess[] = [];

  before(async () => {
    dir = makeTempDir('snapshot-cli');
    source = await startServe(join(dir, 'source'));
    nodes.push(source);
    await requestJson(source.url, 'PUT', '/v1/kv/app/a', { body: 'alpha' });
    await requestJson(source.url, 'PUT', '/v1/kv/app/b', { body: Buffer.from([0, 1, 2, 255]) });
    await requestJson(source.url, 'PUT', '/v1/kv/app/big', { body: Buffer.alloc(200_000, 'x') });
    await requestJson(source.url, 'PUT', '/v1/kv/app/a', { body: 'alpha-2' });
    await requestJson(source.url, 'DELETE', '/v1/kv/app/gone');
  });

  after(async () => {
    for (const node of nodes) await stopProcess(node.child);
    removeDir(dir);
  });

  test('snapshot cli: save, inspect and restore round trip; the restored root continues the chain and a replica tree follows it', async () => {
    const file = join(dir, 'round.snap');
    const status = await statusOf(source);
    const saved = await cliJson<SnapshotJson>(['snapshot', 'save', file, '--url', source.url]);
    assert.deepEqual(
      { seq: saved.seq, headHash: saved.headHash, datasetId: saved.datasetId, keys: saved.keys, fileBytes: saved.fileBytes },
      { seq: status.seq, headHash: status.headHash, datasetId: status.datasetId, keys: 3, fileBytes: statSync(file).size },
    );
    assert.equal(saved.dataBytes, 'app/a'.length + 7 + 'app/b'.length + 4 + 'app/big'.length + 200_000);
    assert.deepEqual(readdirSync(dir).filter((name) => name.includes('partial')), [], 'no partial file is left');

    const inspected = await cliJson<SnapshotJson & { checksum: string }>(['snapshot', 'inspect', file]);
    assert.equal(inspected.checksum, 'ok');
    const fields = ({ datasetId, seq, headHash, keys, dataBytes, fileBytes }: SnapshotJson): unknown => ({ datasetId, seq, headHash, keys, dataBytes, fileBytes });
    assert.deepEqual(fields(inspected), fields(saved));
    const human = await runCli(['snapshot', 'inspect', file]);
    assert.match(human.stdout.toString(), new RegExp(`seq +${status.seq}\\n`));
    assert.match(human.stdout.toString(), /keys +3\n/);
    assert.match(human.stdout.toString(), /bytes +195 KiB of keys and values/);

    const restoredDir = join(dir, 'restored-root');
    const restored = await cliJson<SnapshotJson>(['snapshot', 'restore', file, '--data-dir', restoredDir]);
    assert.equal(restored.seq, status.seq);
    const root = await startServe(restoredDir);
    nodes.push(root);
    const rootStatus = await statusOf(root);
    assert.deepEqual(
      { role: rootStatus.role, seq: rootStatus.seq, headHash: rootStatus.headHash, datasetId: rootStatus.datasetId },
      { role: 'root', seq: status.seq, headHash: status.headHash, datasetId: status.datasetId },
    );
    assert.notEqual(rootStatus.nodeId, status.nodeId, 'a restore makes a new node');
    assert.deepEqual(await keysOf(root), await keysOf(source));
    const write = await requestJson<{ seq: number }>(root.url, 'PUT', '/v1/kv/app/after-restore', { body: 'new' });
    assert.equal(write.seq, status.seq + 1);

    // A tree under the restored root: a replica, and a replica of that replica.
    const middle = await startServe(join(dir, 'middle'), ['--upstream', root.replication]);
    nodes.push(middle);
    const leaf = await startServe(join(dir, 'leaf'), ['--upstream', `${middle.replication},${root.replication}`]);
    nodes.push(leaf);
    await requestJson(root.url, 'PUT', '/v1/kv/app/after-tree', { body: 'tree' });
    await converged(root, [middle, leaf]);
    assert.deepEqual(await keysOf(leaf), await keysOf(root));
    await assertSameChain(leaf, root);

    // A replica seeded from the file starts at the file's seq and is streamed the rest.
    const seededDir = join(dir, 'seeded-replica');
    await cliJson(['snapshot', 'restore', file, '--data-dir', seededDir]);
    const seeded = await startServe(seededDir, ['--upstream', root.replication]);
    nodes.push(seeded);
    await converged(root, [seeded]);
    assert.equal((await statusOf(seeded)).replication.snapshotsInstalled ?? 0, 0, 'served from the log, not sent a snapshot');
    assert.deepEqual(await keysOf(seeded), await keysOf(root));
  });

  test('snapshot cli: a damaged or truncated file is refused with a clear error and nothing is installed', async () => {
    const file = join(dir, 'good.snap');
    await cliJson(['snapshot', 'save', file, '--url', source.url]);
    const good = readFileSync(file);

    const flipped = join(dir, 'flipped.snap');
    const damaged = Buffer.from(good);
    damaged[Math.floor(damaged.length / 2)]! ^= 0x10;
    writeFileSync(flipped, damaged);
    const inspect = await runCli(['snapshot', 'inspect', flipped]);
    assert.equal(inspect.code, 1);
    assert.match(inspect.stderr, /SNAPSHOT_INVALID: not a valid snapshot file: .*(checksum|impossible|order|bytes)/);
    const target = join(dir, 'from-flipped');
    const restore = await runCli(['snapshot', 'restore', flipped, '--data-dir', target]);
    assert.equal(restore.code, 1);
    assert.match(restore.stderr, /SNAPSHOT_INVALID/);
    assert.ok(!existsSync(target), 'the directory it made is removed (found by audit: it was left, empty)');
    const existing = join(dir, 'existing-empty');
    mkdirSync(existing);
    assert.equal((await runCli(['snapshot', 'restore', flipped, '--data-dir', existing])).code, 1);
    assert.deepEqual(readdirSync(existing), [], 'a directory that was there is left, empty');

    const cut = join(dir, 'cut.snap');
    writeFileSync(cut, good);
    truncateSync(cut, good.length - 10);
    const truncated = await runCli(['snapshot', 'restore', cut, '--data-dir', join(dir, 'from-cut')]);
    assert.equal(truncated.code, 1);
    assert.match(truncated.stderr, /SNAPSHOT_INVALID: not a valid snapshot file: the file ends after 3 of 3 records; it is truncated/);
    const notSnapshot = await runCli(['snapshot', 'inspect', join(dir, 'source', 'data.mdb')]);
    assert.match(notSnapshot.stderr, /does not start with "MRCYSNAP"/);
  });

  test('snapshot cli: restore refuses a non-empty directory without --force, and a directory a node is serving even with it', async () => {
    const file = join(dir, 'force.snap');
    await cliJson(['snapshot', 'save', file, '--url', source.url]);
    const target = join(dir, 'force-target');
    await cliJson(['snapshot', 'restore', file, '--data-dir', target]);
    const again = await runCli(['snapshot', 'restore', file, '--data-dir', target]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /DATA_DIR_NOT_EMPTY: .* is not empty; .* --force/);
    await cliJson(['snapshot', 'restore', file, '--data-dir', target, '--force']);
    const locked = await runCli(['snapshot', 'restore', file, '--data-dir', source.dataDir, '--force']);
    assert.equal(locked.code, 1);
    assert.match(locked.stderr, /DATA_DIR_LOCKED/);
    assert.ok((await statusOf(source)).seq > 0, 'the running node is untouched');
  });

  test('snapshot cli: restore --force of a bad FILE leaves the directory with its data (found by review: it removed the data first)', async () => {
    const file = join(dir, 'keep-data.snap');
    await cliJson(['snapshot', 'save', file, '--url', source.url]);
    const target = join(dir, 'keep-data');
    await cliJson(['snapshot', 'restore', file, '--data-dir', target]);
    let node = await startServe(target);
    const before = { keys: await keysOf(node), status: await statusOf(node) };
    await stopProcess(node.child);

    const good = readFileSync(file);
    const cut = join(dir, 'keep-data-cut.snap');
    writeFileSync(cut, good.subarray(0, good.length - 100));
    const flipped = join(dir, 'keep-data-flipped.snap');
    const damaged = Buffer.from(good);
    damaged[damaged.length - 40]! ^= 0x01;
    writeFileSync(flipped, damaged);
    const directory = join(dir, 'keep-data-not-a-file');
    mkdirSync(directory);
    for (const bad of [cut, flipped, directory]) {
      const refused = await runCli(['snapshot', 'restore', bad, '--data-dir', target, '--force']);
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, /^mercury: SNAPSHOT_INVALID: /);
      assert.ok(existsSync(join(target, 'data.mdb')), `${bad}: data.mdb is still there`);
      assert.ok(!existsSync(join(target, 'restore.partial')), `${bad}: the partial store is removed`);
    }
    assert.match((await runCli(['snapshot', 'restore', directory, '--data-dir', target, '--force'])).stderr, /is a directory, not a snapshot file/);
    // A good FILE, but one of the files it replaces cannot be renamed over (audit, stop 37: data.mdb was replaced, then
    // the restore failed on the last rename).
    const dataBefore = readFileSync(join(target, 'data.mdb'));
    rmSync(join(target, 'store-initialised'));
    mkdirSync(join(target, 'store-initialised', 'x'), { recursive: true });
    const blocked = await runCli(['snapshot', 'restore', file, '--data-dir', target, '--force']);
    assert.equal(blocked.code, 1, blocked.stderr);
    assert.match(blocked.stderr, /^mercury: DATA_DIR_INVALID: \S+store-initialised is not a regular file/);
    assert.ok(readFileSync(join(target, 'data.mdb')).equals(dataBefore), 'data.mdb is the old one');
    rmSync(join(target, 'store-initialised'), { recursive: true });
    writeFileSync(join(target, 'store-initialised'), '');

    node = await startServe(target);
    nodes.push(node);
    assert.deepEqual(await keysOf(node), before.keys, 'the old data is served');
    assert.equal((await statusOf(node)).headHash, before.status.headHash);
    await stopProcess(node.child);

    // A restore killed half-way leaves its partial store: the next one removes it and succeeds.
    mkdirSync(join(target, 'restore.partial'));
    writeFileSync(join(target, 'restore.partial', 'data.mdb'), 'half a store');
    await cliJson(['snapshot', 'restore', file, '--data-dir', target, '--force']);
    assert.ok(!existsSync(join(target, 'restore.partial')));
    // Into a directory that holds nothing else, no --force is needed.
    const fresh = join(dir, 'keep-data-fresh');
    mkdirSync(join(fresh, 'restore.partial'), { recursive: true });
    await cliJson(['snapshot', 'restore', file, '--data-dir', fresh]);
    assert.deepEqual(readdirSync(fresh).sort(), ['data.mdb', 'lock.mdb', 'store-initialised']);
    // What a killed restore really leaves: its partial store and the data directory's lock, naming a process now gone
    // (found by review: that lock made the directory "not empty", so the restore wanted --force after all).
    const killed = join(dir, 'keep-data-killed');
    mkdirSync(join(killed, 'restore.partial'), { recursive: true });
    lockThenDie(killed);
    assert.ok(existsSync(join(killed, 'mercury.lock')));
    await cliJson(['snapshot', 'restore', file, '--data-dir', killed]);
    assert.deepEqual(readdirSync(killed).sort(), ['data.mdb', 'lock.mdb', 'store-initialised']);
  });

  // Found by an audit (stop 37): Ctrl-C during a restore exited 130 without a word and left the partial store, as large
  // as the data, until the next restore.
  test('snapshot cli: a restore stopped by SIGINT removes its partial store and says so', async () => {
    const file = join(dir, 'large.snap');
    const encoder = new SnapshotEncoder();
    const value = Buffer.alloc(1024 * 1024, 'v');
    const records = Array.from({ length: 48 }, (_, index) => ({ key: Buffer.from(`big/${String(index).padStart(3, '0')}`), value, createSeq: 1, modSeq: 1, version: 1 }));
    const header = { version: SNAPSHOT_FORMAT_VERSION, datasetId: 'interrupted-restore', seq: 1, headHash: Buffer.alloc(32, 1), keyCount: records.length, dataBytes: records.reduce((sum, record) => sum + record.key.length + record.value.length, 0), savedAtMs: 1 };
    writeFileSync(file, Buffer.concat([encoder.header(header), ...records.map((record) => encoder.record(record)), encoder.trailer()]));
    const target = join(dir, 'interrupted');
    const child = spawn(process.execPath, [CLI_PATH, 'snapshot', 'restore', file, '--data-dir', target], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    const deadline = Date.now() + 10_000;
    while (!existsSync(join(target, 'restore.partial', 'data.mdb')) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 2));
    child.kill('SIGINT');
    const code = await exited;
    if (code === 0) return assert.fail(`the restore finished before SIGINT reached it; stderr: ${stderr}`);
    assert.equal(code, 130, stderr);
    assert.match(stderr, /mercury: SIGINT: snapshot restore stopped; \S+interrupted keeps the data it had/);
    assert.ok(!existsSync(join(target, 'restore.partial')), 'the partial store is removed');
    assert.ok(!existsSync(join(target, 'data.mdb')), 'nothing was installed');
  });

  // Found by an audit (stop 37): a node whose header announced 2^40 keys, then sent records without end, had `save`
  // write 2.2 GB in 8 s. The announced size is now held against the free space before the disk fills.
  test('snapshot cli: save from a node announcing more than the disk holds stops at the header, with STORAGE_FULL', async () => {
    const header = { version: SNAPSHOT_FORMAT_VERSION, datasetId: 'hostile', seq: 5, headHash: Buffer.alloc(32, 1), keyCount: 2 ** 40, dataBytes: 2 ** 50, savedAtMs: 1 };
    const hostile = createHttpServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.write(new SnapshotEncoder().header(header));
      // ...and then nothing more: a save that waited for the records would hang until its idle timeout.
    });
    await new Promise<void>((resolve) => hostile.listen(0, '127.0.0.1', resolve));
    try {
      const file = join(dir, 'hostile.snap');
      const started = Date.now();
      const saved = await runCli(['snapshot', 'save', file, '--url', `http://127.0.0.1:${(hostile.address() as AddressInfo).port}`]);
      assert.equal(saved.code, 1, saved.stderr);
      assert.match(saved.stderr, /^mercury: STORAGE_FULL: the snapshot is [\d.]+ [A-Z]i?B, and the disk that holds \S+hostile\.snap has [\d.]+ [A-Z]?i?B free/);
      assert.ok(Date.now() - started < 10_000, 'refused at the header');
      assert.deepEqual(readdirSync(dir).filter((name) => name.startsWith('hostile.snap')), [], 'no partial file is left');
    } finally {
      hostile.closeAllConnections();
      await new Promise((resolve) => hostile.close(resolve));
    }
  });

  test('snapshot cli: save to a FILE that is a directory fails before asking the node', async () => {
    const directory = join(dir, 'save-into-directory');
    mkdirSync(directory);
    // Port 1: a save that asked the node first would fail as unreachable (exit 3).
    const refused = await runCli(['snapshot', 'save', directory, '--url', 'http://127.0.0.1:1']);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /^mercury: INVALID_ARGUMENT: .* is a directory; give the path of the snapshot file to write/);
    const slash = await runCli(['snapshot', 'save', `${join(dir, 'new-dir')}/`, '--url', 'http://127.0.0.1:1']);
    assert.equal(slash.code, 1, slash.stderr);
    assert.match(slash.stderr, /^mercury: INVALID_ARGUMENT: \S+new-dir\/ ends with a slash, so it names a directory/);
    const missing = await runCli(['snapshot', 'save', join(dir, 'no-such-dir', 'x.snap'), '--url', 'http://127.0.0.1:1']);
    assert.equal(missing.code, 1, missing.stderr);
    assert.match(missing.stderr, /ENOENT/);
  });

  // Found by audit: a FILE that was a symbolic link was replaced by a regular file (the rename of the partial file went
  // over the link), and a name near 255 bytes failed with ENAMETOOLONG at `FILE.partial-PID`.
  test('snapshot cli: save refuses a FILE that is a symbolic link before asking the node, and leaves the link and its target as they were', async () => {
    const target = join(dir, 'link-target.snap');
    writeFileSync(target, 'the previous backup');
    const link = join(dir, 'latest.snap');
    symlinkSync(target, link);
    const refused = await runCli(['snapshot', 'save', link, '--url', 'http://127.0.0.1:1']);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /^mercury: SYMLINK_REFUSED: \S+latest\.snap is a symbolic link \(to \S+link-target\.snap\); snapshot save replaces FILE with a new file .* Give the link's target as FILE/);
    assert.ok(lstatSync(link).isSymbolicLink(), 'the link is still a link');
    assert.equal(readFileSync(target, 'utf8'), 'the previous backup');
    // A dangling link is refused too: the save would make a file at the link's name, not at its target.
    const dangling = join(dir, 'dangling.snap');
    symlinkSync(join(dir, 'nowhere.snap'), dangling);
    assert.match((await runCli(['snapshot', 'save', dangling, '--url', 'http://127.0.0.1:1'])).stderr, /^mercury: SYMLINK_REFUSED: /);
    assert.ok(lstatSync(dangling).isSymbolicLink());
  });

  test('snapshot cli: save to a FILE whose name leaves no room for the .partial-PID suffix writes through a short temporary name; a name over 255 bytes is refused before asking the node', async () => {
    const long = join(dir, `${'s'.repeat(245)}.snap`);
    const saved = await cliJson<SnapshotJson>(['snapshot', 'save', long, '--url', source.url]);
    assert.ok(saved.keys > 0);
    assert.equal((await cliJson<SnapshotJson>(['snapshot', 'inspect', long])).headHash, saved.headHash);
    assert.deepEqual(readdirSync(dir).filter((name) => name.includes('partial')), [], 'no temporary file is left');
    const tooLong = await runCli(['snapshot', 'save', join(dir, 'x'.repeat(256)), '--url', 'http://127.0.0.1:1']);
    assert.equal(tooLong.code, 1, tooLong.stderr);
    assert.match(tooLong.stderr, /^mercury: INVALID_ARGUMENT: the name of \S+ is 256 bytes, over the 255 a file system allows; give a shorter file name/);
  });

  test('snapshot cli: --to-seq replays the retained log from the file to that seq, and refuses to go back', async () => {
    const file = join(dir, 'pitr.snap');
    const base = await cliJson<SnapshotJson>(['snapshot', 'save', file, '--url', source.url]);
    for (let i = 0; i < 5; i++) await requestJson(source.url, 'PUT', `/v1/kv/pitr/${i}`, { body: `v${i}` });
    await requestJson(source.url, 'DELETE', '/v1/kv/app/a');
    const target = base.seq + 3;
    const entries = new Map((await auditLog(source.url)).map((entry) => [entry.seq, entry]));
    const restored = await cliJson<SnapshotJson>(['snapshot', 'restore', file, '--data-dir', join(dir, 'pitr'), '--to-seq', String(target), '--url', source.url]);
    assert.equal(restored.seq, target);
    assert.equal(restored.replayedEntries, 3);
    assert.equal(restored.headHash, entries.get(target)!.hash);
    // Its entries are signed: the restored root signs on with the source's key (a new one would be refused by every
    // replica that trusts the old, and the start says so instead of making one).
    assert.match((await serveRefused(join(dir, 'pitr'))).stderr, /DATA_DIR_INVALID: .*signing-key\.pem is missing, but this root's entries are signed/);
    const node = await startServe(join(dir, 'pitr'), ['--signing-key', join(dir, 'source', 'signing-key.pem')]);
    nodes.push(node);
    const keys = await keysOf(node);
    assert.deepEqual(
      Object.keys(keys).filter((key) => key.startsWith('pitr/')),
      ['pitr/0', 'pitr/1', 'pitr/2'],
    );
    assert.equal(keys['app/a'], 'utf8:alpha-2', 'the later delete is not applied');
    await stopProcess(node.child);

    const back = await runCli(['snapshot', 'restore', file, '--data-dir', join(dir, 'pitr-back'), '--to-seq', String(base.seq - 1), '--url', source.url]);
    assert.equal(back.code, 1);
    assert.match(back.stderr, /INVALID_ARGUMENT: the file holds seq \d+; it cannot be restored to the earlier seq/);
    assert.ok(!existsSync(join(dir, 'pitr-back', 'data.mdb')));
  });

  test('snapshot cli: a save that fails leaves FILE as it was and no partial file', async () => {
    const file = join(dir, 'keep.snap');
    writeFileSync(file, 'the previous backup');
    const down = await runCli(['snapshot', 'save', file, '--url', 'http://127.0.0.1:1']);
    assert.equal(down.code, 3, down.stderr);
    assert.equal(readFileSync(file, 'utf8'), 'the previous backup');
    assert.deepEqual(readdirSync(dir).filter((name) => name.includes('partial')), []);
  });
});

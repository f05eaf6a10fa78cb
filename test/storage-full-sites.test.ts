/**
 * Disk full at the write sites other than a node's own writes (test/storage-full.test.ts): a first start, a replica
 * joining (snapshot install) or restarted, `snapshot restore`, `mercury demo`. On a small tmpfs that the test mounts and unmounts.
 *
 * As found (audit, 2026-12-07): a first start on a full disk died of SIGSEGV inside LMDB, or said DATA_DIR_INVALID
 * "fix their owner or mode" and left an empty lock file that refused the next start; a join or a restore that filled
 * the disk said STORAGE_IO_ERROR "check its disk"; a replica that could not join was only NOT_JOINED "idle"; a replica
 * restarted on a full disk said only "ENOSPC: no space left on device, write", and so did the demo.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request, requestJson, waitUntil } from './support/http.js';
import { makeTempDir, removeDir, runCli, serveRefused, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { fillUp, mountTmpfs } from './support/tmpfs.js';

const TMPFS_BYTES = 16 * 1024 * 1024;
/** Values of the root's data set: together more than a joining replica or a restore finds free. */
const VALUE_BYTES = 900 * 1024;
const VALUES = 6;
/**
 * Free space left for a join or a restore: room for a new store and what the space guard keeps free under every write
 * (src/store/space-guard.ts), not for the data set.
 */
const LEFT_BYTES = 6 * 1024 * 1024;

describe('storage full at other write sites', () => {
  let root: string;
  let mountPoint: string;
  let skip: string | undefined;
  let source: ServeProcess | undefined;
  const filler = (): string => join(mountPoint, 'filler');

  before(async () => {
    root = makeTempDir('storage-full-sites');
    mountPoint = join(root, 'mnt');
    mkdirSync(mountPoint);
    skip = mountTmpfs(mountPoint, TMPFS_BYTES);
    if (skip !== undefined) return;
    source = await startServe(join(root, 'source'));
    for (let i = 0; i < VALUES; i++) await requestJson(source.url, 'PUT', `/v1/kv/big-${i}`, { body: Buffer.alloc(VALUE_BYTES, i) });
  });

  after(async () => {
    if (source !== undefined) await stopProcess(source.child);
    if (skip === undefined) execFileSync('umount', [mountPoint]);
    removeDir(root);
  });

  test('storage full: a first start on a full disk exits STORAGE_FULL, leaves no lock file, and starts once space is freed', async (t) => {
    if (skip !== undefined) return t.skip(skip);
    const dir = join(mountPoint, 'first-start');
    try {
      fillUp(filler());
      const refused = await serveRefused(dir, ['--auth', 'required']);
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, /mercury: STORAGE_FULL: \S+mercury\.lock cannot be made or read \(ENOSPC[^)]*\): the disk that holds data directory \S+ is full; free space on it/);
      assert.equal(existsSync(join(dir, 'mercury.lock')), false, 'no empty lock file refuses the next start');
      // Room for the lock, not for LMDB's files: LMDB died of SIGSEGV making them.
      rmSync(filler());
      fillUp(filler(), 64 * 1024);
      const small = await serveRefused(dir, ['--auth', 'required']);
      assert.equal(small.code, 1, small.stderr);
      assert.match(small.stderr, /mercury: STORAGE_FULL: the disk that holds \S+first-start has \d+ bytes free, and a new store needs at least \d+; free space on it/);
      assert.deepEqual(readdirSync(dir), [], 'no lock, token, key or data file is left');
    } finally {
      rmSync(filler(), { force: true });
    }
    const node = await startServe(dir, ['--auth', 'required']);
    try {
      const token = readFileSync(join(dir, 'admin-token'), 'utf8').trim();
      const answer = await request(node.url, 'PUT', '/v1/kv/a', { body: 'b', headers: { authorization: `Bearer ${token}` } });
      assert.equal(answer.status, 200, answer.body.toString());
    } finally {
      await stopProcess(node.child);
    }
  });

  // Review, 2026-12-07: the free space was statfs's bavail, what a user other than root may write, so a node run as root
  // (as in most containers) on a disk whose free blocks were all reserved for root was refused a first start that it
  // could make, and `snapshot save` a file it could write. An ext4 (tmpfs reserves nothing) with half its blocks reserved, the rest filled by nobody.
  test('storage full: a node run as root starts, and saves a snapshot, on a disk whose free blocks are reserved for root', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root: the reserved blocks are for root');
    const image = join(root, 'ext4.img');
    const mount = join(root, 'ext4');
    mkdirSync(mount);
    try {
      execFileSync('truncate', ['-s', '24M', image]);
      execFileSync('mkfs.ext4', ['-q', '-F', '-m', '50', image], { stdio: 'pipe' });
      execFileSync('mount', ['-o', 'loop', image, mount], { stdio: 'pipe' });
    } catch (error) {
      return t.skip(`an ext4 on a loop device cannot be mounted here (${String((error as { stderr?: Buffer }).stderr ?? error).trim()})`);
    }
    try {
      // nobody must reach the mount (the test's directory is the runner's own, 0700).
      chmodSync(root, 0o711);
      chmodSync(mount, 0o777);
      // As nobody, until the blocks left to users are gone; root's half stays free.
      spawnSync('/usr/bin/setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'dd', 'if=/dev/zero', `of=${join(mount, 'filler')}`, 'bs=64k'], { stdio: 'ignore' });
      const space = statfsSync(mount);
      assert.ok(space.bavail * space.bsize < 1024 * 1024 && space.bfree * space.bsize > 4 * 1024 * 1024, `bavail ${space.bavail}, bfree ${space.bfree}`);
      const node = await startServe(join(mount, 'data'), ['--auth', 'off']);
      try {
        assert.equal((await request(node.url, 'PUT', '/v1/kv/a', { body: 'b' })).status, 200);
        // `snapshot save` asks the same question before it writes: a snapshot larger than bavail, inside root's reserve.
        assert.equal((await request(node.url, 'PUT', '/v1/kv/big', { body: Buffer.alloc(512 * 1024, 7) })).status, 200);
        const saved = await runCli(['snapshot', 'save', join(mount, 'backup.snap'), '--url', node.url]);
        assert.equal(saved.code, 0, saved.stderr);
      } finally {
        await stopProcess(node.child);
      }
    } finally {
      execFileSync('umount', [mount]);
      rmSync(image, { force: true });
    }
  });

  test('storage full: a replica whose disk fills while it installs its first snapshot reports STORAGE_FULL, serves nothing of it, and joins once space is freed', async (t) => {
    if (skip !== undefined) return t.skip(skip);
    let replica: ServeProcess | undefined;
    try {
      fillUp(filler(), LEFT_BYTES);
      replica = await startServe(join(mountPoint, 'replica'), ['--upstream', source!.replication]);
      const url = replica.url;
      await waitUntil('the replica pauses replication', () => Promise.resolve(/replication paused: the store cannot write/.test(replica!.stderr())));
      assert.match(replica.stderr(), /"message":"write failed: storage","code":"STORAGE_FULL"/);
      await waitUntil('readiness says STORAGE_FULL', async () => /STORAGE_FULL: replication paused/.test((await request(url, 'GET', '/readyz')).body.toString()));
      const status = await requestJson<{ seq: number; keys: number; replication: { storagePause: { code: string } | null } }>(url, 'GET', '/v1/status');
      assert.equal(status.replication.storagePause?.code, 'STORAGE_FULL');
      assert.equal(status.seq, 0, 'nothing of the snapshot is served');
      assert.equal((await request(url, 'GET', '/v1/kv/big-0')).status, 404);
      assert.equal(replica.child.exitCode, null, 'the replica process is alive');

      rmSync(filler());
      await waitUntil('the replica joined', async () => (await request(url, 'GET', '/readyz')).status === 200);
      assert.equal((await request(url, 'GET', `/v1/kv/big-${VALUES - 1}`)).body.length, VALUE_BYTES);
      const joined = await requestJson<{ replication: { storagePause: unknown } }>(url, 'GET', '/v1/status');
      assert.equal(joined.replication.storagePause, null);
    } catch (error) {
      throw new Error(`${(error as Error).message}; the replica's log: ${replica?.stderr().slice(-3000) ?? ''}`, { cause: error });
    } finally {
      rmSync(filler(), { force: true });
      if (replica !== undefined) await stopProcess(replica.child);
    }
  });

  // The replica of the test above, killed: its unsynced guard writes its state at every start.
  test('storage full: a replica restarted on a full disk exits STORAGE_FULL naming its guard state, keeps its data, and starts once space is freed', async (t) => {
    if (skip !== undefined) return t.skip(skip);
    const dir = join(mountPoint, 'replica');
    const state = readFileSync(join(dir, 'unsynced-guard.json'));
    try {
      // The killed replica's lock, taken over, frees the page the new lock takes; none is left for the guard's state.
      fillUp(filler());
      const refused = await serveRefused(dir, ['--upstream', source!.replication]);
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, /mercury: STORAGE_FULL: \S+unsynced-guard\.json could not be written \(ENOSPC[^)]*\): its disk is full, and the file is as it was; free space on it/);
      assert.deepEqual(readFileSync(join(dir, 'unsynced-guard.json')), state);
    } finally {
      rmSync(filler(), { force: true });
    }
    const replica = await startServe(dir, ['--upstream', source!.replication]);
    try {
      assert.equal((await request(replica.url, 'GET', '/v1/kv/big-0')).body.length, VALUE_BYTES);
    } finally {
      await stopProcess(replica.child);
    }
  });

  test('storage full: a replica stopped on a full disk says its guard state could not be written and releases its lock', async (t) => {
    if (skip !== undefined) return t.skip(skip);
    const dir = join(mountPoint, 'replica');
    const replica = await startServe(dir, ['--upstream', source!.replication]);
    try {
      fillUp(filler());
      await stopProcess(replica.child, 'SIGTERM');
      assert.match(replica.stderr(), /STORAGE_FULL: \S+unsynced-guard\.json could not be written/);
      assert.equal(existsSync(join(dir, 'mercury.lock')), false, 'the lock is released');
    } finally {
      rmSync(filler(), { force: true });
      await stopProcess(replica.child);
    }
  });

  test('storage full: verify on a full disk walks the trees without the lock it cannot write, and says the store is sound', async (t) => {
    if (skip !== undefined) return t.skip(skip);
    const dir = join(mountPoint, 'replica');
    try {
      fillUp(filler());
      const result = await runCli(['verify', '--data-dir', dir]);
      const stdout = result.stdout.toString('utf8');
      assert.equal(result.code, 0, `stdout: ${stdout} stderr: ${result.stderr}`);
      assert.match(stdout, /^b-tree {3}every page of LMDB's trees is sound \(walked without the directory's lock, which this user cannot take: the directory is not writable, or its disk is full/m);
      assert.match(stdout, /^OK: the store is sound/m);
      assert.equal(existsSync(join(dir, 'mercury.lock')), false, 'no lock file is left');
    } finally {
      rmSync(filler(), { force: true });
    }
  });

  test('storage full: snapshot restore onto a full disk exits STORAGE_FULL, keeps the old data, leaves nothing in the way of the next restore', async (t) => {
    if (skip !== undefined) return t.skip(skip);
    const file = join(root, 'source.snap');
    const saved = await runCli(['--url', source!.url, 'snapshot', 'save', file]);
    assert.equal(saved.code, 0, saved.stderr);
    const dir = join(mountPoint, 'restored');
    const old = await startServe(dir);
    await requestJson(old.url, 'PUT', '/v1/kv/old', { body: 'kept' });
    await stopProcess(old.child);
    // What the node left but its lock (killed): a restore takes a stale lock over and releases it.
    const files = readdirSync(dir).filter((name) => name !== 'mercury.lock').sort();
    try {
      fillUp(filler(), LEFT_BYTES);
      const full = await runCli(['snapshot', 'restore', file, '--data-dir', dir, '--force']);
      assert.equal(full.code, 1, full.stderr);
      assert.match(full.stderr, /^mercury: STORAGE_FULL: .*storage is full/m);
      assert.deepEqual(readdirSync(dir).sort(), files, 'no restore.partial is left');
      rmSync(filler());
      fillUp(filler(), 64 * 1024);
      const small = await runCli(['snapshot', 'restore', file, '--data-dir', dir, '--force']);
      assert.equal(small.code, 1, small.stderr);
      assert.match(small.stderr, /^mercury: STORAGE_FULL: the disk that holds \S+restore\.partial has \d+ bytes free/m);
      assert.deepEqual(readdirSync(dir).sort(), files);
    } finally {
      rmSync(filler(), { force: true });
    }
    const kept = await startServe(dir);
    try {
      assert.equal((await request(kept.url, 'GET', '/v1/kv/old')).body.toString(), 'kept');
    } finally {
      await stopProcess(kept.child);
    }
    const restored = await runCli(['snapshot', 'restore', file, '--data-dir', dir, '--force']);
    assert.equal(restored.code, 0, restored.stderr);
  });

  // `mercury demo` (npm start) writes its certificates, its tokens and its nodes' logs into its DIR, and its nodes their stores.
  test('storage full: the demo on a full disk exits STORAGE_FULL naming the file it could not write, or its node that could not start, and what to do', async (t) => {
    if (skip !== undefined) return t.skip(skip);
    const dir = join(mountPoint, 'demo');
    const refused = async (what: RegExp): Promise<void> => {
      const result = await runCli(['demo', '--replicas', '1', '--dir', dir, '--json']);
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, new RegExp(`^mercury: STORAGE_FULL: ${what.source}.*; free space on it, then try again; or run the demo with --dir on another disk$`, 'm'));
      assert.doesNotMatch(result.stderr, /^mercury: ENOSPC/m);
      assert.doesNotMatch(result.stderr, /^\s+at /m, 'no stack trace');
    };
    try {
      fillUp(filler());
      // Its first file, the demo CA's key: openssl wrote it, and the demo said "ENOSPC: no space left on device, write".
      await refused(/\S+demo\/tls\/ca-key\.pem could not be written \(ENOSPC[^)]*\): its disk is full/);
      // Room for the certificates, not for the root's store: the root exited STORAGE_FULL into a log the full disk kept
      // empty, and the demo asked whether a port was in use.
      rmSync(filler());
      fillUp(filler(), 256 * 1024);
      await refused(/the demo's root exited with code 1: the disk that holds \S+demo\/root has \d+ bytes free, and a new store needs at least \d+/);
    } finally {
      rmSync(filler(), { force: true });
    }
  });
});

/**
 * `mercury verify` on a data directory its user may only read (a backup copy, another user's directory, a read-only
 * mount): it cannot take the directory's lock for its walk of LMDB's trees, and was refused with DATA_DIR_INVALID
 * naming the lock file. Now it walks without the lock while no lock names a live node, says so, and checks the rest
 * as before; a lock that names a live process keeps the walk off. Real CLI processes, run as nobody (setpriv) when
 * the tests run as root, on a directory made read-only with chmod.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LOCK_FILE, processStartTicks } from '../src/fs/dir-lock.js';
import { requestJson } from './support/http.js';
import { CLI_PATH, makeTempDir, removeDir, startServe, stopProcess } from './support/process.js';

/** LMDB's page flags: a leaf page, and a sub-page (only ever inside a leaf node, never a page of the file). */
const P_LEAF = 0x02;
const P_SUBP = 0x40;

describe('verify: a data directory this user may only read', () => {
  let root: string;
  let dir: string;
  let files: string[];
  const asRoot = process.getuid?.() === 0;
  const skip = asRoot && !existsSync('/usr/bin/setpriv') ? 'running as root without setpriv to drop to another user' : false;
  /** verify run as a user who may read the directory and not write it. */
  const verifyAsReader = (args: readonly string[] = [], dataDir = dir): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } => {
    const argv = [CLI_PATH, 'verify', '--data-dir', dataDir, ...args];
    const [command, full] = asRoot ? ['/usr/bin/setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, ...argv]] : [process.execPath, argv];
    const result = spawnSync(command, full, { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' });
    return { status: result.status, signal: result.signal, stdout: result.stdout, stderr: result.stderr };
  };

  before(async () => {
    root = makeTempDir('verify-read-only');
    chmodSync(root, 0o755);
    dir = join(root, 'data');
    const node = await startServe(dir);
    for (let i = 0; i < 20; i++) await requestJson(node.url, 'PUT', `/v1/kv/k${i}`, { body: `v${i}` });
    await stopProcess(node.child, 'SIGTERM');
    // Readable by all, writable by none but root: what a copy of a backup another user made looks like to this one.
    for (const name of readdirSync(dir)) chmodSync(join(dir, name), 0o444);
    chmodSync(dir, 0o555);
    files = readdirSync(dir).sort();
  });

  after(() => {
    chmodSync(dir, 0o700);
    removeDir(root);
  });

  test('verify read-only: with no node on it, the trees are walked without the lock, saying so, and the store is checked', { skip }, () => {
    const result = verifyAsReader();
    assert.equal(result.status, 0, `stdout: ${result.stdout} stderr: ${result.stderr}`);
    assert.match(result.stdout, /^b-tree {3}every page of LMDB's trees is sound \(walked without the directory's lock, which this user cannot take/m);
    assert.match(result.stdout, /keys {5}20 checked, 0 damaged/);
    assert.match(result.stdout, /^OK: the store is sound/m);
    const json = JSON.parse(verifyAsReader(['--json']).stdout) as { ok: boolean; treeChecked: boolean; treeLockTaken: boolean };
    assert.deepEqual([json.ok, json.treeChecked, json.treeLockTaken], [true, true, false]);
    assert.deepEqual(readdirSync(dir).sort(), files, 'nothing made in the directory');
  });

  test('verify read-only: a damaged tree found by the walk without the lock is DATA_DIR_INVALID naming data.mdb, exit 1, no crash', { skip }, () => {
    const damaged = join(root, 'damaged');
    cpSync(dir, damaged, { recursive: true });
    chmodSync(damaged, 0o755);
    const path = join(damaged, 'data.mdb');
    chmodSync(path, 0o644);
    const file = readFileSync(path);
    const pageBytes = file.readUInt32LE(48);
    // Every leaf page (flags at byte 18 of its header) marked P_SUBP, which LMDB never writes on a page of its own:
    // the live ones among them make the trees damaged, which LMDB would die on (test/lmdb-tree-walk.test.ts).
    for (let page = 2; (page + 1) * pageBytes <= file.length; page++) {
      const flags = file.readUInt16LE(page * pageBytes + 18);
      if ((flags & P_LEAF) !== 0) file.writeUInt16LE(flags | P_SUBP, page * pageBytes + 18);
    }
    writeFileSync(path, file);
    chmodSync(path, 0o444);
    chmodSync(damaged, 0o555);
    const result = verifyAsReader([], damaged);
    chmodSync(damaged, 0o755);
    assert.deepEqual({ status: result.status, signal: result.signal }, { status: 1, signal: null }, result.stderr);
    assert.match(result.stderr, /^mercury: DATA_DIR_INVALID: \S+data\.mdb is damaged/m);
  });

  test('verify read-only: a directory without data.mdb is DATA_DIR_INVALID saying so, exit 1, as on one this user may write', { skip }, () => {
    const empty = join(root, 'empty');
    mkdirSync(empty, { mode: 0o555 });
    chmodSync(empty, 0o555);
    const result = verifyAsReader([], empty);
    assert.deepEqual({ status: result.status, signal: result.signal }, { status: 1, signal: null }, result.stderr);
    assert.match(result.stderr, /^mercury: DATA_DIR_INVALID: \S+empty holds no data\.mdb/m);
  });

  test('verify read-only: a stale lock (a killed node\'s, in a copy of its directory) is walked past, not a bare EACCES, and left as it is', { skip }, () => {
    chmodSync(dir, 0o755);
    // The test runner's pid with another start time: the holder it names is gone (pid reused), as after a kill -9.
    const stale = JSON.stringify({ pid: process.pid, host: hostname(), bootId: '', startTicks: '1', startedAt: new Date().toISOString() });
    writeFileSync(join(dir, LOCK_FILE), stale, { mode: 0o444 });
    chmodSync(dir, 0o555);
    try {
      const result = verifyAsReader();
      assert.equal(result.status, 0, `stdout: ${result.stdout} stderr: ${result.stderr}`);
      assert.match(result.stdout, /^b-tree {3}every page of LMDB's trees is sound \(walked without the directory's lock/m);
      assert.equal(readFileSync(join(dir, LOCK_FILE), 'utf8'), stale);
    } finally {
      chmodSync(dir, 0o755);
      unlinkSync(join(dir, LOCK_FILE));
      chmodSync(dir, 0o555);
    }
  });

  test('verify read-only: a lock that names a live process keeps the walk off; the rest is checked', { skip }, () => {
    chmodSync(dir, 0o755);
    // A live holder on this host: the test runner itself, as a node's lock names it.
    const holder = { pid: process.pid, host: hostname(), bootId: '', startTicks: processStartTicks(process.pid), startedAt: new Date().toISOString() };
    writeFileSync(join(dir, LOCK_FILE), JSON.stringify(holder), { mode: 0o444 });
    chmodSync(dir, 0o555);
    try {
      const result = verifyAsReader();
      assert.equal(result.status, 0, `stdout: ${result.stdout} stderr: ${result.stderr}`);
      assert.match(result.stdout, /^b-tree {3}not walked: a running node holds the directory/m);
      assert.match(result.stdout, /^OK: the store is sound/m);
    } finally {
      chmodSync(dir, 0o755);
      unlinkSync(join(dir, LOCK_FILE));
      chmodSync(dir, 0o555);
    }
  });
});

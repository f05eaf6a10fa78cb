/**
 * Data directory: one writer process at a time (issue 10, item 1), and owner-only modes (item 5).
 *
 * The attack as found: two `mercury serve` on one directory both started and both acknowledged the same seqs.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MercuryError, openLocal } from '../src/index.js';
import { INITIALISED_FILE, Store } from '../src/store/index.js';
import { LOCK_FILE, processStartTicks } from '../src/fs/dir-lock.js';
import { request, requestJson } from './support/http.js';
import { lockSwapEnv } from './support/lock-swap.js';
import { rewriteRaw } from './support/lmdb-records.js';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../src/node/index.js';
import { tokenKey, type AuthMode } from '../src/auth/index.js';
import { CLI_PATH, makeTempDir, removeDir, serveRefused, startServe, stopProcess } from './support/process.js';

describe('data directory lock', () => {
  let root: string;

  before(() => {
    root = makeTempDir('dir-lock');
  });

  after(() => removeDir(root));

  test('data dir lock: a second mercury serve on the same directory refuses to start, naming the holder; readers stay allowed', async () => {
    const dir = join(root, 'two-serves');
    const first = await startServe(dir);
    try {
      await requestJson(first.url, 'PUT', '/v1/kv/k', { body: 'one' });
      const refused = await serveRefused(dir);
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, /DATA_DIR_LOCKED/);
      assert.match(refused.stderr, new RegExp(`pid ${first.child.pid} on host ${hostname()}, started \\d{4}-`));
      // The first node still serves, alone.
      assert.equal((await requestJson<{ seq: number }>(first.url, 'GET', '/v1/status')).seq, 1);
      const local = await openLocal(dir);
      try {
        assert.equal(local.getSync('k')?.value.toString(), 'one');
      } finally {
        await local.close();
      }
    } finally {
      await stopProcess(first.child, 'SIGTERM');
    }
    assert.equal(existsSync(join(dir, LOCK_FILE)), false, 'a clean stop removes the lock');
  });

  test('data dir lock: a lock put in place of a stopping node\'s own, after its release checked it, survives the release', async () => {
    const dir = join(root, 'swapped-at-release');
    // Another process's lock (a live one: this test runner), swapped in by a test-only preload at the moment between
    // the release's check of the lock and its removal (test/support/lock-swap.ts).
    const other = JSON.stringify({ pid: process.pid, host: hostname(), bootId: '', startTicks: processStartTicks(process.pid), startedAt: new Date().toISOString() });
    const node = await startServe(dir, [], lockSwapEnv(other));
    await requestJson(node.url, 'PUT', '/v1/kv/k', { body: 'one' });
    await stopProcess(node.child, 'SIGTERM');
    assert.equal(existsSync(join(dir, LOCK_FILE)), true, `the other process's lock was removed by the release; stderr: ${node.stderr()}`);
    assert.equal(readFileSync(join(dir, LOCK_FILE), 'utf8'), other);
    assert.deepEqual(readdirSync(dir).filter((name) => name.startsWith(LOCK_FILE) && name !== LOCK_FILE), [], 'nothing left under another name');
    // That lock holds the directory: a start is refused, naming this process.
    const refused = await serveRefused(dir);
    assert.match(refused.stderr, new RegExp(`DATA_DIR_LOCKED: .*pid ${process.pid} on host`));
  });

  test('data dir lock: after kill -9 the lock is stale and the next start takes it over', async () => {
    const dir = join(root, 'killed');
    const first = await startServe(dir);
    await requestJson(first.url, 'PUT', '/v1/kv/k', { body: 'one' });
    await stopProcess(first.child, 'SIGKILL');
    assert.equal(existsSync(join(dir, LOCK_FILE)), true);
    const second = await startServe(dir);
    try {
      assert.equal((await requestJson<{ seq: number }>(second.url, 'GET', '/v1/status')).seq, 1);
      const holder = JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')) as { pid: number };
      assert.equal(holder.pid, second.child.pid);
    } finally {
      await stopProcess(second.child);
    }
  });

  // As found (audit of 2026-12-07): a node killed under a parent that does not reap it stays a zombie, which
  // kill(pid, 0) still finds; every restart was DATA_DIR_LOCKED until the zombie was reaped.
  test('data dir lock: a holder killed and left a zombie by a parent that does not reap it is stale; the next start takes it over', async (t) => {
    if (!existsSync('/proc/self/stat')) return t.skip('needs /proc to see a zombie');
    const dir = join(root, 'zombie');
    // `exec sleep` leaves the node a child of a process that never waits for it, as a container's pid 1 that is not an
    // init does.
    const serve = [CLI_PATH, 'serve', '--data-dir', dir, '--listen', '127.0.0.1:0', '--replication-listen', '127.0.0.1:0', '--wire-listen', '127.0.0.1:0', '--auth', 'off']
      .map((arg) => `'${arg}'`)
      .join(' ');
    const parent = spawn('sh', ['-c', `'${process.execPath}' ${serve} & echo "pid $!"; exec sleep 600`], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let stdout = '';
      parent.stdout.setEncoding('utf8');
      const pid = await new Promise<number>((resolve, reject) => {
        parent.once('exit', () => reject(new Error(`the parent exited; stdout: ${stdout}`)));
        parent.stdout.on('data', (text: string) => {
          stdout += text;
          const match = /pid (\d+)\n[^]*mercury node listening on/.exec(stdout);
          if (match !== null) resolve(Number(match[1]));
        });
      });
      process.kill(pid, 'SIGKILL');
      while (!readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ')) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal((JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')) as { pid: number }).pid, pid, 'the zombie holds the lock');
      const second = await startServe(dir);
      try {
        assert.equal((JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')) as { pid: number }).pid, second.child.pid);
      } finally {
        await stopProcess(second.child);
      }
    } finally {
      // The zombie goes with its parent (reaped by whoever adopts it).
      await stopProcess(parent);
    }
  });

  // The attack as found (audit of 2026-12-06): a live root's lock file cut short was taken for stale, a second root
  // started on the same directory, and both acknowledged seq 1.
  test('data dir lock: a damaged lock file of a live node is refused, never taken over; removed by the operator, it is', async () => {
    const dir = join(root, 'damaged');
    const first = await startServe(dir);
    try {
      writeFileSync(join(dir, LOCK_FILE), `{"pid":${first.child.pid},"ho`);
      const refused = await serveRefused(dir);
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, /DATA_DIR_LOCKED/);
      assert.match(refused.stderr, /mercury\.lock is damaged .* if none does \(check with ps\), remove .*mercury\.lock and start again/);
      assert.equal((await requestJson<{ seq: number }>(first.url, 'PUT', '/v1/kv/k', { body: 'one' })).seq, 1, 'the first node still serves, alone');
    } finally {
      await stopProcess(first.child, 'SIGTERM');
    }
    for (const damaged of ['\0'.repeat(64), 'not json', '{"pid":"1","host":1}']) {
      writeFileSync(join(dir, LOCK_FILE), damaged);
      assert.throws(
        () => Store.open({ path: dir }),
        (error: unknown) => error instanceof MercuryError && error.code === 'DATA_DIR_LOCKED' && error.message.includes('is damaged'),
      );
    }
    unlinkSync(join(dir, LOCK_FILE));
    const second = await startServe(dir);
    try {
      assert.equal((await requestJson<{ seq: number }>(second.url, 'GET', '/v1/status')).seq, 1);
    } finally {
      await stopProcess(second.child);
    }
  });

  test('data dir lock: a live pid that started at another time (pid reuse) does not hold the lock', async () => {
    const dir = join(root, 'reused');
    await Store.open({ path: dir }).close();
    const lock = { pid: process.pid, host: hostname(), bootId: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), startTicks: '1', startedAt: 'then' };
    writeFileSync(join(dir, LOCK_FILE), JSON.stringify(lock));
    const store = Store.open({ path: dir });
    await store.close();
  });

  test('data dir lock: a live holder on this host, or any holder on another host, is refused with what to do', async () => {
    const dir = join(root, 'held');
    await Store.open({ path: dir }).close();
    const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const live = { pid: process.pid, host: hostname(), bootId, startTicks: processStartTicks(process.pid), startedAt: '2026-01-01T00:00:00.000Z' };
    writeFileSync(join(dir, LOCK_FILE), JSON.stringify(live));
    assert.throws(
      () => Store.open({ path: dir }),
      (error: unknown) => error instanceof MercuryError && error.code === 'DATA_DIR_LOCKED' && error.message.includes(`pid ${process.pid} on host ${hostname()}`),
    );
    writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ ...live, host: 'elsewhere.example' }));
    assert.throws(
      () => Store.open({ path: dir }),
      (error: unknown) => error instanceof MercuryError && error.code === 'DATA_DIR_LOCKED' && error.message.includes(`remove ${join(dir, LOCK_FILE)}`),
    );
    // Read-only openers take no lock.
    const reader = Store.open({ path: dir, readOnly: true });
    await reader.close();
  });

  // Found in review: an empty lock file (a power loss between its create and its write) or a directory there blocked
  // every start with "other processes keep taking" the lock.
  /** An empty lock file in a new data directory `name`, dated `offsetMs` from now: a start takes it over, as its own. */
  async function emptyLockIsTakenOver(name: string, offsetMs: number): Promise<void> {
    const dir = join(root, name);
    await Store.open({ path: dir }).close();
    writeFileSync(join(dir, LOCK_FILE), '');
    const dated = new Date(Date.now() + offsetMs);
    utimesSync(join(dir, LOCK_FILE), dated, dated);
    const store = Store.open({ path: dir });
    try {
      assert.equal((JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')) as { pid: number }).pid, process.pid);
    } finally {
      await store.close();
    }
  }

  test('data dir lock: an empty lock file older than 10 s is stale and taken over', () => emptyLockIsTakenOver('empty-old', -60_000));

  // Found by audit (2026-12-06): an empty lock dated after now (the wall clock stepped back since the power loss) was
  // "made -3600000 ms ago", and refused every start until the clock passed its time.
  test('data dir lock: an empty lock file dated more than 10 s after now (the clock stepped back) is stale and taken over', () =>
    emptyLockIsTakenOver('empty-future', 3_600_000));

  test('data dir lock: a fresh empty lock file (a starter about to write it) is refused, saying so', async () => {
    const dir = join(root, 'empty-new');
    await Store.open({ path: dir }).close();
    writeFileSync(join(dir, LOCK_FILE), '');
    assert.throws(
      () => Store.open({ path: dir }),
      (error: unknown) =>
        error instanceof MercuryError &&
        error.code === 'DATA_DIR_LOCKED' &&
        /mercury\.lock is empty and was made \d+ ms ago: another mercury process may be taking the lock .* taken over once 10 s old, or remove it/.test(error.message),
    );
  });

  test('data dir lock: a directory where the lock file goes is refused by serve, naming it', async () => {
    const dir = join(root, 'lock-dir');
    await Store.open({ path: dir }).close();
    mkdirSync(join(dir, LOCK_FILE));
    const refused = await serveRefused(dir);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /DATA_DIR_INVALID: \S+mercury\.lock is a directory, not the lock file Mercury makes; with no mercury process on \S+, remove it and start again/);
  });

  test('data dir lock: a FIFO or a symbolic link (to /dev/zero) where the lock file goes is named as what it is, never read', async () => {
    const dir = join(root, 'lock-fifo');
    await Store.open({ path: dir }).close();
    execFileSync('mkfifo', [join(dir, LOCK_FILE)]);
    const fifo = await serveRefused(dir);
    assert.equal(fifo.code, 1, fifo.stderr);
    assert.match(fifo.stderr, /DATA_DIR_INVALID: \S+mercury\.lock is a FIFO \(named pipe\), not the lock file Mercury makes/);
    unlinkSync(join(dir, LOCK_FILE));
    symlinkSync('/dev/zero', join(dir, LOCK_FILE));
    const link = await serveRefused(dir);
    assert.equal(link.code, 1, link.stderr);
    assert.match(link.stderr, /DATA_DIR_INVALID: \S+mercury\.lock is a symbolic link, not the lock file Mercury makes/);
  });

  // Audit, 2026-12-07: the operating system's error alone ("EACCES: permission denied, open '.../mercury.lock'"), no code.
  test('data dir lock: a data directory the node\'s user cannot write, or a lock file it cannot read, is DATA_DIR_INVALID naming the file, the uid and what to do', (t) => {
    // Root reads and writes whatever the modes say: as root, the node runs as nobody (setpriv), the directory its.
    const asRoot = process.getuid?.() === 0;
    if (asRoot && !existsSync('/usr/bin/setpriv')) return t.skip('running as root without setpriv to drop to another user');
    const uid = asRoot ? 65534 : process.getuid!();
    const base = makeTempDir('dir-lock-modes');
    try {
      chmodSync(base, 0o755);
      const dir = join(base, 'data');
      mkdirSync(dir, { mode: 0o700 });
      if (asRoot) chownSync(dir, uid, uid);
      const serve = (): { status: number | null; stderr: string } => {
        const args = [CLI_PATH, 'serve', '--data-dir', dir, '--listen', '127.0.0.1:0', '--replication-listen', '127.0.0.1:0', '--wire-listen', '127.0.0.1:0', '--auth', 'off'];
        const [command, argv] = asRoot ? ['/usr/bin/setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, ...args]] : [process.execPath, args];
        const result = spawnSync(command, argv, { encoding: 'utf8', timeout: 30_000 });
        return { status: result.status, stderr: result.stderr };
      };
      chmodSync(dir, 0o500);
      const readOnly = serve();
      assert.equal(readOnly.status, 1, readOnly.stderr);
      assert.match(readOnly.stderr, new RegExp(`^mercury: DATA_DIR_INVALID: \\S+mercury\\.lock cannot be made or read \\(EACCES: .*\\): data directory \\S+ and the files in it must be readable and writable by the user mercury runs as \\(uid ${uid}\\); fix their owner or mode`, 'm'));
      chmodSync(dir, 0o700);
      writeFileSync(join(dir, LOCK_FILE), '{}', { mode: 0o000 });
      if (asRoot) chownSync(join(dir, LOCK_FILE), uid, uid);
      const unreadable = serve();
      assert.equal(unreadable.status, 1, unreadable.stderr);
      assert.match(unreadable.stderr, /^mercury: DATA_DIR_INVALID: \S+mercury\.lock cannot be made or read \(EACCES: .*\): data directory/m);
    } finally {
      removeDir(base);
    }
  });

  test('data dir modes: the directory is created 0700 and its files 0600', async () => {
    const dir = join(root, 'modes', 'data');
    const store = Store.open({ path: dir });
    try {
      assert.equal(statSync(dir).mode & 0o777, 0o700);
      for (const name of ['data.mdb', 'lock.mdb', LOCK_FILE, INITIALISED_FILE]) assert.equal(statSync(join(dir, name)).mode & 0o777, 0o600, name);
    } finally {
      await store.close();
    }
    const replica = Store.open({ path: join(root, 'modes', 'replica'), noSync: true, createDataset: false });
    try {
      assert.equal(statSync(join(root, 'modes', 'replica', 'unsynced-guard.json')).mode & 0o777, 0o600);
    } finally {
      await replica.close();
    }
  });
});

describe('data directory: a start that fails releases it', () => {
  // Found: a MercuryNode.start that failed after its constructor had opened the store (a damaged token record, an
  // invalid option) left the store open and the directory locked for the rest of the process: a caller in the same
  // process (a test, an embedder) that fixed the cause could not open the directory again (DATA_DIR_LOCKED, its own pid).
  let root: string;

  before(() => (root = makeTempDir('dir-release')));
  after(() => removeDir(root));

  test('data dir lock: a start refused for a damaged token record releases the directory; repaired, the next start in the same process goes on', async () => {
    const dataDir = join(root, 'token');
    const first = await MercuryNode.start(validateConfig({ dataDir, port: 0 }), { limits: NODE_LIMITS_TEST });
    const admin = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
    await first.close();
    const key = tokenKey(admin.split('_')[1]!).toString('latin1');
    const flipLastByte = (stored: Buffer): Buffer => {
      stored[stored.length - 1]! ^= 0x01;
      return stored;
    };
    await rewriteRaw(dataDir, 'kv', key, flipLastByte);
    await assert.rejects(MercuryNode.start(validateConfig({ dataDir, port: 0 }), { limits: NODE_LIMITS_TEST }), (error: MercuryError) => error.code === 'DATA_DIR_INVALID');
    await rewriteRaw(dataDir, 'kv', key, flipLastByte);
    const again = await MercuryNode.start(validateConfig({ dataDir, port: 0 }), { limits: NODE_LIMITS_TEST });
    try {
      assert.equal((await request(again.url, 'GET', '/v1/status', { headers: { authorization: `Bearer ${admin}` } })).status, 200);
    } finally {
      await again.close();
    }
  });

  test('data dir lock: a start refused for an invalid option releases the directory', async () => {
    const dataDir = join(root, 'option');
    await assert.rejects(MercuryNode.start(validateConfig({ dataDir, port: 0 }), { limits: NODE_LIMITS_TEST, auth: 'sometimes' as AuthMode }), (error: MercuryError) => error.code === 'CONFIG_INVALID');
    const store = Store.open({ path: dataDir });
    await store.close();
  });
});

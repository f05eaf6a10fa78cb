/**
 * Files planted in a data directory (or in the demo's), and data files this user may not open: whoever can write the
 * directory can put a FIFO where Mercury reads, or swap one in after Mercury looked at the path; an operator can leave
 * data.mdb to another user. Every such case ends with DATA_DIR_INVALID naming the file and what to do, never a hang,
 * a crash or the system's bare error. Real processes (the CLI bundle) on real temp directories.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Store } from '../src/store/index.js';
import { LOCK_FILE } from '../src/fs/dir-lock.js';
import { CLI_PATH, makeTempDir, removeDir, startServe, stopProcess } from './support/process.js';

/** Generous: a stop or a refusal takes well under a second; only a hang takes this long. */
const EXIT_TIMEOUT_MS = 30_000;

/** The child's exit code or signal, or 'hung' if it has not exited within EXIT_TIMEOUT_MS (it is then killed). */
function exitOrHang(child: ReturnType<typeof spawn>): Promise<number | string> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve('hung');
    }, EXIT_TIMEOUT_MS);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(code ?? signal ?? 'unknown');
    });
  });
}

describe('data directory: hostile and unusable files', () => {
  let root: string;

  before(() => {
    root = makeTempDir('hostile-files');
  });

  after(() => removeDir(root));

  test('hostile files: a FIFO put where the lock file is while the node runs does not hang its stop, and is left as it is', async () => {
    const dir = join(root, 'lock-swapped');
    const node = await startServe(dir);
    unlinkSync(join(dir, LOCK_FILE));
    execFileSync('mkfifo', [join(dir, LOCK_FILE)]);
    node.child.kill('SIGTERM');
    const exited = await Promise.race([node.exited, new Promise((resolve) => setTimeout(() => resolve('hung'), EXIT_TIMEOUT_MS))]);
    await stopProcess(node.child);
    assert.equal(exited, 0, `the node's stop read the FIFO: ${node.stderr()}`);
    assert.ok(statSync(join(dir, LOCK_FILE)).isFIFO(), 'not the node\'s lock: left alone');
  });

  test('hostile files: verify on a data.mdb that is a FIFO refuses it at once, naming it, never waits on it', () => {
    const dir = join(root, 'data-fifo');
    mkdirSync(dir);
    execFileSync('mkfifo', [join(dir, 'data.mdb')]);
    const result = spawnSync(process.execPath, [CLI_PATH, 'verify', '--data-dir', dir], { encoding: 'utf8', timeout: EXIT_TIMEOUT_MS, killSignal: 'SIGKILL' });
    assert.equal(result.status, 1, `verify hung or failed otherwise (signal ${result.signal}): ${result.stderr}`);
    assert.match(result.stderr, /^mercury: DATA_DIR_INVALID: \S+data\.mdb is a FIFO \(named pipe\), not the data file LMDB wrote/m);
  });

  test('hostile files: a file, a link or a FIFO named restore.partial is DATA_DIR_INVALID saying no restore made it, for serve and verify, and is left as it is', async () => {
    const dir = join(root, 'partial-not-dir');
    await Store.open({ path: dir }).close();
    const partial = join(dir, 'restore.partial');
    const serve = [CLI_PATH, 'serve', '--data-dir', dir, '--listen', '127.0.0.1:0', '--replication-listen', '127.0.0.1:0', '--wire-listen', '127.0.0.1:0', '--auth', 'off'];
    const plant: readonly [string, () => void][] = [
      ['a file', () => writeFileSync(partial, 'notes')],
      ['a symbolic link', () => symlinkSync(join(root, 'elsewhere'), partial)],
      ['a FIFO \\(named pipe\\)', () => execFileSync('mkfifo', [partial])],
    ];
    for (const [kind, make] of plant) {
      make();
      for (const args of [serve, [CLI_PATH, 'verify', '--data-dir', dir]]) {
        const result = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: EXIT_TIMEOUT_MS, killSignal: 'SIGKILL' });
        assert.equal(result.status, 1, `${args[1]} with ${kind} (signal ${result.signal}): ${result.stderr}`);
        assert.match(result.stderr, new RegExp(`^mercury: DATA_DIR_INVALID: \\S+restore\\.partial is ${kind}, not the directory a \`mercury snapshot restore\` makes there while it runs: Mercury did not put it there.*move it out of the directory`, 'm'));
        assert.doesNotMatch(result.stderr, /was stopped before it finished/);
      }
      assert.ok(lstatSync(partial).isFile() || lstatSync(partial).isSymbolicLink() || lstatSync(partial).isFIFO(), 'left as it is');
      unlinkSync(partial);
    }
    const verified = spawnSync(process.execPath, [CLI_PATH, 'verify', '--data-dir', dir], { encoding: 'utf8', timeout: EXIT_TIMEOUT_MS });
    assert.equal(verified.status, 0, verified.stderr);
  });

  // A swap between a look at the path and the read cannot be timed from outside: a second process swaps a FIFO and a
  // regular file at the name as fast as it can while another takes the lock again and again. Before the fix (lstat, then
  // readFileSync) the taker hung in open(2) on the FIFO within a few hundred attempts; now each attempt ends.
  test('hostile files: a FIFO swapped in and out where the lock file is never hangs a start that meets it', async () => {
    const dir = join(root, 'lock-race');
    mkdirSync(dir);
    const lock = join(dir, LOCK_FILE);
    // A live holder (this test process): an attempt that reads it is refused with DATA_DIR_LOCKED.
    const holder = JSON.stringify({ pid: process.pid, host: (await import('node:os')).hostname(), bootId: '', startTicks: '', startedAt: new Date(0).toISOString() });
    const swapper = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        // The taker's own lock, made in a moment the name was free, may end up at either name, and its release may
        // remove the FIFO: each round puts back what is missing.
        `import { execFileSync } from 'node:child_process';
         import { existsSync, lstatSync, renameSync, rmSync, writeFileSync } from 'node:fs';
         const [text, holder, pipe, lock] = process.argv.slice(1);
         for (;;) {
           if (!existsSync(holder)) writeFileSync(holder, text);
           if (lstatSync(pipe, { throwIfNoEntry: false })?.isFIFO() !== true) { rmSync(pipe, { force: true }); execFileSync('mkfifo', [pipe]); }
           try { renameSync(holder, lock); renameSync(lock, holder); renameSync(pipe, lock); renameSync(lock, pipe); } catch {}
         }`,
        holder,
        join(dir, 'holder'),
        join(dir, 'pipe'),
        lock,
      ],
      { stdio: 'ignore' },
    );
    const dirLock = fileURLToPath(new URL('../src/fs/dir-lock.js', import.meta.url));
    const taker = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const { lockDataDir } = await import(process.argv[1]);
         const outcomes = {};
         for (let i = 0; i < 3000; i++) {
           try {
             const taken = lockDataDir(process.argv[2], new Date().toISOString());
             outcomes.taken = (outcomes.taken ?? 0) + 1;
             // The swapper may have moved it away meanwhile.
             try { taken.release(); } catch (error) { if (error.code !== 'ENOENT') throw error; }
           } catch (error) {
             if (error.code !== 'DATA_DIR_LOCKED' && error.code !== 'DATA_DIR_INVALID') throw error;
             outcomes[error.code] = (outcomes[error.code] ?? 0) + 1;
           }
         }
         process.stdout.write(JSON.stringify(outcomes));`,
        dirLock,
        dir,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    taker.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    taker.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    try {
      assert.equal(await exitOrHang(taker), 0, `stdout: ${stdout}; stderr: ${stderr}`);
      const outcomes = JSON.parse(stdout) as Record<string, number>;
      assert.ok((outcomes.DATA_DIR_INVALID ?? 0) > 0, `the FIFO was met and refused: ${stdout}`);
    } finally {
      await stopProcess(swapper);
      await stopProcess(taker);
    }
  });

  // LMDB's own open said "Permission denied: Attempting to open main database file" (exit 1, no code), verify's walk
  // the bare EACCES, and a lock.mdb a writer could read but not write killed serve with SIGSEGV inside LMDB.
  test('hostile files: data.mdb or lock.mdb this user may not open is DATA_DIR_INVALID naming the file, for serve, verify and openLocal', async (t) => {
    // Root reads and writes whatever the modes say: as root, the commands run as nobody (setpriv), the directory its.
    const asRoot = process.getuid?.() === 0;
    if (asRoot && !existsSync('/usr/bin/setpriv')) return t.skip('running as root without setpriv to drop to another user');
    const uid = asRoot ? 65534 : process.getuid!();
    const base = join(root, 'unusable');
    mkdirSync(base, { mode: 0o755 });
    chmodSync(root, 0o755);
    const dir = join(base, 'data');
    await Store.open({ path: dir }).close();
    for (const name of ['', 'data.mdb', 'lock.mdb', 'store-initialised']) if (asRoot) chownSync(join(dir, name), uid, uid);
    const run = (args: string[]): { status: number | null; signal: NodeJS.Signals | null; stderr: string } => {
      const [command, argv] = asRoot ? ['/usr/bin/setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, ...args]] : [process.execPath, args];
      const result = spawnSync(command, argv, { encoding: 'utf8', timeout: EXIT_TIMEOUT_MS, killSignal: 'SIGKILL' });
      return { status: result.status, signal: result.signal, stderr: result.stderr };
    };
    const serve = [CLI_PATH, 'serve', '--data-dir', dir, '--listen', '127.0.0.1:0', '--replication-listen', '127.0.0.1:0', '--wire-listen', '127.0.0.1:0', '--auth', 'off'];
    const openLocal = [
      '--input-type=module',
      '-e',
      `const { openLocal } = await import(process.argv[1]);
       try { await openLocal(process.argv[2]); } catch (error) { process.stderr.write(error.code + ': ' + error.message + '\\n'); process.exit(1); }`,
      fileURLToPath(new URL('../src/index.js', import.meta.url)),
      dir,
    ];
    const unusable = (file: string, done: string, needs: string): RegExp =>
      // openLocal says first which directory it could not open.
      new RegExp(`DATA_DIR_INVALID: (cannot open \\S+ for reading: )?\\S+${file.replace('.', '\\.')} cannot be ${done} \\(EACCES: .*\\): data directory \\S+ and the files in it must be ${needs} by the user mercury runs as \\(uid ${uid}\\); fix their owner or mode`);

    const files = (mode: number, which: string[]): void => {
      for (const name of ['data.mdb', 'lock.mdb']) chmodSync(join(dir, name), which.includes(name) ? mode : 0o600);
    };
    // Readable, not writable: a reader is fine, a writer is refused before LMDB.
    files(0o400, ['lock.mdb']);
    const lockReadOnly = run(serve);
    assert.equal(lockReadOnly.status, 1, `serve (signal ${lockReadOnly.signal}): ${lockReadOnly.stderr}`);
    assert.match(lockReadOnly.stderr, unusable('lock.mdb', 'read and written', 'readable and writable'));
    files(0o400, ['data.mdb']);
    const dataReadOnly = run(serve);
    assert.equal(dataReadOnly.status, 1, `serve (signal ${dataReadOnly.signal}): ${dataReadOnly.stderr}`);
    assert.match(dataReadOnly.stderr, unusable('data.mdb', 'read and written', 'readable and writable'));
    // Not readable at all: refused by every opener.
    files(0o000, ['data.mdb']);
    for (const [label, args] of [['serve', serve], ['verify', [CLI_PATH, 'verify', '--data-dir', dir]], ['openLocal', openLocal]] as const) {
      const refused = run([...args]);
      assert.equal(refused.status, 1, `${label} (signal ${refused.signal}): ${refused.stderr}`);
      assert.match(refused.stderr, label === 'serve' ? unusable('data.mdb', 'read and written', 'readable and writable') : unusable('data.mdb', 'read', 'readable'), label);
    }
    // Put right, every opener works: nothing was changed by the refusals.
    files(0o600, []);
    const verified = run([CLI_PATH, 'verify', '--data-dir', dir]);
    assert.equal(verified.status, 0, verified.stderr);
  });
});

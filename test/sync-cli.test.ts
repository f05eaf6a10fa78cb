/**
 * `mercury sync PREFIX DIR` against real `mercury serve` processes (issue 13, item 5): files follow puts, deletes and
 * range deletes; unsafe keys are skipped and never written outside DIR; --exec runs after changes; a restarted sync
 * resumes from its saved seq, and, when the node's log was trimmed meanwhile, from a snapshot that also deletes the
 * files of keys deleted while it was down.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, statSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { DirectorySync, SYNC_LOCK_FILE, SYNC_RESERVED_PREFIX, SYNC_STATE_FILE, type SyncReport } from '../src/sync/index.js';
import { nameFolding } from '../src/sync/fold.js';
import { requestJson, waitUntil } from './support/http.js';
import { CLI_PATH, makeTempDir, removeDir, runCli, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { freePort } from './support/net.js';
import { statusOf } from './support/tree.js';
import { readLog } from './support/watch.js';

interface SyncProcess {
  readonly child: ChildProcess;
  /** Every JSON report line printed so far. */
  reports(): Record<string, unknown>[];
  stderr(): string;
  readonly exited: Promise<number | string>;
}

function startSync(url: string, prefix: string, dir: string, extra: readonly string[] = [], env: Record<string, string> = {}): SyncProcess {
  const child = spawn(process.execPath, [CLI_PATH, 'sync', prefix, dir, '--url', url, '--json', ...extra], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-16_384)));
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  return {
    child,
    reports: () =>
      stdout
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as Record<string, unknown>),
    stderr: () => stderr,
    exited,
  };
}

/** A file's text, or undefined when sync deleted it between the listing and the read (the next poll sees it gone). */
function readIfPresent(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

function readTree(dir: string): Record<string, string> {
  const files: Record<string, string> = {};
  if (!existsSync(dir)) return files;
  const walk = (at: string, prefix: string): void => {
    let entries;
    try {
      entries = readdirSync(at, { withFileTypes: true });
    } catch (error) {
      // A directory that sync removed (its last file deleted) between the listing of its parent and here.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    for (const entry of entries) {
      // Sync's own names: its state file, its lock, and temporary files that a write renames away (reading one could
      // race it).
      if (entry.name.startsWith(SYNC_RESERVED_PREFIX)) continue;
      if (entry.isDirectory()) walk(join(at, entry.name), `${prefix}${entry.name}/`);
      else {
        const text = readIfPresent(join(at, entry.name));
        if (text !== undefined) files[`${prefix}${entry.name}`] = text;
      }
    }
  };
  walk(dir, '');
  return files;
}

/** A tree as text, its paths in order (readdir's order depends on the file system). */
function treeText(tree: Record<string, string>): string {
  return JSON.stringify(Object.entries(tree).sort(([a], [b]) => a.localeCompare(b)));
}

async function treeIs(dir: string, expected: Record<string, string>, sync: SyncProcess): Promise<void> {
  await waitUntil(`${dir} holds ${JSON.stringify(expected)}; stderr: ${sync.stderr()}`, () => Promise.resolve(treeText(readTree(dir)) === treeText(expected)));
}

function savedState(dir: string): { seq: number; hash?: string } {
  return JSON.parse(readFileSync(join(dir, SYNC_STATE_FILE), 'utf8')) as { seq: number; hash?: string };
}

function savedSeq(dir: string): number {
  return savedState(dir).seq;
}

async function put(node: ServeProcess, key: string, value: string): Promise<number> {
  return (await requestJson<{ seq: number }>(node.url, 'PUT', `/v1/kv/${key}`, { body: value })).seq;
}

describe('sync cli', () => {
  let dir: string;
  const nodes: ServeProcess[] = [];
  const syncs: SyncProcess[] = [];

  before(() => {
    dir = makeTempDir('sync-cli');
  });

  after(async () => {
    for (const sync of syncs) await stopProcess(sync.child);
    for (const node of nodes) await stopProcess(node.child);
    removeDir(dir);
  });

  /** A node holding `NAME/a`, and DIR `NAME` that a sync (stopped since) brought to it, with its seq saved. */
  async function syncedAndStopped(name: string): Promise<{ node: ServeProcess; target: string }> {
    const node = await startServe(join(dir, `${name}-node`));
    nodes.push(node);
    const seq = await put(node, `${name}/a`, 'a1');
    const target = join(dir, name);
    const first = startSync(node.url, `${name}/`, target);
    syncs.push(first);
    await treeIs(target, { a: 'a1' }, first);
    // The put's seq, not the file alone: a first sync saves seq 0 before it writes a file, and under load it was
    // stopped there, so a test that took the saved seq for the put's was one behind (2 !== 1, npm test, 2026-12-07).
    await waitUntil('the seq is saved', () => Promise.resolve(existsSync(join(target, SYNC_STATE_FILE)) && savedSeq(target) >= seq));
    await stopProcess(first.child);
    return { node, target };
  }

  test('sync cli: files follow puts, deletes and range deletes; unsafe keys are skipped; --exec runs after changes, without sync\'s token', async () => {
    const node = await startServe(join(dir, 'live-node'));
    nodes.push(node);
    await put(node, 'app/a', 'one');
    await put(node, 'app/dir/b', 'two');
    await put(node, 'other/x', 'not synced');
    const target = join(dir, 'live', 'conf');
    const execLog = join(dir, 'exec.log');
    // The command is given no credential of sync's own: it sees whether $MERCURY_TOKEN reached it.
    const tokenSeen = join(dir, 'exec-token.log');
    // The token line is appended before the seq line: once the seq shows, that run's token line is whole (the two were
    // written the other way round and the second truncated first, so a read between them under load saw '').
    const exec = `echo "\${MERCURY_TOKEN-unset} \${MERCURY_REPLICATION_TOKEN-unset}" >> '${tokenSeen}'; echo "$MERCURY_SYNC_SEQ" >> '${execLog}'`;
    const secret = `mcy_${'s'.repeat(40)}`;
    const sync = startSync(node.url, 'app/', target, ['--exec', exec, '--exec-debounce-ms', '50'], { MERCURY_TOKEN: secret, MERCURY_REPLICATION_TOKEN: secret });
    syncs.push(sync);
    await treeIs(target, { a: 'one', 'dir/b': 'two' }, sync);

    await put(node, 'app/a', 'one, updated');
    await requestJson(node.url, 'DELETE', '/v1/kv/app/dir/b');
    await put(node, 'app/dir/c/d', 'deep');
    await put(node, 'app/keep', 'kept');
    await treeIs(target, { a: 'one, updated', 'dir/c/d': 'deep', keep: 'kept' }, sync);
    await requestJson(node.url, 'DELETE', '/v1/kv?prefix=app/dir/');
    await treeIs(target, { a: 'one, updated', keep: 'kept' }, sync);
    await waitUntil('the directories a delete empties are removed', () => Promise.resolve(!existsSync(join(target, 'dir'))));

    // Unsafe keys: skipped, reported, and nothing appears outside the directory.
    const unsafe = ['app/../escaped', 'app//double', 'app/x/..', 'app/.mercury-sync-state.json', 'app/nul%00byte', 'app/'];
    for (const key of unsafe) await requestJson(node.url, 'PUT', `/v1/kv/${key}`, { body: 'evil' });
    const last = await put(node, 'app/after-unsafe', 'fine');
    await treeIs(target, { a: 'one, updated', 'after-unsafe': 'fine', keep: 'kept' }, sync);
    await waitUntil('the put after the unsafe keys is reported', () => Promise.resolve(sync.reports().some((report) => report.path === 'after-unsafe')));
    const skipped = sync.reports().filter((report) => report.type === 'skipped');
    assert.equal(skipped.length, unsafe.length, JSON.stringify(skipped));
    assert.ok(!existsSync(join(dirname(target), 'escaped')) && !existsSync(join(target, 'escaped')));

    // --exec: run after the changes, with the seq; one entry of many puts runs it once.
    await waitUntil('exec ran for the last change', () => Promise.resolve(existsSync(execLog) && readFileSync(execLog, 'utf8').trim().split('\n').map(Number).includes(last)));
    const tokenLines = readFileSync(tokenSeen, 'utf8').trim().split('\n');
    assert.ok(tokenLines.length >= 1 && tokenLines.every((line) => line === 'unset unset'), `sync's token is not handed to the command: ${JSON.stringify(tokenLines)}`);
    const before = readFileSync(execLog, 'utf8').trim().split('\n').length;
    const txn = await requestJson<{ seq: number }>(node.url, 'POST', '/v1/txn', {
      body: JSON.stringify({ success: Array.from({ length: 10 }, (_, i) => ({ op: 'put', key: `app/batch/${i}`, value: String(i) })) }),
      headers: { 'content-type': 'application/json' },
    });
    await waitUntil('exec ran for the batch', () => Promise.resolve(readFileSync(execLog, 'utf8').trim().split('\n').map(Number).includes(txn.seq)));
    assert.equal(readFileSync(execLog, 'utf8').trim().split('\n').length, before + 1, 'one run for one entry of ten puts');
    assert.equal(readTree(target)['batch/9'], '9');
    await waitUntil('the seq is saved', () => Promise.resolve(savedSeq(target) >= txn.seq));

    // SIGTERM stops it cleanly.
    sync.child.kill('SIGTERM');
    assert.equal(await sync.exited, 0, sync.stderr());
  });

  test('sync cli: a replaced file keeps the mode an operator gave it (and, as root, its owner); a new file gets 0644', async () => {
    const node = await startServe(join(dir, 'mode-node'));
    nodes.push(node);
    await put(node, 'perm/secret', 's1');
    await put(node, 'perm/shared', 'g1');
    const target = join(dir, 'perm');
    const sync = startSync(node.url, 'perm/', target);
    syncs.push(sync);
    await treeIs(target, { secret: 's1', shared: 'g1' }, sync);
    chmodSync(join(target, 'secret'), 0o600);
    chmodSync(join(target, 'shared'), 0o640);
    const asRoot = process.getuid?.() === 0;
    if (asRoot) chownSync(join(target, 'shared'), 4321, 8765);
    const inodeBefore = statSync(join(target, 'secret')).ino;

    await put(node, 'perm/secret', 's2');
    await put(node, 'perm/shared', 'g2');
    await put(node, 'perm/fresh', 'f1');
    await treeIs(target, { fresh: 'f1', secret: 's2', shared: 'g2' }, sync);
    const secret = statSync(join(target, 'secret'));
    const shared = statSync(join(target, 'shared'));
    assert.equal(secret.mode & 0o7777, 0o600, 'the chmod 0600 survives the new value');
    assert.equal(shared.mode & 0o7777, 0o640);
    if (asRoot) assert.deepEqual([shared.uid, shared.gid], [4321, 8765], 'run as root, the owner and group survive');
    assert.notEqual(secret.ino, inodeBefore, 'still replaced by a rename, not written in place');
    assert.equal(statSync(join(target, 'fresh')).mode & 0o777, 0o644 & ~process.umask(), 'a new file keeps the default');
    await stopProcess(sync.child);
  });

  test('sync cli: a restarted sync resumes from its saved seq; after a log trim, from a snapshot that deletes what went away', async () => {
    const node = await startServe(join(dir, 'trim-node'), ['--log-retain-entries', '2']);
    nodes.push(node);
    await put(node, 'cfg/a', 'a1');
    await put(node, 'cfg/b', 'b1');
    const target = join(dir, 'trim');
    const first = startSync(node.url, 'cfg/', target);
    syncs.push(first);
    await treeIs(target, { a: 'a1', b: 'b1' }, first);
    const seq = await put(node, 'cfg/c', 'c1');
    await waitUntil('the seq is saved', () => Promise.resolve(existsSync(join(target, SYNC_STATE_FILE)) && savedSeq(target) >= seq));
    await stopProcess(first.child);
    const stoppedAt = savedSeq(target);

    // Resume from the log: one change while it was down, still retained.
    const changed = await put(node, 'cfg/a', 'a2');
    const second = startSync(node.url, 'cfg/', target);
    syncs.push(second);
    await treeIs(target, { a: 'a2', b: 'b1', c: 'c1' }, second);
    const start = second.reports().find((report) => report.type === 'start');
    assert.deepEqual({ fromSeq: start?.fromSeq, resumed: start?.resumed }, { fromSeq: stoppedAt + 1, resumed: true });
    assert.ok(second.reports().every((report) => report.type !== 'snapshot'), 'served from the log');
    await waitUntil('the seq is saved', () => Promise.resolve(savedSeq(target) >= changed));
    await stopProcess(second.child);

    // While it is down: b is deleted and enough is written that the log no longer reaches back.
    const down = savedSeq(target);
    await requestJson(node.url, 'DELETE', '/v1/kv/cfg/b');
    for (let i = 0; i < 4; i++) await put(node, `cfg/n${i}`, `n${i}`);
    await waitUntil('the log is trimmed past the saved seq', async () => (await statusOf(node) as unknown as { log: { firstSeq: number } }).log.firstSeq > down + 1);
    const third = startSync(node.url, 'cfg/', target);
    syncs.push(third);
    await treeIs(target, { a: 'a2', c: 'c1', n0: 'n0', n1: 'n1', n2: 'n2', n3: 'n3' }, third);
    await waitUntil('the snapshot is reported', () => Promise.resolve(third.reports().some((report) => report.type === 'snapshot')));
    const snapshot = third.reports().find((report) => report.type === 'snapshot');
    assert.deepEqual({ files: snapshot?.files, deleted: snapshot?.deleted }, { files: 6, deleted: 1 }, JSON.stringify(third.reports()));
    await stopProcess(third.child);
  });

  /**
   * A node on a fixed address holding NAME/a, a backup of it then, and a sync of NAME/ into DIR NAME (still running)
   * that followed it past the backup to NAME/b and NAME/c, its seq saved. `restore` stops the node and starts one
   * restored from the backup on the same address; `restartPastOldHead` writes NAME/d, e and f there (the new chain
   * passes the old head) and starts a sync that must bring DIR to the restored node's state.
   */
  async function syncedPastBackup(name: string): Promise<{
    before: ServeProcess;
    target: string;
    first: SyncProcess;
    backupSeq: number;
    lostSeq: number;
    restore: () => Promise<ServeProcess>;
    restartPastOldHead: (restored: ServeProcess) => Promise<{ second: SyncProcess; newSeq: number }>;
  }> {
    const listen = ['--listen', `127.0.0.1:${await freePort()}`];
    const before = await startServe(join(dir, `${name}-node`), listen);
    nodes.push(before);
    const backupSeq = await put(before, `${name}/a`, 'a1');
    const backup = join(dir, `${name}.snap`);
    assert.equal((await runCli(['snapshot', 'save', backup, '--url', before.url])).code, 0);
    const target = join(dir, name);
    const first = startSync(before.url, `${name}/`, target);
    syncs.push(first);
    await put(before, `${name}/b`, 'b-lost');
    const lostSeq = await put(before, `${name}/c`, 'c-lost');
    await treeIs(target, { a: 'a1', b: 'b-lost', c: 'c-lost' }, first);
    await waitUntil('the seq is saved', () => Promise.resolve(savedSeq(target) >= lostSeq));
    const restore = async (): Promise<ServeProcess> => {
      await stopProcess(before.child);
      const restoredDir = join(dir, `${name}-node-restored`);
      assert.equal((await runCli(['snapshot', 'restore', backup, '--data-dir', restoredDir])).code, 0);
      const restored = await startServe(restoredDir, listen);
      nodes.push(restored);
      return restored;
    };
    const restartPastOldHead = async (restored: ServeProcess): Promise<{ second: SyncProcess; newSeq: number }> => {
      await put(restored, `${name}/d`, 'd1');
      await put(restored, `${name}/e`, 'e1');
      const newSeq = await put(restored, `${name}/f`, 'f1');
      assert.ok(newSeq > lostSeq);
      const second = startSync(restored.url, `${name}/`, target);
      syncs.push(second);
      await treeIs(target, { a: 'a1', d: 'd1', e: 'e1', f: 'f1' }, second);
      return { second, newSeq };
    };
    return { before, target, first, backupSeq, lostSeq, restore, restartPastOldHead };
  }

  test('sync cli: after its node is restored from an older backup, sync saves the seq of the reset it got, and a restart resumes from there (found by review: the older seq was not saved, and a restart skipped the new chain\'s entries up to the old one)', async () => {
    const { target, first, backupSeq, restore, restartPastOldHead } = await syncedPastBackup('restore');

    // The node is lost and restored from the backup on the same address: its head goes back to the backup's seq.
    const restored = await restore();
    await treeIs(target, { a: 'a1' }, first);
    await waitUntil('the reset\'s seq is saved', () => Promise.resolve(savedSeq(target) === backupSeq));
    await stopProcess(first.child);

    // The new chain passes the old head while sync is down: a restart must resume right after the reset.
    const { second } = await restartPastOldHead(restored);
    await stopProcess(second.child);
  });

  test('sync cli: the state file holds the hash of the saved seq\'s entry; a restart on a node whose entry there is another (restored from an older backup and written past it) resets DIR to the node\'s state (found by review: sync applied the new chain\'s entries over the old files); a state file without a hash still resumes', async () => {
    const { target, first, before, lostSeq, restore, restartPastOldHead } = await syncedPastBackup('chain');
    const lostHash = (await readLog(before.url, lostSeq))[0]!.hash;
    await waitUntil('the seq and its hash are saved', () => Promise.resolve(savedSeq(target) === lostSeq && savedState(target).hash === lostHash));
    await stopProcess(first.child);

    // While sync is down, the node is restored from the backup and its new chain passes the saved seq.
    const restored = await restore();
    const { second, newSeq } = await restartPastOldHead(restored);
    // DIR matches once the last stale file is deleted, a moment before sync prints its snapshot report (found: a full
    // suite read the reports in between).
    await waitUntil('the snapshot is reported', () => Promise.resolve(second.reports().some((report) => report.type === 'snapshot')));
    const snapshot = second.reports().find((report) => report.type === 'snapshot');
    assert.deepEqual({ seq: snapshot?.seq, deleted: snapshot?.deleted }, { seq: newSeq, deleted: 2 }, JSON.stringify(second.reports()));
    const newHash = (await readLog(restored.url, newSeq))[0]!.hash;
    await waitUntil('the reset\'s seq and hash are saved', () => Promise.resolve(savedSeq(target) === newSeq && savedState(target).hash === newHash));
    await stopProcess(second.child);

    // A state file written before hashes were saved resumes by seq, and gets the hash again.
    const { hash: _dropped, ...old } = savedState(target);
    writeFileSync(join(target, SYNC_STATE_FILE), JSON.stringify(old));
    const next = await put(restored, 'chain/g', 'g1');
    const third = startSync(restored.url, 'chain/', target);
    syncs.push(third);
    await treeIs(target, { a: 'a1', d: 'd1', e: 'e1', f: 'f1', g: 'g1' }, third);
    assert.ok(third.reports().every((report) => report.type !== 'snapshot' && report.type !== 'reset'), JSON.stringify(third.reports()));
    const nextHash = (await readLog(restored.url, next))[0]!.hash;
    await waitUntil('the hash is saved again', () => Promise.resolve(savedSeq(target) === next && savedState(target).hash === nextHash));
    await stopProcess(third.child);
  });

  // Found by audit: on a DIR that folds case (macOS, Windows, ext4 casefold) `app/A` and `app/a` are one file: a put of
  // one replaced the other's content, a delete of one removed the other's file, and the budget counted two files. No
  // such file system mounts here, so sync is given a case folding over this case-sensitive one: what it decides,
  // not what the file system does, is under test (the probe's part is in test/sync-fold.test.ts).
  test('sync cli: on a DIR that folds case, the later of two keys that differ only in case takes their file, a delete of the other leaves it, a directory spelled otherwise is skipped, and the budget counts one file', async () => {
    const node = await startServe(join(dir, 'fold-node'));
    nodes.push(node);
    const target = join(dir, 'fold');
    const reports: SyncReport[] = [];
    const sync = new DirectorySync({ urls: [node.url], prefix: Buffer.from('f/'), dir: target, filesMax: 3, probeNameFolding: () => nameFolding(true, false), onReport: (report) => reports.push(report) });
    const running = sync.run();
    try {
      const holds = (expected: Record<string, string>): Promise<void> =>
        waitUntil(`${target} holds ${JSON.stringify(expected)}; reports: ${JSON.stringify(reports)}`, () => Promise.resolve(treeText(readTree(target)) === treeText(expected)));
      await put(node, 'f/app/A', 'upper');
      await holds({ 'app/A': 'upper' });
      await put(node, 'f/app/a', 'lower');
      await holds({ 'app/a': 'lower' });
      assert.ok(reports.some((report) => report.type === 'skipped' && /key "f\/app\/A" is not synced: its file is taken by the later key "app\/a": \S+ folds case/.test(report.reason)));
      await requestJson(node.url, 'DELETE', '/v1/kv/f/app/A');
      // A rename that changes only case, the put before the delete in one transaction, keeps its file.
      await put(node, 'f/conf', 'v1');
      const rename = await requestJson<{ seq: number }>(node.url, 'POST', '/v1/txn', {
        body: JSON.stringify({ success: [{ op: 'put', key: 'f/Conf', value: 'v2' }, { op: 'delete', key: 'f/conf' }] }),
        headers: { 'content-type': 'application/json' },
      });
      await waitUntil('the rename is saved', () => Promise.resolve(savedSeq(target) >= rename.seq));
      assert.deepEqual(readTree(target), { 'app/a': 'lower', Conf: 'v2' }, 'the delete of f/app/A left the file of f/app/a');
      await put(node, 'f/dir/x', 'x');
      const skippedSeq = await put(node, 'f/DIR/y', 'y');
      await waitUntil('f/DIR/y is skipped', () => Promise.resolve(reports.some((report) => report.type === 'skipped' && report.seq === skippedSeq)));
      assert.match(JSON.stringify(reports.find((report) => report.type === 'skipped' && report.seq === skippedSeq)), /holds \\"dir\\" \(on its path, or with other keys under it\), which its file system takes for the same name: it folds case/);
      // Three files, within --max-files 3: counting app/A and conf beside their twins, the budget would have stopped sync.
      assert.deepEqual(readTree(target), { 'app/a': 'lower', Conf: 'v2', 'dir/x': 'x' });
      assert.deepEqual(reports[0], { type: 'start', dir: target, fromSeq: 1, resumed: false, folds: 'case' });
    } finally {
      await sync.stop();
      await running;
    }
  });

  test('sync cli: on a DIR that does not fold names (this one), keys that differ only in case or normalisation are files of their own, as before', async () => {
    const node = await startServe(join(dir, 'nofold-node'));
    nodes.push(node);
    const target = join(dir, 'nofold');
    const sync = startSync(node.url, 'f/', target);
    syncs.push(sync);
    await put(node, 'f/app/A', 'upper');
    await put(node, 'f/app/a', 'lower');
    await put(node, `f/${encodeURIComponent('caf\u00e9')}`, 'nfc');
    await put(node, `f/${encodeURIComponent('cafe\u0301')}`, 'nfd');
    await requestJson(node.url, 'DELETE', '/v1/kv/f/app/A');
    // Compared as objects: treeText sorts with localeCompare, which takes the NFC and NFD names for equal.
    const expected = { 'app/a': 'lower', 'caf\u00e9': 'nfc', 'cafe\u0301': 'nfd' };
    await waitUntil(`${target} holds ${JSON.stringify(expected)}; stderr: ${sync.stderr()}`, () => Promise.resolve(isDeepStrictEqual(readTree(target), expected)));
    const start = sync.reports().find((report) => report.type === 'start');
    assert.ok(start !== undefined && !('folds' in start), JSON.stringify(start));
    assert.ok(!sync.reports().some((report) => report.type === 'skipped'), sync.stderr());
    await stopProcess(sync.child);
  });

  test('sync cli: a first sync refuses a directory that holds files', async () => {
    const node = await startServe(join(dir, 'refuse-node'));
    nodes.push(node);
    const target = join(dir, 'occupied');
    mkdirSync(target);
    writeFileSync(join(target, 'precious'), 'mine');
    const refused = await runCli(['sync', 'x/', target, '--url', node.url]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /DATA_DIR_NOT_EMPTY: .* holds files but no sync state/);
    assert.equal(readFileSync(join(target, 'precious'), 'utf8'), 'mine');
  });

  test('sync cli: a symbolic link inside DIR is never followed: a put, a delete or a range delete through a linked directory or onto a linked file stops sync with SYMLINK_REFUSED, and nothing outside DIR changes', async () => {
    const node = await startServe(join(dir, 'link-node'));
    nodes.push(node);
    // What a link points at: a directory outside DIR holding a file named like a key, and a file.
    const outside = join(dir, 'outside');
    mkdirSync(outside);
    writeFileSync(join(outside, 'x'), 'precious');
    writeFileSync(join(outside, 'victim'), 'precious too');
    const outsideBefore = JSON.stringify(readTree(outside));
    const cases: { name: string; linked: 'sub' | 'f'; existing: boolean; change: (prefix: string) => Promise<unknown> }[] = [
      { name: 'dir-put', linked: 'sub', existing: false, change: (prefix) => put(node, `${prefix}sub/x`, 'through the link') },
      { name: 'dir-delete', linked: 'sub', existing: true, change: (prefix) => requestJson(node.url, 'DELETE', `/v1/kv/${prefix}sub/x`) },
      { name: 'dir-range', linked: 'sub', existing: true, change: (prefix) => requestJson(node.url, 'DELETE', `/v1/kv?prefix=${prefix}sub/`) },
      { name: 'file-put', linked: 'f', existing: false, change: (prefix) => put(node, `${prefix}f`, 'onto the link') },
      { name: 'file-delete', linked: 'f', existing: true, change: (prefix) => requestJson(node.url, 'DELETE', `/v1/kv/${prefix}f`) },
      { name: 'file-range', linked: 'f', existing: true, change: (prefix) => requestJson(node.url, 'DELETE', `/v1/kv?prefix=${prefix}`) },
    ];
    for (const { name, linked, existing, change } of cases) {
      const prefix = `${name}/`;
      const target = join(dir, 'linked', name);
      const key = linked === 'sub' ? 'sub/x' : 'f';
      await put(node, `${prefix}seed`, 'seed');
      if (existing) await put(node, `${prefix}${key}`, 'synced before the link');
      const sync = startSync(node.url, prefix, target);
      syncs.push(sync);
      await treeIs(target, existing ? { [key]: 'synced before the link', seed: 'seed' } : { seed: 'seed' }, sync);
      // Someone else replaces what sync wrote (or plants a new name) with a link out of DIR.
      rmSync(join(target, linked), { recursive: true, force: true });
      const link = join(target, linked);
      symlinkSync(linked === 'sub' ? outside : join(outside, 'victim'), link);
      await change(prefix);
      // Before, sync went on through the link (and wrote, renamed over or deleted outside DIR): bounded, not a hang.
      const exited = await Promise.race([sync.exited, new Promise<string>((resolve) => setTimeout(() => resolve('still running after 15 s'), 15_000))]);
      assert.equal(exited, 1, `${name}: sync stops; outside DIR: ${JSON.stringify(readTree(outside))}; stderr: ${sync.stderr()}`);
      assert.match(sync.stderr(), new RegExp(`^mercury: SYMLINK_REFUSED: ${link} is a symbolic link \\(to ${outside}.*\\); sync never follows links inside ${target}, so it did not .*Remove the link \\(rm ${link}\\)`, 'm'), name);
      assert.equal(JSON.stringify(readTree(outside)), outsideBefore, `${name}: nothing outside DIR changed`);
      if (name !== 'dir-put') continue;
      // What the message says to do works: without the link, a restarted sync applies the refused change.
      rmSync(link);
      const again = startSync(node.url, prefix, target);
      syncs.push(again);
      await treeIs(target, { seed: 'seed', 'sub/x': 'through the link' }, again);
      await stopProcess(again.child);
    }
    // A link planted while sync was down is refused at the next start, before any change is applied.
    const target = join(dir, 'linked', 'dir-put');
    symlinkSync(outside, join(target, 'planted'));
    const refused = await runCli(['sync', 'dir-put/', target, '--url', node.url]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /SYMLINK_REFUSED: .*planted is a symbolic link .* so it did not start/);
    assert.equal(JSON.stringify(readTree(outside)), outsideBefore);
  });

  test('sync cli: --max-files and --max-bytes bound DIR: a put past them stops sync with SYNC_LIMIT_EXCEEDED before writing it, and a restart with a higher limit applies it; a DIR over twice a lowered limit is refused at start; a snapshot past the limit stops at its first key past it (found by audit: a node could fill the disk file by file)', async () => {
    // Entries from the log on this node (a trimmed log would send sync a snapshot instead: the last part, on another).
    const node = await startServe(join(dir, 'limits-node'));
    nodes.push(node);
    const target = join(dir, 'limits');
    const stopsWith = async (extra: readonly string[], message: RegExp, url = node.url, into = target): Promise<void> => {
      const sync = startSync(url, 'lim/', into, extra);
      syncs.push(sync);
      const exited = await Promise.race([sync.exited, new Promise<string>((resolve) => setTimeout(() => resolve('still running after 15 s'), 15_000))]);
      assert.equal(exited, 1, sync.stderr());
      assert.match(sync.stderr(), message);
    };
    await put(node, 'lim/a', 'aa');
    const bSeq = await put(node, 'lim/b', 'bb');
    await put(node, 'lim/c', 'cc');
    await stopsWith(['--max-files', '2'], /^mercury: SYNC_LIMIT_EXCEEDED: .*limits would go past --max-files 2 with c; sync stopped before writing it\. Raise the limit .* start sync again: it resumes from the change it stopped at/m);
    assert.deepEqual(readTree(target), { a: 'aa', b: 'bb' });
    assert.equal(savedSeq(target), bSeq, 'the refused entry is not saved as done');

    // A higher limit: the restart applies the refused entry. Usage now 3 files of 3 bytes each (content and path).
    const resumed = startSync(node.url, 'lim/', target, ['--max-files', '3', '--max-bytes', '20']);
    syncs.push(resumed);
    await treeIs(target, { a: 'aa', b: 'bb', c: 'cc' }, resumed);
    // 9 bytes held; a 20-byte value at d costs 21 more.
    await put(node, 'lim/a', 'a'); // a replace that shrinks a file passes, and frees a byte
    await treeIs(target, { a: 'a', b: 'bb', c: 'cc' }, resumed);
    await requestJson(node.url, 'DELETE', '/v1/kv/lim/b'); // so does a delete: 2 files of 5 bytes
    await put(node, 'lim/d', 'x'.repeat(14)); // 15: 20 in all, at the limit
    await treeIs(target, { a: 'a', c: 'cc', d: 'x'.repeat(14) }, resumed);
    await put(node, 'lim/e', '');
    const exited = await Promise.race([resumed.exited, new Promise<string>((resolve) => setTimeout(() => resolve('still running after 15 s'), 15_000))]);
    assert.equal(exited, 1, resumed.stderr());
    assert.match(resumed.stderr(), /SYNC_LIMIT_EXCEEDED: .* would go past --max-files 3 with e;/);
    assert.deepEqual(readTree(target), { a: 'a', c: 'cc', d: 'x'.repeat(14) });

    // A limit lowered below half what DIR holds (more than a snapshot stopped midway leaves): refused before anything
    // is applied.
    await stopsWith(['--max-bytes', '9'], /SYNC_LIMIT_EXCEEDED: .*limits holds 3 files of 20 bytes \(paths included\), over twice --max-bytes 9 \(more than a snapshot stopped midway leaves\); sync did not start/);

    // A snapshot (the log trimmed past the saved seq) is judged on its own: a, n0, n1, ... in key order.
    const trimmed = await startServe(join(dir, 'limits-trim-node'), ['--log-retain-entries', '2']);
    nodes.push(trimmed);
    const snapshotTarget = join(dir, 'limits-snapshot');
    await put(trimmed, 'lim/a', 'a');
    const first = startSync(trimmed.url, 'lim/', snapshotTarget);
    syncs.push(first);
    await treeIs(snapshotTarget, { a: 'a' }, first);
    await waitUntil('the seq is saved', () => Promise.resolve(existsSync(join(snapshotTarget, SYNC_STATE_FILE))));
    await stopProcess(first.child);
    const down = savedSeq(snapshotTarget);
    for (let i = 0; i < 4; i++) await put(trimmed, `lim/n${i}`, `n${i}`);
    await waitUntil('the log is trimmed past the saved seq', async () => ((await statusOf(trimmed)) as unknown as { log: { firstSeq: number } }).log.firstSeq > down + 1);
    await stopsWith(['--max-files', '2'], /SYNC_LIMIT_EXCEEDED: the node's state under the prefix \(a snapshot\) goes past --max-files 2 at n1; sync stopped before writing it/, trimmed.url, snapshotTarget);
    assert.deepEqual(readTree(snapshotTarget), { a: 'a', n0: 'n0' });
    const last = startSync(trimmed.url, 'lim/', snapshotTarget, ['--max-files', '5']);
    syncs.push(last);
    await treeIs(snapshotTarget, { a: 'a', n0: 'n0', n1: 'n1', n2: 'n2', n3: 'n3' }, last);
    await stopProcess(last.child);
    const zero = await runCli(['sync', 'lim/', target, '--url', node.url, '--max-files', '0']);
    assert.equal(zero.code, 2, zero.stderr);
    assert.match(zero.stderr, /--max-files must be at least 1, got "0"/);
  });

  test('sync cli: a saved seq past the node\'s head empties DIR and starts again from the node\'s state (found by review: sync resumed and never wrote again)', async () => {
    const { node, target } = await syncedAndStopped('ahead');
    const state = JSON.parse(readFileSync(join(target, SYNC_STATE_FILE), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(target, SYNC_STATE_FILE), JSON.stringify({ ...state, seq: 9_000_000_000_000 }));
    writeFileSync(join(target, 'stale'), 'a file of a key the node does not hold');
    const second = startSync(node.url, 'ahead/', target);
    syncs.push(second);
    await treeIs(target, { a: 'a1' }, second);
    const reset = second.reports().find((report) => report.type === 'reset');
    assert.match(String(reset?.reason), /the saved seq 9000000000000 is past the node's head \d+/, JSON.stringify(second.reports()));
    const seq = await put(node, 'ahead/new', 'written while sync runs');
    await treeIs(target, { a: 'a1', new: 'written while sync runs' }, second);
    await waitUntil('the seq is saved again', () => Promise.resolve(savedSeq(target) >= seq));
    await stopProcess(second.child);
  });

  test('sync cli: a saved seq the node reaches within the read wait resumes, DIR untouched (found by review: a node a few entries behind emptied DIR)', async () => {
    const { node, target } = await syncedAndStopped('behind');
    // As if DIR had followed another node one entry ahead of this one (sync --url with several nodes, or a replica).
    // The file names no hash (as one written before record 45): the hash of that entry is not known before it exists.
    const state = JSON.parse(readFileSync(join(target, SYNC_STATE_FILE), 'utf8')) as { seq: number; hash?: string };
    const ahead = state.seq + 1;
    writeFileSync(join(target, SYNC_STATE_FILE), JSON.stringify({ ...state, seq: ahead, hash: undefined }));
    const second = startSync(node.url, 'behind/', target);
    syncs.push(second);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assert.equal(await put(node, 'behind/b', 'the entry DIR already holds'), ahead);
    await waitUntil('sync starts', () => Promise.resolve(second.reports().some((report) => report.type === 'start')));
    assert.equal(second.reports().find((report) => report.type === 'reset'), undefined, JSON.stringify(second.reports()));
    assert.deepEqual(second.reports().find((report) => report.type === 'start'), { type: 'start', dir: target, fromSeq: ahead + 1, resumed: true });
    await put(node, 'behind/c', 'c1');
    await treeIs(target, { a: 'a1', c: 'c1' }, second);
    await stopProcess(second.child);
  });

  test('sync cli: a state file that is a FIFO or a symbolic link is refused at once, never waited on or followed (found by review)', async () => {
    const node = await startServe(join(dir, 'state-node'));
    nodes.push(node);
    await put(node, 'state/a', 'a1');
    const target = join(dir, 'state');
    mkdirSync(target);
    execFileSync('mkfifo', [join(target, SYNC_STATE_FILE)]);
    const fifo = await runCli(['sync', 'state/', target, '--url', node.url]);
    assert.equal(fifo.code, 1, fifo.stderr);
    assert.match(fifo.stderr, /INVALID_ARGUMENT: sync state file .* is a FIFO \(named pipe\); remove it \(and the files in .*\) to sync from scratch/);
    rmSync(join(target, SYNC_STATE_FILE));
    writeFileSync(join(dir, 'state-elsewhere.json'), '{}');
    symlinkSync(join(dir, 'state-elsewhere.json'), join(target, SYNC_STATE_FILE));
    const link = await runCli(['sync', 'state/', target, '--url', node.url]);
    assert.equal(link.code, 1, link.stderr);
    assert.match(link.stderr, /SYMLINK_REFUSED: .* is a symbolic link/);
  });

  test('sync cli: a second sync on the same DIR fails at once while the first runs, and starts once it stopped; a directory named like a temporary file is left alone (found by review)', async () => {
    const node = await startServe(join(dir, 'lock-node'));
    nodes.push(node);
    await put(node, 'a/x', 'A');
    await put(node, 'b/y', 'B');
    const target = join(dir, 'locked');
    mkdirSync(join(target, '.mercury-sync-tmp-not-a-file'), { recursive: true });
    const first = startSync(node.url, 'a/', target);
    syncs.push(first);
    await treeIs(target, { x: 'A' }, first);
    assert.ok(existsSync(join(target, SYNC_LOCK_FILE)));
    const second = await runCli(['sync', 'a/', target, '--url', node.url]);
    assert.equal(second.code, 1, second.stderr);
    assert.match(second.stderr, /DATA_DIR_LOCKED: sync directory .* is in use by another mercury process \(pid \d+/);
    const other = await runCli(['sync', 'b/', target, '--url', node.url]);
    assert.equal(other.code, 1, other.stderr);
    assert.match(other.stderr, /DATA_DIR_LOCKED/);
    // The first one goes on, its files untouched by the refused runs.
    await requestJson(node.url, 'DELETE', '/v1/kv?prefix=a/');
    await treeIs(target, {}, first);
    await stopProcess(first.child, 'SIGTERM');
    assert.ok(!existsSync(join(target, SYNC_LOCK_FILE)), 'released at exit');
    const again = startSync(node.url, 'a/', target);
    syncs.push(again);
    await put(node, 'a/z', 'Z');
    await treeIs(target, { z: 'Z' }, again);
    // Killed, it leaves its lock behind: stale (no such process), taken over by the next run.
    await stopProcess(again.child, 'SIGKILL');
    assert.ok(existsSync(join(target, SYNC_LOCK_FILE)));
    const third = startSync(node.url, 'a/', target);
    syncs.push(third);
    await put(node, 'a/w', 'W');
    await treeIs(target, { w: 'W', z: 'Z' }, third);
    await stopProcess(third.child);
  });
});

/**
 * The unsynced guard: a replica's data written without fsync is kept after a process crash (same kernel boot) and
 * discarded after a machine crash (another boot), so it never runs on a possibly torn LMDB file.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { INITIALISED_FILE, Store } from '../src/store/index.js';
import { closeUnsynced, openUnsyncedWhy } from '../src/store/unsynced-guard.js';
import { CLI_PATH, makeTempDir, removeDir, serveRefused } from './support/process.js';

const BOOT_ID = existsSync('/proc/sys/kernel/random/boot_id') ? readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() : '';

describe('unsynced guard', () => {
  const dirs: string[] = [];
  const dir = (label: string): string => {
    const made = makeTempDir(`guard-${label}`);
    dirs.push(made);
    return made;
  };
  after(() => dirs.forEach(removeDir));

  const setUp = (label: string, state: object | string): string => {
    const made = dir(label);
    writeFileSync(join(made, 'data.mdb'), 'pretend data');
    writeFileSync(join(made, 'unsynced-guard.json'), typeof state === 'string' ? state : JSON.stringify(state));
    return made;
  };

  test('a first open keeps everything and marks the directory open', () => {
    const made = dir('first');
    writeFileSync(join(made, 'data.mdb'), 'x');
    assert.equal(openUnsyncedWhy(made), undefined);
    assert.ok(existsSync(join(made, 'data.mdb')));
    assert.equal((JSON.parse(readFileSync(join(made, 'unsynced-guard.json'), 'utf8')) as { clean: boolean }).clean, false);
  });

  test('an unclean stop in the same boot (a process crash) keeps the data', { skip: BOOT_ID === '' ? 'no boot id on this system' : false }, () => {
    const made = setUp('process-crash', { bootId: BOOT_ID, clean: false });
    assert.equal(openUnsyncedWhy(made), undefined);
    assert.ok(existsSync(join(made, 'data.mdb')));
  });

  test('an unclean stop in another boot (a machine crash) discards the data', () => {
    const made = setUp('machine-crash', { bootId: 'some-earlier-boot', clean: false });
    writeFileSync(join(made, INITIALISED_FILE), '');
    assert.match(openUnsyncedWhy(made) ?? '', /the machine went down/);
    assert.ok(!existsSync(join(made, 'data.mdb')));
    // Or the store made next would take its first empty data file for a truncated one.
    assert.ok(!existsSync(join(made, INITIALISED_FILE)));
  });

  test('a clean stop keeps the data across reboots', () => {
    const made = setUp('clean', { bootId: 'some-earlier-boot', clean: true });
    assert.equal(openUnsyncedWhy(made), undefined);
    assert.ok(existsSync(join(made, 'data.mdb')));
  });

  test('the state is replaced whole, never written in place; a temporary file a crash left behind is ignored and replaced', () => {
    const made = dir('replaced');
    const statePath = join(made, 'unsynced-guard.json');
    writeFileSync(`${statePath}.tmp`, '{"bootId":"left by a crash","clean":tr'); // a crash between write and rename
    assert.equal(openUnsyncedWhy(made), undefined);
    const opened = statSync(statePath).ino;
    closeUnsynced(made);
    // A new file renamed over the old: a power loss during the write finds the old state or the new, never a cut one.
    assert.notEqual(statSync(statePath).ino, opened);
    assert.deepEqual(JSON.parse(readFileSync(statePath, 'utf8')), { bootId: BOOT_ID, clean: true });
    assert.ok(!existsSync(`${statePath}.tmp`));
    assert.equal(statSync(statePath).mode & 0o777, 0o600);
  });

  test('a torn state file counts as a crash', () => {
    const made = setUp('torn', '{"bootId":"abc","cl');
    assert.match(openUnsyncedWhy(made) ?? '', /is damaged/);
  });

  // Found in review: `null` stopped the replica with a TypeError, a directory with a bare EISDIR.
  test('a state file damaged into other JSON (null, a number, fields missing or mistyped) counts as torn', () => {
    for (const [label, text] of [
      ['null', 'null'],
      ['number', '42'],
      ['no-boot-id', '{"clean":true}'],
      ['clean-string', '{"bootId":"abc","clean":"yes"}'],
    ] as const) {
      const made = setUp(`shape-${label}`, text);
      assert.match(openUnsyncedWhy(made) ?? '', /is damaged/, text);
      assert.ok(!existsSync(join(made, 'data.mdb')), text);
    }
  });

  // Audit, 2026-12-07: every discard was logged "the machine went down while it held unsynced writes", a damaged state
  // file too, which sent the operator looking for a crash that never happened.
  test('why the data was discarded: a damaged state file is named with what is wrong with it; a crash says so', () => {
    for (const [label, text, says] of [
      ['empty', '', /^its state file \S+unsynced-guard\.json is damaged \(empty\), so whether the data survived the last stop is unknown$/],
      ['torn', '{"bootId":"abc","cl', /^its state file \S+unsynced-guard\.json is damaged \(not JSON: cut short or overwritten\)/],
      ['shape', 'null', /^its state file \S+unsynced-guard\.json is damaged \(JSON, but not the state the guard writes\)/],
      ['huge', 'x'.repeat(5000), /^its state file \S+unsynced-guard\.json is damaged \(5000 bytes, over the 4096 it may hold\)/],
      ['reboot', JSON.stringify({ bootId: 'another-boot', clean: false }), /^the machine went down while it held unsynced writes \((another boot since|no boot id to tell a reboot by)\)$/],
    ] as const) {
      const made = setUp(`why-${label}`, text);
      assert.match(openUnsyncedWhy(made) ?? '', says, label);
      assert.ok(!existsSync(join(made, 'data.mdb')), label);
    }
    assert.equal(openUnsyncedWhy(setUp('why-clean', { bootId: BOOT_ID, clean: true })), undefined, 'a clean stop keeps the data');
  });

  test('a state file the node\'s user cannot read is DATA_DIR_INVALID naming it and what to do, not a bare EACCES; the data is kept', (t) => {
    // Root reads whatever the mode says: as root, the replica runs as nobody (setpriv), the directory its.
    const asRoot = process.getuid?.() === 0;
    if (asRoot && !existsSync('/usr/bin/setpriv')) return t.skip('running as root without setpriv to drop to another user');
    const uid = asRoot ? 65534 : process.getuid!();
    const made = dir('state-unreadable');
    chmodSync(made, 0o755);
    const replica = join(made, 'replica');
    mkdirSync(replica, { mode: 0o700 });
    writeFileSync(join(replica, 'data.mdb'), 'pretend data');
    writeFileSync(join(replica, 'unsynced-guard.json'), JSON.stringify({ bootId: BOOT_ID, clean: true }), { mode: 0o000 });
    if (asRoot) for (const path of [replica, join(replica, 'data.mdb'), join(replica, 'unsynced-guard.json')]) chownSync(path, uid, uid);
    const args = [CLI_PATH, 'serve', '--data-dir', replica, '--listen', '127.0.0.1:0', '--replication-listen', '127.0.0.1:0', '--wire-listen', '127.0.0.1:0', '--auth', 'off', '--upstream', '127.0.0.1:9'];
    const [command, argv] = asRoot ? ['/usr/bin/setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, ...args]] : [process.execPath, args];
    const result = spawnSync(command, argv, { encoding: 'utf8', timeout: 30_000 });
    assert.equal(result.status, 1, result.stderr);
    assert.match(result.stderr, /^mercury: DATA_DIR_INVALID: \S+unsynced-guard\.json cannot be read \(EACCES: .*\): data directory \S+ and the files in it must be readable and writable by the user mercury runs as/m);
    assert.equal(readFileSync(join(replica, 'data.mdb'), 'utf8'), 'pretend data', 'the data is not discarded');
  });

  test('a replica whose state file is a directory is refused by serve, naming it, with its data untouched', async () => {
    const made = dir('state-dir');
    const replica = join(made, 'replica');
    const store = Store.open({ path: replica, noSync: true, createDataset: false });
    await store.close();
    rmSync(join(replica, 'unsynced-guard.json'));
    mkdirSync(join(replica, 'unsynced-guard.json'));
    const refused = await serveRefused(replica, ['--upstream', '127.0.0.1:1']);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /DATA_DIR_INVALID: \S+unsynced-guard\.json is a directory, not a file, so whether this replica's data survived its last stop is unknown/);
    assert.ok(existsSync(join(replica, 'data.mdb')));
  });

  test('a noSync store marks itself clean on close and keeps its data', async () => {
    const made = dir('store');
    const store = Store.open({ path: made, noSync: true });
    store.commit(1, (view) => view.apply({ type: 'put', key: Buffer.from('k'), value: Buffer.from('v') }));
    await store.close();
    assert.equal((JSON.parse(readFileSync(join(made, 'unsynced-guard.json'), 'utf8')) as { clean: boolean }).clean, true);
    const reopened = Store.open({ path: made, noSync: true });
    assert.equal(reopened.get(Buffer.from('k')).record?.value.toString(), 'v');
    assert.equal(reopened.discardedAfterCrash, false);
    await reopened.close();
    closeUnsynced(made);
  });
});

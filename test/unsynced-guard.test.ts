/**
 * The unsynced guard: a replica's data written without fsync is kept after a process crash (same kernel boot) and
 * discarded after a machine crash (another boot), so it never runs on a possibly torn LMDB file.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { INITIALISED_FILE, Store } from '../src/store/index.js';
import { closeUnsynced, openUnsynced } from '../src/store/unsynced-guard.js';
import { makeTempDir, removeDir, serveRefused } from './support/process.js';

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
    assert.equal(openUnsynced(made), false);
    assert.ok(existsSync(join(made, 'data.mdb')));
    assert.equal((JSON.parse(readFileSync(join(made, 'unsynced-guard.json'), 'utf8')) as { clean: boolean }).clean, false);
  });

  test('an unclean stop in the same boot (a process crash) keeps the data', { skip: BOOT_ID === '' ? 'no boot id on this system' : false }, () => {
    const made = setUp('process-crash', { bootId: BOOT_ID, clean: false });
    assert.equal(openUnsynced(made), false);
    assert.ok(existsSync(join(made, 'data.mdb')));
  });

  test('an unclean stop in another boot (a machine crash) discards the data', () => {
    const made = setUp('machine-crash', { bootId: 'some-earlier-boot', clean: false });
    writeFileSync(join(made, INITIALISED_FILE), '');
    assert.equal(openUnsynced(made), true);
    assert.ok(!existsSync(join(made, 'data.mdb')));
    // Or the store made next would take its first empty data file for a truncated one.
    assert.ok(!existsSync(join(made, INITIALISED_FILE)));
  });

  test('a clean stop keeps the data across reboots', () => {
    const made = setUp('clean', { bootId: 'some-earlier-boot', clean: true });
    assert.equal(openUnsynced(made), false);
    assert.ok(existsSync(join(made, 'data.mdb')));
  });

  test('the state is replaced whole, never written in place; a temporary file a crash left behind is ignored and replaced', () => {
    const made = dir('replaced');
    const statePath = join(made, 'unsynced-guard.json');
    writeFileSync(`${statePath}.tmp`, '{"bootId":"left by a crash","clean":tr'); // a crash between write and rename
    assert.equal(openUnsynced(made), false);
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
    assert.equal(openUnsynced(made), true);
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
      assert.equal(openUnsynced(made), true, text);
      assert.ok(!existsSync(join(made, 'data.mdb')), text);
    }
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
    assert.match(refused.stderr, /DATA_DIR_INVALID: \S+unsynced-guard\.json is not a file, so whether this replica's data survived its last stop is unknown/);
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

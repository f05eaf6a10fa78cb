/**
 * Disk full at the write sites other than a node's own writes (test/storage-full.test.ts): a first start. On a small
 * tmpfs that the test mounts and unmounts.
 *
 * As found (audit, 2026-12-07): a first start on a full disk said DATA_DIR_INVALID "fix their owner or mode" and left
 * an empty lock file that refused the next start.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from './support/http.js';
import { makeTempDir, removeDir, serveRefused, startServe, stopProcess } from './support/process.js';
import { fillUp, mountTmpfs } from './support/tmpfs.js';

const TMPFS_BYTES = 16 * 1024 * 1024;

describe('storage full at other write sites', () => {
  let root: string;
  let mountPoint: string;
  let skip: string | undefined;
  const filler = (): string => join(mountPoint, 'filler');

  before(() => {
    root = makeTempDir('storage-full-sites');
    mountPoint = join(root, 'mnt');
    mkdirSync(mountPoint);
    skip = mountTmpfs(mountPoint, TMPFS_BYTES);
  });

  after(() => {
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
});

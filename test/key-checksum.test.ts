/**
 * Key records carry a checksum (issue 10, item 3), `mercury verify`, and damaged LMDB meta pages.
 *
 * The attacks as found: a damaged value in the key space was served with 200 and copied to new replicas by snapshot
 * (the snapshot digest was computed over the bad bytes); damaged LMDB meta pages crashed the start with SIGSEGV.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MercuryError } from '../src/errors/index.js';
import { INITIALISED_FILE, Store } from '../src/store/index.js';
import { openLocal } from '../src/client/index.js';
import { assertError, request, requestJson, waitUntil } from './support/http.js';
import { makeTempDir, removeDir, runCli, startServe, stopProcess, CLI_PATH } from './support/process.js';
import { rewriteRaw } from './support/lmdb-records.js';
import { spawn } from 'node:child_process';

/** Runs `mercury serve` expecting it to stop by itself; resolves with its exit code or signal and stderr. */
function serveUntilExit(dir: string): Promise<{ code: number | string; stderr: string }> {
  const child = spawn(process.execPath, [CLI_PATH, 'serve', '--data-dir', dir, '--listen', '127.0.0.1:0', '--auth', 'off'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  child.stdout.resume();
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code: code ?? signal ?? 'unknown', stderr })));
}

describe('key record checksums', () => {
  let root: string;
  let damagedDir: string;

  before(async () => {
    root = makeTempDir('key-checksum');
    damagedDir = join(root, 'root');
    const node = await startServe(damagedDir);
    await requestJson(node.url, 'PUT', '/v1/kv/a', { body: 'sound' });
    await requestJson(node.url, 'PUT', '/v1/kv/k', { body: 'the value as written' });
    await stopProcess(node.child, 'SIGTERM');
    // One byte of k's value flips in the key space (the log still holds the value as written).
    await rewriteRaw(damagedDir, 'kv', 'k', (stored) => {
      stored[stored.length - 3]! ^= 0x20;
      return stored;
    });
  });

  after(() => removeDir(root));

  test('key checksum: a damaged value is answered 500 DATA_CORRUPTED, never 200, and is not sent to a new replica', async () => {
    const node = await startServe(damagedDir);
    try {
      const error = assertError(await request(node.url, 'GET', '/v1/kv/k'), 'DATA_CORRUPTED', 500);
      assert.match(error.message, /key "k"/);
      assertError(await request(node.url, 'GET', '/v1/kv?prefix='), 'DATA_CORRUPTED', 500);
      assert.equal((await request(node.url, 'GET', '/v1/kv/a')).body.toString(), 'sound');

      const replica = await startServe(join(root, 'replica'), ['--upstream', node.replication]);
      try {
        await waitUntil('the replica is refused the damaged snapshot', async () => {
          const status = await requestJson<{ replication: { lastFailure: string | null } }>(replica.url, 'GET', '/v1/status');
          return /damaged data/.test(status.replication.lastFailure ?? '');
        });
        const status = await requestJson<{ replication: { snapshotsInstalled: number }; seq: number }>(replica.url, 'GET', '/v1/status');
        assert.equal(status.replication.snapshotsInstalled, 0);
        assert.equal((await request(replica.url, 'GET', '/readyz')).status, 503);
      } finally {
        await stopProcess(replica.child);
      }
      assert.equal((await request(node.url, 'GET', '/readyz')).status, 503);
    } finally {
      await stopProcess(node.child);
    }
  });

  test('verify: a sound directory passes; a damaged key or log entry fails with exit 1, named in --json', async () => {
    const soundDir = join(root, 'sound');
    const node = await startServe(soundDir);
    for (let i = 0; i < 20; i++) await requestJson(node.url, 'PUT', `/v1/kv/s${i % 7}`, { body: `v${i}` });
    await requestJson(node.url, 'DELETE', '/v1/kv/s3');
    await stopProcess(node.child, 'SIGTERM');
    const sound = await runCli(['verify', '--data-dir', soundDir]);
    assert.equal(sound.code, 0, sound.stderr + sound.stdout.toString());
    assert.match(sound.stdout.toString(), /OK: the store is sound/);

    const damaged = await runCli(['verify', '--data-dir', damagedDir, '--json']);
    assert.equal(damaged.code, 1, damaged.stderr);
    const report = JSON.parse(damaged.stdout.toString()) as { ok: boolean; keys: { damaged: number }; problems: string[] };
    assert.equal(report.ok, false);
    assert.equal(report.keys.damaged, 1);
    assert.match(report.problems.join('\n'), /key "k": checksum/);

    // One flipped bit in a log record breaks the chain from that entry on.
    const logDir = join(root, 'log-damage');
    cpSync(soundDir, logDir, { recursive: true });
    await rewriteRaw(logDir, 'log', '\0\0\0\0\0\0\0\x05', (stored) => {
      stored[stored.length - 40]! ^= 0x01;
      return stored;
    });
    const logDamaged = await runCli(['verify', '--data-dir', logDir, '--json']);
    assert.equal(logDamaged.code, 1, logDamaged.stderr);
    assert.match((JSON.parse(logDamaged.stdout.toString()) as { problems: string[] }).problems.join('\n'), /log: .*log entry 5/);
  });

  test('key checksum: a write that must read a damaged key answers DATA_CORRUPTED, not INTERNAL; the writes beside it commit', async () => {
    const copy = join(root, 'write-damage');
    cpSync(damagedDir, copy, { recursive: true });
    const node = await startServe(copy);
    try {
      const seqBefore = (await requestJson<{ seq: number }>(node.url, 'GET', '/v1/status')).seq;
      // Sent together, so that the group committer takes them into one batch with the damaged key's write among them.
      const json = { 'content-type': 'application/json' };
      const [put, compare, ...others] = await Promise.all([
        request(node.url, 'PUT', '/v1/kv/k', { body: 'new' }),
        request(node.url, 'POST', '/v1/txn', { headers: json, body: JSON.stringify({ compare: [{ key: 'k', version: 1 }], success: [{ op: 'put', key: 'c', value: 'x' }] }) }),
        ...Array.from({ length: 8 }, (_, i) => request(node.url, 'PUT', `/v1/kv/beside-${i}`, { body: `v${i}` })),
      ]);
      for (const response of [put, compare]) {
        const error = assertError(response, 'DATA_CORRUPTED', 500);
        assert.match(error.message, /^the write was not applied: damaged data on this node: key "k": checksum .*see "Damaged data" in the README/);
      }
      for (const [i, response] of others.entries()) {
        assert.equal(response.status, 200, response.body.toString());
        assert.equal((await request(node.url, 'GET', `/v1/kv/beside-${i}`)).body.toString(), `v${i}`);
      }
      assert.equal((await request(node.url, 'GET', '/v1/kv/c')).status, 404, 'the refused transaction applied nothing');
      assertError(await request(node.url, 'GET', '/v1/kv/k'), 'DATA_CORRUPTED');
      assert.ok((await requestJson<{ seq: number }>(node.url, 'GET', '/v1/status')).seq > seqBefore);
      // Deleting reads nothing: on a root, that is how an operator replaces a damaged key (README, "Damaged data").
      assert.equal((await request(node.url, 'DELETE', '/v1/kv/k')).status, 200);
      assert.equal((await request(node.url, 'PUT', '/v1/kv/k', { body: 'rewritten' })).status, 200);
      assert.equal((await request(node.url, 'GET', '/v1/kv/k')).body.toString(), 'rewritten');
    } finally {
      await stopProcess(node.child);
    }
  });

  test('key checksum: the embedded reader refuses a damaged value or header, short key or long, and reads the sound ones', async () => {
    const dir = join(root, 'local');
    // Past the bytes whose crc the store computes itself: this key's goes through zlib.
    const longKey = `long/${'x'.repeat(100)}`;
    const keys = ['short/sound', 'short/value', 'short/header', longKey, `${longKey}/sound`];
    const store = Store.open({ path: dir, noSync: true });
    store.commit(1_700_000_000_000, (view) => {
      for (const key of keys) view.apply({ type: 'put', key: Buffer.from(key), value: Buffer.from(`value of ${key}`) });
    });
    await store.close();
    const flip = (offset: number) => (stored: Buffer): Buffer => {
      stored[offset < 0 ? stored.length + offset : offset]! ^= 0x01;
      return stored;
    };
    await rewriteRaw(dir, 'kv', 'short/value', flip(-1));
    await rewriteRaw(dir, 'kv', 'short/header', flip(12)); // modSeq
    await rewriteRaw(dir, 'kv', longKey, flip(-1));
    const reader = await openLocal(dir);
    try {
      for (const key of ['short/sound', `${longKey}/sound`]) assert.equal(reader.getSync(key)?.value.toString(), `value of ${key}`);
      for (const key of ['short/value', 'short/header', longKey])
        assert.throws(() => reader.getSync(key), (error: unknown) => error instanceof MercuryError && error.code === 'DATA_CORRUPTED', key);
    } finally {
      await reader.close();
    }
  });

  test('meta pages: damaged LMDB meta pages end the start with a clear message, not SIGSEGV', async () => {
    const dir = join(root, 'meta');
    cpSync(join(root, 'sound'), dir, { recursive: true });
    const path = join(dir, 'data.mdb');
    const file = readFileSync(path);
    const pageBytes = file.readUInt32LE(48);
    // The main database's root page number, in both meta pages, far outside the file.
    for (const page of [0, 1]) file.writeBigUInt64LE(1n << 40n, page * pageBytes + 96 + 40);
    writeFileSync(path, file);
    const started = await serveUntilExit(dir);
    assert.equal(started.code, 1, started.stderr);
    assert.match(started.stderr, /DATA_DIR_INVALID: .*data\.mdb is damaged \(meta page 0: the main database's root page \d+ is outside the file\)/);
    const verified = await runCli(['verify', '--data-dir', dir]);
    assert.equal(verified.code, 1);
    assert.match(verified.stderr, /data\.mdb is damaged/);
  });

  test('b-tree: a damaged leaf of the key space kills a range read (SIGABRT) without the check; the start and verify name it instead', async () => {
    const dir = join(root, 'btree');
    const node = await startServe(dir);
    // One transaction, so the key space's pages are written once: every page holding these keys is a live one.
    const success = Array.from({ length: 3_000 }, (_, i) => ({ op: 'put', key: `bt/${String(i).padStart(5, '0')}`, value: 'v'.repeat(100) }));
    await requestJson(node.url, 'POST', '/v1/txn', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ success }) });
    await stopProcess(node.child, 'SIGTERM');
    // A disk fault in a leaf page: its flags (byte 18 of the page header) cleared.
    const path = join(dir, 'data.mdb');
    const file = readFileSync(path);
    const pageBytes = file.readUInt32LE(48);
    const leaf = file.indexOf(Buffer.from('bt/01500'));
    assert.ok(leaf > 0);
    const page = Math.floor(leaf / pageBytes);
    assert.equal(file.readUInt16LE(page * pageBytes + 18), 0x02, 'a leaf page');
    file.writeUInt16LE(0, page * pageBytes + 18);
    writeFileSync(path, file);

    // The attack as found: a reader that trusts LMDB dies on the range read, with no word of what is wrong.
    const reader = spawn(
      process.execPath,
      ['--input-type=module', '-e', `const { openLocal } = await import(${JSON.stringify(new URL('../src/client/index.js', import.meta.url).href)}); const r = await openLocal(${JSON.stringify(dir)}); for await (const page of r.range('bt/')) void page;`],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    reader.stderr.resume();
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => reader.once('exit', (c, s) => resolve([c, s])));
    assert.ok(signal !== null || code !== 0, `the damaged range read ended with ${code}/${signal}`);

    // The node's start walks the trees before LMDB reads them, and refuses with what is damaged.
    const started = await serveUntilExit(dir);
    assert.equal(started.code, 1, started.stderr);
    assert.match(started.stderr, new RegExp(`DATA_DIR_INVALID: .*data\\.mdb is damaged \\(page ${page} \\(.*\\) has flags 0x0, neither a branch nor a leaf\\); LMDB cannot open it safely. See "Damaged data"`));
    const verified = await runCli(['verify', '--data-dir', dir]);
    assert.equal(verified.code, 1);
    assert.match(verified.stderr, new RegExp(`page ${page} .*neither a branch nor a leaf`));
    // A sound directory passes the walk (and says so).
    const sound = await runCli(['verify', '--data-dir', join(root, 'sound')]);
    assert.equal(sound.code, 0, sound.stderr);
    assert.match(sound.stdout.toString(), /b-tree {3}every page of LMDB's trees is sound/);
  });

  test('store format: a directory of format 1 (no checksums) is refused with what to do', async () => {
    const dir = join(root, 'format-1');
    await Store.open({ path: dir }).close();
    await rewriteRaw(dir, 'meta', 'format', () => undefined);
    // Format 1 predates the marker, and this Mercury marks a directory only once its format passed.
    rmSync(join(dir, INITIALISED_FILE));
    for (const readOnly of [true, false, true]) {
      assert.throws(
        () => Store.open({ path: dir, readOnly }),
        (error: unknown) => error instanceof MercuryError && error.code === 'DATA_DIR_INVALID' && /store format 1; this Mercury reads format 2/.test(error.message),
      );
      assert.equal(existsSync(join(dir, INITIALISED_FILE)), false, 'a refused directory is not marked');
    }
  });

  test('store format: a lost or garbled format record in a directory this Mercury wrote is damage, not format 1', async () => {
    // Found by review: damaged bytes in data.mdb were reported as "holds store format 1 ... start on an empty
    // directory and write the keys again", a wrong diagnosis with a destructive remedy.
    const dir = join(root, 'format-lost');
    await Store.open({ path: dir }).close();
    await rewriteRaw(dir, 'meta', 'format', () => undefined);
    for (const readOnly of [true, false]) {
      assert.throws(
        () => Store.open({ path: dir, readOnly }),
        (error: unknown) =>
          error instanceof MercuryError && error.code === 'DATA_DIR_INVALID' && /data\.mdb is damaged \(its store format record is missing, though store-initialised says/.test(error.message) && !/format 1/.test(error.message),
      );
    }
    const garbled = join(root, 'format-garbled');
    await Store.open({ path: garbled }).close();
    await rewriteRaw(garbled, 'meta', 'format', () => Buffer.from('\u00cd\u0001'));
    assert.throws(() => Store.open({ path: garbled, readOnly: true }), (error: unknown) => error instanceof MercuryError && /is damaged \(its store format record reads/.test(error.message));
  });
});

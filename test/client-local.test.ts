/**
 * TypeScript client: `openLocal` reads a node's data directory in this process while the node (another process)
 * keeps writing: every read reflects one committed seq, `minSeq` gives read-your-writes, seqs never go back, and a
 * reader with `staleMs` keeps its snapshot that long.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { KEY_BYTES_MAX, RESERVED_KEY_PREFIX } from '../src/api/index.js';
import { connect, MercuryError, openLocal, type LocalReader, type MercuryClient } from '../src/index.js';
import { CLI_PATH, makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';

describe('client local reader', () => {
  let dir: string;
  let node: ServeProcess;
  let client: MercuryClient;
  let local: LocalReader;

  before(async () => {
    dir = makeTempDir('client-local');
    node = await startServe(dir);
    client = connect(node.url);
    await client.put('local/first', 'one');
    local = await openLocal(dir);
  });

  after(async () => {
    await local.close();
    await stopProcess(node.child);
    removeDir(dir);
  });

  test('client local: sees what the node committed, with the seq of the read', async () => {
    const { seq } = await client.put('local/a', 'alpha');
    const read = local.getSync('local/a');
    assert.equal(read?.value.toString(), 'alpha');
    assert.equal(read?.modSeq, seq);
    assert.ok(read.seq >= seq);
    assert.equal(local.getSync('local/missing'), undefined);
    assert.ok(local.seq() >= seq);
  });

  test('client local: reads keep up with a node that writes meanwhile, never going back in time', async () => {
    let lastSeq = 0;
    let writing = true;
    const writes = (async () => {
      for (let i = 0; i < 60; i++) await client.put(`local/live/${i % 10}`, `n${i}`);
      writing = false;
    })();
    let reads = 0;
    while (writing) {
      const read = await local.get('local/live/0');
      const seq = read?.seq ?? local.seq();
      assert.ok(seq >= lastSeq, `seq went back from ${lastSeq} to ${seq}`);
      lastSeq = seq;
      reads++;
      await new Promise((resolve) => setImmediate(resolve));
    }
    await writes;
    const { seq } = await client.put('local/live/done', 'yes');
    // Read-your-writes: a write's seq as minSeq.
    assert.equal((await local.get('local/live/done', { minSeq: seq }))?.value.toString(), 'yes');
    const pages = [];
    for await (const page of local.range('local/live/', { pageLimit: 4 })) pages.push(page);
    assert.deepEqual(pages.map((page) => page.items.length), [4, 4, 3]);
    assert.deepEqual(pages.flatMap((page) => page.items.map((item) => item.key.toString())), [...Array.from({ length: 10 }, (_, i) => `local/live/${i}`), 'local/live/done']);
    assert.equal(pages[2]!.items[1]!.value.toString(), 'n59');
    assert.ok(reads > 0);
  });

  test('client local: with staleMs the snapshot is kept within a burst of reads; an await renews it; minSeq waits', async () => {
    const stale = await openLocal(dir, { staleMs: 60_000 });
    try {
      assert.equal(stale.getSync('local/stale'), undefined);
      // The write happens while this process runs synchronously (a child process waited for), so lmdb-js has had no
      // event-loop turn to renew the snapshot by itself.
      const script = `const r = await fetch(${JSON.stringify(`${node.url}/v1/kv/local/stale`)}, { method: 'PUT', body: 'new' }); process.stdout.write(String((await r.json()).seq));`;
      const seq = Number(execFileSync(process.execPath, ['--input-type=module', '-e', script]).toString());
      assert.equal(stale.getSync('local/stale'), undefined, 'a snapshot younger than staleMs is not renewed within the turn');
      assert.equal(local.getSync('local/stale')?.value.toString(), 'new', 'staleMs 0 renews before every read');
      await new Promise((resolve) => setTimeout(resolve, 1));
      assert.equal(stale.getSync('local/stale')?.value.toString(), 'new', 'lmdb-js renews the snapshot after an event-loop turn');
      assert.equal((await stale.get('local/stale', { minSeq: seq }))?.seq, seq);
      await assert.rejects(stale.get('local/stale', { minSeq: seq + 1000, minSeqTimeoutMs: 20 }), (error: unknown) => error instanceof MercuryError && error.code === 'SEQ_WAIT_TIMEOUT');
    } finally {
      await stale.close();
    }
  });

  test('client local: a directory that is not a data directory is DATA_DIR_INVALID', async () => {
    const empty = makeTempDir('client-local-empty');
    try {
      await assert.rejects(openLocal(empty), (error: unknown) => error instanceof MercuryError && error.code === 'DATA_DIR_INVALID' && /holds no data\.mdb/.test(error.message));
      assert.deepEqual(readdirSync(empty), [], 'a reader makes no file');
      // Found by review: a missing directory was created (and then refused for its missing data file).
      const missing = join(empty, 'nope');
      await assert.rejects(openLocal(missing), (error: unknown) => error instanceof MercuryError && error.code === 'DATA_DIR_INVALID' && /nope does not exist/.test(error.message));
      assert.equal(existsSync(missing), false, 'a reader makes no directory');
    } finally {
      removeDir(empty);
    }
  });

  // Found by audit: a reader opening a directory whose data.mdb LMDB had created but not yet written (a node's first
  // instants, before store-initialised) was killed by SIGSEGV inside LMDB, and so was `mercury verify`. A child
  // process opens it here, so that the crash, if it comes back, fails this test rather than ending the runner.
  test('client local: an empty data.mdb (a node not yet started) is DATA_DIR_INVALID for openLocal and verify, not a crash', () => {
    const fresh = makeTempDir('client-local-fresh');
    try {
      writeFileSync(join(fresh, 'data.mdb'), '');
      const index = new URL('../src/index.js', import.meta.url).href;
      const script = `import(${JSON.stringify(index)}).then((m) => m.openLocal(${JSON.stringify(fresh)})).then(() => console.log('opened'), (e) => console.log(e.code, e.message))`;
      const opened = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
      assert.equal(opened.signal, null, `openLocal's process died of ${opened.signal}`);
      assert.match(opened.stdout, /^DATA_DIR_INVALID .*data\.mdb is empty: its node has not written its first pages yet/);
      const verified = spawnSync(process.execPath, [CLI_PATH, 'verify', '--data-dir', fresh], { encoding: 'utf8' });
      assert.equal(verified.signal, null, `verify died of ${verified.signal}`);
      assert.equal(verified.status, 1);
      assert.match(verified.stderr, /data\.mdb is empty/);
      assert.equal(statSync(join(fresh, 'data.mdb')).size, 0, 'a reader writes nothing');
    } finally {
      removeDir(fresh);
    }
  });
});

/**
 * Found by review: openLocal served what the node's KV API never serves. range('') listed the token records under
 * the reserved prefix (`\0mercury/auth/token/...`, with their secretSha256) as data and getSync read them; an empty
 * key threw LMDB's raw "Zero length key is not allowed".
 */
describe('client local reader - what it serves', () => {
  let dir: string;
  let node: ServeProcess;
  let local: LocalReader;
  const isError = (code: string) => (error: unknown) => error instanceof MercuryError && error.code === code;

  before(async () => {
    dir = makeTempDir('client-local-reserved');
    node = await startServe(join(dir, 'node'), ['--auth', 'required']);
    const client = connect(node.url, { token: readFileSync(join(dir, 'node', 'admin-token'), 'utf8').trim() });
    // Keys on both sides of the reserved prefix: \0a sorts before \0mercury/, app/x after it.
    await client.put('app/x', '1');
    await client.put(Buffer.from('\u0000a', 'latin1'), 'low');
    local = await openLocal(join(dir, 'node'));
  });

  after(async () => {
    await local?.close();
    await stopProcess(node.child);
    removeDir(dir);
  });

  const keysOf = async (prefix: string | Buffer, pageLimit?: number): Promise<{ keys: string[]; pages: number }> => {
    const keys: string[] = [];
    let pages = 0;
    for await (const page of local.range(prefix, pageLimit === undefined ? {} : { pageLimit })) {
      pages++;
      for (const item of page.items) keys.push(item.key.toString('latin1'));
    }
    return { keys, pages };
  };

  test('client local: range skips the reserved key space, as the node\'s range does', async () => {
    // A range across the reserved prefix is read as the ranges on either side of it: a page or more each.
    assert.deepEqual(await keysOf(''), { keys: ['\u0000a', 'app/x'], pages: 2 });
    assert.deepEqual(await keysOf('', 1), { keys: ['\u0000a', 'app/x'], pages: 2 });
    assert.deepEqual(await keysOf('\u0000'), { keys: ['\u0000a'], pages: 1 });
    // Inside the reserved prefix: one empty page.
    assert.deepEqual(await keysOf(RESERVED_KEY_PREFIX), { keys: [], pages: 1 });
    assert.deepEqual(await keysOf(Buffer.concat([RESERVED_KEY_PREFIX, Buffer.from('auth/')])), { keys: [], pages: 1 });
  });

  test('client local: a get of a reserved key is PERMISSION_DENIED, as on the node', async () => {
    const tokenKey = Buffer.concat([RESERVED_KEY_PREFIX, Buffer.from('auth/token/0000000000000000')]);
    assert.throws(() => local.getSync(tokenKey), isError('PERMISSION_DENIED'));
    await assert.rejects(local.get(tokenKey), isError('PERMISSION_DENIED'));
    assert.throws(() => local.getSync(RESERVED_KEY_PREFIX), isError('PERMISSION_DENIED'));
    assert.equal(local.getSync('app/x')?.value.toString(), '1');
  });

  test('client local: keys are checked as the node checks them: KEY_EMPTY, KEY_TOO_LARGE', async () => {
    assert.throws(() => local.getSync(''), isError('KEY_EMPTY'));
    await assert.rejects(local.get(Buffer.alloc(0)), isError('KEY_EMPTY'));
    assert.throws(() => local.getSync(Buffer.alloc(KEY_BYTES_MAX + 1, 0x61)), isError('KEY_TOO_LARGE'));
    await assert.rejects(keysOf(Buffer.alloc(KEY_BYTES_MAX + 1, 0x61)), isError('KEY_TOO_LARGE'));
    assert.equal(local.getSync(Buffer.alloc(KEY_BYTES_MAX, 0x61)), undefined);
  });
});

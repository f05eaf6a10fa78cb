/**
 * The files a node writes into its data directory besides LMDB's (the bootstrap admin token, the signing key and its
 * public half), and small files it reads back from there (the unsynced guard's state, the directory lock), damaged as
 * files. Found by review: a root that failed to write its admin token after registering it (or crashed between the
 * two) held a token nobody had and never made another, so no operator could get in; a crash between the private
 * signing key and its public half left the public half missing for good; a multi-GB guard state or lock file was read
 * whole (4 GB of memory for 16 s on a 3 GiB file) and then failed the start naming no file.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request, requestJson } from './support/http.js';
import { makeTempDir, removeDir, serveRefused, startServe, stopProcess } from './support/process.js';

/** Sparse, so the disk holds none of it; big enough that reading it whole fails (a string over 512 MiB). */
const HUGE_FILE_BYTES = 1024 * 1024 * 1024;

describe('data directory: files the node writes', () => {
  let root: string;

  before(() => {
    root = makeTempDir('written-files');
  });

  after(() => removeDir(root));

  test('written files: an admin-token that cannot be written refuses the first start before the token is registered; fixed, the next start writes one that lets the operator in', async () => {
    const dir = join(root, 'admin-token');
    mkdirSync(dir, { mode: 0o700 });
    const file = join(dir, 'admin-token');
    mkdirSync(file); // what is at the path (here a directory) makes the write fail, as a full disk or a crash would
    const refused = await serveRefused(dir, ['--auth', 'required']);
    assert.deepEqual({ code: refused.code, signal: refused.signal }, { code: 1, signal: null }, refused.stderr);
    assert.match(refused.stderr, /DATA_DIR_INVALID: the bootstrap admin token could not be written to \S+admin-token \(.*\), so none was registered/);
    rmSync(file, { recursive: true });
    const node = await startServe(dir, ['--auth', 'required']);
    try {
      assert.equal(statSync(file).mode & 0o777, 0o600);
      const admin = readFileSync(file, 'utf8').trim();
      const status = await request(node.url, 'GET', '/v1/status', { headers: { authorization: `Bearer ${admin}` } });
      assert.equal(status.status, 200, status.body.toString());
      assert.ok(!existsSync(`${file}.tmp`), 'no temporary file is left');
    } finally {
      await stopProcess(node.child);
    }
  });

  test('written files: a signing key pair that cannot be written whole leaves no private key; the next start makes both, and a public half found missing is written again', async () => {
    const dir = join(root, 'signing-key');
    mkdirSync(dir, { mode: 0o700 });
    const privatePath = join(dir, 'signing-key.pem');
    const publicPath = join(dir, 'signing-key.pub.pem');
    mkdirSync(publicPath);
    const refused = await serveRefused(dir);
    assert.equal(refused.code, 1, refused.stderr);
    assert.ok(!existsSync(privatePath), 'no private key without its public half');
    rmSync(publicPath, { recursive: true });
    writeFileSync(`${privatePath}.tmp`, '-----BEGIN PRIVATE'); // what a crash in the middle of a write leaves
    const publicOf = (): string => createPublicKey(createPrivateKey(readFileSync(privatePath))).export({ type: 'spki', format: 'pem' }).toString();
    let node = await startServe(dir);
    try {
      await requestJson(node.url, 'PUT', '/v1/kv/k', { body: 'v' });
      assert.equal(statSync(privatePath).mode & 0o777, 0o600);
      assert.equal(readFileSync(publicPath, 'utf8'), publicOf());
      assert.ok(!existsSync(`${privatePath}.tmp`) && !existsSync(`${publicPath}.tmp`), 'no temporary file is left');
    } finally {
      await stopProcess(node.child, 'SIGTERM');
    }
    const key = readFileSync(privatePath);
    rmSync(publicPath);
    node = await startServe(dir);
    await stopProcess(node.child, 'SIGTERM');
    assert.ok(readFileSync(privatePath).equals(key), 'the same key');
    assert.equal(readFileSync(publicPath, 'utf8'), publicOf());
  });

  test('damaged key files: a signing-key.pem cut short is DATA_DIR_INVALID (exit 1) naming it and saying to restore it, not a usage error; the file is left as it was, and restored, the root starts with its data', async () => {
    const dir = join(root, 'signing-key-damaged');
    let node = await startServe(dir);
    await requestJson(node.url, 'PUT', '/v1/kv/k', { body: 'kept' });
    await stopProcess(node.child, 'SIGTERM');
    const privatePath = join(dir, 'signing-key.pem');
    const key = readFileSync(privatePath);
    const cut = key.subarray(0, 40);
    writeFileSync(privatePath, cut); // what a copy interrupted, or a disk that filled during a restore, leaves
    const refused = await serveRefused(dir);
    assert.deepEqual({ code: refused.code, signal: refused.signal }, { code: 1, signal: null }, refused.stderr);
    assert.match(refused.stderr, /^mercury: DATA_DIR_INVALID: signing key \S+signing-key\.pem is not a PEM private key: .*; this root's entries are signed \(up to seq \d+\) and its replicas trust its key: restore \S+signing-key\.pem from a backup; if it is lost for good, start with --signing-key NEW_KEY_FILE/m);
    assert.ok(readFileSync(privatePath).equals(cut), 'the damaged key is not replaced');
    rmSync(privatePath);
    mkdirSync(privatePath); // a directory in its place: the same code, and no advice to give "another path"
    const directory = await serveRefused(dir);
    assert.equal(directory.code, 1, directory.stderr);
    assert.match(directory.stderr, /DATA_DIR_INVALID: signing key \S+signing-key\.pem is a directory; this root's entries are signed/);
    rmSync(privatePath, { recursive: true });
    writeFileSync(privatePath, key, { mode: 0o600 });
    node = await startServe(dir);
    try {
      assert.equal((await request(node.url, 'GET', '/v1/kv/k')).body.toString(), 'kept');
    } finally {
      await stopProcess(node.child);
    }
  });

  test('damaged key files: a signing-key.pub.pem emptied, cut short or holding another key is written again from the private key at start, with a warning', async () => {
    const dir = join(root, 'public-key-damaged');
    let node = await startServe(dir);
    await stopProcess(node.child, 'SIGTERM');
    const privatePath = join(dir, 'signing-key.pem');
    const publicPath = join(dir, 'signing-key.pub.pem');
    const publicPem = readFileSync(publicPath, 'utf8');
    assert.equal(publicPem, createPublicKey(createPrivateKey(readFileSync(privatePath))).export({ type: 'spki', format: 'pem' }).toString());
    const other = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
    for (const damaged of ['', publicPem.slice(0, 50), other]) {
      writeFileSync(publicPath, damaged);
      node = await startServe(dir);
      await stopProcess(node.child, 'SIGTERM');
      assert.equal(readFileSync(publicPath, 'utf8'), publicPem, `written again after ${JSON.stringify(damaged.slice(0, 30))}`);
      assert.match(node.stderr(), /signing-key\.pub\.pem was damaged \(not the public half of signing-key\.pem\): written again/);
    }
    node = await startServe(dir);
    await stopProcess(node.child, 'SIGTERM');
    assert.doesNotMatch(node.stderr(), /was damaged/, 'a sound public half is left alone, without a word');
  });
});

describe('data directory: small files read back, damaged to a huge size', () => {
  let root: string;

  before(() => {
    root = makeTempDir('huge-files');
  });

  after(() => removeDir(root));

  test('huge files: a replica whose unsynced-guard state file is 1 GiB takes it for damaged, without reading it: its data is discarded and it starts', async () => {
    const dir = join(root, 'guard');
    // A replica of an upstream that is not there: it starts, writes its guard state, and stops cleanly.
    let node = await startServe(dir, ['--upstream', '127.0.0.1:9']);
    await stopProcess(node.child, 'SIGTERM');
    const state = join(dir, 'unsynced-guard.json');
    truncateSync(state, HUGE_FILE_BYTES);
    node = await startServe(dir, ['--upstream', '127.0.0.1:9']);
    try {
      // Named as damaged, not as a machine crash (audit, 2026-12-07).
      assert.match(node.stderr(), /discarded the replica data: its state file \S+unsynced-guard\.json is damaged \(1073741824 bytes, over the 4096 it may hold\), so whether the data survived the last stop is unknown; bootstrapping again/);
      assert.ok(statSync(state).size < 4096, 'the state is written again');
    } finally {
      await stopProcess(node.child);
    }
  });

  test('huge files: a mercury.lock of 1 GiB is refused without reading it, naming it; removed, the node starts with its data', async () => {
    const dir = join(root, 'lock');
    let node = await startServe(dir);
    await requestJson(node.url, 'PUT', '/v1/kv/k', { body: 'kept' });
    await stopProcess(node.child, 'SIGTERM');
    const lock = join(dir, 'mercury.lock');
    writeFileSync(lock, '');
    truncateSync(lock, HUGE_FILE_BYTES);
    const refused = await serveRefused(dir);
    assert.deepEqual({ code: refused.code, signal: refused.signal }, { code: 1, signal: null }, refused.stderr);
    assert.match(refused.stderr, /DATA_DIR_INVALID: \S+mercury\.lock is 1073741824 bytes, not the lock file Mercury makes; with no mercury process on \S+, remove it and start again/);
    rmSync(lock);
    node = await startServe(dir);
    try {
      assert.equal((await request(node.url, 'GET', '/v1/kv/k')).body.toString(), 'kept');
    } finally {
      await stopProcess(node.child);
    }
  });
});

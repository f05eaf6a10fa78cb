/**
 * Signed entries between real `mercury serve` processes: a root that signs, replicas that verify (`--trust-key`), a
 * malicious relay (the test proxy in forging mode) whose forged entries and snapshots are refused while the replica
 * moves to an honest upstream, a replica holding the wrong key, writes forwarded only to a trusted root, and a key
 * rotation.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { generateToken } from '../src/auth/index.js';
import { Store } from '../src/store/index.js';
import { ROOT_KEY_KEY, ROOT_URL_KEY, keyId, rawPublicKey } from '../src/trust/index.js';
import { assertError, auditLog, request, requestJson } from './support/http.js';
import { freePort } from './support/net.js';
import { runCli, serveRefused, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { assertSameChain, converged, eventually, get, put, statusOf, treeForSuite } from './support/tree.js';

const FORGED = 'forged by the relay';

interface TrustStatusJson {
  readonly verifying?: boolean;
  readonly signingKey?: string;
  readonly configuredKeys?: string[];
  readonly learnedKey?: string | null;
  readonly refusals?: number;
  readonly lastRefusal?: { code: string; message: string; upstream: string } | null;
  readonly heartbeatsIgnored?: number;
  readonly unsignedSnapshotsDeclined?: number;
}

async function trustOf(node: ServeProcess): Promise<TrustStatusJson> {
  return ((await statusOf(node)) as unknown as { trust: TrustStatusJson }).trust;
}

async function metric(node: ServeProcess, name: string): Promise<number> {
  const text = (await request(node.url, 'GET', '/metrics')).body.toString();
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${name} `));
  return line === undefined ? NaN : Number(line.split(' ')[1]);
}

/** Every value the node serves for the keys written in these tests: none may be a forgery. */
async function assertNoForgery(node: ServeProcess): Promise<void> {
  for (const entry of await auditLog(node.url)) assert.ok(!JSON.stringify(entry).includes(Buffer.from(FORGED).toString('base64')) && !JSON.stringify(entry).includes(FORGED));
}

describe('signed entries - real processes', () => {
  // Processes and proxies, stopped at the end whatever happened.
  const { dir, serve, proxy: startRelay } = treeForSuite('signing');

  let root: ServeProcess;
  let rootArgs: string[];
  let publicKey: string;
  let replica: ServeProcess;
  let replicaArgs: (upstreams: string, key?: string) => string[];

  test('the root signs every entry with a key it generated (0600); a replica with --trust-key verifies and follows', async () => {
    rootArgs = ['--listen', `127.0.0.1:${await freePort()}`, '--replication-listen', `127.0.0.1:${await freePort()}`];
    root = await serve('root', rootArgs);
    assert.equal(statSync(join(root.dataDir, 'signing-key.pem')).mode & 0o777, 0o600);
    publicKey = join(root.dataDir, 'signing-key.pub.pem');
    for (let i = 0; i < 5; i++) await put(root, `before-${i}`, `v${i}`);
    replicaArgs = (upstreams, key = publicKey) => ['--upstream', upstreams, '--trust-key', key];
    replica = await serve('replica', replicaArgs(root.replication));
    await converged(root, [replica]);
    await put(root, 'after', 'streamed');
    await converged(root, [replica]);
    const trust = await trustOf(replica);
    assert.equal(trust.verifying, true);
    assert.equal(trust.refusals, 0);
    assert.deepEqual(trust.configuredKeys, [(await trustOf(root)).signingKey]);
    // Every entry carries the root's signature, on the replica as on the root.
    const log = await auditLog(replica.url);
    assert.ok(log.length > 0 && log.every((entry) => typeof entry.signature === 'string' && entry.signature.length === 128));
    await assertSameChain(replica, root);
    const cli = await runCli(['log', '--url', root.url]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout.toString(), /seq 1 .* signed/);
  });

  test('a malicious relay that forges entries with recomputed hashes: the replica refuses them and moves to the honest root', async () => {
    const relay = await startRelay(root.replication);
    relay.forging = 'keep';
    await stopProcess(replica.child);
    // The relay first in the list: the replica streams through it, refuses the first forged entry, then uses the root.
    replica = await serve('replica', replicaArgs(`${relay.address},${root.replication}`));
    await eventually(async () => (await statusOf(replica)).replication.phase === 'streaming', () => replica.stderr());
    for (let i = 0; i < 5; i++) await put(root, `during-${i}`, `v${i}`);
    await converged(root, [replica]);
    assert.ok(relay.forgedFrames >= 1, 'the relay forged something');
    const trust = await trustOf(replica);
    assert.ok((trust.refusals ?? 0) >= 1);
    assert.equal(trust.lastRefusal?.code, 'SIGNATURE_INVALID');
    assert.equal(trust.lastRefusal?.upstream, relay.address);
    assert.ok((await metric(replica, 'mercury_replication_signature_refusals')) >= 1);
    assert.match(replica.stderr(), /refused data not signed by a trusted key/);
    // The root heard the replica's refusal through the relay (the relay forwards what children send).
    await eventually(() => Promise.resolve(/child refused this node's data/.test(root.stderr())), () => root.stderr());
    for (let i = 0; i < 5; i++) assert.equal(await get(replica, `during-${i}`), `v${i}`);
    await assertNoForgery(replica);
    await assertSameChain(replica, root);
  });

  test('a relay that withholds entries behind the root\'s heartbeats, or hides the root\'s seq in them: the replica leaves it for the root', async (t) => {
    // Found by review: heartbeats counted as progress whatever they said, so such a relay kept its children for good.
    for (const mode of ['entries', 'hide'] as const) {
      const relay = await startRelay(root.replication);
      relay.withholding = mode;
      await stopProcess(replica.child);
      replica = await serve('replica', replicaArgs(`${relay.address},${root.replication}`));
      await eventually(async () => (await statusOf(replica)).replication.phase === 'streaming', () => replica.stderr());
      const startedMs = Date.now();
      await put(root, `withheld-${mode}`, mode);
      await eventually(async () => (await get(replica, `withheld-${mode}`)) === mode, () => replica.stderr(), 40_000);
      t.diagnostic(`${mode}: the replica had the write ${Date.now() - startedMs} ms after it was made`);
      assert.ok(relay.withheldEntries >= 1, 'the relay withheld the entry');
      const { replication } = await statusOf(replica);
      assert.equal(replication.upstream?.address, root.replication);
      // Honest heartbeats say the root is past the replica; pinned ones are not the root's, so they keep nothing.
      if (mode === 'entries') assert.match(replication.lastFailure ?? '', /^upstream withholding: its heartbeats say the root is at seq \d+, this node is at \d+/);
      else {
        assert.match(replication.lastFailure ?? '', /^upstream stale/);
        assert.ok(((await trustOf(replica)).heartbeatsIgnored ?? 0) >= 1, 'the pinned heartbeats were not taken');
      }
    }
    await assertSameChain(replica, root);
  });

  test('a malicious relay that forges a snapshot (and signs it with its own key): a new replica refuses it and bootstraps from the root', async () => {
    const relay = await startRelay(root.replication);
    relay.forging = 'attacker';
    const fresh = await serve('fresh', replicaArgs(`${relay.address},${root.replication}`));
    await converged(root, [fresh]);
    const trust = await trustOf(fresh);
    assert.ok((trust.refusals ?? 0) >= 1);
    assert.equal(trust.lastRefusal?.code, 'SIGNATURE_INVALID');
    assert.match(trust.lastRefusal?.message ?? '', /snapshot/);
    assert.equal(await get(fresh, 'before-0'), 'v0');
    await assertNoForgery(fresh);
    await assertSameChain(fresh, root);
    // Without --trust-key a replica trusts its upstream: the same relay feeds it forged data (what signatures stop).
    const naive = await serve('naive', ['--upstream', relay.address]);
    // The forged snapshot keeps the root's seq and hash, and changes the first key of each chunk ("after").
    await eventually(async () => (await get(naive, 'after')) === FORGED, () => naive.stderr());
    assert.equal(await get(root, 'after'), 'streamed');
    await stopProcess(naive.child);
  });

  test('an honest relay cannot sign a snapshot: a new replica takes its first one from the root, then goes back to the relay at once', async () => {
    const relay = await serve('honest-relay', ['--replication-listen', `127.0.0.1:${await freePort()}`, ...replicaArgs(root.replication)]);
    await converged(root, [relay]);
    const leaf = await serve('leaf', replicaArgs(`${relay.replication},${root.replication}`));
    await converged(root, [leaf]);
    // Declined as the relay's honest limit, not refused as forged data: no refusal, error line or warning of one on
    // either side, so that what an operator alerts on stays quiet in a correct tree (record 65; before, both fired).
    const trust = await trustOf(leaf);
    assert.equal(trust.unsignedSnapshotsDeclined, 1);
    assert.equal(trust.refusals, 0, JSON.stringify(trust.lastRefusal));
    assert.equal(trust.lastRefusal, null);
    assert.equal(await metric(leaf, 'mercury_replication_signature_refusals'), 0);
    assert.match(leaf.stderr(), /"level":"info","message":"declined an unsigned snapshot: only the root can sign one/);
    assert.doesNotMatch(leaf.stderr(), /"level":"error"/);
    // The relay may have written the whole snapshot and met the closed socket before it read the REFUSE: what it logs
    // of it is tested in test/replication-state.test.ts; whatever it read, it warned of nothing.
    assert.doesNotMatch(relay.stderr(), /child refused this node's data/);
    // Back on the relay well before the 30 s after which a replica otherwise retries its first upstream.
    const joined = performance.now();
    await eventually(async () => (await statusOf(leaf)).replication.upstream?.address === relay.replication, () => leaf.stderr());
    assert.ok(performance.now() - joined < 15_000);
    await put(root, 'through-relay', 'yes');
    await converged(root, [relay, leaf]);
    assert.equal(await get(leaf, 'through-relay'), 'yes');
    assert.equal((await statusOf(leaf)).replication.upstream?.address, relay.replication);
    await assertSameChain(leaf, root);
    await stopProcess(leaf.child);
    await stopProcess(relay.child);
  });

  test('a replica holding the wrong trust key: clear errors on both sides, it keeps serving what it has, nothing is lost', async () => {
    const wrong = join(dir, 'wrong.pub.pem');
    writeFileSync(wrong, generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }));
    await stopProcess(replica.child);
    const seqBefore = (await statusOf(root)).seq;
    replica = await serve('replica', replicaArgs(root.replication, wrong));
    await put(root, 'while-wrong', 'x');
    await eventually(async () => ((await trustOf(replica)).refusals ?? 0) >= 1, () => replica.stderr());
    const trust = await trustOf(replica);
    assert.equal(trust.lastRefusal?.code, 'SIGNATURE_INVALID');
    assert.match(trust.lastRefusal?.message ?? '', /not signed by a trusted key/);
    assert.match(root.stderr(), /child refused this node's data.*SIGNATURE_INVALID/);
    // It serves what it had, and did not apply what it could not verify.
    assert.equal(await get(replica, 'during-0'), 'v0');
    assert.equal(await get(replica, 'while-wrong'), undefined);
    assert.equal((await statusOf(replica)).seq, seqBefore);
    assert.notEqual((await statusOf(replica)).replication.phase, 'streaming');
    // Given the right key it catches up: nothing was lost.
    await stopProcess(replica.child);
    replica = await serve('replica', replicaArgs(root.replication));
    await converged(root, [replica]);
    assert.equal(await get(replica, 'while-wrong'), 'x');
  });

  test('a replica with --trust-key forwards writes only to a root it trusts, never to its upstream\'s claim', async () => {
    assertError(await request(replica.url, 'PUT', '/v1/kv/forwarded', { body: 'no' }), 'ROOT_UNKNOWN');
    const configured = await serve('configured', [...replicaArgs(root.replication), '--root-url', root.url]);
    await converged(root, [configured]);
    const seq = await put(configured, 'forwarded', 'yes');
    assert.equal(await get(configured, 'forwarded'), 'yes');
    assert.ok((await statusOf(root)).seq >= seq);
    await stopProcess(configured.child);
  });

  test('a replica that followed without --trust-key is resynced when it starts with it: a planted key and root URL are not trusted', async () => {
    // It followed the root without checks, and meanwhile a relay (here: a write into its store) planted its own signing
    // key and root URL: what a relay feeding an unverifying replica can do.
    const unverified = await serve('unverified', ['--upstream', root.replication]);
    await converged(root, [unverified]);
    await stopProcess(unverified.child, 'SIGTERM');
    const attacker = generateKeyPairSync('ed25519');
    const store = Store.open({ path: unverified.dataDir, noSync: true });
    assert.equal(store.verified, false);
    store.commit(Date.now(), (view) => {
      view.apply({ type: 'put', key: ROOT_KEY_KEY, value: rawPublicKey(attacker.publicKey) });
      view.apply({ type: 'put', key: ROOT_URL_KEY, value: Buffer.from('http://127.0.0.1:9/attacker-captures-writes') });
    });
    await new Promise((resolve) => setTimeout(resolve, 10)); // lmdb-js: no close in the turn of a write
    await store.close();
    // The operator turns verification on.
    const restarted = await serve('unverified', replicaArgs(root.replication));
    await eventually(() => Promise.resolve(/replacing it with a verified snapshot/.test(restarted.stderr())), () => restarted.stderr());
    await put(root, 'after-verification', 'signed');
    await converged(root, [restarted]);
    await assertSameChain(restarted, root);
    const trust = (await trustOf(restarted)) as TrustStatusJson & { dataVerified?: boolean; forwardTo?: string | null };
    assert.notEqual(trust.learnedKey, keyId(attacker.publicKey));
    assert.equal(trust.dataVerified, true);
    assert.ok(!String(trust.forwardTo).includes('attacker'), `forwards to ${trust.forwardTo}`);
    assertError(await request(restarted.url, 'PUT', '/v1/kv/captured', { body: 'no' }), 'ROOT_UNKNOWN');
    await stopProcess(restarted.child);
  });

  test('key rotation: an entry signed by the old key names the new one; replicas that trusted the old key follow', async () => {
    const newKey = join(dir, 'new-key.pem');
    writeFileSync(newKey, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    const oldKey = join(root.dataDir, 'signing-key.pem');
    const oldId = (await trustOf(root)).signingKey;
    await stopProcess(root.child, 'SIGTERM');
    root = await serve('root', [...rootArgs, '--signing-key', newKey, '--previous-signing-key', oldKey]);
    const newId = (await trustOf(root)).signingKey;
    assert.notEqual(newId, oldId);
    await put(root, 'after-rotation', 'new key');
    await converged(root, [replica]);
    assert.equal(await get(replica, 'after-rotation'), 'new key');
    assert.equal((await trustOf(replica)).learnedKey, newId);
    // Starting again with the old key alone is refused: replicas would refuse everything it signs.
    await stopProcess(root.child, 'SIGTERM');
    await assert.rejects(startServe(root.dataDir, rootArgs), /chain names key/);
    root = await serve('root', [...rootArgs, '--signing-key', newKey]);
    await put(root, 'after-restart', 'still new');
    await converged(root, [replica]);
  });

  // Found by an audit (2026-12-06): a --previous-signing-key that never signed the chain was taken, and the root
  // committed a rotation signed by it; every replica refused that entry, and everything after it, for good.
  test('a rotation from a key that did not sign the chain is refused at start; nothing is committed', async () => {
    const rootDir = join(dir, 'wrong-previous');
    const first = await serve('wrong-previous');
    await put(first, 'k', 'signed');
    const oldId = (await trustOf(first)).signingKey;
    const seqBefore = (await statusOf(first)).seq;
    await stopProcess(first.child, 'SIGTERM');
    const keyFile = (name: string): string => {
      const path = join(dir, name);
      writeFileSync(path, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
      return path;
    };
    const newKey = keyFile('wrong-previous-new.pem');
    const refused = await serveRefused(rootDir, ['--signing-key', newKey, '--previous-signing-key', keyFile('wrong-previous-stranger.pem')]);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /CONFIG_INVALID: --previous-signing-key is key \S+, but the chain's last entry \(seq \d+\) is not signed by it, so replicas would refuse the rotation/);
    // The key that did sign it rotates, and the root goes on from the entry it had.
    const rotated = await serve('wrong-previous', ['--signing-key', newKey, '--previous-signing-key', join(rootDir, 'signing-key.pem')]);
    assert.notEqual((await trustOf(rotated)).signingKey, oldId);
    assert.equal(await get(rotated, 'k'), 'signed');
    assert.equal((await statusOf(rotated)).seq, seqBefore + 1, 'the refused start committed nothing; the rotation is one entry');
  });

  // Found by an audit (2026-12-06): a root that held no token, started with auth required and a rotation at once,
  // registered its bootstrap admin token first, in an entry signed by the new key before any entry named that key: the
  // start was refused (the chain's last entry was no longer signed by the old key), and after a rotation already made,
  // replicas that trusted only the old key refused that entry for good.
  test('a start that rotates the key and registers the bootstrap admin token commits the rotation first: replicas trusting the old key take both', async () => {
    const first = await serve('bootstrap-rotation'); // auth off: no token is registered
    await put(first, 'k', 'before');
    const oldKey = join(first.dataDir, 'signing-key.pem');
    const oldPublic = join(first.dataDir, 'signing-key.pub.pem');
    const follower = await serve('bootstrap-rotation-replica', ['--upstream', first.replication, '--trust-key', oldPublic]);
    await converged(first, [follower]);
    await stopProcess(follower.child, 'SIGTERM');
    await stopProcess(first.child, 'SIGTERM');
    const newKey = join(dir, 'bootstrap-rotation-new.pem');
    writeFileSync(newKey, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    const admin = generateToken().token;
    const adminFile = join(dir, 'bootstrap-rotation-admin-token');
    writeFileSync(adminFile, `${admin}\n`, { mode: 0o600 });
    const rotated = await serve('bootstrap-rotation', ['--auth', 'required', '--admin-token-file', adminFile, '--signing-key', newKey, '--previous-signing-key', oldKey]);
    const bearer = { authorization: `Bearer ${admin}` };
    const created = await requestJson<{ token: string }>(rotated.url, 'POST', '/v1/auth/tokens', {
      headers: { ...bearer, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'replicas', scopes: ['replicate'] }),
    });
    const replicationTokenFile = join(dir, 'bootstrap-rotation-replication-token');
    writeFileSync(replicationTokenFile, created.token, { mode: 0o600 });
    await requestJson(rotated.url, 'PUT', '/v1/kv/after-rotation', { headers: bearer, body: 'new key' });
    const rootSeq = (await requestJson<{ seq: number }>(rotated.url, 'GET', '/v1/status', { headers: bearer })).seq;
    const replica = await serve('bootstrap-rotation-replica', ['--upstream', rotated.replication, '--trust-key', oldPublic, '--replication-token-file', replicationTokenFile]);
    await eventually(async () => (await statusOf(replica)).seq === rootSeq, () => replica.stderr());
    assert.equal(await get(replica, 'after-rotation'), 'new key');
    const trust = await trustOf(replica);
    assert.equal(trust.refusals, 0, JSON.stringify(trust.lastRefusal));
    assert.equal(trust.learnedKey, (await requestJson<{ trust: TrustStatusJson }>(rotated.url, 'GET', '/v1/status', { headers: bearer })).trust.signingKey);
  });

  // Found by an audit (2026-12-06): with its key file deleted, a root whose chain was signed made a new pair, overwrote
  // the public half and went on; its replicas refused everything from then on.
  test('a signed root whose key file is gone refuses to start instead of making a new key; its public half is left as it was', async () => {
    const rootDir = join(dir, 'lost-key');
    const first = await serve('lost-key');
    await put(first, 'k', 'signed');
    await stopProcess(first.child, 'SIGTERM');
    const publicPath = join(rootDir, 'signing-key.pub.pem');
    const publicBefore = readFileSync(publicPath, 'utf8');
    unlinkSync(join(rootDir, 'signing-key.pem'));
    const refused = await serveRefused(rootDir);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /DATA_DIR_INVALID/);
    assert.match(refused.stderr, /signing-key\.pem is missing, but this root's entries are signed \(up to seq \d+\).*restore the file from a backup; if it is lost for good, start with --signing-key/);
    assert.equal(readFileSync(publicPath, 'utf8'), publicBefore);
    assert.equal(existsSync(join(rootDir, 'signing-key.pem')), false);
    // The way out the message names: a new key, given on purpose.
    const replacement = join(dir, 'replacement-key.pem');
    writeFileSync(replacement, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    const restarted = await serve('lost-key', ['--signing-key', replacement]);
    assert.equal(await get(restarted, 'k'), 'signed');
  });
});

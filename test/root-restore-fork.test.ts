/**
 * A root restored from an older backup while replicas of the old root live on, past the restored seq: their chains
 * fork from the new root's once it commits more (README, "A root restored while replicas of the old root live on").
 * Found by review E:
 * - finding 10: a replica forwarding with --root-url waited only for head.seq >= the write's seq; its forked head was
 *   already higher, so it answered 200 for a write it never shows. The root's answer now carries the entry's hash,
 *   and the replica compares it with its own entry at that seq.
 * - finding 06: a leaf listing the root and a relay (`--upstream ROOT,RELAY`) was welcomed by the relay, on the same
 *   forked chain and diverged itself, which cleared the leaf's divergence votes: it cycled forever, never said it
 *   diverged, and answered /readyz 200 while serving forked data. A relay that stopped following now refuses it.
 * - then: that relay answered CHAIN_DIVERGED to every child, so a leaf at seq 3 (behind the fork, on both histories)
 *   whose only upstream was the relay stopped as diverged, though nothing had refused its chain. The relay now says
 *   CHAIN_DIVERGED only to a child at the head it diverged at, and UPSTREAM_DIVERGED (an abstention) to any other.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { assertError, request, requestJson, waitUntil } from './support/http.js';
import { freePort } from './support/net.js';
import { makeTempDir, removeDir, runCli, startServe, stopProcess, type ServeProcess } from './support/process.js';

interface Status {
  seq: number;
  headHash: string;
  replication: {
    phase: string;
    divergedReason: string | null;
    divergedHead: { seq: number; hash: string } | null;
    lastFailure: string | null;
    consecutiveFailures: number;
  };
}

const statusOf = (node: ServeProcess): Promise<Status> => requestJson<Status>(node.url, 'GET', '/v1/status');
const put = (node: ServeProcess, key: string, value: string): Promise<{ seq: number }> => requestJson(node.url, 'PUT', `/v1/kv/${key}`, { body: value });

/** A root on fixed ports, so that the one restored from its backup is found by the same replicas at the same address. */
class ForkableRoot {
  root!: ServeProcess;
  private rootArgs: string[] = [];
  private readonly backup: string;
  constructor(
    private readonly dir: string,
    private readonly serve: (name: string, args: string[]) => Promise<ServeProcess>,
  ) {
    this.backup = join(dir, 'backup.snap');
  }

  async start(): Promise<ServeProcess> {
    const [httpPort, replicationPort] = [await freePort(), await freePort()];
    this.rootArgs = ['--listen', `127.0.0.1:${httpPort}`, '--replication-listen', `127.0.0.1:${replicationPort}`];
    this.root = await this.serve('root', this.rootArgs);
    return this.root;
  }

  async saveBackup(): Promise<void> {
    assert.equal((await runCli(['snapshot', 'save', this.backup, '--url', this.root.url])).code, 0);
  }

  /** Stops the root and starts one restored from the backup in its place. */
  async restore(): Promise<ServeProcess> {
    await stopProcess(this.root.child, 'SIGTERM');
    const restored = await runCli(['snapshot', 'restore', this.backup, '--data-dir', join(this.dir, 'root2')]);
    assert.equal(restored.code, 0, restored.stderr);
    this.root = await this.serve('root2', this.rootArgs);
    return this.root;
  }
}

describe('root restored from an older backup', () => {
  const dir = makeTempDir('root-restore-fork');
  const started: ServeProcess[] = [];
  const serve = async (name: string, args: string[]): Promise<ServeProcess> => {
    const node = await startServe(join(dir, name), args);
    started.push(node);
    return node;
  };
  after(async () => {
    for (const node of started) await stopProcess(node.child);
    removeDir(dir);
  });

  test('root restore fork: a write the root committed at a seq where the replica holds another entry is REPLICA_DIVERGED, not 200', async () => {
    const cluster = new ForkableRoot(join(dir, 'forward'), (name, args) => serve(join('forward', name), args));
    const root = await cluster.start();
    const replica = await serve('forward-replica', ['--upstream', root.replication, '--root-url', root.url]);
    for (let i = 1; i <= 3; i++) await put(root, `k/${i}`, `old${i}`);
    // While the chains agree, the answer's hash is the replica's entry at the write's seq.
    const agreed = await requestJson<{ seq: number; hash: string }>(replica.url, 'POST', '/v1/txn', {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ success: [{ op: 'put', key: 'k/4', value: 'old4' }] }),
    });
    const [entry] = (await requestJson<{ entries: { seq: number; hash: string }[] }>(replica.url, 'GET', `/v1/log?from=${agreed.seq}&limit=1`)).entries;
    assert.equal(agreed.hash, entry!.hash);
    await cluster.saveBackup();
    for (let i = 5; i <= 8; i++) await put(root, `k/${i}`, `old${i}`);
    await waitUntil('replica at 8', async () => (await statusOf(replica)).seq === 8);
    const root2 = await cluster.restore();
    await waitUntil('replica refused BEHIND', async () => /BEHIND/.test((await statusOf(replica)).replication.lastFailure ?? ''));

    const answer = await request(replica.url, 'PUT', '/v1/kv/app/mode', { body: 'green' });
    const error = assertError(answer, 'REPLICA_DIVERGED', 502);
    assert.match(error.message, /diverged from the root's/);
    // Committed at the root all the same, as the error says.
    assert.equal((await request(root2.url, 'GET', '/v1/kv/app/mode')).body.toString(), 'green');
  });

  test('root restore fork: a leaf that lists the root and a diverged relay reaches phase diverged and is not ready', async () => {
    const cluster = new ForkableRoot(join(dir, 'relay'), (name, args) => serve(join('relay', name), args));
    const root = await cluster.start();
    const relay = await serve('relay-relay', ['--upstream', root.replication]);
    const leaf = await serve('relay-leaf', ['--upstream', `${root.replication},${relay.replication}`]);
    for (let i = 1; i <= 3; i++) await put(root, `k/${i}`, `old${i}`);
    await cluster.saveBackup();
    for (let i = 4; i <= 6; i++) await put(root, `k/${i}`, `old${i}`);
    await waitUntil('relay and leaf at 6', async () => (await statusOf(relay)).seq === 6 && (await statusOf(leaf)).seq === 6);
    const root2 = await cluster.restore();
    // The new root passes seq 6 with other entries.
    for (let i = 4; i <= 8; i++) await put(root2, `k/${i}`, `new${i}`);
    await waitUntil('relay diverged', async () => (await statusOf(relay)).replication.phase === 'diverged', 40_000);
    await waitUntil('leaf diverged', async () => (await statusOf(leaf)).replication.phase === 'diverged', 40_000);
    assert.match((await statusOf(leaf)).replication.divergedReason ?? '', /CHAIN_DIVERGED/);
    assert.equal((await request(leaf.url, 'GET', '/readyz')).status, 503);
  });

  test('root restore fork: a leaf behind the fork whose upstream is a diverged relay keeps trying, and catches up from the root', async () => {
    const cluster = new ForkableRoot(join(dir, 'behind'), (name, args) => serve(join('behind', name), args));
    const root = await cluster.start();
    const relay = await serve('behind-relay', ['--upstream', root.replication]);
    let leaf = await serve('behind-leaf', ['--upstream', relay.replication]);
    for (let i = 1; i <= 3; i++) await put(root, `k/${i}`, `old${i}`);
    await cluster.saveBackup();
    await waitUntil('leaf at 3', async () => (await statusOf(leaf)).seq === 3);
    // The leaf stays at seq 3, which both histories share, while the relay follows the old root past it.
    await stopProcess(leaf.child, 'SIGTERM');
    for (let i = 4; i <= 6; i++) await put(root, `k/${i}`, `old${i}`);
    await waitUntil('relay at 6', async () => (await statusOf(relay)).seq === 6);
    const relayHead = (await statusOf(relay)).headHash;
    const root2 = await cluster.restore();
    for (let i = 4; i <= 8; i++) await put(root2, `k/${i}`, `new${i}`);
    await waitUntil('relay diverged', async () => (await statusOf(relay)).replication.phase === 'diverged', 40_000);
    assert.deepEqual((await statusOf(relay)).replication.divergedHead, { seq: 6, hash: relayHead });
    assert.match((await runCli(['status', '--url', relay.url])).stdout.toString(), /DIVERGED at seq 6: upstream refused: CHAIN_DIVERGED/);

    leaf = await serve('behind-leaf', ['--upstream', relay.replication]);
    // Before: the relay's CHAIN_DIVERGED was the only upstream's vote, and the leaf stopped. Now it is refused again and again.
    await waitUntil(
      'leaf refused twice, or diverged',
      async () => {
        const { replication } = await statusOf(leaf);
        return replication.phase === 'diverged' || replication.consecutiveFailures >= 2;
      },
      40_000,
    );
    const refused = await statusOf(leaf);
    assert.notEqual(refused.replication.phase, 'diverged', JSON.stringify(refused.replication));
    assert.equal(refused.replication.divergedReason, null);
    assert.equal(refused.seq, 3);
    assert.match(refused.replication.lastFailure ?? '', /^upstream refused: UPSTREAM_DIVERGED: this relay stopped following at seq 6/);
    assert.equal((await request(leaf.url, 'GET', '/readyz')).status, 503);

    // Given the root as a second upstream, it follows the root's new history.
    await stopProcess(leaf.child, 'SIGTERM');
    leaf = await serve('behind-leaf', ['--upstream', `${relay.replication},${root2.replication}`]);
    const rootHead = (await statusOf(root2)).headHash;
    await waitUntil('leaf at the root head', async () => (await statusOf(leaf)).headHash === rootHead, 40_000);
    assert.equal((await request(leaf.url, 'GET', '/v1/kv/k/4')).body.toString(), 'new4');
    assert.equal((await statusOf(leaf)).replication.divergedReason, null);
  });
});

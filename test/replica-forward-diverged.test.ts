/**
 * A write forwarded by a replica whose chain forked from the root's: the root was restored from an older backup, and
 * the replica (past the restored seq, refused BEHIND, forwarding with --root-url) holds other entries at the seqs the
 * new root commits. Before, it answered 200 at once (its head was already past the write's seq) for a write it never
 * shows (review E, finding 10); now the root's answer carries the entry's hash, and the replica compares it with its
 * own entry at that seq.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { assertError, request, requestJson, waitUntil } from './support/http.js';
import { freePort } from './support/net.js';
import { makeTempDir, removeDir, runCli, startServe, stopProcess, type ServeProcess } from './support/process.js';

interface Status {
  seq: number;
  replication: { lastFailure: string | null };
}

describe('replica forward: a forked replica', () => {
  const dir = makeTempDir('replica-forward-diverged');
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

  test('replica forward: a write the root committed at a seq where the replica holds another entry is REPLICA_DIVERGED, not 200', async () => {
    const [httpPort, replicationPort] = [await freePort(), await freePort()];
    const rootArgs = ['--listen', `127.0.0.1:${httpPort}`, '--replication-listen', `127.0.0.1:${replicationPort}`];
    const root = await serve('root', rootArgs);
    const replica = await serve('replica', ['--upstream', root.replication, '--root-url', root.url]);
    for (let i = 1; i <= 3; i++) await requestJson(root.url, 'PUT', `/v1/kv/k/${i}`, { body: `old${i}` });
    // While the chains agree, the answer's hash is the replica's entry at the write's seq.
    const agreed = await requestJson<{ seq: number; hash: string }>(replica.url, 'POST', '/v1/txn', {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ success: [{ op: 'put', key: 'k/4', value: 'old4' }] }),
    });
    const [entry] = (await requestJson<{ entries: { seq: number; hash: string }[] }>(replica.url, 'GET', `/v1/log?from=${agreed.seq}&limit=1`)).entries;
    assert.equal(agreed.hash, entry!.hash);
    const backup = join(dir, 'backup.snap');
    assert.equal((await runCli(['snapshot', 'save', backup, '--url', root.url])).code, 0);
    for (let i = 5; i <= 8; i++) await requestJson(root.url, 'PUT', `/v1/kv/k/${i}`, { body: `old${i}` });
    await waitUntil('replica at 8', async () => (await requestJson<Status>(replica.url, 'GET', '/v1/status')).seq === 8);
    await stopProcess(root.child, 'SIGTERM');
    const restored = await runCli(['snapshot', 'restore', backup, '--data-dir', join(dir, 'root2')]);
    assert.equal(restored.code, 0, restored.stderr);
    await serve('root2', rootArgs);
    await waitUntil('replica refused BEHIND', async () => /BEHIND/.test((await requestJson<Status>(replica.url, 'GET', '/v1/status')).replication.lastFailure ?? ''));

    const answer = await request(replica.url, 'PUT', '/v1/kv/app/mode', { body: 'green' });
    const error = assertError(answer, 'REPLICA_DIVERGED', 502);
    assert.match(error.message, /diverged from the root's/);
    // Committed at the root all the same, as the error says.
    assert.equal((await request(`http://127.0.0.1:${httpPort}`, 'GET', '/v1/kv/app/mode')).body.toString(), 'green');
  });
});

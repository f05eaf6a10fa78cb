/**
 * `mercury sync` under kill -9 (a real sync process against a real node): killed in the middle of its first snapshot
 * (files written, the first state not yet), in the middle of a resumed snapshot, and at random moments while it applies
 * a stream of entries. After each kill the state file must claim no seq whose files are not all in DIR; a restarted
 * sync must start (not refuse its own leftovers), and DIR must end equal to the node's keys under the prefix, with no
 * temporary files. The root keeps a short log (--log-retain-entries), so a sync that starts from seq 1, or resumes
 * from far behind, gets a snapshot.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { NodeClient } from '../src/client/index.js';
import { SYNC_RESERVED_PREFIX, SYNC_STATE_FILE } from '../src/sync/index.js';
import { makeTempDir, removeDir, RunningClis, startServe, stopProcess, type RunningCli, type ServeProcess } from './support/process.js';
import { eventually } from './support/tree.js';

const PREFIX = 'cfg/';
const VALUE = 'v'.repeat(200);

/** Files under `dir` (relative paths), sync's own names apart; temporary files are listed separately. */
function walk(dir: string): { files: Map<string, string>; temporary: string[] } {
  const files = new Map<string, string>();
  const temporary: string[] = [];
  const visit = (relative: string): void => {
    for (const entry of readdirSync(join(dir, relative), { withFileTypes: true })) {
      const path = relative === '' ? entry.name : `${relative}/${entry.name}`;
      if (entry.name.startsWith(`${SYNC_RESERVED_PREFIX}-tmp-`)) temporary.push(path);
      else if (entry.name.startsWith(SYNC_RESERVED_PREFIX)) continue;
      else if (entry.isDirectory()) visit(path);
      else files.set(path, readFileSync(join(dir, path), 'utf8'));
    }
  };
  visit('');
  return { files, temporary };
}

/** `eventually` for a check that needs no await. */
function until(check: () => boolean, describe: () => string, timeoutMs: number): Promise<void> {
  return eventually(() => Promise.resolve(check()), describe, timeoutMs);
}

function savedSeq(dir: string): number | undefined {
  const path = join(dir, SYNC_STATE_FILE);
  if (!existsSync(path)) return undefined;
  return (JSON.parse(readFileSync(path, 'utf8')) as { seq: number }).seq;
}

/** The keys under PREFIX, as sync's relative paths, with their values and modSeqs. */
async function nodeKeys(node: ServeProcess): Promise<Map<string, { value: string; modSeq: number }>> {
  const keys = new Map<string, { value: string; modSeq: number }>();
  for await (const item of new NodeClient(node.url).range(PREFIX, 1_000)) keys.set(item.key.toString().slice(PREFIX.length), { value: item.value.toString(), modSeq: item.modSeq });
  return keys;
}

/**
 * What the state file may claim: every key the node held at the saved seq is in DIR with its value. Each test writes
 * every key once and deletes only keys it never writes again, so a key whose modSeq is at most the saved seq had that
 * value at the saved seq, and a key deleted at or before it is checked by `deletedAt`.
 */
function assertStateHonest(dir: string, keys: Map<string, { value: string; modSeq: number }>, deletedAt: Map<string, number>, what: string): void {
  const seq = savedSeq(dir) ?? 0;
  const { files } = walk(dir);
  for (const [path, { value, modSeq }] of keys)
    if (modSeq <= seq) assert.equal(files.get(path), value, `${what}: the state file claims seq ${seq}, but ${path} (seq ${modSeq}) is not in DIR as written`);
  for (const [path, deleted] of deletedAt) if (deleted <= seq) assert.ok(!files.has(path), `${what}: the state file claims seq ${seq}, but ${path}, deleted at ${deleted}, is still in DIR`);
}

describe('crash: mercury sync killed mid-way', () => {
  const dir = makeTempDir('crash-sync');
  const clis = new RunningClis();
  let node: ServeProcess;
  let client: NodeClient;
  /** Nodes a test starts for itself, stopped here too should it fail. */
  const others: ServeProcess[] = [];

  before(async () => {
    node = await startServe(join(dir, 'node'), ['--log-retain-entries', '4']);
    client = new NodeClient(node.url);
  });
  after(async () => {
    await clis.stopAll();
    for (const other of others) await stopProcess(other.child);
    await stopProcess(node.child);
    removeDir(dir);
  });

  function startSync(target: string, on = node): RunningCli {
    return clis.start(['sync', PREFIX, target, '--url', on.url, '--json']);
  }

  /** Restarts sync on `target`, waits until DIR is the node's keys under the prefix and the state is at the head, and kills it. */
  async function restartAndCompare(target: string, deletedAt: Map<string, number>, on = node): Promise<void> {
    const sync = startSync(target, on);
    const { seq: head } = await new NodeClient(on.url).status();
    const keys = await nodeKeys(on);
    await until(
      () => sync.child.exitCode !== null || ((savedSeq(target) ?? 0) >= head && walk(target).files.size === keys.size),
      () => `the restarted sync did not reach seq ${head} with ${keys.size} files: state ${savedSeq(target)}, ${walk(target).files.size} files; stderr: ${sync.stderr()}`,
      25_000,
    );
    assert.equal(sync.child.exitCode, null, `the restarted sync exited: ${sync.stderr()}`);
    const { files, temporary } = walk(target);
    assert.deepEqual(temporary, [], 'no temporary file is left');
    assert.deepEqual(new Map([...files].sort()), new Map([...keys].map(([path, { value }]) => [path, value] as const).sort()), 'DIR is the node\'s keys');
    for (const path of deletedAt.keys()) assert.ok(!files.has(path));
    await stopProcess(sync.child);
  }

  test('crash sync: killed in its first snapshot, then in a resumed one: the restart completes DIR', async () => {
    // 1,500 keys in three entries, then more than the log keeps: a first sync gets them as a snapshot, one fsynced
    // file at a time, which leaves time to kill it with part of them written.
    for (let start = 0; start < 1_500; start += 500)
      await client.txn({ success: Array.from({ length: 500 }, (_, i) => ({ op: 'put' as const, key: `${PREFIX}a/${start + i}`, value: `${start + i}:${VALUE}` })) });
    for (let i = 0; i < 8; i++) await client.put(`${PREFIX}pad/${i}`, VALUE);
    const target = join(dir, 'first');
    const deletedAt = new Map<string, number>();
    const first = startSync(target);
    await until(
      () => existsSync(join(target, 'a')) && readdirSync(join(target, 'a')).length >= 100,
      () => `sync wrote nothing; stderr: ${first.stderr()}`,
      20_000,
    );
    await stopProcess(first.child, 'SIGKILL');
    const written = existsSync(join(target, 'a')) ? readdirSync(join(target, 'a')).length : 0;
    assert.ok(written < 1_500, `the kill fell inside the snapshot (${written} files written)`);
    assertStateHonest(target, await nodeKeys(node), deletedAt, 'first snapshot');
    await restartAndCompare(target, deletedAt);

    // Stopped, it falls behind the retained log: changes (puts and deletes) and a resumed sync gets a snapshot.
    for (let i = 0; i < 200; i++) {
      const { seq } = await client.delete(`${PREFIX}a/${i}`);
      deletedAt.set(`a/${i}`, seq);
    }
    await client.txn({ success: Array.from({ length: 1_000 }, (_, i) => ({ op: 'put' as const, key: `${PREFIX}b/${i}`, value: `${i}:${VALUE}` })) });
    for (let i = 0; i < 8; i++) await client.put(`${PREFIX}pad2/${i}`, VALUE);
    const resumed = startSync(target);
    await until(
      () => existsSync(join(target, 'b')) && readdirSync(join(target, 'b')).length >= 100,
      () => `the resumed sync wrote nothing; stderr: ${resumed.stderr()}`,
      20_000,
    );
    await stopProcess(resumed.child, 'SIGKILL');
    assert.ok(readdirSync(join(target, 'b')).length < 1_000, 'the kill fell inside the resumed snapshot');
    assertStateHonest(target, await nodeKeys(node), deletedAt, 'resumed snapshot');
    await restartAndCompare(target, deletedAt);
  });

  test('crash sync: killed at random moments while it applies entries, the state file never runs ahead of DIR', async () => {
    // A node that keeps its whole log: a restarted sync resumes from the log, entry by entry.
    const full = await startServe(join(dir, 'full-log'));
    others.push(full);
    const client = new NodeClient(full.url);
    const target = join(dir, 'entries');
    const deletedAt = new Map<string, number>();
    await client.put(`${PREFIX}e/start`, 'start');
    let sync = startSync(target, full);
    await until(() => existsSync(join(target, 'e', 'start')), () => `sync did not start; stderr: ${sync.stderr()}`, 20_000);
    let writing = true;
    let n = 0;
    // A writer: small transactions of fresh keys, and deletes of older ones (never written again).
    let writerFailed: Error | undefined;
    const writer = (async () => {
      while (writing) {
        const keys = Array.from({ length: 5 }, (_, i) => `${PREFIX}e/${n}/${i}`);
        await client.txn({ success: keys.map((key) => ({ op: 'put' as const, key, value: `${key}=${VALUE}` })) });
        if (n >= 4) {
          const { seq } = await client.delete(`${PREFIX}e/${n - 4}/0`);
          deletedAt.set(`e/${n - 4}/0`, seq);
        }
        n++;
        // Paced, so that sync (one fsynced file per key) keeps up between the kills.
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })().catch((error: unknown) => {
      writerFailed = error as Error;
    });
    try {
      for (let kill = 0; kill < 4; kill++) {
        const before = savedSeq(target) ?? 0;
        await until(
          () => {
            if (writerFailed !== undefined) throw writerFailed;
            return (savedSeq(target) ?? 0) > before;
          },
          () => `sync did not move past seq ${before} (${n} transactions written, writer ${String(writerFailed)}); stdout: ${sync.stdout().slice(-2000)}; stderr: ${sync.stderr()}`,
          20_000,
        );
        await new Promise((resolve) => setTimeout(resolve, 50 + Math.random() * 300));
        await stopProcess(sync.child, 'SIGKILL');
        assertStateHonest(target, await nodeKeys(full), deletedAt, `kill ${kill + 1}`);
        sync = startSync(target, full);
      }
    } finally {
      writing = false;
      await writer;
    }
    await stopProcess(sync.child, 'SIGKILL');
    await restartAndCompare(target, deletedAt, full);
  });
});

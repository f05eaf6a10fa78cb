/**
 * `node dist/bench/lmdb-flags-bench.js`: what two LMDB flags the store does not use would save, measured on lmdb-js
 * directly with the store's other options (docs/performance.md, "Two LMDB flags measured and not taken").
 *
 * 1. `useWritemap` (MDB_WRITEMAP) for a replica's transaction per entry: --envs environments in this process (a
 *    benchmark host holds about 125 replicas), `noSync` as replicas run, each transaction a 300-byte put in `kv`, one
 *    in `log` and one in `meta` (what an applied entry writes). Prints CPU µs per transaction, user and system.
 *    And the same transaction without its `meta` put: what writing the head in another sub-database than the entry's
 *    costs (docs/performance.md, "The per-entry meta records, measured and not taken").
 * 2. `noMetaSync` (MDB_NOMETASYNC) for the root's durable commit: one environment synced as the root's is, each commit
 *    50 puts of 256 B (a group commit of 50 requests). Prints commits per second.
 *
 * Options: --runs N (default 5), --envs E (default 100), --seconds S per durable run (default 2). Data directories go
 * under --dir (default the OS temp dir; give a directory on the disk the node would use, since sync cost is the disk's).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { open, type RootDatabase } from 'lmdb';
import { seqKey } from '../src/store/records.js';
import { positiveInteger, readOptions } from './support/options.js';
import { formatSummary, summarize } from './support/stats.js';

const { values, RUNS, ENVS, SECONDS } = readOptions('bench:lmdb-flags', () => {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' }, envs: { type: 'string', default: '100' }, seconds: { type: 'string', default: '2' }, dir: { type: 'string', default: tmpdir() } } });
  return { values, RUNS: positiveInteger('runs', values.runs, 1000), ENVS: positiveInteger('envs', values.envs, 10_000), SECONDS: positiveInteger('seconds', values.seconds, 3600) };
});
const VALUE = Buffer.alloc(300, 1);
const ENTRIES_PER_RUN = 200;

function openEnv(options: { noSync?: boolean; useWritemap?: boolean; noMetaSync?: boolean }): { env: RootDatabase; path: string } {
  const path = mkdtempSync(join(values.dir, 'mercury-lmdb-flags-'));
  // The store's options (src/store/store.ts), but for the flag under test; a small map, since writemap sizes the file to it.
  const env = open({ path, maxDbs: 8, overlappingSync: false, eventTurnBatching: false, mapSize: 1 << 30, ...options });
  return { env, path };
}

/** CPU µs per replica transaction (user, system) over ENVS environments, `useWritemap` and the `meta` put as given. */
function replicaTransactions(useWritemap: boolean, withMeta = true): { total: number; system: number } {
  const stores = Array.from({ length: ENVS }, () => {
    const { env, path } = openEnv({ noSync: true, useWritemap });
    const db = (name: string) => env.openDB<Buffer, Buffer>({ name, encoding: 'binary', keyEncoding: 'binary' });
    return { env, path, kv: db('kv'), log: db('log'), meta: db('meta') };
  });
  const before = process.cpuUsage();
  for (let seq = 1; seq <= ENTRIES_PER_RUN; seq++) {
    for (const store of stores) {
      store.env.transactionSync(() => {
        store.kv.putSync(Buffer.from(`key-${seq % 50}`), VALUE);
        store.log.putSync(seqKey(seq), VALUE, { append: true });
        if (withMeta) store.meta.putSync(Buffer.from('head'), seqKey(seq));
      });
    }
  }
  const used = process.cpuUsage(before);
  for (const store of stores) store.env.close().catch(() => undefined);
  setTimeout(() => stores.forEach((store) => rmSync(store.path, { recursive: true, force: true })), 100).unref();
  const transactions = ENTRIES_PER_RUN * ENVS;
  return { total: (used.user + used.system) / transactions, system: used.system / transactions };
}

/** Durable commits of 50 puts per second, `noMetaSync` as given. */
function durableCommits(noMetaSync: boolean): number {
  const { env, path } = openEnv({ noMetaSync });
  const kv = env.openDB<Buffer, Buffer>({ name: 'kv', encoding: 'binary', keyEncoding: 'binary' });
  const started = performance.now();
  let commits = 0;
  while (performance.now() - started < SECONDS * 1000) {
    env.transactionSync(() => {
      for (let i = 0; i < 50; i++) kv.putSync(Buffer.from(`key-${(commits * 50 + i) % 10_000}`), VALUE.subarray(0, 256));
    });
    commits++;
  }
  const perSecond = commits / ((performance.now() - started) / 1000);
  env.close().catch(() => undefined);
  setTimeout(() => rmSync(path, { recursive: true, force: true }), 100).unref();
  return perSecond;
}

const plain: number[] = [];
const plainSystem: number[] = [];
const writemap: number[] = [];
const writemapSystem: number[] = [];
const noMeta: number[] = [];
const noMetaSystem: number[] = [];
const synced: number[] = [];
const metaUnsynced: number[] = [];
// Alternating, so that a drift of the machine's speed falls on both sides.
for (let run = 0; run < RUNS; run++) {
  const off = replicaTransactions(false);
  const on = replicaTransactions(true);
  plain.push(off.total);
  plainSystem.push(off.system);
  writemap.push(on.total);
  writemapSystem.push(on.system);
  const withoutMeta = replicaTransactions(false, false);
  noMeta.push(withoutMeta.total);
  noMetaSystem.push(withoutMeta.system);
  synced.push(durableCommits(false));
  metaUnsynced.push(durableCommits(true));
  await new Promise((resolve) => setTimeout(resolve, 200));
}
process.stdout.write(`replica transaction, ${ENVS} environments, noSync (CPU µs per transaction; ${RUNS} runs of ${ENTRIES_PER_RUN} entries each):\n`);
process.stdout.write(`  LMDB's write path:  ${formatSummary(summarize(plain), 'µs')} (system ${formatSummary(summarize(plainSystem), 'µs')})\n`);
process.stdout.write(`  useWritemap:        ${formatSummary(summarize(writemap), 'µs')} (system ${formatSummary(summarize(writemapSystem), 'µs')})\n`);
process.stdout.write(`  without the meta put: ${formatSummary(summarize(noMeta), 'µs')} (system ${formatSummary(summarize(noMetaSystem), 'µs')})\n`);
process.stdout.write(`durable commits of 50 puts per second (${RUNS} runs of ${SECONDS} s, under ${values.dir}):\n`);
process.stdout.write(`  synced meta page:   ${formatSummary(summarize(synced), '/s')}\n`);
process.stdout.write(`  noMetaSync:         ${formatSummary(summarize(metaUnsynced), '/s')}\n`);

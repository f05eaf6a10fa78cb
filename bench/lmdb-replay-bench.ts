/**
 * `node dist/bench/lmdb-replay-bench.js`: what lmdb-js alone, with the store's options, costs for the replay that
 * `bench:peers` workload 7 times (issue 12, target 5: 300,000 replayed writes/s), so that the replica's figure can be
 * read against the floor its storage sets (docs/performance.md, "Replay of missed entries: the storage floor").
 *
 * The workload's shape: an environment holding --keys keys (`boot/0` .. `boot/N-1`, 256 B values, a 20-byte record
 * header as the store writes) whose first quarter is rewritten in entries of --entry-keys keys, one write
 * transaction per entry (what a replica does when each turn brings one such entry), each key read first (the store
 * carries createSeq and version forward) and the entry's log record appended. `noSync`, as replicas run.
 *
 * Variants, alternating within each run: the workload's own keys; the same keys zero-padded (`boot/0000042`), whose
 * byte order is their number order, so an entry's keys share leaf pages; and `useWritemap` (MDB_WRITEMAP, not taken:
 * see "Two LMDB flags measured and not taken"). Prints writes/s (keys rewritten per second of the loop) and CPU.
 *
 * Options: --runs N (default 3), --keys N (default 400000), --entry-keys N (default 2000), --dir (default OS temp).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { open } from 'lmdb';
import { seqKey } from '../src/store/records.js';
import { positiveInteger, readOptions } from './support/options.js';
import { formatSummary, summarize } from './support/stats.js';

const { values, RUNS, KEYS, ENTRY_KEYS } = readOptions('bench:lmdb-replay', () => {
  const { values } = parseArgs({
    options: { runs: { type: 'string', default: '3' }, keys: { type: 'string', default: '400000' }, 'entry-keys': { type: 'string', default: '2000' }, dir: { type: 'string', default: tmpdir() } },
  });
  return { values, RUNS: positiveInteger('runs', values.runs, 1000), KEYS: positiveInteger('keys', values.keys, 100_000_000), ENTRY_KEYS: positiveInteger('entry-keys', values['entry-keys'], 1_000_000) };
});
/** A key record: the store's 20-byte header (crc, createSeq, modSeq, version) and a 256-byte value. */
const RECORD = Buffer.alloc(20 + 256, 1);
const FILL_TRANSACTION_KEYS = 20_000;

interface Variant {
  readonly name: string;
  readonly key: (i: number) => Buffer;
  readonly useWritemap: boolean;
}

const workloadKey = (i: number): Buffer => Buffer.from(`boot/${i}`);
const VARIANTS: readonly Variant[] = [
  { name: "the workload's keys", key: workloadKey, useWritemap: false },
  { name: 'zero-padded keys', key: (i) => Buffer.from(`boot/${String(i).padStart(7, '0')}`), useWritemap: false },
  { name: "the workload's keys, useWritemap", key: workloadKey, useWritemap: true },
];

/** Rewrites the first quarter of the keys; resolves writes/s and CPU µs per write (user + system, system). */
async function replay(variant: Variant): Promise<{ writesPerSecond: number; cpuUs: number; systemUs: number }> {
  const path = mkdtempSync(join(values.dir, 'mercury-lmdb-replay-'));
  // The store's options (src/store/store.ts) as a replica opens them; a map that fits, since writemap sizes the file to it.
  const env = open({ path, maxDbs: 8, noSync: true, overlappingSync: false, eventTurnBatching: false, mapSize: 4 << 30, useWritemap: variant.useWritemap });
  const kv = env.openDB<Buffer, Buffer>({ name: 'kv', encoding: 'binary', keyEncoding: 'binary' });
  const log = env.openDB<Buffer, Buffer>({ name: 'log', encoding: 'binary', keyEncoding: 'binary' });
  for (let start = 0; start < KEYS; start += FILL_TRANSACTION_KEYS) {
    env.transactionSync(() => {
      for (let i = start; i < Math.min(KEYS, start + FILL_TRANSACTION_KEYS); i++) kv.putSync(variant.key(i), RECORD);
    });
  }
  const rewritten = Math.floor(KEYS / 4);
  const logRecord = Buffer.alloc(ENTRY_KEYS * (RECORD.length + 16), 2);
  let seq = 0;
  const started = performance.now();
  const before = process.cpuUsage();
  for (let start = 0; start < rewritten; start += ENTRY_KEYS) {
    env.transactionSync(() => {
      log.putSync(seqKey(++seq), logRecord, { append: true });
      for (let i = start; i < Math.min(rewritten, start + ENTRY_KEYS); i++) {
        const key = variant.key(i);
        if (kv.getBinaryFast(key) === undefined) throw new Error(`key ${i} is missing`);
        kv.putSync(key, RECORD);
      }
    });
  }
  const used = process.cpuUsage(before);
  const seconds = (performance.now() - started) / 1000;
  // A timer turn before close: lmdb-js can hang closing in the turn of a transactionSync (see the README's pitfalls).
  await new Promise((resolve) => setTimeout(resolve, 10));
  await env.close();
  rmSync(path, { recursive: true, force: true });
  return { writesPerSecond: rewritten / seconds, cpuUs: (used.user + used.system) / rewritten, systemUs: used.system / rewritten };
}

async function main(): Promise<void> {
  console.log(`lmdb-js alone: ${KEYS.toLocaleString('en-US')} keys, the first quarter rewritten in entries of ${ENTRY_KEYS} keys, ${RUNS} runs`);
  const results = new Map(VARIANTS.map((variant) => [variant.name, [] as Awaited<ReturnType<typeof replay>>[]]));
  for (let run = 0; run < RUNS; run++) {
    for (const variant of VARIANTS) {
      const result = await replay(variant);
      results.get(variant.name)!.push(result);
      console.log(`  run ${run + 1} ${variant.name}: ${Math.round(result.writesPerSecond).toLocaleString('en-US')} writes/s, ${result.cpuUs.toFixed(2)} µs CPU per write (${result.systemUs.toFixed(2)} system)`);
    }
  }
  for (const [name, runs] of results) {
    console.log(`${name}: ${formatSummary(summarize(runs.map((r) => r.writesPerSecond)), 'writes/s')}; ${formatSummary(summarize(runs.map((r) => r.cpuUs)), 'µs CPU per write')}`);
  }
}

await main();

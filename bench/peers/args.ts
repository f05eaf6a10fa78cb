/**
 * Options of `npm run bench:peers`, validated once into a frozen object; a bad option names itself and its rule.
 */
import { parseArgs } from 'node:util';
import { positiveInteger, UsageError } from '../support/options.js';
import { SYSTEM_NAMES, type SystemName } from './system.js';

/** etcd refuses a txn of more than 128 ops (its --max-txn-ops default), so batches stay within it for every system. */
export const ETCD_TXN_OPS_MAX = 128;

export const WORKLOAD_IDS = [1, 2, 3, 4, 5, 6, 7] as const;
export type WorkloadId = (typeof WORKLOAD_IDS)[number];
/** The order of priority, which is also the order in which a full run measures them. */
export const WORKLOAD_ORDER_DEFAULT: readonly WorkloadId[] = [1, 3, 2, 4, 6, 5, 7];

export interface PeersOptions {
  readonly help: boolean;
  readonly install: boolean;
  readonly workloads: readonly WorkloadId[];
  readonly systems: readonly SystemName[];
  readonly runs: number;
  readonly seconds: number;
  readonly clients: number;
  readonly valueBytes: number;
  readonly keys: number;
  readonly batchOps: number;
  readonly writeRate: number;
  readonly readers: number;
  readonly watchers: number;
  readonly watchConnections: number;
  readonly watchWrites: number;
  /** Keys the primary holds in workload 7 (a replica's bootstrap). */
  readonly bootstrapKeys: number;
  /** Fan-out per level of the replication tree: [4, 16] is a root with 4 children and 16 grandchildren. */
  readonly tree: readonly number[];
  /** Workload 5's Mercury tree runs with TLS (HTTPS, wss, mutual TLS between nodes): the cost of TLS, on versus off. */
  readonly tls: boolean;
  /** Workload 5: the Mercury tree runs with auth required (replicate tokens in HELLO, tokens on writes and watches). */
  readonly auth: boolean;
  /** Mercury signs every entry and its tree replicas verify (`--sign`); otherwise the root runs `--unsigned`. */
  readonly sign: boolean;
  readonly output: string;
  readonly chart: string;
}

export { UsageError };

export const USAGE = `usage: npm run bench:peers -- [options]

Side-by-side benchmarks of Mercury, etcd and Redis on this machine. Writes BENCHMARKS.md and its chart.

  --workloads LIST      which workloads, in the order given (default 1,3,2,4,6,5,7):
                          1 durable single-key writes   2 batched writes      3 point reads
                          4 read latency under writes   5 replication tree    6 watch fan-out
                          7 bootstrap and catch-up of a replica
  --systems LIST        mercury,etcd,redis (default all three)
  --runs N              runs per system and workload, alternating between systems (default 5, at least 1)
  --seconds S           duration of one run (default 3)
  --clients N           concurrent clients for workloads 1-3 (default 64)
  --value-bytes N       value size (default 256)
  --keys N              key space written and read (default 10000)
  --batch-ops N         keys per batch in workload 2, at most ${ETCD_TXN_OPS_MAX} (etcd's txn limit; default ${ETCD_TXN_OPS_MAX})
  --write-rate N        writes/s offered in workload 4 (default 10000)
  --readers N           concurrent readers in workload 4 (default 16)
  --watchers N          watchers in workload 6 (default 1024)
  --watch-connections N connections the watchers share in workload 6 (default 16)
  --watch-writes N      writes per run in workloads 5 and 6, spread over the run (default 200)
  --bootstrap-keys N    keys the primary holds in workload 7 (default 400000)
  --tree LIST           fan-out per level below the root in workload 5 (default 4,16: 1 -> 4 -> 16)
  --tls                 workload 5's Mercury tree with TLS everywhere (HTTPS, wss, mutual TLS replication)
  --auth                workload 5: Mercury's tree with auth required (tokens on every request, watch and HELLO)
  --sign                Mercury's root signs every entry and its tree replicas verify (default: unsigned)
  --output FILE         results page (default BENCHMARKS.md)
  --chart FILE          ratio chart (default docs/benchmarks-ratios.svg)
  --install             install missing etcd/Redis with apt-get first
  --help                this text

Environment: BENCH_PROFILE=DIR runs every Node process the harness starts (Mercury's nodes) under --cpu-prof into DIR;
read a profile with node dist/bench/profile-summary.js FILE.`;

function positiveNumber(name: string, text: string): number {
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value) || value <= 0) throw new UsageError(`--${name} must be a number above 0, got "${text}"`);
  return value;
}

function list(name: string, text: string): string[] {
  const items = text.split(',').map((item) => item.trim());
  if (items.some((item) => item === '')) throw new UsageError(`--${name} must be a comma-separated list without empty items, got "${text}"`);
  if (new Set(items).size !== items.length) throw new UsageError(`--${name} names an item twice: "${text}"`);
  return items;
}

export function parsePeersArgs(argv: readonly string[]): PeersOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        help: { type: 'boolean', default: false },
        install: { type: 'boolean', default: false },
        workloads: { type: 'string', default: WORKLOAD_ORDER_DEFAULT.join(',') },
        systems: { type: 'string', default: SYSTEM_NAMES.join(',') },
        runs: { type: 'string', default: '5' },
        seconds: { type: 'string', default: '3' },
        clients: { type: 'string', default: '64' },
        'value-bytes': { type: 'string', default: '256' },
        keys: { type: 'string', default: '10000' },
        'batch-ops': { type: 'string', default: String(ETCD_TXN_OPS_MAX) },
        'write-rate': { type: 'string', default: '10000' },
        readers: { type: 'string', default: '16' },
        watchers: { type: 'string', default: '1024' },
        'watch-connections': { type: 'string', default: '16' },
        'watch-writes': { type: 'string', default: '200' },
        'bootstrap-keys': { type: 'string', default: '400000' },
        tree: { type: 'string', default: '4,16' },
        tls: { type: 'boolean', default: false },
        auth: { type: 'boolean', default: false },
        sign: { type: 'boolean', default: false },
        output: { type: 'string', default: 'BENCHMARKS.md' },
        chart: { type: 'string', default: 'docs/benchmarks-ratios.svg' },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const v = parsed.values;
  const workloads = list('workloads', v.workloads).map((item) => {
    const id = Number(item);
    if (!(WORKLOAD_IDS as readonly number[]).includes(id)) throw new UsageError(`--workloads items must be within 1..7, got "${item}"`);
    return id as WorkloadId;
  });
  const systems = list('systems', v.systems).map((item) => {
    if (!(SYSTEM_NAMES as readonly string[]).includes(item)) throw new UsageError(`--systems items must be among ${SYSTEM_NAMES.join(', ')}, got "${item}"`);
    return item as SystemName;
  });
  if (!systems.includes('mercury')) throw new UsageError('--systems must include mercury: every figure is a ratio against it');
  const tree = list('tree', v.tree).map((item) => positiveInteger('tree', item, 64));
  const options: PeersOptions = {
    help: v.help,
    install: v.install,
    workloads,
    systems,
    runs: positiveInteger('runs', v.runs, 1000),
    seconds: positiveNumber('seconds', v.seconds),
    clients: positiveInteger('clients', v.clients, 4096),
    valueBytes: positiveInteger('value-bytes', v['value-bytes'], 1024 * 1024),
    keys: positiveInteger('keys', v.keys, 10_000_000),
    batchOps: positiveInteger('batch-ops', v['batch-ops'], ETCD_TXN_OPS_MAX),
    writeRate: positiveInteger('write-rate', v['write-rate'], 1_000_000),
    readers: positiveInteger('readers', v.readers, 4096),
    watchers: positiveInteger('watchers', v.watchers, 100_000),
    watchConnections: positiveInteger('watch-connections', v['watch-connections'], 10_000),
    watchWrites: positiveInteger('watch-writes', v['watch-writes'], 1_000_000),
    bootstrapKeys: positiveInteger('bootstrap-keys', v['bootstrap-keys'], 10_000_000),
    tree,
    tls: v.tls,
    auth: v.auth,
    sign: v.sign,
    output: v.output,
    chart: v.chart,
  };
  if (options.batchOps > options.keys) throw new UsageError('--batch-ops must not exceed --keys: a batch writes distinct keys');
  if (options.watchConnections > options.watchers) throw new UsageError('--watch-connections must not exceed --watchers');
  return Object.freeze(options);
}

/** The command line that reproduces a run, for the results page. */
export function commandLine(argv: readonly string[]): string {
  const quoted = argv.map((arg) => (/^[\w,./=:-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`));
  return quoted.length === 0 ? 'npm run bench:peers' : `npm run bench:peers -- ${quoted.join(' ')}`;
}

/**
 * `npm run bench:builds-ab -- --builds DIR,DIR[,DIR...]`: node CPU per durable PUT of two or more builds of Mercury,
 * measured side by side, to tell whether a change moved it.
 *
 * Each DIR is a built checkout (its `dist/bin/mercury.js`, or `dist/src/cli/main.js` for builds before the CLI was
 * bundled; make one with `git worktree add /tmp/base COMMIT`, link
 * node_modules into it and `npm run build` there). One node of each build runs at once, each on its own data
 * directory; every round measures each in turn for --seconds with C concurrent loops of single-key PUTs of 256 B
 * (this checkout's client for all of them, over the wire port, or HTTP with --workload put), in an order rotated and
 * reversed from round to round. The figure is the node process's CPU per PUT (from /proc), and for each build after the
 * first, the median over rounds of its ratio to the first build's figure in the same round, with how many rounds it
 * was higher. On a machine whose speed drifts by tens of percent within a minute, runs of separate invocations measure
 * the drift; the ratio of two measurements seconds apart cancels most of it. Give the same DIR twice to see the
 * noise floor of a ratio (it found 1.05 beside 1.17 for a real regression while other work ran).
 *
 * With --gc the nodes run with `--trace-gc`, and each build's scavenges per 1,000 PUTs and full (mark-compact)
 * collections are shown: a change that makes objects outlive a scavenge shows there first (record of 2026-12-07,
 * docs/performance.md "A getter on the write view").
 *
 * Options: --builds DIR,DIR,... (required, at least two), --rounds N (default 12), --seconds S per measurement
 * (default 2), --clients C (default 64), --workload wire-put|put (default wire-put), --gc.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { connect } from '../src/client/index.js';
import { processCpuMicros } from './peers/processes.js';
import { positiveInteger, readOptions, UsageError } from './support/options.js';
import { formatSummary, median, summarize } from './support/stats.js';

const WORKLOADS = ['wire-put', 'put'];
const { BUILDS, ROUNDS, SECONDS, CLIENTS, WORKLOAD, GC } = readOptions('bench:builds-ab', () => {
  const { values } = parseArgs({
    options: {
      builds: { type: 'string' },
      rounds: { type: 'string', default: '12' },
      seconds: { type: 'string', default: '2' },
      clients: { type: 'string', default: '64' },
      workload: { type: 'string', default: 'wire-put' },
      gc: { type: 'boolean', default: false },
    },
  });
  if (values.builds === undefined) throw new UsageError('--builds DIR,DIR[,...] is required: two or more built checkouts to compare');
  const builds = values.builds.split(',').map((dir) => resolve(dir));
  if (builds.length < 2) throw new UsageError('--builds needs at least two directories, comma-separated');
  for (const dir of builds) if (cliOf(dir) === undefined) throw new UsageError(`${dir} has no dist/bin/mercury.js: run npm run build there first`);
  if (!WORKLOADS.includes(values.workload)) throw new UsageError(`--workload takes ${WORKLOADS.join(' or ')}, got "${values.workload}"`);
  return {
    BUILDS: builds,
    ROUNDS: positiveInteger('rounds', values.rounds, 1000),
    SECONDS: positiveInteger('seconds', values.seconds, 600),
    CLIENTS: positiveInteger('clients', values.clients, 4096),
    WORKLOAD: values.workload,
    GC: values.gc,
  };
});
const VALUE = Buffer.alloc(256, 'v');

/** The build's `mercury` program: the bundle, or the CLI module of builds from before it (2026-12-06). */
function cliOf(dir: string): string | undefined {
  return ['dist/bin/mercury.js', 'dist/src/cli/main.js'].map((path) => join(dir, path)).find((path) => existsSync(path));
}
const KEYSPACE = 10_000;

interface BuildNode {
  readonly dir: string;
  readonly dataDir: string;
  readonly child: ChildProcess;
  readonly url: string;
  readonly wireUrl: string;
  readonly cpuPerPut: number[];
  puts: number;
  /** From --trace-gc's lines on the node's stdout (with --gc). */
  scavenges: number;
  fullCollections: number;
}

async function startBuild(dir: string): Promise<BuildNode> {
  const dataDir = mkdtempSync(join(tmpdir(), 'mercury-builds-ab-'));
  const nodeArgs = GC ? ['--trace-gc'] : [];
  const child = spawn(process.execPath, [...nodeArgs, cliOf(dir)!, 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--auth', 'off', '--unsigned'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const partial: Partial<BuildNode> & { scavenges: number; fullCollections: number } = { scavenges: 0, fullCollections: 0 };
  const [url, wireUrl] = await new Promise<[string, string]>((resolveUrls, reject) => {
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      const text = chunk.toString();
      partial.scavenges += text.match(/: Scavenge /g)?.length ?? 0;
      partial.fullCollections += text.match(/: Mark-Compact /g)?.length ?? 0;
      if (output.length < 65_536) output += text;
      const match = /listening on (\S+)(?: replication \S+)?(?: wire (\S+))?.*\n/.exec(output);
      if (match !== null && match[2] !== undefined) resolveUrls([match[1]!, match[2]]);
    });
    child.once('exit', (code) => reject(new Error(`${dir}: mercury serve exited with ${code} before listening: ${output.slice(0, 2000)}`)));
  });
  return Object.assign(partial, { dir, dataDir, child, url, wireUrl, cpuPerPut: [], puts: 0 });
}

function cpuMicros(node: BuildNode): number {
  return processCpuMicros(node.child.pid!, (path) => readFileSync(path, 'utf8'));
}

/** CLIENTS loops of PUTs for SECONDS against one node; its CPU per PUT over them. */
async function measure(node: BuildNode): Promise<void> {
  const client = connect(WORKLOAD === 'wire-put' ? node.wireUrl : node.url);
  try {
    await client.put('bench/warm', VALUE);
    const before = cpuMicros(node);
    const deadline = performance.now() + SECONDS * 1000;
    let puts = 0;
    await Promise.all(
      Array.from({ length: CLIENTS }, async (_, loop) => {
        for (let i = 0; performance.now() < deadline; i++, puts++) await client.put(`bench/${(loop * 7919 + i) % KEYSPACE}`, VALUE);
      }),
    );
    node.cpuPerPut.push((cpuMicros(node) - before) / puts);
    node.puts += puts;
  } finally {
    client.close();
  }
}

async function stop(node: BuildNode): Promise<void> {
  if (node.child.exitCode === null) {
    const exited = new Promise((resolveExit) => node.child.once('exit', resolveExit));
    node.child.kill('SIGTERM');
    await exited;
  }
  rmSync(node.dataDir, { recursive: true, force: true });
}

const nodes: BuildNode[] = [];
try {
  for (const dir of BUILDS) nodes.push(await startBuild(dir));
  console.log(`mercury bench:builds-ab: ${BUILDS.length} builds side by side, ${ROUNDS} rounds x ${SECONDS} s each, ${WORKLOAD}, ${CLIENTS} loops, 256 B values, node ${process.version}`);
  for (let round = 0; round < ROUNDS; round++) {
    const order = nodes.map((_, i) => nodes[(i + round) % nodes.length]!);
    if (round % 2 === 1) order.reverse();
    for (const node of order) await measure(node);
  }
  const base = nodes[0]!;
  for (const [index, node] of nodes.entries()) {
    const gc = GC ? `; ${((node.scavenges * 1000) / node.puts).toFixed(2)} scavenges per 1,000 PUTs, ${node.fullCollections} full collections` : '';
    console.log(`build ${index + 1} ${node.dir}\n  node CPU per PUT  ${formatSummary(summarize(node.cpuPerPut), 'µs')}${gc}`);
    if (node === base) continue;
    const ratios = node.cpuPerPut.map((cpu, round) => cpu / base.cpuPerPut[round]!);
    console.log(`  against build 1   ${median(ratios).toFixed(3)}x (median of ${ratios.length} rounds' ratios; higher in ${ratios.filter((ratio) => ratio > 1).length})`);
  }
} finally {
  await Promise.all(nodes.map(stop));
}

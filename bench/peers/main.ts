/**
 * `npm run bench:peers`: Mercury side by side with etcd and Redis on this machine. See `--help` and BENCHMARKS.md.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { dirname, relative, resolve } from 'node:path';
import { USAGE, UsageError, commandLine, parsePeersArgs, type PeersOptions } from './args.js';
import { renderRatioChart } from './chart.js';
import { findExecutable, findMissing, missingMessage, runInstall } from './prerequisites.js';
import { ProcessGroup, stopOnExit } from './processes.js';
import { chartBars, comparisons, renderReport } from './report.js';
import { ADAPTERS } from './systems/index.js';
import { WORKLOADS, WORKLOAD_TITLES } from './workloads/index.js';
import type { WorkloadResult } from './workload.js';

const log = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

function machineDescription(): string {
  let distribution = 'Linux';
  try {
    distribution = /^PRETTY_NAME="?([^"\n]+)"?$/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? distribution;
  } catch {
    // Not Linux: the kernel release alone.
  }
  const processors = cpus();
  return `${processors.length} x ${processors[0]?.model.trim() ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, ${distribution} (kernel ${release()})`;
}

/** Exit code 2 for usage, 1 for a missing peer or a failed run. */
async function main(argv: readonly string[]): Promise<number> {
  let options: PeersOptions;
  try {
    options = parsePeersArgs(argv);
  } catch (error) {
    if (error instanceof UsageError) {
      log(`bench:peers: ${error.message}\n\n${USAGE}`);
      return 2;
    }
    throw error;
  }
  if (options.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const adapters = options.systems.map((name) => ADAPTERS[name]);
  const isRoot = process.getuid?.() === 0;
  let missing = findMissing(adapters.flatMap((adapter) => adapter.requires), (binary) => findExecutable(binary) !== undefined);
  if (missing.missing.length > 0 && options.install) {
    if (!runInstall(missing.packages, isRoot)) log('bench:peers: the install failed');
    missing = findMissing(adapters.flatMap((adapter) => adapter.requires), (binary) => findExecutable(binary) !== undefined);
  }
  if (missing.missing.length > 0) {
    log(missingMessage(missing, isRoot));
    return 1;
  }

  const group = new ProcessGroup();
  const removeHandlers = stopOnExit(group, log);
  const loadAverageStart = loadavg();
  const dateIso = new Date().toISOString();
  const results: WorkloadResult[] = [];
  let failed = 0;
  try {
    log(`bench:peers: ${options.systems.join(', ')}; workloads ${options.workloads.join(', ')}; ${options.runs} runs x ${options.seconds} s; load average ${loadAverageStart.map((value) => value.toFixed(2)).join(' ')}`);
    for (const id of options.workloads) {
      const workload = WORKLOADS[id];
      if (workload === undefined) {
        results.push({ id, title: WORKLOAD_TITLES[id], description: '', metrics: [], subjects: [], notes: [], skipped: 'not implemented in this harness yet.' });
        log(`workload ${id} (${WORKLOAD_TITLES[id]}): not implemented yet, skipped`);
        continue;
      }
      log(`workload ${id}: ${workload.title}`);
      const started = performance.now();
      try {
        results.push(await workload.run({ options, adapters, group, log }));
        log(`workload ${id}: done in ${((performance.now() - started) / 1000).toFixed(0)} s`);
      } catch (error) {
        // One workload's failure is reported on the page and in the exit code; the others still run.
        failed++;
        const message = error instanceof Error ? error.message : String(error);
        log(`workload ${id}: FAILED: ${error instanceof Error ? (error.stack ?? message) : message}`);
        results.push({ id, title: workload.title, description: '', metrics: [], subjects: [], notes: [], skipped: `the run failed: ${message.split('\n')[0]}` });
      }
    }
  } finally {
    await group.stopAll();
    removeHandlers();
  }

  const versions = await Promise.all(adapters.map((adapter) => adapter.version()));
  const outputPath = resolve(options.output);
  const chartPath = resolve(options.chart);
  const found = comparisons(results);
  mkdirSync(dirname(chartPath), { recursive: true });
  writeFileSync(chartPath, renderRatioChart('Mercury compared with etcd and Redis', chartBars(found)));
  const page = renderReport(
    {
      dateIso,
      command: commandLine(argv),
      machine: machineDescription(),
      node: `Node ${process.version}`,
      versions,
      settings: adapters.map((adapter) => `**${adapter.title}:** ${adapter.settings}. Client: ${adapter.clientDescription}.`),
      loadAverageStart,
      loadAverageEnd: loadavg(),
      runs: options.runs,
      seconds: options.seconds,
      chartPath: relative(dirname(outputPath), chartPath),
    },
    results,
  );
  mkdirSync(dirname(outputPath), { recursive: true });
  writeFileSync(outputPath, page);
  // The raw per-run figures, next to the chart, for anyone who wants other statistics than the page's.
  writeFileSync(resolve(dirname(chartPath), 'benchmarks-results.json'), `${JSON.stringify({ dateIso, command: commandLine(argv), versions, results }, null, 2)}\n`);
  log(`bench:peers: wrote ${relative(process.cwd(), outputPath)} and ${relative(process.cwd(), chartPath)}`);
  for (const comparison of found) {
    log(`  ${comparison.workload.id}. ${comparison.mercury.title} / ${comparison.peer.title} ${comparison.metricTitle}: ${comparison.ratio.toFixed(3)} (${comparison.outcome})`);
  }
  return failed === 0 ? 0 : 1;
}

process.exitCode = await main(process.argv.slice(2));

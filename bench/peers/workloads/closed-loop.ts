/**
 * Workloads 1 to 3 share one shape: C clients per system in closed loops for a fixed duration, throughput and
 * request latency per run.
 */
import { readFileSync } from 'node:fs';
import type { WorkloadId } from '../args.js';
import { closedLoop, throughputMetrics } from '../driver.js';
import { processCpuMicros } from '../processes.js';
import type { MetricSpec } from '../stats.js';
import type { KvClient, RunningSystem } from '../system.js';
import { measureAlternating, startAll, type Subject, type Workload, type WorkloadContext, type WorkloadResult } from '../workload.js';

export interface ClosedLoopSpec {
  readonly id: WorkloadId;
  readonly title: string;
  description(context: WorkloadContext): string;
  /** Unit of throughput, e.g. "writes/s". */
  readonly unit: string;
  /** Data the runs need (through one client of each system) before the first run. */
  prepare?(client: KvClient, context: WorkloadContext): Promise<void>;
  /** One request; returns the units it completed. */
  operation(client: KvClient, clientIndex: number, iteration: number, context: WorkloadContext): Promise<number>;
  /** Also measure each system's alternative clients (Mercury's HTTP client beside its wire client) as rows. */
  readonly alternativeClients?: boolean;
  /** Extra rows, e.g. Mercury's in-process reader, given the running systems. */
  extraSubjects?(running: readonly RunningSystem[], context: WorkloadContext): Promise<Subject[]>;
  notes?(context: WorkloadContext): string[];
}

export function throughputMetricSpecs(unit: string): MetricSpec[] {
  return [
    { key: 'perSecond', title: unit, better: 'higher' },
    { key: 'p50Ms', title: 'p50 ms', better: 'lower' },
    { key: 'p99Ms', title: 'p99 ms', better: 'lower' },
    { key: 'serverCpuUsPerRequest', title: 'server CPU µs/request', better: 'lower' },
    { key: 'driverCpuUsPerRequest', title: 'driver CPU µs/request', better: 'lower', compared: false },
  ];
}

const readProc = (path: string): string => readFileSync(path, 'utf8');

export function closedLoopWorkload(spec: ClosedLoopSpec): Workload {
  return {
    id: spec.id,
    title: spec.title,
    async run(context: WorkloadContext): Promise<WorkloadResult> {
      const running = await startAll(context);
      try {
        const subjects: Subject[] = [];
        for (const system of running) {
          const adapter = context.adapters.find((candidate) => candidate.name === system.name)!;
          const clients = await Promise.all(Array.from({ length: context.options.clients }, () => system.connect()));
          if (spec.prepare !== undefined) await spec.prepare(clients[0]!, context);
          subjects.push(closedLoopSubject(spec, context, system, system.name, adapter.title, clients));
          for (const alternative of spec.alternativeClients === true ? (system.alternativeClients ?? []) : []) {
            const others = await Promise.all(Array.from({ length: context.options.clients }, () => alternative.connect()));
            subjects.push(closedLoopSubject(spec, context, system, alternative.id, alternative.title, others));
          }
        }
        if (spec.extraSubjects !== undefined) subjects.push(...(await spec.extraSubjects(running, context)));
        const results = await measureAlternating(context, spec.id, subjects);
        return { id: spec.id, title: spec.title, description: spec.description(context), metrics: throughputMetricSpecs(spec.unit), subjects: results, notes: spec.notes?.(context) ?? [] };
      } finally {
        await Promise.all(running.map((system) => system.stop()));
      }
    },
  };
}

/** One row: C clients of one system in closed loops, with the server's CPU per request. */
function closedLoopSubject(spec: ClosedLoopSpec, context: WorkloadContext, system: RunningSystem, id: string, title: string, clients: readonly KvClient[]): Subject {
  return {
    id,
    title,
    mercury: system.name === 'mercury',
    runOnce: async (run) => {
      // The warm-up run (-1) is short: it only has to get the client code compiled and connections open.
      const seconds = run < 0 ? Math.min(1, context.options.seconds) : context.options.seconds;
      const serverCpuStart = processCpuMicros(system.pid, readProc);
      const result = await closedLoop(clients, seconds, (client, clientIndex, iteration) => spec.operation(client, clientIndex, iteration, context));
      const serverCpuUsPerRequest = (processCpuMicros(system.pid, readProc) - serverCpuStart) / result.requests;
      return { ...throughputMetrics(result), serverCpuUsPerRequest };
    },
    close: async () => {
      await Promise.all(clients.map((client) => client.close()));
    },
  };
}

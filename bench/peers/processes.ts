/**
 * Starting and stopping the systems under test: every process and temp directory the harness makes is owned by one
 * `ProcessGroup`, which stops them all (SIGTERM, then SIGKILL after a grace period) and removes the directories,
 * whether the run finished, failed or was interrupted with Ctrl-C. A benchmark that leaves an etcd running would
 * skew every benchmark after it on a 2-core machine.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** How long a process may take to print its ready line. etcd elects itself leader within about a second. */
export const PROCESS_READY_MS_MAX = 30_000;
/** How long a process may take to exit after SIGTERM before it is killed. Redis fsyncs its AOF on the way out. */
export const PROCESS_STOP_GRACE_MS = 10_000;
/** Output kept per process, for the error message when it fails to start. */
export const PROCESS_OUTPUT_BYTES_MAX = 64 * 1024;

export interface ProcessSpec {
  /** Name for messages, e.g. "etcd". */
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  /** Ready once this matches the process's output (stdout and stderr together). */
  readonly ready: RegExp;
  readonly readyMsMax?: number;
  readonly cwd?: string;
}

export interface ManagedProcess {
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** The match of `ready` against the output. */
  readonly readyMatch: RegExpExecArray;
  /** Output so far (the last PROCESS_OUTPUT_BYTES_MAX bytes). */
  output(): string;
  stop(): Promise<void>;
}

export class ProcessStartError extends Error {
  readonly code = 'PROCESS_START_FAILED';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ProcessStartError';
  }
}

/** Sends SIGTERM, waits up to `graceMs`, then SIGKILL; resolves once the process has exited. */
export async function stopChild(child: ChildProcess, graceMs = PROCESS_STOP_GRACE_MS): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}

export class ProcessGroup {
  private readonly processes = new Set<ManagedProcess>();
  private readonly directories = new Set<string>();
  private stopping: Promise<void> | undefined;

  constructor(private readonly stopGraceMs = PROCESS_STOP_GRACE_MS) {}

  /** A new empty directory under the OS temp dir, removed by `stopAll`. */
  tempDir(prefix: string): string {
    const directory = mkdtempSync(join(tmpdir(), `mercury-peers-${prefix}-`));
    this.directories.add(directory);
    return directory;
  }

  get running(): number {
    return this.processes.size;
  }

  async start(spec: ProcessSpec): Promise<ManagedProcess> {
    if (this.stopping !== undefined) throw new ProcessStartError(`${spec.name}: the harness is stopping`);
    // BENCH_PROFILE=DIR runs every Node process the harness starts under `--cpu-prof` (NODE_OPTIONS refuses it).
    const profile = process.env.BENCH_PROFILE !== undefined && spec.command === process.execPath ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : [];
    const child = spawn(spec.command, [...profile, ...spec.args], { stdio: ['ignore', 'pipe', 'pipe'], cwd: spec.cwd });
    let output = '';
    const append = (chunk: Buffer): void => {
      output += chunk.toString();
      if (output.length > PROCESS_OUTPUT_BYTES_MAX) output = output.slice(-PROCESS_OUTPUT_BYTES_MAX);
    };
    child.stdout.on('data', append);
    child.stderr.on('data', append);
    const managed: ManagedProcess = {
      name: spec.name,
      pid: child.pid ?? -1,
      child,
      readyMatch: undefined as unknown as RegExpExecArray,
      output: () => output,
      stop: async () => {
        await stopChild(child, this.stopGraceMs);
        this.processes.delete(managed);
      },
    };
    this.processes.add(managed);
    const readyMsMax = spec.readyMsMax ?? PROCESS_READY_MS_MAX;
    try {
      const match = await new Promise<RegExpExecArray>((resolve, reject) => {
        const check = (): void => {
          const found = spec.ready.exec(output);
          if (found !== null) finish(() => resolve(found));
        };
        const onExit = (code: number | null, signal: string | null): void =>
          finish(() => reject(new ProcessStartError(`${spec.name} exited (${signal ?? `code ${code}`}) before it was ready:\n${output.slice(-2000)}`)));
        const onError = (error: Error): void => finish(() => reject(new ProcessStartError(`${spec.name}: cannot start ${spec.command}: ${error.message}`, { cause: error })));
        const timer = setTimeout(
          () => finish(() => reject(new ProcessStartError(`${spec.name} was not ready within ${readyMsMax} ms:\n${output.slice(-2000)}`))),
          readyMsMax,
        );
        function finish(settle: () => void): void {
          clearTimeout(timer);
          child.stdout.off('data', check);
          child.stderr.off('data', check);
          child.off('exit', onExit);
          child.off('error', onError);
          settle();
        }
        child.stdout.on('data', check);
        child.stderr.on('data', check);
        child.once('exit', onExit);
        child.once('error', onError);
      });
      (managed as { readyMatch: RegExpExecArray }).readyMatch = match;
      return managed;
    } catch (error) {
      await managed.stop();
      throw error;
    }
  }

  /** Stops every process (concurrently) and removes every temp directory. Safe to call more than once. */
  stopAll(): Promise<void> {
    this.stopping ??= (async () => {
      await Promise.all([...this.processes].map((process) => process.stop()));
      for (const directory of this.directories) rmSync(directory, { recursive: true, force: true });
      this.directories.clear();
    })();
    return this.stopping;
  }

  /** Last resort on process exit, when nothing can be awaited: SIGKILL whatever is still running. */
  killAllNow(): void {
    for (const process of this.processes) if (process.child.exitCode === null) process.child.kill('SIGKILL');
    for (const directory of this.directories) rmSync(directory, { recursive: true, force: true });
  }
}

/**
 * Stops the group on SIGINT/SIGTERM (then exits 130/143) and kills what is left if the harness exits any other way.
 * Returns a function that removes the handlers.
 */
export function stopOnExit(group: ProcessGroup, log: (line: string) => void = (line) => process.stderr.write(`${line}\n`)): () => void {
  const onSignal = (signal: NodeJS.Signals): void => {
    log(`bench:peers: ${signal}: stopping ${group.running} process(es)`);
    void group.stopAll().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  const onExit = (): void => group.killAllNow();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', onExit);
  return () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('exit', onExit);
  };
}

/** Resident memory of a process in bytes, from /proc (Linux). */
export function residentBytes(pid: number, readStatus: (path: string) => string): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readStatus(`/proc/${pid}/status`));
  if (match === null) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]) * 1024;
}

/** Linux's USER_HZ, the unit of the CPU times in /proc/PID/stat: 100 on every mainstream architecture. */
export const PROC_TICKS_PER_SECOND = 100;

/** CPU time (user + system) a process has used, in microseconds, from /proc/PID/stat (Linux). */
export function processCpuMicros(pid: number, readStat: (path: string) => string): number {
  const stat = readStat(`/proc/${pid}/stat`);
  // The command name (field 2) is in parentheses and may hold spaces: count fields after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const userTicks = Number(fields[11]);
  const systemTicks = Number(fields[12]);
  if (!Number.isFinite(userTicks) || !Number.isFinite(systemTicks)) throw new Error(`no CPU times for pid ${pid}`);
  return ((userTicks + systemTicks) * 1_000_000) / PROC_TICKS_PER_SECOND;
}

/**
 * Helpers for tests that run Mercury as real processes: temporary data directories, a `mercury serve` child on a free
 * port, and one-shot CLI invocations. Every child is started detached from nothing and must be stopped by the test
 * (in `after`), so the runner can exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';

/** The CLI as users run it: the bundle `npm run build` makes (tools/bundle-cli.ts); this file runs from dist/test/support/. */
export const CLI_PATH = fileURLToPath(new URL('../../bin/mercury.js', import.meta.url));

/** How long a child may take to print its listening line before the start counts as failed. */
export const SERVE_START_TIMEOUT_MS = 15_000;
/** How long a CLI invocation may run. */
export const CLI_TIMEOUT_MS = 15_000;

/** A fresh, empty directory under the OS temp dir. */
export function makeTempDir(label: string): string {
  return mkdtempSync(join(tmpdir(), `mercury-${label}-`));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export interface ServeProcess {
  readonly child: ChildProcess;
  readonly url: string;
  /** "host:port" where replicas connect (`--upstream`). */
  readonly replication: string;
  /** The wire port's URL (`mercury+tcp://host:port`, or `mercury+tls://`). */
  readonly wire: string;
  readonly dataDir: string;
  /** Everything the child wrote to stderr so far (its JSON log), for failure messages. */
  stderr(): string;
  /** Resolves with the exit code (or signal name) once the child has exited. */
  readonly exited: Promise<number | string>;
}

const LISTENING = /mercury node listening on (https?:\/\/\S+) replication (\S+) wire (\S+)/;

/**
 * Starts `mercury serve --data-dir DIR --listen 127.0.0.1:0` and resolves once it prints its URL. Extra arguments
 * (for example `--max-value-bytes`) are appended. Without `--auth` among them, the node runs with `--auth off`.
 * `logFile`: its stderr is appended to that file, as an operator's redirect would, not piped; `stderr()` reads it.
 * `launcher`: a command the node runs under (`openFilesLimited`).
 */
export function startServe(dataDir: string, extraArgs: readonly string[] = [], env?: NodeJS.ProcessEnv, logFile?: string, launcher: readonly string[] = []): Promise<ServeProcess> {
  // Tests that are not about authorization run without it (on loopback); those that are pass --auth required.
  const auth = extraArgs.includes('--auth') ? [] : ['--auth', 'off'];
  // A test that picks the HTTP port (`--listen 127.0.0.1:P`, P from freePort) gets port 0 for the other two: their
  // defaults, P + 1 and P + 2, were never checked free, and a busy machine hands them out to other sockets.
  const otherPorts = extraArgs.includes('--listen')
    ? [...(extraArgs.includes('--replication-listen') ? [] : ['--replication-listen', '127.0.0.1:0']), ...(extraArgs.includes('--wire-listen') ? [] : ['--wire-listen', '127.0.0.1:0'])]
    : [];
  // An option given twice is refused (src/cli/main.ts): the defaults stand only where the test gives none.
  const listen = extraArgs.includes('--listen') ? [] : ['--listen', '127.0.0.1:0'];
  const logFd = logFile === undefined ? undefined : openSync(logFile, 'a');
  const [command, ...args] = [...launcher, process.execPath, CLI_PATH, 'serve', '--data-dir', dataDir, ...listen, ...auth, ...otherPorts, ...extraArgs];
  const child = spawn(command!, args, {
    stdio: ['ignore', 'pipe', logFd ?? 'pipe'],
    // A test-only preload (test/support/kill-at.ts, lock-swap.ts) rides in the environment.
    ...(env === undefined ? {} : { env: { ...process.env, ...env } }),
  });
  // The child has its own copy: this one would keep the file's disk busy (a tmpfs the test unmounts).
  if (logFd !== undefined) closeSync(logFd);
  let stdout = '';
  let piped = '';
  const stderr = (): string => (logFile === undefined ? piped : readFileSync(logFile, 'utf8').slice(-16_384));
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  child.stderr?.setEncoding('utf8').on('data', (text: string) => {
    // Keep only the tail: a node under load may log a lot, and only the end matters in a failure message.
    piped = (piped + text).slice(-16_384);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`mercury serve did not start within ${SERVE_START_TIMEOUT_MS} ms; stdout: ${stdout}; stderr: ${stderr()}`));
    }, SERVE_START_TIMEOUT_MS);
    child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
      const match = LISTENING.exec(stdout);
      if (match === null) return;
      clearTimeout(timer);
      resolve({ child, url: match[1]!, replication: match[2]!, wire: match[3]!, dataDir, stderr, exited });
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`mercury serve exited (${code}) before listening; stdout: ${stdout}; stderr: ${stderr()}`));
    });
  });
}

/**
 * The one `mercury serve` of a suite (or file): started in `before` in a temp directory named after `label`, stopped
 * and its directory removed in `after`. Returns a getter, for the tests to call once `before` ran.
 */
export function serveForSuite(label: string, extraArgs: readonly string[] = []): () => ServeProcess {
  const dir = makeTempDir(label);
  let serve: ServeProcess | undefined;
  before(async () => {
    serve = await startServe(dir, extraArgs);
  });
  after(async () => {
    if (serve !== undefined) await stopProcess(serve.child);
    removeDir(dir);
  });
  return () => serve!;
}

/**
 * Runs `mercury serve` on `dir` expecting it to refuse to start: resolves with how it exited (code, or the signal that
 * killed it) and its stderr. A serve that starts after all is killed at once, so the test fails on its code instead
 * of waiting.
 */
export function serveRefused(
  dir: string,
  extraArgs: readonly string[] = [],
  launcher: readonly string[] = [],
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  const defaults = [['--listen', '127.0.0.1:0'], ['--replication-listen', '127.0.0.1:0'], ['--wire-listen', '127.0.0.1:0'], ['--auth', 'off']].filter(([flag]) => !extraArgs.includes(flag!)).flat();
  const [command, ...args] = [...launcher, process.execPath, CLI_PATH, 'serve', '--data-dir', dir, ...defaults, ...extraArgs];
  const child = spawn(command!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  child.stdout.setEncoding('utf8').on('data', (text: string) => {
    stdout += text;
    if (LISTENING.test(stdout)) child.kill('SIGKILL');
  });
  return new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal, stderr: stderr + stdout })));
}

/** Sends `signal` (default SIGKILL) and waits for the child to exit. Safe to call on an already exited child. */
export async function stopProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  await exited;
}

export interface CliResult {
  readonly code: number | null;
  readonly stdout: Buffer;
  readonly stderr: string;
}

/**
 * Runs `mercury ARGS...` to completion. `input` is written to its stdin (stdin is closed either way, so a command
 * that reads stdin never waits for a terminal).
 */
export function runCli(args: readonly string[], options: { input?: Buffer | string; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...options.env } });
  const stdout: Buffer[] = [];
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  // A command that does not read stdin may exit before the write completes (EPIPE): that is not the test's concern.
  child.stdin.on('error', () => {});
  child.stdin.end(options.input ?? '');
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`mercury ${args.join(' ')} did not finish within ${CLI_TIMEOUT_MS} ms; stderr: ${stderr}`));
    }, CLI_TIMEOUT_MS);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(stdout), stderr });
    });
  });
}

/** A CLI command left running (`watch`, a `snapshot save` that waits), its output read as it comes. */
export interface RunningCli {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (null when a signal killed it). */
  readonly exited: Promise<number | null>;
}

/** Starts `mercury ARGS...` without waiting for it; the test stops it (or waits for `exited`). */
export function startCli(args: readonly string[]): RunningCli {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

/** CLI commands a test leaves running, stopped together in its `after`, so that a failed test leaves none behind. */
export class RunningClis {
  private readonly all: RunningCli[] = [];

  start(args: readonly string[]): RunningCli {
    const cli = startCli(args);
    this.all.push(cli);
    return cli;
  }

  async stopAll(): Promise<void> {
    for (const cli of this.all.splice(0)) await stopProcess(cli.child);
  }
}

/**
 * A launcher (`startServe`, `serveRefused`) that runs the node with an open-files limit of `files`, soft and hard (Node
 * raises its soft limit to the hard one as it starts): a limit the node meets with a few hundred connections.
 */
export function openFilesLimited(files: number): readonly string[] {
  return ['prlimit', `--nofile=${files}:${files}`];
}

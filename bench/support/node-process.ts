/** Starts a real `mercury serve` process for a benchmark, on a free port, in a temp data directory. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const CLI_PATH = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface NodeProcess {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** HOST:PORT of the replication listener, when the node was started with one and printed it. */
  readonly replication: string | undefined;
  stop(): Promise<void>;
}

/**
 * `extraArgs` go to `mercury serve`, `nodeArgs` to node itself (e.g. `--heapsnapshot-signal=SIGUSR2`). The node's
 * stderr (its JSON log) goes to this process's stderr unless `quiet`, which also keeps it for the error message.
 */
export async function startNodeProcess(
  extraArgs: readonly string[] = [],
  dataDir = mkdtempSync(join(tmpdir(), 'mercury-bench-')),
  options: { readonly nodeArgs?: readonly string[]; readonly quiet?: boolean } = {},
): Promise<NodeProcess> {
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), CLI_PATH, 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', ...extraArgs], {
    stdio: ['ignore', 'pipe', options.quiet === true ? 'pipe' : 'inherit'],
  });
  let errorOutput = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    if (errorOutput.length < 4096) errorOutput += chunk.toString();
  });
  const [url, replication] = await new Promise<[string, string | undefined]>((resolve, reject) => {
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const match = /listening on (https?:\/\/\S+)(?: replication (\S+))?.*\n/.exec(output);
      if (match !== null) resolve([match[1]!, match[2]]);
    });
    child.once('exit', (code) => {
      rmSync(dataDir, { recursive: true, force: true });
      reject(new Error(`mercury serve exited with ${code} before listening: ${output}${errorOutput}`));
    });
  });
  const { hostname, port } = new URL(url);
  return {
    url,
    host: hostname,
    port: Number(port),
    dataDir,
    child,
    pid: child.pid!,
    replication,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

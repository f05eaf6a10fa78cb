/** Starts a real `mercury serve` process for a benchmark, on a free port, in a temp data directory. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const CLI_PATH = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface NodeProcess {
  readonly url: string;
  /** "host:port" where replicas connect. */
  readonly replication: string;
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly child: ChildProcess;
  stop(): Promise<void>;
}

export async function startNodeProcess(extraArgs: readonly string[] = [], dataDir = mkdtempSync(join(tmpdir(), 'mercury-bench-'))): Promise<NodeProcess> {
  const child = spawn(process.execPath, [CLI_PATH, 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', ...extraArgs], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [url, replication] = await new Promise<[string, string]>((resolve, reject) => {
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const match = /listening on (http:\/\/\S+) replication (\S+)/.exec(output);
      if (match !== null) resolve([match[1]!, match[2]!]);
    });
    child.once('exit', (code) => reject(new Error(`mercury serve exited with ${code} before listening: ${output}`)));
  });
  const { hostname, port } = new URL(url);
  return {
    url,
    replication,
    host: hostname,
    port: Number(port),
    dataDir,
    child,
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

/** Starts a real `mercury serve` process for a benchmark, on a free port, in a temp data directory. */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RawHttpConnection } from './raw-http.js';

export const CLI_PATH = fileURLToPath(new URL('../../bin/mercury.js', import.meta.url));

export interface NodeProcess {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** HOST:PORT of the replication listener, when the node was started with one and printed it. */
  readonly replication: string | undefined;
  /** The wire port's URL (mercury+tcp://...), as the node printed it. */
  readonly wireUrl: string | undefined;
  /** With `auth`: the root's bootstrap admin token (from its data directory); undefined with auth off. */
  readonly adminToken: string | undefined;
  stop(): Promise<void>;
}

/**
 * `extraArgs` go to `mercury serve`, `nodeArgs` to node itself (e.g. `--heapsnapshot-signal=SIGUSR2`). The node's
 * stderr (its JSON log) goes to this process's stderr unless `quiet`, which also keeps it for the error message.
 * `auth`: run with `--auth required` (a root then writes its admin token, returned as `adminToken`); else `--auth off`.
 */
export async function startNodeProcess(
  extraArgs: readonly string[] = [],
  dataDir = mkdtempSync(join(tmpdir(), 'mercury-bench-')),
  options: { readonly nodeArgs?: readonly string[]; readonly quiet?: boolean; readonly auth?: boolean } = {},
): Promise<NodeProcess> {
  const authArgs = extraArgs.includes('--auth') ? [] : ['--auth', options.auth === true ? 'required' : 'off'];
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), CLI_PATH, 'serve', '--data-dir', dataDir, ...(extraArgs.includes('--listen') ? [] : ['--listen', '127.0.0.1:0']), ...authArgs, ...extraArgs], {
    stdio: ['ignore', 'pipe', options.quiet === true ? 'pipe' : 'inherit'],
  });
  let errorOutput = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    if (errorOutput.length < 4096) errorOutput += chunk.toString();
  });
  const [url, replication, wireUrl] = await new Promise<[string, string | undefined, string | undefined]>((resolve, reject) => {
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const match = /listening on (https?:\/\/\S+)(?: replication (\S+))?(?: wire (\S+))?.*\n/.exec(output);
      if (match !== null) resolve([match[1]!, match[2], match[3]]);
    });
    child.once('exit', (code) => {
      rmSync(dataDir, { recursive: true, force: true });
      reject(new Error(`mercury serve exited with ${code} before listening: ${output}${errorOutput}`));
    });
  });
  const { hostname, port } = new URL(url);
  const tokenFile = join(dataDir, 'admin-token');
  const adminToken = options.auth === true && existsSync(tokenFile) ? readFileSync(tokenFile, 'utf8').trim() : undefined;
  return {
    adminToken,
    url,
    host: hostname,
    port: Number(port),
    dataDir,
    child,
    pid: child.pid!,
    replication,
    wireUrl,
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

/**
 * Creates a token on a node (with its admin token) and returns the Authorization header value for it. `ca`: the
 * node's CA when it serves TLS (the same connection the load generator uses, so no global trust setting is needed).
 */
export async function benchToken(node: NodeProcess, name: string, scopes: readonly string[], ca?: Buffer): Promise<string> {
  if (node.adminToken === undefined) throw new Error('benchToken needs a node started with auth');
  const connection = new RawHttpConnection(node.host, node.port, ca, `Bearer ${node.adminToken}`);
  try {
    const response = await connection.request('POST', '/v1/auth/tokens', Buffer.from(JSON.stringify({ name, scopes })), 'application/json');
    if (response.status !== 201) throw new Error(`creating token ${name} answered HTTP ${response.status}: ${response.body.toString()}`);
    return `Bearer ${(JSON.parse(response.body.toString()) as { token: string }).token}`;
  } finally {
    connection.close();
  }
}

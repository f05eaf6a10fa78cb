/**
 * `mercury demo`: a root and a few replicas on this machine, each a real `mercury serve` process with its own data
 * directory, in a two-level tree (root -> 2 intermediates -> leaves, every leaf listing the root as its fallback).
 * It prints the URLs and commands to try, forwards Ctrl-C to every node, and leaves the data for the next run.
 *
 * The tree runs with TLS, as a real one should: a demo CA, a certificate per node and a client certificate are made
 * with openssl in DIR/tls on the first run and kept for the next ones (so a MERCURY_CA exported once stays valid).
 *
 * A full disk under DIR is STORAGE_FULL naming the file the demo, or a node it started, could not write; a directory
 * of another user, DATA_DIR_INVALID. The demo said "ENOSPC: no space left on device, write", naming no file, or blamed
 * a port in use when a node had exited STORAGE_FULL into a log the full disk kept empty (audit, 2026-12-07).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, lstatSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { BOOTSTRAP_TOKEN_FILE } from '../auth/index.js';
import { NodeClient, UnauthenticatedError, bearer, type ClientTls } from '../client/index.js';
import { ERROR_STATUS, MercuryError, type ErrorCode } from '../errors/index.js';
import { readFileBounded, SMALL_FILE_BYTES_MAX } from '../fs/bounded-read.js';
import { fileUnusable, isUnusable } from '../fs/dir-lock.js';
import { writeFileDurably } from '../fs/durable.js';
import { makeDirectories } from '../fs/make-directories.js';
import { createCertificateAuthority, issueCertificate, type CertificateFiles } from '../net/tls-certs.js';

/**
 * The program running this command, which the demo starts again as each node: dist/bin/mercury.js (the bundle) when
 * run as `npm start` or `npx mercury`, dist/src/cli/main.js when started from tsc's output.
 */
const CLI_PATH = process.argv[1]!;
const START_TIMEOUT_MS = 20_000;
const DEMO_BASE_PORT = 7070;
/** Nodes take HTTP and replication ports in pairs from DEMO_BASE_PORT, so their wire ports come from a range apart. */
const DEMO_WIRE_BASE_PORT = 7170;
export const DEMO_REPLICAS_MAX = 20;
/** What the demo keeps of a node's stderr, besides its log file: enough for its last line, the one that says why it exited. */
const NODE_STDERR_TAIL_CHARS = 8192;

/**
 * A file the demo made in DIR (its CA certificate, a token), read bounded (src/fs/bounded-read.ts): whatever else is
 * found at its name is refused, naming it, with `remedy`. DIR is ./data/demo by default, where anyone who can write
 * the working directory can put things: a FIFO there hung the demo for ever, a directory gave a bare EISDIR.
 */
function readDemoFile(path: string, remedy: string): Buffer {
  return readFileBounded(path, { what: 'the demo\'s file', bytesMax: SMALL_FILE_BYTES_MAX, noFollow: true, code: 'DATA_DIR_INVALID', remedy });
}

/**
 * Makes files or directories in the demo's DIR (`write`), saying a refusal of the system as Mercury's error naming
 * the file: a full disk STORAGE_FULL, a directory or file of another user DATA_DIR_INVALID.
 */
function demoWrite<T>(dir: string, write: () => T): T {
  try {
    return write();
  } catch (error) {
    throw demoWriteFailure(error as Error, (error as NodeJS.ErrnoException).path ?? dir, dir);
  }
}

function demoWriteFailure(error: Error, path: string, dir: string): Error {
  return isUnusable(error) ? fileUnusable(error, path, { dir, what: 'the demo\'s directory', done: 'written' }) : error;
}

/** The demo's failure as the operator reads it: a full disk can also be left for another one. */
function demoFailure(error: unknown): unknown {
  if (!(error instanceof MercuryError) || error.code !== 'STORAGE_FULL') return error;
  return new MercuryError('STORAGE_FULL', `${error.message}; or run the demo with --dir on another disk`, { cause: error });
}

interface DemoNode {
  readonly name: string;
  readonly child: ChildProcess;
  readonly url: string;
  readonly replication: string;
  readonly upstreams: readonly string[];
  readonly dataDir: string;
  /** Rejects when the node fails: it exits on its own (not stopped by the demo) with an error, or its log cannot be written. */
  readonly failed: Promise<never>;
}

/**
 * Why a node exited, from the last line its CLI wrote (`mercury: CODE: message`), with the code it gave; without one,
 * the exit code, `guess` (what may have stopped it) and the log to read.
 */
function nodeExit(name: string, exit: string, stderrTail: string, logPath: string, guess: string): Error {
  const last = stderrTail
    .split('\n')
    .reverse()
    .find((line) => line.startsWith('mercury: '));
  if (last === undefined) return new Error(`the demo's ${name} exited with ${exit}${guess}; see ${logPath}`);
  const coded = /^mercury: ([A-Z_]+): (.*)$/.exec(last);
  if (coded !== null && Object.hasOwn(ERROR_STATUS, coded[1]!)) return new MercuryError(coded[1] as ErrorCode, `the demo's ${name} exited with ${exit}: ${coded[2]!}`);
  return new Error(`the demo's ${name} exited with ${exit}: ${last.slice('mercury: '.length)}; see ${logPath}`);
}

/** The demo's certificates, made on the first run: the CA, and one certificate per name (127.0.0.1 and localhost). */
class DemoCertificates {
  readonly dir: string;
  readonly ca: CertificateFiles;

  constructor(demoDir: string) {
    this.dir = join(demoDir, 'tls');
    this.ca = existsSync(join(this.dir, 'ca.pem')) ? this.files('ca') : createCertificateAuthority(this.dir, 'ca', 'Mercury demo CA');
  }

  /** `name`.pem and `name`-key.pem, issued by the demo CA unless they exist. */
  certificate(name: string): CertificateFiles {
    if (existsSync(join(this.dir, `${name}.pem`))) return this.files(name);
    return issueCertificate(this.ca, this.dir, name, { commonName: name, hosts: ['127.0.0.1', 'localhost'] });
  }

  clientTls(): ClientTls {
    return { ca: readDemoFile(this.ca.certPath, `remove ${this.dir} and run the demo again: it makes new certificates`) };
  }

  private files(name: string): CertificateFiles {
    return { certPath: join(this.dir, `${name}.pem`), keyPath: join(this.dir, `${name}-key.pem`) };
  }
}

function startNode(
  dir: string,
  certificates: DemoCertificates,
  name: string,
  port: number,
  wirePort: number,
  upstreams: readonly string[],
  replicationTokenFile?: string,
): Promise<DemoNode> {
  const dataDir = join(dir, name);
  const logPath = join(dir, `${name}.log`);
  demoWrite(dir, () => makeDirectories(dataDir));
  const certificate = demoWrite(dir, () => certificates.certificate(name));
  const args = [CLI_PATH, 'serve', '--data-dir', dataDir, '--listen', `127.0.0.1:${port}`, '--replication-listen', `127.0.0.1:${port + 1}`, '--wire-listen', `127.0.0.1:${wirePort}`];
  args.push('--tls-cert', certificate.certPath, '--tls-key', certificate.keyPath, '--tls-ca', certificates.ca.certPath);
  if (upstreams.length > 0) args.push('--upstream', upstreams.join(','));
  if (replicationTokenFile !== undefined) args.push('--replication-token-file', replicationTokenFile);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  // Kept here too: on a full disk the node's last line, why it exited, cannot reach its log.
  let stderrTail = '';
  child.stderr.on('data', (chunk: Buffer) => (stderrTail = (stderrTail + chunk.toString('utf8')).slice(-NODE_STDERR_TAIL_CHARS)));
  let listening = false;
  const failed = new Promise<never>((_resolve, reject) => {
    const log = createWriteStream(logPath, { flags: 'a' });
    log.on('error', (error) => {
      child.kill('SIGTERM');
      reject(demoWriteFailure(error, logPath, dir));
    });
    child.stderr.pipe(log);
    child.once('exit', (code, signal) => {
      // Once started, a node stopped (by the demo, or by whoever tries a failover) is no failure; one that gave up is.
      if (listening && (code === 0 || code === null)) return;
      const guess = listening ? '' : ` before listening (port ${port}, ${port + 1} or ${wirePort} in use?)`;
      reject(nodeExit(name, code === null ? `signal ${signal}` : `code ${code}`, stderrTail, logPath, guess));
    });
  });
  // Handled by whoever waits on the node; until then a failure must not be an unhandled rejection.
  failed.catch(() => {});
  const started = new Promise<DemoNode>((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(() => reject(new Error(`${name} did not start within ${START_TIMEOUT_MS} ms; see ${logPath}`)), START_TIMEOUT_MS);
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
      const match = /listening on (\S+) replication (\S+)/.exec(stdout);
      if (match === null) return;
      clearTimeout(timer);
      listening = true;
      resolve({ name, child, url: match[1]!, replication: match[2]!, upstreams, dataDir, failed });
    });
    failed.catch((error: Error) => {
      clearTimeout(timer);
      child.kill('SIGTERM');
      reject(error);
    });
  });
  return started;
}

/**
 * Waits until a replica streams from an upstream, so that its own children find a node with a dataset. Until its
 * snapshot has brought the token records, the replica knows no token and refuses the admin's (UNAUTHENTICATED): that is
 * "not yet", like any phase before streaming.
 */
async function waitStreaming(node: DemoNode, tls: ClientTls, token: string): Promise<void> {
  await Promise.race([node.failed, pollStreaming(node, tls, token)]);
}

/**
 * waitStreaming's polls. A replica whose disk is too full for its snapshot does not exit: it pauses replication and
 * tries again every second (README, Disk full). That is said at once, not after START_TIMEOUT_MS as "did not join".
 */
async function pollStreaming(node: DemoNode, tls: ClientTls, token: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  const client = new NodeClient(node.url, undefined, tls, bearer(token));
  while (Date.now() < deadline) {
    try {
      const status = (await client.status()) as { replication?: { phase?: string; storagePause?: { code?: string; message?: string } | null } };
      if (status.replication?.phase === 'streaming') return;
      const pause = status.replication?.storagePause;
      if (pause?.code === 'STORAGE_FULL') throw new MercuryError('STORAGE_FULL', `the demo's ${node.name} cannot join: the disk that holds ${node.dataDir} is full (${pause.message ?? 'STORAGE_FULL'})`);
    } catch (error) {
      if (!(error instanceof UnauthenticatedError)) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${node.name} did not join its upstream within ${START_TIMEOUT_MS} ms`);
}

/**
 * The token kept in `file`, or a new one made with `scopes` and written there (0600). A token of that name without
 * its file (the file deleted, or a demo killed between the two) holds a secret nobody has: it is revoked first, since
 * names are unique. Something else at the file's name (a directory, a FIFO, a link) is refused, never followed.
 */
async function demoToken(admin: NodeClient, file: string, name: string, scopes: string[]): Promise<string> {
  // lstat, not existsSync: a dangling link at the name is something there (refused by readDemoFile), not a missing file.
  if (lstatSync(file, { throwIfNoEntry: false }) !== undefined) return readDemoFile(file, 'remove it and run the demo again: it makes a new token').toString('utf8').trim();
  const orphan = (await admin.listTokens()).tokens.find((token) => token.name === name);
  if (orphan !== undefined) await admin.revokeToken(orphan.id);
  const created = await admin.createToken(name, scopes);
  // Exclusive: a link put at the name after the check above is not followed to write the secret elsewhere. Whole or
  // not at all: an empty file a full disk left was read back as the token at the next run.
  demoWrite(dirname(file), () => writeFileDurably(file, `${created.token!}\n`, 0o600, true));
  return created.token!;
}

export async function demoCommand(dir: string, replicas: number, json = false): Promise<void> {
  const nodes: DemoNode[] = [];
  let stopping = false;
  const stopAll = (): void => {
    stopping = true;
    for (const node of nodes) node.child.kill('SIGTERM');
  };
  const onSignal = (): void => {
    process.stdout.write('\nstopping the demo nodes\n');
    stopAll();
    setTimeout(() => process.exit(0), 1_000).unref();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  /** Until every node has exited; a node that fails meanwhile (its disk full, say) stops the demo, saying why. */
  const untilStopped = async (): Promise<void> => {
    try {
      await Promise.race([Promise.all(nodes.map((node) => new Promise((resolve) => node.child.once('exit', resolve)))), ...nodes.map((node) => node.failed)]);
    } catch (error) {
      if (stopping) return;
      stopAll();
      throw demoFailure(error);
    }
  };
  const replicationTokenFile = join(dir, 'replication-token');
  const userTokenFile = join(dir, 'demo-token');
  const adminTokenFile = join(dir, 'root', BOOTSTRAP_TOKEN_FILE);
  let userToken = '';
  let certificates: DemoCertificates;
  let tls: ClientTls;
  let client: CertificateFiles | undefined;
  try {
    certificates = demoWrite(dir, () => new DemoCertificates(dir));
    tls = certificates.clientTls();
    const root = await startNode(dir, certificates, 'root', DEMO_BASE_PORT, DEMO_WIRE_BASE_PORT, []);
    nodes.push(root);
    // Tokens: the root wrote its bootstrap admin token into its data directory; with it the demo makes a token for
    // the replicas (replicate) and one for you (read and write on every key), once, kept for the next runs.
    // The root writes it at its first start only: damaged later, the demo starts afresh.
    const adminToken = readDemoFile(adminTokenFile, `remove ${dir} and run the demo again: it starts afresh`).toString('utf8').trim();
    const admin = new NodeClient(root.url, undefined, tls, bearer(adminToken));
    await demoToken(admin, replicationTokenFile, 'demo-replicas', ['replicate']);
    userToken = await demoToken(admin, userTokenFile, 'demo-user', ['read:', 'write:']);
    // The first two replicas hang off the root; the rest alternate under those two, with the root as fallback.
    for (let i = 1; i <= replicas; i++) {
      const parent = i <= 2 ? root : nodes[1 + ((i - 1) % 2)]!;
      const upstreams = parent === root ? [root.replication] : [parent.replication, root.replication];
      const node = await startNode(dir, certificates, `replica-${i}`, DEMO_BASE_PORT + 2 * i, DEMO_WIRE_BASE_PORT + i, upstreams, replicationTokenFile);
      nodes.push(node);
      await waitStreaming(node, tls, adminToken);
    }
    // For the text's example of a client certificate; --json prints none.
    if (!json) client = demoWrite(dir, () => certificates.certificate('client'));
  } catch (error) {
    stopAll();
    throw demoFailure(error);
  }
  const leaf = nodes[nodes.length - 1]!;
  // Another replica than the leaf for the reads and the watch, when there is one (`--replicas 1` has only the leaf;
  // with 2, replica-2 is the leaf, and the read was suggested on the node the put went to).
  const other = nodes[nodes.length > 3 ? 2 : 1]!;
  if (json) {
    // For scripts: the nodes, one JSON line; Ctrl-C still stops them all.
    process.stdout.write(`${JSON.stringify({ dir, nodes: nodes.map((node) => ({ name: node.name, url: node.url, replication: node.replication, upstreams: node.upstreams })), ca: certificates.ca.certPath })}\n`);
    await untilStopped();
    return;
  }
  const ca = certificates.ca.certPath;
  const lines = [
    '',
    `Mercury demo: ${nodes.length} nodes, data and logs in ${dir}`,
    '',
    ...nodes.map((node) => `  ${node.name.padEnd(11)} ${node.url}   replication ${node.replication}${node.upstreams.length > 0 ? `   upstreams ${node.upstreams.join(', ')}` : '   (root)'}`),
    '',
    `Every node serves TLS (https, wss, mutual TLS between nodes) with certificates from the demo CA in ${certificates.dir}.`,
    `Dashboard: ${nodes[0]!.url}/ui/   (the tree, live; a browser opens it once it trusts the demo CA ${ca})`,
    `Tokens (auth is on): yours, read and write on every key, is in ${userTokenFile}:`,
    `  ${userToken}`,
    `The admin token (token management, log, metrics, resync) is in ${adminTokenFile}.`,
    '',
    'Try, in another terminal:',
    `  export MERCURY_CA=${ca}                      # or --ca on each command`,
    `  export MERCURY_TOKEN_FILE=${userTokenFile}`,
    `  npx mercury put greeting hello --url ${leaf.url}   # a write on a leaf, forwarded to the root`,
    `  npx mercury get greeting --url ${other.url}         # read it on another replica`,
    `  npx mercury watch '' --url ${other.url}             # every change, live`,
    `  npx mercury status --url ${leaf.url}               # place in the tree, lag`,
    `  npx mercury token list --token-file ${adminTokenFile}   # tokens (admin)`,
    `  curl --cacert ${ca} -H "Authorization: Bearer $(cat ${userTokenFile})" ${nodes[0]!.url}/v1/kv/greeting`,
    `  a client certificate (its CN "client" names the caller): --cert ${client!.certPath} --key ${client!.keyPath}`,
    '',
    'Ctrl-C stops every node.',
    '',
  ];
  process.stdout.write(lines.join('\n'));
  await untilStopped();
}

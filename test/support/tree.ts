/**
 * Helpers for replication tests with real processes: a node's status, waiting for convergence, and a TCP proxy that
 * can flip a byte in transit.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { after } from 'node:test';
import { parseHostPort } from '../../src/config/index.js';
import { Forger, Withholder, type SignatureForgery } from './forge.js';
import { auditLog, request, requestJson, type RequestOptions } from './http.js';
import { makeTempDir, removeDir, runCli, startServe, stopProcess, type ServeProcess } from './process.js';

export interface ReplicationStatusJson {
  readonly phase?: string;
  readonly upstream?: { address: string; nodeId: string; httpUrl: string } | null;
  readonly ancestors?: string[];
  readonly lagEntries?: number | null;
  readonly snapshotsInstalled?: number;
  /** The snapshot being received, if any. */
  readonly snapshot?: { seq: number; keyCount: number; keysReceived: number; bytesReceived: number } | null;
  readonly resyncPending?: boolean;
  readonly upstreamSwitches?: number;
  readonly lastFailure?: string | null;
  readonly divergedReason?: string | null;
  readonly children: { nodeId: string; phase: string }[];
}

export interface StatusJson {
  readonly role: string;
  readonly nodeId: string;
  readonly datasetId: string;
  readonly seq: number;
  readonly headHash: string;
  readonly keys: number;
  readonly replication: ReplicationStatusJson;
}

/** `options`: headers for a node with auth required (a token that reads every key sees `headHash`). */
export function statusOf(node: ServeProcess, options: RequestOptions = {}): Promise<StatusJson> {
  return requestJson<StatusJson>(node.url, 'GET', '/v1/status', options);
}

/** PUTs a text value; returns the seq that carries it. */
export async function put(node: ServeProcess, key: string, value: string): Promise<number> {
  const response = await request(node.url, 'PUT', `/v1/kv/${key}`, { body: value });
  assert.equal(response.status, 200, response.body.toString());
  return (JSON.parse(response.body.toString()) as { seq: number }).seq;
}

/** A key's value as text, or undefined when the node does not have it. */
export async function get(node: ServeProcess, key: string): Promise<string | undefined> {
  const response = await request(node.url, 'GET', `/v1/kv/${key}`);
  return response.status === 200 ? response.body.toString() : undefined;
}

export const CONVERGE_TIMEOUT_MS = 15_000;

/** Polls until `check` returns true (it may throw while the system settles); fails with `describe()` after the timeout. */
export async function eventually(check: () => Promise<boolean>, describe: () => Promise<string> | string, timeoutMs = CONVERGE_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not ready yet
    }
    if (Date.now() > deadline) assert.fail(`not within ${timeoutMs} ms: ${await describe()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Waits until every node has the root's seq and head hash. */
export async function converged(root: ServeProcess, nodes: readonly ServeProcess[], options: RequestOptions = {}, timeoutMs = CONVERGE_TIMEOUT_MS): Promise<StatusJson> {
  let rootStatus = await statusOf(root, options);
  await eventually(
    async () => {
      rootStatus = await statusOf(root, options);
      const all = await Promise.all(nodes.map((node) => statusOf(node, options)));
      return all.every((status) => status.seq === rootStatus.seq && status.headHash === rootStatus.headHash);
    },
    async () => {
      const all = await Promise.all(nodes.map((node) => statusOf(node, options).catch((error: unknown) => String(error))));
      return `root at ${rootStatus.seq}; nodes: ${JSON.stringify(all.map((s) => (typeof s === 'string' ? s : { seq: s.seq, replication: s.replication })))}`;
    },
    timeoutMs,
  );
  return rootStatus;
}

/**
 * A TCP proxy in front of `target` ("host:port"). While `flipArmed` is set, the next chunk from the target that is at
 * least `minChunkBytes` long has one byte inverted (then the proxy disarms itself): a corruption the frame CRC or the
 * hash chain must catch. While `holding` is set, new connections are accepted but not forwarded until `release()`:
 * a node that tries to reach its upstream stays in the middle of it for as long as a test needs. While `bursting` is
 * set, what the target sends is kept, and `releaseBurst()` writes it to the node in one piece: many frames that
 * arrive in one socket read.
 */
export class FlipProxy {
  flipArmed = false;
  flips = 0;
  holding = false;
  bursting = false;
  private burst: { client: net.Socket; chunks: Buffer[] }[] = [];
  /**
   * Malicious-relay mode (test/support/forge.ts): set before connections open, every connection forges the entries and
   * snapshots it carries, with recomputed hashes and the signatures handled as this says.
   */
  forging: SignatureForgery | undefined;
  /** Frames forged so far, over all connections. */
  forgedFrames = 0;
  /**
   * Withholding-relay mode (test/support/forge.ts, `Withholder`): set before connections open, every connection drops
   * the entries it carries; `hide` also pins the heartbeats' rootSeq to the first one passed.
   */
  withholding: 'entries' | 'hide' | undefined;
  /** Entries withheld so far, over all connections. */
  withheldEntries = 0;
  /** Connections accepted so far. */
  accepted = 0;
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private held: (() => void)[] = [];

  private constructor(target: string) {
    const { host, port } = parseHostPort(target, 'proxy target');
    this.server = net.createServer((client) => {
      this.accepted++;
      if (this.holding) {
        client.pause();
        this.sockets.add(client);
        client.on('error', () => {});
        this.held.push(() => this.forward(client, host, port));
        return;
      }
      this.forward(client, host, port);
    });
  }

  /** Destroys every open connection (both sides), as a network cut would. */
  cutAll(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  /** Stops bursting; writes what each connection's target sent meanwhile in one write. Returns the bytes released. */
  releaseBurst(): number {
    this.bursting = false;
    let bytes = 0;
    for (const { client, chunks } of this.burst) {
      const all = Buffer.concat(chunks);
      bytes += all.length;
      if (!client.destroyed) client.write(all);
    }
    this.burst = [];
    return bytes;
  }

  /** Stops holding and forwards the connections held so far. */
  release(): void {
    this.holding = false;
    const held = this.held;
    this.held = [];
    for (const forward of held) forward();
  }

  private forward(client: net.Socket, host: string, port: number): void {
    const upstream = net.connect({ host, port });
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => {
        this.sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    const forger = this.forging === undefined ? undefined : new Forger(this.forging);
    const withholder = this.withholding === undefined ? undefined : new Withholder(this.withholding === 'hide');
    upstream.on('data', (chunk: Buffer) => {
      if (forger !== undefined) {
        const before = forger.forged;
        try {
          chunk = forger.push(chunk);
        } catch {
          client.destroy();
          return;
        }
        this.forgedFrames += forger.forged - before;
        if (chunk.length === 0) return;
      }
      if (withholder !== undefined) {
        const before = withholder.withheld;
        chunk = withholder.push(chunk);
        this.withheldEntries += withholder.withheld - before;
        if (chunk.length === 0) return;
      }
      if (this.flipArmed && chunk.length >= 16) {
        this.flipArmed = false;
        this.flips++;
        chunk = Buffer.from(chunk);
        chunk[chunk.length - 8] = chunk[chunk.length - 8]! ^ 0xff;
      }
      if (this.bursting) {
        let kept = this.burst.find((held) => held.client === client);
        if (kept === undefined) this.burst.push((kept = { client, chunks: [] }));
        kept.chunks.push(chunk);
        return;
      }
      client.write(chunk);
    });
    client.resume();
  }

  static async start(target: string): Promise<FlipProxy> {
    const proxy = new FlipProxy(target);
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    return proxy;
  }

  get address(): string {
    return `127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/** Checks the replica's retained log entry by entry against the root's (a replica's log may start after a snapshot). */
export async function assertSameChain(replica: ServeProcess, root: ServeProcess, options: RequestOptions = {}): Promise<void> {
  const rootEntries = new Map((await auditLog(root.url, 1000, options)).map((entry) => [entry.seq, entry]));
  for (const entry of await auditLog(replica.url, 1000, options)) assert.deepEqual(entry, rootEntries.get(entry.seq), `entry ${entry.seq} differs from the root's`);
}

/**
 * The nodes and proxies of one suite, in a temp directory named after `label`: `serve` starts a `mercury serve` in
 * DIR/NAME, `proxy` a FlipProxy; all are stopped and the directory removed in the suite's `after`, whatever happened.
 */
export function treeForSuite(label: string): { dir: string; serve: (name: string, args?: string[]) => Promise<ServeProcess>; proxy: (target: string) => Promise<FlipProxy> } {
  const dir = makeTempDir(label);
  const cleanup: (() => Promise<void>)[] = [];
  after(async () => {
    await Promise.all(cleanup.map((stop) => stop()));
    removeDir(dir);
  });
  return {
    dir,
    serve: async (name, args = []) => {
      const node = await startServe(join(dir, name), args);
      cleanup.push(() => stopProcess(node.child));
      return node;
    },
    proxy: async (target) => {
      const proxy = await FlipProxy.start(target);
      cleanup.push(() => proxy.close());
      return proxy;
    },
  };
}

/**
 * Forks a root's chain from its replicas': the root is stopped and restored from `backup`, older than their head, into
 * the suite's NAME, started there with `rootArgs` (the same ports, where the replicas look for it) and written past
 * their head (`fork/new0..5`). A replica that reconnects is refused CHAIN_DIVERGED.
 */
export async function forkRoot(
  tree: { dir: string; serve: (name: string, args?: string[]) => Promise<ServeProcess> },
  oldRoot: ServeProcess,
  backup: string,
  name: string,
  rootArgs: string[],
): Promise<ServeProcess> {
  await stopProcess(oldRoot.child, 'SIGTERM');
  const restored = await runCli(['snapshot', 'restore', backup, '--data-dir', join(tree.dir, name)]);
  assert.equal(restored.code, 0, restored.stderr);
  const root = await tree.serve(name, rootArgs);
  for (let i = 0; i < 6; i++) await put(root, `fork/new${i}`, 'new');
  return root;
}

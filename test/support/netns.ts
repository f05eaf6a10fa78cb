/**
 * A peer that vanishes at the network level, for tests: a network namespace joined to this one by a veth pair, so a
 * process started in it (`spawnIn`) reaches this one's address `hostIp`, and this one reaches it at `peerIp`. `vanish`
 * sets the peer's end of the link down: from then on neither side's packets arrive and nothing sends a FIN or a RST,
 * as when a host loses power or a firewall starts dropping. `heal` brings the link back.
 *
 * Names are unique per process and call (several test files may run at once), and `remove` (idempotent) deletes the
 * namespace, which deletes the veth pair with it; `withNetns` calls it in a finally, and the process's exit handler
 * catches what a crash left. `netnsUnavailable` says why a test must skip (not root, no `ip`, no namespaces).
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

export interface Netns {
  readonly name: string;
  /** This namespace's address on the link. */
  readonly hostIp: string;
  /** The peer namespace's address on the link. */
  readonly peerIp: string;
  /** Starts `command` inside the peer namespace. */
  spawnIn(command: string, args: readonly string[], options?: SpawnOptions): ChildProcess;
  /** The peer's end of the link goes down: packets in both directions are dropped, nothing is signalled. */
  vanish(): void;
  /** The link comes back up. */
  heal(): void;
  remove(): void;
}

let made = 0;
const live = new Set<Netns>();
let cleanupInstalled = false;

/**
 * Namespaces outlive the process that made them: removed at exit, and on SIGINT or SIGTERM (a runner's timeout, a
 * `timeout` command), which then take their default course. Installed with the first namespace.
 */
function installCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  const removeAll = (): void => {
    for (const ns of live) ns.remove();
  };
  process.once('exit', removeAll);
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => {
      removeAll();
      process.kill(process.pid, signal);
    });
}

function ip(args: readonly string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** The MAC address of `dev`, in namespace `ns` (else this one). */
function macOf(dev: string, ns?: string): string {
  const args = [...(ns === undefined ? [] : ['netns', 'exec', ns, 'ip']), '-j', 'link', 'show', dev];
  const [link] = JSON.parse(execFileSync('ip', args, { encoding: 'utf8' })) as { address: string }[];
  return link!.address;
}

/** Why namespaces cannot be made here, or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'network namespaces need root (ip netns add)';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
  } catch (error) {
    return `\`ip netns\` is unavailable: ${(error as Error).message}`;
  }
  return undefined;
}

/** A namespace and its link, up. A /30 per namespace, from the pid and a counter, in 10.200.0.0 to 10.231.255.255. */
export function createNetns(): Netns {
  const index = made++;
  const tag = `${process.pid % 100_000}x${index}`;
  const name = `mvanish-${tag}`;
  const hostDev = `mvh${tag}`;
  const peerDev = `mvp${tag}`;
  // 2^19 /30 subnets from 10.200.0.0: the pid picks a block of 16, the counter one in it.
  const subnet = ((process.pid % 32_768) * 16 + (index % 16)) * 4;
  const address = (offset: number): string => {
    const n = (10 << 24) + (200 << 16) + subnet + offset;
    return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
  };
  const hostIp = address(1);
  const peerIp = address(2);
  let removed = false;
  const ns: Netns = {
    name,
    hostIp,
    peerIp,
    spawnIn: (command, args, options = {}) => spawn('ip', ['netns', 'exec', name, command, ...args], options),
    vanish: () => ip(['netns', 'exec', name, 'ip', 'link', 'set', peerDev, 'down']),
    heal: () => ip(['netns', 'exec', name, 'ip', 'link', 'set', peerDev, 'up']),
    remove: () => {
      if (removed) return;
      removed = true;
      live.delete(ns);
      // The veth pair goes with the namespace; the host's end is deleted too in case the move never happened.
      try {
        ip(['netns', 'del', name]);
      } catch {
        // already gone
      }
      try {
        ip(['link', 'del', hostDev]);
      } catch {
        // already gone
      }
    },
  };
  installCleanup();
  live.add(ns);
  try {
    ip(['netns', 'add', name]);
    ip(['link', 'add', hostDev, 'type', 'veth', 'peer', 'name', peerDev]);
    ip(['link', 'set', peerDev, 'netns', name]);
    ip(['addr', 'add', `${hostIp}/30`, 'dev', hostDev]);
    ip(['link', 'set', hostDev, 'up']);
    ip(['netns', 'exec', name, 'ip', 'addr', 'add', `${peerIp}/30`, 'dev', peerDev]);
    ip(['netns', 'exec', name, 'ip', 'link', 'set', peerDev, 'up']);
    ip(['netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up']);
    // Permanent neighbour entries on both ends: once the link is down, ARP would fail within seconds and the kernel
    // answer EHOSTUNREACH, which a peer behind a router or a dropping firewall never gets. Packets just vanish.
    ip(['neigh', 'replace', peerIp, 'lladdr', macOf(peerDev, name), 'dev', hostDev, 'nud', 'permanent']);
    ip(['netns', 'exec', name, 'ip', 'neigh', 'replace', hostIp, 'lladdr', macOf(hostDev), 'dev', peerDev, 'nud', 'permanent']);
  } catch (error) {
    ns.remove();
    throw error;
  }
  return ns;
}

/** Runs `body` with a fresh namespace, removed afterwards whatever happens. */
export async function withNetns<T>(body: (ns: Netns) => Promise<T>): Promise<T> {
  const ns = createNetns();
  try {
    return await body(ns);
  } finally {
    ns.remove();
  }
}

/** A node running in a namespace (`startNodeIn`): its URLs, and the process to kill. */
export interface NodeInNetns {
  readonly child: ChildProcess;
  readonly url: string;
  /** "host:port" of its replication port, for `upstreams`. */
  readonly replication: string;
}

/**
 * Starts a node with the test limits (NODE_LIMITS_TEST, with `http` over their HTTP limits) in `ns`, listening on its
 * address, following `upstreams` (a root when empty): an in-process node of the built sources, in a process of its
 * own, so its timings match the in-process nodes of the test. The test kills `child`.
 */
export function startNodeIn(ns: Netns, dataDir: string, upstreams: readonly string[], http: Readonly<Record<string, number>> = {}): Promise<NodeInNetns> {
  const index = new URL('../../src/index.js', import.meta.url).href;
  const script = `import { MercuryNode, NODE_LIMITS_TEST, validateConfig } from ${JSON.stringify(index)};
    const config = validateConfig({ dataDir: ${JSON.stringify(dataDir)}, host: ${JSON.stringify(ns.peerIp)}, port: 0, insecure: true, upstreams: ${JSON.stringify(upstreams)} });
    const limits = { ...NODE_LIMITS_TEST, http: { ...NODE_LIMITS_TEST.http, ...${JSON.stringify(http)} } };
    const node = await MercuryNode.start(config, { auth: 'off', limits });
    console.log(JSON.stringify({ url: node.url, replication: node.replicationAddress }));`;
  const child = ns.spawnIn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let said = '';
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-4096)));
  return new Promise((resolve, reject) => {
    child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      said += text;
      const line = said.split('\n')[0]!;
      if (said.includes('\n')) resolve({ child, ...(JSON.parse(line) as { url: string; replication: string }) });
    });
    child.once('exit', (code) => reject(new Error(`the node in ${ns.name} exited (${code}): ${stderr}`)));
  });
}

/** TCP sockets this process holds open (has a descriptor of) to `ns`'s address, as `ss` lists them. */
export function socketsTo(ns: Netns): number {
  const lines = execFileSync('ss', ['-tnpH', 'dst', ns.peerIp], { encoding: 'utf8' }).split('\n');
  return lines.filter((line) => line.includes(`pid=${process.pid},`)).length;
}

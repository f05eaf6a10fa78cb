/**
 * `npm run soak`: a seeded chaos soak of a real tree, longer than the test suite can afford. It checks properties,
 * it measures nothing; it exits 1 when one is violated (2 on a bad command line), and prints the seed first, so that
 * a failing run is tried again with `--seed S`. The seed drives every choice (which node, which key, which action,
 * how long); the timing of real processes does not replay exactly, so a failure may need a few runs to come back.
 *
 * The tree: a root (auth required, signing, --root-url) and --replicas replicas (4..6, default 5) in two levels, each
 * with --trust-key and a replicate token; two replicas follow the root, the others follow one of those, some with the
 * other as a second upstream, and all with the root last (the only node a verifying replica takes a snapshot from).
 * Fixed ports, so that a node restarts where its children and clients look for it.
 *
 * For --seconds (default 180):
 * - writers (4) put, delete and transact on keys of their own (`soak/wN/...`, disjoint, so the last acknowledged
 *   value of each key is known exactly) through random nodes, forwarded writes included. A write that fails may or
 *   may not have been committed: its key is then retired (both outcomes allowed) and the writer goes on with a fresh one.
 * - watchers (3, the client's `watch`, reconnecting) follow a prefix on a random replica; each change must come in
 *   seq order, and at the end they must have had every entry of the root's log that touches their prefix, with no gap
 *   (a snapshot reset starts a new stretch to check from its seq).
 * - one action every 1.5-4 s: SIGKILL a replica and restart it; SIGSTOP a replica or a relay for 1-4 s; POST
 *   /v1/replication/resync on a replica; create a token, see it work on a replica, watch with it, revoke it (the watch
 *   must end and its requests must get 401 within 20 s); SIGKILL the root and restart it.
 *
 * At the end (quiesce): every replica reaches the root's head and holds the same log entries (hash by hash); every
 * node holds, for every key, the last acknowledged value (or, for a retired key, one of the values it may hold); each
 * node stops on SIGTERM with exit code 0 and `mercury verify` passes on its data directory; no node exited that was
 * not killed on purpose, none logged an internal error, an uncaught exception, FATAL or a stack trace; each process's
 * file descriptors and RSS stayed within a bound of their level 10 s after it started.
 *
 * Options: --seconds N (default 180), --seed S (default random), --replicas N (4..6, default 5), --keep (keep the
 * data directories, which a failed run always keeps).
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { connect, op, type MercuryClient, type WatchEvent } from '../src/client/index.js';
import { rssBytes, MiB } from '../test/support/hostile.js';
import { auditLog, request, requestJson, type LogEntryJson } from '../test/support/http.js';
import { makeTempDir, removeDir, runCli, startServe, stopProcess, type ServeProcess } from '../test/support/process.js';
import { Prng } from '../test/support/sim/prng.js';
import { assertSameChain, converged } from '../test/support/tree.js';
import { freePort } from './support/free-port.js';
import { numberWithin, positiveInteger, readOptions } from './support/options.js';

const WRITERS = 4;
const SLOTS_PER_WRITER = 8;
const WATCHERS = 3;
const ACTION_GAP_MS_MIN = 1_500;
const ACTION_GAP_MS_MAX = 4_000;
/** How long a revoked token's watch and requests may go on working on a replica (the revocation travels the tree). */
const REVOKE_EFFECT_MS_MAX = 20_000;
const QUIESCE_CONVERGE_MS_MAX = 60_000;
/** Resource bounds, against the level a process had 10 s after it started (its caches and pools warmed). */
const SAMPLE_EVERY_MS = 5_000;
const SAMPLE_WARM_MS = 10_000;
const FDS_GROWTH_MAX = 64;
const RSS_GROWTH_BYTES_MAX = 192 * MiB;
/** What a node must never print: its own internal errors, a crash, a stack. */
const BAD_STDERR = /INTERNAL|Uncaught|FATAL|MaxListenersExceeded|^\s+at \S.*:\d+:\d+\)?$/m;

const options = readOptions('soak', () => {
  const { values } = parseArgs({
    options: { seconds: { type: 'string', default: '180' }, seed: { type: 'string' }, replicas: { type: 'string', default: '5' }, keep: { type: 'boolean', default: false } },
  });
  return {
    seconds: positiveInteger('seconds', values.seconds),
    seed: values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : numberWithin('seed', values.seed, 0, 2 ** 32 - 1),
    replicas: numberWithin('replicas', values.replicas, 4, 6),
    keep: values.keep,
  };
});

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const startMs = Date.now();
const elapsed = (): string => `${((Date.now() - startMs) / 1000).toFixed(1)}s`;
const violations: string[] = [];
function violation(text: string): void {
  violations.push(`[${elapsed()}] ${text}`);
  process.stderr.write(`soak: VIOLATION [${elapsed()}] ${text}\n`);
}
function note(text: string): void {
  process.stdout.write(`soak: [${elapsed()}] ${text}\n`);
}
const counts = new Map<string, number>();
function count(what: string): void {
  counts.set(what, (counts.get(what) ?? 0) + 1);
}

// --- Nodes -------------------------------------------------------------------------------------------------------------

interface Sample {
  readonly pid: number;
  readonly startedMs: number;
  fdsFirst?: number;
  rssFirst?: number;
  fdsMax: number;
  rssMax: number;
}

interface SoakNode {
  readonly name: string;
  readonly dataDir: string;
  readonly args: readonly string[];
  readonly url: string;
  readonly upstreams: readonly SoakNode[];
  proc: ServeProcess;
  /** A SIGSTOP, a restart or a token check holds the node: no other action starts on it meanwhile. */
  busy: boolean;
  paused: boolean;
  samples: Sample[];
}

/** Children this script killed on purpose: their exit is no crash. */
const killedOnPurpose = new WeakSet<object>();

async function launch(dataDir: string, args: readonly string[], name: string): Promise<ServeProcess> {
  const proc = await startServe(dataDir, args);
  let tail = '';
  proc.child.stderr!.on('data', (text: string) => {
    const lines = (tail + text).split('\n');
    tail = lines.pop()!;
    for (const line of lines) {
      if (BAD_STDERR.test(line)) violation(`${name} (pid ${proc.child.pid}) logged: ${line.slice(0, 600)}`);
      // Errors a node logs under this chaos are expected (a refused snapshot, a lost upstream): counted, for a look.
      const error = /"level":"error","message":"([^"]*)"/.exec(line);
      if (error !== null) count(`node logged error: ${error[1]}`);
    }
  });
  void proc.exited.then((code) => {
    if (!killedOnPurpose.has(proc.child)) violation(`${name} (pid ${proc.child.pid}) exited by itself (${code}); stderr tail: ${proc.stderr().slice(-2000)}`);
  });
  return proc;
}

async function startNode(node: Omit<SoakNode, 'proc' | 'busy' | 'paused' | 'samples'>): Promise<SoakNode> {
  const proc = await launch(node.dataDir, node.args, node.name);
  return { ...node, proc, busy: false, paused: false, samples: [{ pid: proc.child.pid!, startedMs: Date.now(), fdsMax: 0, rssMax: 0 }] };
}

async function kill(node: SoakNode, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  killedOnPurpose.add(node.proc.child);
  if (node.paused) node.proc.child.kill('SIGCONT');
  node.paused = false;
  await stopProcess(node.proc.child, signal);
}

async function restart(node: SoakNode): Promise<void> {
  node.proc = await launch(node.dataDir, node.args, node.name);
  node.samples.push({ pid: node.proc.child.pid!, startedMs: Date.now(), fdsMax: 0, rssMax: 0 });
}

function sample(node: SoakNode): void {
  const current = node.samples.at(-1)!;
  if (node.paused || current.pid !== node.proc.child.pid || node.proc.child.exitCode !== null) return;
  try {
    const fds = readdirSync(`/proc/${current.pid}/fd`).length;
    const rss = rssBytes(current.pid);
    if (current.fdsFirst === undefined && Date.now() - current.startedMs >= SAMPLE_WARM_MS) {
      current.fdsFirst = fds;
      current.rssFirst = rss;
    }
    current.fdsMax = Math.max(current.fdsMax, fds);
    current.rssMax = Math.max(current.rssMax, rss);
  } catch {
    // exited between the check and the read
  }
}

// --- The model of acknowledged writes ----------------------------------------------------------------------------------

/** What a key may hold at the end: the last acknowledged value, and after a failed write, that write's outcome too. */
interface KeyModel {
  acked: string | undefined;
  /** A write that failed without an answer: it may have been committed, then or later. The key is retired. */
  uncertain: (string | undefined)[];
}
const model = new Map<string, KeyModel>();
/** Each acknowledged op with the seq its answer named: the root's entry at that seq must hold it. */
const acks: { seq: number; key: string; value: string | undefined }[] = [];

function keyModel(key: string): KeyModel {
  let entry = model.get(key);
  if (entry === undefined) model.set(key, (entry = { acked: undefined, uncertain: [] }));
  return entry;
}

async function writer(index: number, rng: Prng, nodes: readonly SoakNode[], token: string, running: () => boolean): Promise<void> {
  const clients = new Map<string, MercuryClient>();
  const generation = new Array<number>(SLOTS_PER_WRITER).fill(0);
  const keyOf = (slot: number): string => `soak/w${index}/s${slot}.${generation[slot]}`;
  let written = 0;
  while (running()) {
    const node = rng.pick(nodes);
    if (node.paused) continue;
    let client = clients.get(node.url);
    if (client === undefined) clients.set(node.url, (client = connect(node.url, { token, requestTimeoutMs: 8_000 })));
    const slot = rng.int(0, SLOTS_PER_WRITER - 1);
    const other = (slot + rng.int(1, SLOTS_PER_WRITER - 1)) % SLOTS_PER_WRITER;
    const value = `w${index}.${written++}`;
    const roll = rng.next();
    // The keys and the values each would have if the write is committed.
    const writes: [number, string | undefined][] = roll < 0.6 ? [[slot, value]] : roll < 0.8 ? [[slot, undefined]] : [[slot, value], [other, rng.chance(0.5) ? `${value}b` : undefined]];
    try {
      if (writes.length === 1) {
        if (writes[0]![1] === undefined) {
          // Deleting a missing key commits nothing: its seq is the head's, no entry of its own.
          const result = await client.delete(keyOf(slot));
          if (result.deleted) acks.push({ seq: result.seq, key: keyOf(slot), value: undefined });
        } else acks.push({ seq: (await client.put(keyOf(slot), value)).seq, key: keyOf(slot), value });
      } else {
        const result = await client.txn({ success: writes.map(([s, v]) => (v === undefined ? op.delete(keyOf(s)) : op.put(keyOf(s), v))) });
        if (!result.succeeded) violation(`writer ${index}: a transaction without compares answered succeeded false`);
        for (const [s, v] of writes) if (v !== undefined) acks.push({ seq: result.seq, key: keyOf(s), value: v });
      }
      for (const [s, v] of writes) keyModel(keyOf(s)).acked = v;
      count(writes.length === 1 ? (writes[0]![1] === undefined ? 'delete acked' : 'put acked') : 'txn acked');
    } catch (error) {
      count(`write failed: ${(error as Error).name}`);
      for (const [s, v] of writes) {
        keyModel(keyOf(s)).uncertain.push(v);
        generation[s]!++;
      }
    }
    await sleep(rng.int(5, 60));
  }
  for (const client of clients.values()) client.close();
}

// --- Watchers ------------------------------------------------------------------------------------------------------------

/** A stretch of a watch without a reset: every change from `fromSeq` to `lastSeq` that touches its prefix, by seq. */
interface Stretch {
  fromSeq: number;
  lastSeq: number;
  seqs: Set<number>;
}

interface Watcher {
  readonly name: string;
  readonly prefix: string;
  readonly stretches: Stretch[];
  lastSeq: number;
  stop(): void;
  done: Promise<void>;
}

function startWatcher(name: string, node: SoakNode, prefix: string, token: string): Watcher {
  const client = connect(node.url, { token, requestTimeoutMs: 8_000 });
  const stretches: Stretch[] = [];
  let current: Stretch | undefined;
  const watch = client.watch({
    prefix,
    onSubscribed: (fromSeq) => {
      if (current === undefined) stretches.push((current = { fromSeq, lastSeq: fromSeq - 1, seqs: new Set() }));
      else if (fromSeq !== current.lastSeq + 1 && stretches.length > 0) count('watch resumed elsewhere than its last seq + 1 (a snapshot follows)');
    },
  });
  const watcher: Watcher = {
    name,
    prefix,
    stretches,
    lastSeq: 0,
    stop: () => {
      void watch.return();
      client.close();
    },
    done: Promise.resolve(),
  };
  watcher.done = (async () => {
    try {
      for await (const event of watch as AsyncIterable<WatchEvent>) {
        if (event.type === 'snapshotBegin') {
          count('watch snapshot (reset)');
          current = undefined;
        } else if (event.type === 'snapshotEnd') {
          stretches.push((current = { fromSeq: event.seq + 1, lastSeq: event.seq, seqs: new Set() }));
          watcher.lastSeq = Math.max(watcher.lastSeq, event.seq);
        } else if (event.type === 'put' || event.type === 'delete' || event.type === 'deleteRange') {
          if (current === undefined) {
            violation(`${name}: a change at seq ${event.seq} outside a subscription or inside a snapshot`);
            continue;
          }
          if (event.seq < current.lastSeq) violation(`${name}: change at seq ${event.seq} after one at ${current.lastSeq}`);
          current.lastSeq = Math.max(current.lastSeq, event.seq);
          current.seqs.add(event.seq);
          watcher.lastSeq = Math.max(watcher.lastSeq, event.seq);
          count('watch events');
        }
      }
    } catch (error) {
      violation(`${name}: the watch ended with ${(error as Error).name}: ${(error as Error).message}`);
    }
  })();
  return watcher;
}

/** The seqs of the root's log, from..to, that have an op on a key under `prefix`. */
function touching(log: readonly LogEntryJson[], prefix: string, fromSeq: number, toSeq: number): Set<number> {
  const seqs = new Set<number>();
  for (const entry of log) {
    if (entry.seq < fromSeq || entry.seq > toSeq) continue;
    const keys = entry.ops.map((o) => (o.key === undefined ? o.start : o.key) ?? '');
    if (keys.some((key) => key.startsWith(prefix))) seqs.add(entry.seq);
  }
  return seqs;
}

// --- Actions -------------------------------------------------------------------------------------------------------------

interface Tree {
  readonly root: SoakNode;
  readonly replicas: readonly SoakNode[];
  readonly admin: { authorization: string };
}

async function killAndRestart(node: SoakNode, rng: Prng): Promise<void> {
  await kill(node);
  await sleep(rng.int(200, 2_000));
  await restart(node);
}

async function pause(node: SoakNode, rng: Prng): Promise<void> {
  node.proc.child.kill('SIGSTOP');
  node.paused = true;
  await sleep(rng.int(1_000, 4_000));
  node.proc.child.kill('SIGCONT');
  node.paused = false;
}

async function resync(tree: Tree, node: SoakNode): Promise<void> {
  const response = await request(node.url, 'POST', '/v1/replication/resync', { headers: tree.admin, timeoutMs: 10_000 });
  if (response.status === 202) count('resync accepted');
  else if (response.status === 409 || response.status === 503) count(`resync answered ${response.status}`);
  else violation(`resync on ${node.name}: HTTP ${response.status} ${response.body.toString().slice(0, 300)}`);
}

/** Creates a token, sees it work on `node` (a read and a watch), revokes it: the watch ends, reads get 401. */
async function tokenChurn(tree: Tree, node: SoakNode, serial: number): Promise<void> {
  const json = { ...tree.admin, 'content-type': 'application/json' };
  let created: { id: string; token: string };
  try {
    created = await requestJson(tree.root.url, 'POST', '/v1/auth/tokens', { headers: json, body: JSON.stringify({ name: `soak-churn-${serial}`, scopes: ['read:soak/'] }), timeoutMs: 10_000 });
  } catch {
    count('token churn skipped (root unavailable)');
    return;
  }
  const bearer = { authorization: `Bearer ${created.token}` };
  const readStatus = async (): Promise<number> => (await request(node.url, 'GET', '/v1/kv/soak/probe', { headers: bearer, timeoutMs: 5_000 }).catch(() => ({ status: 0 }))).status;
  const until = async (check: () => boolean | Promise<boolean>): Promise<boolean> => {
    const deadline = Date.now() + REVOKE_EFFECT_MS_MAX;
    while (Date.now() < deadline) {
      if (await check()) return true;
      await sleep(100);
    }
    return false;
  };
  if (!(await until(async () => (await readStatus()) === 404))) {
    violation(`${node.name}: token ${created.id} did not work there within ${REVOKE_EFFECT_MS_MAX} ms (last answer ${await readStatus()})`);
    return;
  }
  const client = connect(node.url, { token: created.token, requestTimeoutMs: 8_000 });
  let subscribed = false;
  const watch = client.watch({ prefix: 'soak/', reconnect: false, onSubscribed: () => (subscribed = true) });
  let ended = false;
  const watching = (async () => {
    try {
      for await (const event of watch as AsyncIterable<WatchEvent>) void event;
    } catch {
      // the end of a revoked watch, as a WatchClosedError or a refusal
    }
    ended = true;
  })();
  if (!(await until(() => subscribed || ended)) || ended) {
    count('token churn: watch did not subscribe (node disturbed)');
  }
  let revoked = false;
  for (let attempt = 0; attempt < 20 && !revoked; attempt++) {
    const response = await request(tree.root.url, 'DELETE', `/v1/auth/tokens?id=${created.id}`, { headers: tree.admin, timeoutMs: 10_000 }).catch(() => undefined);
    if (response !== undefined && (response.status === 200 || response.status === 404)) revoked = true;
    else await sleep(500);
  }
  if (!revoked) violation(`token ${created.id}: could not revoke it on the root within 20 tries`);
  else {
    if (!(await until(() => ended))) violation(`${node.name}: the watch of revoked token ${created.id} still runs ${REVOKE_EFFECT_MS_MAX} ms after the revocation`);
    if (!(await until(async () => (await readStatus()) === 401))) violation(`${node.name}: revoked token ${created.id} still answered ${await readStatus()}, not 401`);
    const onRoot = await request(tree.root.url, 'GET', '/v1/kv/soak/probe', { headers: bearer, timeoutMs: 5_000 }).catch(() => undefined);
    if (onRoot !== undefined && onRoot.status !== 401) violation(`root: revoked token ${created.id} answered ${onRoot.status}`);
    count('token revoked and checked');
  }
  void watch.return();
  client.close();
  await watching;
}

/** One chaos action, chosen by `rng`, on a node that no other action holds. */
async function act(tree: Tree, rng: Prng, serial: number): Promise<void> {
  const free = tree.replicas.filter((node) => !node.busy);
  const roll = rng.next();
  const node = free.length === 0 ? undefined : rng.pick(free);
  if (roll < 0.12) {
    if (tree.root.busy) return;
    tree.root.busy = true;
    note('kill -9 root');
    count('root killed and restarted');
    try {
      await killAndRestart(tree.root, rng);
    } finally {
      tree.root.busy = false;
    }
    return;
  }
  if (node === undefined) return;
  node.busy = true;
  try {
    if (roll < 0.35) {
      note(`kill -9 ${node.name}`);
      count('replica killed and restarted');
      await killAndRestart(node, rng);
    } else if (roll < 0.6) {
      const relay = node.upstreams[0] !== tree.root && rng.chance(0.5) && !node.upstreams[0]!.busy ? node.upstreams[0]! : node;
      if (relay !== node) {
        relay.busy = true;
        node.busy = false;
      }
      note(`SIGSTOP ${relay.name}`);
      count(relay === node ? 'replica paused' : 'relay paused');
      try {
        await pause(relay, rng);
      } finally {
        relay.busy = false;
      }
    } else if (roll < 0.75) {
      note(`resync ${node.name}`);
      await resync(tree, node);
    } else {
      note(`token churn on ${node.name}`);
      await tokenChurn(tree, node, serial);
    }
  } catch (error) {
    count(`action failed: ${(error as Error).message.slice(0, 80)}`);
  } finally {
    node.busy = false;
  }
}

// --- The run -------------------------------------------------------------------------------------------------------------

async function listen(): Promise<string[]> {
  return ['--listen', `127.0.0.1:${await freePort()}`, '--replication-listen', `127.0.0.1:${await freePort()}`];
}

async function main(): Promise<void> {
  process.stdout.write(`soak: seed ${options.seed} (reproduce with --seed ${options.seed} --seconds ${options.seconds} --replicas ${options.replicas})\n`);
  const rng = new Prng(options.seed);
  const dir = makeTempDir('soak');
  const nodes: SoakNode[] = [];
  const watchers: Watcher[] = [];
  try {
    const rootListen = await listen();
    // --root-url: replicas that verify signatures forward writes only to a root URL recorded in a signed entry.
    const rootArgs = ['--auth', 'required', ...rootListen, '--root-url', `http://${rootListen[1]}`];
    const root = await startNode({ name: 'root', dataDir: join(dir, 'root'), args: rootArgs, url: '', upstreams: [] });
    Object.assign(root, { url: root.proc.url });
    nodes.push(root);
    const admin = { authorization: `Bearer ${readFileSync(join(root.dataDir, 'admin-token'), 'utf8').trim()}` };
    const createToken = async (name: string, scopes: string[]): Promise<string> =>
      (await requestJson<{ token: string }>(root.url, 'POST', '/v1/auth/tokens', { headers: { ...admin, 'content-type': 'application/json' }, body: JSON.stringify({ name, scopes }) })).token;
    const replicateTokenFile = join(dir, 'replicate-token');
    writeFileSync(replicateTokenFile, await createToken('soak-replicas', ['replicate']));
    const writeToken = await createToken('soak-writers', ['write:soak/', 'read:soak/']);
    const watchToken = await createToken('soak-watchers', ['read:soak/']);
    const trustKey = join(root.dataDir, 'signing-key.pub.pem');

    // Two replicas under the root; the rest under one of them, some with the other to fail over to. The root is last
    // in every list: a replica that verifies signatures takes snapshots from the root only (README, Replication).
    const replicas: SoakNode[] = [];
    for (let i = 0; i < options.replicas; i++) {
      const level1 = replicas.slice(0, 2);
      const upstreams = i < 2 ? [root] : i % 2 === 0 ? [level1[0]!, root] : [level1[1]!, level1[0]!, root];
      const args = ['--auth', 'required', ...(await listen()), '--upstream', upstreams.map((u) => u.proc.replication).join(','), '--trust-key', trustKey, '--replication-token-file', replicateTokenFile];
      const replica = await startNode({ name: `r${i}`, dataDir: join(dir, `r${i}`), args, url: '', upstreams });
      Object.assign(replica, { url: replica.proc.url });
      replicas.push(replica);
      nodes.push(replica);
      note(`${replica.name} follows ${upstreams.map((u) => u.name).join(', ')}`);
    }
    const tree: Tree = { root, replicas, admin };
    await converged(root.proc, replicas.map((r) => r.proc), { headers: admin }, QUIESCE_CONVERGE_MS_MAX);

    let running = true;
    const writers = Array.from({ length: WRITERS }, (_, i) => writer(i, rng.fork(), nodes, writeToken, () => running));
    const watcherRng = rng.fork();
    for (let i = 0; i < WATCHERS; i++) {
      const prefix = watcherRng.chance(0.3) ? 'soak/' : `soak/w${watcherRng.int(0, WRITERS - 1)}/`;
      const node = watcherRng.pick(replicas);
      watchers.push(startWatcher(`watcher ${i} (${prefix} on ${node.name})`, node, prefix, watchToken));
    }
    const sampler = setInterval(() => nodes.forEach(sample), SAMPLE_EVERY_MS);
    const actions: Promise<void>[] = [];
    const actionRng = rng.fork();
    const endMs = Date.now() + options.seconds * 1_000;
    let serial = 0;
    while (Date.now() < endMs) {
      await sleep(actionRng.int(ACTION_GAP_MS_MIN, ACTION_GAP_MS_MAX));
      actions.push(act(tree, actionRng.fork(), serial++));
    }

    note('quiesce');
    running = false;
    await Promise.all([...writers, ...actions]);
    clearInterval(sampler);
    nodes.forEach(sample);
    await requestJson(root.url, 'PUT', '/v1/kv/soak/end', { headers: admin, body: 'end' });
    await converged(root.proc, replicas.map((r) => r.proc), { headers: admin }, QUIESCE_CONVERGE_MS_MAX).catch((error: Error) => violation(`no convergence: ${error.message.slice(0, 2000)}`));
    for (const replica of replicas) await assertSameChain(replica.proc, root.proc, { headers: admin }).catch((error: Error) => violation(`${replica.name}: ${error.message.slice(0, 500)}`));

    // Every acknowledged write, on every node.
    const reader = (node: SoakNode): MercuryClient => connect(node.url, { token: writeToken });
    for (const node of nodes) {
      const client = reader(node);
      const held = new Map<string, string>();
      for await (const page of client.range('soak/w')) for (const item of page.items) held.set(item.key.toString(), item.value.toString());
      client.close();
      for (const [key, expected] of model) {
        const value = held.get(key);
        held.delete(key);
        if (value === expected.acked) continue;
        if (expected.uncertain.includes(value)) count('retired key holding its failed write');
        else violation(`${node.name}: ${key} is ${JSON.stringify(value)}, the last acknowledged write made it ${JSON.stringify(expected.acked)}${expected.uncertain.length > 0 ? ` (or ${JSON.stringify(expected.uncertain)})` : ''}`);
      }
      for (const key of held.keys()) violation(`${node.name}: ${key} was never written`);
    }

    // Every watcher had every change of its prefix, stretch by stretch.
    const log = await auditLog(root.url, 1000, { headers: admin }).catch((error: Error) => {
      violation(`root: ${error.message.slice(0, 500)}`);
      return [];
    });
    const head = log.at(-1)?.seq ?? 0;
    const bySeq = new Map(log.map((entry) => [entry.seq, entry]));
    for (const ack of acks) {
      const entry = bySeq.get(ack.seq);
      if (entry === undefined) {
        if (ack.seq > head || ack.seq >= (log[0]?.seq ?? 1)) violation(`an acknowledged write of ${ack.key} named seq ${ack.seq}, which the root's log (to ${head}) does not hold`);
        continue;
      }
      const held = entry.ops.some((o) => o.key === ack.key && (ack.value === undefined ? o.op === 'delete' : o.op === 'put' && o.value === ack.value));
      if (!held) violation(`an acknowledged write of ${ack.key} (${JSON.stringify(ack.value)}) named seq ${ack.seq}, whose entry does not hold it: ${JSON.stringify(entry.ops).slice(0, 300)}`);
    }
    for (const watcher of watchers) {
      const lastTouching = Math.max(0, ...touching(log, watcher.prefix, 1, head));
      const deadline = Date.now() + 30_000;
      while (watcher.lastSeq < lastTouching && Date.now() < deadline) await sleep(100);
      watcher.stop();
      await watcher.done;
      const firstRetained = log[0]?.seq ?? 1;
      for (const stretch of watcher.stretches) {
        const expected = touching(log, watcher.prefix, Math.max(stretch.fromSeq, firstRetained), stretch.lastSeq);
        const missed = [...expected].filter((seq) => !stretch.seqs.has(seq));
        const extra = [...stretch.seqs].filter((seq) => seq >= firstRetained && !expected.has(seq));
        if (missed.length > 0 || extra.length > 0) violation(`${watcher.name}: stretch ${stretch.fromSeq}..${stretch.lastSeq} missed ${missed.slice(0, 10).join(',')} had extra ${extra.slice(0, 10).join(',')}`);
      }
      if (watcher.lastSeq < lastTouching) violation(`${watcher.name}: at seq ${watcher.lastSeq}, the last change of its prefix is ${lastTouching}`);
    }

    // Clean stops, sound data directories, bounded processes.
    for (const node of [...replicas].reverse().concat(root)) {
      killedOnPurpose.add(node.proc.child);
      await stopProcess(node.proc.child, 'SIGTERM');
      if (node.proc.child.exitCode !== 0) violation(`${node.name}: SIGTERM exit ${node.proc.child.exitCode ?? node.proc.child.signalCode}`);
      const verified = await runCli(['verify', '--data-dir', node.dataDir]);
      if (verified.code !== 0) violation(`${node.name}: mercury verify exit ${verified.code}: ${verified.stderr.slice(0, 1000)} ${verified.stdout.toString().slice(0, 1000)}`);
    }
    for (const node of nodes)
      for (const s of node.samples) {
        if (s.fdsFirst === undefined || s.rssFirst === undefined) continue;
        if (s.fdsMax > s.fdsFirst + FDS_GROWTH_MAX) violation(`${node.name} pid ${s.pid}: file descriptors ${s.fdsFirst} -> ${s.fdsMax}`);
        if (s.rssMax > s.rssFirst + RSS_GROWTH_BYTES_MAX) violation(`${node.name} pid ${s.pid}: RSS ${(s.rssFirst / MiB).toFixed(0)} -> ${(s.rssMax / MiB).toFixed(0)} MiB`);
      }

    const resources = nodes.map((node) => {
      const fds = Math.max(...node.samples.map((s) => s.fdsMax));
      const rss = Math.max(...node.samples.map((s) => s.rssMax));
      return `${node.name} ${node.samples.length} starts, fds max ${fds}, RSS max ${(rss / MiB).toFixed(0)} MiB`;
    });
    process.stdout.write(
      `soak: summary seed ${options.seed}, ${options.seconds} s, ${options.replicas} replicas, root head ${head}, ${model.size} keys, ${acks.length} acknowledged ops checked at their seq\n` +
        [...counts].sort().map(([what, n]) => `  ${what}: ${n}`).join('\n') +
        `\n  ${resources.join('\n  ')}\n`,
    );
  } finally {
    for (const watcher of watchers) watcher.stop();
    for (const node of nodes) {
      killedOnPurpose.add(node.proc.child);
      if (node.paused) node.proc.child.kill('SIGCONT');
      await stopProcess(node.proc.child);
    }
    if (violations.length === 0 && !options.keep) removeDir(dir);
    else process.stdout.write(`soak: data directories kept in ${dir}\n`);
  }
  if (violations.length > 0) {
    process.stderr.write(`soak: ${violations.length} violation(s), seed ${options.seed}:\n${violations.map((v) => `  ${v}`).join('\n')}\n`);
    process.exit(1);
  }
  process.stdout.write(`soak: no violation (seed ${options.seed})\n`);
}

await main();

/**
 * Fuzzing a replica's client side from a hostile upstream (src/replication/client.ts, downstream.ts, protocol.ts): a
 * fake upstream on raw TCP answers the replica's HELLO with what an honest signing root would send (the real `Upstream`
 * machine over an in-memory store, entries and snapshots signed with a key the replica trusts), then mutated: frames
 * dropped, duplicated, swapped, their length changed, their body changed with the CRC recomputed (so that the message
 * decoder, the chain and the signatures are reached, not only the CRC), bytes flipped, inserted and deleted, the tail
 * cut, and the stream split at random points. Some runs hold the connection open afterwards, for the replica to drop
 * on its own timeouts; some start with an operator's resync, so that the mutated stream is a snapshot.
 *
 * After each stream: the replica answers status and reads; its head is the honest chain's entry at that seq (nothing
 * forged or mutated applied); anything it sent is a HELLO, ACKs, or a REFUSE with a reason the protocol defines; it
 * logged no error but its refusals of forged data; and it reconnects, and the honest stream brings it to the honest head. At the end its chain
 * verifies over /v1/log, and what it held of undecided entries stayed within its bound.
 *
 * The replica runs in this process at the test limits, with the reconnect backoff capped at a few tens of ms: every
 * fuzzed stream is a failed session, and at the default limits the backoff would reach 10 s after a few runs. A
 * failure prints the shrunk input and the MERCURY_TEST_SEED that reproduces it. MERCURY_FUZZ_RUNS raises the runs
 * (default 60).
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, createPrivateKey } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { validateConfig } from '../src/config/index.js';
import type { Op } from '../src/log/index.js';
import { MercuryNode, NODE_LIMITS_TEST, validateNodeLimits, withLimits } from '../src/node/index.js';
import { FrameDecoder, RefuseReason, RootHeartbeats, Upstream, decodeMessage, type Message, type UpstreamAction } from '../src/replication/index.js';
import { Signer } from '../src/trust/index.js';
import { Forger, attackerKey, type SignatureForgery } from './support/forge.js';
import { applyChanges, byteChange, fuzzRuns, nodeMetric, splitPoints, writeInPieces, type ByteChange } from './support/fuzz.js';
import { auditLog, recordingLogger, request, requestJson } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';
import { assertProperty, reproduceWith } from './support/seed.js';
import { MemoryStore } from './support/sim/memory-store.js';
import { eventually, type StatusJson } from './support/tree.js';

const RUNS = fuzzRuns(60);
/** After the stream is written, how long the fake waits for the replica to close before it closes itself. */
const QUIET_MS = 120;
/** A held connection: the replica must drop it on its own within this (its stale time at the test limits is 750 ms). */
const HOLD_CLOSE_MS_MAX = 10_000;
/** After a run starts: the replica must connect to the fuzzed upstream within this (its backoff is at most 40 ms). */
const RECONNECT_MS_MAX = 10_000;
/** After a fuzzed stream: the honest stream must bring the replica to the honest head within this. */
const CATCH_UP_MS_MAX = 15_000;
const LIMITS = validateNodeLimits(withLimits(NODE_LIMITS_TEST, { replication: { reconnectBackoffMsMax: 40 } }));
const DATASET = 'dataset-upstream-fuzz';
const KEYS = 12;
const REASONS = new Set<string>(Object.keys(RefuseReason));
const FRAME_PREFIX_BYTES = 8;
const ATTACKER_KEY = attackerKey();
/** The error line of a refused forgery (src/replication/downstream.ts, refuseData). */
const FORGERY_LOGGED = /^refused data not signed by a trusted key \{"code":"SIGNATURE_(MISSING|INVALID)"/;

/** The honest side: a signing root's chain in memory, and the real serving machine for each connection. */
class HonestRoot {
  readonly store = new MemoryStore(DATASET);
  private readonly signer: Signer;
  private readonly heartbeats: RootHeartbeats;

  constructor(readonly privateKeyPem: string) {
    this.signer = new Signer(createPrivateKey(privateKeyPem));
    this.heartbeats = new RootHeartbeats(this.signer);
  }

  /** Commits `count` signed entries: puts of values of varied sizes on a few keys, and now and then a delete. */
  grow(count: number): void {
    for (let i = 0; i < count; i++) {
      const seq = this.store.head().seq + 1;
      const key = Buffer.from(`uf/k${String((seq * 7) % KEYS).padStart(2, '0')}`);
      const ops: Op[] =
        seq % 5 === 0
          ? [{ type: 'delete', key }]
          : [{ type: 'put', key, value: Buffer.from(`value ${seq} `.padEnd((seq * 37) % 400, 'x')) }, { type: 'put', key: Buffer.from('uf/seq'), value: Buffer.from(String(seq)) }];
      this.store.commit(Date.now(), ops, (hash) => this.signer.signEntry(hash));
    }
  }

  heartbeat() {
    return this.heartbeats.next(this.store.head().seq, Date.now());
  }

  /** A serving machine for one connection, as the root would make it. */
  session(): Upstream {
    return new Upstream({
      nodeId: 'fuzz-root',
      source: this.store,
      ancestors: () => [],
      latestHeartbeat: () => this.heartbeat(),
      limits: LIMITS.replication,
      nowMs: performance.now(),
      signer: this.signer,
    });
  }
}

/** What the fake does to the honest frames of one connection, frame by frame, before the byte changes. */
type FrameChange =
  | { readonly kind: 'drop'; readonly at: number }
  | { readonly kind: 'duplicate'; readonly at: number }
  | { readonly kind: 'swap'; readonly at: number; readonly with: number }
  | { readonly kind: 'length'; readonly at: number; readonly length: number }
  /** The body changed and the CRC recomputed: what a relay, or a decoder bug, would do. */
  | { readonly kind: 'body'; readonly at: number; readonly changes: readonly ByteChange[] }
  /** This frame and those after it forged as a compromised relay would, hashes and digests recomputed (forge.ts). */
  | { readonly kind: 'forge'; readonly at: number; readonly signatures: SignatureForgery };

const frameChange: fc.Arbitrary<FrameChange> = fc.oneof(
  fc.record({ kind: fc.constant('drop' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('duplicate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('swap' as const), at: fc.nat(), with: fc.nat() }),
  fc.record({ kind: fc.constant('length' as const), at: fc.nat(), length: fc.oneof(fc.nat(64), fc.nat(0xffffffff)) }),
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('body' as const), at: fc.nat(), changes: fc.array(byteChange, { minLength: 1, maxLength: 3 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('forge' as const), at: fc.nat(), signatures: fc.constantFrom<SignatureForgery>('keep', 'strip', 'attacker') }) },
);

function reframed(body: Buffer): Buffer {
  const prefix = Buffer.alloc(FRAME_PREFIX_BYTES);
  prefix.writeUInt32BE(body.length, 0);
  prefix.writeUInt32BE(crc32(body), 4);
  return Buffer.concat([prefix, body]);
}

/** `frame` as the forger rewrites it; unchanged if an earlier change left it undecodable (the relay passes it on). */
function forged(forger: Forger, frame: Buffer): Buffer {
  try {
    return forger.rewriteFrame(frame);
  } catch {
    return frame;
  }
}

function applyFrameChanges(frames: readonly Buffer[], changes: readonly FrameChange[]): Buffer[] {
  const out = [...frames];
  for (const change of changes) {
    if (out.length === 0) break;
    const at = change.at % out.length;
    const frame = out[at]!;
    if (change.kind === 'drop') out.splice(at, 1);
    else if (change.kind === 'duplicate') out.splice(at, 0, frame);
    else if (change.kind === 'swap') [out[at], out[change.with % out.length]] = [out[change.with % out.length]!, frame];
    else if (change.kind === 'forge') {
      const forger = new Forger(change.signatures, ATTACKER_KEY);
      out.splice(at, out.length - at, ...out.slice(at).map((frame) => forged(forger, frame)).filter((frame) => frame.length > 0));
    } else if (change.kind === 'length') {
      const copy = Buffer.from(frame);
      copy.writeUInt32BE(change.length, 0);
      out[at] = copy;
    } else {
      const body = applyChanges(frame.subarray(FRAME_PREFIX_BYTES), change.changes);
      out[at] = body.length === 0 ? frame : reframed(body);
    }
  }
  return out;
}

interface Mutation {
  readonly frameChanges: readonly FrameChange[];
  readonly byteChanges: readonly ByteChange[];
  readonly splits: readonly number[];
  /** Keep the connection open after the stream: the replica must leave on its own timeouts. */
  readonly hold: boolean;
}

/** What the replica did on a fuzzed connection. */
interface Exchange {
  /** The honest frames, and what was sent in their place. */
  readonly honest: readonly Buffer[];
  readonly sent: Buffer;
  /** What the replica sent (decoded), and why its bytes did not decode if they did not. */
  readonly messages: Message[];
  readonly garbage: string | undefined;
  readonly closedByReplica: boolean;
  readonly closeMs: number;
}

/** Runs `actions` of an honest session on its socket; `resume` is called on a later turn for each `continue`. */
function perform(socket: net.Socket, session: Upstream, actions: readonly UpstreamAction[]): void {
  for (const action of actions) {
    if (action.type === 'send') socket.write(action.bytes);
    else if (action.type === 'close') socket.end();
    else if (action.type === 'continue') setImmediate(() => perform(socket, session, session.resume(performance.now())));
  }
}

/**
 * The frames an honest session sends in answer to `hello` (the HELLO frame's bytes): WELCOME, the latest heartbeat,
 * the snapshot or the entries up to the window, then one more heartbeat.
 */
function honestAnswer(root: HonestRoot, hello: Buffer): Buffer[] {
  const session = root.session();
  const frames: Buffer[] = [];
  let actions = session.receive(performance.now(), hello);
  while (actions.length > 0) {
    const again = actions.some((action) => action.type === 'continue');
    for (const action of actions) if (action.type === 'send') frames.push(...splitFrames(action.bytes));
    actions = again ? session.resume(performance.now()) : [];
  }
  for (const action of session.heartbeat(performance.now(), root.heartbeat())) if (action.type === 'send') frames.push(action.bytes);
  return frames;
}

/** The frames of a send (one or more whole frames). */
function splitFrames(bytes: Buffer): Buffer[] {
  const frames: Buffer[] = [];
  for (let at = 0; at < bytes.length; ) {
    const end = at + FRAME_PREFIX_BYTES + bytes.readUInt32BE(at);
    frames.push(bytes.subarray(at, end));
    at = end;
  }
  return frames;
}

/**
 * The fake upstream: serves each connection honestly (the real machine, heartbeats every 100 ms, ticks), except the
 * one after `fuzzNext`, whose HELLO it answers with the mutated honest answer.
 */
class FakeUpstream {
  address = '';
  private readonly server = net.createServer((socket) => this.accept(socket));
  private readonly sockets = new Set<net.Socket>();
  private fuzz: { mutation: Mutation; done: (exchange: Exchange) => void; failed: (error: unknown) => void } | undefined;

  constructor(private readonly root: HonestRoot) {}

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.address = `127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }

  /** The next connection gets `mutation` (in place of one a failed run left); resolves once it ended. */
  fuzzNext(mutation: Mutation): Promise<Exchange> {
    return new Promise((done, failed) => (this.fuzz = { mutation, done, failed }));
  }

  /** Closes every connection (the honest one the replica follows): it reconnects after its backoff. */
  dropAll(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  async close(): Promise<void> {
    this.dropAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => this.sockets.delete(socket));
    const fuzz = this.fuzz;
    this.fuzz = undefined;
    if (fuzz === undefined) this.serveHonestly(socket);
    else this.serveFuzzed(socket, fuzz.mutation).then(fuzz.done, fuzz.failed);
  }

  private serveHonestly(socket: net.Socket): void {
    const session = this.root.session();
    const timer = setInterval(() => {
      const nowMs = performance.now();
      perform(socket, session, [...session.tick(nowMs), ...session.heartbeat(nowMs, this.root.heartbeat())]);
    }, 100);
    socket.on('close', () => clearInterval(timer));
    socket.on('data', (chunk: Buffer) => perform(socket, session, session.receive(performance.now(), chunk)));
  }

  private async serveFuzzed(socket: net.Socket, mutation: Mutation): Promise<Exchange> {
    const decoder = new FrameDecoder(LIMITS.replication.childFrameBytesMax);
    const messages: Message[] = [];
    let garbage: string | undefined;
    let closed = false;
    let hello: (frame: Buffer) => void;
    const helloFrame = new Promise<Buffer>((resolve) => (hello = resolve));
    const gone = new Promise<void>((resolve) => socket.once('close', () => ((closed = true), resolve())));
    socket.on('data', (chunk: Buffer) => {
      if (garbage !== undefined) return;
      try {
        for (const frame of decoder.push(chunk)) {
          const message = decodeMessage(frame);
          if (messages.length === 0) hello(reframed(Buffer.concat([Buffer.from([frame.type]), frame.payload])));
          messages.push(message);
        }
      } catch (error) {
        garbage = (error as Error).message;
      }
    });
    const first = await Promise.race([helloFrame, gone.then(() => undefined)]);
    const honest = first === undefined ? [] : honestAnswer(this.root, first);
    const joined = Buffer.concat(applyFrameChanges(honest, mutation.frameChanges));
    const sent = applyChanges(joined, mutation.byteChanges);
    await writeInPieces(socket, sent, splitPoints(mutation.splits, sent.length));
    const startedMs = performance.now();
    const waitMs = mutation.hold ? HOLD_CLOSE_MS_MAX : QUIET_MS;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([gone, new Promise((resolve) => (timer = setTimeout(resolve, waitMs)))]);
    clearTimeout(timer);
    const closedByReplica = closed;
    const closeMs = performance.now() - startedMs;
    socket.destroy();
    await gone;
    return { honest, sent, messages, garbage, closedByReplica, closeMs };
  }
}

/** `promise`, or a failure saying `describe()` once `timeoutMs` passed. */
async function within<T>(promise: Promise<T>, timeoutMs: number, describe: () => Promise<string>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => void describe().then((text) => reject(new Error(`after ${timeoutMs} ms: ${text}`)), reject), timeoutMs)));
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

interface Run {
  /** Entries the root commits before the run (what the stream carries). */
  readonly grow: number;
  /** Start the run with an operator's resync: the fuzzed stream is a snapshot. */
  readonly resync: boolean;
  readonly mutation: Mutation;
}

const run: fc.Arbitrary<Run> = fc.record({
  grow: fc.integer({ min: 1, max: 12 }),
  resync: fc.nat(5).map((n) => n === 0),
  mutation: fc.record({
    frameChanges: fc.array(frameChange, { maxLength: 3 }),
    // Mostly none: a changed byte outside a frame's body fails its CRC, and the layers past it are the ones to reach.
    byteChanges: fc.oneof({ weight: 2, arbitrary: fc.constant([]) }, { weight: 1, arbitrary: fc.array(byteChange, { minLength: 1, maxLength: 3 }) }),
    splits: fc.array(fc.nat(), { maxLength: 6 }),
    hold: fc.nat(9).map((n) => n === 0),
  }),
});

describe('upstream fuzz', () => {
  const dir = makeTempDir('upstream-fuzz');
  const errorLog: string[] = [];
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const root = new HonestRoot(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
  const upstream = new FakeUpstream(root);
  let replica: MercuryNode | undefined;

  before(async () => {
    root.grow(20);
    await upstream.listen();
    const trustKey = join(dir, 'root.pub.pem');
    writeFileSync(trustKey, publicKey.export({ type: 'spki', format: 'pem' }));
    replica = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'replica'), port: 0, upstreams: [upstream.address], trustKeyFiles: [trustKey] }), {
      auth: 'off',
      limits: LIMITS,
      logger: recordingLogger(errorLog),
    });
  });
  after(async () => {
    await replica?.close();
    await upstream.close();
    removeDir(dir);
  });

  const status = (): Promise<StatusJson & { trust: { lastRefusal: { code: string } | null } }> => requestJson(replica!.url, 'GET', '/v1/status');

  async function caughtUp(): Promise<void> {
    const head = root.store.head();
    await eventually(
      async () => (await status()).headHash === head.hash.toString('hex'),
      async () => `replica ${JSON.stringify(await status())}, root at ${head.seq}; errors: ${JSON.stringify(errorLog)}`,
      CATCH_UP_MS_MAX,
    );
  }

  test('upstream fuzz: a replica with --trust-key applies only the honest chain, refuses with a defined reason, and recovers', async (t) => {
    t.diagnostic(reproduceWith());
    await caughtUp();
    const kinds = new Map<string, number>();
    const count = (kind: string): void => void kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
    let runs = 0;
    await assertProperty(
      fc.asyncProperty(run, async ({ grow, resync, mutation }) => {
        runs++;
        // Where the last run left the replica, should it have failed (fast-check then shrinks on the same replica).
        await caughtUp();
        errorLog.length = 0;
        root.grow(grow);
        const exchange = upstream.fuzzNext(mutation);
        // The replica leaves the honest connection and comes back to the fuzzed one: at once after a resync, after its
        // backoff (capped at 40 ms) when the connection drops.
        if (resync && !(await status()).replication.resyncPending) replica!.resync();
        else upstream.dropAll();
        const { honest, sent, messages, garbage, closedByReplica, closeMs } = await within(exchange, RECONNECT_MS_MAX, async () => `the replica did not come to the fuzzed upstream: ${JSON.stringify(await status())}`);
        const what = `${honest.length} honest frames (${resync ? 'snapshot' : 'stream'}), sent as ${sent.toString('hex').slice(0, 400)}`;

        // The replica answers, and holds only the honest chain.
        const now = await status();
        const honestHash = root.store.hashAt(now.seq);
        assert.equal(now.headHash, honestHash?.toString('hex'), `${what}: the replica's head at ${now.seq} is not the honest entry's`);
        const read = await request(replica!.url, 'GET', '/v1/kv/uf/seq');
        assert.ok(read.status === 200 || read.status === 404, `${what}: a read answered ${read.status}`);
        assert.equal(garbage, undefined, `${what}: the replica sent bytes that are not its frames: ${garbage}`);
        messages.forEach((message, index) => {
          assert.ok(message.type === (index === 0 ? 'hello' : 'ack') || message.type === 'refuse', `${what}: the replica sent ${message.type}`);
          if (message.type !== 'refuse') return;
          assert.ok(REASONS.has(message.reason), `${what}: REFUSE with reason ${message.reason}`);
          assert.ok(message.message.length > 0, `${what}: REFUSE without a message`);
          count(`refuse ${message.reason}`);
        });
        if (mutation.hold) assert.ok(closedByReplica, `${what}: the replica kept a held connection open for ${closeMs.toFixed(0)} ms`);
        if (closedByReplica) count(mutation.hold ? 'closed a held connection' : 'closed');
        const failure = now.replication.lastFailure ?? '';
        assert.doesNotMatch(failure, /INTERNAL|TypeError|RangeError|undefined|\[object/, `${what}: lastFailure ${failure}`);
        count(`failure ${/^[A-Z_]+(?=:)/.exec(failure)?.[0] ?? failure.replace(/\d+/g, 'N').slice(0, 48)}`);
        // A forgery is logged as an error, and only a forgery.
        assert.deepEqual(errorLog.filter((line) => !FORGERY_LOGGED.test(line)), [], `${what}: the replica logged errors`);

        // Then the honest stream brings it to the honest head.
        await caughtUp();
        const value = await request(replica!.url, 'GET', '/v1/kv/uf/seq');
        const honestValue = root.store.keySpace.get('uf/seq')?.value.toString();
        assert.equal(value.body.toString(), honestValue, `${what}: the replica read ${value.body.toString()} after catching up`);
      }),
      { numRuns: RUNS, includeErrorInReport: true },
    );
    t.diagnostic(`${runs} runs to seq ${root.store.head().seq}; outcomes: ${JSON.stringify([...kinds].sort())}`);
    // The generators reach the layers past the CRC: a signature refusal, and failures of several kinds.
    assert.ok([...kinds.keys()].some((kind) => kind.startsWith('refuse SIGNATURE_')), `no signature refused: ${JSON.stringify([...kinds])}`);
    assert.ok([...kinds.keys()].filter((kind) => kind.startsWith('failure ')).length >= 3, `too few kinds of failure: ${JSON.stringify([...kinds])}`);
  });

  test('upstream fuzz: afterwards the replica chain verifies and it held entries within its bound', async () => {
    await caughtUp();
    await auditLog(replica!.url);
    const heldPeak = nodeMetric(replica!, 'mercury_replication_held_bytes_peak');
    assert.ok(heldPeak <= LIMITS.replication.replicaHeldBytesMax + LIMITS.replication.frameBytesMax, `held ${heldPeak} bytes`);
    assert.deepEqual(errorLog.filter((line) => !FORGERY_LOGGED.test(line)), []);
  });
});

/**
 * What the fuzz tests of the binary ports share (test/wire-fuzz.test.ts, watch-fuzz, replication-fuzz): mutations of
 * valid byte streams (bytes flipped, inserted and deleted, the tail cut); the stream sent in pieces, each its own write
 * a turn apart, so that frames arrive split at random points; the wait for the node's answers; and the node fuzzed.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type Socket } from 'node:net';
import { after, before } from 'node:test';
import fc from 'fast-check';
import { validateConfig } from '../../src/config/index.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../../src/node/index.js';
import { recordingLogger, requestJson } from './http.js';
import { makeTempDir, removeDir } from './process.js';
import { assertProperty } from './seed.js';

/** How many property runs a fuzz test makes: MERCURY_FUZZ_RUNS, else `runs`. */
export function fuzzRuns(runs: number): number {
  return Number(process.env.MERCURY_FUZZ_RUNS ?? runs);
}

/**
 * A node at the test limits, with auth off or required (then `adminToken` is its bootstrap admin token), whose
 * error-level log lines go to `errorLog`, holding the keys fz/a to fz/j (values "value 0" to "value 9").
 */
async function startFuzzNode(name: string, errorLog: string[], auth: 'off' | 'required'): Promise<{ node: MercuryNode; dir: string; adminToken: string | undefined }> {
  const dir = makeTempDir(name);
  const node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0 }), { auth, limits: NODE_LIMITS_TEST, logger: recordingLogger(errorLog) });
  const adminToken = auth === 'off' ? undefined : readFileSync(join(dir, 'admin-token'), 'utf8').trim();
  const headers: Record<string, string> = adminToken === undefined ? {} : { authorization: `Bearer ${adminToken}` };
  for (let i = 0; i < 10; i++) await requestJson(node.url, 'PUT', `/v1/kv/fz/${String.fromCharCode(97 + i)}`, { body: `value ${i}`, headers });
  return { node, dir, adminToken };
}

/** The value of a gauge or counter without labels in the node's metrics. */
export function nodeMetric(node: MercuryNode, name: string): number {
  const line = node.metrics.render().split('\n').find((text) => text.startsWith(`${name} `));
  return Number(line?.split(' ')[1]);
}

/** A connection the test reads its answers from: the node's last byte that counts, and whether it closed. */
interface Listening {
  readonly lastByteMs: () => number;
  readonly closed: () => boolean;
  readonly gone: Promise<void>;
}

/**
 * Waits until the node closed the connection, or sent nothing for `quietMs` (its answers are in; a late one is not
 * checked, never wrongly failed), or `maxMs` passed.
 */
async function settle({ lastByteMs, closed, gone }: Listening, quietMs: number, maxMs: number): Promise<void> {
  const started = Date.now();
  while (!closed() && Date.now() - started < maxMs && Date.now() - lastByteMs() < quietMs) await Promise.race([gone, new Promise((resolve) => setTimeout(resolve, 20))]);
}

export type ByteChange =
  | { readonly kind: 'insert'; readonly at: number; readonly bytes: Uint8Array }
  | { readonly kind: 'delete'; readonly at: number; readonly length: number }
  | { readonly kind: 'flip'; readonly at: number; readonly byte: number }
  | { readonly kind: 'truncate'; readonly at: number };

export const byteChange: fc.Arbitrary<ByteChange> = fc.oneof(
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 6 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 6 }) }),
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), byte: fc.nat(255) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
);

/** `bytes` with each change applied in turn (positions wrap around the length at that point). */
export function applyChanges(bytes: Buffer, changes: readonly ByteChange[]): Buffer {
  let out = Buffer.from(bytes);
  for (const change of changes) {
    const at = change.at % (out.length + 1);
    if (change.kind === 'insert') out = Buffer.concat([out.subarray(0, at), change.bytes, out.subarray(at)]);
    else if (change.kind === 'delete') out = Buffer.concat([out.subarray(0, at), out.subarray(at + change.length)]);
    else if (change.kind === 'truncate') out = out.subarray(0, at);
    else if (at < out.length) out[at] = change.byte;
  }
  return out;
}

/** Where to cut a stream of `length` bytes into writes: sorted, distinct offsets within it. */
export function splitPoints(points: readonly number[], length: number): number[] {
  return [...new Set(points.map((at) => at % (length + 1)))].sort((a, b) => a - b);
}

/** Writes `bytes` cut at `splits`, each piece its own write a turn after the last (unless the socket is gone). */
export async function writeInPieces(socket: Socket, bytes: Buffer, splits: readonly number[]): Promise<void> {
  let from = 0;
  for (const at of [...splits, bytes.length]) {
    if (at > from && !socket.destroyed) socket.write(bytes.subarray(from, at));
    from = Math.max(from, at);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** The node of a fuzz suite, and the error-level lines it logged. */
export interface FuzzedNode {
  readonly node: MercuryNode;
  /** With auth required: the node's admin token. */
  readonly adminToken: string | undefined;
  readonly errorLog: string[];
}

/** Inside a describe: its node (startFuzzNode) starts before its tests, and is closed and its directory removed after. */
export function fuzzNodeHooks(name: string, auth: 'off' | 'required' = 'off'): FuzzedNode {
  const errorLog: string[] = [];
  let started: { node: MercuryNode; dir: string; adminToken: string | undefined } | undefined;
  before(async () => {
    started = await startFuzzNode(name, errorLog, auth);
  });
  after(async () => {
    await started?.node.close();
    if (started !== undefined) removeDir(started.dir);
  });
  return {
    get node(): MercuryNode {
      assert.ok(started !== undefined, 'the fuzzed node is started before the tests');
      return started.node;
    },
    get adminToken(): string | undefined {
      return started?.adminToken;
    },
    errorLog,
  };
}

/**
 * Runs `runs` properties, each of one to four streams sent at once on connections of their own (four times the
 * streams in the same time, and the node's bounds and sweeps see several connections at once): `exchange` sends one
 * and gathers what the node answered, `check` judges it and counts the kinds of answer it saw. Seeded
 * (MERCURY_TEST_SEED). Returns the counts, for the test to check that its generators reach both successes and errors.
 */
export async function fuzzStreams<Stream, Answers>(
  stream: fc.Arbitrary<Stream>,
  exchange: (input: Stream) => Promise<Answers>,
  check: (input: Stream, answers: Answers, count: (kind: string) => void) => void,
  runs: number,
): Promise<Map<string, number>> {
  const kinds = new Map<string, number>();
  const count = (kind: string): void => void kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  await assertProperty(
    fc.asyncProperty(fc.array(stream, { minLength: 1, maxLength: 4 }), async (inputs) => {
      const answers = await Promise.all(inputs.map(exchange));
      answers.forEach((answer, index) => check(inputs[index]!, answer, count));
    }),
    { numRuns: runs, includeErrorInReport: true },
  );
  return kinds;
}

export interface FuzzTarget {
  readonly host: string;
  readonly port: number;
  /** Each chunk from the node; false when it is no answer to what was sent (a heartbeat), which does not delay `settle`. */
  readonly received: (chunk: Buffer) => boolean;
  /** Runs once connected, before the stream is sent (a handshake). */
  readonly opening?: (socket: Socket, closed: () => boolean) => Promise<void>;
}

/**
 * Connects, sends `bytes` cut at `splits` (writeInPieces), waits for the node's answers (settle), and disconnects.
 * Returns whether the node had closed the connection by then.
 */
export async function sendStream({ host, port, received, opening }: FuzzTarget, bytes: Buffer, splits: readonly number[], quietMs: number, maxMs: number): Promise<boolean> {
  const socket = connect({ host: host.replace(/^\[|\]$/g, ''), port });
  let lastByteMs = Date.now();
  let closed = false;
  socket.on('data', (chunk: Buffer) => {
    if (received(chunk)) lastByteMs = Date.now();
  });
  socket.on('error', () => {});
  const gone = new Promise<void>((resolve) => socket.once('close', () => ((closed = true), resolve())));
  await Promise.race([new Promise<void>((resolve) => socket.once('connect', () => resolve())), gone]);
  await opening?.(socket, () => closed);
  await writeInPieces(socket, bytes, splits);
  await settle({ lastByteMs: () => lastByteMs, closed: () => closed, gone }, quietMs, maxMs);
  const closedByNode = closed;
  socket.destroy();
  await gone;
  return closedByNode;
}

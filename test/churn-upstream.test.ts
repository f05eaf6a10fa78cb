/**
 * Churn on a replica's outbound side: a real `mercury serve --upstream` replica follows an upstream that misbehaves,
 * and its clients leave in an unusual way. Whatever the replica counts for them must return to where it was once they
 * left, whatever the upstream does: a per-client slot held after its client is gone is a leak, because the caps it
 * counts against are shared with every other client.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { encodePut } from '../src/api/index.js';
import { FrameDecoder, REPLICATION_LIMITS, SnapshotDigest, decodeMessage, encodeMessage } from '../src/replication/index.js';
import { metricValue, request, waitUntil } from './support/http.js';
import { startFakeServer, type FakeServer } from './support/net.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { RawWire } from './support/wire.js';

/** A seq the upstream claims for every forwarded write and never sends: the replica waits for it (30 s at most). */
const NEVER_SENT_SEQ = 1_000_000;
/** The replica's cap on forwarded writes in flight (src/limits.ts FORWARDED_WRITES_MAX). */
const FORWARDED_WRITES_MAX = 64;
/** HTTP and wire writes, below the replica's cap on forwarded writes in flight together. */
const HTTP_WRITES = 40;
const WIRE_WRITES = 20;
const UPSTREAM_NODE_ID = 'churn-upstream';
/** Pipelined writes: connections, and writes on each (a write runs alone on its connection). */
const PIPELINED_CONNECTIONS = 5;
const PIPELINED_PER_CONNECTION = 8;
const HEARTBEAT_MS = 1_000;

/**
 * A replication upstream that joins each replica to an empty dataset at seq 1 (an empty snapshot), names `httpUrl` as
 * its HTTP API (where the replica forwards writes), and then sends only heartbeats at seq 1, so that the replica stays
 * streaming from it without ever receiving a later entry.
 */
async function joiningUpstream(httpUrl: string): Promise<{ address: string; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const beat = (): Buffer => encodeMessage({ type: 'heartbeat', rootSeq: 1, rootTimeMs: Date.now(), path: [UPSTREAM_NODE_ID] });
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    const decoder = new FrameDecoder(REPLICATION_LIMITS.childFrameBytesMax);
    let answered = false;
    socket.on('data', (chunk: Buffer) => {
      for (const frame of decoder.push(chunk)) {
        if (answered || decodeMessage(frame).type !== 'hello') continue;
        answered = true;
        const hash = Buffer.alloc(32, 1);
        socket.write(encodeMessage({ type: 'welcome', datasetId: 'churn-dataset', nodeId: UPSTREAM_NODE_ID, httpUrl, path: [UPSTREAM_NODE_ID], head: { seq: 1, hash }, mode: 'snapshot', fromSeq: 0 }));
        socket.write(encodeMessage({ type: 'snapshotBegin', seq: 1, hash, keyCount: 0, signed: false }));
        socket.write(encodeMessage({ type: 'snapshotEnd', digest: new SnapshotDigest().digest(), signature: undefined }));
        socket.write(beat());
        const timer = setInterval(() => socket.write(beat()), HEARTBEAT_MS);
        timers.add(timer);
        socket.on('close', () => {
          clearInterval(timer);
          timers.delete(timer);
        });
      }
    });
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: async () => {
      for (const timer of timers) clearInterval(timer);
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Sends a PUT on a connection of its own and leaves the connection open: the caller destroys it. */
function putOnNewConnection(serve: ServeProcess, key: string): net.Socket {
  const { hostname, port } = new URL(serve.url);
  const socket = net.connect({ host: hostname, port: Number(port) });
  socket.on('error', () => {});
  socket.write(`PUT /v1/kv/${key} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nContent-Length: 1\r\n\r\nx`);
  return socket;
}

/** Sends `count` pipelined PUTs on one connection and leaves it open. */
function pipelinedPuts(serve: ServeProcess, prefix: string, count: number): net.Socket {
  const { hostname, port } = new URL(serve.url);
  const socket = net.connect({ host: hostname, port: Number(port) });
  socket.on('error', () => {});
  for (let i = 0; i < count; i++) socket.write(`PUT /v1/kv/${prefix}${i} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nContent-Length: 1\r\n\r\nx`);
  return socket;
}

function openFds(serve: ServeProcess): number {
  return readdirSync(`/proc/${serve.child.pid}/fd`).length;
}

function seqWaiters(serve: ServeProcess): Promise<number> {
  return metricValue(serve.url, /^mercury_seq_waiters /);
}

/** The gauge of writes forwarded and not answered yet; absent from /metrics fails (metricValue would read it as 0). */
async function forwardsInFlight(serve: ServeProcess): Promise<number> {
  const match = /^mercury_forwards_in_flight (\d+)$/m.exec((await request(serve.url, 'GET', '/metrics')).body.toString());
  assert.ok(match !== null, 'no mercury_forwards_in_flight in /metrics');
  return Number(match[1]);
}

describe('churn: what a replica holds for clients whose writes it forwarded', () => {
  const dir = makeTempDir('churn-upstream');
  let replica: ServeProcess | undefined;
  let http: FakeServer | undefined;
  let upstream: { address: string; close: () => Promise<void> } | undefined;
  after(async () => {
    if (replica !== undefined) await stopProcess(replica.child);
    await upstream?.close();
    await http?.close();
    removeDir(dir);
  });

  test('churn: forwarded writes waiting for their seq stop waiting when their clients hang up', async () => {
    // Before: a replica that had forwarded a write waited for the write's seq (up to forwardedWriteWaitMs, 30 s) whatever
    // became of its client, each wait holding one of the node's parked reads (SEQ_WAITERS_MAX): 60 of 60 writes whose
    // clients hung up still parked 10 s later (HTTP and wire alike). An upstream that answers writes at a seq it never sends (a hostile one, or
    // a root that flaps between its answer and the entry) made every write parked for that long.
    http = await startFakeServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ succeeded: true, seq: NEVER_SENT_SEQ }));
    });
    upstream = await joiningUpstream(http.url);
    replica = await startServe(join(dir, 'replica'), ['--upstream', upstream.address]);
    const serve = replica;
    await waitUntil('the replica joined its upstream', async () => (await metricValue(serve.url, /^mercury_applied_seq /)) === 1);
    const sockets: net.Socket[] = [];
    for (let i = 0; i < HTTP_WRITES; i++) sockets.push(putOnNewConnection(serve, `churn/${i}`));
    const wire = await RawWire.ready(serve.wire);
    for (let id = 1; id <= WIRE_WRITES; id++) wire.send(encodePut(id, Buffer.from(`churn/wire/${id}`), Buffer.from('x')));
    // Every write was forwarded and answered, and waits for its seq, before its client leaves.
    await waitUntil(`${HTTP_WRITES + WIRE_WRITES} forwarded writes wait for their seq`, async () => (await seqWaiters(serve)) === HTTP_WRITES + WIRE_WRITES);
    for (const socket of sockets) socket.destroy();
    wire.socket.destroy();
    // Well within the writes' own 30 s: nothing but the hang-ups can have ended them.
    await waitUntil('no forwarded write waits once its client left', async () => (await seqWaiters(serve)) === 0, 10_000);

    // Pipelined: node:http closes only the answer of a connection's first request when the connection drops, not those
    // queued behind it, which would keep waiting if they had started. A write runs alone on its connection
    // (src/server/http-server.ts), so one of each connection's writes waits, and the rest never start once it is gone.
    const pipelined: net.Socket[] = [];
    for (let c = 0; c < PIPELINED_CONNECTIONS; c++) pipelined.push(pipelinedPuts(serve, `pipelined/${c}/`, PIPELINED_PER_CONNECTION));
    await waitUntil(`one pipelined write per connection waits for its seq`, async () => (await seqWaiters(serve)) === PIPELINED_CONNECTIONS);
    for (const socket of pipelined) socket.destroy();
    await waitUntil('no pipelined forwarded write waits once its connection closed', async () => (await seqWaiters(serve)) === 0, 10_000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(await seqWaiters(serve), 0, 'the writes queued behind them never started');
  });
});

describe('churn: what a replica holds for clients whose writes its upstream does not answer', () => {
  const dir = makeTempDir('churn-upstream-silent');
  let replica: ServeProcess | undefined;
  let http: FakeServer | undefined;
  let upstream: { address: string; close: () => Promise<void> } | undefined;
  const unanswered: ServerResponse[] = [];
  after(async () => {
    if (replica !== undefined) await stopProcess(replica.child);
    for (const res of unanswered) res.destroy();
    await upstream?.close();
    await http?.close();
    removeDir(dir);
  });

  /** The replica of this suite, started once: it follows `joiningUpstream` and forwards writes to a root that holds them. */
  async function replicaBehindSilentRoot(): Promise<ServeProcess> {
    if (replica !== undefined) return replica;
    http = await startFakeServer((_req, res) => unanswered.push(res));
    upstream = await joiningUpstream(http.url);
    replica = await startServe(join(dir, 'replica'), ['--upstream', upstream.address]);
    const serve = replica;
    await waitUntil('the replica joined its upstream', async () => (await metricValue(serve.url, /^mercury_applied_seq /)) === 1);
    return serve;
  }

  test('churn: writes forwarded to an upstream that does not answer end when their clients hang up', async () => {
    // Before: each held its connection to the upstream and its place among the replica's FORWARDED_WRITES_MAX until
    // FORWARD_TIMEOUT_MS (30 s), whatever became of its client: 64 clients that hung up left 64 sockets open to a silent
    // upstream (the replica's open files 26 -> 154, still 90 3 s later), and every other client's write was refused
    // OVERLOADED until the timeout. A root that stalls (stopped, swapping) makes the same of every client that gives up.
    const serve = await replicaBehindSilentRoot();
    const baseline = openFds(serve);
    const sockets: net.Socket[] = [];
    for (let i = 0; i < FORWARDED_WRITES_MAX; i++) sockets.push(putOnNewConnection(serve, `silent/${i}`));
    // Every write reached the upstream before its client leaves: otherwise the test would measure nothing.
    await waitUntil(`${FORWARDED_WRITES_MAX} writes reached the upstream`, () => Promise.resolve(unanswered.length === FORWARDED_WRITES_MAX));
    assert.equal(await forwardsInFlight(serve), FORWARDED_WRITES_MAX);
    for (const socket of sockets) socket.destroy();
    // Well within FORWARD_TIMEOUT_MS: nothing but the hang-ups can have ended them.
    await waitUntil('the replica closed its connections to the upstream', () => Promise.resolve(unanswered.every((res) => res.closed)), 10_000);
    await waitUntil(`the replica is back to its ${baseline} open files`, () => Promise.resolve(openFds(serve) <= baseline), 10_000);
    assert.equal(await forwardsInFlight(serve), 0);
  });

  test('churn: mercury_forwards_in_flight counts the writes a slow root has not answered, and falls to 0 once it answers', async () => {
    const serve = await replicaBehindSilentRoot();
    const before = unanswered.length;
    const sockets = [putOnNewConnection(serve, 'slow/0'), putOnNewConnection(serve, 'slow/1')];
    const answers = sockets.map((socket) => new Promise<string>((resolve) => socket.once('data', (chunk: Buffer) => resolve(chunk.toString('latin1')))));
    await waitUntil('both writes reached the root', () => Promise.resolve(unanswered.length === before + 2));
    assert.equal(await forwardsInFlight(serve), 2);
    // The root answers at the seq the replica already holds: the forward ends, and the write is answered at once.
    for (const res of unanswered.slice(before)) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ succeeded: true, seq: 1 }));
    }
    for (const answer of answers) assert.match(await answer, /^HTTP\/1\.1 200 /);
    assert.equal(await forwardsInFlight(serve), 0);
    for (const socket of sockets) socket.destroy();
  });
});

/**
 * Helpers for the hostile-input tests: each reproduces an attack on a real node and checks that the node stayed
 * responsive while it ran (every liveness probe answered in time) and that its memory stayed under a stated bound.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net, { connect } from 'node:net';
import { performance } from 'node:perf_hooks';
import { parseRawResponse, request, type RawResponse } from './http.js';
import { drainedOrClosed } from '../../src/server/http-io.js';
import { eventually } from './tree.js';

/** What the issue asks of every attack: a liveness probe still answers this fast while it runs. */
export const HEALTHZ_ANSWER_MS_MAX = 50;

/** Probes per check, one after another, each on a fresh connection (as a load balancer's probe comes). */
const HEALTHZ_PROBES = 3;

/**
 * Nanoseconds the main thread of process `pid` has spent runnable but waiting for a CPU (the second field of
 * /proc/PID/schedstat). The node's event loop and the prober each run on their process's main thread.
 */
function cpuWaitNs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/schedstat`, 'utf8').trim().split(/\s+/);
  const waitNs = Number(fields[1]);
  assert.ok(Number.isFinite(waitNs), `no run delay in /proc/${pid}/schedstat`);
  return waitNs;
}

/**
 * `GET /healthz` HEALTHZ_PROBES times, each on a fresh connection; every probe must answer 200 within
 * HEALTHZ_ANSWER_MS_MAX. What is bounded is the time the node takes to answer: the probe's wall time less the time the
 * kernel kept the node's main thread, and the prober's, waiting for a CPU (tests run beside other work on a shared
 * machine). An event loop blocked by the attack is running, not waiting, so every millisecond of it counts. `nodePid`
 * is the node's process (this one for an in-process node). Fails naming every time measured; returns the slowest.
 */
export async function assertHealthzAnswers(baseUrl: string, what: string, nodePid: number = process.pid): Promise<number> {
  const pids = nodePid === process.pid ? [process.pid] : [nodePid, process.pid];
  const timesMs: number[] = [];
  const wallMs: number[] = [];
  for (let probe = 0; probe < HEALTHZ_PROBES; probe++) {
    const waitBeforeNs = pids.reduce((sum, pid) => sum + cpuWaitNs(pid), 0);
    const startMs = performance.now();
    const response = await request(baseUrl, 'GET', '/healthz', { timeoutMs: 5_000 });
    const elapsedMs = performance.now() - startMs;
    const waitedMs = (pids.reduce((sum, pid) => sum + cpuWaitNs(pid), 0) - waitBeforeNs) / 1e6;
    assert.equal(response.status, 200, `${what}: /healthz answered ${response.status}`);
    wallMs.push(elapsedMs);
    timesMs.push(Math.max(0, elapsedMs - waitedMs));
  }
  const slowestMs = Math.max(...timesMs);
  assert.ok(
    slowestMs <= HEALTHZ_ANSWER_MS_MAX,
    `${what}: /healthz took ${timesMs.map((ms) => ms.toFixed(1)).join(', ')} ms without waits for a CPU ` +
      `(${wallMs.map((ms) => ms.toFixed(1)).join(', ')} ms wall); every probe must answer within ${HEALTHZ_ANSWER_MS_MAX} ms`,
  );
  return slowestMs;
}

export const MiB = 1024 * 1024;

/** Resident memory of this process, or of process `pid` (a `mercury serve` child), in bytes. */
export function rssBytes(pid?: number): number {
  if (pid === undefined) return process.memoryUsage().rss;
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(match !== null, `no VmRSS for pid ${pid}`);
  return Number(match[1]) * 1024;
}

/** Asserts that resident memory grew by at most `boundBytes` since `baselineBytes` (`why` says where the bound comes from). */
export function assertRssGrowthUnder(baselineBytes: number, boundBytes: number, what: string, pid?: number): void {
  const grownBytes = rssBytes(pid) - baselineBytes;
  assert.ok(grownBytes <= boundBytes, `${what}: RSS grew by ${(grownBytes / MiB).toFixed(1)} MiB; the bound is ${(boundBytes / MiB).toFixed(0)} MiB`);
}

/** Samples a process's RSS every `intervalMs` until `stop()`, which returns the largest sample. */
export function sampleResident(pid: number, intervalMs = 20): { stop(): number } {
  let peak = rssBytes(pid);
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, rssBytes(pid));
    } catch {
      // The process exited: the test notices by other means.
    }
  }, intervalMs);
  // Never what keeps a test process alive: a test that fails before stop() must still let the run end.
  timer.unref();
  return {
    stop(): number {
      clearInterval(timer);
      return Math.max(peak, rssBytes(pid));
    },
  };
}

/** A request whose body a test streams on a raw socket, as fast as the server reads it. */
export interface StreamedBody {
  /** Body bytes handed to the socket so far. */
  readonly bytesSent: () => number;
  /** The answer (parsed once the server closed the connection), or undefined when it closed without one. */
  readonly answer: Promise<RawResponse | undefined>;
  /** Resolves once `holdAtBytes` were sent (at once when the body is not held). */
  readonly holding: Promise<void>;
  destroy(): void;
}

/**
 * Opens a connection, sends `head` (request line and headers, ending in an empty line), then the body: `prefix`, then
 * `chunk` again and again up to `totalBytes`, waiting for the socket to drain, so the server's reading paces it. Stops
 * sending once the server answers or closes, or once `holdAtBytes` were sent (then holds the connection open until
 * destroyed).
 */
export function streamBody(
  baseUrl: string,
  head: string,
  prefix: Buffer,
  chunk: Buffer,
  totalBytes: number,
  holdAtBytes = Number.POSITIVE_INFINITY,
): StreamedBody {
  const url = new URL(baseUrl);
  const socket = connect(Number(url.port), url.hostname);
  const received: Buffer[] = [];
  let sent = 0;
  let answered = false;
  let reachedHold!: () => void;
  const holding = new Promise<void>((resolve) => (reachedHold = resolve));
  // The server closes while we still write: that is what a refusal looks like from here; only the answer matters.
  socket.on('error', () => {});
  const answer = new Promise<RawResponse | undefined>((resolve) => {
    socket.on('data', (data: Buffer) => {
      answered = true;
      received.push(data);
      // The answer is complete once its content-length arrived; the connection may stay open (keep-alive).
      const text = Buffer.concat(received).toString('latin1');
      const headerEnd = text.indexOf('\r\n\r\n');
      const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, headerEnd));
      if (headerEnd > 0 && length !== null && text.length >= headerEnd + 4 + Number(length[1])) resolve(parseRawResponse(text.slice(0, headerEnd + 4 + Number(length[1]))));
    });
    socket.on('close', () => {
      reachedHold();
      const text = Buffer.concat(received).toString('latin1');
      resolve(text.length === 0 ? undefined : parseRawResponse(text));
    });
  });
  const pump = async (): Promise<void> => {
    const writeAndWait = async (data: Buffer): Promise<boolean> => {
      if (answered || socket.destroyed) return false;
      sent += data.length;
      if (!socket.write(data)) await drainedOrClosed(socket);
      return true;
    };
    if (!(await writeAndWait(Buffer.from(head, 'latin1')))) return;
    sent = 0;
    if (!(await writeAndWait(prefix))) return;
    while (sent < totalBytes && sent < holdAtBytes) {
      const next = chunk.subarray(0, Math.min(chunk.length, totalBytes - sent, holdAtBytes - sent));
      if (!(await writeAndWait(next))) return;
    }
    reachedHold();
  };
  socket.once('connect', () => void pump());
  return { bytesSent: () => sent, answer, holding, destroy: () => socket.destroy() };
}

/**
 * Resolves with `read()` once it returned the same value twice, 300 ms apart (and `ready` holds for it): what a node
 * holds for peers that stopped reading stops growing once every bound it has is reached.
 */
export async function steadyValue(read: () => number, what: string, ready: (value: number) => boolean = () => true): Promise<number> {
  let last = Number.NaN;
  await eventually(
    async () => {
      const now = read();
      const steady = now === last && ready(now);
      last = now;
      await new Promise((resolve) => setTimeout(resolve, 300));
      return steady;
    },
    () => `${what}: ${read()}`,
  );
  return last;
}

/**
 * Opens `connections` connections to `baseUrl` that each write `text` (pipelined requests) as fast as the node takes
 * it and read nothing: a node that stops reading leaves the rest in their sockets' buffers. From `localAddress` when
 * given (127.0.0.2: one remote host, the test's other clients another).
 */
export function unreadPipelines(baseUrl: string, text: string, connections: number, localAddress?: string): net.Socket[] {
  const { hostname, port } = new URL(baseUrl);
  return Array.from({ length: connections }, () => {
    const socket = net.connect({ port: Number(port), host: hostname, ...(localAddress === undefined ? {} : { localAddress }) });
    socket.on('error', () => {});
    socket.pause();
    socket.write(text);
    return socket;
  });
}

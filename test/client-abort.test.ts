/**
 * TypeScript client: a call's `signal`. Abandoned before it begins, nothing is sent; a read parked on `minSeq` ends at
 * once on either transport and the node lets go of it; a write that may have reached a node is OutcomeUnknownError,
 * one that never left is the signal's reason; a retry's backoff ends with the signal. Before, a call could only be
 * bounded by the client's `requestTimeoutMs` for all calls (stop 44's client audit).
 */
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { ClientOptionsError, connect, NodeClient, OutcomeUnknownError, UnavailableError } from '../src/index.js';
import { metricValue } from './support/http.js';
import { freePort, startFakeServer, type FakeServer } from './support/net.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { eventually } from './support/tree.js';

/** How long a parked read may wait at the node: far longer than any test waits for its abandonment. */
const PARKED_MS = 30_000;
/** An abandoned call ends well within this (it waited PARKED_MS, or a retry delay as long, before). */
const PROMPT_MS = 5_000;

function isAbort(name: string): (error: unknown) => boolean {
  return (error: unknown) => (error as Error).name === name;
}

describe('client abort', () => {
  let dir: string;
  let node: ServeProcess;
  let silent: FakeServer;

  before(async () => {
    dir = makeTempDir('client-abort');
    node = await startServe(dir);
    // Takes every request and never answers.
    silent = await startFakeServer(() => {});
  });

  after(async () => {
    await silent.close();
    await stopProcess(node.child);
    removeDir(dir);
  });

  test('client abort: a signal aborted before the call sends nothing, on either transport; the reason is what rejects', async () => {
    for (const url of [node.url, node.wire]) {
      const client = connect(url);
      const reason = new Error('changed my mind');
      const put = client.put('abort/never', 'x', { signal: AbortSignal.abort(reason) });
      await assert.rejects(put, (error) => error === reason);
      await assert.rejects(client.get('abort/never', { signal: AbortSignal.abort() }), isAbort('AbortError'));
      await assert.rejects(client.delete('abort/never', { signal: AbortSignal.abort() }), isAbort('AbortError'));
    }
    const client = connect(node.url);
    await assert.rejects(client.txn({ success: [{ op: 'put', key: 'abort/never', value: 'x' }] }, { signal: AbortSignal.abort() }), isAbort('AbortError'));
    await assert.rejects(client.txn().success({ op: 'put', key: 'abort/never', value: 'x' }).commit({ signal: AbortSignal.abort() }), isAbort('AbortError'));
    await assert.rejects(client.deletePrefix('abort/', { signal: AbortSignal.abort() }), isAbort('AbortError'));
    await assert.rejects(client.status({ signal: AbortSignal.abort() }), isAbort('AbortError'));
    await assert.rejects(client.range('abort/', { signal: AbortSignal.abort() }).next(), isAbort('AbortError'));
    assert.equal(await client.get('abort/never'), undefined, 'no write reached the node');
  });

  test('client abort: a read parked on minSeq ends when its signal does, over HTTP and the wire port, and the node lets go of it', async () => {
    const { seq } = await connect(node.url).put('abort/parked', 'p');
    for (const url of [node.url, node.wire]) {
      const client = connect(url, { requestTimeoutMs: PARKED_MS });
      const started = Date.now();
      const parked = client.get('abort/parked', { minSeq: seq + 1_000, minSeqTimeoutMs: PARKED_MS, signal: AbortSignal.timeout(300) });
      await eventually(async () => (await metricValue(node.url, /^mercury_seq_waiters /)) === 1, () => 'the read is parked at the node');
      await assert.rejects(parked, isAbort('TimeoutError'));
      assert.ok(Date.now() - started < PROMPT_MS, `${url}: ended after ${Date.now() - started} ms`);
      if (url === node.url) await eventually(async () => (await metricValue(node.url, /^mercury_seq_waiters /)) === 0, () => 'the node let go of the parked read');
    }
  });

  test('client abort: a write sent to a node that does not answer is OutcomeUnknownError, not sent again; NodeClient says it was sent', async () => {
    const client = connect([silent.url, node.url], { requestTimeoutMs: PARKED_MS, retryDelayMsBase: 1, retryDelayMsMax: 5 });
    const before = silent.requests.length;
    const started = Date.now();
    await assert.rejects(client.put('abort/unknown', 'x', { signal: AbortSignal.timeout(300) }), (error) => error instanceof OutcomeUnknownError && /abandoned by its caller/.test(error.message));
    assert.ok(Date.now() - started < PROMPT_MS);
    assert.equal(silent.requests.length, before + 1);
    assert.equal(await connect(node.url).get('abort/unknown'), undefined, 'not sent to the next node');
    await assert.rejects(new NodeClient(silent.url).put('abort/unknown', 'x', { signal: AbortSignal.timeout(300) }), (error) => error instanceof UnavailableError && error.requestSent);
  });

  test('client abort: a write that never left (no wire connection ready) rejects with the reason, and a retry backoff ends with the signal', async () => {
    // A wire port that accepts, reads, and never says READY: the request waits, unsent.
    const sockets: Socket[] = [];
    const mute = createServer((socket) => {
      sockets.push(socket);
      socket.resume();
    });
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
    try {
      const wire = connect(`mercury+tcp://127.0.0.1:${(mute.address() as AddressInfo).port}`, { requestTimeoutMs: PARKED_MS });
      await assert.rejects(wire.put('abort/unsent', 'x', { signal: AbortSignal.timeout(300) }), isAbort('TimeoutError'));
      await assert.rejects(new NodeClient(`mercury+tcp://127.0.0.1:${(mute.address() as AddressInfo).port}`, PARKED_MS).put('abort/unsent', 'x', { signal: AbortSignal.timeout(300) }), (error) => error instanceof UnavailableError && !error.requestSent);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => mute.close(resolve));
    }
    const dead = [`http://127.0.0.1:${await freePort()}`, `http://127.0.0.1:${await freePort()}`];
    const client = connect(dead, { attemptsMax: 10, retryDelayMsBase: PARKED_MS, retryDelayMsMax: PARKED_MS });
    const started = Date.now();
    await assert.rejects(client.get('abort/backoff', { signal: AbortSignal.timeout(300) }), isAbort('TimeoutError'));
    await assert.rejects(client.put('abort/backoff', 'x', { signal: AbortSignal.timeout(300) }), isAbort('TimeoutError'));
    assert.ok(Date.now() - started < PROMPT_MS, `ended after ${Date.now() - started} ms`);
  });

  test('client abort: a signal that is not an AbortSignal is ClientOptionsError, nothing sent', async () => {
    const client = connect(node.url);
    const bad = { signal: { aborted: false } } as unknown as { signal: AbortSignal };
    await assert.rejects(client.put('abort/bad', 'x', bad), (error) => error instanceof ClientOptionsError && /signal must be an AbortSignal, got object/.test(error.message));
    await assert.rejects(client.get('abort/bad', bad), ClientOptionsError);
    // Its `aborted` is not believed either.
    await assert.rejects(client.put('abort/bad', 'x', { signal: { aborted: true, reason: 'no' } } as unknown as { signal: AbortSignal }), ClientOptionsError);
    await assert.rejects(client.status(bad), ClientOptionsError);
    await assert.rejects(client.txn({ success: [] }, bad), ClientOptionsError);
    assert.equal(await client.get('abort/bad'), undefined);
  });
});

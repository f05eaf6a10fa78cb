/**
 * TypeScript client: retries across URLs. Reads and writes move on from a dead URL, and from one whose connection (or
 * TLS handshake) never completes; reads move on from a node that does not answer; a write that reached a node
 * without an answer is not retried (OutcomeUnknownError) and does not reach the next node; a write refused with 503
 * OVERLOADED is retried elsewhere.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect, NodeClient, op, OutcomeUnknownError, UnavailableError } from '../src/index.js';
import { connectNeverCompletes, freePort, handshakeNeverCompletes, startFakeServer, type FakeServer } from './support/net.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';

describe('client retries', () => {
  let dir: string;
  let node: ServeProcess;
  let deadUrl: string;
  let silent: FakeServer;
  let overloaded: FakeServer;

  before(async () => {
    dir = makeTempDir('client-retry');
    node = await startServe(dir);
    deadUrl = `http://127.0.0.1:${await freePort()}`;
    // Reads the whole request, then cuts the connection: the request reached "a node" and got no answer.
    silent = await startFakeServer((req) => req.socket.destroy());
    overloaded = await startFakeServer((_req, res) => {
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' });
      res.end(JSON.stringify({ error: { code: 'OVERLOADED', message: 'commit queue is full' } }));
    });
  });

  after(async () => {
    await silent.close();
    await overloaded.close();
    await stopProcess(node.child);
    removeDir(dir);
  });

  test('client retries: with the first URL dead, reads and writes go to the second', async () => {
    const client = connect([deadUrl, node.url], { retryDelayMsBase: 1, retryDelayMsMax: 5 });
    const { seq } = await client.put('retry/a', 'one');
    assert.equal((await client.get('retry/a'))?.value.toString(), 'one');
    const txn = await client.txn().success(op.put('retry/b', 'two')).commit();
    assert.ok(txn.succeeded && txn.seq > seq);
    assert.equal((await client.status()).seq, txn.seq);
    assert.deepEqual(await client.delete('retry/a').then((result) => result.deleted), true);
  });

  test('client retries: a read that got no answer is retried on the next URL', async () => {
    await connect(node.url).put('retry/read', 'r');
    const client = connect([silent.url, node.url], { retryDelayMsBase: 1, retryDelayMsMax: 5 });
    const before = silent.requests.length;
    assert.equal((await client.get('retry/read'))?.value.toString(), 'r');
    assert.equal(silent.requests.length, before + 1);
  });

  test('client retries: a write sent without an answer is OutcomeUnknownError and is not sent again', async () => {
    const client = connect([silent.url, node.url], { retryDelayMsBase: 1, retryDelayMsMax: 5 });
    const before = silent.requests.length;
    for (const write of [() => client.put('retry/unknown', 'x'), () => client.txn({ success: [{ op: 'put', key: 'retry/unknown', value: 'x' }] })]) {
      await assert.rejects(write(), (error: unknown) => {
        assert.ok(error instanceof OutcomeUnknownError, String(error));
        assert.equal(error.code, 'OUTCOME_UNKNOWN');
        assert.equal(error.requestSent, true);
        return true;
      });
    }
    assert.equal(silent.requests.length, before + 2);
    assert.equal(await connect(node.url).get('retry/unknown'), undefined, 'the live node never saw the write');
  });

  test('client retries: a write refused with 503 OVERLOADED is retried on the next URL', async () => {
    const client = connect([overloaded.url, node.url], { retryDelayMsBase: 1, retryDelayMsMax: 5 });
    await client.put('retry/overloaded', 'y');
    assert.equal((await client.get('retry/overloaded'))?.value.toString(), 'y');
    assert.ok(overloaded.requests.includes('PUT /v1/kv/retry/overloaded'));
  });

  test('client retries: after a failover the next call starts at the node that answered', async () => {
    const client = connect([deadUrl, node.url], { attemptsMax: 2, retryDelayMsBase: 1, retryDelayMsMax: 5 });
    await client.put('retry/sticky', '1');
    // One attempt would be enough now: the dead URL is no longer tried first.
    const sticky = connect([deadUrl, node.url], { attemptsMax: 2 });
    await sticky.get('retry/sticky');
    assert.equal((await sticky.get('retry/sticky'))?.value.toString(), '1');
  });

  test('client retries: a write whose connection never completes (TCP connect, TLS handshake) reports it unsent and goes to the next URL', async () => {
    for (const start of [connectNeverCompletes, handshakeNeverCompletes]) {
      const unfinished = await start();
      const { url } = unfinished;
      try {
        await assert.rejects(new NodeClient(url, 300).put('retry/stuck', 'x'), (error: unknown) => {
          assert.ok(error instanceof UnavailableError, String(error));
          assert.equal(error.requestSent, false, error.message);
          assert.match(error.message, /no connection in time/);
          return true;
        });
        // The timeout covers the put on the real node too: 300 ms, a put that a loaded machine took longer over was
        // OutcomeUnknownError, and the test failed for the machine, not the client.
        const client = connect([url, node.url], { requestTimeoutMs: 1_000, retryDelayMsBase: 1, retryDelayMsMax: 5 });
        await client.put('retry/stuck', url);
        assert.equal((await connect(node.url).get('retry/stuck'))?.value.toString(), url);
      } finally {
        await unfinished.close();
      }
    }
  });
});

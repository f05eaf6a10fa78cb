/**
 * TypeScript client: typed errors. Each condition a node reports arrives as its own class with the node's stable code
 * and HTTP status; an unreachable cluster is `NoNodeReachableError`; bad options are refused with a message that
 * names the option and the rule.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import {
  ClientOptionsError,
  CompareFailedError,
  connect,
  InvalidRequestError,
  LimitExceededError,
  NoNodeReachableError,
  SeqWaitTimeoutError,
  type MercuryClient,
  type TxnJson,
} from '../src/index.js';
import { freePort } from './support/net.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';

describe('client errors', () => {
  let dir: string;
  let node: ServeProcess;
  let client: MercuryClient;

  before(async () => {
    dir = makeTempDir('client-errors');
    node = await startServe(dir);
    client = connect(node.url);
  });

  after(async () => {
    await stopProcess(node.child);
    removeDir(dir);
  });

  test('client errors: a key over the limit is LimitExceededError (KEY_TOO_LARGE, 413) with the limit', async () => {
    const error = await client.put('k'.repeat(2000), 'v').then(
      () => assert.fail('put succeeded'),
      (caught: unknown) => caught,
    );
    assert.ok(error instanceof LimitExceededError, String(error));
    assert.equal(error.code, 'KEY_TOO_LARGE');
    assert.equal(error.status, 413);
    assert.equal(error.limit, 1024);
  });

  test('client errors: a failed ifModSeq is CompareFailedError (412) with the current modSeq', async () => {
    const { seq } = await client.put('cas/a', 'one');
    await assert.rejects(client.put('cas/a', 'two', { ifModSeq: seq + 100 }), (error: unknown) => {
      assert.ok(error instanceof CompareFailedError);
      assert.equal(error.code, 'COMPARE_FAILED');
      assert.equal(error.status, 412);
      assert.equal(error.modSeq, seq);
      return true;
    });
    assert.equal((await client.get('cas/a'))?.value.toString(), 'one');
    await client.put('cas/a', 'two', { ifModSeq: seq });
    assert.equal((await client.get('cas/a'))?.value.toString(), 'two');
  });

  test('client errors: a malformed transaction is InvalidRequestError (INVALID_ARGUMENT, 400) naming the field', async () => {
    const bad = { success: [{ op: 'rename', key: 'a' }] } as unknown as TxnJson;
    await assert.rejects(client.txn(bad), (error: unknown) => {
      assert.ok(error instanceof InvalidRequestError);
      assert.equal(error.code, 'INVALID_ARGUMENT');
      assert.equal(error.status, 400);
      assert.match(error.message, /success\[0\]\.op/);
      return true;
    });
  });

  test('client errors: minSeq beyond the head times out as SeqWaitTimeoutError (504); reached, it reads', async () => {
    const { seq } = await client.put('wait/a', 'x');
    const read = await client.get('wait/a', { minSeq: seq });
    assert.ok(read !== undefined && read.seq >= seq);
    await assert.rejects(client.get('wait/a', { minSeq: seq + 1000, minSeqTimeoutMs: 50 }), (error: unknown) => {
      assert.ok(error instanceof SeqWaitTimeoutError);
      assert.equal(error.code, 'SEQ_WAIT_TIMEOUT');
      assert.equal(error.status, 504);
      return true;
    });
    assert.equal(await client.get('wait/missing'), undefined);
  });

  test('client errors: a script whose only work is a request to a node that is down waits out the retries and gets the error, instead of exiting mid-backoff (found by review: exit code 13, nothing thrown)', async () => {
    // In a process of its own: in this one the test runner's handles keep the event loop alive whatever the client does.
    const url = `http://127.0.0.1:${await freePort()}`;
    const script = `
      import { connect } from ${JSON.stringify(new URL('../src/index.js', import.meta.url).href)};
      const client = connect(${JSON.stringify(url)}, { attemptsMax: 3, retryDelayMsBase: 200, retryDelayMsMax: 200, watchReconnectAttemptsMax: 3, watchReconnectDelayMsBase: 200, watchReconnectDelayMsMax: 200 });
      try { await client.put('a', 'b'); console.log('resolved'); } catch (error) { console.log('rejected ' + error.code); }
      const watch = client.watch({ prefix: '' });
      try { for await (const event of watch) console.log('event ' + event.type); console.log('watch ended'); } catch (error) { console.log('watch rejected ' + error.code); }`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.deepEqual({ code, stdout: stdout.trim().split('\n') }, { code: 0, stdout: ['rejected NO_NODE_REACHABLE', 'watch rejected NO_NODE_REACHABLE'] });
  });

  test('client errors: when no URL answers, NoNodeReachableError lists every attempt', async () => {
    const dead = connect([`http://127.0.0.1:${await freePort()}`, `http://127.0.0.1:${await freePort()}`], { attemptsMax: 3, retryDelayMsBase: 1, retryDelayMsMax: 5 });
    for (const call of [() => dead.get('a'), () => dead.put('a', 'b'), () => dead.status()]) {
      await assert.rejects(call(), (error: unknown) => {
        assert.ok(error instanceof NoNodeReachableError, String(error));
        assert.equal(error.code, 'NO_NODE_REACHABLE');
        assert.equal(error.errors.length, 3);
        assert.equal(error.requestSent, false);
        assert.ok(error.cause instanceof Error);
        return true;
      });
    }
  });

  test('client errors: options are validated with messages that name the option and the rule', () => {
    const cases: [() => unknown, RegExp][] = [
      [() => connect([]), /urls must be a node URL or a non-empty array/],
      [() => connect('localhost:7070'), /urls\[0\] "localhost:7070" must use http:, https:, or mercury\+tcp: \/ mercury\+tls:/],
      [() => connect(['http://a:1', 'nope']), /urls\[1\] "nope" is not a URL/],
      [() => connect('http://a:1/?x=1'), /must have no query/],
      [() => connect('http://a:1', { attemptsMax: 0 }), /attemptsMax must be an integer from 1 to 100, got 0/],
      [() => connect('http://a:1', { requestTimeoutMs: 1.5 }), /requestTimeoutMs must be an integer/],
      [() => connect('http://a:1', { retryDelayMsBase: 500, retryDelayMsMax: 100 }), /retryDelayMsBase \(500\) must not exceed retryDelayMsMax \(100\)/],
      [() => connect('http://a:1', { watchIdleMs: 1000 }), /watchIdleMs must be an integer from 20000/],
      [() => connect('http://a:1', { timeout: 5 } as never), /unknown option "timeout"/],
      [() => connect('http://a:1').watch({ prefix: [] }), /prefix must be a string or Buffer, or a list of 1 to 16/],
      [() => connect('http://a:1').watch({ prefix: 'a', fromSeq: 0 }), /fromSeq must be an integer from 1/],
      [() => connect('http://a:1').watch({ prefix: 'a', filters: { puts: false, deletes: false } }), /would select nothing/],
      [() => client.range('a', { pageLimit: 0 }).next(), /pageLimit must be an integer from 1 to 10000/],
    ];
    for (const [call, message] of cases) {
      try {
        const result = call();
        if (result instanceof Promise) result.catch(() => {});
        // An async generator checks its options on the first next(): the rejection is checked below.
        if (result instanceof Promise) continue;
        assert.fail(`no error for ${message}`);
      } catch (error) {
        assert.ok(error instanceof ClientOptionsError, String(error));
        assert.equal(error.code, 'CONFIG_INVALID');
        assert.match(error.message, message);
      }
    }
  });

  test('client errors: an async option check rejects with ClientOptionsError', async () => {
    await assert.rejects(client.range('a', { pageLimit: 0 }).next(), ClientOptionsError);
    await assert.rejects(client.get('a', { minSeq: -1 }), ClientOptionsError);
  });
});

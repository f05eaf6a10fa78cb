import assert from 'node:assert/strict';
import { test } from 'node:test';
import { closedLoop, keyIndex, makeValue, pacedLoop, spacedSequence, throughputMetrics } from '../bench/peers/driver.js';
import type { KvClient } from '../bench/peers/system.js';

function fakeClient(delayMs: number, log: string[]): KvClient {
  const wait = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, delayMs));
  return {
    put: async (key) => {
      log.push(key);
      await wait();
    },
    get: async () => {
      await wait();
      return Buffer.from('v');
    },
    putBatch: async () => wait(),
    close: () => Promise.resolve(),
  };
}

test('peers driver: closed loops time every request and count the units each returns', async () => {
  const log: string[] = [];
  const clients = [fakeClient(5, log), fakeClient(5, log)];
  const result = await closedLoop(clients, 0.2, async (client, clientIndex, iteration) => {
    await client.put(`${clientIndex}/${iteration}`, Buffer.alloc(1));
    return 10;
  });
  assert.equal(result.units, result.requests * 10);
  assert.equal(result.latencies.count, result.requests);
  assert.ok(result.requests >= 10 && result.requests <= 2 * 45, `requests ${result.requests}`);
  assert.ok(log.includes('0/0') && log.includes('1/0'));
  const metrics = throughputMetrics(result);
  assert.ok(metrics.p50Ms! >= 4, `p50 ${metrics.p50Ms}`);
  assert.ok(Math.abs(metrics.perSecond! - result.units / result.seconds) < 1e-9);
});

test('peers driver: a paced loop offers its rate and no more', async () => {
  const log: string[] = [];
  const clients = Array.from({ length: 8 }, () => fakeClient(1, log));
  const result = await pacedLoop(clients, 200, 0.5, (client, k) => client.put(String(k), Buffer.alloc(1)));
  // 100 operations are due in 0.5 s; never more, and on a busy machine the last may fall past the deadline.
  assert.ok(result.units <= 100 && result.units >= 50, `units ${result.units}`);
  // Each operation number is sent once (in an order that timers on a busy machine may shuffle).
  assert.equal(new Set(log).size, log.length);
  assert.ok(log.every((k) => Number(k) < 100));
});

test('peers driver: values are printable, of the asked size, the same every time', () => {
  const value = makeValue(256);
  assert.equal(value.length, 256);
  assert.ok([...value].every((byte) => byte >= 97 && byte <= 122));
  assert.deepEqual(makeValue(256), value);
  assert.notDeepEqual(makeValue(256, 1), value);
  assert.equal(keyIndex(0, 5, 100), 5);
  assert.equal(keyIndex(1, 0, 100), 19);
});

test('peers driver: a spaced sequence runs its steps in order, spread over the duration', async () => {
  const startedAt: number[] = [];
  const started = performance.now();
  await spacedSequence(5, 0.2, async (i) => {
    startedAt[i] = performance.now() - started;
    await Promise.resolve();
  });
  assert.equal(startedAt.length, 5);
  for (let i = 1; i < 5; i++) assert.ok(startedAt[i]! >= i * 40 - 2, `step ${i} at ${startedAt[i]} ms`);
});

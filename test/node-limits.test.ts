/**
 * NodeLimits: one object for every section of a node's limits, validated once with the relations across sections, the
 * operator's flags mapped onto it by src/config, and a small test preset that a whole node runs under.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { validateConfig, withConfigLimits } from '../src/config/index.js';
import { TXN_OPS_MAX } from '../src/limits.js';
import { MercuryNode, NODE_LIMITS, NODE_LIMITS_TEST, validateNodeLimits, withLimits } from '../src/node/index.js';
import { fitOpenFiles, HTTP_CONNECTIONS_MIN, openFilesNeeded } from '../src/node/limits.js';
import { REPLICATION_LIMITS_TEST } from '../src/replication/index.js';
import { request } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';

describe('node limits', () => {
  test('limits: both presets are valid and frozen, section by section', () => {
    for (const limits of [NODE_LIMITS, NODE_LIMITS_TEST]) {
      assert.deepEqual(validateNodeLimits(limits), limits);
      assert.ok(Object.isFrozen(limits));
      for (const section of Object.values(limits)) assert.ok(Object.isFrozen(section));
    }
    assert.ok(NODE_LIMITS_TEST.commit.valueBytesMax < NODE_LIMITS.commit.valueBytesMax);
    assert.ok(NODE_LIMITS_TEST.log.trimIntervalMs < NODE_LIMITS.log.trimIntervalMs);
  });

  test('limits: under a lower open-files limit the HTTP connections, TLS handshakes and per-host shares are lowered to fit; too low is CONFIG_INVALID', () => {
    const needed = openFilesNeeded(NODE_LIMITS);
    assert.equal(needed, 19_988);
    assert.deepEqual(fitOpenFiles(NODE_LIMITS, 20_000), { limits: NODE_LIMITS, loweredFrom: undefined });
    const others = needed - NODE_LIMITS.http.connectionsMax;
    const lowered = fitOpenFiles(NODE_LIMITS, others + 300);
    assert.equal(lowered.loweredFrom, NODE_LIMITS.http.connectionsMax);
    const { http } = validateNodeLimits(lowered.limits);
    assert.deepEqual(
      [http.connectionsMax, http.connectionsPerAddressMax, http.tlsHandshakesMax, http.tlsHandshakesPerAddressMax],
      [300, 300, 300, NODE_LIMITS.http.tlsHandshakesPerAddressMax],
    );
    assert.equal(openFilesNeeded(lowered.limits), others + 300);
    assert.equal(fitOpenFiles(NODE_LIMITS, others + HTTP_CONNECTIONS_MIN).limits.http.connectionsMax, HTTP_CONNECTIONS_MIN);
    assert.throws(() => fitOpenFiles(NODE_LIMITS, others + HTTP_CONNECTIONS_MIN - 1), (error: Error & { code?: string }) => error.code === 'CONFIG_INVALID' && /ulimit -n 19988/.test(error.message));
  });

  test('limits: a relation across sections that does not hold is refused, naming it', () => {
    // Production entries through the test preset's small replication frames: replicas could never receive them.
    assert.throws(() => validateNodeLimits(withLimits(NODE_LIMITS, { replication: REPLICATION_LIMITS_TEST })), /replication record limit/);
    assert.throws(() => validateNodeLimits(withLimits(NODE_LIMITS_TEST, { commit: { valueBytesMax: 64 * 1024 } })), /largest put must fit in one entry/);
    assert.throws(() => validateNodeLimits(withLimits(NODE_LIMITS, { commit: { entryOpsMax: TXN_OPS_MAX - 1 } })), /TXN_OPS_MAX/);
    assert.throws(() => validateNodeLimits(withLimits(NODE_LIMITS, { http: { forwardedWriteWaitMs: 1_000 } })), /failover/);
    assert.throws(() => validateNodeLimits(withLimits(NODE_LIMITS, { http: { connectionsMax: 20_000 } })), /open files/);
    assert.throws(() => validateNodeLimits(withLimits(NODE_LIMITS, { log: { trimIntervalMs: 0 } })), /log limit trimIntervalMs must be a positive integer/);
  });

  test('limits: --max-value-bytes and --log-retain-* map onto the commit and log sections; unset flags keep the preset', () => {
    const flags = validateConfig({ dataDir: '/tmp/x', valueBytesMax: 2048, logRetainEntries: 7, logRetainBytes: 9_000 });
    const mapped = withConfigLimits(flags, NODE_LIMITS_TEST);
    assert.deepEqual([mapped.commit.valueBytesMax, mapped.log.retainEntries, mapped.log.retainBytes], [2048, 7, 9_000]);
    assert.deepEqual(mapped.replication, NODE_LIMITS_TEST.replication);
    assert.deepEqual(withConfigLimits(validateConfig({ dataDir: '/tmp/x' }), NODE_LIMITS_TEST), NODE_LIMITS_TEST);
  });

  describe('a node under the test preset', () => {
    let dir: string;
    let node: MercuryNode;

    before(async () => {
      dir = makeTempDir('node-limits');
      node = await MercuryNode.start(validateConfig({ dataDir: dir, port: 0 }), { auth: 'off', limits: NODE_LIMITS_TEST });
    });

    after(async () => {
      await node.close();
      removeDir(dir);
    });

    test('limits: the node enforces the preset it was given: small values, and no entry above entryBytesMax', async () => {
      assert.equal(node.limits.commit.valueBytesMax, 4 * 1024);
      assert.equal((await request(node.url, 'PUT', '/v1/kv/small', { body: Buffer.alloc(4 * 1024, 1) })).status, 200);
      assert.equal((await request(node.url, 'PUT', '/v1/kv/large', { body: Buffer.alloc(4 * 1024 + 1, 1) })).status, 413);
      // Every op is valid on its own, but together they exceed one entry of the preset: refused whole, not committed.
      const success = Array.from({ length: 4 }, (_, i) => ({ op: 'put', key: `big/${i}`, value: 'v'.repeat(3_000) }));
      const response = await request(node.url, 'POST', '/v1/txn', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ success }) });
      assert.equal(response.status, 413);
      assert.equal((JSON.parse(response.body.toString()) as { error: { code: string } }).error.code, 'BODY_TOO_LARGE');
      assert.equal((await request(node.url, 'GET', '/v1/kv/big/0')).status, 404);
    });
  });
});

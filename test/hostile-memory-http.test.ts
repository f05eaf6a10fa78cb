/**
 * Hostile input - pipelined answers summed over connections. Found on a real node (audit, 2026-12-07): 200 keep-alive
 * connections, each writing 8 pipelined `GET /v1/kv/big` (a 1 MiB value) and reading nothing, took the node 951 MiB
 * of RSS in 6 s: the first answer of each went to the kernel, and the 7 running beside it (HTTP_PIPELINED_RUNNING_MAX)
 * held theirs in memory until it was sent. The per-connection bound had no ceiling over connections: 4,000 from one
 * address could hold 28 GiB. Now at most `pipelinedAheadMax` requests run ahead of their turn over all connections;
 * the rest wait, parsed, for their turn, and the first request of each connection always runs.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS, validateNodeLimits, withLimits } from '../src/node/index.js';
import { nodeMetric } from './support/fuzz.js';
import { parseRawResponses, rawExchange, request } from './support/http.js';
import { steadyValue, unreadPipelines } from './support/hostile.js';
import { makeTempDir, removeDir } from './support/process.js';

const VALUE_BYTES = 1024 * 1024;
const CONNECTIONS = 12;
const GETS_PER_CONNECTION = 8;
const AHEAD_MAX = 16;

describe('hostile input - pipelined answers over many connections', () => {
  const dir = makeTempDir('hostile-memory-http');
  let node: MercuryNode | undefined;
  after(async () => {
    await node?.close();
    removeDir(dir);
  });

  test('pipelined answers: connections that pipeline GETs and read nothing run at most the node budget of requests ahead of their turn', async () => {
    const limits = validateNodeLimits(withLimits(NODE_LIMITS, { http: { pipelinedAheadMax: AHEAD_MAX } }));
    node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'node'), port: 0 }), { auth: 'off', limits });
    const started = node;
    assert.equal((await request(started.url, 'PUT', '/v1/kv/big', { body: Buffer.alloc(VALUE_BYTES, 0x61) })).status, 200);
    const { host } = new URL(started.url);
    const get = `GET /v1/kv/big HTTP/1.1\r\nhost: ${host}\r\n\r\n`;
    const sockets = unreadPipelines(started.url, get.repeat(GETS_PER_CONNECTION), CONNECTIONS);
    try {
      // Before the budget: every connection ran up to 7 beside its first (those the kernel did not take: 4 to 5 each).
      assert.ok(CONNECTIONS * (GETS_PER_CONNECTION - 1) > 4 * AHEAD_MAX);
      const ahead = await steadyValue(() => nodeMetric(started, 'mercury_http_pipelined_ahead'), 'requests ahead of their turn', (count) => count > 0);
      assert.ok(ahead <= AHEAD_MAX, `${ahead} pipelined requests run ahead of their turn; the budget is ${AHEAD_MAX}`);

      // With the budget spent by others, a client that reads still gets every pipelined answer, in order.
      const count = 5;
      let pipeline = '';
      for (let i = 0; i < count; i++) pipeline += `GET /v1/kv/big HTTP/1.1\r\nhost: ${host}\r\n${i === count - 1 ? 'connection: close\r\n' : ''}\r\n`;
      const responses = parseRawResponses(await rawExchange(started.url, pipeline, { timeoutMs: 10_000 }));
      assert.deepEqual(
        responses.map((response) => [response.status, response.body.length]),
        Array.from({ length: count }, () => [200, VALUE_BYTES]),
      );
    } finally {
      for (const socket of sockets) socket.destroy();
    }
  });
});

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
    // From another host than the reader below, whose large answers its own host's share would refuse (record 81).
    const sockets = unreadPipelines(started.url, get.repeat(GETS_PER_CONNECTION), CONNECTIONS, '127.0.0.2');
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

  // Left by the memory audit (2026-12-07) and closed after it: the answer each connection runs was held whole until its
  // client took it, whatever the number of connections: 4,000 of one address asking for a 1 MiB value each and reading
  // nothing held some 4 GiB. Large answers now have a budget over all connections.
  test('large answers: connections that ask for a large value and read nothing hold at most the node budget; past it OVERLOADED, small answers still go', async () => {
    const valueBytes = 8 * 1024 * 1024;
    const budget = 3 * valueBytes;
    // One host here, allowed the whole budget: what is bounded is the node's sum (hosts' shares: hostile-fairness).
    const limits = validateNodeLimits(withLimits(NODE_LIMITS, { commit: { valueBytesMax: valueBytes }, http: { answerBytesHeldMax: budget, answerBytesHeldPerAddressMax: budget } }));
    const held = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'answers'), port: 0 }), { auth: 'off', limits });
    try {
      assert.equal((await request(held.url, 'PUT', '/v1/kv/huge', { body: Buffer.alloc(valueBytes, 0x62) })).status, 200);
      assert.equal((await request(held.url, 'PUT', '/v1/kv/small', { body: 'still served' })).status, 200);
      const { host } = new URL(held.url);
      const sockets = unreadPipelines(held.url, `GET /v1/kv/huge HTTP/1.1\r\nhost: ${host}\r\n\r\n`, 8);
      try {
        const bytesHeld = await steadyValue(() => nodeMetric(held, 'mercury_http_answer_bytes_held'), 'answer bytes held', (bytes) => bytes > 0);
        assert.ok(bytesHeld <= budget, `${bytesHeld} bytes of answers held; the budget is ${budget}`);
        // Each connection's first bytes: the status line of its answer.
        const statuses = await Promise.all(
          sockets.map(
            (socket) =>
              new Promise<string>((resolve) => {
                socket.once('data', (chunk: Buffer) => resolve(chunk.toString('latin1', 0, Math.min(chunk.length, 4096))));
                socket.resume();
              }),
          ),
        );
        const refused = statuses.filter((text) => text.startsWith('HTTP/1.1 503'));
        assert.equal(statuses.filter((text) => text.startsWith('HTTP/1.1 200')).length, budget / valueBytes, 'as many as the budget holds were answered');
        assert.equal(refused.length, 8 - budget / valueBytes);
        for (const text of refused) assert.match(text, /retry-after: 1[\s\S]*"code":"OVERLOADED".*answers its clients have not taken yet/i);
        assert.equal((await request(held.url, 'GET', '/v1/kv/small')).body.toString(), 'still served');
      } finally {
        for (const socket of sockets) socket.destroy();
      }
    } finally {
      await held.close();
    }
  });
});

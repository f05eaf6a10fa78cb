/**
 * Hostile input - one host against everyone else, under the budgets over all connections (record 81). The budgets
 * bound memory; they did not bound one host's part of them. Found on a real node (audit, 2026-12-07), one address
 * (127.0.0.2) against a client at another (127.0.0.3):
 * - large HTTP answers: 250 connections asking for an 8 MiB value and reading nothing held the 64 MiB budget; the other
 *   client's GET of a 1 MiB value was refused 503 OVERLOADED five times out of five;
 * - request bodies: two connections declaring the largest transaction body and sending one byte held the budget for
 *   the request timeout; the other client's PUT of 1 MiB was refused 503 BODY_BUDGET_EXCEEDED five times out of five;
 * - the wire port: 32 connections pipelining GETs of a 1 MiB value and reading nothing held its 64 MiB; the other
 *   client's wire GET of the value was refused OVERLOADED (WIRE_OUTPUT_FULL) five times out of five.
 * Now a host holds at most its share of each; the other client is served while the attacker holds it. Each test runs
 * both clients on loopback addresses of their own (127.0.0.0/8 is all local on Linux).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { encodeGet } from '../src/api/index.js';
import { connect } from '../src/client/index.js';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS, NODE_LIMITS_TEST, validateNodeLimits, withLimits, type NodeLimitsOverrides } from '../src/node/index.js';
import { nodeMetric } from './support/fuzz.js';
import { request } from './support/http.js';
import { steadyValue, unreadPipelines } from './support/hostile.js';
import { makeTempDir, removeDir } from './support/process.js';
import { RawWire } from './support/wire.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const ATTACKER = '127.0.0.2';
const GOOD = '127.0.0.3';

describe('hostile input - one host against the others under the budgets over all connections', () => {
  const dir = makeTempDir('hostile-fairness');
  after(() => removeDir(dir));

  /** Runs `body` against a node with these limits, its attackers' sockets closed and the node with them, whatever fails. */
  async function withNode(name: string, overrides: NodeLimitsOverrides, body: (node: MercuryNode, sockets: { destroy(): void }[]) => Promise<void>): Promise<void> {
    const node = await MercuryNode.start(validateConfig({ dataDir: join(dir, name), port: 0 }), { auth: 'off', limits: validateNodeLimits(withLimits(NODE_LIMITS, overrides)) });
    const sockets: { destroy(): void }[] = [];
    try {
      await body(node, sockets);
    } finally {
      for (const socket of sockets) socket.destroy();
      await node.close();
    }
  }

  test('large answers: one host reading nothing holds its share of the answer budget; another host still gets a large value', async () => {
    // 8 MiB values: more than loopback's socket buffers take, so an answer its client does not read stays held.
    const valueBytes = 8 * MiB;
    const budget = 4 * valueBytes;
    const share = 2 * valueBytes;
    const http = { answerBytesHeldMax: budget, answerBytesHeldPerAddressMax: share };
    await withNode('answers', { commit: { valueBytesMax: valueBytes }, http }, async (node, sockets) => {
      assert.equal((await request(node.url, 'PUT', '/v1/kv/huge', { body: Buffer.alloc(valueBytes, 0x62) })).status, 200);
      const { host } = new URL(node.url);
      sockets.push(...unreadPipelines(node.url, `GET /v1/kv/huge HTTP/1.1\r\nhost: ${host}\r\n\r\n`, 8, ATTACKER));
      const held = await steadyValue(() => nodeMetric(node, 'mercury_http_answer_bytes_held'), 'answer bytes held', (bytes) => bytes > 0);

      // Before the share, the attacker's 8 connections held the budget whole (4 answers) and this was refused 503.
      const answer = await request(node.url, 'GET', '/v1/kv/huge', { localAddress: GOOD, timeoutMs: 10_000 });
      assert.equal(answer.status, 200, `another host's GET while the attacker holds ${held} bytes: ${answer.status} ${answer.body.toString().slice(0, 300)}`);
      assert.equal(answer.body.length, valueBytes);
      assert.equal(held, share, `the attacking host holds ${held} bytes of answers; its share is ${share}`);
      assert.equal(nodeMetric(node, 'mercury_http_answer_address_refusals_total'), 8 - share / valueBytes);

      // The attacker's next large read is refused by its own share, saying so.
      const refused = await request(node.url, 'GET', '/v1/kv/huge', { localAddress: ATTACKER });
      assert.equal(refused.status, 503);
      assert.match(refused.body.toString(), /"code":"OVERLOADED".*your address \(127\.0\.0\.2\) holds \d+ bytes of answers.*"reason":"ADDRESS_SHARE_FULL"/);
    });
  });

  test('request bodies: one host holding the largest bodies open holds its share of the body budget; another host still writes', async () => {
    const { jsonBodyBytesMax, bodyBytesInFlightMax, bodyBytesInFlightPerAddressMax } = NODE_LIMITS.http;
    // Two of the largest bodies are the whole budget: two connections of one host refused every other write.
    assert.equal(2 * jsonBodyBytesMax, bodyBytesInFlightMax);
    await withNode('bodies', {}, async (node, sockets) => {
      const { host } = new URL(node.url);
      const declareLargest = `POST /v1/txn HTTP/1.1\r\nhost: ${host}\r\ncontent-type: application/json\r\ncontent-length: ${jsonBodyBytesMax}\r\n\r\n{`;
      sockets.push(...unreadPipelines(node.url, declareLargest, 2, ATTACKER));
      const reserved = await steadyValue(() => nodeMetric(node, 'mercury_http_body_bytes_in_flight'), 'body bytes reserved', (bytes) => bytes > 0);

      // Before the share, this was refused 503 BODY_BUDGET_EXCEEDED for as long as the attacker's requests were open.
      const put = await request(node.url, 'PUT', '/v1/kv/good', { body: Buffer.alloc(1 * MiB, 0x63), localAddress: GOOD });
      assert.equal(put.status, 200, `another host's PUT while the attacker holds ${reserved} bytes: ${put.status} ${put.body.toString().slice(0, 300)}`);
      assert.equal(reserved, bodyBytesInFlightPerAddressMax, `the attacking host holds ${reserved} bytes of bodies; its share is ${bodyBytesInFlightPerAddressMax}`);
      assert.equal(nodeMetric(node, 'mercury_http_body_address_refusals_total'), 1);

      const refused = await request(node.url, 'PUT', '/v1/kv/more', { body: Buffer.alloc(1 * MiB, 0x64), localAddress: ATTACKER });
      assert.equal(refused.status, 503);
      assert.match(refused.body.toString(), /"code":"BODY_BUDGET_EXCEEDED".*your address \(127\.0\.0\.2\) holds \d+ bytes of request bodies.*"reason":"ADDRESS_SHARE_FULL"/);
    });
  });

  test('wire answers: one host pipelining GETs and reading nothing holds its part of the port output budget; another host still reads a large value', async () => {
    // The test preset's port (64 connections, 16 per host, 4 MiB over all, a share of 64 KiB each, 1 MiB per host),
    // with connections that may each hold 1 MiB: before the per-host part, the attacker's 16 filled the port.
    const wire = { ...NODE_LIMITS_TEST.wire, outputBytesMax: 1 * MiB, idleTimeoutMs: 60_000 };
    assert.ok(wire.connectionsPerAddressMax * wire.outputBytesMax > 2 * wire.outputBytesTotalMax);
    const valueBytes = 256 * KiB;
    await withNode('wire', { wire }, async (node, sockets) => {
      const client = connect(node.url);
      await client.put('big', Buffer.alloc(valueBytes, 0x61));
      client.close();
      const gets = Buffer.concat(Array.from({ length: 64 }, (_, i) => encodeGet(i + 1, Buffer.from('big'))));
      for (let c = 0; c < wire.connectionsPerAddressMax; c++) {
        const raw = await RawWire.ready(node.wireUrl, undefined, undefined, ATTACKER);
        sockets.push(raw.socket);
        raw.socket.pause();
        raw.send(gets);
      }
      await steadyValue(() => nodeMetric(node, 'mercury_wire_requests'), 'requests read');
      const held = nodeMetric(node, 'mercury_wire_output_bytes');

      // Before the per-host part, these were refused OVERLOADED (WIRE_OUTPUT_FULL): the attacker held the port's budget.
      const reader = await RawWire.ready(node.wireUrl, undefined, undefined, GOOD);
      sockets.push(reader.socket);
      for (let id = 1; id <= 3; id++) {
        reader.send(encodeGet(id, Buffer.from('big')));
        const answer = await reader.next();
        assert.equal(answer?.type, 0x82, `another host's GET ${id} while the attacker holds ${held} bytes: ${RawWire.message(answer)}`);
        assert.equal((answer as { value: Buffer }).value.length, valueBytes);
      }
      assert.equal(nodeMetric(node, 'mercury_wire_output_address_bytes_max'), held, 'the attacking host holds all the port holds');
      assert.ok(held < wire.outputBytesTotalMax, `the attacking host holds ${held} bytes of answers; the port's budget is ${wire.outputBytesTotalMax}`);
    });
  });
});

/**
 * Hostile input - wire-port answers summed over connections. Found on a real node (audit, 2026-12-07): 128 wire
 * connections (32 from each of four addresses), each sending HELLO and 64 pipelined GETs of a 1 MiB value (972 bytes)
 * and reading nothing, made the node hold 8 MiB of answers per connection (`outputBytesMax` plus one answer): 1 GiB of
 * RSS for 124 KB sent, with no bound over the port. Now the port holds at most `outputBytesTotalMax` beyond each
 * connection's share of it: past its share, a read whose answer would take the port past the budget waits for the
 * connection's client to take its answers, or is answered OVERLOADED (WIRE_OUTPUT_FULL) if it has none on their way.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { encodeGet } from '../src/api/index.js';
import { connect } from '../src/client/index.js';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS, NODE_LIMITS_TEST, validateNodeLimits, withLimits } from '../src/node/index.js';
import { makeTempDir, removeDir } from './support/process.js';
import { nodeMetric } from './support/fuzz.js';
import { steadyValue } from './support/hostile.js';
import { eventually } from './support/tree.js';
import { RawWire } from './support/wire.js';

const KiB = 1024;
const VALUE_BYTES = 64 * KiB;
/**
 * The test preset's wire limits with room for a budget that a few connections fill: 16 connections of one address,
 * 256 KiB each, 1 MiB together (a share of 64 KiB each), and no idle close while the test looks.
 */
const WIRE = { ...NODE_LIMITS_TEST.wire, connectionsMax: 16, connectionsPerAddressMax: 16, outputBytesMax: 256 * KiB, outputBytesTotalMax: 1024 * KiB, idleTimeoutMs: 60_000 };
const CONNECTIONS = 14;
/** 8 MiB of answers per connection: more than loopback's socket buffers take, so the rest stays in the node. */
const GETS_PER_CONNECTION = 128;


describe('hostile input - wire answers over many connections', () => {
  const dir = makeTempDir('hostile-memory-wire');
  const raws: RawWire[] = [];
  let node: MercuryNode | undefined;
  after(async () => {
    for (const raw of raws) raw.socket.destroy();
    await node?.close();
    removeDir(dir);
  });

  test('wire answers: connections that pipeline GETs of a large value and read nothing hold the port output budget, not their own bound each', async () => {
    const wire = WIRE;
    const shareBytes = Math.floor(wire.outputBytesTotalMax / wire.connectionsMax);
    // Before the port budget, these connections alone held more than the whole port may now.
    assert.ok(CONNECTIONS * (wire.outputBytesMax + VALUE_BYTES) > 4 * wire.outputBytesTotalMax);
    assert.equal(shareBytes, VALUE_BYTES, 'a connection holding nothing is refused a large value, given a small one');
    // Values of 64 KiB need the default commit limits; the wire port keeps the test preset's.
    const limits = validateNodeLimits(withLimits(NODE_LIMITS, { wire }));
    node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'node'), port: 0 }), { auth: 'off', limits });
    const started = node;
    const client = connect(started.url);
    await client.put('big', Buffer.alloc(VALUE_BYTES, 0x61));
    await client.put('small', 'a small answer');

    const gets = Buffer.concat(Array.from({ length: GETS_PER_CONNECTION }, (_, i) => encodeGet(i + 1, Buffer.from('big'))));
    for (let c = 0; c < CONNECTIONS; c++) {
      const raw = await RawWire.ready(started.wireUrl);
      raw.socket.pause();
      raw.send(gets);
      raws.push(raw);
    }
    // Each connection has read what it will read until its client takes answers: the count stops moving.
    await steadyValue(() => nodeMetric(started, 'mercury_wire_requests'), 'requests read');
    // The budget, and per connection its share (and a few ERRORs: a read that waited for room with none of its own
    // answers on their way is refused).
    const held = nodeMetric(started, 'mercury_wire_output_bytes');
    const bound = wire.outputBytesTotalMax + CONNECTIONS * (shareBytes + 4 * KiB);
    assert.ok(held <= bound, `${CONNECTIONS} connections reading nothing: the node holds ${held} bytes of answers; the bound is ${bound}`);

    // A client that reads: a large answer is refused while the port is full, a small one still fits its share.
    const reader = await RawWire.ready(started.wireUrl);
    raws.push(reader);
    reader.send(encodeGet(1, Buffer.from('big')));
    const refused = await reader.next();
    assert.equal(RawWire.code(refused), 'OVERLOADED', `answered type ${refused?.type} while the port held ${held} bytes`);
    assert.match(RawWire.message(refused), /the wire port holds \d+ bytes of answers its clients have not read/);
    assert.equal((JSON.parse((refused as { json: string }).json) as { error: { reason?: string } }).error.reason, 'WIRE_OUTPUT_FULL');
    reader.send(encodeGet(2, Buffer.from('small')));
    const small = await reader.next();
    assert.equal(small?.type, 0x82, RawWire.message(small));

    // Once the others go, the budget is free again.
    for (const raw of raws.splice(0, CONNECTIONS)) raw.socket.destroy();
    await eventually(
      () => Promise.resolve(nodeMetric(started, 'mercury_wire_output_bytes') === 0),
      () => `${nodeMetric(started, 'mercury_wire_output_bytes')} bytes still held`,
    );
    reader.send(encodeGet(3, Buffer.from('big')));
    const answered = await reader.next();
    assert.equal(answered?.type, 0x82, RawWire.message(answered));
    assert.equal((answered as { value: Buffer }).value.length, VALUE_BYTES);
  });
});

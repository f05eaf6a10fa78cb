/**
 * Writes a replica forwards at once: each holds a connection to the upstream until it answers (the client's keep-alive
 * agent opens one per request in flight), and those connections are files beside the node's own. A slow or silent
 * upstream with many writes sent to the replica (HTTP, or up to 1,024 in flight on each wire connection) would make
 * the replica open a socket per write, past the open-files limit. Beyond `http.forwardedWritesMax` a write is refused
 * at once with OVERLOADED, before anything leaves the node.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { MercuryError } from '../src/api/index.js';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../src/node/index.js';
import { freePort } from './support/net.js';
import { makeTempDir, removeDir } from './support/process.js';

describe('node forward: writes in flight to the upstream are bounded', () => {
  const dir = makeTempDir('mercury-forward-bound-');
  let server: Server | undefined;
  let replica: MercuryNode | undefined;
  after(async () => {
    server?.closeAllConnections();
    server?.close();
    await replica?.close();
    removeDir(dir);
  });

  test('node forward: past forwardedWritesMax a write is refused OVERLOADED, and the upstream sees at most that many connections', async () => {
    let connections = 0;
    // An upstream that takes every forwarded write and never answers.
    server = createServer(() => {});
    server.on('connection', () => connections++);
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const rootUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const limits = { ...NODE_LIMITS_TEST, http: { ...NODE_LIMITS_TEST.http, requestTimeoutMs: 5_000 } };
    replica = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'replica'), port: 0, upstreams: [`127.0.0.1:${await freePort()}`], rootUrl }), {
      auth: 'off',
      limits,
    });
    const max = limits.http.forwardedWritesMax;
    const writes = Array.from({ length: max * 4 }, (_, i) =>
      replica!.write({ compares: [], success: [{ type: 'put', key: Buffer.from(`k${i}`), value: Buffer.from('v') }], failure: [] }).then(
        () => 'answered',
        (error: unknown) => (error instanceof MercuryError ? error.code : String(error)),
      ),
    );
    const settled = await Promise.race([Promise.all(writes), new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 1_000))]);
    // The first `max` wait for the silent upstream; every other one was refused at once.
    assert.equal(settled, undefined);
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.ok(connections <= max, `the upstream saw ${connections} connections; at most ${max}`);
    const refused = await Promise.all(writes.slice(max));
    assert.deepEqual(new Set(refused), new Set(['OVERLOADED']));
  });
});

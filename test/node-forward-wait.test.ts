/**
 * A write a replica forwarded is committed once its upstream answers: the replica then waits to apply its seq (for
 * read-your-writes), and whatever ends that wait must not be reported as an error that promises nothing was done. With
 * the node's minSeq waiters all taken (reads parked by any client with read access), the wait was refused with
 * OVERLOADED, which MercuryClient resends on its own: a committed write was applied twice.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { MercuryError } from '../src/api/index.js';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../src/node/index.js';
import { metricValue } from './support/http.js';
import { freePort } from './support/net.js';
import { makeTempDir, removeDir } from './support/process.js';
import { eventually } from './support/tree.js';

/** minSeq waiters of the node under test. */
const SEQ_WAITERS_MAX = 16;
/** Far beyond anything the replica holds: the upstream says the write is there. */
const COMMITTED_SEQ = 1_000_000;

describe('node forward: a committed write is never reported as not applied', () => {
  const dir = makeTempDir('mercury-forward-wait-');
  let server: Server | undefined;
  let replica: MercuryNode | undefined;
  const sockets: Socket[] = [];
  after(async () => {
    for (const socket of sockets) socket.destroy();
    server?.closeAllConnections();
    server?.close();
    await replica?.close();
    removeDir(dir);
  });

  async function start(): Promise<MercuryNode> {
    let commits = 0;
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        commits++;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ succeeded: true, seq: COMMITTED_SEQ + commits }));
      });
    });
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const rootUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return MercuryNode.start(validateConfig({ dataDir: join(dir, 'replica'), port: 0, upstreams: [`127.0.0.1:${await freePort()}`], rootUrl }), {
      auth: 'off',
      // Few minSeq waiters: filled by two connections of pipelined reads (8 run at once on each).
      limits: { ...NODE_LIMITS_TEST, http: { ...NODE_LIMITS_TEST.http, seqWaitersMax: SEQ_WAITERS_MAX } },
    });
  }

  const put = { compares: [], success: [{ type: 'put' as const, key: Buffer.from('k'), value: Buffer.from('v') }], failure: [] };

  async function writeError(node: MercuryNode): Promise<MercuryError> {
    const error = await node.write(put).then(
      () => assert.fail('the write was answered as applied here'),
      (error: unknown) => error,
    );
    assert.ok(error instanceof MercuryError, String(error));
    return error;
  }

  test('node forward: the seq not applied in time: SEQ_WAIT_TIMEOUT saying the write is committed, not to resend it', async () => {
    replica = await start();
    const error = await writeError(replica);
    assert.equal(error.code, 'SEQ_WAIT_TIMEOUT');
    assert.match(error.message, /committed .*seq 1000001.*do not resend it/);
  });

  test('node forward: every minSeq waiter taken: not OVERLOADED (a client resends that), but SEQ_WAIT_TIMEOUT saying it is committed', async () => {
    // Reads parked on a seq the replica will not reach, pipelined on two connections.
    const get = `GET /v1/kv/x?minSeq=${COMMITTED_SEQ * 10}&timeoutMs=30000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;
    for (let i = 0; i < 2; i++) {
      const socket = connect(Number(new URL(replica!.url).port), '127.0.0.1');
      sockets.push(socket);
      socket.on('error', () => {});
      socket.resume();
      socket.write(get.repeat(SEQ_WAITERS_MAX));
    }
    await eventually(
      async () => (await metricValue(replica!.url, /^mercury_seq_waiters /)) >= SEQ_WAITERS_MAX,
      async () => `${await metricValue(replica!.url, /^mercury_seq_waiters /)} reads parked, not ${SEQ_WAITERS_MAX}`,
    );
    const error = await writeError(replica!);
    assert.notEqual(error.code, 'OVERLOADED', error.message);
    assert.equal(error.code, 'SEQ_WAIT_TIMEOUT');
    assert.match(error.message, /committed .*do not resend it/);
  });
});

/**
 * Hostile input - pipelining a slow consumer. Found on a real node (audit, 2026-12-06): 4 keep-alive connections, each
 * writing pipelined `GET /v1/kv/big` (a 1 MiB value) and reading nothing, took the node from 66 MiB to 4.4 GiB of RSS
 * in 20 s. node:http stops reading a client that takes no answers only after it has parsed the whole chunk it read,
 * and every GET of that chunk (some 1,400 in 64 KiB) ran at once and held its answer in memory until the ones before
 * it were sent. Now at most HTTP_PIPELINED_RUNNING_MAX pipelined requests of a connection run at once; the rest wait,
 * parsed, for an answer to be taken.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import { HTTP_PIPELINED_RUNNING_MAX } from '../src/limits.js';
import { MercuryNode } from '../src/node/index.js';
import { parseRawResponses, rawExchange, request } from './support/http.js';
import { MiB, assertHealthzAnswers, assertRssGrowthUnder, rssBytes, unreadPipelines } from './support/hostile.js';
import { makeTempDir, removeDir } from './support/process.js';

const VALUE_BYTES = 256 * 1024;
const CONNECTIONS = 2;
/** Pipelined GETs each connection writes: several 64 KiB chunks of them. */
const GETS_PER_CONNECTION = 8_000;
/**
 * The node runs in this process. Each connection may hold HTTP_PIPELINED_RUNNING_MAX answers of 256 KiB (2 MiB) and
 * the parsed requests of the chunks read before node:http stopped reading (a few KiB each). Without the bound, each
 * 64 KiB chunk of GETs held about 1,700 answers: over 400 MiB.
 */
const RSS_GROWTH_BYTES_MAX = 96 * MiB;

describe('hostile input - pipelining', () => {
  const dir = makeTempDir('hostile-pipelining');
  let node: MercuryNode;
  const sockets: net.Socket[] = [];
  after(async () => {
    for (const socket of sockets) socket.destroy();
    await node?.close();
    removeDir(dir);
  });

  test('pipelining: a client that pipelines GETs of a large value and reads nothing holds a bounded number of answers', async () => {
    node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'node'), port: 0 }), { auth: 'off' });
    assert.equal((await request(node.url, 'PUT', '/v1/kv/big', { body: Buffer.alloc(VALUE_BYTES, 0x61) })).status, 200);
    const get = 'GET /v1/kv/big HTTP/1.1\r\nhost: localhost\r\n\r\n';
    global.gc?.();
    const baseline = rssBytes();
    sockets.push(...unreadPipelines(node.url, get.repeat(GETS_PER_CONNECTION), CONNECTIONS));
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assertRssGrowthUnder(baseline, RSS_GROWTH_BYTES_MAX, `${CONNECTIONS} connections pipelining GETs of ${VALUE_BYTES} bytes, reading nothing`);
    await assertHealthzAnswers(node.url, 'while pipelining clients read nothing');
    for (const socket of sockets) socket.destroy();
  });

  test('pipelining: a client that reads gets every pipelined answer, in order, more than run at once', async () => {
    const count = HTTP_PIPELINED_RUNNING_MAX * 5 + 3;
    let pipeline = '';
    for (let i = 0; i < count; i++) pipeline += `PUT /v1/kv/p/${i} HTTP/1.1\r\nhost: localhost\r\ncontent-length: ${String(i).length}\r\n\r\n${i}`;
    for (let i = 0; i < count; i++) pipeline += `GET /v1/kv/p/${i} HTTP/1.1\r\nhost: localhost\r\n${i === count - 1 ? 'connection: close\r\n' : ''}\r\n`;
    const responses = parseRawResponses(await rawExchange(node.url, pipeline, { timeoutMs: 10_000 }));
    assert.equal(responses.length, 2 * count);
    assert.ok(responses.every((response) => response.status === 200));
    assert.deepEqual(
      responses.slice(count).map((response) => response.body),
      Array.from({ length: count }, (_, i) => String(i)),
    );
  });
});

/**
 * Hostile input - trickled bytes. Found on a real node: a message, frame or body sent in tiny pieces cost far more
 * memory than its bytes, because each piece was kept as its own Buffer (some 200 bytes of heap besides the byte): a
 * 1 MB wire frame or HTTP body sent a byte per TCP segment cost ~230 bytes of RSS per byte sent, and a watch message of
 * 130,000 one-byte fragments (within the 128 KiB message limit) 17 MB per connection. Now each is gathered into one
 * buffer (or a few growing blocks) as it arrives. Each attack runs on a real `mercury serve` process (production
 * limits) with its RSS read from /proc; the bounds are several times what the fixed node uses and several times
 * below what the broken one did.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { encodeHello } from '../src/api/index.js';
import { metricValue } from './support/http.js';
import { MiB, assertHealthzAnswers, rssBytes } from './support/hostile.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';

/**
 * Bytes trickled one per write: enough that the broken node's 120 to 230 bytes of RSS per byte (fewer when the kernel
 * merges segments into one read) is 40 MiB or more.
 */
const TRICKLED_BYTES = 320_000;
/**
 * RSS growth allowed while TRICKLED_BYTES arrive one by one: the bytes themselves, the buffer they go into, and the
 * garbage of the socket reads that the GC has not collected yet (measured: 1 to 3 MiB here, 6 MiB on a fresh node).
 * The broken node grew by 24 MiB for 200,000 bytes (wire frame and Content-Length body), 73 MiB for 1-byte chunks.
 */
const TRICKLE_RSS_GROWTH_BYTES_MAX = 12 * MiB;
const WATCH_CONNECTIONS = 4;
/** Fragments of one unfinished watch message: 130,000 bytes, under the 128 KiB message limit. */
const WATCH_FRAGMENTS = 130_000;
/**
 * RSS growth allowed for WATCH_CONNECTIONS connections each holding such a message: its 128 KiB at most, the read
 * buffers and garbage (measured: under 1 MiB per connection). The broken node held 17 MiB per connection.
 */
const WATCH_RSS_GROWTH_BYTES_MAX = WATCH_CONNECTIONS * 3 * MiB;

function open(port: number): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  socket.on('error', () => {});
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Writes `count` pieces made by `piece`, each as its own write once the last one was handed to the kernel. */
async function trickle(socket: Socket, count: number, piece: (index: number) => Buffer): Promise<void> {
  for (let index = 0; index < count; index++) {
    await new Promise<void>((resolve, reject) => socket.write(piece(index), (error) => (error ? reject(error) : resolve())));
    // Let the node's reads interleave with the writes, so that most pieces arrive as segments of their own.
    if (index % 64 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

const ONE_BYTE = Buffer.from('a');

/** A wire frame's first 12 bytes: length (1 MB), type PUT, id 1, no ifModSeq flag, a 1-byte key. */
const PUT_FRAME_HEAD = (() => {
  const head = Buffer.alloc(12);
  head.writeUInt32BE(1_000_000, 0);
  head[4] = 0x03;
  head.writeUInt32BE(1, 5);
  head.writeUInt16BE(1, 10);
  return head;
})();

describe('hostile input - trickled bytes', () => {
  const dir = makeTempDir('hostile-trickle');
  let node: ServeProcess;
  const sockets: Socket[] = [];
  before(async () => {
    node = await startServe(join(dir, 'node'));
  });
  after(async () => {
    for (const socket of sockets) socket.destroy();
    await stopProcess(node.child);
    removeDir(dir);
  });

  /** Runs `attack`, then checks the node's RSS growth against `boundBytes` and that it still answers. */
  async function measured(t: TestContext, what: string, boundBytes: number, attack: () => Promise<void>): Promise<void> {
    const pid = node.child.pid!;
    const before = rssBytes(pid);
    await attack();
    const grownBytes = rssBytes(pid) - before;
    t.diagnostic(`${what}: RSS +${(grownBytes / MiB).toFixed(1)} MiB`);
    assert.ok(grownBytes < boundBytes, `${what}: RSS grew by ${(grownBytes / MiB).toFixed(1)} MiB; the bound is ${(boundBytes / MiB).toFixed(0)} MiB`);
    await assertHealthzAnswers(node.url, what, pid);
  }

  test('trickle: a 1 MB wire PUT frame sent a byte per segment costs about its bytes, not an object per byte', async (t) => {
    const socket = await open(Number(new URL(node.wire).port));
    sockets.push(socket);
    socket.write(encodeHello(undefined));
    socket.write(PUT_FRAME_HEAD);
    await measured(t, `${TRICKLED_BYTES} bytes of a wire frame, one per write`, TRICKLE_RSS_GROWTH_BYTES_MAX, () => trickle(socket, TRICKLED_BYTES, () => ONE_BYTE));
    socket.destroy();
  });

  test('announced: 30 wire frames that announce 1 MB and send 12 bytes hold what they sent, not what they announced', async (t) => {
    // Found by review: the node allocated a frame's whole buffer once its length field was in, so each connection could
    // make it hold up to the largest frame (about 1 MiB, or 16 MiB with the largest --value-bytes-max) for 12 bytes.
    const connections = 30;
    const external = (): Promise<number> => metricValue(node.url, /^nodejs_external_memory_bytes (\d+)/m);
    const before = await external();
    const opened: Socket[] = [];
    for (let i = 0; i < connections; i++) {
      const socket = await open(Number(new URL(node.wire).port));
      sockets.push(socket);
      opened.push(socket);
      socket.write(encodeHello(undefined));
      socket.write(PUT_FRAME_HEAD);
    }
    // Every connection's 12 bytes are in once a request after them is answered on each.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const grownBytes = (await external()) - before;
    t.diagnostic(`${connections} announced frames: external memory +${(grownBytes / MiB).toFixed(2)} MiB`);
    assert.ok(grownBytes < 8 * MiB, `external memory grew by ${(grownBytes / MiB).toFixed(1)} MiB for ${connections * 12} bytes sent`);
    for (const socket of opened) socket.destroy();
    await assertHealthzAnswers(node.url, 'announced frames', node.child.pid);
  });

  test('trickle: a 1 MB HTTP body with a Content-Length sent a byte per segment costs about its bytes', async (t) => {
    const socket = await open(Number(new URL(node.url).port));
    sockets.push(socket);
    socket.write(`PUT /v1/kv/trickled HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n`);
    await measured(t, `${TRICKLED_BYTES} bytes of an HTTP body, one per write`, TRICKLE_RSS_GROWTH_BYTES_MAX, () => trickle(socket, TRICKLED_BYTES, () => ONE_BYTE));
    socket.destroy();
  });

  test('trickle: a chunked HTTP body sent as 1-byte chunks costs about its bytes', async (t) => {
    const socket = await open(Number(new URL(node.url).port));
    sockets.push(socket);
    socket.write(`PUT /v1/kv/trickled HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n`);
    const chunk = Buffer.from('1\r\na\r\n');
    await measured(t, `${TRICKLED_BYTES} one-byte chunks of an HTTP body, one per write`, TRICKLE_RSS_GROWTH_BYTES_MAX, () => trickle(socket, TRICKLED_BYTES, () => chunk));
    socket.destroy();
  });

  test('trickle: watch messages of 130,000 one-byte fragments cost at most their 128 KiB limit per connection', async (t) => {
    const port = Number(new URL(node.url).port);
    // A masked text frame that is not final, then continuation frames that are not final: 1 byte each, mask 0.
    const first = Buffer.from([0x01, 0x81, 0, 0, 0, 0, 0x61]);
    const continuation = Buffer.from([0x00, 0x81, 0, 0, 0, 0, 0x61]);
    const message = Buffer.concat([first, ...Array<Buffer>(WATCH_FRAGMENTS - 1).fill(continuation)]);
    const watchers: Socket[] = [];
    await measured(t, `${WATCH_CONNECTIONS} watch connections each sending ${WATCH_FRAGMENTS} fragments`, WATCH_RSS_GROWTH_BYTES_MAX, async () => {
      for (let i = 0; i < WATCH_CONNECTIONS; i++) {
        const socket = await open(port);
        sockets.push(socket);
        watchers.push(socket);
        let answer = '';
        await new Promise<void>((resolve) => {
          socket.on('data', (data: Buffer) => {
            answer += data.toString('latin1');
            if (answer.includes('\r\n\r\n')) resolve();
          });
          socket.write(
            'GET /v1/watch HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
              'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
          );
        });
        assert.match(answer, /^HTTP\/1\.1 101 /);
        await new Promise<void>((resolve, reject) => socket.write(message, (error) => (error ? reject(error) : resolve())));
      }
      // The node reads what the kernel holds: wait until it has (the connections stay open, messages unfinished).
      await new Promise((resolve) => setTimeout(resolve, 1_500));
    });
    for (const socket of watchers) assert.ok(!socket.destroyed && !socket.readableEnded, 'the connection is still open, its message unfinished');
  });
});

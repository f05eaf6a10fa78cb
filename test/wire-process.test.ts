/**
 * The wire port of a real `mercury serve` process (port 0, a temp data directory, production limits): every op through
 * the client, then seeded garbage (random bytes, random frames after HELLO, frames cut short and abandoned) from many
 * connections at once; the process never dies, /healthz keeps answering, and the data is intact.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { encodeGet, encodeHello, encodePut } from '../src/api/index.js';
import { connect } from '../src/index.js';
import { request } from './support/http.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { sampleSeeded, seeded } from './support/seed.js';
import { RawWire } from './support/wire.js';

const dir = makeTempDir('wire-process');
let serve: ServeProcess;

before(async () => {
  serve = await startServe(dir);
});

after(async () => {
  await stopProcess(serve.child);
  removeDir(dir);
});

test('wire process: the listening line names the wire URL, and every op works through the client', async () => {
  assert.match(serve.wire, /^mercury\+tcp:\/\/127\.0\.0\.1:\d+$/);
  const client = connect(serve.wire);
  const { seq } = await client.put('p/a', 'one');
  assert.equal((await client.get('p/a', { minSeq: seq }))?.value.toString(), 'one');
  assert.equal((await client.delete('p/a')).deleted, true);
  assert.equal(await client.get('p/a'), undefined);
});

test('wire process: seeded garbage from many connections never takes the node down', async () => {
  await connect(serve.wire).put('p/kept', 'intact');
  const garbage = sampleSeeded(
    fc.oneof(
      // Bytes before HELLO.
      fc.uint8Array({ minLength: 1, maxLength: 600 }).map((bytes) => ({ hello: false, bytes: Buffer.from(bytes) })),
      // A random frame body with a valid length, after HELLO.
      fc.tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 1200 })).map(([type, body]) => {
        const frame = Buffer.alloc(9 + body.length);
        frame.writeUInt32BE(5 + body.length, 0);
        frame[4] = type;
        frame.writeUInt32BE(1, 5);
        Buffer.from(body).copy(frame, 9);
        return { hello: true, bytes: frame };
      }),
      // A frame cut short, then the connection abandoned.
      fc.integer({ min: 1, max: 20 }).map((cut) => ({ hello: true, bytes: encodePut(2, Buffer.from('p/x'), Buffer.alloc(100)).subarray(0, cut) })),
    ),
    120,
  );
  await seeded(async () => {
    for (let at = 0; at < garbage.length; at += 20) {
      await Promise.all(
        garbage.slice(at, at + 20).map(async ({ hello, bytes }) => {
          const raw = hello ? await RawWire.ready(serve.wire) : await RawWire.open(serve.wire);
          raw.send(bytes);
          // An answer, a close, or (a frame cut short) nothing yet: then the peer goes away.
          await Promise.race([raw.next(300).catch(() => undefined), raw.closed]);
          raw.close();
        }),
      );
      const health = await request(serve.url, 'GET', '/healthz');
      assert.equal(health.status, 200, `the node answers /healthz after ${at + 20} hostile connections`);
    }
  });
  assert.equal(serve.child.exitCode, null, 'the node is still running');
  // A well-behaved connection is still served; the key survived, and no frame cut short was applied.
  const raw = await RawWire.ready(serve.wire);
  raw.send(encodeGet(9, Buffer.from('p/kept')));
  const answer = await raw.next();
  assert.equal(answer?.type, 0x82);
  raw.send(encodeHello(undefined));
  assert.equal(RawWire.code(await raw.next()), 'BAD_REQUEST');
  assert.equal((await connect(serve.wire).get('p/kept'))?.value.toString(), 'intact');
  assert.equal(await connect(serve.wire).get('p/x'), undefined);
});

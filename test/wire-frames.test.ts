/**
 * The wire framing (src/api/wire.ts) without sockets: every frame round-trips through the reader however the bytes
 * are split (one byte at a time included), the length limit is applied before a body is buffered, and the decoders
 * refuse arbitrary bytes with BAD_REQUEST, never with another exception. Seeded (MERCURY_TEST_SEED).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  MercuryError,
  WireFrameReader,
  decodeAnswer,
  decodeRequest,
  encodeDelete,
  encodeError,
  encodeGet,
  encodeGoaway,
  encodeHello,
  encodeMissing,
  encodePut,
  encodeReady,
  encodeValue,
  ValueFrameEncoder,
  encodeWritten,
  wireFrameBytesMaxFor,
  type WireFrame,
} from '../src/api/index.js';
import { assertProperty } from './support/seed.js';

const LIMIT = wireFrameBytesMaxFor(4096);

/** Feeds `bytes` to a reader in the given pieces and returns every frame it cut. */
function cut(bytes: Buffer, sizes: readonly number[], limit = LIMIT): WireFrame[] {
  const reader = new WireFrameReader(limit);
  const frames: WireFrame[] = [];
  let at = 0;
  let piece = 0;
  while (at < bytes.length) {
    const size = Math.max(1, sizes[piece++ % Math.max(1, sizes.length)] ?? 1);
    reader.push(bytes.subarray(at, at + size));
    at += size;
    for (let frame = reader.next(); frame !== undefined; frame = reader.next()) {
      assert.ok('body' in frame);
      // A copy: a frame is a view of the pushed bytes.
      frames.push({ type: frame.type, id: frame.id, body: Buffer.from(frame.body) });
    }
  }
  assert.equal(reader.partialBytes, 0);
  return frames;
}

const key = fc.uint8Array({ minLength: 1, maxLength: 1024 }).map((bytes) => Buffer.from(bytes));
const seq = fc.maxSafeNat();
const id = fc.integer({ min: 1, max: 0xffff_ffff });

const requests = fc.oneof(
  fc.record({ kind: fc.constant('hello' as const), token: fc.option(fc.stringMatching(/^[\x21-\x7e]{1,200}$/), { nil: undefined }) }),
  fc.record({ kind: fc.constant('get' as const), id, key, minSeq: fc.option(fc.record({ seq, timeoutMs: fc.nat({ max: 60_000 }) }), { nil: undefined }) }),
  fc.record({ kind: fc.constant('put' as const), id, key, value: fc.uint8Array({ maxLength: 4096 }).map((bytes) => Buffer.from(bytes)), ifModSeq: fc.option(seq, { nil: undefined }) }),
  fc.record({ kind: fc.constant('delete' as const), id, key, ifModSeq: fc.option(seq, { nil: undefined }) }),
);
type Request = typeof requests extends fc.Arbitrary<infer T> ? T : never;

function encode(request: Request): Buffer {
  switch (request.kind) {
    case 'hello':
      return encodeHello(request.token);
    case 'get':
      return encodeGet(request.id, request.key, request.minSeq);
    case 'put':
      return encodePut(request.id, request.key, request.value, request.ifModSeq);
    case 'delete':
      return encodeDelete(request.id, request.key, request.ifModSeq);
  }
}

test('wire frames: client frames round-trip through the reader, however the bytes are split', () => {
  assertProperty(
    fc.property(fc.array(requests, { minLength: 1, maxLength: 8 }), fc.array(fc.integer({ min: 1, max: 600 }), { maxLength: 8 }), (sent, sizes) => {
      const frames = cut(Buffer.concat(sent.map(encode)), sizes);
      assert.equal(frames.length, sent.length);
      frames.forEach((frame, index) => {
        const request = sent[index]!;
        const decoded = decodeRequest(frame);
        if (request.kind === 'hello') assert.deepEqual(decoded, { type: 0x01, id: 0, version: 1, token: request.token });
        else if (request.kind === 'get')
          assert.deepEqual(decoded, { type: 0x02, id: request.id, key: request.key, minSeq: request.minSeq?.seq, minSeqTimeoutMs: request.minSeq?.timeoutMs });
        else if (request.kind === 'put') assert.deepEqual(decoded, { type: 0x03, id: request.id, key: request.key, ifModSeq: request.ifModSeq, value: request.value });
        else assert.deepEqual(decoded, { type: 0x04, id: request.id, key: request.key, ifModSeq: request.ifModSeq });
      });
    }),
    { numRuns: 300 },
  );
});

test('wire frames: one byte at a time', () => {
  const bytes = Buffer.concat([encodeHello('mcy_x'), encodePut(9, Buffer.from('k'), Buffer.from('value')), encodeDelete(10, Buffer.from('k'), 5)]);
  const frames = cut(bytes, [1]);
  assert.deepEqual(frames.map((frame) => [frame.type, frame.id]), [[1, 0], [3, 9], [4, 10]]);
});

test('wire frames: node frames round-trip', () => {
  const record = { createSeq: 3, modSeq: Number.MAX_SAFE_INTEGER, version: 2 ** 40, value: Buffer.from('v') };
  const frames = cut(
    Buffer.concat([encodeReady(16, LIMIT), encodeValue(5, 7, record), encodeMissing(6, 8), encodeWritten(7, 9, true), encodeError(8, 'KEY_EMPTY', 'm', { limit: 1 }), encodeGoaway()]),
    [3],
    64 * 1024,
  );
  assert.deepEqual(frames.map(decodeAnswer), [
    { type: 0x81, id: 0, version: 1, inFlightMax: 16, frameBytesMax: LIMIT },
    { type: 0x82, id: 5, seq: 7, ...record },
    { type: 0x83, id: 6, seq: 8 },
    { type: 0x84, id: 7, seq: 9, deleted: true },
    { type: 0x85, id: 8, json: '{"error":{"code":"KEY_EMPTY","message":"m","limit":1}}' },
    { type: 0x86, id: 0 },
  ]);
});

test('wire frames: ValueFrameEncoder encodes a record read in place as encodeValue does, and MISSING when none was added', () => {
  const encoder = new ValueFrameEncoder();
  const record = { createSeq: 3, modSeq: Number.MAX_SAFE_INTEGER, version: 2 ** 31, value: Buffer.from('the value') };
  // The record inside a larger buffer, as LMDB's read buffer holds it.
  const bytes = Buffer.concat([Buffer.from('header..'), record.value, Buffer.from('trailing')]);
  encoder.add(Buffer.from('k'), bytes, 8, 8 + record.value.length, record.createSeq, record.modSeq, record.version);
  assert.ok(encoder.take(5, 7).equals(encodeValue(5, 7, record)));
  assert.ok(encoder.take(6, 8).equals(encodeMissing(6, 8)));
});

test('wire frames: a frame over the limit is reported from its header and its body is dropped unbuffered', () => {
  const reader = new WireFrameReader(LIMIT);
  const big = encodePut(42, Buffer.from('k'), Buffer.alloc(LIMIT));
  reader.push(big.subarray(0, 6));
  assert.equal(reader.next(), undefined, 'the id is not in yet');
  reader.push(big.subarray(6, 4096));
  assert.deepEqual(reader.next(), { oversized: true, type: 0x03, id: 42, length: big.length - 4 });
  assert.ok(reader.partialBytes > 0);
  reader.push(big.subarray(4096));
  reader.push(encodeGet(43, Buffer.from('k')));
  const next = reader.next();
  assert.ok(next !== undefined && 'body' in next);
  assert.equal(next.id, 43);
  assert.equal(reader.partialBytes, 0);
});

test('wire frames: a frame longer than headsAbove is returned as its head first, before more is buffered, and drop() skips it, in any split', () => {
  const HEADS_ABOVE = 64;
  assertProperty(
    fc.property(
      fc.array(fc.tuple(fc.integer({ min: 0, max: 300 }), fc.boolean()), { minLength: 1, maxLength: 12 }),
      fc.array(fc.integer({ min: 1, max: 200 }), { minLength: 1, maxLength: 8 }),
      (shapes, sizes) => {
        // Frame i: a PUT of a value of `valueBytes`; a large one is dropped at its head when `dropIt`.
        const frames = shapes.map(([valueBytes], index) => encodePut(index + 1, Buffer.from('k'), Buffer.alloc(valueBytes, index)));
        const bytes = Buffer.concat(frames);
        const reader = new WireFrameReader(LIMIT);
        reader.setLimit(LIMIT, HEADS_ABOVE);
        const seen: string[] = [];
        let at = 0;
        let piece = 0;
        while (at < bytes.length) {
          const size = sizes[piece++ % sizes.length]!;
          reader.push(bytes.subarray(at, at + size));
          at += size;
          for (let frame = reader.next(); frame !== undefined; frame = reader.next()) {
            if ('oversized' in frame) assert.fail('no frame is over the limit');
            if ('head' in frame) {
              assert.ok(frame.length > HEADS_ABOVE);
              // Nothing of the frame is gathered yet: at most what arrived with its first 9 bytes is held.
              assert.ok(reader.partialBytes <= 9 + size, `${reader.partialBytes} bytes held at a head`);
              seen.push(`head ${frame.id}`);
              if (shapes[frame.id - 1]![1]) reader.drop();
            } else {
              assert.ok(frame.body.equals(frames[frame.id - 1]!.subarray(9)), `frame ${frame.id} whole`);
              seen.push(`whole ${frame.id}`);
            }
          }
        }
        const expected = frames.flatMap((frame, index) => {
          const large = frame.length - 4 > HEADS_ABOVE;
          if (!large) return [`whole ${index + 1}`];
          return shapes[index]![1] ? [`head ${index + 1}`] : [`head ${index + 1}`, `whole ${index + 1}`];
        });
        assert.deepEqual(seen, expected);
        assert.equal(reader.partialBytes, 0);
        assert.equal(reader.framesEnded, frames.length, 'a dropped frame ends too');
      },
    ),
    { numRuns: 500 },
  );
});

test('wire frames: a frame split across chunks is gathered into one buffer, and framesEnded counts each frame that ends', () => {
  const reader = new WireFrameReader(LIMIT);
  const first = encodePut(1, Buffer.from('k'), Buffer.alloc(1000, 1));
  const second = encodeGet(2, Buffer.from('k'));
  // A byte at a time, then the rest of the first frame with the start of the second in one chunk.
  for (let at = 0; at < 500; at++) reader.push(first.subarray(at, at + 1));
  assert.equal(reader.next(), undefined);
  assert.equal(reader.partialBytes, 500);
  assert.equal(reader.framesEnded, 0);
  reader.push(Buffer.concat([first.subarray(500), second.subarray(0, 5)]));
  const one = reader.next();
  assert.ok(one !== undefined && 'body' in one);
  assert.deepEqual([one.id, one.body.equals(first.subarray(9))], [1, true]);
  assert.equal(reader.framesEnded, 1);
  assert.equal(reader.next(), undefined);
  assert.equal(reader.partialBytes, 5, 'the start of the second frame, held for it');
  reader.push(second.subarray(5));
  const two = reader.next();
  assert.ok(two !== undefined && 'body' in two);
  assert.equal(two.id, 2);
  assert.equal(reader.framesEnded, 2);
  // An oversized frame ends when its last byte has been dropped.
  const big = encodePut(3, Buffer.from('k'), Buffer.alloc(LIMIT));
  reader.push(big.subarray(0, 100));
  assert.ok(reader.next() !== undefined);
  assert.equal(reader.framesEnded, 2);
  reader.push(big.subarray(100));
  assert.equal(reader.framesEnded, 3);
  assert.equal(reader.partialBytes, 0);
});

test('wire frames: arbitrary bytes are refused with BAD_REQUEST or wait for more, never anything else', () => {
  assertProperty(
    fc.property(fc.uint8Array({ maxLength: 2048 }), (bytes) => {
      const reader = new WireFrameReader(LIMIT);
      reader.push(Buffer.from(bytes));
      for (;;) {
        let frame;
        try {
          frame = reader.next();
          if (frame === undefined || !('body' in frame)) return;
          decodeRequest(frame);
          decodeAnswer(frame);
        } catch (error) {
          assert.ok(error instanceof MercuryError && error.code === 'BAD_REQUEST', String(error));
          return;
        }
      }
    }),
    { numRuns: 2_000 },
  );
});

test('wire frames: well-formed frames with random bodies decode or are refused with BAD_REQUEST', () => {
  assertProperty(
    fc.property(fc.integer({ min: 0, max: 255 }), id, fc.uint8Array({ maxLength: 1100 }), (type, frameId, body) => {
      const frame = { type, id: frameId, body: Buffer.from(body) };
      for (const decode of [decodeRequest, decodeAnswer]) {
        try {
          decode(frame);
        } catch (error) {
          assert.ok(error instanceof MercuryError && error.code === 'BAD_REQUEST', String(error));
        }
      }
    }),
    { numRuns: 3_000 },
  );
});

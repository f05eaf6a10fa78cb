/**
 * Fuzzing the entry decoder, which reads bytes from disk and from peers: whatever it is given, it either returns an
 * entry or throws EntryDecodeError (ChainError from the verifiers), never anything else, and never allocates in
 * proportion to a length field it has not checked against the record's size.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { assertProperty } from './support/seed.js';
import {
  ChainError,
  ENTRY_FORMAT,
  EntryDecodeError,
  GENESIS_HASH,
  GENESIS_HEAD,
  HASH_BYTES,
  decodeEntry,
  sealEntry,
  verifyNext,
  verifySelf,
  type Entry,
} from '../src/log/index.js';
import { bytes, opArbitrary as opArbitraryOf } from './support/arbitraries.js';

const HEADER_BYTES = 1 + 8 + 8 + 4;
const TRAILER_BYTES = 2 * HASH_BYTES;

const isDecoderError = (error: unknown): boolean => error instanceof EntryDecodeError || error instanceof ChainError;

/** Runs `fn`; returns its result, or undefined if it threw one of the decoder's own errors. Anything else fails. */
function attempt<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch (error) {
    assert.ok(isDecoderError(error), `unexpected ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
    return undefined;
  }
}

/** Decodes and verifies `record` every way the project does; asserts only decoder errors escape. */
function exercise(record: Buffer): Entry | undefined {
  const decoded = attempt(() => decodeEntry(record));
  attempt(() => verifySelf(record));
  attempt(() => verifyNext(GENESIS_HEAD, record));
  if (decoded !== undefined && record[0] === ENTRY_FORMAT) {
    // Whatever decodes is canonical: re-encoding it (with its signature) gives back the very same bytes up to the hash.
    const signature = decoded.signature;
    const again = sealEntry(decoded, decoded.prevHash, signature === undefined ? undefined : () => signature);
    const upToHash = record.length - HASH_BYTES;
    assert.ok(again.record.subarray(0, upToHash).equals(record.subarray(0, upToHash)), 'decoded entry re-encodes differently');
    assert.equal(again.record.length, record.length);
  } else if (decoded !== undefined) {
    // Format 1 (written before authors and signatures) is only read: its body is everything before the hashes.
    assert.equal(decoded.authors, undefined);
    assert.equal(decoded.signature, undefined);
  }
  return decoded;
}

const opArbitrary = opArbitraryOf(16, 32);

const validRecord: fc.Arbitrary<Buffer> = fc
  .record({
    seq: fc.integer({ min: 1, max: 1000 }),
    timeMs: fc.nat(),
    ops: fc.array(opArbitrary, { minLength: 1, maxLength: 6 }),
    author: fc.option(fc.string({ minLength: 1, maxLength: 20 }), { nil: undefined }),
    signed: fc.boolean(),
  })
  .map(({ author, signed, ...body }) =>
    sealEntry(
      { ...body, authors: author === undefined ? [] : [{ author, opCount: body.ops.length }] },
      GENESIS_HASH,
      signed ? () => Buffer.alloc(64, 5) : undefined,
    ).record,
  );

/** A header claiming `opCount` ops, followed by `rest` and a trailer: reaches the op parser with arbitrary op bytes. */
function withHeader(opCount: number, rest: Buffer): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt8(1, 0);
  header.writeBigUInt64BE(1n, 1);
  header.writeBigUInt64BE(0n, 9);
  header.writeUInt32BE(opCount, 17);
  return Buffer.concat([header, rest, Buffer.alloc(TRAILER_BYTES)]);
}

describe('entry decoder fuzzing', () => {
  test('entry fuzz: random bytes only ever raise decoder errors', () => {
    assertProperty(
      fc.property(bytes(400), (record) => {
        exercise(record);
      }),
      { numRuns: 2000 },
    );
  });

  test('entry fuzz: random op bytes behind a valid header only ever raise decoder errors', () => {
    // Small op counts and op-type bytes biased towards the valid ones, so the fuzzer gets past the header often.
    const opBytes = fc
      .array(fc.oneof(fc.constantFrom(0, 1, 2, 3), fc.integer({ min: 0, max: 255 })), { maxLength: 120 })
      .map((array) => Buffer.from(array));
    let decodedCount = 0;
    assertProperty(
      fc.property(fc.integer({ min: 0, max: 8 }), opBytes, (opCount, rest) => {
        if (exercise(withHeader(opCount, rest)) !== undefined) decodedCount++;
      }),
      { numRuns: 3000 },
    );
    // The fuzzer must actually reach the accepting paths of the parser, not only the early rejections.
    assert.ok(decodedCount > 0, 'no random input decoded; the generator does not reach the op parser');
  });

  test('entry fuzz: every truncation of a valid record is rejected with EntryDecodeError', () => {
    assertProperty(
      fc.property(validRecord, (record) => {
        for (let length = 0; length < record.length; length++) {
          const truncated = record.subarray(0, length);
          assert.throws(() => decodeEntry(truncated), EntryDecodeError, `truncation to ${length} bytes decoded`);
          assert.throws(() => verifyNext(GENESIS_HEAD, truncated), isDecoderError);
        }
      }),
      { numRuns: 100 },
    );
  });

  test('entry fuzz: any mutation of a valid record fails verification with a decoder error', () => {
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('set' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), inserted: bytes(8).filter((b) => b.length > 0) }),
      fc.record({ kind: fc.constant('remove' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 8 }) }),
    );
    assertProperty(
      fc.property(fc.integer({ min: 1, max: 1000 }), fc.array(opArbitrary, { maxLength: 6 }), fc.array(mutation, { minLength: 1, maxLength: 4 }), (seq, ops, mutations) => {
        const prevHash = Buffer.alloc(HASH_BYTES, seq & 0xff);
        const { record } = sealEntry({ seq, timeMs: 1, ops }, prevHash);
        let mutated = Buffer.from(record);
        for (const m of mutations) {
          const at = m.at % (mutated.length + 1);
          if (m.kind === 'set') {
            if (at < mutated.length) mutated[at] = m.byte;
          } else if (m.kind === 'insert') mutated = Buffer.concat([mutated.subarray(0, at), m.inserted, mutated.subarray(at)]);
          else mutated = Buffer.concat([mutated.subarray(0, at), mutated.subarray(at + m.count)]);
        }
        exercise(mutated);
        const head = { seq: seq - 1, hash: prevHash };
        if (mutated.equals(record)) assert.equal(verifyNext(head, mutated).seq, seq);
        else assert.throws(() => verifyNext(head, mutated), isDecoderError);
      }),
      { numRuns: 2000 },
    );
  });

  test('entry fuzz: an op count the record cannot hold is rejected before allocating for it', () => {
    const before = process.memoryUsage().heapUsed;
    for (const opCount of [0xffffffff, 0x7fffffff, 1_000_000, 2]) {
      // Two claimed ops need at least eight bytes; seven are present.
      const record = withHeader(opCount, Buffer.from([2, 0, 1, 0x61, 2, 0, 1]));
      assert.throws(() => decodeEntry(record), { name: 'EntryDecodeError', message: /op count/ });
    }
    // A u32 op count of Array slots would be tens of GiB; nothing close to that may have been allocated.
    assert.ok(process.memoryUsage().heapUsed - before < 64 * 1024 * 1024);
  });

  test('entry fuzz: the largest op count that fits the record still decodes', () => {
    // Each delete of a 1-byte key is four bytes: the minimum the decoder's bound assumes.
    const count = 10_000;
    const ops = Buffer.alloc(4 * count);
    for (let i = 0; i < count; i++) ops.set([2, 0, 1, 0x61], 4 * i);
    const entry = decodeEntry(withHeader(count, ops));
    assert.equal(entry.ops.length, count);
    assert.throws(() => decodeEntry(withHeader(count + 1, ops)), { name: 'EntryDecodeError', message: /op count/ });
  });

  test('entry fuzz: huge field lengths are rejected, not allocated', () => {
    // put with key length 0xffff and value length 0xffffffff in a tiny record.
    const hugeKey = withHeader(1, Buffer.from([1, 0xff, 0xff, 0, 0, 0, 0]));
    assert.throws(() => decodeEntry(hugeKey), { name: 'EntryDecodeError', message: /key runs past/ });
    const hugeValue = withHeader(1, Buffer.from([1, 0, 1, 0x61, 0xff, 0xff, 0xff, 0xff]));
    assert.throws(() => decodeEntry(hugeValue), { name: 'EntryDecodeError', message: /value runs past/ });
    const hugeRange = withHeader(1, Buffer.from([3, 0, 1, 0x61, 0xff, 0xff]));
    assert.throws(() => decodeEntry(hugeRange), { name: 'EntryDecodeError', message: /range end runs past/ });
  });

  test('entry fuzz: records shorter than header and trailer are rejected', () => {
    for (let length = 0; length < HEADER_BYTES + TRAILER_BYTES; length++) {
      assert.throws(() => decodeEntry(Buffer.alloc(length, 1)), { name: 'EntryDecodeError', message: /shorter than the minimum/ });
    }
    // The smallest valid record: a header with no ops and the two hashes.
    const empty = decodeEntry(withHeader(0, Buffer.alloc(0)));
    assert.equal(empty.ops.length, 0);
  });
});

/**
 * Log entries: the canonical encoding round-trips, and the chain catches every single-bit corruption.
 *
 * The chain property is tested exhaustively (every bit of every record) on a small chain, and property-based on
 * larger random chains. A corrupted record must be rejected at its own position: its body is covered by its hash,
 * its prevHash by the link to its predecessor, and its hash by the recomputation.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isDeepStrictEqual } from 'node:util';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { assertProperty } from './support/seed.js';
import {
  ChainError,
  EntryDecodeError,
  GENESIS_HASH,
  GENESIS_HEAD,
  HASH_BYTES,
  SIGNATURE_BYTES,
  authorRuns,
  decodeEntry,
  opAuthors,
  opEncodedBytes,
  resignRecord,
  sealEntry,
  verifyNext,
  verifySelf,
  type ChainHead,
  type EntryBody,
  type Op,
} from '../src/log/index.js';
import { KEY_BYTES_MAX } from '../src/limits.js';
import { opArbitrary as opArbitraryOf } from './support/arbitraries.js';

const opArbitrary = opArbitraryOf(24, 48);

const bodyArbitrary = (seq: fc.Arbitrary<number>): fc.Arbitrary<EntryBody> =>
  fc.record({
    seq,
    timeMs: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), fc.constant(Number.MAX_SAFE_INTEGER)),
    ops: fc.array(opArbitrary, { maxLength: 8 }),
  });

/** Seals consecutive bodies into a chain starting after genesis; returns the records. */
function sealChain(bodies: readonly Omit<EntryBody, 'seq'>[]): Buffer[] {
  let prevHash = GENESIS_HASH;
  return bodies.map((body, i) => {
    const sealed = sealEntry({ seq: i + 1, timeMs: body.timeMs, ops: body.ops }, prevHash);
    prevHash = sealed.entry.hash;
    return sealed.record;
  });
}

/** Verifies a whole chain from genesis; returns the index of the first record that fails, or -1. */
function firstInvalid(records: readonly Buffer[]): number {
  let head: ChainHead = GENESIS_HEAD;
  for (let i = 0; i < records.length; i++) {
    try {
      head = verifyNext(head, records[i]!);
    } catch (error) {
      assert.ok(error instanceof ChainError || error instanceof EntryDecodeError, `unexpected error ${String(error)}`);
      return i;
    }
  }
  return -1;
}

function flipBit(record: Buffer, bit: number): Buffer {
  const copy = Buffer.from(record);
  copy[bit >> 3] = copy[bit >> 3]! ^ (1 << (bit & 7));
  return copy;
}

const sampleOps: Op[] = [
  { type: 'put', key: Buffer.from('config/a'), value: Buffer.from('on') },
  { type: 'put', key: Buffer.from([0x00, 0xff]), value: Buffer.alloc(0) },
  { type: 'delete', key: Buffer.from('config/b') },
  { type: 'deleteRange', start: Buffer.from('tmp/'), end: Buffer.from('tmp0') },
  { type: 'deleteRange', start: Buffer.from([0xff]), end: Buffer.alloc(0) },
];

describe('log entry encoding', () => {
  test('log entry: seal then decode round-trips any body', () => {
    assertProperty(
      fc.property(bodyArbitrary(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER })), (body) => {
        const prevHash = Buffer.alloc(HASH_BYTES, body.seq & 0xff);
        const { entry, record } = sealEntry(body, prevHash);
        const decoded = decodeEntry(record);
        assert.equal(decoded.seq, body.seq);
        assert.equal(decoded.timeMs, body.timeMs);
        assert.deepEqual(decoded.ops, body.ops);
        assert.deepEqual(decoded.prevHash, prevHash);
        assert.deepEqual(decoded.hash, entry.hash);
        assert.equal(verifySelf(record).seq, body.seq);
      }),
      { numRuns: 300 },
    );
  });

  test('log entry: encoding is canonical (re-encoding a decoded entry gives the same bytes)', () => {
    assertProperty(
      fc.property(bodyArbitrary(fc.integer({ min: 1, max: 1_000_000 })), (body) => {
        const { record } = sealEntry(body, GENESIS_HASH);
        const decoded = decodeEntry(record);
        const again = sealEntry(decoded, decoded.prevHash);
        assert.ok(again.record.equals(record));
        assert.ok(again.entry.hash.equals(decoded.hash));
      }),
      { numRuns: 300 },
    );
  });

  test('log entry: different bodies have different records and hashes', () => {
    assertProperty(
      fc.property(bodyArbitrary(fc.integer({ min: 1, max: 8 })), bodyArbitrary(fc.integer({ min: 1, max: 8 })), (a, b) => {
        const sealedA = sealEntry(a, GENESIS_HASH);
        const sealedB = sealEntry(b, GENESIS_HASH);
        const sameContent = a.seq === b.seq && a.timeMs === b.timeMs && isDeepStrictEqual(a.ops, b.ops);
        assert.equal(sealedA.record.equals(sealedB.record), sameContent);
        assert.equal(sealedA.entry.hash.equals(sealedB.entry.hash), sameContent);
      }),
      { numRuns: 200 },
    );
  });

  test('log entry: record size is the header, the ops, the author runs, the signature and two hashes', () => {
    const { record } = sealEntry({ seq: 1, timeMs: 5, ops: sampleOps }, GENESIS_HASH);
    const opBytes = sampleOps.reduce((sum, op) => sum + opEncodedBytes(op), 0);
    assert.equal(record.length, 1 + 8 + 8 + 4 + opBytes + 4 + 1 + 2 * HASH_BYTES);
    const authors = [{ author: 'deploy-bot', opCount: 2 }, { author: '', opCount: 1 }, { author: 'CN=ops é', opCount: 2 }];
    const signed = sealEntry({ seq: 1, timeMs: 5, ops: sampleOps, authors }, GENESIS_HASH, () => Buffer.alloc(SIGNATURE_BYTES, 3));
    const authorBytes = authors.reduce((sum, run) => sum + 5 + Buffer.byteLength(run.author), 0);
    assert.equal(signed.record.length, 1 + 8 + 8 + 4 + opBytes + 4 + authorBytes + 1 + SIGNATURE_BYTES + 2 * HASH_BYTES);
  });

  test('log entry: authors and the signature round-trip; the signature is outside the hash', () => {
    const authors = [{ author: 'deploy-bot', opCount: 2 }, { author: '', opCount: 1 }, { author: 'CN=ops é', opCount: 2 }];
    const signature = Buffer.alloc(SIGNATURE_BYTES, 3);
    const { entry, record } = sealEntry({ seq: 1, timeMs: 5, ops: sampleOps, authors }, GENESIS_HASH, () => signature);
    const decoded = verifyNext(GENESIS_HEAD, record);
    assert.deepEqual(decoded.authors, authors);
    assert.deepEqual(decoded.signature, signature);
    assert.deepEqual(opAuthors(decoded), ['deploy-bot', 'deploy-bot', undefined, 'CN=ops é', 'CN=ops é']);
    assert.deepEqual(authorRuns(opAuthors(decoded)), authors);
    // Same content, no signature or another one: the same hash, and the chain still verifies.
    const unsigned = sealEntry({ seq: 1, timeMs: 5, ops: sampleOps, authors }, GENESIS_HASH);
    assert.ok(unsigned.entry.hash.equals(entry.hash));
    const resigned = resignRecord(record, Buffer.alloc(SIGNATURE_BYTES, 4));
    assert.ok(verifyNext(GENESIS_HEAD, resigned).hash.equals(entry.hash));
    assert.deepEqual(verifyNext(GENESIS_HEAD, resignRecord(record, undefined)).signature, undefined);
    assert.ok(resignRecord(unsigned.record, signature).equals(record));
    // Runs must cover the ops exactly.
    assert.throws(() => sealEntry({ seq: 1, timeMs: 5, ops: sampleOps, authors: [{ author: 'a', opCount: 4 }] }, GENESIS_HASH), RangeError);
  });

  test('log entry: a format 1 record (written before authors and signatures) still decodes and verifies', () => {
    // Format 1: the format 2 body without its author runs, then the two hashes (no signature length).
    const current = sealEntry({ seq: 1, timeMs: 7, ops: sampleOps }, GENESIS_HASH).record;
    const body = Buffer.from(current.subarray(0, current.length - 2 * HASH_BYTES - 1 - 4));
    body[0] = 1;
    const hash = createHash('sha256').update(GENESIS_HASH).update(body).digest();
    const legacy = Buffer.concat([body, GENESIS_HASH, hash]);
    const entry = verifyNext(GENESIS_HEAD, legacy);
    assert.deepEqual(entry.ops, sampleOps);
    assert.equal(entry.authors, undefined);
    assert.equal(entry.signature, undefined);
    assert.ok(entry.hash.equals(hash));
  });

  test('log entry: empty values and empty range ends survive the round trip', () => {
    const { record } = sealEntry({ seq: 1, timeMs: 0, ops: sampleOps }, GENESIS_HASH);
    const decoded = decodeEntry(record);
    assert.deepEqual(decoded.ops, sampleOps);
    const put = decoded.ops[1];
    assert.ok(put?.type === 'put' && put.value.length === 0);
    const range = decoded.ops[4];
    assert.ok(range?.type === 'deleteRange' && range.end.length === 0);
  });

  test('log entry: sealing refuses a prevHash that is not 32 bytes and fields beyond their length prefix', () => {
    assert.throws(() => sealEntry({ seq: 1, timeMs: 0, ops: [] }, Buffer.alloc(31)), RangeError);
    const longKey = Buffer.alloc(0x10000);
    assert.throws(() => sealEntry({ seq: 1, timeMs: 0, ops: [{ type: 'delete', key: longKey }] }, GENESIS_HASH), RangeError);
    // The largest key decodes; a longer one encodes (u16 length) but the decoder refuses it, as the root would.
    const maxKey = Buffer.alloc(KEY_BYTES_MAX, 7);
    const { record } = sealEntry({ seq: 1, timeMs: 0, ops: [{ type: 'delete', key: maxKey }] }, GENESIS_HASH);
    assert.deepEqual(decodeEntry(record).ops, [{ type: 'delete', key: maxKey }]);
    for (const key of [Buffer.alloc(KEY_BYTES_MAX + 1, 7), Buffer.alloc(0)]) {
      const tooLong = sealEntry({ seq: 1, timeMs: 0, ops: [{ type: 'delete', key }] }, GENESIS_HASH).record;
      assert.throws(() => decodeEntry(tooLong), { name: 'EntryDecodeError', message: /outside 1\.\.1024|op count/ });
    }
  });

  test('log entry: decoding rejects an unknown format, an unknown op type and trailing bytes', () => {
    const { record } = sealEntry({ seq: 1, timeMs: 0, ops: [{ type: 'delete', key: Buffer.from('k') }] }, GENESIS_HASH);
    const badFormat = Buffer.from(record);
    badFormat[0] = 3;
    assert.throws(() => decodeEntry(badFormat), { name: 'EntryDecodeError', message: /format/ });
    const badOp = Buffer.from(record);
    badOp[21] = 9;
    assert.throws(() => decodeEntry(badOp), { name: 'EntryDecodeError', message: /op type 9/ });
    const body = record.subarray(0, record.length - 2 * HASH_BYTES - 1);
    const trailing = Buffer.concat([body, Buffer.from([0]), record.subarray(body.length)]);
    assert.throws(() => decodeEntry(trailing), { name: 'EntryDecodeError', message: /trailing/ });
  });

  test('log entry: decoding rejects seq and time beyond 2^53', () => {
    const { record } = sealEntry({ seq: 1, timeMs: 0, ops: [] }, GENESIS_HASH);
    const bigSeq = Buffer.from(record);
    bigSeq.writeBigUInt64BE(2n ** 53n, 1);
    assert.throws(() => decodeEntry(bigSeq), { name: 'EntryDecodeError', message: /seq/ });
    const bigTime = Buffer.from(record);
    bigTime.writeBigUInt64BE(2n ** 64n - 1n, 9);
    assert.throws(() => decodeEntry(bigTime), { name: 'EntryDecodeError', message: /timeMs/ });
  });
});

describe('log chain verification', () => {
  test('log chain: a valid chain verifies from genesis, entry by entry', () => {
    const records = sealChain([
      { timeMs: 1, ops: sampleOps.slice(0, 2) },
      { timeMs: 2, ops: [] },
      { timeMs: 3, ops: sampleOps.slice(2) },
    ]);
    assert.equal(firstInvalid(records), -1);
    const first = verifyNext(GENESIS_HEAD, records[0]!);
    assert.ok(first.prevHash.equals(GENESIS_HASH));
    assert.equal(verifyNext(first, records[1]!).seq, 2);
  });

  test('log chain: flipping any single bit of any record in a small chain is caught at that record', () => {
    const records = sealChain([
      { timeMs: 1_700_000_000_000, ops: sampleOps.slice(0, 2) },
      { timeMs: 1_700_000_000_001, ops: [{ type: 'delete', key: Buffer.from('x') }] },
      { timeMs: 1_700_000_000_002, ops: [] },
      { timeMs: 1_700_000_000_003, ops: sampleOps.slice(2) },
    ]);
    let flips = 0;
    for (let index = 0; index < records.length; index++) {
      const record = records[index]!;
      for (let bit = 0; bit < record.length * 8; bit++) {
        const corrupted = records.slice();
        corrupted[index] = flipBit(record, bit);
        assert.equal(firstInvalid(corrupted), index, `flip of bit ${bit} in record ${index} was not caught there`);
        flips++;
      }
    }
    assert.equal(flips, records.reduce((sum, record) => sum + record.length * 8, 0));
  });

  test('log chain: flipping any single bit of a record is caught by verifySelf too', () => {
    const { record } = sealEntry({ seq: 7, timeMs: 99, ops: sampleOps }, Buffer.alloc(HASH_BYTES, 0xab));
    for (let bit = 0; bit < record.length * 8; bit++) {
      assert.throws(
        () => verifySelf(flipBit(record, bit)),
        (error: unknown) => error instanceof ChainError || error instanceof EntryDecodeError,
        `flip of bit ${bit} was not caught`,
      );
    }
  });

  test('log chain: a random bit flip anywhere in a larger random chain is caught at its record', () => {
    const chainArbitrary = fc.array(fc.record({ timeMs: fc.nat(), ops: fc.array(opArbitrary, { maxLength: 6 }) }), {
      minLength: 2,
      maxLength: 16,
    });
    assertProperty(
      fc.property(chainArbitrary, fc.nat(), fc.nat(), (bodies, indexSeed, bitSeed) => {
        const records = sealChain(bodies);
        assert.equal(firstInvalid(records), -1);
        const index = indexSeed % records.length;
        const bit = bitSeed % (records[index]!.length * 8);
        records[index] = flipBit(records[index]!, bit);
        assert.equal(firstInvalid(records), index);
      }),
      { numRuns: 500 },
    );
  });

  test('log chain: a wrong seq is rejected', () => {
    const [first, second] = sealChain([{ timeMs: 1, ops: [] }, { timeMs: 2, ops: [] }]);
    // Skipping, repeating or starting past genesis.
    assert.throws(() => verifyNext(GENESIS_HEAD, second!), { name: 'ChainError', message: /expected seq 1, got 2/ });
    const entry1 = verifyNext(GENESIS_HEAD, first!);
    assert.throws(() => verifyNext(entry1, first!), ChainError);
    assert.throws(() => verifyNext({ seq: 5, hash: entry1.hash }, second!), ChainError);
    // The right seq but sealed with a hash chain that is otherwise correct: seq is part of the hashed body, so a
    // record relabelled to another seq fails its hash even against a head that matches the new seq.
    const relabelled = Buffer.from(second!);
    relabelled.writeBigUInt64BE(3n, 1);
    assert.throws(() => verifyNext({ seq: 2, hash: entry1.hash }, relabelled), { name: 'ChainError', message: /hash does not match/ });
  });

  test('log chain: a wrong prevHash is rejected', () => {
    const [first] = sealChain([{ timeMs: 1, ops: [] }]);
    const entry1 = verifyNext(GENESIS_HEAD, first!);
    const forked = sealEntry({ seq: 2, timeMs: 2, ops: [] }, Buffer.alloc(HASH_BYTES, 1));
    assert.throws(() => verifyNext(entry1, forked.record), { name: 'ChainError', message: /does not link/ });
    // The same record verifies on its own: it is internally consistent, only the link is wrong.
    assert.equal(verifySelf(forked.record).seq, 2);
    const notFromGenesis = sealEntry({ seq: 1, timeMs: 1, ops: [] }, Buffer.alloc(HASH_BYTES, 1));
    assert.throws(() => verifyNext(GENESIS_HEAD, notFromGenesis.record), ChainError);
  });

  test('log chain: a hash that does not match the content is rejected', () => {
    const { record } = sealEntry({ seq: 1, timeMs: 1, ops: sampleOps }, GENESIS_HASH);
    const wrongHash = Buffer.from(record);
    wrongHash.fill(0, record.length - HASH_BYTES);
    assert.throws(() => verifyNext(GENESIS_HEAD, wrongHash), { name: 'ChainError', message: /hash does not match/ });
    assert.throws(() => verifySelf(wrongHash), ChainError);
  });
});

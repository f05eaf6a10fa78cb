/**
 * Snapshot file format (src/snapshot/format.ts) and the CLI's human units (src/cli/output.ts): a file decodes to what
 * was encoded whatever the chunking; every truncation and every flipped byte is refused with SNAPSHOT_INVALID.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { formatBytes, formatDuration, renderProgress } from '../src/cli/output.js';
import { MercuryError } from '../src/errors/index.js';
import { SNAPSHOT_FORMAT_VERSION, SNAPSHOT_SEQ_MAX, SnapshotDecoder, SnapshotEncoder, snapshotFileBytes, type SnapshotHeader } from '../src/snapshot/index.js';
import type { SnapshotRecord } from '../src/store/index.js';
import { assertProperty } from './support/seed.js';

function recordsArbitrary(): fc.Arbitrary<SnapshotRecord[]> {
  return fc
    .uniqueArray(fc.uint8Array({ minLength: 1, maxLength: 40 }), { maxLength: 30, selector: (key) => Buffer.from(key).toString('hex') })
    .chain((keys) =>
      fc.tuple(...keys.map((key) => fc.tuple(fc.constant(Buffer.from(key)), fc.uint8Array({ maxLength: 300 }), fc.integer({ min: 1, max: 50 }), fc.integer({ min: 0, max: 50 }), fc.integer({ min: 1, max: 9 })))),
    )
    .map((rows) =>
      rows
        .map(([key, value, createSeq, extra, version]) => ({ key, value: Buffer.from(value), createSeq, modSeq: createSeq + extra, version }))
        .sort((a, b) => Buffer.compare(a.key, b.key)),
    );
}

function encode(records: readonly SnapshotRecord[], seq = 100, savedAtMs = 1_700_000_000_000, datasetId = 'a1b2c3d4-dataset'): { file: Buffer; header: SnapshotHeader } {
  const header: SnapshotHeader = {
    version: SNAPSHOT_FORMAT_VERSION,
    datasetId,
    seq,
    headHash: Buffer.alloc(32, seq === 0 ? 0 : 7),
    keyCount: records.length,
    dataBytes: records.reduce((sum, record) => sum + record.key.length + record.value.length, 0),
    savedAtMs,
  };
  const encoder = new SnapshotEncoder();
  const file = Buffer.concat([encoder.header(header), ...records.map((record) => encoder.record(record)), encoder.trailer()]);
  assert.equal(file.length, snapshotFileBytes(header));
  return { file, header };
}

function decode(file: Buffer, cuts: readonly number[]): { header: SnapshotHeader; records: SnapshotRecord[] } {
  const decoder = new SnapshotDecoder();
  const records: SnapshotRecord[] = [];
  let at = 0;
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    records.push(...decoder.push(file.subarray(at, Math.max(at, cut))));
    at = Math.max(at, cut);
  }
  records.push(...decoder.push(file.subarray(at)));
  return { header: decoder.end(), records };
}

function isInvalid(error: unknown): boolean {
  return error instanceof MercuryError && error.code === 'SNAPSHOT_INVALID';
}

describe('snapshot format', () => {
  test('snapshot format: decodes what was encoded, however the bytes are split', () => {
    assertProperty(
      fc.property(recordsArbitrary(), fc.array(fc.nat()), (records, cuts) => {
        const { file, header } = encode(records);
        const decoded = decode(file, cuts.map((cut) => cut % (file.length + 1)));
        assert.deepEqual(decoded.header, header);
        assert.deepEqual(decoded.records, records);
      }),
    );
  });

  test('snapshot format: every truncation is refused as truncated', () => {
    const { file } = encode([
      { key: Buffer.from('a'), value: Buffer.from('one'), createSeq: 1, modSeq: 1, version: 1 },
      { key: Buffer.from('b'), value: Buffer.alloc(100, 2), createSeq: 2, modSeq: 5, version: 3 },
    ]);
    for (let length = 0; length < file.length; length++) {
      const decoder = new SnapshotDecoder();
      assert.throws(
        () => {
          decoder.push(file.subarray(0, length));
          decoder.end();
        },
        (error: unknown) => isInvalid(error) && (length < 8 || /truncated/.test((error as Error).message)),
        `truncated to ${length} bytes`,
      );
    }
  });

  test('snapshot format: a flipped bit anywhere is refused', () => {
    const { file } = encode([
      { key: Buffer.from('config/a'), value: Buffer.from('{"x":1}'), createSeq: 3, modSeq: 9, version: 2 },
      { key: Buffer.from('config/b'), value: Buffer.from('hello'), createSeq: 4, modSeq: 4, version: 1 },
    ]);
    for (let at = 0; at < file.length; at++) {
      for (const bit of [0x01, 0x80]) {
        const damaged = Buffer.from(file);
        damaged[at]! ^= bit;
        assert.throws(() => decode(damaged, [at]), isInvalid, `byte ${at} bit ${bit}`);
      }
    }
  });

  test('snapshot format: bytes after the trailer, another magic, another version are refused with a clear message', () => {
    const { file } = encode([]);
    assert.throws(() => decode(Buffer.concat([file, Buffer.from([0])]), []), /1 bytes follow the trailer/);
    assert.throws(() => decode(Buffer.from('PK\u0003\u0004 a zip file, not a snapshot'), []), /does not start with "MRCYSNAP"/);
    const future = Buffer.from(file);
    future.writeUInt16BE(9, 8);
    assert.throws(() => decode(future, []), /format version 9; this Mercury reads version 1/);
  });

  // Found by an audit (2026-12-06): a file saved with a time no Date holds was put in place, then printing its time
  // threw, so `snapshot save` replaced FILE and reported failure.
  test('snapshot format: a save time past the last a date can hold is refused with the header, before any record', () => {
    assert.equal(decode(encode([], 100, 8.64e15).file, []).header.savedAtMs, 8.64e15);
    const { file } = encode([], 100, Number.MAX_SAFE_INTEGER);
    assert.throws(
      () => decode(file, []),
      (error: unknown) => isInvalid(error) && /savedAtMs 9007199254740991 is past the last time a date can hold/.test((error as Error).message),
    );
  });

  // Found by an audit (stop 37): each was restored without a word, and the node refused its data directory later.
  test('snapshot format: a dataset id that is not UTF-8 or holds a control character, a seq with no room, a seq 0 with a hash: refused', () => {
    const refused = (file: Buffer, message: RegExp): void => {
      assert.throws(() => decode(file, []), (error: unknown) => isInvalid(error) && message.test((error as Error).message));
    };
    const notUtf8 = Buffer.from(encode([]).file);
    notUtf8.fill(0xff, 11, 11 + 'a1b2c3d4-dataset'.length);
    refused(notUtf8, /the dataset id is not UTF-8 text \(at byte 11\)/);
    refused(encode([], 100, 1, 'FAKE\nseq 999').file, /the dataset id "FAKE\\nseq 999" holds a control character/);
    refused(encode([], Number.MAX_SAFE_INTEGER).file, /seq 9007199254740991 leaves no room to write/);
    assert.equal(decode(encode([], SNAPSHOT_SEQ_MAX).file, []).header.seq, SNAPSHOT_SEQ_MAX);
    assert.equal(decode(encode([], 0).file, []).header.seq, 0);
    const hashAtZero = Buffer.from(encode([], 0).file);
    hashAtZero.fill(0xcd, 11 + 'a1b2c3d4-dataset'.length + 8, 11 + 'a1b2c3d4-dataset'.length + 8 + 32);
    refused(hashAtZero, /a head hash at seq 0 that is not 32 zero bytes/);
  });
});

describe('cli output', () => {
  test('cli output: bytes and durations in human units', () => {
    assert.equal(formatBytes(0), '0 B');
    assert.equal(formatBytes(1023), '1023 B');
    assert.equal(formatBytes(1536), '1.50 KiB');
    assert.equal(formatBytes(25 * 1024 * 1024), '25.0 MiB');
    assert.equal(formatBytes(300 * 1024 ** 3), '300 GiB');
    assert.equal(formatDuration(850), '850 ms');
    assert.equal(formatDuration(12_340), '12.3 s');
    assert.equal(formatDuration(245_000), '4m05s');
    assert.equal(formatDuration(2 * 3_600_000 + 3 * 60_000), '2h03m');
  });

  test('cli output: a progress line has the fraction, the rate and an ETA from the rate', () => {
    const line = renderProgress({ label: 'save', done: 50 * 1024 * 1024, total: 200 * 1024 * 1024, unit: 'bytes', elapsedMs: 5_000 });
    assert.match(line, /^save \[#{8}\.{22}\] {2}25% 50\.0 MiB\/200 MiB 10\.0 MiB\/s ETA 15\.0 s$/);
    assert.match(renderProgress({ label: 'replay', done: 10, total: 10, unit: 'items', elapsedMs: 1 }), /100% 10\/10 .* done$/);
    assert.equal(renderProgress({ label: 'sync', done: 0, total: undefined, unit: 'items', elapsedMs: 0 }), 'sync 0');
  });
});

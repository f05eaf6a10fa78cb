/**
 * The replication wire protocol: every message round-trips through a frame; the frame decoder accepts any split of
 * the stream (one byte at a time, random splits); it refuses oversized, empty, corrupted and malformed frames with a
 * stable code; and whatever bytes it is fed, the only error that escapes is ProtocolError.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { assertProperty } from './support/seed.js';
import { GENESIS_HASH, GENESIS_HEAD, sealEntry, verifyNext, type ChainHead } from '../src/log/index.js';
import {
  FRAME_HEADER_BYTES,
  FrameDecoder,
  MessageType,
  PATH_NODES_MAX,
  PROTOCOL_VERSION,
  ProtocolError,
  REPLICATION_LIMITS,
  REPLICATION_LIMITS_TEST,
  RefuseReason,
  SnapshotDigest,
  announcedHttpUrl,
  decodeMessage,
  encodeMessage,
  encodeSnapshotRecord,
  validateReplicationLimits,
  type Message,
  type ProtocolErrorCode,
} from '../src/replication/index.js';
import { ENTRY_BYTES_MAX, ENTRY_OPS_MAX } from '../src/limits.js';
import type { SnapshotRecord } from '../src/store/index.js';

const FRAME_MAX = REPLICATION_LIMITS_TEST.frameBytesMax;

const hash = (label: string): Buffer => createHash('sha256').update(label).digest();

function sealedRecords(count: number): Buffer[] {
  let head: ChainHead = GENESIS_HEAD;
  const records: Buffer[] = [];
  for (let seq = 1; seq <= count; seq++) {
    const sealed = sealEntry({ seq, timeMs: 1_700_000_000_000 + seq, ops: [{ type: 'put', key: Buffer.from(`k${seq}`), value: Buffer.from(`v${seq}`) }] }, head.hash);
    records.push(sealed.record);
    head = sealed.entry;
  }
  return records;
}

/** One example of every message, with edge values. */
const EXAMPLES: readonly Message[] = [
  { type: 'hello', protocolVersion: PROTOCOL_VERSION, resync: false, datasetId: '', nodeId: 'replica-1', path: [], head: { seq: 0, hash: GENESIS_HASH }, httpUrl: '' },
  {
    type: 'hello',
    protocolVersion: PROTOCOL_VERSION,
    resync: true,
    datasetId: 'd5b6c2e0-3f4a-4c8e-9a1b-2c3d4e5f6a7b',
    nodeId: 'nœud-ü',
    path: ['root', 'mid'],
    head: { seq: Number.MAX_SAFE_INTEGER, hash: hash('h') },
    httpUrl: 'http://[::1]:7072',
  },
  {
    type: 'hello',
    protocolVersion: PROTOCOL_VERSION,
    resync: false,
    datasetId: 'ds',
    nodeId: 'edge',
    path: [],
    head: { seq: 3, hash: hash('3') },
    httpUrl: 'https://10.0.0.7:7070',
    credential: `mcy_0123456789abcdef_${'A'.repeat(43)}`,
  },
  { type: 'welcome', datasetId: 'ds', nodeId: 'root', httpUrl: 'http://127.0.0.1:7070', path: ['root'], head: { seq: 42, hash: hash('42') }, mode: 'stream', fromSeq: 40 },
  { type: 'welcome', datasetId: 'ds', nodeId: 'mid', httpUrl: 'http://127.0.0.1:7070', path: ['root', 'mid'], head: { seq: 0, hash: GENESIS_HASH }, mode: 'snapshot', fromSeq: 0 },
  { type: 'snapshotBegin', seq: 7, hash: hash('7'), keyCount: 3, signed: false },
  { type: 'snapshotBegin', seq: 8, hash: hash('8'), keyCount: 0, signed: true },
  {
    type: 'snapshotChunk',
    records: [
      { key: Buffer.from('a'), value: Buffer.alloc(0), createSeq: 1, modSeq: 1, version: 1 },
      { key: Buffer.from([0, 255]), value: Buffer.from('value'), createSeq: 2, modSeq: 2 + 50_000, version: 0xffffffff },
    ],
  },
  { type: 'snapshotEnd', digest: hash('digest'), signature: undefined },
  { type: 'snapshotEnd', digest: hash('digest'), signature: Buffer.alloc(64, 9) },
  { type: 'snapshotProof', keys: 4096, digest: hash('so far'), signature: Buffer.alloc(64, 7) },
  { type: 'entries', records: sealedRecords(3) },
  { type: 'heartbeat', rootSeq: 99, rootTimeMs: 1_700_000_000_123, path: ['root', 'a', 'b'] },
  { type: 'heartbeat', rootSeq: 99, rootTimeMs: 1_700_000_000_123, path: ['root'], proof: { epoch: Buffer.alloc(8, 3), beat: 12, signature: Buffer.alloc(64, 5) } },
  { type: 'refuse', reason: 'CHAIN_DIVERGED', message: 'the child diverged at 12; resync it' },
  { type: 'refuse', reason: 'LOOP', message: '' },
  { type: 'ack', appliedSeq: 12, receivedBytes: 123_456 },
];

function roundTrip(message: Message): Message {
  const frames = new FrameDecoder(FRAME_MAX).push(encodeMessage(message));
  assert.equal(frames.length, 1);
  return decoded(decodeMessage(frames[0]!));
}

/**
 * A decoded message as it was encoded: a SNAPSHOT_CHUNK's `encodedRecords` (which the receiver hashes for the digest)
 * must be exactly its records' canonical encodings, one after another, and is then set aside for the comparison.
 */
function decoded(message: Message): Message {
  if (message.type !== 'snapshotChunk') return message;
  const { encodedRecords, ...rest } = message;
  assert.deepStrictEqual(encodedRecords, Buffer.concat(message.records.map(encodeSnapshotRecord)));
  return rest;
}

/** Frames `payload` with a valid CRC, whatever it contains. */
function rawFrame(type: number, payload: Buffer): Buffer {
  const frame = Buffer.alloc(FRAME_HEADER_BYTES + payload.length);
  frame.writeUInt32BE(1 + payload.length, 0);
  frame.writeUInt8(type, 8);
  payload.copy(frame, 9);
  frame.writeUInt32BE(crc32(frame.subarray(8)), 4);
  return frame;
}

function expectCode(fn: () => unknown, code: ProtocolErrorCode): void {
  assert.throws(fn, (error: unknown) => error instanceof ProtocolError && error.code === code);
}

/** Feeds `bytes` split at `cuts`; returns the decoded messages. */
function decodeSplit(bytes: Buffer, cuts: readonly number[]): Message[] {
  const decoder = new FrameDecoder(FRAME_MAX);
  const messages: Message[] = [];
  let start = 0;
  for (const cut of [...cuts, bytes.length]) {
    for (const frame of decoder.push(bytes.subarray(start, cut))) messages.push(decoded(decodeMessage(frame)));
    start = cut;
  }
  assert.equal(decoder.bufferedBytes, 0);
  return messages;
}

// Arbitraries ----------------------------------------------------------------------------------------------------

const bytes = (maxLength: number): fc.Arbitrary<Buffer> => fc.uint8Array({ maxLength }).map((array) => Buffer.from(array));
const hashArbitrary = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((array) => Buffer.from(array));
const seqArbitrary = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const idArbitrary = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }).filter((id) => Buffer.byteLength(id) <= 255);
const pathArbitrary = fc.array(idArbitrary, { maxLength: 5 });
const headArbitrary = fc.record({ seq: seqArbitrary, hash: hashArbitrary }).map((head) => ({ ...head }));

const messageArbitrary: fc.Arbitrary<Message> = fc.oneof(
  fc
    .record(
      {
        resync: fc.boolean(),
        datasetId: fc.oneof(fc.constant(''), idArbitrary),
        nodeId: idArbitrary,
        path: pathArbitrary,
        head: headArbitrary,
        httpUrl: fc.oneof(fc.constant(''), idArbitrary),
        credential: idArbitrary,
      },
      { requiredKeys: ['resync', 'datasetId', 'nodeId', 'path', 'head', 'httpUrl'] },
    )
    .map((m): Message => ({ type: 'hello', protocolVersion: PROTOCOL_VERSION, ...m })),
  fc
    .record({ datasetId: idArbitrary, nodeId: idArbitrary, httpUrl: fc.oneof(fc.constant(''), idArbitrary), path: pathArbitrary, head: headArbitrary, mode: fc.constantFrom('stream' as const, 'snapshot' as const), fromSeq: seqArbitrary })
    .map((m): Message => ({ type: 'welcome', ...m, path: [...m.path, m.nodeId] })),
  fc
    .record({ seq: seqArbitrary, hash: hashArbitrary, keyCount: seqArbitrary, signed: fc.boolean() })
    .map((m): Message => ({ type: 'snapshotBegin', ...m })),
  fc
    .array(
      fc.record({
        key: bytes(40).filter((key) => key.length > 0),
        value: bytes(100),
        createSeq: fc.integer({ min: 1, max: 1000 }),
        modSeqDelta: fc.integer({ min: 0, max: 1000 }),
        version: fc.integer({ min: 1, max: 0xffffffff }),
      }),
      { minLength: 1, maxLength: 8 },
    )
    .map((records): Message => ({
      type: 'snapshotChunk',
      records: records.map(({ key, value, createSeq, modSeqDelta, version }) => ({
        key,
        value,
        createSeq,
        modSeq: createSeq + modSeqDelta,
        // No more puts than the entries from createSeq to modSeq can hold.
        version: Math.min(version, (modSeqDelta + 1) * ENTRY_OPS_MAX),
      })),
    })),
  fc
    .record({ digest: hashArbitrary, signature: fc.option(fc.uint8Array({ minLength: 64, maxLength: 64 }).map((b) => Buffer.from(b)), { nil: undefined }) })
    .map((m): Message => ({ type: 'snapshotEnd', ...m })),
  fc
    .record({ keys: seqArbitrary, digest: hashArbitrary, signature: fc.uint8Array({ minLength: 64, maxLength: 64 }).map((b) => Buffer.from(b)) })
    .map((m): Message => ({ type: 'snapshotProof', ...m })),
  fc.array(bytes(200), { minLength: 1, maxLength: 6 }).map((records): Message => ({ type: 'entries', records })),
  fc
    .record({ rootSeq: seqArbitrary, rootTimeMs: seqArbitrary, path: fc.array(idArbitrary, { minLength: 1, maxLength: 5 }) })
    .map((m): Message => ({ type: 'heartbeat', ...m })),
  fc
    .record({
      rootSeq: seqArbitrary,
      rootTimeMs: seqArbitrary,
      path: fc.array(idArbitrary, { minLength: 1, maxLength: 5 }),
      proof: fc.record({
        epoch: fc.uint8Array({ minLength: 8, maxLength: 8 }).map((b) => Buffer.from(b)),
        beat: seqArbitrary,
        signature: fc.uint8Array({ minLength: 64, maxLength: 64 }).map((b) => Buffer.from(b)),
      }),
    })
    // fc.record makes objects without a prototype; decoded messages have Object's.
    .map((m): Message => ({ type: 'heartbeat', ...m, proof: { ...m.proof } })),
  fc
    .record({ reason: fc.constantFrom(...(Object.keys(RefuseReason) as RefuseReason[])), message: fc.string({ unit: 'grapheme', maxLength: 60 }) })
    .map((m): Message => ({ type: 'refuse', ...m })),
  fc.record({ appliedSeq: seqArbitrary, receivedBytes: seqArbitrary }).map((m): Message => ({ type: 'ack', ...m })),
);

// Tests ----------------------------------------------------------------------------------------------------------

/** A snapshot chunk's records: one, under the one-byte key `seed`, of `bytes` bytes of `seed`. */
function oneRecord(seed: number, bytes: number): SnapshotRecord[] {
  return [{ key: Buffer.from([seed]), value: Buffer.alloc(bytes, seed), createSeq: 1, modSeq: 1, version: 1 }];
}

describe('replication protocol', () => {
  test('limits: the frame limit carries the largest entry and both presets hold their relations', () => {
    assert.ok(REPLICATION_LIMITS.frameBytesMax >= ENTRY_BYTES_MAX + FRAME_HEADER_BYTES);
    validateReplicationLimits(REPLICATION_LIMITS);
    validateReplicationLimits(REPLICATION_LIMITS_TEST);
    assert.throws(() => validateReplicationLimits({ ...REPLICATION_LIMITS_TEST, ackEveryBytes: REPLICATION_LIMITS_TEST.childWindowBytesMax }));
    assert.throws(() => validateReplicationLimits({ ...REPLICATION_LIMITS_TEST, frameBytesMax: REPLICATION_LIMITS_TEST.entryRecordBytesMax }));
  });

  test('protocol: every message type round-trips through a frame', () => {
    const types = new Set<string>();
    for (const message of EXAMPLES) {
      assert.deepStrictEqual(roundTrip(message), message);
      types.add(message.type);
    }
    assert.deepStrictEqual([...types].sort(), Object.keys(MessageType).sort());
  });

  test('protocol: random messages round-trip', () => {
    assertProperty(fc.property(messageArbitrary, (message) => assert.deepStrictEqual(roundTrip(message), message)));
  });

  test('protocol: ENTRIES carries records that verify as a chain on the other side', () => {
    const records = sealedRecords(5);
    const decoded = roundTrip({ type: 'entries', records });
    assert.equal(decoded.type, 'entries');
    let head: ChainHead = GENESIS_HEAD;
    for (const record of decoded.records) head = verifyNext(head, record);
    assert.equal(head.seq, 5);
  });

  test('protocol: the decoder accepts a stream fed one byte at a time', () => {
    const stream = Buffer.concat(EXAMPLES.map(encodeMessage));
    const cuts = Array.from({ length: stream.length - 1 }, (_, i) => i + 1);
    assert.deepStrictEqual(decodeSplit(stream, cuts), EXAMPLES);
  });

  test('protocol: the decoder accepts any split of a stream of frames', () => {
    assertProperty(
      fc.property(fc.array(messageArbitrary, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 20 }), (messages, rawCuts) => {
        const stream = Buffer.concat(messages.map(encodeMessage));
        const cuts = [...new Set(rawCuts.map((cut) => cut % (stream.length + 1)))].sort((a, b) => a - b);
        assert.deepStrictEqual(decodeSplit(stream, cuts), messages);
      }),
    );
  });

  test('protocol: a large frame joined from chunks is joined into memory given back, never into memory still held', () => {
    const decoder = new FrameDecoder(REPLICATION_LIMITS.frameBytesMax);
    const chunkOf = (seed: number, bytes: number): Buffer => encodeMessage({ type: 'snapshotChunk', records: oneRecord(seed, bytes) });
    // In 64 KiB socket reads, as a replica receives a 1 MiB snapshot chunk.
    const receive = (frame: Buffer): Buffer => {
      const frames = [];
      for (let at = 0; at < frame.length; at += 65_536) frames.push(...decoder.push(frame.subarray(at, at + 65_536)));
      assert.equal(frames.length, 1);
      return frames[0]!.payload;
    };
    const first = receive(chunkOf(1, 300_000));
    const kept = receive(chunkOf(2, 300_000));
    assert.notEqual(kept.buffer, first.buffer, 'not given back: new memory');
    assert.equal(first[20], 1, 'the first frame is intact');
    decoder.release(first); // no longer the last one lent: ignored
    decoder.release(kept);
    const third = receive(chunkOf(3, 299_000));
    assert.equal(third.buffer, kept.buffer, 'given back: the next large frame is joined into it');
    assert.deepStrictEqual(decodeMessage({ type: MessageType.snapshotChunk, payload: third, bytes: 0 }), {
      type: 'snapshotChunk',
      records: oneRecord(3, 299_000),
      encodedRecords: third.subarray(4),
    });
    decoder.release(third);
    const larger = receive(chunkOf(4, 500_000));
    assert.notEqual(larger.buffer, kept.buffer, 'too small for the next frame: new memory');
    assert.equal(larger[20], 4);
    // A frame that arrived whole views the socket's chunk, which other frames may share: never reused.
    const whole = chunkOf(5, 100_000);
    const [alone] = decoder.push(whole);
    decoder.release(alone!.payload);
    const after = receive(chunkOf(6, 100_000));
    assert.notEqual(after.buffer, whole.buffer);
    assert.equal(alone!.payload[20], 5, 'the whole frame is intact');
  });

  test('protocol: large frames split anywhere decode whole, with memory given back or not', () => {
    const messages: Message[] = [
      { type: 'snapshotChunk', records: oneRecord(1, 70_000) },
      { type: 'ack', appliedSeq: 3, receivedBytes: 9 },
      { type: 'snapshotChunk', records: oneRecord(2, 200_000) },
      { type: 'snapshotChunk', records: oneRecord(3, 65_000) },
    ];
    const stream = Buffer.concat(messages.map(encodeMessage));
    assertProperty(
      fc.property(fc.array(fc.nat(stream.length), { maxLength: 12 }), fc.boolean(), (rawCuts, giveBack) => {
        const cuts = [...new Set([...rawCuts, 5, 70_050, 70_051])].filter((cut) => cut > 0 && cut < stream.length).sort((a, b) => a - b);
        const decoder = new FrameDecoder(REPLICATION_LIMITS.frameBytesMax);
        const decoded: Message[] = [];
        let at = 0;
        for (const cut of [...cuts, stream.length]) {
          for (const frame of decoder.push(Buffer.from(stream.subarray(at, cut)))) {
            const message = decodeMessage(frame);
            // Copied out before the memory goes back, as a replica's store copies staged records.
            decoded.push(message.type === 'snapshotChunk' ? { type: message.type, records: message.records.map((record) => ({ ...record, key: Buffer.from(record.key), value: Buffer.from(record.value) })) } : message);
            if (giveBack) decoder.release(frame.payload);
          }
          at = cut;
        }
        assert.deepStrictEqual(
          decoded.map((message) => (message.type === 'snapshotChunk' ? message.records.map((record) => [record.key[0], record.value.length, record.value.every((byte) => byte === record.key[0])]) : message)),
          messages.map((message) => (message.type === 'snapshotChunk' ? message.records.map((record) => [record.key[0], record.value.length, true]) : message)),
        );
      }),
    );
  });

  test('protocol: a frame above the maximum is refused from its length alone', () => {
    const header = Buffer.alloc(8);
    header.writeUInt32BE(FRAME_MAX, 0); // 8 + FRAME_MAX > FRAME_MAX
    const decoder = new FrameDecoder(FRAME_MAX);
    expectCode(() => decoder.push(header), 'FRAME_TOO_LARGE');
    // A frame of exactly the maximum is fine.
    const exact = rawFrame(MessageType.entries, Buffer.alloc(FRAME_MAX - FRAME_HEADER_BYTES));
    assert.equal(new FrameDecoder(FRAME_MAX).push(exact).length, 1);
    expectCode(() => new FrameDecoder(FRAME_MAX - 1).push(exact), 'FRAME_TOO_LARGE');
  });

  test('protocol: an announced httpUrl is kept only when it is an http(s) URL to show and follow (found by review)', () => {
    for (const url of ['http://10.0.0.7:7070', 'https://replica-3.example.com:7070/', 'http://[::1]:7070']) assert.equal(announcedHttpUrl(url), url);
    const dropped = [
      '',
      'javascript:alert(1)',
      'data:text/html,<script>alert(1)</script>',
      'ftp://10.0.0.7/',
      'http://user:secret@10.0.0.7:7070',
      'http://10.0.0.7:7070/\x1b[2J',
      ' http://10.0.0.7:7070',
      'http://10.0.0.7:7070/\u00e9',
      `http://10.0.0.7/${'a'.repeat(256)}`,
      'not a url',
    ];
    for (const url of dropped) assert.equal(announcedHttpUrl(url), undefined, JSON.stringify(url));
  });

  test('protocol: a frame without a type byte is refused', () => {
    expectCode(() => new FrameDecoder(FRAME_MAX).push(Buffer.alloc(8)), 'FRAME_MALFORMED');
  });

  test('protocol: a failed decoder stays failed', () => {
    const decoder = new FrameDecoder(FRAME_MAX);
    expectCode(() => decoder.push(Buffer.alloc(8)), 'FRAME_MALFORMED');
    expectCode(() => decoder.push(encodeMessage({ type: 'ack', appliedSeq: 1, receivedBytes: 1 })), 'FRAME_MALFORMED');
  });

  test('protocol: a flipped bit anywhere in a frame is never accepted', () => {
    for (const message of EXAMPLES) {
      const frame = encodeMessage(message);
      for (let bit = 0; bit < frame.length * 8; bit++) {
        const copy = Buffer.from(frame);
        copy[bit >> 3] = copy[bit >> 3]! ^ (1 << (bit & 7));
        try {
          // A damaged length either waits for bytes that never come or is refused; anything else fails its CRC.
          const frames = new FrameDecoder(FRAME_MAX).push(copy);
          assert.equal(frames.length, 0, `bit ${bit} of ${message.type} went unnoticed`);
        } catch (error) {
          assert.ok(error instanceof ProtocolError, String(error));
        }
      }
    }
  });

  test('protocol: an unknown message type is refused', () => {
    const [frame] = new FrameDecoder(FRAME_MAX).push(rawFrame(200, Buffer.alloc(4)));
    expectCode(() => decodeMessage(frame!), 'MESSAGE_UNKNOWN');
  });

  test('protocol: every truncation of a payload, and trailing bytes, are refused as malformed', () => {
    for (const message of EXAMPLES) {
      const [frame] = new FrameDecoder(FRAME_MAX).push(encodeMessage(message));
      const payload = frame!.payload;
      for (let length = 0; length < payload.length; length++) {
        const [truncated] = new FrameDecoder(FRAME_MAX).push(rawFrame(frame!.type, payload.subarray(0, length)));
        expectCode(() => decodeMessage(truncated!), 'MESSAGE_MALFORMED');
      }
      const [longer] = new FrameDecoder(FRAME_MAX).push(rawFrame(frame!.type, Buffer.concat([payload, Buffer.of(0)])));
      expectCode(() => decodeMessage(longer!), 'MESSAGE_MALFORMED');
    }
  });

  test('protocol: field rules are enforced (empty ids, long paths, bad records, bad UTF-8, unknown codes)', () => {
    const payloadOf = (message: Message): Buffer => new FrameDecoder(FRAME_MAX).push(encodeMessage(message))[0]!.payload;
    const decodeRaw = (type: number, payload: Buffer): Message => decodeMessage({ type, payload, bytes: payload.length + FRAME_HEADER_BYTES });
    // HELLO with an empty node id.
    const hello = payloadOf({ type: 'hello', protocolVersion: PROTOCOL_VERSION, resync: false, datasetId: '', nodeId: 'x', path: [], head: GENESIS_HEAD, httpUrl: '' });
    const emptyId = Buffer.concat([hello.subarray(0, 4), Buffer.of(0), hello.subarray(6)]);
    expectCode(() => decodeRaw(MessageType.hello, emptyId), 'MESSAGE_MALFORMED');
    // Unknown HELLO flags.
    const flags = Buffer.from(hello);
    flags[2] = 0x82;
    expectCode(() => decodeRaw(MessageType.hello, flags), 'MESSAGE_MALFORMED');
    // The credential flag without a credential after the head.
    const noCredential = Buffer.from(hello);
    noCredential[2] = 0x02;
    expectCode(() => decodeRaw(MessageType.hello, noCredential), 'MESSAGE_MALFORMED');
    // A path longer than the maximum.
    const heartbeat = payloadOf({ type: 'heartbeat', rootSeq: 1, rootTimeMs: 1, path: ['r'] });
    const longPath = Buffer.from(heartbeat);
    longPath[16] = PATH_NODES_MAX + 1;
    expectCode(() => decodeRaw(MessageType.heartbeat, longPath), 'MESSAGE_MALFORMED');
    // A heartbeat with an empty path.
    expectCode(() => decodeRaw(MessageType.heartbeat, Buffer.concat([heartbeat.subarray(0, 16), Buffer.of(0)])), 'MESSAGE_MALFORMED');
    // A signed flag other than 0 or 1; a signed part cut short.
    const flag = Buffer.from(heartbeat);
    flag[flag.length - 1] = 2;
    expectCode(() => decodeRaw(MessageType.heartbeat, flag), 'MESSAGE_MALFORMED');
    const signed = payloadOf({ type: 'heartbeat', rootSeq: 1, rootTimeMs: 1, path: ['r'], proof: { epoch: Buffer.alloc(8), beat: 1, signature: Buffer.alloc(64) } });
    expectCode(() => decodeRaw(MessageType.heartbeat, signed.subarray(0, signed.length - 1)), 'MESSAGE_MALFORMED');
    // Invalid UTF-8 in an id.
    const badUtf8 = Buffer.from(heartbeat);
    badUtf8[18] = 0xff;
    expectCode(() => decodeRaw(MessageType.heartbeat, badUtf8), 'MESSAGE_MALFORMED');
    // Snapshot records: empty key, modSeq before createSeq, version 0, a version above the puts its seqs can hold (the
    // u32 maximum, which a later put would overflow); an empty chunk.
    const record = { key: Buffer.from('k'), value: Buffer.from('v'), createSeq: 5, modSeq: 5, version: 1 };
    for (const bad of [
      { ...record, key: Buffer.alloc(0) },
      { ...record, modSeq: 4 },
      { ...record, version: 0 },
      { ...record, createSeq: 0, modSeq: 0 },
      { ...record, version: ENTRY_OPS_MAX + 1 },
      { ...record, createSeq: 1, version: 0xffffffff },
    ]) {
      const chunk = Buffer.concat([Buffer.from([0, 0, 0, 1]), encodeSnapshotRecord(bad)]);
      expectCode(() => decodeRaw(MessageType.snapshotChunk, chunk), 'MESSAGE_MALFORMED');
    }
    expectCode(() => decodeRaw(MessageType.snapshotChunk, Buffer.alloc(4)), 'MESSAGE_MALFORMED');
    // A count that cannot fit the frame is refused before anything is allocated for it.
    expectCode(() => decodeRaw(MessageType.entries, Buffer.from([0xff, 0xff, 0xff, 0xff])), 'MESSAGE_MALFORMED');
    expectCode(() => decodeRaw(MessageType.entries, Buffer.alloc(4)), 'MESSAGE_MALFORMED');
    // Unknown refuse reason and welcome mode.
    expectCode(() => decodeRaw(MessageType.refuse, Buffer.from([0, 0, 0])), 'MESSAGE_MALFORMED');
    const welcome = payloadOf({ type: 'welcome', datasetId: 'd', nodeId: 'r', httpUrl: 'http://127.0.0.1:7070', path: ['r'], head: GENESIS_HEAD, mode: 'stream', fromSeq: 1 });
    const badMode = Buffer.from(welcome);
    badMode[welcome.length - 9] = 3;
    expectCode(() => decodeRaw(MessageType.welcome, badMode), 'MESSAGE_MALFORMED');
    // A u64 beyond 2^53.
    const ack = Buffer.alloc(16, 0xff);
    expectCode(() => decodeRaw(MessageType.ack, ack), 'MESSAGE_MALFORMED');
  });

  test('protocol: a HELLO of another version is refused before the rest is parsed', () => {
    const payload = Buffer.from([0, PROTOCOL_VERSION + 1, 0xde, 0xad]);
    expectCode(() => decodeMessage({ type: MessageType.hello, payload, bytes: 13 }), 'VERSION_UNSUPPORTED');
  });

  test('protocol: a long refuse message is cut at a character boundary', () => {
    const decoded = roundTrip({ type: 'refuse', reason: 'BEHIND', message: 'é'.repeat(2000) });
    assert.equal(decoded.type, 'refuse');
    assert.ok(Buffer.byteLength(decoded.message) <= 1024);
    assert.match(decoded.message, /^é+$/);
  });

  test('protocol: fuzz: random bytes never raise anything but ProtocolError', () => {
    const typeArbitrary = fc.integer({ min: 0, max: 12 });
    assertProperty(
      fc.property(
        fc.array(fc.oneof(bytes(64), fc.tuple(typeArbitrary, bytes(120)).map(([type, payload]) => rawFrame(type, payload))), { maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        (parts, rawCuts) => {
          const stream = Buffer.concat(parts);
          const cuts = [...new Set(rawCuts.map((cut) => cut % (stream.length + 1)))].sort((a, b) => a - b);
          const decoder = new FrameDecoder(256);
          let start = 0;
          try {
            for (const cut of [...cuts, stream.length]) {
              for (const frame of decoder.push(stream.subarray(start, cut))) decodeMessage(frame);
              start = cut;
            }
          } catch (error) {
            assert.ok(error instanceof ProtocolError, `unexpected ${String(error)}`);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  test('protocol: mutated valid messages never raise anything but ProtocolError', () => {
    assertProperty(
      fc.property(messageArbitrary, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), (message, edits) => {
        const [frame] = new FrameDecoder(FRAME_MAX).push(encodeMessage(message));
        const payload = Buffer.from(frame!.payload);
        if (payload.length === 0) return;
        for (const [position, value] of edits) payload[position % payload.length] = value;
        try {
          decodeMessage({ type: frame!.type, payload, bytes: frame!.bytes });
        } catch (error) {
          assert.ok(error instanceof ProtocolError, `unexpected ${String(error)}`);
        }
      }),
      { numRuns: 2000 },
    );
  });

  test('protocol: the snapshot digest is SHA-256 over the records in order', () => {
    const records = [
      { key: Buffer.from('a'), value: Buffer.from('1'), createSeq: 1, modSeq: 2, version: 2 },
      { key: Buffer.from('b'), value: Buffer.alloc(5000, 7), createSeq: 3, modSeq: 3, version: 1 },
    ];
    const digest = new SnapshotDigest();
    for (const record of records) digest.updateEncoded(encodeSnapshotRecord(record));
    const expected = createHash('sha256').update(Buffer.concat(records.map(encodeSnapshotRecord))).digest();
    assert.deepStrictEqual(digest.digest(), expected);
    const reordered = new SnapshotDigest();
    for (const record of [...records].reverse()) reordered.updateEncoded(encodeSnapshotRecord(record));
    assert.notDeepStrictEqual(reordered.digest(), expected);
    const changed = new SnapshotDigest();
    changed.updateEncoded(encodeSnapshotRecord(records[0]!));
    changed.updateEncoded(encodeSnapshotRecord({ ...records[1]!, version: 2 }));
    assert.notDeepStrictEqual(changed.digest(), expected);
  });
});

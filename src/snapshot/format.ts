/**
 * The snapshot file: the whole key space of a node at one seq, as `mercury snapshot save` writes it, `GET /v1/snapshot`
 * streams it, and `mercury snapshot restore` / `inspect` read it. Compact (the records and nothing else: no log, no
 * free pages, no B-tree) and checksummed end to end.
 *
 * ## Format (version 1), all integers big-endian
 *
 * ```
 * header:
 *   8 bytes   magic "MRCYSNAP"
 *   u16       version = 1
 *   u8 n      datasetId length (1..255) | n bytes of UTF-8 datasetId (strict UTF-8, no control characters)
 *   u64       seq              the entry the key space reflects (0: an empty root); at most SNAPSHOT_SEQ_MAX
 *   32 bytes  headHash         hash of the entry at seq (32 zero bytes at seq 0)
 *   u64       keyCount         number of records that follow
 *   u64       dataBytes        sum of the key and value bytes of all records (for progress and for `inspect`)
 *   u64       savedAtMs        the saving node's wall clock, for people (nothing depends on it); at most 8.64e15, a Date's last
 * record * keyCount, keys strictly ascending (bytewise):
 *   u16 keyLength (1..KEY_BYTES_MAX) | key | u32 valueLength (<= VALUE_BYTES_CEILING) | value
 *   | u64 createSeq | u64 modSeq | u32 version          1 <= createSeq <= modSeq <= seq, version >= 1
 * trailer:
 *   8 bytes   magic "MRCYEND."
 *   32 bytes  SHA-256 of every byte of the file before the trailer (header and records)
 * ```
 *
 * Nothing may follow the trailer. A reader trusts nothing until the trailer's digest matched: `SnapshotDecoder`
 * hands out records as it reads them, and a restore keeps them in the store's staging area, installing them only
 * after `end()` has checked the digest, the counts and the sizes. A truncated file ends before its trailer; a flipped
 * bit anywhere fails the digest (or an earlier structural check); both are refused with SNAPSHOT_INVALID naming the
 * byte offset.
 *
 * The head hash ties the file to the chain: a node restored from it continues the chain at seq + 1, and a replica
 * restored from it is served by its upstream from seq + 1 (the upstream checks the hash at seq, as for any replica).
 * The record layout is the one of the replication SNAPSHOT_CHUNK on purpose (same fields, same order), but it is
 * defined here: the file format changes only with this version number, never because the wire protocol did.
 */
import assert from 'node:assert/strict';
import { createHash, type Hash } from 'node:crypto';
import { KEY_BYTES_MAX, VALUE_BYTES_CEILING } from '../api/limits.js';
import { MercuryError } from '../errors/index.js';
import type { SnapshotRecord } from '../store/index.js';

export const SNAPSHOT_MAGIC = Buffer.from('MRCYSNAP', 'latin1');
export const SNAPSHOT_TRAILER_MAGIC = Buffer.from('MRCYEND.', 'latin1');
export const SNAPSHOT_FORMAT_VERSION = 1;
const HASH_BYTES = 32;
const DATASET_ID_BYTES_MAX = 255;
/**
 * The highest seq a snapshot may hold: 2^32 entries short of 2^53 - 1, the last seq a client reads exactly. A file
 * at 2^53 - 1 restored and started, and the root's next commit wrote a seq that no reader accepts, which left the
 * data directory refused at every start after (audit, stop 37). No real log gets near it.
 */
export const SNAPSHOT_SEQ_MAX = Number.MAX_SAFE_INTEGER - 2 ** 32;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
const ZERO_HASH = Buffer.alloc(HASH_BYTES);
/** C0 and C1 controls and DEL: an id is printed by inspect and restore, where a newline would forge a line. */
// eslint-disable-next-line no-control-regex -- control characters are exactly what an id must not hold
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;
/** Header bytes besides the dataset id. */
const HEADER_FIXED_BYTES = 8 + 2 + 1 + 8 + HASH_BYTES + 8 + 8 + 8;
export const SNAPSHOT_TRAILER_BYTES = 8 + HASH_BYTES;
/** Record bytes besides the key and the value. */
export const SNAPSHOT_RECORD_OVERHEAD_BYTES = 2 + 4 + 8 + 8 + 4;
/** The largest record a decoder accepts; it buffers at most one record (plus one chunk). */
const RECORD_BYTES_MAX = SNAPSHOT_RECORD_OVERHEAD_BYTES + KEY_BYTES_MAX + VALUE_BYTES_CEILING;

export interface SnapshotHeader {
  readonly version: number;
  readonly datasetId: string;
  readonly seq: number;
  readonly headHash: Buffer;
  readonly keyCount: number;
  readonly dataBytes: number;
  readonly savedAtMs: number;
}

/** Bytes of the whole file for a header: what `Content-Length` says and what a progress bar counts to. */
export function snapshotFileBytes(header: SnapshotHeader): number {
  return headerBytes(header.datasetId) + header.keyCount * SNAPSHOT_RECORD_OVERHEAD_BYTES + header.dataBytes + SNAPSHOT_TRAILER_BYTES;
}

function headerBytes(datasetId: string): number {
  return HEADER_FIXED_BYTES + Buffer.byteLength(datasetId);
}

export function encodeSnapshotHeader(header: SnapshotHeader): Buffer {
  const id = Buffer.from(header.datasetId, 'utf8');
  assert.ok(id.length >= 1 && id.length <= DATASET_ID_BYTES_MAX, 'dataset id length');
  assert.equal(header.headHash.length, HASH_BYTES);
  const buffer = Buffer.alloc(HEADER_FIXED_BYTES + id.length);
  let offset = SNAPSHOT_MAGIC.copy(buffer, 0);
  offset = buffer.writeUInt16BE(header.version, offset);
  offset = buffer.writeUInt8(id.length, offset);
  offset += id.copy(buffer, offset);
  offset = buffer.writeBigUInt64BE(BigInt(header.seq), offset);
  offset += header.headHash.copy(buffer, offset);
  offset = buffer.writeBigUInt64BE(BigInt(header.keyCount), offset);
  offset = buffer.writeBigUInt64BE(BigInt(header.dataBytes), offset);
  offset = buffer.writeBigUInt64BE(BigInt(header.savedAtMs), offset);
  assert.equal(offset, buffer.length);
  return buffer;
}

export function snapshotRecordFileBytes(record: SnapshotRecord): number {
  return SNAPSHOT_RECORD_OVERHEAD_BYTES + record.key.length + record.value.length;
}

export function encodeSnapshotFileRecord(record: SnapshotRecord): Buffer {
  const buffer = Buffer.allocUnsafe(snapshotRecordFileBytes(record));
  let offset = buffer.writeUInt16BE(record.key.length, 0);
  offset += record.key.copy(buffer, offset);
  offset = buffer.writeUInt32BE(record.value.length, offset);
  offset += record.value.copy(buffer, offset);
  offset = buffer.writeBigUInt64BE(BigInt(record.createSeq), offset);
  offset = buffer.writeBigUInt64BE(BigInt(record.modSeq), offset);
  offset = buffer.writeUInt32BE(record.version, offset);
  assert.equal(offset, buffer.length);
  return buffer;
}

export function encodeSnapshotTrailer(digest: Buffer): Buffer {
  assert.equal(digest.length, HASH_BYTES);
  return Buffer.concat([SNAPSHOT_TRAILER_MAGIC, digest]);
}

/** The largest time in ms since the epoch that a JavaScript Date holds (ECMA-262, 21.4.1.1). */
const DATE_MS_MAX = 8.64e15;

/**
 * Writes a snapshot file piece by piece: `header`, `record` for each key in order, `trailer`. Each returns the bytes
 * to write, and the digest covers exactly those.
 */
export class SnapshotEncoder {
  private readonly hash: Hash = createHash('sha256');
  private records = 0;
  private dataBytes = 0;
  private lastKey: Buffer | undefined;
  private expected: SnapshotHeader | undefined;

  header(header: SnapshotHeader): Buffer {
    assert.equal(this.expected, undefined, 'header written twice');
    this.expected = header;
    return this.digested(encodeSnapshotHeader(header));
  }

  record(record: SnapshotRecord): Buffer {
    assert.ok(this.expected !== undefined, 'record before header');
    assert.ok(this.lastKey === undefined || Buffer.compare(this.lastKey, record.key) < 0, 'snapshot keys must ascend');
    this.lastKey = record.key;
    this.records++;
    this.dataBytes += record.key.length + record.value.length;
    return this.digested(encodeSnapshotFileRecord(record));
  }

  trailer(): Buffer {
    assert.ok(this.expected !== undefined, 'trailer before header');
    // The header was written from a count of the same read transaction: a difference is a bug, not the world.
    assert.equal(this.records, this.expected.keyCount, 'records written differ from the header key count');
    assert.equal(this.dataBytes, this.expected.dataBytes, 'data bytes written differ from the header');
    return encodeSnapshotTrailer(this.hash.digest());
  }

  private digested(bytes: Buffer): Buffer {
    this.hash.update(bytes);
    return bytes;
  }
}

export type SnapshotDecoderPhase = 'header' | 'records' | 'trailer' | 'done' | 'failed';

function invalid(message: string, offset: number): MercuryError {
  return new MercuryError('SNAPSHOT_INVALID', `not a valid snapshot file: ${message} (at byte ${offset})`, { details: { offset } });
}

/**
 * Reads a snapshot file from chunks of any size: an explicit state machine (header, records, trailer, done, failed)
 * that checks every field before it allocates for it. `push` returns the records completed by the chunk (the header
 * is available from `header` once read); `end` says the input is over and throws unless the file was whole and its
 * digest matched. Any error leaves the decoder failed.
 */
export class SnapshotDecoder {
  private phaseValue: SnapshotDecoderPhase = 'header';
  private buffered: Buffer = Buffer.alloc(0);
  /** Chunks not yet joined to `buffered`: joined only once `need` bytes are there, so a large value is copied once. */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes `buffered` must hold before the current step can progress. */
  private need = 0;
  /** Offset in the file of buffered[0]. */
  private offset = 0;
  private readonly hash: Hash = createHash('sha256');
  private headerValue: SnapshotHeader | undefined;
  private records = 0;
  private dataBytes = 0;
  private lastKey: Buffer | undefined;

  get phase(): SnapshotDecoderPhase {
    return this.phaseValue;
  }

  get header(): SnapshotHeader | undefined {
    return this.headerValue;
  }

  /** File bytes consumed so far. */
  get bytesRead(): number {
    return this.offset;
  }

  push(chunk: Buffer): SnapshotRecord[] {
    assert.ok(this.phaseValue !== 'failed', 'push after a failure');
    try {
      return this.consume(chunk);
    } catch (error) {
      this.phaseValue = 'failed';
      throw error;
    }
  }

  /** The input is over: throws SNAPSHOT_INVALID unless the whole file, trailer included, was read and verified. */
  end(): SnapshotHeader {
    if (this.phaseValue === 'done') return this.headerValue!;
    this.phaseValue = 'failed';
    const where = this.headerValue === undefined ? 'in the header' : `after ${this.records} of ${this.headerValue.keyCount} records`;
    throw invalid(`the file ends ${where}; it is truncated (an interrupted save or copy)`, this.offset + this.buffered.length + this.pendingBytes);
  }

  private consume(chunk: Buffer): SnapshotRecord[] {
    const out: SnapshotRecord[] = [];
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.buffered.length + this.pendingBytes < this.need) return out;
    this.buffered = Buffer.concat([this.buffered, ...this.pending]);
    this.pending = [];
    this.pendingBytes = 0;
    this.need = 0;
    let at = 0;
    for (;;) {
      const available = this.buffered.length - at;
      if (this.phaseValue === 'header') {
        const used = this.readHeader(this.buffered.subarray(at));
        if (used === 0) break;
        this.hash.update(this.buffered.subarray(at, at + used));
        at += used;
        this.phaseValue = this.headerValue!.keyCount === 0 ? 'trailer' : 'records';
      } else if (this.phaseValue === 'records') {
        const used = this.readRecord(this.buffered.subarray(at), this.offset + at, out);
        if (used === 0) break;
        this.hash.update(this.buffered.subarray(at, at + used));
        at += used;
        if (this.records === this.headerValue!.keyCount) this.phaseValue = 'trailer';
      } else if (this.phaseValue === 'trailer') {
        if (available < SNAPSHOT_TRAILER_BYTES) {
          this.need = SNAPSHOT_TRAILER_BYTES;
          break;
        }
        const trailer = this.buffered.subarray(at, at + SNAPSHOT_TRAILER_BYTES);
        if (!trailer.subarray(0, 8).equals(SNAPSHOT_TRAILER_MAGIC))
          throw invalid(`no trailer after the ${this.records} records the header announces`, this.offset + at);
        if (this.dataBytes !== this.headerValue!.dataBytes)
          throw invalid(`the records hold ${this.dataBytes} data bytes; the header says ${this.headerValue!.dataBytes}`, this.offset + at);
        if (!trailer.subarray(8).equals(this.hash.digest()))
          throw invalid('the checksum (SHA-256) does not match the content: the file is damaged', this.offset + at);
        at += SNAPSHOT_TRAILER_BYTES;
        this.phaseValue = 'done';
      } else {
        if (available > 0) throw invalid(`${available} bytes follow the trailer`, this.offset + at);
        break;
      }
    }
    this.offset += at;
    this.buffered = at === this.buffered.length ? Buffer.alloc(0) : this.buffered.subarray(at);
    return out;
  }

  /** Bytes of the header consumed, or 0 if it is not complete yet. */
  private readHeader(bytes: Buffer): number {
    const magicBytes = Math.min(bytes.length, 8);
    if (!bytes.subarray(0, magicBytes).equals(SNAPSHOT_MAGIC.subarray(0, magicBytes))) throw invalid('it does not start with "MRCYSNAP"; is it a Mercury snapshot?', 0);
    if (bytes.length < 11) return this.needs(11);
    const version = bytes.readUInt16BE(8);
    if (version !== SNAPSHOT_FORMAT_VERSION) throw invalid(`format version ${version}; this Mercury reads version ${SNAPSHOT_FORMAT_VERSION}`, 8);
    const idLength = bytes.readUInt8(10);
    if (idLength === 0) throw invalid('the dataset id is empty', 10);
    const total = HEADER_FIXED_BYTES + idLength;
    if (bytes.length < total) return this.needs(total);
    let at = 11;
    // Read as the store reads its own id (src/store/records.ts decodeId): replacement characters would make a 255-byte
    // id of 0xFF bytes 765 bytes long, restored fine and refused by the node at every start.
    let datasetId: string;
    try {
      datasetId = strictUtf8.decode(bytes.subarray(at, at + idLength));
    } catch {
      throw invalid('the dataset id is not UTF-8 text', at);
    }
    if (CONTROL_CHARACTER.test(datasetId)) throw invalid(`the dataset id ${JSON.stringify(datasetId)} holds a control character`, at);
    at += idLength;
    const seq = this.u64(bytes, at, 'seq');
    at += 8;
    const headHash = Buffer.from(bytes.subarray(at, at + HASH_BYTES));
    at += HASH_BYTES;
    const keyCount = this.u64(bytes, at, 'keyCount');
    at += 8;
    const dataBytes = this.u64(bytes, at, 'dataBytes');
    at += 8;
    const savedAtMs = this.u64(bytes, at, 'savedAtMs');
    at += 8;
    assert.equal(at, total);
    if (seq > SNAPSHOT_SEQ_MAX) throw invalid(`seq ${seq} leaves no room to write: a snapshot holds at most seq ${SNAPSHOT_SEQ_MAX}`, 11 + idLength);
    if (seq === 0 && keyCount > 0) throw invalid(`${keyCount} keys at seq 0`, 11 + idLength);
    // Nothing comes before seq 1: a node restored with another hash at seq 0 started once, then failed its chain check.
    if (seq === 0 && !headHash.equals(ZERO_HASH)) throw invalid('a head hash at seq 0 that is not 32 zero bytes', 11 + idLength + 8);
    // Past the last time a Date can hold: a saver that printed it threw after the file was in place (audit, 2026-12-06).
    if (savedAtMs > DATE_MS_MAX) throw invalid(`savedAtMs ${savedAtMs} is past the last time a date can hold (${DATE_MS_MAX})`, at - 8);
    this.headerValue = Object.freeze({ version, datasetId, seq, headHash, keyCount, dataBytes, savedAtMs });
    return total;
  }

  /** Not enough bytes yet: remembers how many the step needs, and consumes none. */
  private needs(bytes: number): 0 {
    this.need = bytes;
    return 0;
  }

  private u64(bytes: Buffer, at: number, name: string): number {
    const value = bytes.readBigUInt64BE(at);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(`${name} ${value} is out of range`, this.offset + at);
    return Number(value);
  }

  /** Bytes of one record consumed (appended to `out`), or 0 if it is not complete yet. */
  private readRecord(bytes: Buffer, fileOffset: number, out: SnapshotRecord[]): number {
    if (bytes.length < 2) return this.needs(2);
    const keyLength = bytes.readUInt16BE(0);
    if (keyLength === 0 || keyLength > KEY_BYTES_MAX) throw invalid(`record ${this.records + 1} has a key of ${keyLength} bytes (1..${KEY_BYTES_MAX})`, fileOffset);
    if (bytes.length < 2 + keyLength + 4) return this.needs(2 + keyLength + 4);
    const valueLength = bytes.readUInt32BE(2 + keyLength);
    if (valueLength > VALUE_BYTES_CEILING) throw invalid(`record ${this.records + 1} has a value of ${valueLength} bytes (at most ${VALUE_BYTES_CEILING})`, fileOffset);
    const total = SNAPSHOT_RECORD_OVERHEAD_BYTES + keyLength + valueLength;
    assert.ok(total <= RECORD_BYTES_MAX);
    if (bytes.length < total) return this.needs(total);
    const key = Buffer.from(bytes.subarray(2, 2 + keyLength));
    let at = 2 + keyLength + 4;
    const value = Buffer.from(bytes.subarray(at, at + valueLength));
    at += valueLength;
    const createSeq = this.u64(bytes, at, 'createSeq');
    const modSeq = this.u64(bytes, at + 8, 'modSeq');
    const version = bytes.readUInt32BE(at + 16);
    const header = this.headerValue!;
    if (this.lastKey !== undefined && Buffer.compare(this.lastKey, key) >= 0) throw invalid(`record ${this.records + 1}: keys are not in ascending order`, fileOffset);
    if (createSeq < 1 || createSeq > modSeq || modSeq > header.seq || version < 1)
      throw invalid(`record ${this.records + 1}: createSeq ${createSeq}, modSeq ${modSeq}, version ${version} are impossible at seq ${header.seq}`, fileOffset);
    this.lastKey = key;
    this.records++;
    this.dataBytes += keyLength + valueLength;
    out.push({ key, value, createSeq, modSeq, version });
    return total;
  }
}

/**
 * ## Entry stream (`GET /v1/snapshot/entries?from=A&to=B`), for a point-in-time restore
 *
 * ```
 * (u32 recordLength | record) * (B - A + 1)     consecutive seqs from A to B; records as encoded by src/log/entry.ts
 * ```
 *
 * No checksum of its own: the receiver verifies every record with `verifyNext`, the first against the snapshot's head
 * (seq A - 1 and its hash), so a record that is damaged, missing, or from another chain is refused.
 */
export function encodeEntryStreamRecord(record: Buffer): Buffer {
  const prefix = Buffer.allocUnsafe(4);
  prefix.writeUInt32BE(record.length, 0);
  return Buffer.concat([prefix, record]);
}

/** Splits an entry stream into records; refuses a length above `recordBytesMax` before buffering the record. */
export class EntryStreamDecoder {
  private buffered: Buffer = Buffer.alloc(0);
  private offset = 0;

  constructor(private readonly recordBytesMax: number) {}

  push(chunk: Buffer): Buffer[] {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const out: Buffer[] = [];
    let at = 0;
    while (this.buffered.length - at >= 4) {
      const length = this.buffered.readUInt32BE(at);
      if (length === 0 || length > this.recordBytesMax)
        throw new MercuryError('SNAPSHOT_INVALID', `entry stream: a record of ${length} bytes (1..${this.recordBytesMax}) at byte ${this.offset + at}`);
      if (this.buffered.length - at - 4 < length) break;
      out.push(Buffer.from(this.buffered.subarray(at + 4, at + 4 + length)));
      at += 4 + length;
    }
    this.offset += at;
    this.buffered = this.buffered.subarray(at);
    return out;
  }

  /** Bytes received that do not make a whole record yet. */
  get pendingBytes(): number {
    return this.buffered.length;
  }
}

/**
 * The replication wire protocol: frames, messages, the handshake, and the snapshot digest.
 *
 * ## Frames
 *
 * A replication connection is a TCP (or TLS) byte stream of frames, all integers big-endian:
 *
 * ```
 * frame  = u32 length | u32 crc | u8 type | payload
 *          length = 1 + payload bytes (the type byte and the payload); 8 + length <= frameBytesMax
 *          crc    = CRC-32 (zlib) of type || payload
 * ```
 *
 * The frame header and the first field of HELLO never change between protocol versions, so that any two versions can
 * at least tell each other that they disagree. `FrameDecoder` is the only reader of the stream: an explicit state
 * machine (reading the 8-byte prefix, reading the body, failed) that refuses a length above the maximum before
 * buffering anything, and a body whose CRC does not match. Entries carry their own hash chain and snapshots their own
 * digest; the CRC exists for everything else (a flipped bit in a REFUSE reason or a heartbeat path must not make a
 * replica stop following or refuse a healthy upstream).
 *
 * ## Messages (payload layouts)
 *
 * ```
 * str8   = u8 n | n bytes of UTF-8                       ids, at most NODE_ID_BYTES_MAX bytes
 * path   = u8 count | str8 * count                        node ids from the root down, count <= PATH_NODES_MAX
 * hash   = 32 bytes
 *
 * 1 HELLO           child -> upstream, first frame of a connection
 *                   u16 protocolVersion | u8 flags (bit 0: resync, send a snapshot whatever my head;
 *                   bit 1: a credential follows httpUrl)
 *                   | str8 datasetId ('' for a replica that never joined) | str8 nodeId
 *                   | path (the child's last known ancestors, root first; informational, for status)
 *                   | u64 headSeq | hash headHash
 *                   | str8 httpUrl (the child's own HTTP API, '' if it has none; informational: the upstream shows it in
 *                   its status so that a dashboard can walk the tree from the root down, if it is an http(s) URL:
 *                   announcedHttpUrl)
 *                   [| u8 n | n bytes of UTF-8 credential: the child's bearer token (src/auth/token.ts), which
 *                   needs the `replicate` scope; absent, a verified client certificate may stand for it]
 * 2 WELCOME         upstream -> child, accepts the handshake
 *                   str8 datasetId | str8 nodeId | str8 httpUrl (the upstream's HTTP API, where a replica forwards
 *                   client writes; '' if it has none) | path (root .. the upstream itself) | u64 headSeq | hash headHash
 *                   | u8 mode (1 stream, 2 snapshot) | u64 fromSeq (stream: child's headSeq + 1; snapshot: 0)
 * 3 SNAPSHOT_BEGIN  u64 seq | hash (of the entry at seq) | u64 keyCount | u8 flags (bit 0: signed, SNAPSHOT_END will carry
 *                   the root's signature; only the root sets it, a relay cannot sign)
 * 4 SNAPSHOT_CHUNK  u32 count (>= 1) | record * count, keys strictly ascending across the whole snapshot
 *                   record = u16 keyLength | key | u32 valueLength | value | u64 createSeq | u64 modSeq | u32 version
 *                   (1 <= createSeq <= modSeq, 1 <= version <= (modSeq - createSeq + 1) * ENTRY_OPS_MAX)
 * 5 SNAPSHOT_END    hash digest = SHA-256 over the concatenated records of the whole snapshot, in key order
 *                   | u8 signatureLength (0, or 64 when BEGIN said signed) | signature: the root's Ed25519 signature
 *                   over seq, hash, keyCount and digest (src/trust/signatures.ts)
 * 6 ENTRIES         u32 count (>= 1) | (u32 recordLength | record) * count, consecutive seqs; records as encoded
 *                   by log/entry.ts (`sealEntry`), each verified by the receiver with `verifyNext` before it applies it
 * 7 HEARTBEAT       u64 rootSeq | u64 rootTimeMs | path (root .. the sender) | u8 signed (0 or 1) | when signed:
 *                   epoch (8 bytes) | u64 beat | signature: the root's Ed25519 signature over epoch, beat, rootSeq and
 *                   rootTimeMs (src/trust/signatures.ts). Made by the root every heartbeatIntervalMs (signed by a
 *                   signing root: beats count up from 1 in each epoch, drawn at random when its process starts); each
 *                   node forwards it at once to its children with its own id appended, the signed part unchanged
 * 8 REFUSE          u8 reason | u16 n | n bytes of UTF-8 message; the sender closes the connection after it
 * 9 ACK             child -> upstream: u64 appliedSeq | u64 receivedBytes (all frame bytes received on this connection)
 * 10 SNAPSHOT_PROOF upstream -> child, between chunks of a signed snapshot: u64 keys (records sent so far) | hash digest
 *                   (of those records, as SNAPSHOT_END's) | signature: the root's Ed25519 signature over seq, hash,
 *                   keyCount, keys and digest (src/trust/signatures.ts). Sent after the chunk that brings the records'
 *                   bytes since the previous proof to `snapshotProofBytes` (limits.ts): a replica that trusts the
 *                   root's key verifies each one, and refuses a snapshot that goes further than that without one, so
 *                   an upstream that claims a signed snapshot and streams records forever is stopped after a few MiB,
 *                   not when the disk is full
 * ```
 *
 * Versions: 2 dropped SNAPSHOT_BEGIN's trailing u64 bytesEstimate, which no upstream ever filled (always 0); 3 added
 * HELLO's trailing httpUrl; 4 added SNAPSHOT_BEGIN's flags and SNAPSHOT_END's signature, and entries of format 2
 * (authors and the root's signature, log/entry.ts); 5 added SNAPSHOT_PROOF; 6 added HEARTBEAT's signed part. A peer of another version is refused with
 * PROTOCOL_VERSION at the handshake.
 *
 * ## Handshake and session
 *
 * The child connects and sends HELLO. The upstream answers with exactly one of:
 * - REFUSE PROTOCOL_VERSION (versions differ), UNAVAILABLE (it has no dataset yet), SELF (the child is this node),
 *   LOOP (the child is one of its ancestors), PATH_TOO_LONG, DATASET_MISMATCH (the child holds another dataset),
 *   BEHIND (the child's head is past the upstream's: retry elsewhere or later), CHAIN_DIVERGED (the upstream knows the
 *   hash at the child's head seq and it differs; or it is a relay that stopped following, its own chain refused, and
 *   the child's head is exactly the one it held then), UPSTREAM_DIVERGED (a relay that stopped following, to any other
 *   child: it cannot serve, and has no opinion about the child's chain). CHAIN_DIVERGED is a vote that the child's
 *   chain diverged, UPSTREAM_DIVERGED an abstention: the child stops following (until an operator resyncs it) once
 *   every upstream it lists has voted or abstained since one last gave it entries or a snapshot, and at least one
 *   voted; until then either is a failure of that upstream, and it tries the next. UPSTREAM_DIVERGED (14) came within
 *   version 5: a child that does not know it fails to decode the REFUSE (MESSAGE_MALFORMED) and drops the upstream as
 *   after any failure: it never stops for that refusal, nor (lacking that upstream's vote) while such a relay is listed,
 *   and keeps trying, not ready, where a new child would stop as diverged;
 * - WELCOME mode snapshot, when the child is new (no dataset id), asked for a resync, or its head is older than the
 *   retained log: SNAPSHOT_BEGIN, SNAPSHOT_CHUNK*, SNAPSHOT_END, then entries from seq + 1;
 * - WELCOME mode stream: entries from the child's head + 1.
 * After WELCOME the upstream sends its latest heartbeat, then ENTRIES as it applies them (served from its log when
 * the child is behind), HEARTBEATs as they arrive, and a new snapshot whenever the child falls behind the retained
 * log. The child sends only ACKs, which open the flow-control window and prove it alive. Either side closes on a
 * protocol violation; nothing is ever retried on the same connection.
 *
 * Loops: an upstream refuses a child that is itself or one of its ancestors; a child drops an upstream whose WELCOME
 * path or any HEARTBEAT path contains its own id. Only the root makes heartbeats, and every node appends its id as
 * it forwards one, so in a cycle that forms anyway (two nodes accepting each other at the same moment) the first
 * heartbeat to go round comes back to a node that is already in its path, which drops the link; a cycle that holds no
 * heartbeat at all hears nothing and both sides drop it as stale.
 *
 * Heartbeat times: `rootTimeMs` is the root's wall clock, for the lag a node reports in ms, and nothing else. A
 * receiver orders heartbeats by `rootSeq` and measures staleness on its own monotonic clock, so a root whose clock
 * steps (or a heartbeat with a skewed time) changes no deadline. A replica with trusted keys counts a heartbeat as
 * progress only if one of them signed it and it is newer than any it took (by beat within an epoch), so that a relay
 * cannot keep it with heartbeats of its own, replayed or altered (src/replication/downstream.ts, "Withholding").
 */
import assert from 'node:assert/strict';
import { createHash, type Hash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { ProtocolErrorCode, RefuseReason } from '../api/errors.js';
import { readU64, writeU64 } from '../api/u64.js';
import { ENTRY_OPS_MAX, KEY_BYTES_MAX } from '../limits.js';
import { HASH_BYTES, SIGNATURE_BYTES, type ChainHead } from '../log/index.js';
import { HEARTBEAT_EPOCH_BYTES } from '../trust/index.js';
import type { SnapshotRecord } from '../store/index.js';
import {
  FRAME_HEADER_BYTES,
  NODE_ID_BYTES_MAX,
  PATH_NODES_MAX,
  PROTOCOL_VERSION,
  REFUSE_MESSAGE_BYTES_MAX,
  SNAPSHOT_RECORD_OVERHEAD_BYTES,
} from './limits.js';

/** Length and CRC: what precedes the frame body (type byte and payload). */
const FRAME_PREFIX_BYTES = 8;

export { ProtocolErrorCode, RefuseReason };

/**
 * Why two nodes meet with one node id, and what to do, said with a SELF refusal on both sides: a data directory copied
 * from another node's keeps its id (README, "Damaged data": a root made from a replica's directory), while a snapshot
 * restore or an empty directory gets a new one.
 */
export const SHARED_NODE_ID_HINT =
  "two nodes share this node id, most likely because one's data directory was copied from the other's; give one a new id: start a replica on an empty data directory (it rejoins), or make a root with mercury snapshot save and restore";

export const MessageType = {
  hello: 1,
  welcome: 2,
  snapshotBegin: 3,
  snapshotChunk: 4,
  snapshotEnd: 5,
  entries: 6,
  heartbeat: 7,
  refuse: 8,
  ack: 9,
  snapshotProof: 10,
} as const;
export type MessageType = keyof typeof MessageType;
const MESSAGE_NAMES: readonly (MessageType | undefined)[] = (() => {
  const names: (MessageType | undefined)[] = [];
  for (const [name, code] of Object.entries(MessageType)) names[code] = name as MessageType;
  return names;
})();

// The reasons and codes a peer sees are a wire contract: their table lives in src/api/errors.ts.
const REFUSE_NAMES: readonly (RefuseReason | undefined)[] = (() => {
  const names: (RefuseReason | undefined)[] = [];
  for (const [name, code] of Object.entries(RefuseReason)) names[code] = name as RefuseReason;
  return names;
})();

/** A peer broke the protocol. The only error the decoders throw, whatever bytes they are given. */
export class ProtocolError extends Error {
  readonly code: ProtocolErrorCode;

  constructor(code: ProtocolErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ProtocolError';
    this.code = code;
  }
}

/** A heartbeat as the machines pass it around: `path` lists node ids from the root down to the sender. */
export interface Heartbeat {
  readonly rootSeq: number;
  readonly rootTimeMs: number;
  readonly path: readonly string[];
  /** A signing root's signature, with what it covers beside rootSeq and rootTimeMs; relays pass it on unchanged. */
  readonly proof?: HeartbeatProof;
}

export interface HeartbeatProof {
  /** Random bytes the root drew at its start (HEARTBEAT_EPOCH_BYTES). */
  readonly epoch: Buffer;
  /** This heartbeat's number in the epoch, from 1. */
  readonly beat: number;
  readonly signature: Buffer;
}

export interface HelloMessage {
  readonly type: 'hello';
  readonly protocolVersion: number;
  readonly resync: boolean;
  readonly datasetId: string;
  readonly nodeId: string;
  readonly path: readonly string[];
  readonly head: ChainHead;
  /** The child's HTTP API base URL ('' if unknown): informational, shown in the upstream's status (announcedHttpUrl). */
  readonly httpUrl: string;
  /** The child's bearer token, if it presents one (flag bit 1). */
  readonly credential?: string;
}

export interface WelcomeMessage {
  readonly type: 'welcome';
  readonly datasetId: string;
  readonly nodeId: string;
  /** The upstream's HTTP API base URL, where a replica forwards client writes ('' if unknown). */
  readonly httpUrl: string;
  readonly path: readonly string[];
  readonly head: ChainHead;
  readonly mode: 'stream' | 'snapshot';
  readonly fromSeq: number;
}

/**
 * The HTTP URL a peer announced (HELLO's or WELCOME's `httpUrl`), if it is one to show and follow: an absolute
 * `http:` or `https:` URL of printable ASCII (at most a str8's 255 bytes), with a host and without user name or
 * password; else undefined. It stays the peer's claim, never checked against the peer: the upstream shows a child's in
 * its status (the dashboard polls it, without the operator's token unless the operator approved its origin:
 * docs/security.md) and a replica without --trust-key forwards writes to its upstream's. Anything else (`javascript:`,
 * `data:`, control characters a terminal or a page would act on) is dropped, as if the peer had announced none.
 */
export function announcedHttpUrl(text: string): string | undefined {
  if (!/^[\x21-\x7e]{1,255}$/.test(text)) return undefined;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  if (url.hostname === '' || url.username !== '' || url.password !== '') return undefined;
  return text;
}

export interface SnapshotBeginMessage {
  readonly type: 'snapshotBegin';
  readonly seq: number;
  readonly hash: Buffer;
  readonly keyCount: number;
  /** SNAPSHOT_END will carry the root's signature. */
  readonly signed: boolean;
}

export interface SnapshotChunkMessage {
  readonly type: 'snapshotChunk';
  readonly records: readonly SnapshotRecord[];
  /**
   * Set by decodeMessage: the payload after the count, as received. The decoder accepts only the canonical encoding
   * of each record (every field read back, no trailing bytes), so these are exactly the bytes the snapshot digest
   * covers for `records`, and the receiver hashes them as they are (`SnapshotDigest.updateEncoded`) instead of
   * encoding every record again. encodeMessage ignores it.
   */
  readonly encodedRecords?: Buffer;
}

export interface SnapshotEndMessage {
  readonly type: 'snapshotEnd';
  readonly digest: Buffer;
  /** The root's signature over seq, hash, keyCount and digest; undefined from a relay. */
  readonly signature: Buffer | undefined;
}

export interface SnapshotProofMessage {
  readonly type: 'snapshotProof';
  /** Records sent so far in this snapshot. */
  readonly keys: number;
  /** The snapshot digest over those records. */
  readonly digest: Buffer;
  /** The root's signature over seq, hash, keyCount, keys and digest. */
  readonly signature: Buffer;
}

export interface EntriesMessage {
  readonly type: 'entries';
  /** Encoded entry records, in seq order. Not verified by the decoder: the receiver runs `verifyNext` on each. */
  readonly records: readonly Buffer[];
}

export interface HeartbeatMessage extends Heartbeat {
  readonly type: 'heartbeat';
}

export interface RefuseMessage {
  readonly type: 'refuse';
  readonly reason: RefuseReason;
  readonly message: string;
}

export interface AckMessage {
  readonly type: 'ack';
  readonly appliedSeq: number;
  readonly receivedBytes: number;
}

export type Message =
  | HelloMessage
  | WelcomeMessage
  | SnapshotBeginMessage
  | SnapshotChunkMessage
  | SnapshotEndMessage
  | SnapshotProofMessage
  | EntriesMessage
  | HeartbeatMessage
  | RefuseMessage
  | AckMessage;

/** One frame as the decoder yields it. `bytes` is the frame's size on the wire, header included. */
export interface Frame {
  readonly type: number;
  readonly payload: Buffer;
  readonly bytes: number;
}

// ---------------------------------------------------------------------------------------------------------------
// Frame decoder

type DecoderState = 'prefix' | 'body' | 'failed';

/**
 * A frame body at least this large that spans chunks is gathered into memory of its own as it arrives, memory given
 * back (`FrameDecoder.release`) when there is some; a smaller one is joined from its chunks once complete.
 */
const LARGE_BODY_BYTES_MIN = 64 * 1024;

/**
 * Splits a byte stream into frames. Feed it chunks as they arrive, split anywhere; it returns the frames completed by
 * each chunk. On a violation it throws a ProtocolError and stays failed: the connection must be closed.
 */
export class FrameDecoder {
  private state: DecoderState = 'prefix';
  private readonly prefix = Buffer.alloc(FRAME_PREFIX_BYTES);
  private prefixFilled = 0;
  private bodyLength = 0;
  private bodyCrc = 0;
  /** A small body's parts so far (views of the pushed chunks), joined once complete. */
  private bodyParts: Buffer[] = [];
  /** A large body's memory, filled as its chunks arrive. */
  private bodyTarget: Buffer | undefined;
  private bodyFilled = 0;
  private failure: ProtocolError | undefined;
  /**
   * The memory the last large body was gathered in, and the memory given back (`release`) to gather the next in. Memory
   * new to the process costs more than the copy into it (each page is a fault, about 12 µs on the project machine):
   * joining a 1 MiB snapshot chunk from sixteen socket reads into new memory took 160 ms of a 1.8 s join's profile. A
   * receiver that is done with a frame's payload gives it back; the decoder never reuses memory it was not given back
   * (docs/decisions.md, record 50). `lent` is weak: a frame never given back (entries, which wait for the end of the
   * turn and are sent on to children) is freed as before once its receiver drops it, however large.
   */
  private lent: WeakRef<ArrayBufferLike> | undefined;
  private spare: Buffer | undefined;

  constructor(private readonly frameBytesMax: number) {}

  /**
   * Bytes received of an incomplete frame (bounded by frameBytesMax; a large body's memory is taken whole when its
   * first part arrives, as the upstream that announced it may send it). Frames reference the pushed chunks' memory, so
   * a chunk must not be modified after it is pushed.
   */
  get bufferedBytes(): number {
    return this.prefixFilled + this.bodyFilled;
  }

  push(chunk: Buffer): Frame[] {
    if (this.failure !== undefined) throw this.failure;
    const frames: Frame[] = [];
    let offset = 0;
    while (offset < chunk.length) {
      if (this.state === 'prefix') {
        const take = Math.min(FRAME_PREFIX_BYTES - this.prefixFilled, chunk.length - offset);
        chunk.copy(this.prefix, this.prefixFilled, offset, offset + take);
        this.prefixFilled += take;
        offset += take;
        if (this.prefixFilled < FRAME_PREFIX_BYTES) break;
        this.bodyLength = this.prefix.readUInt32BE(0);
        this.bodyCrc = this.prefix.readUInt32BE(4);
        if (this.bodyLength < 1) this.fail(new ProtocolError('FRAME_MALFORMED', 'frame without a type byte'));
        if (FRAME_PREFIX_BYTES + this.bodyLength > this.frameBytesMax)
          this.fail(
            new ProtocolError('FRAME_TOO_LARGE', `frame of ${FRAME_PREFIX_BYTES + this.bodyLength} bytes exceeds the maximum of ${this.frameBytesMax}`),
          );
        this.state = 'body';
        this.bodyFilled = 0;
        if (offset === chunk.length) break;
      }
      // state === 'body'
      const start = offset;
      const take = Math.min(this.bodyLength - this.bodyFilled, chunk.length - offset);
      offset += take;
      let body: Buffer;
      if (this.bodyFilled === 0 && take === this.bodyLength) {
        body = chunk.subarray(start, offset); // the whole body in this chunk: a view of it
      } else {
        this.gather(chunk, start, offset);
        if (this.bodyFilled < this.bodyLength) break;
        body = this.gathered();
      }
      if (crc32(body) !== this.bodyCrc) this.fail(new ProtocolError('FRAME_CHECKSUM', `frame of ${this.bodyLength} bytes fails its checksum`));
      frames.push({ type: body[0]!, payload: body.subarray(1), bytes: FRAME_PREFIX_BYTES + this.bodyLength });
      this.state = 'prefix';
      this.prefixFilled = 0;
      this.bodyFilled = 0;
    }
    return frames;
  }

  /**
   * Gives back the memory of a large frame this decoder gathered from several chunks (`payload`, or any view of it),
   * once nothing holds a view of it any more, and once: the next large frame is gathered in it. Any other buffer (a
   * frame that arrived in one chunk views that chunk, which other frames may share) is ignored.
   */
  release(payload: Buffer): void {
    const lent = this.lent?.deref();
    if (lent === undefined || payload.buffer !== lent) return;
    this.spare = Buffer.from(lent); // a view of all of it, as allocUnsafeSlow made it
    this.lent = undefined;
  }

  /**
   * Takes `chunk[start, end)` of a body that spans chunks. A large body is copied at once into its own memory, so that
   * its pages are touched read by read rather than all in the turn that completes it: a replica receiving a 90 MiB
   * entry spent about 500 ms of one turn joining it (docs/performance.md).
   */
  private gather(chunk: Buffer, start: number, end: number): void {
    if (this.bodyLength < LARGE_BODY_BYTES_MIN) this.bodyParts.push(chunk.subarray(start, end));
    else {
      this.bodyTarget ??= this.takeTarget();
      chunk.copy(this.bodyTarget, this.bodyFilled, start, end);
    }
    this.bodyFilled += end - start;
  }

  /** The complete body that spanned chunks. */
  private gathered(): Buffer {
    const target = this.bodyTarget;
    if (target === undefined) {
      const body = Buffer.concat(this.bodyParts, this.bodyLength);
      this.bodyParts = [];
      return body;
    }
    this.bodyTarget = undefined;
    this.lent = new WeakRef(target.buffer);
    return target.subarray(0, this.bodyLength);
  }

  /** Memory for a large body: the spare if it fits, else new. */
  private takeTarget(): Buffer {
    const spare = this.spare;
    this.spare = undefined;
    if (spare !== undefined && spare.length >= this.bodyLength) return spare;
    // Its own memory (not Node's shared pool, which small allocations use), with room for a next frame of about the
    // same size: a snapshot chunk's size varies by its last record.
    return Buffer.allocUnsafeSlow(Math.min(this.frameBytesMax, this.bodyLength + LARGE_BODY_BYTES_MIN));
  }

  private fail(error: ProtocolError): never {
    this.state = 'failed';
    this.failure = error;
    this.bodyParts = [];
    this.bodyTarget = undefined;
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Encoding

/** Frames a body (type byte already written at offset 8 of `frame`, payload after it). */
function seal(frame: Buffer): Buffer {
  frame.writeUInt32BE(frame.length - FRAME_PREFIX_BYTES, 0);
  frame.writeUInt32BE(crc32(frame.subarray(FRAME_PREFIX_BYTES)), 4);
  return frame;
}

/** Accumulates a small payload; the big ones (ENTRIES, SNAPSHOT_CHUNK) are written in place instead. */
class Writer {
  private readonly parts: Buffer[] = [];
  private length = 0;

  u8(value: number): this {
    return this.push(Buffer.of(value));
  }

  u16(value: number): this {
    const bytes = Buffer.allocUnsafe(2);
    bytes.writeUInt16BE(value, 0);
    return this.push(bytes);
  }

  u64(value: number): this {
    const bytes = Buffer.allocUnsafe(8);
    bytes.writeBigUInt64BE(BigInt(value), 0);
    return this.push(bytes);
  }

  bytes(value: Buffer): this {
    return this.push(value);
  }

  hash(value: Buffer): this {
    if (value.length !== HASH_BYTES) throw new RangeError(`hash of ${value.length} bytes`);
    return this.push(value);
  }

  str8(value: string): this {
    const bytes = Buffer.from(value, 'utf8');
    if (bytes.length > NODE_ID_BYTES_MAX) throw new RangeError(`id of ${bytes.length} bytes exceeds ${NODE_ID_BYTES_MAX}`);
    return this.u8(bytes.length).push(bytes);
  }

  path(path: readonly string[]): this {
    if (path.length > PATH_NODES_MAX) throw new RangeError(`path of ${path.length} nodes exceeds ${PATH_NODES_MAX}`);
    this.u8(path.length);
    for (const id of path) this.str8(id);
    return this;
  }

  frame(type: number): Buffer {
    const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + this.length);
    frame.writeUInt8(type, FRAME_PREFIX_BYTES);
    let offset = FRAME_HEADER_BYTES;
    for (const part of this.parts) offset += part.copy(frame, offset);
    return seal(frame);
  }

  private push(bytes: Buffer): this {
    this.parts.push(bytes);
    this.length += bytes.length;
    return this;
  }
}

/** Bytes a snapshot record takes on the wire (and in the digest). */
export function snapshotRecordBytes(record: SnapshotRecord): number {
  return SNAPSHOT_RECORD_OVERHEAD_BYTES + record.key.length + record.value.length;
}

function writeSnapshotRecord(record: SnapshotRecord, target: Buffer, offset: number): number {
  return writeSnapshotFields(target, offset, record.key, record.value, 0, record.value.length, record.createSeq, record.modSeq, record.version);
}

/** One snapshot record's canonical encoding at `offset`, its value `from[valueStart, valueEnd)`; returns the end. */
function writeSnapshotFields(
  target: Buffer,
  offset: number,
  key: Buffer,
  from: Buffer,
  valueStart: number,
  valueEnd: number,
  createSeq: number,
  modSeq: number,
  version: number,
): number {
  offset = target.writeUInt16BE(key.length, offset);
  target.set(key, offset);
  offset = target.writeUInt32BE(valueEnd - valueStart, offset + key.length);
  offset += from.copy(target, offset, valueStart, valueEnd);
  // Not writeBigUInt64BE: the BigInt conversions were most of a root's time per snapshot record.
  writeU64(target, createSeq, offset);
  writeU64(target, modSeq, offset + 8);
  target.writeUInt32BE(version, offset + 16);
  return offset + 20;
}

/**
 * Builds one SNAPSHOT_CHUNK frame a record at a time, each copied once from where its reader holds it (a store's
 * read buffer, `Store.openSnapshot().nextRecords`): the bytes `encodeMessage` makes of the same records, without a
 * record object or a copy per record on the way.
 */
export class SnapshotChunkWriter {
  private frame: Buffer;
  private offset = FRAME_HEADER_BYTES + 4;
  private records = 0;

  /** `bytesHint`: about how many bytes of records the chunk will hold (it grows past that if it must). */
  constructor(bytesHint: number) {
    this.frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + 4 + bytesHint + (bytesHint >> 4));
  }

  get count(): number {
    return this.records;
  }

  add(key: Buffer, from: Buffer, valueStart: number, valueEnd: number, createSeq: number, modSeq: number, version: number): void {
    const end = this.offset + SNAPSHOT_RECORD_OVERHEAD_BYTES + key.length + valueEnd - valueStart;
    if (end > this.frame.length) {
      const grown = Buffer.allocUnsafe(Math.max(end, this.frame.length * 2));
      this.frame.copy(grown, 0, 0, this.offset);
      this.frame = grown;
    }
    this.offset = writeSnapshotFields(this.frame, this.offset, key, from, valueStart, valueEnd, createSeq, modSeq, version);
    this.records++;
  }

  /** The sealed frame of the records added; undefined if there were none (a chunk is never empty). */
  finish(): Buffer | undefined {
    if (this.records === 0) return undefined;
    const frame = this.frame.subarray(0, this.offset);
    frame.writeUInt8(MessageType.snapshotChunk, FRAME_PREFIX_BYTES);
    frame.writeUInt32BE(this.records, FRAME_HEADER_BYTES);
    return seal(frame);
  }
}

/** The canonical encoding of one snapshot record (what the digest covers). */
export function encodeSnapshotRecord(record: SnapshotRecord): Buffer {
  const buffer = Buffer.allocUnsafe(snapshotRecordBytes(record));
  writeSnapshotRecord(record, buffer, 0);
  return buffer;
}

/** The records of an encoded SNAPSHOT_CHUNK frame (after its count): their canonical encoding, which the digest covers. */
export function snapshotChunkRecordBytes(frame: Buffer): Buffer {
  assert.equal(frame[FRAME_PREFIX_BYTES], MessageType.snapshotChunk, 'not a SNAPSHOT_CHUNK frame');
  return frame.subarray(FRAME_HEADER_BYTES + 4);
}

/** `text` cut to at most `bytesMax` bytes of UTF-8, at a character boundary. */
export function clipUtf8(text: string, bytesMax: number): string {
  const bytes = Buffer.from(text, 'utf8');
  return bytes.length <= bytesMax ? text : bytes.subarray(0, bytesMax).toString('utf8').replace(/\uFFFD+$/, '');
}

/** Encodes a message as one complete frame. Throws RangeError for a message the protocol cannot carry (a bug). */
export function encodeMessage(message: Message): Buffer {
  switch (message.type) {
    case 'hello':
    {
      const writer = new Writer()
        .u16(message.protocolVersion)
        .u8((message.resync ? 1 : 0) | (message.credential === undefined ? 0 : 2))
        .str8(message.datasetId)
        .str8(message.nodeId)
        .path(message.path)
        .u64(message.head.seq)
        .hash(message.head.hash)
        .str8(message.httpUrl);
      // str8 bounds it at 255 bytes (HELLO_CREDENTIAL_BYTES_MAX).
      if (message.credential !== undefined) writer.str8(message.credential);
      return writer.frame(MessageType.hello);
    }
    case 'welcome':
      return new Writer()
        .str8(message.datasetId)
        .str8(message.nodeId)
        .str8(message.httpUrl)
        .path(message.path)
        .u64(message.head.seq)
        .hash(message.head.hash)
        .u8(message.mode === 'stream' ? 1 : 2)
        .u64(message.fromSeq)
        .frame(MessageType.welcome);
    case 'snapshotBegin':
      return new Writer()
        .u64(message.seq)
        .hash(message.hash)
        .u64(message.keyCount)
        .u8(message.signed ? 1 : 0)
        .frame(MessageType.snapshotBegin);
    case 'snapshotChunk': {
      if (message.records.length === 0) throw new RangeError('empty snapshot chunk');
      let bytes = FRAME_HEADER_BYTES + 4;
      for (const record of message.records) bytes += snapshotRecordBytes(record);
      const frame = Buffer.allocUnsafe(bytes);
      frame.writeUInt8(MessageType.snapshotChunk, FRAME_PREFIX_BYTES);
      let offset = frame.writeUInt32BE(message.records.length, FRAME_HEADER_BYTES);
      for (const record of message.records) offset = writeSnapshotRecord(record, frame, offset);
      return seal(frame);
    }
    case 'snapshotEnd': {
      const writer = new Writer().hash(message.digest);
      if (message.signature === undefined) writer.u8(0);
      else {
        if (message.signature.length !== SIGNATURE_BYTES) throw new RangeError(`signature of ${message.signature.length} bytes`);
        writer.u8(SIGNATURE_BYTES).bytes(message.signature);
      }
      return writer.frame(MessageType.snapshotEnd);
    }
    case 'snapshotProof':
      if (message.signature.length !== SIGNATURE_BYTES) throw new RangeError(`signature of ${message.signature.length} bytes`);
      return new Writer().u64(message.keys).hash(message.digest).bytes(message.signature).frame(MessageType.snapshotProof);
    case 'entries':
      return encodeEntries(message.records);
    case 'heartbeat': {
      const writer = new Writer().u64(message.rootSeq).u64(message.rootTimeMs).path(message.path);
      const proof = message.proof;
      if (proof === undefined) return writer.u8(0).frame(MessageType.heartbeat);
      if (proof.epoch.length !== HEARTBEAT_EPOCH_BYTES || proof.signature.length !== SIGNATURE_BYTES) throw new RangeError('heartbeat proof of the wrong size');
      return writer.u8(1).bytes(proof.epoch).u64(proof.beat).bytes(proof.signature).frame(MessageType.heartbeat);
    }
    case 'refuse': {
      const text = Buffer.from(clipUtf8(message.message, REFUSE_MESSAGE_BYTES_MAX), 'utf8');
      return new Writer().u8(RefuseReason[message.reason]).u16(text.length).bytes(text).frame(MessageType.refuse);
    }
    case 'ack':
      return new Writer().u64(message.appliedSeq).u64(message.receivedBytes).frame(MessageType.ack);
  }
}

/** Frame bytes an ENTRIES frame carrying records of these sizes takes. */
export function entriesFrameBytes(recordBytes: number, count: number): number {
  return FRAME_HEADER_BYTES + 4 + count * 4 + recordBytes;
}

/** Encodes an ENTRIES frame (the hot path: one allocation, one copy of each record). */
export function encodeEntries(records: readonly Buffer[]): Buffer {
  if (records.length === 0) throw new RangeError('empty ENTRIES frame');
  let recordBytes = 0;
  for (const record of records) recordBytes += record.length;
  const frame = Buffer.allocUnsafe(entriesFrameBytes(recordBytes, records.length));
  frame.writeUInt8(MessageType.entries, FRAME_PREFIX_BYTES);
  let offset = frame.writeUInt32BE(records.length, FRAME_HEADER_BYTES);
  for (const record of records) {
    offset = frame.writeUInt32BE(record.length, offset);
    offset += record.copy(frame, offset);
  }
  return seal(frame);
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding

const utf8 = new TextDecoder('utf-8', { fatal: true });

class Reader {
  private offset = 0;

  constructor(
    private readonly payload: Buffer,
    private readonly what: string,
  ) {}

  /** Claims the next `length` bytes; returns their offset in the payload. */
  private claim(length: number, field: string): number {
    const at = this.offset;
    if (at + length > this.payload.length) this.malformed(`${field} runs past the end`);
    this.offset = at + length;
    return at;
  }

  private take(length: number, field: string): Buffer {
    const at = this.claim(length, field);
    return this.payload.subarray(at, at + length);
  }

  // Numbers are read in place: a view per field was a third of a snapshot chunk's decoding.
  u8(field: string): number {
    return this.payload[this.claim(1, field)]!;
  }

  u16(field: string): number {
    return this.payload.readUInt16BE(this.claim(2, field));
  }

  u32(field: string): number {
    return this.payload.readUInt32BE(this.claim(4, field));
  }

  u64(field: string): number {
    const at = this.claim(8, field);
    const value = readU64(this.payload, at);
    if (value > Number.MAX_SAFE_INTEGER) this.malformed(`${field} ${this.payload.readBigUInt64BE(at)} exceeds 2^53`);
    return value;
  }

  /** Bytes read so far. */
  position(): number {
    return this.offset;
  }

  /** The payload bytes from `start` up to what was read so far (a view, not a copy). */
  since(start: number): Buffer {
    return this.payload.subarray(start, this.offset);
  }

  bytes(length: number, field: string): Buffer {
    return this.take(length, field);
  }

  hash(field: string): Buffer {
    return this.take(HASH_BYTES, field);
  }

  text(length: number, field: string): string {
    try {
      return utf8.decode(this.take(length, field));
    } catch (error) {
      if (error instanceof ProtocolError) throw error;
      return this.malformed(`${field} is not valid UTF-8`);
    }
  }

  str8(field: string): string {
    return this.text(this.u8(`${field} length`), field);
  }

  path(field: string): string[] {
    const count = this.u8(`${field} count`);
    if (count > PATH_NODES_MAX) this.malformed(`${field} of ${count} nodes exceeds ${PATH_NODES_MAX}`);
    const path: string[] = [];
    for (let i = 0; i < count; i++) {
      const id = this.str8(`${field}[${i}]`);
      if (id.length === 0) this.malformed(`${field}[${i}] is empty`);
      path.push(id);
    }
    return path;
  }

  remaining(): number {
    return this.payload.length - this.offset;
  }

  end(): void {
    if (this.offset !== this.payload.length) this.malformed(`${this.payload.length - this.offset} trailing bytes`);
  }

  malformed(message: string): never {
    throw new ProtocolError('MESSAGE_MALFORMED', `${this.what}: ${message}`);
  }
}

/** Decodes a frame's message. Throws ProtocolError (and only that) for anything that is not a valid message. */
export function decodeMessage(frame: Frame): Message {
  const name = MESSAGE_NAMES[frame.type];
  if (name === undefined) throw new ProtocolError('MESSAGE_UNKNOWN', `unknown message type ${frame.type}`);
  const reader = new Reader(frame.payload, name);
  const message = decodePayload(name, reader);
  reader.end();
  return message;
}

function decodePayload(name: MessageType, reader: Reader): Message {
  switch (name) {
    case 'hello': {
      const protocolVersion = reader.u16('protocolVersion');
      // Everything after the version may differ in another version: refuse before parsing it.
      if (protocolVersion !== PROTOCOL_VERSION)
        throw new ProtocolError('VERSION_UNSUPPORTED', `peer speaks replication protocol ${protocolVersion}, this node ${PROTOCOL_VERSION}`);
      const flags = reader.u8('flags');
      if ((flags & ~3) !== 0) reader.malformed(`unknown flags ${flags}`);
      const datasetId = reader.str8('datasetId');
      const nodeId = reader.str8('nodeId');
      if (nodeId.length === 0) reader.malformed('empty nodeId');
      const path = reader.path('path');
      const seq = reader.u64('headSeq');
      const hash = reader.hash('headHash');
      const httpUrl = reader.str8('httpUrl');
      const hello: HelloMessage = { type: 'hello', protocolVersion, resync: (flags & 1) === 1, datasetId, nodeId, path, head: { seq, hash }, httpUrl };
      if ((flags & 2) === 0) return hello;
      return { ...hello, credential: reader.str8('credential') };
    }
    case 'welcome': {
      const datasetId = reader.str8('datasetId');
      if (datasetId.length === 0) reader.malformed('empty datasetId');
      const nodeId = reader.str8('nodeId');
      if (nodeId.length === 0) reader.malformed('empty nodeId');
      const httpUrl = reader.str8('httpUrl');
      const path = reader.path('path');
      const seq = reader.u64('headSeq');
      const hash = reader.hash('headHash');
      const modeCode = reader.u8('mode');
      if (modeCode !== 1 && modeCode !== 2) reader.malformed(`unknown mode ${modeCode}`);
      const fromSeq = reader.u64('fromSeq');
      return { type: 'welcome', datasetId, nodeId, httpUrl, path, head: { seq, hash }, mode: modeCode === 1 ? 'stream' : 'snapshot', fromSeq };
    }
    case 'snapshotBegin': {
      const seq = reader.u64('seq');
      const hash = reader.hash('hash');
      const keyCount = reader.u64('keyCount');
      const flags = reader.u8('flags');
      if ((flags & ~1) !== 0) reader.malformed(`unknown flags ${flags}`);
      return { type: 'snapshotBegin', seq, hash, keyCount, signed: flags === 1 };
    }
    case 'snapshotChunk': {
      const count = reader.u32('count');
      if (count === 0) reader.malformed('empty chunk');
      // Each record takes at least its fixed overhead plus a one-byte key: refuse impossible counts before allocating.
      if (count > reader.remaining() / (SNAPSHOT_RECORD_OVERHEAD_BYTES + 1)) reader.malformed(`count ${count} does not fit the frame`);
      const records: SnapshotRecord[] = [];
      const recordsStart = reader.position();
      for (let i = 0; i < count; i++) {
        const keyLength = reader.u16('key length');
        if (keyLength < 1 || keyLength > KEY_BYTES_MAX) reader.malformed(`key of ${keyLength} bytes`);
        const key = reader.bytes(keyLength, 'key');
        const value = reader.bytes(reader.u32('value length'), 'value');
        const createSeq = reader.u64('createSeq');
        const modSeq = reader.u64('modSeq');
        const version = reader.u32('version');
        if (createSeq < 1 || modSeq < createSeq || version < 1) reader.malformed(`record ${i} has createSeq ${createSeq}, modSeq ${modSeq}, version ${version}`);
        // A version counts the key's puts since createSeq, at most ENTRY_OPS_MAX per entry up to modSeq: a larger one
        // (0xffffffff with seqs 1 and 5, say) was never written by a root, and only sets up an overflow.
        if (version > (modSeq - createSeq + 1) * ENTRY_OPS_MAX)
          reader.malformed(`record ${i} has version ${version}, more puts than entries ${createSeq} to ${modSeq} can hold`);
        records.push({ key, value, createSeq, modSeq, version });
      }
      return { type: 'snapshotChunk', records, encodedRecords: reader.since(recordsStart) };
    }
    case 'snapshotEnd': {
      const digest = reader.hash('digest');
      const signatureLength = reader.u8('signature length');
      if (signatureLength !== 0 && signatureLength !== SIGNATURE_BYTES) reader.malformed(`signature of ${signatureLength} bytes`);
      return { type: 'snapshotEnd', digest, signature: signatureLength === 0 ? undefined : reader.bytes(signatureLength, 'signature') };
    }
    case 'snapshotProof':
      return { type: 'snapshotProof', keys: reader.u64('keys'), digest: reader.hash('digest'), signature: reader.bytes(SIGNATURE_BYTES, 'signature') };
    case 'entries': {
      const count = reader.u32('count');
      if (count === 0) reader.malformed('empty ENTRIES');
      if (count > reader.remaining() / 4) reader.malformed(`count ${count} does not fit the frame`);
      const records: Buffer[] = [];
      for (let i = 0; i < count; i++) records.push(reader.bytes(reader.u32('record length'), 'record'));
      return { type: 'entries', records };
    }
    case 'heartbeat': {
      const rootSeq = reader.u64('rootSeq');
      const rootTimeMs = reader.u64('rootTimeMs');
      const path = reader.path('path');
      if (path.length === 0) reader.malformed('empty path');
      const signed = reader.u8('signed');
      if (signed === 0) return { type: 'heartbeat', rootSeq, rootTimeMs, path };
      if (signed !== 1) reader.malformed(`signed flag ${signed}`);
      const proof = { epoch: reader.bytes(HEARTBEAT_EPOCH_BYTES, 'epoch'), beat: reader.u64('beat'), signature: reader.bytes(SIGNATURE_BYTES, 'signature') };
      return { type: 'heartbeat', rootSeq, rootTimeMs, path, proof };
    }
    case 'refuse': {
      const code = reader.u8('reason');
      const reason = REFUSE_NAMES[code];
      if (reason === undefined) reader.malformed(`unknown reason ${code}`);
      const length = reader.u16('message length');
      if (length > REFUSE_MESSAGE_BYTES_MAX) reader.malformed(`message of ${length} bytes`);
      return { type: 'refuse', reason, message: reader.text(length, 'message') };
    }
    case 'ack':
      return { type: 'ack', appliedSeq: reader.u64('appliedSeq'), receivedBytes: reader.u64('receivedBytes') };
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Snapshot digest

/** SHA-256 over the canonical encoding of every record of a snapshot, in key order (see SNAPSHOT_CHUNK). */
export class SnapshotDigest {
  private readonly hash: Hash = createHash('sha256');

  /**
   * Adds records already in their canonical encoding, one after another: an encoded SNAPSHOT_CHUNK's records
   * (`snapshotChunkRecordBytes`), a decoded one's (`encodedRecords`), or one record's (`encodeSnapshotRecord`). The
   * root and the receiver both hash a chunk's bytes in one call, never a record at a time.
   */
  updateEncoded(records: Buffer): void {
    this.hash.update(records);
  }

  digest(): Buffer {
    return this.hash.digest();
  }

  /** The digest of the records so far, leaving it open for more (what a SNAPSHOT_PROOF carries). */
  digestSoFar(): Buffer {
    return this.hash.copy().digest();
  }
}

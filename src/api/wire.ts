/**
 * The wire protocol (`mercury+tcp://`, `mercury+tls://`): point reads and single-key writes of the HTTP API, as
 * binary frames on one long-lived connection that carries many requests at once. It exists for speed: an HTTP/1.1
 * request costs a parse of text headers and one system call each way; here a frame is a few fixed fields, and a node
 * answers everything it handled in one event-loop turn with one write (docs/decisions.md, record 28).
 *
 * Semantics, limits, scopes and error codes are the HTTP API's (`GET`, `PUT`, `DELETE /v1/kv/{key}`); only the
 * framing differs. This module is the one definition of the framing, shared by the node (src/wire/) and the client
 * (src/client/wire.ts).
 *
 * Frame (every integer big-endian):
 *
 * ```
 * u32 length   bytes after this field: at least 5, at most the node's frame limit (READY says it)
 * u8  type
 * u32 id       chosen by the client per request; the answer carries it. 0 only on HELLO's answer and on
 *              connection errors. Answers may come in any order.
 * ... body     by type, below
 * ```
 *
 * Client to node:
 *
 * ```
 * HELLO  0x01  u8 version (1) | u16 token bytes | token (ASCII; 0 bytes: none: a client certificate, or auth off)
 *              Must be the first frame; nothing else is read before it is answered.
 * GET    0x02  u8 flags | u16 key bytes | key | [flags & 1: u64 minSeq | u32 minSeqTimeoutMs]
 * PUT    0x03  u8 flags | u16 key bytes | key | [flags & 2: u64 ifModSeq] | value (the rest of the frame)
 * DELETE 0x04  u8 flags | u16 key bytes | key | [flags & 2: u64 ifModSeq]
 * ```
 *
 * Node to client:
 *
 * ```
 * READY   0x81  u8 version | u32 requests in flight per connection at most | u32 frame bytes at most (length field)
 * VALUE   0x82  u64 seq | u64 createSeq | u64 modSeq | u64 version | value (the rest of the frame)
 * MISSING 0x83  u64 seq                     the key does not exist at seq (HTTP: 404 KEY_NOT_FOUND)
 * WRITTEN 0x84  u64 seq | u8 deleted        put: deleted is 0; delete: 1 if the key existed (HTTP's `deleted`)
 * ERROR   0x85  UTF-8 JSON, the HTTP API's error body: {"error":{"code","message",...details}}
 *               With id 0 it is about the connection: the node has answered every request it read before it, reads
 *               nothing more, and closes. Requests still unanswered were not processed.
 * GOAWAY  0x86  (empty, id 0) the node closes an idle connection: every request it read was answered before this
 *               frame, so any request still unanswered was never processed and may be sent again on a new connection.
 * ```
 *
 * A u64 is sent as two u32 (high, low) and must not exceed 2^53 - 1. A node judges a frame by its 9 header bytes,
 * before buffering the rest: a frame longer than its limit is refused, a PUT with VALUE_TOO_LARGE, and a frame of any
 * other type longer than WIRE_SMALL_FRAME_BYTES_MAX (the largest GET) with BODY_TOO_LARGE. A PUT longer than that
 * reserves its length in the node's budget of request bodies, shared with HTTP, from its header until it is answered
 * (or its connection closes); a PUT that does not fit is refused with BODY_BUDGET_EXCEEDED, and one sent with a token
 * that has no write scope with PERMISSION_DENIED (its key is checked once it is in). A refusal is answered to the
 * frame's id; the rest of the frame is read and dropped, and the connection goes on. Every other malformed frame is a
 * connection error (ERROR id 0, BAD_REQUEST naming the fault), then close.
 */
import { MercuryError } from './errors.js';
import { growBuffer } from './grow.js';
import { KEY_BYTES_MAX } from './limits.js';
import { readU64 as readTrustedU64, writeU64 } from './u64.js';

export const WIRE_PROTOCOL_VERSION = 1;

export const WireFrameType = {
  HELLO: 0x01,
  GET: 0x02,
  PUT: 0x03,
  DELETE: 0x04,
  READY: 0x81,
  VALUE: 0x82,
  MISSING: 0x83,
  WRITTEN: 0x84,
  ERROR: 0x85,
  GOAWAY: 0x86,
} as const;
export type WireFrameType = (typeof WireFrameType)[keyof typeof WireFrameType];

/** The length field. */
export const WIRE_LENGTH_BYTES = 4;
/** Type and id: every frame has them, so a frame's length is at least this. */
export const WIRE_HEADER_BYTES = 5;
/** GET flag: minSeq and its timeout follow the key. */
export const WIRE_FLAG_MIN_SEQ = 1;
/** PUT and DELETE flag: ifModSeq follows the key. */
export const WIRE_FLAG_IF_MOD_SEQ = 2;
/** A token is at most this long in HELLO (the HTTP API reads at most 256 characters of Authorization). */
export const WIRE_TOKEN_BYTES_MAX = 256;
/** The largest frame that is not a PUT: a GET with a maximal key and minSeq. HELLO is smaller. */
export const WIRE_SMALL_FRAME_BYTES_MAX = WIRE_HEADER_BYTES + 1 + 2 + KEY_BYTES_MAX + 8 + 4;
/** The largest frame before HELLO is answered: a HELLO with the longest token. */
export const WIRE_HELLO_FRAME_BYTES_MAX = WIRE_HEADER_BYTES + 1 + 2 + WIRE_TOKEN_BYTES_MAX;
/** The largest request id (ids are u32; 0 is the connection's own). */
export const WIRE_ID_MAX = 0xffff_ffff;

/** The largest frame a node with this value limit accepts: a PUT of a maximal key with ifModSeq and a maximal value. */
export function wireFrameBytesMaxFor(valueBytesMax: number): number {
  return WIRE_HEADER_BYTES + 1 + 2 + KEY_BYTES_MAX + 8 + valueBytesMax;
}

/** High u32 of Number.MAX_SAFE_INTEGER. */
const SAFE_HIGH_MAX = 0x1f_ffff;

function frame(type: WireFrameType, id: number, bodyBytes: number): Buffer {
  const buffer = Buffer.allocUnsafe(WIRE_LENGTH_BYTES + WIRE_HEADER_BYTES + bodyBytes);
  buffer.writeUInt32BE(WIRE_HEADER_BYTES + bodyBytes, 0);
  buffer[4] = type;
  buffer.writeUInt32BE(id, 5);
  return buffer;
}

/** Where a frame's body starts in a buffer that holds the whole frame, length field included. */
const BODY_AT = WIRE_LENGTH_BYTES + WIRE_HEADER_BYTES;

// --- Client frames ---------------------------------------------------------------------------------------------------

export function encodeHello(token: string | undefined): Buffer {
  const tokenBytes = token === undefined ? 0 : Buffer.byteLength(token, 'latin1');
  const buffer = frame(WireFrameType.HELLO, 0, 1 + 2 + tokenBytes);
  buffer[BODY_AT] = WIRE_PROTOCOL_VERSION;
  buffer.writeUInt16BE(tokenBytes, BODY_AT + 1);
  if (token !== undefined) buffer.write(token, BODY_AT + 3, 'latin1');
  return buffer;
}

export function encodeGet(id: number, key: Buffer, minSeq?: { seq: number; timeoutMs: number }): Buffer {
  const buffer = frame(WireFrameType.GET, id, 1 + 2 + key.length + (minSeq === undefined ? 0 : 12));
  buffer[BODY_AT] = minSeq === undefined ? 0 : WIRE_FLAG_MIN_SEQ;
  buffer.writeUInt16BE(key.length, BODY_AT + 1);
  key.copy(buffer, BODY_AT + 3);
  if (minSeq !== undefined) {
    writeU64(buffer, minSeq.seq, BODY_AT + 3 + key.length);
    buffer.writeUInt32BE(minSeq.timeoutMs, BODY_AT + 3 + key.length + 8);
  }
  return buffer;
}

function keyWrite(type: WireFrameType, id: number, key: Buffer, ifModSeq: number | undefined, valueBytes: number): { buffer: Buffer; valueAt: number } {
  const buffer = frame(type, id, 1 + 2 + key.length + (ifModSeq === undefined ? 0 : 8) + valueBytes);
  buffer[BODY_AT] = ifModSeq === undefined ? 0 : WIRE_FLAG_IF_MOD_SEQ;
  buffer.writeUInt16BE(key.length, BODY_AT + 1);
  key.copy(buffer, BODY_AT + 3);
  if (ifModSeq !== undefined) writeU64(buffer, ifModSeq, BODY_AT + 3 + key.length);
  return { buffer, valueAt: BODY_AT + 3 + key.length + (ifModSeq === undefined ? 0 : 8) };
}

export function encodePut(id: number, key: Buffer, value: Buffer, ifModSeq?: number): Buffer {
  const { buffer, valueAt } = keyWrite(WireFrameType.PUT, id, key, ifModSeq, value.length);
  value.copy(buffer, valueAt);
  return buffer;
}

export function encodeDelete(id: number, key: Buffer, ifModSeq?: number): Buffer {
  return keyWrite(WireFrameType.DELETE, id, key, ifModSeq, 0).buffer;
}

// --- Node frames -----------------------------------------------------------------------------------------------------

export function encodeReady(inFlightMax: number, frameBytesMax: number): Buffer {
  const buffer = frame(WireFrameType.READY, 0, 9);
  buffer[BODY_AT] = WIRE_PROTOCOL_VERSION;
  buffer.writeUInt32BE(inFlightMax, BODY_AT + 1);
  buffer.writeUInt32BE(frameBytesMax, BODY_AT + 5);
  return buffer;
}

export function encodeValue(id: number, seq: number, record: { readonly createSeq: number; readonly modSeq: number; readonly version: number; readonly value: Buffer }): Buffer {
  return valueFrame(id, seq, record.createSeq, record.modSeq, record.version, record.value, 0, record.value.length);
}

/** A VALUE frame whose value is `bytes[valueStart, valueEnd)`. */
function valueFrame(id: number, seq: number, createSeq: number, modSeq: number, version: number, bytes: Buffer, valueStart: number, valueEnd: number): Buffer {
  const buffer = frame(WireFrameType.VALUE, id, 32 + valueEnd - valueStart);
  writeU64(buffer, seq, BODY_AT);
  writeU64(buffer, createSeq, BODY_AT + 8);
  writeU64(buffer, modSeq, BODY_AT + 16);
  writeU64(buffer, version, BODY_AT + 24);
  bytes.copy(buffer, BODY_AT + 32, valueStart, valueEnd);
  return buffer;
}

/**
 * Encodes VALUE frames straight from a record read in place (it has the shape of the store's KeyRecordSink): the
 * value's one copy is from LMDB's read buffer into the frame. `add` is called with the record when the key exists,
 * then `take` gives the frame, VALUE or MISSING, with the id and the seq of the read. Single-threaded use, one read at a
 * time.
 */
export class ValueFrameEncoder {
  private pending: Buffer | undefined;

  add(_key: Buffer, bytes: Buffer, valueStart: number, valueEnd: number, createSeq: number, modSeq: number, version: number): void {
    // Id and seq are not known yet: `take` writes them.
    this.pending = valueFrame(0, 0, createSeq, modSeq, version, bytes, valueStart, valueEnd);
  }

  /** The answer to request `id` read at `seq`: the VALUE that `add` encoded since the last take, else MISSING. */
  take(id: number, seq: number): Buffer {
    const buffer = this.pending;
    this.pending = undefined;
    if (buffer === undefined) return encodeMissing(id, seq);
    buffer.writeUInt32BE(id, WIRE_LENGTH_BYTES + 1);
    writeU64(buffer, seq, BODY_AT);
    return buffer;
  }
}

export function encodeMissing(id: number, seq: number): Buffer {
  const buffer = frame(WireFrameType.MISSING, id, 8);
  writeU64(buffer, seq, BODY_AT);
  return buffer;
}

export function encodeWritten(id: number, seq: number, deleted: boolean): Buffer {
  const buffer = frame(WireFrameType.WRITTEN, id, 9);
  writeU64(buffer, seq, BODY_AT);
  buffer[BODY_AT + 8] = deleted ? 1 : 0;
  return buffer;
}

/** An ERROR frame: the HTTP API's error body, so that both APIs give a client the same code, message and details. */
export function encodeError(id: number, code: string, message: string, details?: Readonly<Record<string, unknown>>): Buffer {
  const json = Buffer.from(JSON.stringify({ error: { code, message, ...details } }), 'utf8');
  const buffer = frame(WireFrameType.ERROR, id, json.length);
  json.copy(buffer, BODY_AT);
  return buffer;
}

export function encodeGoaway(): Buffer {
  return frame(WireFrameType.GOAWAY, 0, 0);
}

// --- Decoding --------------------------------------------------------------------------------------------------------

/** A frame as the reader cuts it: type, id and the body (a view into the received bytes; copy what outlives it). */
export interface WireFrame {
  readonly type: number;
  readonly id: number;
  readonly body: Buffer;
}

/** A frame longer than the limit: its bytes are skipped as they arrive; the reader reports it once its header is in. */
export interface OversizedFrame {
  readonly oversized: true;
  readonly type: number;
  readonly id: number;
  /** The length field. */
  readonly length: number;
}

/**
 * The header of a frame longer than the reader's `headsAbove`, returned before any more of the frame is buffered. The
 * reader then gathers the frame as usual, unless `drop` is called first.
 */
export interface WireFrameHead {
  readonly head: true;
  readonly type: number;
  readonly id: number;
  /** The length field. */
  readonly length: number;
}

/** The first buffer of a frame gathered from pieces: most frames that span chunks are small (a value of a few KiB). */
const ASSEMBLY_BYTES_MIN = 16 * 1024;

function malformed(message: string): MercuryError {
  return new MercuryError('BAD_REQUEST', `malformed wire frame: ${message}`);
}

/**
 * Cuts a byte stream into frames. Whole frames in a chunk are returned as views of it, without a copy. A frame that
 * spans chunks is gathered, once its length field is in, into one buffer that grows with what arrives (doubling, up to
 * the frame's length: src/api/grow.ts), and the chunks after it go straight into that buffer: however a peer splits a
 * frame (a byte per TCP segment), the node holds the frame's bytes and one buffer, not a Buffer object (some 200 bytes
 * of heap) per segment, and a peer that announces a frame of the largest length and sends a few bytes of it holds
 * ASSEMBLY_BYTES_MIN, not the length it announced. The limit applies from the length field: a longer frame is never
 * buffered (its bytes are counted and dropped). A frame longer than `headsAbove` is returned first as its header
 * (WireFrameHead), so that its reader may refuse it (`drop`) or account for it before it is gathered. A length below
 * the header size is a BAD_REQUEST.
 */
export class WireFrameReader {
  /** Bytes not yet cut into frames, as they arrived: whole frames, and at most the first bytes of a length field. */
  private readonly chunks: Buffer[] = [];
  /** Bytes held in `chunks`, from `offset` in the first one. */
  private held = 0;
  private offset = 0;
  /**
   * A frame partly in (length field included): `assemblingBytes` long in all, its first `assemblingFilled` bytes in
   * `assembling`, which grows as more arrive.
   */
  private assembling: Buffer | undefined = undefined;
  private assemblingFilled = 0;
  private assemblingBytes = 0;
  /** Bytes of an oversized frame still to drop. */
  private skipping = 0;
  /** Frames ended so far: returned whole, or oversized and dropped to their last byte (each frame has its own timeout). */
  private ended = 0;
  /** Frames longer than this are returned as a WireFrameHead first. */
  private headsAbove = Number.POSITIVE_INFINITY;
  /** The length field of the frame whose head was just returned (0: none), which `drop` may drop. */
  private headLength = 0;

  constructor(private frameBytesMax: number) {}

  /** Changes the limit (a node raises it once HELLO is answered), and the length above which a frame's head comes first. */
  setLimit(frameBytesMax: number, headsAbove = Number.POSITIVE_INFINITY): void {
    this.frameBytesMax = frameBytesMax;
    this.headsAbove = headsAbove;
  }

  push(chunk: Buffer): void {
    if (this.skipping > 0) {
      const dropped = Math.min(this.skipping, chunk.length);
      this.skipping -= dropped;
      if (this.skipping === 0) this.ended++;
      if (dropped === chunk.length) return;
      chunk = chunk.subarray(dropped);
    }
    if (this.assembling !== undefined && this.assemblingFilled < this.assemblingBytes) {
      const taken = Math.min(chunk.length, this.assemblingBytes - this.assemblingFilled);
      const assembling = growBuffer(this.assembling, this.assemblingFilled, this.assemblingFilled + taken, this.assemblingBytes, ASSEMBLY_BYTES_MIN);
      this.assembling = assembling;
      chunk.copy(assembling, this.assemblingFilled, 0, taken);
      this.assemblingFilled += taken;
      if (taken === chunk.length) return;
      chunk = chunk.subarray(taken);
    }
    this.chunks.push(chunk);
    this.held += chunk.length;
  }

  /** Bytes received and not yet returned as frames: nonzero while a frame is partly in (or one is being skipped). */
  get partialBytes(): number {
    return this.held + this.assemblingFilled + this.skipping;
  }

  /** How many frames have ended (a count that only grows): a frame's timeout starts again from the next one's bytes. */
  get framesEnded(): number {
    return this.ended;
  }

  /**
   * The next whole frame, an oversized frame's header, a large frame's head, or undefined when more bytes are needed.
   * Throws BAD_REQUEST.
   */
  next(): WireFrame | OversizedFrame | WireFrameHead | undefined {
    const assembling = this.assembling;
    if (assembling !== undefined) {
      if (this.assemblingFilled < this.assemblingBytes) return undefined;
      // Complete: it came before anything held in `chunks`, which arrived after it.
      this.assembling = undefined;
      this.assemblingFilled = 0;
      return this.whole(assembling.subarray(0, this.assemblingBytes));
    }
    if (this.held < WIRE_LENGTH_BYTES) return undefined;
    const length = this.peekUInt32(0);
    if (length < WIRE_HEADER_BYTES) throw malformed(`length ${length} is below the ${WIRE_HEADER_BYTES} bytes of type and id`);
    if (length > this.frameBytesMax) {
      if (this.held < WIRE_LENGTH_BYTES + WIRE_HEADER_BYTES) return undefined;
      const type = this.peekByte(WIRE_LENGTH_BYTES);
      const id = this.peekUInt32(WIRE_LENGTH_BYTES + 1);
      this.skip(WIRE_LENGTH_BYTES + length);
      return { oversized: true, type, id, length };
    }
    if (length > this.headsAbove && this.headLength === 0) {
      if (this.held < WIRE_LENGTH_BYTES + WIRE_HEADER_BYTES) return undefined;
      this.headLength = length;
      return { head: true, type: this.peekByte(WIRE_LENGTH_BYTES), id: this.peekUInt32(WIRE_LENGTH_BYTES + 1), length };
    }
    if (this.held < WIRE_LENGTH_BYTES + length) {
      // Everything held is the start of this frame (frames before it were returned): gathered into the frame's own
      // buffer, which the next chunks fill. A frame that spans chunks was copied once before too, when complete.
      this.assemblingBytes = WIRE_LENGTH_BYTES + length;
      this.assemblingFilled = this.held;
      this.assembling = this.take(this.held, growBuffer(undefined, 0, this.held, this.assemblingBytes, ASSEMBLY_BYTES_MIN));
      return undefined;
    }
    return this.whole(this.take(WIRE_LENGTH_BYTES + length));
  }

  /** Drops the frame whose head `next` just returned: what is held of it now, and the rest as it arrives. */
  drop(): void {
    if (this.headLength === 0 || this.assembling !== undefined) throw new Error('bug: drop() without a frame head just returned');
    this.skip(WIRE_LENGTH_BYTES + this.headLength);
    this.headLength = 0;
  }

  /** Drops the `total` bytes of the frame at the front: what is held of it now, and the rest as it comes. */
  private skip(total: number): void {
    const dropNow = Math.min(total, this.held);
    this.take(dropNow);
    this.skipping = total - dropNow;
    if (this.skipping === 0) this.ended++;
  }

  private whole(frame: Buffer): WireFrame {
    this.ended++;
    this.headLength = 0;
    return { type: frame[WIRE_LENGTH_BYTES]!, id: frame.readUInt32BE(WIRE_LENGTH_BYTES + 1), body: frame.subarray(BODY_AT) };
  }

  private peekByte(at: number): number {
    let index = 0;
    let position = this.offset + at;
    while (position >= this.chunks[index]!.length) {
      position -= this.chunks[index]!.length;
      index++;
    }
    return this.chunks[index]![position]!;
  }

  private peekUInt32(at: number): number {
    const first = this.chunks[0]!;
    if (first.length - this.offset >= at + 4) return first.readUInt32BE(this.offset + at);
    return ((this.peekByte(at) << 24) | (this.peekByte(at + 1) << 16) | (this.peekByte(at + 2) << 8) | this.peekByte(at + 3)) >>> 0;
  }

  /** Removes `bytes` from the front; returns them as one buffer (a view when they lie in one chunk, unless `into` is given). */
  private take(bytes: number, into?: Buffer): Buffer {
    const first = this.chunks[0]!;
    this.held -= bytes;
    if (into === undefined && first.length - this.offset >= bytes) {
      const view = first.subarray(this.offset, this.offset + bytes);
      this.offset += bytes;
      if (this.offset === first.length) {
        this.chunks.shift();
        this.offset = 0;
      }
      return view;
    }
    const out = into ?? Buffer.allocUnsafe(bytes);
    let filled = 0;
    while (filled < bytes) {
      const chunk = this.chunks[0]!;
      const n = Math.min(bytes - filled, chunk.length - this.offset);
      chunk.copy(out, filled, this.offset, this.offset + n);
      filled += n;
      this.offset += n;
      if (this.offset === chunk.length) {
        this.chunks.shift();
        this.offset = 0;
      }
    }
    return out;
  }
}

/** Reads a u64 (two u32) at `at`; undefined when it is above 2^53 - 1. */
export function readU64(buffer: Buffer, at: number): number | undefined {
  return buffer.readUInt32BE(at) > SAFE_HIGH_MAX ? undefined : readTrustedU64(buffer, at);
}

export type WireRequest =
  | { readonly type: typeof WireFrameType.HELLO; readonly id: number; readonly version: number; readonly token: string | undefined }
  | { readonly type: typeof WireFrameType.GET; readonly id: number; readonly key: Buffer; readonly minSeq: number | undefined; readonly minSeqTimeoutMs: number | undefined }
  | { readonly type: typeof WireFrameType.PUT; readonly id: number; readonly key: Buffer; readonly ifModSeq: number | undefined; readonly value: Buffer }
  | { readonly type: typeof WireFrameType.DELETE; readonly id: number; readonly key: Buffer; readonly ifModSeq: number | undefined };

const REQUEST_NAMES: Readonly<Record<number, string>> = { 0x01: 'HELLO', 0x02: 'GET', 0x03: 'PUT', 0x04: 'DELETE' };

/**
 * Decodes a client frame. Key sizes are checked by the node with the HTTP API's own checks (KEY_EMPTY,
 * KEY_TOO_LARGE); this checks only the framing, and throws BAD_REQUEST naming the frame and the fault.
 */
export function decodeRequest(frame: WireFrame): WireRequest {
  const { type, id, body } = frame;
  const name = REQUEST_NAMES[type];
  if (name === undefined) throw malformed(`unknown frame type 0x${type.toString(16).padStart(2, '0')} (id ${id}); a client sends HELLO, GET, PUT or DELETE`);
  // Built only for an error message: a request that decodes allocates no text.
  const where = (): string => `${name} frame (id ${id})`;
  if (type === WireFrameType.HELLO) {
    if (body.length < 3) throw malformed(`${where()} is ${body.length} bytes; it needs a version and a token length`);
    const tokenBytes = body.readUInt16BE(1);
    if (body.length !== 3 + tokenBytes) throw malformed(`${where()} says a token of ${tokenBytes} bytes but holds ${body.length - 3}`);
    if (tokenBytes > WIRE_TOKEN_BYTES_MAX) throw malformed(`${where()}: the token is ${tokenBytes} bytes; at most ${WIRE_TOKEN_BYTES_MAX}`);
    return { type, id, version: body[0]!, token: tokenBytes === 0 ? undefined : body.toString('latin1', 3) };
  }
  if (id === 0) throw malformed(`${where()}: request ids start at 1 (0 is the connection's)`);
  if (body.length < 3) throw malformed(`${where()} is ${body.length} bytes; it needs flags and a key length`);
  const flags = body[0]!;
  const keyBytes = body.readUInt16BE(1);
  const keyEnd = 3 + keyBytes;
  if (keyEnd > body.length) throw malformed(`${where()}: a key of ${keyBytes} bytes runs past the frame's end`);
  if (type === WireFrameType.GET) {
    if ((flags & ~WIRE_FLAG_MIN_SEQ) !== 0) throw malformed(`${where()}: unknown flags 0x${flags.toString(16)}`);
    if ((flags & WIRE_FLAG_MIN_SEQ) === 0) {
      if (keyEnd !== body.length) throw malformed(`${where()}: ${body.length - keyEnd} bytes after the key`);
      // A view: a GET without minSeq is read and answered at once, so it need not copy its key out of the chunk.
      return { type, id, key: body.subarray(3, keyEnd), minSeq: undefined, minSeqTimeoutMs: undefined };
    }
    if (keyEnd + 12 !== body.length) throw malformed(`${where()}: minSeq takes 12 bytes after the key, found ${body.length - keyEnd}`);
    const minSeq = readU64(body, keyEnd);
    if (minSeq === undefined) throw malformed(`${where()}: minSeq is above 2^53 - 1`);
    // A copy: this read may wait, and should not hold the received chunk meanwhile.
    return { type, id, key: Buffer.from(body.subarray(3, keyEnd)), minSeq, minSeqTimeoutMs: body.readUInt32BE(keyEnd + 8) };
  }
  // A copy: the key outlives the received chunk (a commit queue, a wait for minSeq, an error message).
  const key = Buffer.from(body.subarray(3, keyEnd));
  if ((flags & ~WIRE_FLAG_IF_MOD_SEQ) !== 0) throw malformed(`${where()}: unknown flags 0x${flags.toString(16)}`);
  let at = keyEnd;
  let ifModSeq: number | undefined;
  if ((flags & WIRE_FLAG_IF_MOD_SEQ) !== 0) {
    if (at + 8 > body.length) throw malformed(`${where()}: ifModSeq runs past the frame's end`);
    ifModSeq = readU64(body, at);
    if (ifModSeq === undefined) throw malformed(`${where()}: ifModSeq is above 2^53 - 1`);
    at += 8;
  }
  if (type === WireFrameType.DELETE) {
    if (at !== body.length) throw malformed(`${where()}: ${body.length - at} bytes after the key`);
    return { type, id, key, ifModSeq };
  }
  return { type: WireFrameType.PUT, id, key, ifModSeq, value: Buffer.from(body.subarray(at)) };
}

export type WireAnswer =
  | { readonly type: typeof WireFrameType.READY; readonly id: number; readonly version: number; readonly inFlightMax: number; readonly frameBytesMax: number }
  | { readonly type: typeof WireFrameType.VALUE; readonly id: number; readonly seq: number; readonly createSeq: number; readonly modSeq: number; readonly version: number; readonly value: Buffer }
  | { readonly type: typeof WireFrameType.MISSING; readonly id: number; readonly seq: number }
  | { readonly type: typeof WireFrameType.WRITTEN; readonly id: number; readonly seq: number; readonly deleted: boolean }
  | { readonly type: typeof WireFrameType.ERROR; readonly id: number; readonly json: string }
  | { readonly type: typeof WireFrameType.GOAWAY; readonly id: number };

function u64(body: Buffer, at: number, where: string): number {
  const value = readU64(body, at);
  if (value === undefined) throw malformed(`${where}: a number above 2^53 - 1`);
  return value;
}

function exactly(body: Buffer, bytes: number, where: string): void {
  if (body.length !== bytes) throw malformed(`${where} is ${body.length} bytes, not ${bytes}`);
}

/** Decodes a node's frame (the client side); throws BAD_REQUEST for anything a node does not send. */
export function decodeAnswer(frame: WireFrame): WireAnswer {
  const { type, id, body } = frame;
  switch (type) {
    case WireFrameType.READY:
      exactly(body, 9, 'READY');
      return { type, id, version: body[0]!, inFlightMax: body.readUInt32BE(1), frameBytesMax: body.readUInt32BE(5) };
    case WireFrameType.VALUE:
      if (body.length < 32) throw malformed(`VALUE (id ${id}) is ${body.length} bytes; at least 32`);
      return {
        type,
        id,
        seq: u64(body, 0, 'VALUE'),
        createSeq: u64(body, 8, 'VALUE'),
        modSeq: u64(body, 16, 'VALUE'),
        version: u64(body, 24, 'VALUE'),
        value: Buffer.from(body.subarray(32)),
      };
    case WireFrameType.MISSING:
      exactly(body, 8, 'MISSING');
      return { type, id, seq: u64(body, 0, 'MISSING') };
    case WireFrameType.WRITTEN:
      exactly(body, 9, 'WRITTEN');
      return { type, id, seq: u64(body, 0, 'WRITTEN'), deleted: body[8] === 1 };
    case WireFrameType.ERROR:
      return { type, id, json: body.toString('utf8') };
    case WireFrameType.GOAWAY:
      return { type, id };
    default:
      throw malformed(`unknown frame type 0x${type.toString(16).padStart(2, '0')} from the node`);
  }
}

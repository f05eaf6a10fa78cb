/**
 * Server-to-client WebSocket frames built by hand (RFC 6455 section 5.2): byte 0 is FIN and the opcode, then the
 * payload length in 7, 16 or 64 bits, no mask (a server never masks). The fan-out frames an events message once and
 * writes the same bytes to every socket that shares it. Pure: no socket here (websocket.ts writes them).
 */

/** Opcodes of RFC 6455 section 5.2. */
export const Opcode = {
  CONTINUATION: 0x0,
  TEXT: 0x1,
  BINARY: 0x2,
  CLOSE: 0x8,
  PING: 0x9,
  PONG: 0xa,
} as const;

const FIN = 0x80;

/** One complete, unfragmented text frame around `payload` (UTF-8 text). */
export function textFrame(payload: Buffer): Buffer {
  return frame(FIN | Opcode.TEXT, payload);
}

/** The text frame that starts a fragmented message (FIN clear); `lastFragmentHeader` begins the frame that ends it. */
export function firstFragmentFrame(payload: Buffer): Buffer {
  return frame(Opcode.TEXT, payload);
}

/** A control frame (close, ping or pong): always FIN, payload at most 125 bytes (the caller's to ensure). */
export function controlFrame(opcode: number, payload: Buffer): Buffer {
  return frame(FIN | opcode, payload);
}

/**
 * The header alone of the continuation frame that ends a fragmented message of `length` payload bytes: written before
 * a payload shared by many sockets, so that each socket holds the payload itself rather than a framed copy of it.
 */
export function lastFragmentHeader(length: number): Buffer {
  return writeHeader(Buffer.allocUnsafe(headerBytesFor(length)), FIN | Opcode.CONTINUATION, length);
}

function headerBytesFor(length: number): number {
  return length < 126 ? 2 : length < 0x10000 ? 4 : 10;
}

function writeHeader(target: Buffer, firstByte: number, length: number): Buffer {
  target[0] = firstByte;
  if (length < 126) target[1] = length;
  else if (length < 0x10000) {
    target[1] = 126;
    target.writeUInt16BE(length, 2);
  } else {
    target[1] = 127;
    target.writeBigUInt64BE(BigInt(length), 2);
  }
  return target;
}

function frame(firstByte: number, payload: Buffer): Buffer {
  const headerBytes = headerBytesFor(payload.length);
  const frame = writeHeader(Buffer.allocUnsafe(headerBytes + payload.length), firstByte, payload.length);
  payload.copy(frame, headerBytes);
  return frame;
}

/** The payload of a frame made here (without a copy). */
export function framePayload(frame: Buffer): Buffer {
  return frame.subarray(frame[1] === 127 ? 10 : frame[1] === 126 ? 4 : 2);
}

/**
 * Server-to-client WebSocket text frames built by hand (RFC 6455 section 5.2): FIN set, opcode 1 (text), no mask,
 * payload length in 7, 16 or 64 bits. The fan-out frames an events message once and writes the same bytes to every
 * socket that shares it, instead of asking `ws` to measure and frame it again per socket. Pure: no socket here (the
 * adapter in hub.ts decides whether a frame can go straight on the TCP socket).
 */

/** One complete, unfragmented text frame around `payload` (UTF-8 text). */
export function textFrame(payload: Buffer): Buffer {
  const length = payload.length;
  const headerBytes = length < 126 ? 2 : length < 0x10000 ? 4 : 10;
  const frame = Buffer.allocUnsafe(headerBytes + length);
  frame[0] = 0x81;
  if (length < 126) frame[1] = length;
  else if (length < 0x10000) {
    frame[1] = 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 127;
    frame.writeBigUInt64BE(BigInt(length), 2);
  }
  payload.copy(frame, headerBytes);
  return frame;
}

/** The payload of a frame made by `textFrame` (without a copy). */
export function framePayload(frame: Buffer): Buffer {
  return frame.subarray(frame[1] === 127 ? 10 : frame[1] === 126 ? 4 : 2);
}

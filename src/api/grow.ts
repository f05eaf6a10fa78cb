/**
 * The one growth rule for buffers that gather a message from pieces a peer chose (a wire frame, a WebSocket message
 * of fragments): grown by doubling as bytes arrive, never beyond the message's limit, never allocated at a length a
 * peer merely announced. Doubling copies each byte a bounded number of times however the message is split, and holds
 * at most twice what was received (plus `minBytes`): a peer that announces a large message and sends a few bytes
 * costs what it sent, not what it announced.
 */

/**
 * A buffer of at least `neededBytes` (at most `maxBytes`) that starts with the first `filledBytes` of `held`: `held`
 * itself when it is large enough, else a new one.
 */
export function growBuffer(held: Buffer | undefined, filledBytes: number, neededBytes: number, maxBytes: number, minBytes: number): Buffer {
  if (held !== undefined && held.length >= neededBytes) return held;
  const grown = Buffer.allocUnsafeSlow(Math.min(maxBytes, Math.max(neededBytes, 2 * (held?.length ?? 0), minBytes)));
  held?.copy(grown, 0, 0, filledBytes);
  return grown;
}

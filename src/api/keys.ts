/**
 * Keys on the wire: their size rule, and how a key travels in a URL path (`/v1/kv/{key}`).
 *
 * In a URL path a key is percent-encoded bytes: `%ff` is the byte 0xff, other characters are their UTF-8 bytes. The
 * client escapes every byte that is not unreserved (`encodeKeyPath`), so any bytes survive; the node decodes with
 * `decodeKeyPath`, which also takes unescaped UTF-8 from hand-written URLs.
 */
import { MercuryError } from './errors.js';
import { KEY_BYTES_MAX, KEY_BYTES_MIN } from './limits.js';

/** Throws KEY_EMPTY or KEY_TOO_LARGE; `what` names the field in the message. */
export function validateKey(key: Buffer, what = 'key'): void {
  if (key.length < KEY_BYTES_MIN) throw new MercuryError('KEY_EMPTY', `${what} is empty; keys are 1 to ${KEY_BYTES_MAX} bytes`);
  if (key.length > KEY_BYTES_MAX)
    throw new MercuryError('KEY_TOO_LARGE', `${what} is ${key.length} bytes; keys are at most ${KEY_BYTES_MAX} bytes`, {
      details: { limit: KEY_BYTES_MAX },
    });
}

/**
 * Keys under this prefix are Mercury's own (today the token records of src/auth/): they travel through the log and
 * snapshots like any key, so every replica holds the same ones, but the KV API never serves them. A get, put or delete
 * of such a key is refused, a range or a watch skips them, and only the token routes (admin) write them. A NUL first
 * byte keeps them away from any text key.
 */
export const RESERVED_KEY_PREFIX: Buffer = Buffer.from('\u0000mercury/', 'latin1');

/** Whether `key` lies under `RESERVED_KEY_PREFIX`. */
export function isReservedKey(key: Buffer): boolean {
  return key.length >= RESERVED_KEY_PREFIX.length && key[0] === 0 && key.compare(RESERVED_KEY_PREFIX, 0, RESERVED_KEY_PREFIX.length, 0, RESERVED_KEY_PREFIX.length) === 0;
}

/** Whether [start, end) (empty end: unbounded) holds any reserved key. */
export function overlapsReserved(start: Buffer, end: Buffer): boolean {
  const reservedEnd = prefixEnd(RESERVED_KEY_PREFIX);
  return Buffer.compare(start, reservedEnd) < 0 && (end.length === 0 || Buffer.compare(end, RESERVED_KEY_PREFIX) > 0);
}

/**
 * [start, end) without the reserved keys, as at most two ranges in key order (empty end: unbounded): what a range read
 * or a watch snapshot of a wide prefix may serve.
 */
export function withoutReserved(start: Buffer, end: Buffer): { start: Buffer; end: Buffer }[] {
  if (!overlapsReserved(start, end)) return [{ start, end }];
  const reservedEnd = prefixEnd(RESERVED_KEY_PREFIX);
  const ranges: { start: Buffer; end: Buffer }[] = [];
  if (Buffer.compare(start, RESERVED_KEY_PREFIX) < 0) ranges.push({ start, end: RESERVED_KEY_PREFIX });
  if (end.length === 0 || Buffer.compare(end, reservedEnd) > 0) ranges.push({ start: Buffer.compare(start, reservedEnd) > 0 ? start : reservedEnd, end });
  return ranges;
}

/** The smallest key greater than every key that starts with `prefix`, or an empty buffer if there is none. */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.alloc(0);
}

/** Percent-encodes every byte of a key that is not unreserved, so any bytes survive the URL path. */
export function encodeKeyPath(key: Buffer): string {
  let path = '';
  for (const byte of key) {
    const char = String.fromCharCode(byte);
    path += /[A-Za-z0-9\-._~/]/.test(char) && byte < 0x80 ? char : `%${byte.toString(16).padStart(2, '0').toUpperCase()}`;
  }
  return path;
}

/** Decodes a percent-encoded URL path segment into bytes (not into a string: keys may be any bytes). */
export function decodeKeyPath(text: string): Buffer {
  if (!text.includes('%')) return Buffer.from(text, 'utf8');
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const char = text[i]!;
    if (char === '%') {
      const hex = text.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw new MercuryError('BAD_REQUEST', `malformed percent-encoding "%${hex}" in the key; write a byte as % and two hex digits (%25 for "%")`);
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      for (const byte of Buffer.from(char, 'utf8')) bytes.push(byte);
    }
  }
  return Buffer.from(bytes);
}

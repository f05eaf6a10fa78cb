/**
 * Keys and values are bytes; JSON and URLs are text. These helpers convert at the HTTP edge.
 *
 * - In a URL path, a key is percent-encoded bytes: `%ff` is the byte 0xff, other characters are their UTF-8 bytes.
 * - In JSON, a key or value is given as `key` (a UTF-8 string) or `keyBase64` (standard base64); responses say which
 *   with an explicit `encoding` field per item.
 */
import { isUtf8 } from 'node:buffer';
import { MercuryError } from '../errors/index.js';
import { KEY_BYTES_MAX, KEY_BYTES_MIN } from '../limits.js';

/** Decodes a percent-encoded URL path segment into bytes (not into a string: keys may be any bytes). */
export function decodePathBytes(text: string): Buffer {
  if (!text.includes('%')) return Buffer.from(text, 'utf8');
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const char = text[i]!;
    if (char === '%') {
      const hex = text.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw new MercuryError('BAD_REQUEST', `malformed percent-encoding "%${hex}" in the key`);
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      for (const byte of Buffer.from(char, 'utf8')) bytes.push(byte);
    }
  }
  return Buffer.from(bytes);
}

/** Encodes bytes for a JSON response: UTF-8 text when it is valid UTF-8, base64 otherwise. */
export function encodeJsonBytes(bytes: Buffer): { text: string; encoding: 'utf8' | 'base64' } {
  return isUtf8(bytes) ? { text: bytes.toString('utf8'), encoding: 'utf8' } : { text: bytes.toString('base64'), encoding: 'base64' };
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Reads a byte field from a JSON object: `name` as UTF-8 text or `nameBase64` as base64, exactly one of them.
 * Returns undefined when neither is present and the field is optional.
 */
export function readJsonBytes(object: Record<string, unknown>, name: string, path: string, required: boolean): Buffer | undefined {
  const text = object[name];
  const base64 = object[`${name}Base64`];
  if (text !== undefined && base64 !== undefined)
    throw new MercuryError('INVALID_ARGUMENT', `${path}: give either "${name}" or "${name}Base64", not both`);
  if (text !== undefined) {
    if (typeof text !== 'string') throw new MercuryError('INVALID_ARGUMENT', `${path}.${name} must be a string`);
    return Buffer.from(text, 'utf8');
  }
  if (base64 !== undefined) {
    if (typeof base64 !== 'string' || !BASE64.test(base64))
      throw new MercuryError('INVALID_ARGUMENT', `${path}.${name}Base64 must be a standard base64 string`);
    return Buffer.from(base64, 'base64');
  }
  if (required) throw new MercuryError('INVALID_ARGUMENT', `${path}: "${name}" (or "${name}Base64") is required`);
  return undefined;
}

/** Opaque pagination cursor: base64url of the last key returned. */
export function encodeCursor(key: Buffer): string {
  return key.toString('base64url');
}

export function decodeCursor(cursor: string): Buffer {
  const invalid = (): MercuryError =>
    new MercuryError('INVALID_ARGUMENT', 'cursor is not one this node returned; pass the "cursor" field of the previous page unchanged');
  if (!/^[A-Za-z0-9_-]+$/.test(cursor)) throw invalid();
  const key = Buffer.from(cursor, 'base64url');
  // A cursor is a key, so it is never longer than a key (and LMDB would throw on a start key beyond its own limit).
  if (key.length < KEY_BYTES_MIN || key.length > KEY_BYTES_MAX) throw invalid();
  return key;
}

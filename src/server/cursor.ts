/**
 * The opaque pagination cursor of range reads: base64url of the last key returned. Only a node reads it, so it is not
 * part of src/api/ (a client passes the `cursor` field of a page back unchanged).
 */
import { KEY_BYTES_MAX, KEY_BYTES_MIN, MercuryError } from '../api/index.js';

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

/**
 * Keys and values are bytes; JSON is text. This is the one rule for bytes in JSON, in both directions.
 *
 * Out (every response, watch message and formatted transaction): a field `name` with the text and `nameEncoding`:
 * - `utf8` when the bytes are valid UTF-8 without control characters other than tab, newline and carriage return:
 *   the text is the string itself;
 * - `base64` otherwise (standard base64).
 * Control characters choose base64 because JSON writes each as six characters (`\u0001`) where base64 grows the bytes
 * by 4/3 at most: a watch message holds a whole entry (up to ENTRY_BYTES_MAX), which must stay well below V8's largest
 * string (2^29 characters), and a range page of such values stays compact.
 *
 * In (transactions): `name` as UTF-8 text, or `name` with `nameEncoding` (`utf8` or `base64`, so anything the node
 * answered can be sent back as it is), or `nameBase64`; one form per field.
 */
import { isUtf8 } from 'node:buffer';
import { MercuryError } from './errors.js';

export type BytesEncoding = 'utf8' | 'base64';

/**
 * Whether `bytes` hold a control character that JSON escapes as \u00XX (U+0000-U+001F but tab, newline and carriage
 * return). In UTF-8 each is a single byte below 0x20, which never occurs inside a multi-byte character, so the bytes
 * are checked as they are: a value full of them goes to base64 without being decoded to text first.
 */
function hasControlByte(bytes: Buffer): boolean {
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]!;
    if (byte < 0x20 && byte !== 0x09 && byte !== 0x0a && byte !== 0x0d) return true;
  }
  return false;
}

/** The text and encoding of bytes in JSON (see the rule above). */
export function encodeJsonBytes(bytes: Buffer): { text: string; encoding: BytesEncoding } {
  if (!hasControlByte(bytes) && isUtf8(bytes)) return { text: bytes.toString('utf8'), encoding: 'utf8' };
  return { text: bytes.toString('base64'), encoding: 'base64' };
}

const BASE64_ALPHABET = /^[A-Za-z0-9+/]*$/;

/**
 * Whether `text` is standard base64 with its padding: the only base64 the API reads or writes. Not one regular
 * expression of groups of four: V8 ran out of stack matching one over about 4.47 million characters (a value of some
 * 3.2 MiB), which threw RangeError out of every watch client given such a value and answered 500 to such a
 * transaction (audit, 2026-12-06). The length, the padding, then one character class.
 */
export function isStandardBase64(text: string): boolean {
  if (text.length % 4 !== 0) return false;
  const padding = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
  return BASE64_ALPHABET.test(padding === 0 ? text : text.slice(0, text.length - padding));
}

function decodeBase64(text: unknown, field: string): Buffer {
  if (typeof text !== 'string' || !isStandardBase64(text)) throw new MercuryError('INVALID_ARGUMENT', `${field} must be a standard base64 string`);
  return Buffer.from(text, 'base64');
}

/**
 * The bytes of a field as a node wrote it (`text` with `encoding` `utf8` or `base64`, the rule above), for clients
 * reading answers and watch messages; undefined when `text` is not a string, the encoding is neither, or base64 text
 * is not standard base64 (which Buffer.from would decode leniently, dropping what it does not understand).
 */
export function decodeJsonBytes(text: unknown, encoding: unknown): Buffer | undefined {
  if (typeof text !== 'string') return undefined;
  if (encoding === 'utf8') return Buffer.from(text, 'utf8');
  if (encoding === 'base64' && isStandardBase64(text)) return Buffer.from(text, 'base64');
  return undefined;
}

/**
 * Reads a byte field of a JSON object in any of the forms above, exactly one of them. `path` names the object in
 * errors. Returns undefined when the field is absent and optional.
 */
export function readJsonBytes(object: Record<string, unknown>, name: string, path: string, required: boolean): Buffer | undefined {
  const text = object[name];
  const encoding = object[`${name}Encoding`];
  const base64 = object[`${name}Base64`];
  if (text !== undefined && base64 !== undefined)
    throw new MercuryError('INVALID_ARGUMENT', `${path}: give either "${name}" or "${name}Base64", not both`);
  if (encoding !== undefined && text === undefined)
    throw new MercuryError('INVALID_ARGUMENT', `${path}: "${name}Encoding" is given without "${name}"`);
  if (text !== undefined) {
    if (typeof text !== 'string') throw new MercuryError('INVALID_ARGUMENT', `${path}.${name} must be a string`);
    if (encoding === undefined || encoding === 'utf8') return Buffer.from(text, 'utf8');
    if (encoding === 'base64') return decodeBase64(text, `${path}.${name} (${name}Encoding "base64")`);
    throw new MercuryError('INVALID_ARGUMENT', `${path}.${name}Encoding must be "utf8" or "base64"`);
  }
  if (base64 !== undefined) return decodeBase64(base64, `${path}.${name}Base64`);
  if (required) throw new MercuryError('INVALID_ARGUMENT', `${path}: "${name}" (or "${name}Base64") is required`);
  return undefined;
}

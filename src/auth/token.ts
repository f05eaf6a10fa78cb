/**
 * Bearer tokens: their text format, how they are made, and how a node checks one.
 *
 * ```
 * token  = "mcy_" id "_" secret          64 characters in all
 * id     = 16 lowercase hex characters     8 random bytes; public: names the token in lists, logs and revocations
 * secret = 43 base64url characters         32 random bytes (256 bits); shown once, at creation
 * ```
 *
 * A node stores only `SHA-256(secret)` (records.ts). A fast hash is enough, and a slow KDF (scrypt, argon2) would buy
 * nothing: those exist to slow down guessing a low-entropy password from its hash, and a 256-bit random secret cannot
 * be guessed however fast the hash. A slow KDF would instead cost tens of milliseconds of CPU on every request, which
 * any client could use to exhaust the node. The comparison is constant-time.
 *
 * The fixed shape lets a node refuse a malformed token with a regular expression, before any lookup or hashing.
 */
import { createHash, hash, randomBytes, timingSafeEqual } from 'node:crypto';

export const TOKEN_PREFIX = 'mcy_';
export const TOKEN_ID_CHARS = 16;
export const TOKEN_SECRET_BYTES = 32;
/** `TOKEN_PREFIX` + id + "_" + base64url of the secret. */
export const TOKEN_CHARS = TOKEN_PREFIX.length + TOKEN_ID_CHARS + 1 + 43;
/**
 * The longest Authorization header a node reads: "Bearer " and a token fit with room to spare. Anything longer is
 * refused before it is parsed (node:http alone would accept 16 KiB of headers).
 */
export const AUTHORIZATION_HEADER_CHARS_MAX = 256;

const TOKEN_PATTERN = /^mcy_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const ID_PATTERN = /^[0-9a-f]{16}$/;

export interface ParsedToken {
  readonly id: string;
  readonly secret: string;
}

/** A new token, its id and the hex SHA-256 of its secret (the only part a node keeps). */
export function generateToken(): { token: string; id: string; secretSha256: string } {
  const id = randomBytes(TOKEN_ID_CHARS / 2).toString('hex');
  const secret = randomBytes(TOKEN_SECRET_BYTES).toString('base64url');
  return { token: `${TOKEN_PREFIX}${id}_${secret}`, id, secretSha256: hashSecret(secret) };
}

/** The id and secret of a well-formed token, or undefined. */
export function parseToken(text: string): ParsedToken | undefined {
  if (text.length !== TOKEN_CHARS) return undefined;
  const match = TOKEN_PATTERN.exec(text);
  return match === null ? undefined : { id: match[1]!, secret: match[2]! };
}

export function isTokenId(text: string): boolean {
  return ID_PATTERN.test(text);
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** Whether `secret` hashes to `secretSha256`, compared in constant time. */
export function secretMatches(secret: string, secretSha256: string): boolean {
  const expected = Buffer.from(secretSha256, 'hex');
  // Once per request on a node with auth: the one-shot `hash` costs half of a createHash object (2.7 against 5.3 µs).
  const actual = hash('sha256', secret, 'buffer');
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

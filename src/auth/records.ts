/**
 * Token records: how tokens live in the reserved key space, so that they travel through the log and snapshots like
 * any key and every replica enforces the same tokens as soon as it has applied the entry that made or revoked them.
 *
 * ```
 * key   = "\u0000mercury/auth/token/" id            (RESERVED_KEY_PREFIX of src/api/keys.ts, then "auth/token/")
 * value = UTF-8 JSON {"v":1,"name","scopes":[...],"createdMs", optionally "expiresMs", and exactly one of
 *           "secretSha256": hex SHA-256 of the secret   a bearer token
 *           "subject": text                              a grant to the client certificate whose subject CN is this }
 * expiresMs = absolute Unix ms after which the token authenticates nothing (absent: it never expires); each node
 *             judges it by its own clock (decision 61). A build before expiry refuses the field (strict field list):
 *             there the record is unreadable, so the token authenticates nothing on it (fails closed).
 *
 * key   = "\u0000mercury/auth/name/" name          the name index: one per token or grant created since it exists
 * value = the id of the token that has the name (latin1)
 * ```
 *
 * Creating a token is a put of its record and of its name's index key, with a compare that the index key is absent (or
 * still what the creating node read: see admin.ts), so that the root, which applies creates one after another, refuses
 * the second of two creates of one name; revoking it deletes both. The secret itself is never stored; the
 * records are readable only by admins (in `/v1/log`) and by whoever can read the data directory (0700).
 */
import { RESERVED_KEY_PREFIX } from '../api/index.js';
import { isTokenId } from './token.js';
import { formatScopes, parseScopes, type Scopes } from './scopes.js';

export const TOKEN_KEY_PREFIX: Buffer = Buffer.concat([RESERVED_KEY_PREFIX, Buffer.from('auth/token/', 'latin1')]);
/** The name index: which token has each name (admin.ts keeps names unique with it). Not read by the registry. */
export const TOKEN_NAME_KEY_PREFIX: Buffer = Buffer.concat([RESERVED_KEY_PREFIX, Buffer.from('auth/name/', 'latin1')]);
export const TOKEN_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}$/;
/** A certificate subject (CN) as a grant names it: printable, at most this long. */
export const SUBJECT_CHARS_MAX = 256;
/**
 * How long a token may be made to live (`expiresInMs` of a create): at least a second (less is a typo, or a token
 * that expires before its creation is applied), at most about ten years (3650 days; longer is "never", which is the
 * default). The record holds the absolute time the creating node computed from its clock.
 */
export const TOKEN_EXPIRES_IN_MS_MIN = 1000;
export const TOKEN_EXPIRES_IN_MS_MAX = 3650 * 24 * 60 * 60 * 1000;
/** A record larger than this is not a token record (scopes and name are bounded far below it). */
export const TOKEN_RECORD_BYTES_MAX = 96 * 1024;

export interface TokenRecord {
  readonly id: string;
  readonly name: string;
  readonly scopes: Scopes;
  readonly createdMs: number;
  /** Absolute Unix ms from which the token authenticates nothing; undefined: it never expires. */
  readonly expiresMs?: number | undefined;
  /** Hex SHA-256 of the secret, for a bearer token. */
  readonly secretSha256: string | undefined;
  /** The certificate subject (CN) of a grant. */
  readonly subject: string | undefined;
}

export function tokenKey(id: string): Buffer {
  return Buffer.concat([TOKEN_KEY_PREFIX, Buffer.from(id, 'latin1')]);
}

export function tokenNameKey(name: string): Buffer {
  return Buffer.concat([TOKEN_NAME_KEY_PREFIX, Buffer.from(name, 'latin1')]);
}

/** The name of a name index key, or undefined for another key. */
export function tokenNameOfKey(key: Buffer): string | undefined {
  if (key.length <= TOKEN_NAME_KEY_PREFIX.length || key.compare(TOKEN_NAME_KEY_PREFIX, 0, TOKEN_NAME_KEY_PREFIX.length, 0, TOKEN_NAME_KEY_PREFIX.length) !== 0) return undefined;
  const name = key.subarray(TOKEN_NAME_KEY_PREFIX.length).toString('latin1');
  return TOKEN_NAME_PATTERN.test(name) ? name : undefined;
}

/** The id of a token key, or undefined for another key. */
export function tokenIdOfKey(key: Buffer): string | undefined {
  if (key.length !== TOKEN_KEY_PREFIX.length + 16 || key.compare(TOKEN_KEY_PREFIX, 0, TOKEN_KEY_PREFIX.length, 0, TOKEN_KEY_PREFIX.length) !== 0) return undefined;
  const id = key.subarray(TOKEN_KEY_PREFIX.length).toString('latin1');
  return isTokenId(id) ? id : undefined;
}

export function isValidSubject(subject: unknown): subject is string {
  // eslint-disable-next-line no-control-regex -- control characters have no place in a certificate subject
  return typeof subject === 'string' && subject.length > 0 && subject.length <= SUBJECT_CHARS_MAX && !/[\u0000-\u001f\u007f]/.test(subject);
}

export function encodeTokenRecord(record: TokenRecord): Buffer {
  const json: Record<string, unknown> = { v: 1, name: record.name, scopes: formatScopes(record.scopes), createdMs: record.createdMs };
  if (record.expiresMs !== undefined) json.expiresMs = record.expiresMs;
  if (record.secretSha256 !== undefined) json.secretSha256 = record.secretSha256;
  if (record.subject !== undefined) json.subject = record.subject;
  return Buffer.from(JSON.stringify(json), 'utf8');
}

/** The record under `key`, or a reason why `value` is not a valid one. */
export function decodeTokenRecord(key: Buffer, value: Buffer): TokenRecord | string {
  const id = tokenIdOfKey(key);
  if (id === undefined) return 'not a token key';
  if (value.length > TOKEN_RECORD_BYTES_MAX) return `record is ${value.length} bytes; at most ${TOKEN_RECORD_BYTES_MAX}`;
  let json: unknown;
  try {
    json = JSON.parse(value.toString('utf8'));
  } catch {
    return 'record is not JSON';
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return 'record is not an object';
  const fields = json as Record<string, unknown>;
  for (const name of Object.keys(fields)) if (!['v', 'name', 'scopes', 'createdMs', 'expiresMs', 'secretSha256', 'subject'].includes(name)) return `unknown field ${name}`;
  if (fields.v !== 1) return 'record version is not 1';
  if (typeof fields.name !== 'string' || !TOKEN_NAME_PATTERN.test(fields.name)) return 'bad name';
  if (typeof fields.createdMs !== 'number' || !Number.isSafeInteger(fields.createdMs) || fields.createdMs < 0) return 'bad createdMs';
  const expiresMs = fields.expiresMs;
  if (expiresMs !== undefined && (typeof expiresMs !== 'number' || !Number.isSafeInteger(expiresMs) || expiresMs <= fields.createdMs))
    return 'bad expiresMs (an integer of Unix ms after createdMs)';
  if (!Array.isArray(fields.scopes)) return 'scopes is not an array';
  let scopes: Scopes;
  try {
    scopes = parseScopes(fields.scopes as unknown[]);
  } catch (error) {
    return (error as Error).message;
  }
  const hasSecret = fields.secretSha256 !== undefined;
  const hasSubject = fields.subject !== undefined;
  if (hasSecret === hasSubject) return 'a record has exactly one of secretSha256 and subject';
  if (hasSecret && (typeof fields.secretSha256 !== 'string' || !/^[0-9a-f]{64}$/.test(fields.secretSha256))) return 'secretSha256 is not 64 hex characters';
  if (hasSubject && !isValidSubject(fields.subject)) return `subject is not 1 to ${SUBJECT_CHARS_MAX} printable characters`;
  return {
    id,
    name: fields.name,
    scopes,
    createdMs: fields.createdMs,
    ...(expiresMs === undefined ? {} : { expiresMs }),
    secretSha256: hasSecret ? (fields.secretSha256 as string) : undefined,
    subject: hasSubject ? (fields.subject as string) : undefined,
  };
}

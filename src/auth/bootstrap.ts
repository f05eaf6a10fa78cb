/**
 * The first admin token of a root. A root that holds no token at all when it starts with auth required makes one
 * admin token, so that someone can create the others: the token of `--admin-token-file` if given (the operator's
 * secret, from a secret store), else a new one written to `<data dir>/admin-token`, mode 0600, the secret in the
 * clear (the directory is 0700: whoever can read it could read the data anyway).
 *
 * "Holds no token" rather than "first start": a root whose every token was revoked gets a fresh bootstrap token at
 * its next start, so an operator with access to the data directory can always get back in.
 */
import { join } from 'node:path';
import { MercuryError, type Txn } from '../api/index.js';
import { readFileBounded, SMALL_FILE_BYTES_MAX, type SecretFileWarn } from '../fs/bounded-read.js';
import { writeFileDurably } from '../fs/durable.js';
import { encodeTokenRecord, tokenKey, tokenNameKey, type TokenRecord } from './records.js';
import { generateToken, hashSecret, parseToken, TOKEN_CHARS } from './token.js';

export const BOOTSTRAP_TOKEN_FILE = 'admin-token';
export const BOOTSTRAP_TOKEN_NAME = 'admin';

/**
 * Reads a token from a file (surrounding whitespace ignored); CONFIG_INVALID if it is not a well-formed token. `warn`
 * is told if the file's permissions let others read the secret (src/fs/bounded-read.ts).
 */
export function readTokenFile(path: string, what: string, warn?: SecretFileWarn): string {
  const text = tokenFileText(readFileBounded(path, { what, bytesMax: SMALL_FILE_BYTES_MAX, secret: warn }), what, path);
  if (text === '') throw new MercuryError('CONFIG_INVALID', `${what} ${path} is empty; put the token in it (${TOKEN_CHARS} characters, mcy_..., as mercury token create prints it)`);
  if (parseToken(text) === undefined) throw new MercuryError('CONFIG_INVALID', `${what} ${path} does not hold a token (${TOKEN_CHARS} characters, mcy_...; make one with mercury token create)`);
  return text;
}

/**
 * A token file's text, whitespace around it dropped. A file of several lines is refused naming their count and the
 * token's place, line 1: it said only "does not hold a token", and the operator could not tell a bad token from a
 * token followed by a note, or a note above the token (audit, 2026-12-06). The lines' text is never shown: a secret.
 */
export function tokenFileText(bytes: Buffer, what: string, path: string): string {
  const text = bytes.toString('utf8').trim();
  const lines = text.split(/\r\n|\r|\n/);
  if (lines.length > 1) {
    const first = lines[0]!.trim();
    const fix = parseToken(first) === undefined ? 'line 1 is not a token: put the token there, alone' : 'line 1 is a token: remove the lines after it';
    throw new MercuryError(
      'CONFIG_INVALID',
      `${what} ${path} has ${lines.length} lines; a token file holds the token alone, on line 1 (${TOKEN_CHARS} characters, mcy_..., as mercury token create prints it), and ${fix}`,
      { details: { path, lines: lines.length } },
    );
  }
  return text;
}

/** The admin token to register, its write, and where its secret is (the file the operator gave, or the one to write). */
export function bootstrapAdmin(
  dataDir: string,
  adminTokenFile: string | undefined,
  nowMs: number,
  warn?: SecretFileWarn,
): { token: string; request: Txn; path: string; generated: boolean } {
  let token: string;
  let secretSha256: string;
  let id: string;
  if (adminTokenFile !== undefined) {
    token = readTokenFile(adminTokenFile, '--admin-token-file', warn);
    const parsed = parseToken(token)!;
    id = parsed.id;
    secretSha256 = hashSecret(parsed.secret);
  } else ({ token, id, secretSha256 } = generateToken());
  const record: TokenRecord = { id, name: BOOTSTRAP_TOKEN_NAME, scopes: { read: [], write: [], admin: true, replicate: false }, createdMs: nowMs, secretSha256, subject: undefined };
  const key = tokenKey(id);
  return {
    token,
    // With its name's index key, as every create (admin.ts): no token exists, so any index key left is stale.
    request: {
      compares: [],
      success: [
        { type: 'put', key, value: encodeTokenRecord(record) },
        { type: 'put', key: tokenNameKey(record.name), value: Buffer.from(id, 'latin1') },
      ],
      failure: [],
    },
    path: adminTokenFile ?? join(dataDir, BOOTSTRAP_TOKEN_FILE),
    generated: adminTokenFile === undefined,
  };
}

/**
 * Writes the token to `path` with mode 0600, whole and durably (src/fs/durable.ts), before the root registers it: a
 * token the root holds whose secret never reached the file would lock every operator out, since a root that holds a
 * token never makes another. DATA_DIR_INVALID naming the file if it cannot be written (STORAGE_FULL if its disk is full);
 * nothing is registered then.
 */
export function writeTokenFile(path: string, token: string): void {
  try {
    writeFileDurably(path, `${token}\n`, 0o600);
  } catch (error) {
    throw new MercuryError(
      error instanceof MercuryError && error.code === 'STORAGE_FULL' ? 'STORAGE_FULL' : 'DATA_DIR_INVALID',
      `the bootstrap admin token could not be written to ${path} (${(error as Error).message}), so none was registered: make the file writable (remove whatever is at that path, free some space) and start again, or give --admin-token-file`,
      { cause: error },
    );
  }
}

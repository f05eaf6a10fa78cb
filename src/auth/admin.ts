/**
 * Token management as writes: creating a token is a put of its record, revoking it a delete of its key (records.ts).
 * The token routes build these requests; they go through the node's write path like any write (a replica forwards
 * them toward the root with the caller's token), and the root checks them again in `validateReservedOps`.
 */
import { isReservedKey, MercuryError, type Txn } from '../api/index.js';
import {
  decodeTokenRecord,
  encodeTokenRecord,
  isValidSubject,
  SUBJECT_CHARS_MAX,
  TOKEN_EXPIRES_IN_MS_MAX,
  TOKEN_EXPIRES_IN_MS_MIN,
  TOKEN_NAME_PATTERN,
  tokenIdOfKey,
  tokenKey,
  tokenNameKey,
  tokenNameOfKey,
  type TokenRecord,
} from './records.js';
import { formatScopes, parseScopes } from './scopes.js';
import { generateToken, isTokenId } from './token.js';

export interface CreateTokenInput {
  readonly name: unknown;
  readonly scopes: unknown;
  /** A grant to a client certificate's subject (CN) instead of a bearer token. */
  readonly subject?: unknown;
  /** Milliseconds from now after which it authenticates nothing; absent: it never expires. */
  readonly expiresInMs?: unknown;
}

/** What a token list shows: never the secret, nor its hash. */
export function tokenInfo(record: TokenRecord): Record<string, unknown> {
  return {
    id: record.id,
    name: record.name,
    scopes: formatScopes(record.scopes),
    createdMs: record.createdMs,
    ...(record.expiresMs === undefined ? {} : { expiresMs: record.expiresMs }),
    kind: record.subject === undefined ? 'token' : 'certificate',
    ...(record.subject === undefined ? {} : { subject: record.subject }),
  };
}

/**
 * TOKEN_NAME_TAKEN: `holder` (when this node knows it) has `name`. The audit log records who wrote each op by name
 * (src/auth/guard.ts): two live tokens of one name could not be told apart there, which is what the log is for.
 */
export function tokenNameTaken(name: string, holder: TokenRecord | undefined): MercuryError {
  const what = holder === undefined ? 'another token was created' : `${holder.subject === undefined ? 'token' : 'grant'} ${holder.id} is already named`;
  const revoke = holder === undefined ? 'list the tokens (mercury token list) and revoke that one first' : `revoke that one first (mercury token revoke ${holder.id})`;
  return new MercuryError(
    'TOKEN_NAME_TAKEN',
    `${what} "${name}"; the audit log records a token's name, so two of one name could not be told apart there: choose another name (${name}-2, say), or ${revoke}`,
    holder === undefined ? undefined : { details: { id: holder.id } },
  );
}

/**
 * Validates the input and makes the record and its write; `token` is the secret to show once (none for a grant).
 * `existing`: the tokens this node knows; a grant to a subject one of them already names is refused, since a subject
 * named twice authenticates nothing (registry.ts). That rule, not this check, is what holds when two admins race, or
 * when such records arrive through the log from an older root.
 *
 * Names: `existing` is searched first (it sees tokens created before the name index existed, which have no index
 * key), then the name's index key as `read` (this node's store) has it, and the write itself carries the check: it
 * puts the index key with a compare that the key is as read: absent, or still naming a token that no longer has the
 * name (deleted through a raw transaction, or renamed). The root applies writes one after another, so of two creates
 * of one name racing (two admins, through one node or two replicas) the second fails its compare: before, both were
 * checked only against what the serving node knew, and both were committed. The index names its token from the
 * store, not from `existing`: the store has an entry a moment before the registry has applied it.
 */
export function createTokenRequest(
  input: CreateTokenInput,
  nowMs: number,
  existing: readonly TokenRecord[],
  read: ReadKey = () => undefined,
): { request: Txn; record: TokenRecord; token: string | undefined } {
  if (typeof input.name !== 'string' || !TOKEN_NAME_PATTERN.test(input.name))
    throw new MercuryError('INVALID_ARGUMENT', 'name must be 1 to 64 characters: letters, digits and . _ @ : - (starting with a letter or digit)');
  if (!Array.isArray(input.scopes)) throw new MercuryError('INVALID_ARGUMENT', 'scopes must be an array of read:PREFIX, write:PREFIX, replicate, admin');
  const scopes = parseScopes(input.scopes as unknown[]);
  if (input.subject !== undefined && !isValidSubject(input.subject))
    throw new MercuryError('INVALID_ARGUMENT', `subject must be 1 to ${SUBJECT_CHARS_MAX} printable characters (a certificate's subject CN)`);
  const expiresInMs = input.expiresInMs;
  if (expiresInMs !== undefined && (typeof expiresInMs !== 'number' || !Number.isSafeInteger(expiresInMs) || expiresInMs < TOKEN_EXPIRES_IN_MS_MIN || expiresInMs > TOKEN_EXPIRES_IN_MS_MAX))
    throw new MercuryError(
      'INVALID_ARGUMENT',
      `expiresInMs must be an integer number of milliseconds from ${TOKEN_EXPIRES_IN_MS_MIN} (1 s) to ${TOKEN_EXPIRES_IN_MS_MAX} (3650 days); leave it out for a token that never expires`,
      { details: { min: TOKEN_EXPIRES_IN_MS_MIN, max: TOKEN_EXPIRES_IN_MS_MAX } },
    );
  const subject = input.subject;
  const granted = subject === undefined ? undefined : existing.find((record) => record.subject === subject);
  if (granted !== undefined)
    throw new MercuryError(
      'SUBJECT_ALREADY_GRANTED',
      `grant ${granted.id} ("${granted.name}") already names the certificate subject "${subject}"; a subject named by two grants authenticates as neither: revoke that one first (mercury token revoke ${granted.id}), then create this one`,
      { details: { id: granted.id } },
    );
  const named = existing.find((record) => record.name === input.name);
  if (named !== undefined) throw tokenNameTaken(input.name, named);
  const generated = generateToken();
  const record: TokenRecord = {
    id: generated.id,
    name: input.name,
    scopes,
    createdMs: nowMs,
    expiresMs: expiresInMs === undefined ? undefined : nowMs + expiresInMs,
    secretSha256: subject === undefined ? generated.secretSha256 : undefined,
    subject,
  };
  const key = tokenKey(record.id);
  const nameKey = tokenNameKey(record.name);
  const nameIndex = read(nameKey);
  const holder = nameIndex === undefined ? undefined : indexedHolder(nameIndex, record.name, read);
  if (holder !== undefined) throw tokenNameTaken(record.name, holder);
  return {
    request: {
      compares: [
        // Only if the id is new: 64 random bits will not collide, but a put must never replace another token's record.
        { key, target: 'exists', exists: false },
        nameIndex === undefined ? { key: nameKey, target: 'exists', exists: false } : { key: nameKey, target: 'value', operator: '=', value: nameIndex },
      ],
      success: [
        { type: 'put', key, value: encodeTokenRecord(record) },
        { type: 'put', key: nameKey, value: Buffer.from(record.id, 'latin1') },
      ],
      failure: [],
    },
    record,
    token: subject === undefined ? generated.token : undefined,
  };
}

/** A key's value in this node's store (what the name index is read with), undefined if there is none. */
export type ReadKey = (key: Buffer) => Buffer | undefined;

/** The token id a name index key's value holds (written by createTokenRequest and bootstrapAdmin). */
function indexedId(nameIndex: Buffer): string {
  return nameIndex.toString('latin1');
}

/** The token a name index key's value names, if its record (as `read` has it) still has that name. */
function indexedHolder(nameIndex: Buffer, name: string, read: ReadKey): TokenRecord | undefined {
  const id = indexedId(nameIndex);
  if (!isTokenId(id)) return undefined;
  const value = read(tokenKey(id));
  const record = value === undefined ? undefined : decodeTokenRecord(tokenKey(id), value);
  return record !== undefined && typeof record !== 'string' && record.name === name ? record : undefined;
}

/**
 * The name of token `id` (one of `existing`) when its name's index key names it, as `read` has it: what its revoke
 * deletes with the record (revokeTokenRequest). Undefined for a token made before the index, whose name another token
 * may have been given since.
 */
export function indexedName(id: string, existing: readonly TokenRecord[], read: ReadKey): string | undefined {
  const name = existing.find((record) => record.id === id)?.name;
  const nameIndex = name === undefined ? undefined : read(tokenNameKey(name));
  return nameIndex !== undefined && indexedId(nameIndex) === id ? name : undefined;
}

/**
 * Deletes a token's record if it exists (the result's `succeeded` says whether it did), and its name's index key when
 * `name` is given (indexedName: the index names this token). `keptAdminId`: another admin record that must still exist for the
 * delete to happen (adminKeptAfter), so that two admins revoking the last two admin tokens at once cannot both succeed.
 */
export function revokeTokenRequest(id: string, keptAdminId?: string, name?: string): Txn {
  const key = tokenKey(id);
  const compares: Txn['compares'] = [
    { key, target: 'exists', exists: true },
    ...(keptAdminId === undefined ? [] : [{ key: tokenKey(keptAdminId), target: 'exists' as const, exists: true }]),
  ];
  return { compares, success: [{ type: 'delete', key }, ...(name === undefined ? [] : [{ type: 'delete' as const, key: tokenNameKey(name) }])], failure: [] };
}

/**
 * An admin record that keeps token management possible: one that does not expire. An expiring one would keep it only
 * until then, and a root registers a new bootstrap admin token only when it holds no token at all (decision 61).
 */
function lastingAdmin(record: TokenRecord): boolean {
  return record.scopes.admin && record.expiresMs === undefined;
}

/**
 * The admin record that keeps token management possible once `id` is revoked: undefined when `id` is not an admin
 * record that does not expire; LAST_ADMIN_TOKEN when it is the only one. Without that refusal an admin could revoke the last admin token
 * while other tokens remain, and no one could create or revoke a token again: a root registers a bootstrap admin
 * token at start only when it holds no token at all (audit, 2026-12-06). A bearer token is preferred to a grant.
 */
export function adminKeptAfter(id: string, existing: readonly TokenRecord[]): string | undefined {
  const target = existing.find((record) => record.id === id);
  if (target === undefined || !lastingAdmin(target)) return undefined;
  const others = existing.filter((record) => record.id !== id && lastingAdmin(record));
  const kept = others.find((record) => record.secretSha256 !== undefined) ?? others[0];
  if (kept === undefined)
    throw new MercuryError(
      'LAST_ADMIN_TOKEN',
      `token ${id} ("${target.name}") is the only admin token left that does not expire: without it no one could create or revoke tokens (once any others expire). Create another first (mercury token create NAME --scope admin, without --expires-in), then revoke this one`,
      { details: { id } },
    );
  return kept.id;
}

/**
 * A transaction on token records (POST /v1/txn: an admin's own, or token management a replica forwarded) must leave an
 * admin record in each branch, where one existed: the token routes refuse the last admin's revocation
 * (adminKeptAfter), and a delete or a narrowing put of it sent as a raw transaction must not do what they refuse.
 * Throws LAST_ADMIN_TOKEN.
 */
export function requireAdminKept(txn: Txn, existing: readonly TokenRecord[]): void {
  const admins = existing.filter(lastingAdmin).map((record) => record.id);
  if (admins.length === 0) return;
  for (const ops of [txn.success, txn.failure]) {
    const left = new Set(admins);
    for (const op of ops) {
      if (op.type === 'deleteRange') continue; // never over the reserved key space (requireWriteRange)
      const id = tokenIdOfKey(op.key);
      if (id === undefined) continue;
      const record = op.type === 'put' ? decodeTokenRecord(op.key, op.value) : undefined;
      if (record !== undefined && typeof record !== 'string' && lastingAdmin(record)) left.add(id);
      else left.delete(id);
    }
    if (left.size === 0)
      throw new MercuryError(
        'LAST_ADMIN_TOKEN',
        `this transaction would leave no admin token that does not expire (it removes, narrows or makes expire ${admins.join(', ')}): without one no one could create or revoke tokens. Create another admin token first (mercury token create NAME --scope admin)`,
        { details: { ids: admins } },
      );
  }
}

/**
 * The token names a transaction on token records gives (POST /v1/txn: an admin's own, or token management a replica
 * forwarded), checked in each branch against the tokens this node knows (`existing`) and its store (`read`):
 *
 * - TOKEN_NAME_TAKEN for a put of a record under a name another live token or grant has, or two records of one name.
 *   A create through the token API checks names itself (createTokenRequest); a replica of a version from before unique
 *   names forwards its creates as raw records: measured, a root of this version committed a second token of a taken
 *   name sent so, during an upgrade (audit, 2026-12-07).
 * - INVALID_ARGUMENT for a put that gives a record a name it did not have (a create or a rename) without keeping the
 *   name index as a create does (decision 57): in the success branch, the same transaction puts the new name's index
 *   key with the record's id and compares that key (absent, or `=` the value read), and deletes the old name's key
 *   where it names this token. That compare is what makes two writes of one name at once fail one of them at the
 *   root, which applies writes one after another; the check against `existing` alone let both commit. And a rename
 *   left the old name's key naming the token, and the new name unguarded.
 *
 * - INVALID_ARGUMENT for a delete of a token record whose name's index key names it (as the branch leaves that key,
 *   or the store has it) without deleting that key in the same branch, as a revoke does (revokeTokenRequest,
 *   indexedName): the key was left behind, litter a create took as free (audit, 2026-12-07).
 *
 * A put that keeps a record's own name (a change of scopes or secret) needs neither, so tokens made before the index,
 * and two tokens that already share a name (made by such a version), can still be changed and revoked; so does a
 * delete of a token whose name's key is absent or names another token (an index key no longer naming a live token is
 * taken as free by a create). Range deletes never reach the reserved key space (requireWriteRange).
 */
export function requireNamesKept(txn: Txn, existing: readonly TokenRecord[], read: ReadKey): void {
  const compared = new Set(
    txn.compares
      .filter((compare) => compare.target === 'exists' ? !compare.exists : compare.target === 'value' && compare.operator === '=')
      .map((compare) => tokenNameOfKey(compare.key))
      .filter((name) => name !== undefined),
  );
  for (const [branch, ops] of [
    ['success', txn.success],
    ['failure', txn.failure],
  ] as const) {
    const live = new Map(existing.map((record) => [record.id, record.name]));
    // What each name's index key holds once the branch is applied: the id put last, or null once deleted.
    const indexed = new Map<string, string | null>();
    for (const op of ops) {
      const name = op.type === 'deleteRange' ? undefined : tokenNameOfKey(op.key);
      if (name !== undefined) indexed.set(name, op.type === 'put' ? indexedId(op.value) : null);
    }
    /** Whether `name`'s index key names token `id` as the branch leaves it (or as the store has it, if the branch does not write it). */
    const namesToken = (name: string | undefined, id: string): boolean => {
      if (name === undefined) return false;
      if (indexed.has(name)) return indexed.get(name) === id;
      const stored = read(tokenNameKey(name));
      return stored !== undefined && indexedId(stored) === id;
    };
    ops.forEach((op, index) => {
      if (op.type === 'deleteRange') return; // never over the reserved key space (requireWriteRange)
      const id = tokenIdOfKey(op.key);
      if (id === undefined) return;
      const record = op.type === 'put' ? decodeTokenRecord(op.key, op.value) : undefined;
      const before = live.get(id);
      if (record === undefined || typeof record === 'string') {
        live.delete(id);
        if (namesToken(before, id))
          throw new MercuryError(
            'INVALID_ARGUMENT',
            `${branch}[${index}]: this delete of token ${id} ("${before}") leaves ${showNameKey(before!)} naming the token: delete that key in the same branch. Revoke tokens with mercury token revoke (or DELETE /v1/auth/tokens?id=ID), which does this (decision 57)`,
            { details: { id, name: before } },
          );
        return;
      }
      live.set(id, record.name);
      if (before === record.name) return;
      for (const [otherId, name] of live)
        if (otherId !== id && name === record.name) throw tokenNameTaken(record.name, existing.find((other) => other.id === otherId));
      const missing = [
        ...(branch === 'failure' ? ['is in the failure branch (a name is given only in the success branch, whose compares guard it)'] : []),
        ...(indexed.get(record.name) === id ? [] : [`puts no ${showNameKey(record.name)} = "${id}" beside it`]),
        ...(compared.has(record.name) ? [] : [`compares no ${showNameKey(record.name)} (exists: false, or = the value read)`]),
        ...(namesToken(before, id) ? [`leaves ${showNameKey(before!)} naming the token (delete it)`] : []),
      ];
      if (missing.length > 0)
        throw new MercuryError(
          'INVALID_ARGUMENT',
          `${branch}[${index}]: this put gives token ${id} the name "${record.name}"${before === undefined ? '' : ` (it was "${before}")`} but ${missing.join('; ')}. A write that names a token keeps the name index, so that two of one name cannot both commit: create tokens with mercury token create (or POST /v1/auth/tokens), which does this; a replica of a version before the index forwards a create without it: send the create to the root (decision 57)`,
          { details: { id, name: record.name } },
        );
    });
  }
}

/** A name's index key as the error messages write it. */
function showNameKey(name: string): string {
  return JSON.stringify(tokenNameKey(name).toString('latin1'));
}

/** Whether a transaction touches the reserved key space at all (then only admins may send it, through these forms). */
export function touchesReserved(txn: Txn): boolean {
  return (
    txn.compares.some((compare) => isReservedKey(compare.key)) ||
    txn.success.some((op) => op.type !== 'deleteRange' && isReservedKey(op.key)) ||
    txn.failure.some((op) => op.type !== 'deleteRange' && isReservedKey(op.key))
  );
}

/**
 * Ops on reserved keys must be token records or name index keys: a put of a valid record (hash or subject, never a
 * secret), a put of a name index key naming a token id, a delete of either; compares on them only `exists`, and
 * `value` on a name index key (the create's check, createTokenRequest). Throws INVALID_ARGUMENT naming the op.
 */
export function validateReservedOps(txn: Txn): void {
  txn.compares.forEach((compare, index) => {
    if (!isReservedKey(compare.key)) return;
    const onToken = tokenIdOfKey(compare.key) !== undefined && compare.target === 'exists';
    const onName = tokenNameOfKey(compare.key) !== undefined && (compare.target === 'exists' || (compare.target === 'value' && compare.operator === '='));
    if (!onToken && !onName)
      throw new MercuryError('INVALID_ARGUMENT', `compare[${index}]: only an exists compare on a token key, or an exists or = value compare on a token name key, may name the reserved key space`);
  });
  for (const [branch, ops] of [
    ['success', txn.success],
    ['failure', txn.failure],
  ] as const) {
    ops.forEach((op, index) => {
      if (op.type === 'deleteRange' || !isReservedKey(op.key)) return;
      if (tokenNameOfKey(op.key) !== undefined) {
        if (op.type === 'put' && !isTokenId(op.value.toString('latin1')))
          throw new MercuryError('INVALID_ARGUMENT', `${branch}[${index}]: a token name key holds the id of the token that has the name (16 hex digits)`);
        return;
      }
      if (tokenIdOfKey(op.key) === undefined) throw new MercuryError('INVALID_ARGUMENT', `${branch}[${index}]: the only reserved keys that may be written are token keys and token name keys`);
      if (op.type === 'put') {
        const record = decodeTokenRecord(op.key, op.value);
        if (typeof record === 'string') throw new MercuryError('INVALID_ARGUMENT', `${branch}[${index}]: not a valid token record: ${record}`);
      }
    });
  }
}

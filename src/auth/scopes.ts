/**
 * Scopes, principals and the authorization checks every route makes. Pure: no I/O.
 *
 * A scope is written as text (in `mercury token create --scope`, the token routes and token lists):
 *
 * - `read:PREFIX`: get, range and watch keys that start with PREFIX (`read:` alone: every key), and compare them in a
 *   transaction. A range or a watch must lie inside one read prefix: a wider one is refused, not clipped (see
 *   docs/decisions.md), so a client never mistakes a partial view for the whole.
 * - `write:PREFIX`: put and delete keys under PREFIX, delete ranges inside it. Write does not imply read.
 * - `replicate`: pull the log and snapshots as a child replica (the replication HELLO).
 * - `admin`: everything: resync, `/v1/log`, `/metrics`, token management, and every key and replication.
 *
 * PREFIX is UTF-8 text. `/v1/status` needs any valid credential; `/healthz` and `/readyz` none (probes).
 *
 * A `Principal` is who a request acts as: a token, or a client certificate's subject mapped to a grant (records.ts).
 * Its `name` is what the log records as an entry's author. Where authorization is off, routes get `undefined` instead
 * of a principal, and every check passes.
 */
import { isReservedKey, MercuryError, overlapsReserved, prefixEnd, type Txn } from '../api/index.js';

export interface Scopes {
  readonly read: readonly Buffer[];
  readonly write: readonly Buffer[];
  readonly admin: boolean;
  readonly replicate: boolean;
}

export interface Principal {
  /** The token's (or grant's) name: the author of what it writes. */
  readonly name: string;
  /** The token id: revocation closes what was opened with it. */
  readonly id: string;
  readonly scopes: Scopes;
}

/** Scope text at most this long (a prefix is at most a key). */
export const SCOPE_CHARS_MAX = 1_100;
/** Scopes one token may hold. */
export const SCOPES_PER_TOKEN_MAX = 64;

/** Parses scope texts; throws INVALID_ARGUMENT naming the bad one. */
export function parseScopes(texts: readonly unknown[]): Scopes {
  if (texts.length === 0) throw new MercuryError('INVALID_ARGUMENT', 'a token needs at least one scope: read:PREFIX, write:PREFIX, replicate or admin');
  if (texts.length > SCOPES_PER_TOKEN_MAX) throw new MercuryError('INVALID_ARGUMENT', `a token holds at most ${SCOPES_PER_TOKEN_MAX} scopes, got ${texts.length}`);
  const read: Buffer[] = [];
  const write: Buffer[] = [];
  let admin = false;
  let replicate = false;
  for (const text of texts) {
    if (typeof text !== 'string' || text.length > SCOPE_CHARS_MAX)
      throw new MercuryError('INVALID_ARGUMENT', `a scope is a string of at most ${SCOPE_CHARS_MAX} characters, got ${JSON.stringify(text)?.slice(0, 80) ?? typeof text}`);
    if (text === 'admin') admin = true;
    else if (text === 'replicate') replicate = true;
    else if (text.startsWith('read:')) read.push(Buffer.from(text.slice(5), 'utf8'));
    else if (text.startsWith('write:')) write.push(Buffer.from(text.slice(6), 'utf8'));
    else throw new MercuryError('INVALID_ARGUMENT', `unknown scope "${text}"; scopes are read:PREFIX, write:PREFIX, replicate and admin`);
  }
  return { read, write, admin, replicate };
}

export function formatScopes(scopes: Scopes): string[] {
  const texts: string[] = [];
  if (scopes.admin) texts.push('admin');
  if (scopes.replicate) texts.push('replicate');
  for (const prefix of scopes.read) texts.push(`read:${prefix.toString('utf8')}`);
  for (const prefix of scopes.write) texts.push(`write:${prefix.toString('utf8')}`);
  return texts;
}

function hasPrefix(key: Buffer, prefix: Buffer): boolean {
  return key.length >= prefix.length && key.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}

function show(bytes: Buffer): string {
  return JSON.stringify(bytes.toString('utf8'));
}

function held(principal: Principal): string {
  const scopes = formatScopes(principal.scopes);
  return scopes.length === 0 ? 'no scope' : scopes.join(', ');
}

function denied(principal: Principal, action: string, needs: string): MercuryError {
  return new MercuryError('PERMISSION_DENIED', `token "${principal.name}" (${principal.id}) may not ${action}: it needs ${needs}; it holds ${held(principal)}`, {
    details: { needs, principal: principal.name },
  });
}

/** The reserved key space is never served by the KV API, whoever asks. */
export function refuseReserved(key: Buffer, what = 'key'): void {
  if (isReservedKey(key))
    throw new MercuryError('PERMISSION_DENIED', `${what} lies under the reserved prefix "\\u0000mercury/" (Mercury's own records); manage tokens with mercury token`, {
      details: { needs: 'a key outside "\\u0000mercury/"' },
    });
}

export function requireRead(principal: Principal | undefined, key: Buffer): void {
  refuseReserved(key);
  if (principal === undefined || principal.scopes.admin) return;
  if (!principal.scopes.read.some((prefix) => hasPrefix(key, prefix))) throw denied(principal, `read key ${show(key)}`, `read:${key.toString('utf8')} or read on a prefix of it`);
}

/** A range or a watch of every key under `prefix`: it must lie inside one read prefix (wider ones are refused). */
export function requireReadPrefix(principal: Principal | undefined, prefix: Buffer, what = 'read'): void {
  if (principal === undefined || principal.scopes.admin) return;
  if (!principal.scopes.read.some((scope) => hasPrefix(prefix, scope)))
    throw denied(principal, `${what} the keys under ${show(prefix)}`, `read:${prefix.toString('utf8')} or read on a prefix of it (a wider range or watch is refused, not clipped; ask for a prefix inside your read scopes)`);
}

export function requireWrite(principal: Principal | undefined, key: Buffer): void {
  if (principal === undefined || principal.scopes.admin) return;
  if (!principal.scopes.write.some((prefix) => hasPrefix(key, prefix))) throw denied(principal, `write key ${show(key)}`, `write:${key.toString('utf8')} or write on a prefix of it`);
}

/** [start, end) (empty end: unbounded) must lie inside one write prefix. */
export function requireWriteRange(principal: Principal | undefined, start: Buffer, end: Buffer): void {
  if (overlapsReserved(start, end))
    throw new MercuryError('PERMISSION_DENIED', `the range [${show(start)}, ${end.length === 0 ? 'end' : show(end)}) covers the reserved prefix "\\u0000mercury/"; delete a range that leaves it out`, {
      details: { needs: 'a range outside "\\u0000mercury/"' },
    });
  if (principal === undefined || principal.scopes.admin) return;
  const inside = principal.scopes.write.some((prefix) => {
    if (!hasPrefix(start, prefix)) return false;
    const limit = prefixEnd(prefix);
    if (limit.length === 0) return true;
    return end.length > 0 && Buffer.compare(end, limit) <= 0;
  });
  if (!inside) throw denied(principal, `delete the range [${show(start)}, ${end.length === 0 ? 'end' : show(end)})`, 'write on a prefix that holds the whole range');
}

/** Whether the principal may write `key` (no throw). */
function mayWrite(principal: Principal | undefined, key: Buffer): boolean {
  return principal === undefined || principal.scopes.admin || principal.scopes.write.some((prefix) => hasPrefix(key, prefix));
}

/**
 * A transaction: read on every compared key, write on every op of both branches. One exception: an `exists` compare
 * on a key the token may write needs no read, since a delete answers whether the key existed anyway (a replica forwards
 * `DELETE /v1/kv/{key}` as a delete guarded by such a compare). Ops on the reserved key space
 * (token records) pass only when `reservedAllowed` (admin, through the token routes or a forwarded token write) and
 * the caller has checked their values.
 */
export function requireTxn(principal: Principal | undefined, txn: Txn, reservedAllowed = false): void {
  txn.compares.forEach((compare, index) => {
    try {
      if (reservedAllowed && isReservedKey(compare.key)) return;
      refuseReserved(compare.key);
      if (compare.target === 'exists' && mayWrite(principal, compare.key)) return;
      requireRead(principal, compare.key);
    } catch (error) {
      throw withWhere(error, `compare[${index}]`);
    }
  });
  for (const [branch, ops] of [
    ['success', txn.success],
    ['failure', txn.failure],
  ] as const) {
    ops.forEach((op, index) => {
      try {
        if (op.type === 'deleteRange') requireWriteRange(principal, op.start, op.end);
        else if (reservedAllowed && isReservedKey(op.key)) return;
        else {
          refuseReserved(op.key);
          requireWrite(principal, op.key);
        }
      } catch (error) {
        throw withWhere(error, `${branch}[${index}]`);
      }
    });
  }
}

function withWhere(error: unknown, where: string): unknown {
  if (!(error instanceof MercuryError)) return error;
  return new MercuryError(error.code, `${where}: ${error.message}`, { details: error.details === undefined ? undefined : { ...error.details } });
}

/**
 * What a transaction needs before its body is read, when only the URL is known: some read or write scope (or admin).
 * Each op and compare is checked once the body is parsed (requireTxn); a token that can touch no key at all (only
 * `replicate`) is refused here, so it never gets a transaction body read and held.
 */
export function requireSomeKeyScope(principal: Principal | undefined, action: string): void {
  if (principal === undefined || principal.scopes.admin) return;
  if (principal.scopes.read.length > 0 || principal.scopes.write.length > 0) return;
  throw denied(principal, action, 'a read:PREFIX or write:PREFIX scope (or admin)');
}

/**
 * What a write needs before its key is known (a wire PUT frame, judged from its header): some write scope (or admin).
 * The key is checked once it is in (requireWrite); a token that can write nothing is refused here, so it never gets a
 * frame gathered and held in the node's budget of request bodies.
 */
export function requireSomeWriteScope(principal: Principal | undefined, action: string): void {
  if (principal === undefined || principal.scopes.admin || principal.scopes.write.length > 0) return;
  throw denied(principal, action, 'a write:PREFIX scope (or admin)');
}

/**
 * Whether `principal` may be shown entry hashes (status `headHash`, a write's `hash`, a watch's `hash`). An entry's hash
 * is SHA-256 of the previous hash and the entry's body, and the body holds every op of the entry: with two consecutive
 * hashes anyone can test guesses of what an entry wrote, offline (audit, stop 37: a `read:app/` token confirmed a
 * guessed value of `secret/flag` in 12 tries from a watch, and a 4-digit `secret/pin` in 21 s from status polls). So
 * hashes go only to who may read every key anyway: admin, replicate (a replica holds everything), a read scope on the
 * empty prefix, or no authorization at all.
 */
export function seesChain(principal: Principal | undefined): boolean {
  return principal === undefined || principal.scopes.admin || principal.scopes.replicate || principal.scopes.read.some((prefix) => prefix.length === 0);
}

export function requireAdmin(principal: Principal | undefined, action: string): void {
  if (principal === undefined || principal.scopes.admin) return;
  throw denied(principal, action, 'admin');
}

export function requireReplicate(principal: Principal | undefined): void {
  if (principal === undefined || principal.scopes.admin || principal.scopes.replicate) return;
  throw denied(principal, 'replicate from this node', 'replicate (or admin)');
}

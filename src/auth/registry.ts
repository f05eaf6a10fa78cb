/**
 * The tokens a node knows, in memory: loaded from the reserved key space at start, then kept up to date from every
 * entry the node applies (root and replicas alike), so that a token works on every node once the entry that created
 * it has reached it, and stops working there once its revocation has.
 *
 * Authentication is one map lookup and one SHA-256 per request; nothing is cached per connection, so a revoked token
 * fails on the very next request of a keep-alive connection. Open watches and replication sessions are closed by the
 * node when `applied` reports a revocation.
 */
import { MercuryError, overlapsReserved, prefixEnd } from '../api/index.js';
import type { Op } from '../log/index.js';
import { decodeTokenRecord, TOKEN_KEY_PREFIX, tokenIdOfKey, type TokenRecord } from './records.js';
import type { Principal } from './scopes.js';
import { AUTHORIZATION_HEADER_CHARS_MAX, parseToken, secretMatches, TOKEN_CHARS } from './token.js';

/**
 * Reads every key under TOKEN_KEY_PREFIX (the node's store): each record's value, or, for a record that failed its
 * check on read (storage damage), the error that read raised, so that one damaged record does not fail the others.
 */
export type ReadTokenRecords = () => Iterable<{ readonly key: Buffer; readonly value: Buffer; readonly damage?: undefined } | { readonly key: Buffer; readonly value?: undefined; readonly damage: Error }>;

/** A record that is not a valid token record was met (logged by the node; the record is ignored). */
export type InvalidRecordListener = (key: Buffer, why: string) => void;

/**
 * A token record that failed its check on read was met: the token is absent from then on (it authenticates nothing)
 * until a sound record of it is applied. The store has recorded the damage; the node refuses a start that meets one.
 */
export type DamagedRecordListener = (key: Buffer, damage: Error) => void;

interface Known {
  readonly record: TokenRecord;
  readonly principal: Principal;
}

const TOKEN_RANGE_END = prefixEnd(TOKEN_KEY_PREFIX);

function unauthenticated(message: string): MercuryError {
  return new MercuryError('UNAUTHENTICATED', message);
}

/** Whether two records of one token grant the same: who it is, what it may do, and how it proves it. */
function sameGrant(a: TokenRecord, b: TokenRecord): boolean {
  const samePrefixes = (x: readonly Buffer[], y: readonly Buffer[]): boolean => x.length === y.length && x.every((prefix, i) => prefix.equals(y[i]!));
  return (
    a.name === b.name &&
    a.subject === b.subject &&
    a.secretSha256 === b.secretSha256 &&
    a.scopes.admin === b.scopes.admin &&
    a.scopes.replicate === b.scopes.replicate &&
    samePrefixes(a.scopes.read, b.scopes.read) &&
    samePrefixes(a.scopes.write, b.scopes.write)
  );
}

export class TokenRegistry {
  private readonly byId = new Map<string, Known>();
  private readonly bySubject = new Map<string, Known>();

  constructor(
    private readonly readAll: ReadTokenRecords,
    private readonly onInvalid: InvalidRecordListener = () => {},
    private readonly onDamaged: DamagedRecordListener = () => {},
  ) {
    this.reload();
  }

  get size(): number {
    return this.byId.size;
  }

  list(): TokenRecord[] {
    return Array.from(this.byId.values(), (known) => known.record).sort((a, b) => a.createdMs - b.createdMs || a.id.localeCompare(b.id));
  }

  get(id: string): TokenRecord | undefined {
    return this.byId.get(id)?.record;
  }

  /**
   * The principal a token id stands for now: undefined once revoked, a new object once its record was replaced (new
   * scopes). A connection that authenticated once (the wire port) checks this before each request: one map lookup.
   */
  principalById(id: string): Principal | undefined {
    return this.byId.get(id)?.principal;
  }

  /**
   * Reads every record again (at start, after a deleteRange over the token keys, and after the node replaced its data
   * with a snapshot); returns, as `applied` does, the ids gone and those whose grant differs now: a snapshot can carry
   * a replaced record as well as a deleted one, and watches admitted under the old grant must be re-checked either way.
   * A damaged record fails closed: its token is left out (revoked, if it was known) and the rest load.
   */
  reload(): { revoked: string[]; replaced: string[] } {
    const before = new Map(Array.from(this.byId, ([id, known]) => [id, known.record] as const));
    this.byId.clear();
    this.bySubject.clear();
    for (const { key, value, damage } of this.readAll()) {
      if (damage === undefined) this.put(key, value);
      else this.onDamaged(key, damage);
    }
    const revoked: string[] = [];
    const replaced: string[] = [];
    for (const [id, record] of before) {
      const after = this.byId.get(id)?.record;
      if (after === undefined) revoked.push(id);
      else if (!sameGrant(record, after)) replaced.push(id);
    }
    return { revoked, replaced };
  }

  /**
   * Follows the ops of applied entries; returns the ids of tokens they revoked (a record deleted, or replaced by one
   * that is not valid) and of those given another grant (a record replaced: scopes, name, subject or secret), whose
   * open watches and sessions were admitted under the old one.
   */
  applied(ops: Iterable<Op>): { revoked: string[]; replaced: string[] } {
    const revoked: string[] = [];
    const replaced: string[] = [];
    for (const op of ops) {
      if (op.type === 'deleteRange') {
        if (overlapsReserved(op.start, op.end) && overlapsTokens(op.start, op.end)) {
          const reloaded = this.reload();
          revoked.push(...reloaded.revoked);
          replaced.push(...reloaded.replaced);
        }
        continue;
      }
      // Almost every key is a user key: one byte tells.
      if (op.key[0] !== 0) continue;
      const id = tokenIdOfKey(op.key);
      if (id === undefined) continue;
      const before = this.byId.get(id)?.record;
      if (op.type === 'put') this.put(op.key, op.value);
      else this.remove(id);
      const after = this.byId.get(id)?.record;
      if (before === undefined) continue;
      if (after === undefined) revoked.push(id);
      else if (!sameGrant(before, after)) replaced.push(id);
    }
    return { revoked, replaced };
  }

  private put(key: Buffer, value: Buffer): void {
    const id = tokenIdOfKey(key);
    if (id === undefined) return;
    this.remove(id);
    const record = decodeTokenRecord(key, value);
    if (typeof record === 'string') {
      this.onInvalid(key, record);
      return;
    }
    const known: Known = { record, principal: Object.freeze({ name: record.name, id: record.id, scopes: record.scopes }) };
    this.byId.set(id, known);
    if (record.subject !== undefined) this.bySubject.set(record.subject, known);
  }

  private remove(id: string): boolean {
    const known = this.byId.get(id);
    if (known === undefined) return false;
    this.byId.delete(id);
    if (known.record.subject !== undefined && this.bySubject.get(known.record.subject) === known) this.bySubject.delete(known.record.subject);
    return true;
  }

  /**
   * Who a request is: its `Authorization: Bearer TOKEN` header, else the verified client certificate's subject (CN)
   * when a grant names it. Throws UNAUTHENTICATED saying what is wrong.
   */
  authenticate(authorization: string | undefined, certificateSubject: string | undefined): Principal {
    if (authorization === undefined) {
      if (certificateSubject !== undefined) {
        const known = this.bySubject.get(certificateSubject);
        if (known !== undefined) return known.principal;
        throw unauthenticated(`no token, and no grant names the client certificate subject "${certificateSubject}"; send Authorization: Bearer TOKEN`);
      }
      throw unauthenticated('no credential: send Authorization: Bearer TOKEN (mercury --token, --token-file or MERCURY_TOKEN)');
    }
    if (authorization.length > AUTHORIZATION_HEADER_CHARS_MAX)
      throw unauthenticated(`the Authorization header is ${authorization.length} characters; at most ${AUTHORIZATION_HEADER_CHARS_MAX} are read`);
    const match = /^Bearer +(\S+)$/i.exec(authorization);
    if (match === null) throw unauthenticated('the Authorization header must be "Bearer TOKEN"');
    return this.authenticateToken(match[1]!);
  }

  /** A bearer token's principal; throws UNAUTHENTICATED (malformed, unknown or revoked, wrong secret). */
  authenticateToken(token: string): Principal {
    const parsed = parseToken(token);
    if (parsed === undefined) throw unauthenticated(`malformed token: a token is ${TOKEN_CHARS} characters, "mcy_", a 16-hex-digit id, "_" and a 43-character secret`);
    const known = this.byId.get(parsed.id);
    if (known === undefined || known.record.secretSha256 === undefined) throw unauthenticated(`unknown token ${parsed.id}: never created here, or revoked`);
    if (!secretMatches(parsed.secret, known.record.secretSha256)) throw unauthenticated(`token ${parsed.id}: the secret does not match`);
    return known.principal;
  }
}

function overlapsTokens(start: Buffer, end: Buffer): boolean {
  return Buffer.compare(start, TOKEN_RANGE_END) < 0 && (end.length === 0 || Buffer.compare(end, TOKEN_KEY_PREFIX) > 0);
}

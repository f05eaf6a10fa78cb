/**
 * The tokens a node knows, in memory: loaded from the reserved key space at start, then kept up to date from every
 * entry the node applies (root and replicas alike), so that a token works on every node once the entry that created
 * it has reached it, and stops working there once its revocation has.
 *
 * Authentication is one map lookup and one SHA-256 per request; nothing is cached per connection, so a revoked token
 * fails on the very next request of a keep-alive connection. Open watches and replication sessions are closed by the
 * node when `applied` reports a revocation; when it reports a replaced grant, each is checked again against the new
 * one (`current`, then what it was admitted for) and closed only if that no longer passes (decision 57).
 *
 * A token past its `expiresMs` (by this node's clock) authenticates nothing, at every door, as a revoked one; its
 * record stays until revoked, so that the list shows it. What it opened ends when the node's one expiry timer
 * (`nextExpiryMs`, `expire`) reports it, through the revocation path (decision 61).
 */
import { MercuryError, overlapsReserved, prefixEnd } from '../api/index.js';
import { systemClock, type Clock } from '../clock/index.js';
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

/** How a record's holder proves who it is: the hash of its secret, or the certificate subject it grants. */
function credentialOf(record: TokenRecord): string {
  return record.secretSha256 !== undefined ? `secret:${record.secretSha256}` : `subject:${record.subject ?? ''}`;
}

const TOKEN_RANGE_END = prefixEnd(TOKEN_KEY_PREFIX);

function unauthenticated(message: string): MercuryError {
  return new MercuryError('UNAUTHENTICATED', message);
}

/** What ended an expired token, as the messages of every door and of what it opened say it. */
function expiredAt(expiresMs: number): string {
  return `expired at ${new Date(expiresMs).toISOString()}`;
}

function expired(record: TokenRecord): MercuryError {
  return unauthenticated(`token ${record.id} ("${record.name}") ${expiredAt(record.expiresMs!)}; create a new one (mercury token create) and revoke this one (mercury token revoke ${record.id})`);
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
  /**
   * The grants naming each certificate subject, rebuilt from `byId` whenever a grant is added or removed: a subject
   * authenticates only while exactly one grant names it, so which grant a certificate gets never depends on the order
   * the records were applied in (a restart reads them in id order, the log in commit order: audit, 2026-12-06).
   */
  private bySubject = new Map<string, Known[]>();
  /**
   * Records under token keys that grant nothing because they could not be read: not a valid record (written by a
   * newer version, or by hand) or damaged on disk. Kept by id with the reason, so that an admin sees them in the token
   * list and can delete them (revoke by id); they still authenticate nothing.
   */
  private readonly unreadable = new Map<string, string>();
  /** The credential each principal was made from: a connection that authenticated with it ends once it changed. */
  private readonly credentials = new WeakMap<Pick<Principal, 'id' | 'name'>, string>();
  /** The ids of expired tokens `expire` has reported (what they opened is closed); dropped when their record changes. */
  private readonly expiredReported = new Set<string>();
  /** `nextExpiryMs`, cached until a record is added or removed (null); it is asked after every applied batch. */
  private nextExpiry: number | undefined | null = null;

  constructor(
    private readonly readAll: ReadTokenRecords,
    private readonly onInvalid: InvalidRecordListener = () => {},
    private readonly onDamaged: DamagedRecordListener = () => {},
    /** Judges `expiresMs`: each node by its own wall clock. */
    private readonly clock: Pick<Clock, 'nowMs'> = systemClock,
  ) {
    this.reload();
  }

  get size(): number {
    return this.byId.size;
  }

  list(): TokenRecord[] {
    return Array.from(this.byId.values(), (known) => known.record).sort((a, b) => a.createdMs - b.createdMs || a.id.localeCompare(b.id));
  }

  /** The token keys whose record could not be read, with why, in id order. */
  unreadableRecords(): { readonly id: string; readonly why: string }[] {
    return Array.from(this.unreadable, ([id, why]) => ({ id, why })).sort((a, b) => a.id.localeCompare(b.id));
  }

  get(id: string): TokenRecord | undefined {
    return this.byId.get(id)?.record;
  }

  /**
   * The principal a token id stands for now: undefined once revoked, a new object once its record was replaced (new
   * scopes). A connection that authenticated once (the wire port) checks this before each request: one map lookup.
   */
  principalById(id: string): Principal | undefined {
    const known = this.byId.get(id);
    return known === undefined || this.isExpired(known.record) ? undefined : known.principal;
  }

  /**
   * The earliest `expiresMs` of a token not yet reported by `expire`, or undefined: when the node's one expiry timer
   * is due (one timer whatever the number of tokens: it is armed again for the next after each expiry).
   */
  nextExpiryMs(): number | undefined {
    if (this.nextExpiry === null) {
      let next: number | undefined;
      for (const { record } of this.byId.values())
        if (record.expiresMs !== undefined && !this.expiredReported.has(record.id) && (next === undefined || record.expiresMs < next)) next = record.expiresMs;
      this.nextExpiry = next;
    }
    return this.nextExpiry;
  }

  /**
   * The ids of tokens expired by now and not reported before, with the message that ends what they opened; each is
   * reported once (until its record changes), so the node closes their watches, sessions and connections once.
   */
  expire(): { readonly id: string; readonly why: string }[] {
    const ended: { id: string; why: string }[] = [];
    for (const { record } of this.byId.values())
      if (!this.expiredReported.has(record.id) && this.isExpired(record)) {
        this.expiredReported.add(record.id);
        ended.push({ id: record.id, why: expiredAt(record.expiresMs!) });
      }
    if (ended.length > 0) this.nextExpiry = null;
    return ended;
  }

  private isExpired(record: TokenRecord): boolean {
    return record.expiresMs !== undefined && this.clock.nowMs() >= record.expiresMs;
  }

  /**
   * Reads every record again (at start, after a deleteRange over the token keys, and after the node replaced its data
   * with a snapshot); returns, as `applied` does, the ids gone and those whose grant differs now: a snapshot can carry
   * a replaced record as well as a deleted one, and watches admitted under the old grant must be re-checked either way.
   * A damaged record fails closed: its token is left out (revoked, if it was known) and the rest load.
   */
  reload(): { revoked: string[]; replaced: string[] } {
    const before = new Map(Array.from(this.byId, ([id, known]) => [id, known.record] as const));
    const ambiguousBefore = this.ambiguousIds();
    this.byId.clear();
    this.unreadable.clear();
    this.expiredReported.clear();
    this.nextExpiry = null;
    for (const { key, value, damage } of this.readAll()) {
      if (damage === undefined) this.put(key, value, false);
      else {
        const id = tokenIdOfKey(key);
        if (id !== undefined) this.unreadable.set(id, `damaged on disk: ${damage.message}`);
        this.onDamaged(key, damage);
      }
    }
    this.indexSubjects();
    const revoked: string[] = [];
    const replaced: string[] = [];
    for (const [id, record] of before) {
      const after = this.byId.get(id)?.record;
      if (after === undefined) revoked.push(id);
      else if (!sameGrant(record, after) || (this.isAmbiguous(after) && !ambiguousBefore.has(id))) replaced.push(id);
    }
    return { revoked, replaced };
  }

  /**
   * Follows the ops of applied entries; returns the ids of tokens they revoked (a record deleted, or replaced by one
   * that is not valid) and of those given another grant (a record replaced: scopes, name, subject or secret; or a
   * grant whose subject another grant now names too), whose open watches and sessions were admitted under the old one.
   */
  applied(ops: readonly Op[]): { revoked: string[]; replaced: string[] } {
    // A range delete over token keys reads every record again, once for the whole batch: the store holds the batch's
    // result, and the reload compares it with what was known before. Once per such op, a raw admin transaction of many
    // range deletes over the token keys read every record that many times on every node (the CPU audit, 2026-12-07).
    if (ops.some((op) => op.type === 'deleteRange' && overlapsReserved(op.start, op.end) && overlapsTokens(op.start, op.end))) return this.reload();
    const revoked: string[] = [];
    const replaced: string[] = [];
    for (const op of ops) {
      if (op.type === 'deleteRange') continue;
      // Almost every key is a user key: one byte tells.
      if (op.key[0] !== 0) continue;
      const id = tokenIdOfKey(op.key);
      if (id === undefined) continue;
      const before = this.byId.get(id)?.record;
      const ambiguousBefore = this.ambiguousIds();
      if (op.type === 'put') this.put(op.key, op.value);
      else this.remove(id);
      const after = this.byId.get(id)?.record;
      // Grants that authenticated their subject alone until this op gave another grant the same subject.
      for (const other of this.ambiguousIds()) if (other !== id && !ambiguousBefore.has(other)) replaced.push(other);
      if (before === undefined) continue;
      if (after === undefined) revoked.push(id);
      else if (!sameGrant(before, after)) replaced.push(id);
    }
    return { revoked, replaced };
  }

  /** `index`: false while `reload` puts every record, which indexes the subjects once at the end. */
  private put(key: Buffer, value: Buffer, index = true): void {
    const id = tokenIdOfKey(key);
    if (id === undefined) return;
    this.remove(id, index);
    const record = decodeTokenRecord(key, value);
    if (typeof record === 'string') {
      this.unreadable.set(id, record);
      this.onInvalid(key, record);
      return;
    }
    const principal: Principal = Object.freeze({ name: record.name, id: record.id, scopes: record.scopes });
    this.credentials.set(principal, credentialOf(record));
    this.byId.set(id, { record, principal });
    if (index && record.subject !== undefined) this.indexSubjects();
  }

  private remove(id: string, index = true): boolean {
    this.unreadable.delete(id);
    this.expiredReported.delete(id);
    this.nextExpiry = null;
    const known = this.byId.get(id);
    if (known === undefined) return false;
    this.byId.delete(id);
    if (index && known.record.subject !== undefined) this.indexSubjects();
    return true;
  }

  /** Rebuilds the subject index from the records (a few grants at most: one pass per grant added or removed). */
  private indexSubjects(): void {
    const bySubject = new Map<string, Known[]>();
    for (const known of this.byId.values()) {
      const subject = known.record.subject;
      if (subject === undefined) continue;
      const grants = bySubject.get(subject);
      if (grants === undefined) bySubject.set(subject, [known]);
      else grants.push(known);
    }
    this.bySubject = bySubject;
  }

  private isAmbiguous(record: TokenRecord): boolean {
    return record.subject !== undefined && (this.bySubject.get(record.subject)?.length ?? 0) > 1;
  }

  /** The ids of grants whose subject other grants name too (empty almost always). */
  private ambiguousIds(): Set<string> {
    const ids = new Set<string>();
    for (const grants of this.bySubject.values()) if (grants.length > 1) for (const known of grants) ids.add(known.record.id);
    return ids;
  }

  /**
   * `principal`, which authenticated earlier (a wire connection, a watch, a request whose body was arriving), as it
   * stands now: the same object while its record is unchanged, the new one after its scopes or name changed. Throws
   * UNAUTHENTICATED once it was revoked, once its credential was replaced (a new secret, another subject: what it
   * proved itself with no longer proves anything), and while another grant names its subject too.
   */
  current(principal: Pick<Principal, 'id' | 'name'>): Principal {
    const known = this.byId.get(principal.id);
    if (known === undefined) throw unauthenticated(`token ${principal.id} ("${principal.name}") was revoked; use another token`);
    if (known.principal !== principal && this.credentials.get(principal) !== credentialOf(known.record))
      throw unauthenticated(
        `token ${principal.id} ("${principal.name}") was given another credential (a new secret, or another certificate subject): connect again with the new one`,
      );
    if (this.isAmbiguous(known.record)) throw ambiguousSubject(known.record.subject!, this.bySubject.get(known.record.subject!)!);
    if (this.isExpired(known.record)) throw expired(known.record);
    return known.principal;
  }

  /**
   * Who a request is: its `Authorization: Bearer TOKEN` header, else the verified client certificate's subject (CN)
   * when a grant names it. Throws UNAUTHENTICATED saying what is wrong.
   */
  authenticate(authorization: string | undefined, certificateSubject: string | undefined): Principal {
    if (authorization === undefined) {
      if (certificateSubject !== undefined) {
        const grants = this.bySubject.get(certificateSubject);
        if (grants !== undefined && grants.length > 1) throw ambiguousSubject(certificateSubject, grants);
        if (grants !== undefined) {
          if (this.isExpired(grants[0]!.record)) throw expired(grants[0]!.record);
          return grants[0]!.principal;
        }
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

  /** A bearer token's principal; throws UNAUTHENTICATED (malformed, unknown or revoked, wrong secret, expired). */
  authenticateToken(token: string): Principal {
    const parsed = parseToken(token);
    if (parsed === undefined) throw unauthenticated(`malformed token: a token is ${TOKEN_CHARS} characters, "mcy_", a 16-hex-digit id, "_" and a 43-character secret`);
    const known = this.byId.get(parsed.id);
    if (known === undefined || known.record.secretSha256 === undefined) throw unauthenticated(`unknown token ${parsed.id}: never created here, or revoked`);
    if (!secretMatches(parsed.secret, known.record.secretSha256)) throw unauthenticated(`token ${parsed.id}: the secret does not match`);
    // After the secret: whether a token has expired is told only to whoever holds it.
    if (this.isExpired(known.record)) throw expired(known.record);
    return known.principal;
  }
}

/** A certificate subject that more than one grant names: it authenticates nothing until all but one are revoked. */
function ambiguousSubject(subject: string, grants: readonly Known[]): MercuryError {
  const ids = grants.map((known) => known.record.id).sort();
  return unauthenticated(
    `the client certificate subject "${subject}" is named by ${ids.length} grants (${ids.join(', ')}), so it authenticates as none of them: an admin revokes all but one (mercury token revoke ID), or send Authorization: Bearer TOKEN`,
  );
}

function overlapsTokens(start: Buffer, end: Buffer): boolean {
  return Buffer.compare(start, TOKEN_RANGE_END) < 0 && (end.length === 0 || Buffer.compare(end, TOKEN_KEY_PREFIX) > 0);
}

/**
 * Tokens without a node: the format, the stored records, scopes and every check the routes make (src/auth/).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MercuryError, RESERVED_KEY_PREFIX, withoutReserved } from '../src/api/index.js';
import {
  adminKeptAfter,
  createTokenRequest,
  decodeTokenRecord,
  encodeTokenRecord,
  formatScopes,
  generateToken,
  parseScopes,
  parseToken,
  requireRead,
  requireReadPrefix,
  requireTxn,
  requireWrite,
  requireWriteRange,
  revokeTokenRequest,
  TOKEN_CHARS,
  tokenKey,
  TokenRegistry,
  tokenNameKey,
  validateReservedOps,
  type Principal,
  type TokenRecord,
} from '../src/auth/index.js';

function principal(scopes: string[]): Principal {
  return { name: 'test', id: '0123456789abcdef', scopes: parseScopes(scopes) };
}

function assertCode(fn: () => unknown, code: string, message?: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof MercuryError, String(error));
    assert.equal(error.code, code);
    if (message !== undefined) assert.match(error.message, message);
    return true;
  });
}

describe('auth: token format', () => {
  test('auth: a generated token parses back to its id, and its hash is not its secret', () => {
    const { token, id, secretSha256 } = generateToken();
    assert.equal(token.length, TOKEN_CHARS);
    const parsed = parseToken(token)!;
    assert.equal(parsed.id, id);
    assert.match(secretSha256, /^[0-9a-f]{64}$/);
    assert.ok(!token.includes(secretSha256));
    assert.notEqual(generateToken().token, token, 'tokens are random');
  });

  test('auth: malformed tokens are refused by their shape', () => {
    const { token } = generateToken();
    for (const bad of ['', 'mcy_', token.slice(1), `${token}x`, token.replace('mcy_', 'mcx_'), token.toUpperCase(), `${token.slice(0, -1)}!`, 'Bearer x'])
      assert.equal(parseToken(bad), undefined, bad);
  });
});

describe('auth: records and registry', () => {
  test('auth: a record round-trips; the registry authenticates its token and forgets it on revocation', () => {
    const created = createTokenRequest({ name: 'ci', scopes: ['read:app/', 'write:app/tmp/'] }, 1_000, []);
    const put = created.request.success[0]!;
    assert.equal(put.type, 'put');
    if (put.type !== 'put') return;
    assert.ok(put.key.subarray(0, RESERVED_KEY_PREFIX.length).equals(RESERVED_KEY_PREFIX));
    assert.ok(!put.value.toString().includes(parseToken(created.token!)!.secret), 'the secret is never stored');
    const decoded = decodeTokenRecord(put.key, put.value);
    assert.notEqual(typeof decoded, 'string');
    assert.deepEqual(encodeTokenRecord(decoded as never), put.value);
    const registry = new TokenRegistry(() => []);
    assert.deepEqual(registry.applied(created.request.success), { revoked: [], replaced: [] });
    const who = registry.authenticateToken(created.token!);
    assert.equal(who.name, 'ci');
    assert.equal(registry.authenticate(`Bearer ${created.token!}`, undefined).id, created.record.id);
    // Another last character: a fixed one matched the random secret's own once in 64 runs.
    const wrongLast = created.token!.endsWith('A') ? 'B' : 'A';
    assertCode(() => registry.authenticate(`Bearer ${created.token!.slice(0, -1)}${wrongLast}`, undefined), 'UNAUTHENTICATED', /secret does not match/);
    assertCode(() => registry.authenticate(`Basic ${created.token!}`, undefined), 'UNAUTHENTICATED', /Bearer TOKEN/);
    assertCode(() => registry.authenticate(`Bearer ${'x'.repeat(300)}`, undefined), 'UNAUTHENTICATED', /at most 256/);
    assertCode(() => registry.authenticate(undefined, undefined), 'UNAUTHENTICATED', /no credential/);
    assertCode(() => registry.authenticate(`Bearer ${generateToken().token}`, undefined), 'UNAUTHENTICATED', /unknown token/);
    // The same record again grants the same: nothing to report. Other scopes: a replaced grant.
    assert.deepEqual(registry.applied(created.request.success), { revoked: [], replaced: [] });
    const narrowed = encodeTokenRecord({ ...(decoded as TokenRecord), scopes: parseScopes(['read:app/']) });
    assert.deepEqual(registry.applied([{ type: 'put', key: put.key, value: narrowed }]), { revoked: [], replaced: [created.record.id] });
    assert.deepEqual(formatScopes(registry.authenticateToken(created.token!).scopes), ['read:app/']);
    assert.deepEqual(registry.applied(revokeTokenRequest(created.record.id).success), { revoked: [created.record.id], replaced: [] });
    assertCode(() => registry.authenticateToken(created.token!), 'UNAUTHENTICATED', /revoked/);
  });

  // Found by the CPU audit (2026-12-07): each range delete over the token keys read every record again, so a raw
  // admin transaction of many of them cost their number times the tokens' on every node.
  test('auth: range deletes over the token keys read the records once per applied batch, and report what they removed', () => {
    const made = ['a', 'b', 'c'].map((name) => createTokenRequest({ name, scopes: ['read:app/'] }, 1_000, []));
    let stored = made.map(({ request }) => {
      const put = request.success[0]!;
      if (put.type !== 'put') return assert.fail('a create is a put');
      return { key: put.key, value: put.value };
    });
    let reads = 0;
    const registry = new TokenRegistry(() => {
      reads++;
      return stored;
    });
    assert.equal(registry.size, 3);
    const before = reads;
    stored = stored.slice(1);
    const range = { type: 'deleteRange' as const, start: tokenKey(made[0]!.record.id), end: Buffer.concat([tokenKey(made[0]!.record.id), Buffer.from([0])]) };
    const result = registry.applied(Array.from({ length: 1_000 }, () => range));
    assert.equal(reads - before, 1, 'one read of the records for the batch');
    assert.deepEqual(result, { revoked: [made[0]!.record.id], replaced: [] });
    assert.equal(registry.size, 2);
  });

  test('auth: a certificate grant maps a subject to a principal and has no secret', () => {
    const grant = createTokenRequest({ name: 'edge-7', scopes: ['replicate'], subject: 'edge-7.example' }, 1, []);
    assert.equal(grant.token, undefined);
    const registry = new TokenRegistry(() => []);
    registry.applied(grant.request.success);
    assert.equal(registry.authenticate(undefined, 'edge-7.example').name, 'edge-7');
    assertCode(() => registry.authenticate(undefined, 'other.example'), 'UNAUTHENTICATED', /no grant names/);
  });

  test('auth: a subject named by two grants authenticates as neither, whatever order the records came in; revoking one restores the other (audit, 2026-12-06)', () => {
    const writer = createTokenRequest({ name: 'alice', scopes: ['write:app/'], subject: 'alice' }, 1, []);
    const reader = createTokenRequest({ name: 'alice-ro', scopes: ['read:other/'], subject: 'alice' }, 2, []);
    const records = [writer, reader].map(({ request }) => request.success[0]!).map((op) => (op.type === 'put' ? { key: op.key, value: op.value } : assert.fail()));
    // The log applies them in commit order; a restart (and a snapshot install) reads them in key (id) order.
    for (const order of [records, [...records].reverse()]) {
      const registry = new TokenRegistry(() => order);
      assertCode(() => registry.authenticate(undefined, 'alice'), 'UNAUTHENTICATED', /"alice" is named by 2 grants .* revokes all but one/);
      const applied = new TokenRegistry(() => []);
      for (const { key, value } of order) applied.applied([{ type: 'put', key, value }]);
      assertCode(() => applied.authenticate(undefined, 'alice'), 'UNAUTHENTICATED', /named by 2 grants/);
    }
    const registry = new TokenRegistry(() => []);
    registry.applied(writer.request.success);
    const alice = registry.authenticate(undefined, 'alice');
    assert.equal(alice.name, 'alice');
    // A second grant makes the first one's open connections end: it is reported as given another grant.
    assert.deepEqual(registry.applied(reader.request.success), { revoked: [], replaced: [writer.record.id] });
    assertCode(() => registry.current(alice), 'UNAUTHENTICATED', /named by 2 grants/);
    registry.applied(revokeTokenRequest(reader.record.id).success);
    assert.equal(registry.authenticate(undefined, 'alice').name, 'alice', 'revoking one leaves the other the only grant');
    assert.equal(registry.current(alice), alice);
  });

  test('auth: creating a grant for a subject a grant already names is refused, naming that grant', () => {
    const first = createTokenRequest({ name: 'alice', scopes: ['write:app/'], subject: 'alice' }, 1, []);
    assertCode(() => createTokenRequest({ name: 'alice-ro', scopes: ['read:app/'], subject: 'alice' }, 2, [first.record]), 'SUBJECT_ALREADY_GRANTED', new RegExp(`grant ${first.record.id} \\("alice"\\) already names .*\\(mercury token revoke ${first.record.id}`));
    assert.equal(createTokenRequest({ name: 'bob', scopes: ['read:app/'], subject: 'bob' }, 2, [first.record]).record.subject, 'bob');
    assert.equal(createTokenRequest({ name: 'alice-token', scopes: ['read:app/'] }, 2, [first.record]).record.subject, undefined, 'a bearer token is not a grant to a subject');
  });

  test('auth: creating a token or grant of a name a live one has is refused, naming it (found by review: the audit log records names, and two of one name could not be told apart there)', () => {
    const first = createTokenRequest({ name: 'deploy-bot', scopes: ['write:app/'] }, 1, []);
    assertCode(() => createTokenRequest({ name: 'deploy-bot', scopes: ['write:app/'] }, 2, [first.record]), 'TOKEN_NAME_TAKEN', new RegExp(`token ${first.record.id} is already named "deploy-bot"; .*choose another name \\(deploy-bot-2, say\\), or revoke that one first \\(mercury token revoke ${first.record.id}\\)`));
    assertCode(() => createTokenRequest({ name: 'deploy-bot', scopes: ['read:app/'], subject: 'deploy' }, 2, [first.record]), 'TOKEN_NAME_TAKEN', /already named/);
    assert.equal(createTokenRequest({ name: 'deploy-bot-2', scopes: ['write:app/'] }, 2, [first.record]).record.name, 'deploy-bot-2', 'a rotation: the new token under another name');
  });

  test('auth: the last admin record is never revoked; a revocation of one of two keeps the other by a compare (audit, 2026-12-06)', () => {
    const first = createTokenRequest({ name: 'admin', scopes: ['admin'] }, 1, []).record;
    const grant = createTokenRequest({ name: 'ops', scopes: ['admin'], subject: 'ops' }, 2, []).record;
    const reader = createTokenRequest({ name: 'reader', scopes: ['read:'] }, 3, []).record;
    assertCode(() => adminKeptAfter(first.id, [first, reader]), 'LAST_ADMIN_TOKEN', new RegExp(`token ${first.id} \\("admin"\\) is the only admin token left`));
    assert.equal(adminKeptAfter(reader.id, [first, reader]), undefined, 'a token without admin is revoked freely');
    assert.equal(adminKeptAfter('0123456789abcdef', [first]), undefined, 'an unknown id is left to the NOT_FOUND of the revocation');
    assert.equal(adminKeptAfter(first.id, [first, grant]), grant.id, 'a certificate grant with admin keeps token management possible');
    const second = createTokenRequest({ name: 'admin-2', scopes: ['admin'] }, 4, []).record;
    assert.equal(adminKeptAfter(first.id, [first, grant, second]), second.id, 'a bearer token is kept rather than a grant');
    // Two admins revoking the last two at once: each revocation holds only while the other admin token exists.
    const revocation = revokeTokenRequest(first.id, second.id);
    assert.deepEqual(
      revocation.compares.map((compare) => [compare.key, compare.target === 'exists' && compare.exists]),
      [
        [tokenKey(first.id), true],
        [tokenKey(second.id), true],
      ],
    );
    validateReservedOps(revocation);
  });

  test('auth: a principal whose secret was replaced is refused; one whose scopes changed is the new grant', () => {
    const created = createTokenRequest({ name: 'ci', scopes: ['read:app/'] }, 1, []);
    const put = created.request.success[0]!;
    if (put.type !== 'put') assert.fail();
    const registry = new TokenRegistry(() => []);
    registry.applied(created.request.success);
    const before = registry.authenticateToken(created.token!);
    const widened = encodeTokenRecord({ ...created.record, scopes: parseScopes(['read:app/', 'write:app/']) });
    registry.applied([{ type: 'put', key: put.key, value: widened }]);
    const after = registry.current(before);
    assert.deepEqual(formatScopes(after.scopes), ['read:app/', 'write:app/']);
    const rotated = encodeTokenRecord({ ...created.record, secretSha256: 'ab'.repeat(32) });
    assert.deepEqual(registry.applied([{ type: 'put', key: put.key, value: rotated }]), { revoked: [], replaced: [created.record.id] });
    assertCode(() => registry.current(after), 'UNAUTHENTICATED', /another credential/);
    assertCode(() => registry.current(before), 'UNAUTHENTICATED', /another credential/);
  });

  test('auth: invalid records are ignored and reported, and refused as writes', () => {
    const invalid: string[] = [];
    const key = tokenKey('0123456789abcdef');
    const registry = new TokenRegistry(
      () => [{ key, value: Buffer.from('{"v":1,"name":"x","scopes":["admin"],"createdMs":1,"secretSha256":"zz"}') }],
      (_key, why) => invalid.push(why),
    );
    assert.equal(registry.size, 0);
    assert.match(invalid[0]!, /secretSha256/);
    assertCode(
      () => validateReservedOps({ compares: [], success: [{ type: 'put', key, value: Buffer.from('{"secret":"plain"}') }], failure: [] }),
      'INVALID_ARGUMENT',
      /not a valid token record/,
    );
    assertCode(
      () => validateReservedOps({ compares: [], success: [{ type: 'put', key: Buffer.concat([RESERVED_KEY_PREFIX, Buffer.from('other')]), value: Buffer.from('x') }], failure: [] }),
      'INVALID_ARGUMENT',
      /only reserved keys that may be written are token keys/,
    );
    // A name index key holds a token id, and is compared only for existence or equality (createTokenRequest's check).
    const created = createTokenRequest({ name: 'ci', scopes: ['read:app/'] }, 1, []);
    validateReservedOps(created.request);
    const nameKey = tokenNameKey('ci');
    assertCode(() => validateReservedOps({ compares: [], success: [{ type: 'put', key: nameKey, value: Buffer.from('not an id') }], failure: [] }), 'INVALID_ARGUMENT', /token name key holds the id/);
    assertCode(
      () => validateReservedOps({ compares: [{ key: nameKey, target: 'value', operator: '>', value: Buffer.from('0') }], success: [], failure: [] }),
      'INVALID_ARGUMENT',
      /exists or = value compare on a token name key/,
    );
  });
});

describe('auth: scope checks', () => {
  const reader = principal(['read:app/']);
  const writer = principal(['write:app/', 'read:app/']);

  test('auth: read and write are checked per key and prefix, naming what is missing', () => {
    requireRead(reader, Buffer.from('app/x'));
    assertCode(() => requireRead(reader, Buffer.from('other/x')), 'PERMISSION_DENIED', /read key "other\/x".*needs read:other\/x.*holds read:app\//);
    assertCode(() => requireWrite(reader, Buffer.from('app/x')), 'PERMISSION_DENIED', /needs write:app\/x/);
    requireWrite(writer, Buffer.from('app/x'));
    requireReadPrefix(reader, Buffer.from('app/sub/'));
    assertCode(() => requireReadPrefix(reader, Buffer.from('')), 'PERMISSION_DENIED', /refused, not clipped/);
    assertCode(() => requireReadPrefix(reader, Buffer.from('ap')), 'PERMISSION_DENIED');
    requireWriteRange(writer, Buffer.from('app/a'), Buffer.from('app/b'));
    assertCode(() => requireWriteRange(writer, Buffer.from('app/a'), Buffer.from('')), 'PERMISSION_DENIED', /delete the range/);
    assertCode(() => requireWriteRange(writer, Buffer.from('app/a'), Buffer.from('b')), 'PERMISSION_DENIED');
    requireWriteRange(writer, Buffer.from('app/'), Buffer.from('app0'));
  });

  test('auth: a transaction needs read on every compare and write on every op of both branches', () => {
    const key = (text: string): Buffer => Buffer.from(text);
    requireTxn(writer, { compares: [{ key: key('app/a'), target: 'exists', exists: true }], success: [{ type: 'delete', key: key('app/b') }], failure: [] });
    assertCode(
      () => requireTxn(writer, { compares: [{ key: key('secret/a'), target: 'exists', exists: true }], success: [], failure: [] }),
      'PERMISSION_DENIED',
      /^compare\[0\]: .*read key "secret\/a"/,
    );
    const writeOnly = principal(['write:w/']);
    requireTxn(writeOnly, { compares: [{ key: key('w/a'), target: 'exists', exists: true }], success: [{ type: 'delete', key: key('w/a') }], failure: [] });
    assertCode(
      () => requireTxn(writeOnly, { compares: [{ key: key('w/a'), target: 'modSeq', operator: '=', number: 1 }], success: [], failure: [] }),
      'PERMISSION_DENIED',
      /read key "w\/a"/,
    );
    assertCode(
      () => requireTxn(writer, { compares: [], success: [], failure: [{ type: 'put', key: key('other'), value: key('v') }] }),
      'PERMISSION_DENIED',
      /^failure\[0\]: .*write key "other"/,
    );
  });

  test('auth: the reserved key space is refused to everyone, admins and auth off included', () => {
    const tokenRecordKey = tokenKey('0123456789abcdef');
    for (const who of [undefined, principal(['admin'])]) {
      assertCode(() => requireRead(who, tokenRecordKey), 'PERMISSION_DENIED', /reserved/);
      assertCode(() => requireTxn(who, { compares: [], success: [{ type: 'put', key: tokenRecordKey, value: Buffer.from('x') }], failure: [] }), 'PERMISSION_DENIED', /reserved/);
      assertCode(() => requireWriteRange(who, Buffer.from([0]), Buffer.from([1])), 'PERMISSION_DENIED', /reserved/);
    }
    assert.deepEqual(withoutReserved(Buffer.alloc(0), Buffer.alloc(0)).length, 2);
    assert.deepEqual(withoutReserved(Buffer.from('a'), Buffer.alloc(0)), [{ start: Buffer.from('a'), end: Buffer.alloc(0) }]);
  });
});

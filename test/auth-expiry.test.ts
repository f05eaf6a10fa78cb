/**
 * Tokens that expire (decision 61), on real nodes (auth required, port 0, real TCP): a token made with a short expiry
 * works, then every door refuses it (HTTP on a keep-alive connection too, a watch upgrade, the wire port's HELLO, a
 * child replica's HELLO, a replica's HTTP) with 401 naming the expiry, and what it had open ends as on a revocation:
 * its watch (4401), its wire connection, its child's session, its read parked on minSeq. Bad expiries are refused
 * naming the bounds; a record whose expiresMs is malformed is unreadable like any malformed record.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { join } from 'node:path';
import { setTimeout } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { encodeGet, encodeHello } from '../src/api/index.js';
import { adminKeptAfter, createTokenRequest, decodeTokenRecord, requireAdminKept, revokeTokenRequest, encodeTokenRecord, TokenRegistry, tokenKey, type TokenRecord } from '../src/auth/index.js';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS_TEST, withLimits } from '../src/node/index.js';
import { assertError, request, requestJson } from './support/http.js';
import { makeTempDir, removeDir, runCli } from './support/process.js';
import { eventually } from './support/tree.js';
import { WatchClient } from './support/watch.js';
import { RawWire } from './support/wire.js';

interface Created {
  readonly id: string;
  readonly name: string;
  readonly token: string;
  readonly createdMs: number;
  readonly expiresMs?: number;
}

const dir = makeTempDir('auth-expiry');
const nodes: MercuryNode[] = [];
let root: MercuryNode;
let admin: string;
/** Long enough for the steps before expiry on a loaded machine; each test waits this long once. */
const EXPIRES_IN_MS = 8_000;
/** After expiry, how long a test waits for what it opened to be closed. */
const CLOSE_TIMEOUT_MS = 20_000;

function auth(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

function createToken(name: string, scopes: string[], expiresInMs?: number): Promise<Created> {
  return requestJson<Created>(root.url, 'POST', '/v1/auth/tokens', {
    headers: { ...auth(admin), 'content-type': 'application/json' },
    body: JSON.stringify({ name, scopes, ...(expiresInMs === undefined ? {} : { expiresInMs }) }),
  });
}

async function startReplica(name: string, replicationToken: string): Promise<MercuryNode> {
  const replica = await MercuryNode.start(validateConfig({ dataDir: join(dir, name), port: 0, upstreams: [root.replicationAddress] }), { limits: NODE_LIMITS_TEST, replicationToken });
  nodes.push(replica);
  return replica;
}

/** The message every door gives an expired token. */
function expiredMessage(token: Created): RegExp {
  const at = new Date(token.expiresMs!).toISOString().replace(/\./g, '\\.');
  return new RegExp(`^token ${token.id} \\("${token.name}"\\) expired at ${at}; create a new one \\(mercury token create\\) and revoke this one`);
}

before(async () => {
  // Connections that outlive the wait for expiry: what ends them must be the expiry, not being idle.
  const limits = withLimits(NODE_LIMITS_TEST, { http: { keepAliveTimeoutMs: 60_000 }, wire: { idleTimeoutMs: 60_000 } });
  root = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'root'), port: 0 }), { limits });
  nodes.push(root);
  admin = readFileSync(join(dir, 'root', 'admin-token'), 'utf8').trim();
  assert.equal((await request(root.url, 'PUT', '/v1/kv/app/a', { body: 'one', headers: auth(admin) })).status, 200);
});

after(async () => {
  for (const node of nodes.reverse()) await node.close();
  removeDir(dir);
});

describe('auth expiry: on real nodes', () => {
  test('auth expiry: a token works until it expires; then every door refuses it 401 and what it opened is closed, on the root and on a replica', async () => {
    const follower = await createToken('follower', ['replicate']);
    const replica = await startReplica('replica', follower.token);
    const [reader, replicator] = await Promise.all([createToken('reader', ['read:app/'], EXPIRES_IN_MS), createToken('child', ['replicate'], EXPIRES_IN_MS)]);
    assert.equal(reader.expiresMs, reader.createdMs + EXPIRES_IN_MS);

    // Before expiry: it works everywhere, and opens a watch, a wire connection, a parked read and a child session.
    const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 });
    assert.equal((await request(root.url, 'GET', '/v1/kv/app/a', { headers: auth(reader.token), agent: keepAlive })).status, 200);
    const watch = await WatchClient.connect(root.url, undefined, auth(reader.token));
    assert.equal((await watch.subscribe(1, ['app/'])).type, 'subscribed');
    const wire = await RawWire.ready(root.wireUrl, reader.token);
    wire.send(encodeGet(1, Buffer.from('app/a')));
    assert.equal((await wire.next())?.id, 1);
    const parked = request(root.url, 'GET', `/v1/kv/app/a?minSeq=${root.store.head().seq + 1000}&timeoutMs=50000`, { headers: auth(reader.token) });
    const child = await startReplica('child', replicator.token);
    await eventually(
      () => Promise.resolve(replica.tokens.get(reader.id) !== undefined && root.replicationServer.children().filter((session) => session.phase === 'streaming').length === 2),
      () => `replica knows the token: ${String(replica.tokens.get(reader.id) !== undefined)}; children: ${JSON.stringify(root.replicationServer.children())}`,
    );
    assert.equal((await request(replica.url, 'GET', '/v1/kv/app/a', { headers: auth(reader.token) })).status, 200);
    const { tokens } = await requestJson<{ tokens: Created[] }>(root.url, 'GET', '/v1/auth/tokens', { headers: auth(admin) });
    assert.equal(tokens.find((token) => token.id === reader.id)?.expiresMs, reader.expiresMs, 'the list shows the expiry');
    assert.equal(tokens.find((token) => token.id === follower.id)?.expiresMs, undefined, 'a token made without one never expires');
    assert.ok(Date.now() < (reader.expiresMs ?? 0), `the steps before expiry took longer than ${EXPIRES_IN_MS} ms; raise EXPIRES_IN_MS`);

    // At expiry, what it opened ends as on a revocation, saying why.
    const closed = await watch.closed;
    assert.equal(closed.code, 4401);
    assert.match(closed.reason, new RegExp(`token ${reader.id} expired at `));
    const failed = await wire.next(CLOSE_TIMEOUT_MS);
    assert.equal(RawWire.code(failed), 'UNAUTHENTICATED');
    assert.match(RawWire.message(failed), new RegExp(`token ${reader.id} expired at .*; connect again with another token`));
    await wire.closed;
    const parkedAnswer = await parked;
    assert.equal(parkedAnswer.status, 401, parkedAnswer.body.toString());
    await eventually(
      () => Promise.resolve(/expired at/.test(String(child.replicationClient!.status().lastFailure))),
      () => JSON.stringify(child.replicationClient!.status()),
      CLOSE_TIMEOUT_MS,
    );
    assert.equal(root.replicationServer.children().filter((session) => session.phase === 'streaming').length, 1, 'only the replica whose token does not expire streams');

    // Every door refuses it now, saying when it expired and what to do.
    for (const [url, agent] of [
      [root.url, keepAlive],
      [root.url, undefined],
      [replica.url, undefined],
    ] as const)
      assert.match(assertError(await request(url, 'GET', '/v1/kv/app/a', { headers: auth(reader.token), agent }), 'UNAUTHENTICATED', 401).message, expiredMessage(reader));
    keepAlive.destroy();
    const upgrade = await request(root.url, 'GET', '/v1/watch', {
      headers: { ...auth(reader.token), connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' },
    });
    assert.match(assertError(upgrade, 'UNAUTHENTICATED', 401).message, expiredMessage(reader));
    const hello = await RawWire.open(root.wireUrl);
    hello.send(encodeHello(reader.token));
    const refused = await hello.next();
    assert.equal(RawWire.code(refused), 'UNAUTHENTICATED');
    assert.match(RawWire.message(refused), expiredMessage(reader));
    hello.close();
    assert.match(String(child.replicationClient!.status().lastFailure), new RegExp(`token ${replicator.id} (\\("child"\\) )?expired at`));

    // A token that does not expire goes on, on both nodes.
    assert.equal((await request(replica.url, 'GET', '/v1/kv/app/a', { headers: auth(admin) })).status, 200);
    assert.equal((await request(root.url, 'GET', '/v1/kv/app/a', { headers: auth(admin) })).status, 200);
  });

  test('auth expiry: expiresInMs outside 1 s to 3650 days, or not an integer, is 400 INVALID_ARGUMENT naming the bounds; nothing is created', async () => {
    for (const expiresInMs of [0, 999, -5000, 1500.5, '60000', null, true, 3650 * 86_400_000 + 1, 1e300]) {
      const answer = await request(root.url, 'POST', '/v1/auth/tokens', {
        headers: { ...auth(admin), 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'bad-expiry', scopes: ['read:app/'], expiresInMs }),
      });
      const error = assertError(answer, 'INVALID_ARGUMENT', 400);
      assert.match(error.message, /expiresInMs must be an integer number of milliseconds from 1000 \(1 s\) to 315360000000 \(3650 days\)/, `${String(expiresInMs)}: ${error.message}`);
    }
    const { tokens } = await requestJson<{ tokens: Created[] }>(root.url, 'GET', '/v1/auth/tokens', { headers: auth(admin) });
    assert.ok(!tokens.some((token) => token.name === 'bad-expiry'));
  });

  test('auth expiry: mercury token create --expires-in takes 90s, 30m, 12h, 30d and refuses anything else with a usage error', async () => {
    const base = ['--url', root.url, '--token', admin, 'token', 'create'];
    for (const bad of ['', '30', '1.5h', '10x', '0s', '-5m', '1w', ' 30s', '30s ', '3651d', '1e3s', '999999999999d']) {
      const refused = await runCli([...base, 'bad-cli', '--scope', 'read:app/', `--expires-in=${bad}`]);
      assert.equal(refused.code, 2, `${JSON.stringify(bad)}: ${refused.stderr}`);
      assert.match(refused.stderr, /--expires-in must be a whole number and a unit, s, m, h or d \(90s, 30m, 12h, 30d\), from 1s to 3650d; got "/, JSON.stringify(bad));
    }
    const created = await runCli([...base, 'cli-expiring', '--scope', 'read:app/', '--expires-in', '12h', '--json']);
    assert.equal(created.code, 0, created.stderr);
    const token = JSON.parse(created.stdout.toString()) as Created;
    assert.equal(token.expiresMs! - token.createdMs, 12 * 3_600_000);
    const listed = await runCli(['--url', root.url, '--token', admin, 'token', 'list']);
    assert.match(listed.stdout.toString(), new RegExp(`${token.id} .* expires ${new Date(token.expiresMs!).toISOString()}`));
    const tokens = JSON.parse((await runCli(['--url', root.url, '--token', admin, 'token', 'list', '--json'])).stdout.toString()) as Created[];
    assert.ok(!tokens.some((listedToken) => listedToken.name === 'bad-cli'), 'no refused create reached the node');
  });

  test('auth expiry: mercury token list says which tokens have expired and how to remove their records (an expired record stays until revoked; before, only a past date told)', async () => {
    const created = await runCli(['--url', root.url, '--token', admin, 'token', 'create', 'cli-expired', '--scope', 'read:app/', '--expires-in', '1s', '--json']);
    assert.equal(created.code, 0, created.stderr);
    const token = JSON.parse(created.stdout.toString()) as Created;
    await setTimeout(Math.max(0, token.expiresMs! - Date.now()) + 50);
    const listed = (await runCli(['--url', root.url, '--token', admin, 'token', 'list'])).stdout.toString();
    assert.match(listed, new RegExp(`^${token.id} .* EXPIRED at ${new Date(token.expiresMs!).toISOString()}: grants nothing; mercury token revoke ${token.id} removes it$`, 'm'));
    assert.match(listed, /cli-expiring .* expires \S+$/m, 'a token that has not expired is listed as before');
  });

  // Expired records stayed until each was revoked by id (stop 44's note): short-lived tokens piled up.
  test('auth expiry: mercury token prune revokes every expired token and nothing else; a second prune finds none', async () => {
    const made = await Promise.all(
      ['prune-a', 'prune-b'].map(async (name) => JSON.parse((await runCli(['--url', root.url, '--token', admin, 'token', 'create', name, '--scope', 'read:app/', '--expires-in', '1s', '--json'])).stdout.toString()) as Created),
    );
    const lasting = JSON.parse((await runCli(['--url', root.url, '--token', admin, 'token', 'create', 'prune-lasting', '--scope', 'read:app/', '--expires-in', '1h', '--json'])).stdout.toString()) as Created;
    await setTimeout(Math.max(...made.map((token) => token.expiresMs!)) - Date.now() + 50);
    const pruned = await runCli(['--url', root.url, '--token', admin, 'token', 'prune']);
    assert.equal(pruned.code, 0, pruned.stderr);
    for (const token of made) assert.match(pruned.stdout.toString(), new RegExp(`^revoked ${token.id}  ${token.name}  \\(expired ${new Date(token.expiresMs!).toISOString()}\\)$`, 'm'));
    assert.match(pruned.stdout.toString(), /^\d+ expired tokens? revoked$/m);
    const { tokens } = await requestJson<{ tokens: Created[] }>(root.url, 'GET', '/v1/auth/tokens', { headers: auth(admin) });
    assert.ok(!tokens.some((token) => made.some((gone) => gone.id === token.id)), 'the expired records are gone');
    assert.ok(!tokens.some((token) => token.expiresMs !== undefined && token.expiresMs <= Date.now()), 'no expired record is left');
    assert.ok(tokens.some((token) => token.id === lasting.id), 'a token that has not expired stays');
    assert.ok(tokens.some((token) => token.name === 'cli-expiring'), 'another test\'s unexpired token stays');
    const again = await runCli(['--url', root.url, '--token', admin, 'token', 'prune', '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(JSON.parse(again.stdout.toString()), { revoked: [], kept: [] });
    assert.equal((await runCli(['--url', root.url, '--token', admin, 'token', 'prune', 'extra'])).code, 2, 'no argument');
  });
});

describe('auth expiry: records and registry', () => {
  const keyOf = (record: ReturnType<typeof createTokenRequest>): Buffer => tokenKey(record.record.id);

  test('auth expiry: expiresMs round-trips; the registry refuses the token from that instant by its clock and reports it once to end what it opened', () => {
    let nowMs = 10_000;
    const created = createTokenRequest({ name: 'short', scopes: ['read:app/'], expiresInMs: 5_000 }, nowMs, []);
    assert.equal(created.record.expiresMs, 15_000);
    const put = created.request.success[0]!;
    if (put.type !== 'put') return assert.fail();
    const decoded = decodeTokenRecord(put.key, put.value) as TokenRecord;
    assert.equal(decoded.expiresMs, 15_000);
    assert.deepEqual(encodeTokenRecord(decoded), put.value);
    const registry = new TokenRegistry(() => [], undefined, undefined, { nowMs: () => nowMs });
    registry.applied(created.request.success);
    const principal = registry.authenticateToken(created.token!);
    assert.equal(registry.nextExpiryMs(), 15_000);
    assert.deepEqual(registry.expire(), []);
    nowMs = 15_000;
    assert.throws(() => registry.authenticateToken(created.token!), /expired at 1970-01-01T00:00:15\.000Z; create a new one/);
    assert.throws(() => registry.current(principal), /expired at/);
    assert.equal(registry.principalById(created.record.id), undefined, 'a keep-alive connection checks it in full');
    assert.deepEqual(registry.expire(), [{ id: created.record.id, why: 'expired at 1970-01-01T00:00:15.000Z' }]);
    assert.deepEqual(registry.expire(), [], 'reported once');
    assert.equal(registry.nextExpiryMs(), undefined, 'the timer is not armed again for it');
    assert.ok(registry.get(created.record.id) !== undefined, 'the record stays (listed) until revoked');
    // A grant to a certificate subject expires the same way.
    const grant = createTokenRequest({ name: 'edge', scopes: ['replicate'], subject: 'edge.example', expiresInMs: 1_000 }, nowMs, []);
    registry.applied(grant.request.success);
    assert.equal(registry.authenticate(undefined, 'edge.example').name, 'edge');
    nowMs += 1_000;
    assert.throws(() => registry.authenticate(undefined, 'edge.example'), /token [0-9a-f]{16} \("edge"\) expired at/);
  });

  test('auth expiry: an admin token that expires does not keep token management possible: the last one that does not cannot be revoked (409 LAST_ADMIN_TOKEN)', () => {
    const lasting = createTokenRequest({ name: 'admin', scopes: ['admin'] }, 1_000, []).record;
    const expiring = createTokenRequest({ name: 'admin-1h', scopes: ['admin'], expiresInMs: 3_600_000 }, 1_000, []).record;
    assert.throws(() => adminKeptAfter(lasting.id, [lasting, expiring]), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'LAST_ADMIN_TOKEN');
      assert.match(error.message, /is the only admin token left that does not expire: .*without --expires-in/);
      return true;
    });
    assert.throws(() => requireAdminKept(revokeTokenRequest(lasting.id), [lasting, expiring]), /would leave no admin token that does not expire/);
    assert.equal(adminKeptAfter(expiring.id, [lasting, expiring]), undefined, 'an expiring admin token may always be revoked');
  });

  test('auth expiry: a record whose expiresMs is malformed is unreadable, like any malformed record: listed with why, it authenticates nothing', () => {
    const created = createTokenRequest({ name: 'malformed', scopes: ['read:app/'] }, 1_000, []);
    const put = created.request.success[0]!;
    if (put.type !== 'put') return assert.fail();
    const record = JSON.parse(put.value.toString()) as Record<string, unknown>;
    for (const expiresMs of ['2030-01-01', -1, 1.5, 1_000, 500, null, 2 ** 60]) {
      const value = Buffer.from(JSON.stringify({ ...record, expiresMs }));
      assert.equal(decodeTokenRecord(keyOf(created), value), 'bad expiresMs (an integer of Unix ms after createdMs)', String(expiresMs));
      const registry = new TokenRegistry(() => [{ key: keyOf(created), value }]);
      assert.equal(registry.get(created.record.id), undefined);
      assert.deepEqual(registry.unreadableRecords(), [{ id: created.record.id, why: 'bad expiresMs (an integer of Unix ms after createdMs)' }]);
      assert.throws(() => registry.authenticateToken(created.token!), /unknown token/);
    }
  });
});

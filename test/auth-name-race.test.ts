/**
 * Token names are unique among live tokens and grants (409 TOKEN_NAME_TAKEN), and that holds when two admins race:
 * creates of one name sent at once to the root, or through two replicas that forward them to it. Before, the check
 * ran only against the tokens the serving node knew when the request came, and both creates were committed; now the
 * create's write carries a compare on the name's index key, which the root applies one write after another. Also:
 * a revoked name can be taken again, a token from before the index (no index key) still holds its name, and an index
 * key left by a raw transaction's delete does not hold a name no token has. In-process nodes on port 0, auth required.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../src/node/index.js';
import { encodeTokenRecord, generateToken, parseScopes, tokenKey } from '../src/auth/index.js';
import { request, requestJson } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';
import { eventually } from './support/tree.js';

const dir = makeTempDir('auth-name-race');
let root: MercuryNode;
let admin: string;
const nodes: MercuryNode[] = [];
const auth = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });

/** Sends a create of `name` to `on`: its HTTP status and error code. */
async function create(on: MercuryNode, name: string): Promise<{ status: number; code: string | undefined; id: string | undefined }> {
  const answer = await request(on.url, 'POST', '/v1/auth/tokens', { headers: { ...auth(admin), 'content-type': 'application/json' }, body: JSON.stringify({ name, scopes: ['read:app/'] }) });
  const json = JSON.parse(answer.body.toString('utf8')) as { id?: string; error?: { code: string } };
  return { status: answer.status, code: json.error?.code, id: json.id };
}

async function named(name: string): Promise<{ id: string; name: string }[]> {
  const { tokens } = await requestJson<{ tokens: { id: string; name: string }[] }>(root.url, 'GET', '/v1/auth/tokens', { headers: auth(admin) });
  return tokens.filter((token) => token.name === name);
}

/** An admin's raw transaction on reserved keys (what validateReservedOps lets through). */
async function rawTxn(ops: Record<string, unknown>[]): Promise<void> {
  await requestJson(root.url, 'POST', '/v1/txn', { headers: { ...auth(admin), 'content-type': 'application/json' }, body: JSON.stringify({ success: ops }) });
}

/** Exactly one of `answers` made the token; the others are 409 TOKEN_NAME_TAKEN; the root holds one token of `name`. */
async function assertOneMade(answers: { status: number; code: string | undefined }[], name: string): Promise<void> {
  assert.deepEqual(answers.map((answer) => answer.status).sort(), [201, ...Array<number>(answers.length - 1).fill(409)], JSON.stringify(answers));
  for (const answer of answers) if (answer.status === 409) assert.equal(answer.code, 'TOKEN_NAME_TAKEN');
  assert.equal((await named(name)).length, 1);
}

before(async () => {
  root = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'root'), port: 0 }), { limits: NODE_LIMITS_TEST });
  nodes.push(root);
  admin = readFileSync(join(dir, 'root', 'admin-token'), 'utf8').trim();
});

after(async () => {
  for (const node of nodes.reverse()) await node.close();
  removeDir(dir);
});

describe('auth: token names when admins race', () => {
  test('auth: concurrent creates of one name at the root: exactly one is made, the others are 409 TOKEN_NAME_TAKEN', async () => {
    await assertOneMade(await Promise.all(Array.from({ length: 4 }, () => create(root, 'raced'))), 'raced');
  });

  test('auth: creates of one name through two replicas at once: exactly one is made at the root, the other is 409 TOKEN_NAME_TAKEN', async () => {
    const replicate = (await requestJson<{ token: string }>(root.url, 'POST', '/v1/auth/tokens', {
      headers: { ...auth(admin), 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'replicas', scopes: ['replicate'] }),
    })).token;
    const replicas: MercuryNode[] = [];
    for (const label of ['replica-a', 'replica-b']) {
      const replica = await MercuryNode.start(validateConfig({ dataDir: join(dir, label), port: 0, upstreams: [root.replicationAddress] }), { limits: NODE_LIMITS_TEST, replicationToken: replicate });
      nodes.push(replica);
      replicas.push(replica);
    }
    await eventually(
      () => Promise.resolve(replicas.every((replica) => replica.store.head().seq === root.store.head().seq)),
      () => JSON.stringify(replicas.map((replica) => replica.replicationClient!.status())),
    );
    await assertOneMade(await Promise.all(replicas.map((replica) => create(replica, 'raced-via-replicas'))), 'raced-via-replicas');
  });

  test('auth: a revoked name can be taken again; a token from before the name index still holds its name; a stale index key holds none', async () => {
    const first = await create(root, 'reused');
    assert.equal(first.status, 201);
    await requestJson(root.url, 'DELETE', `/v1/auth/tokens?id=${first.id!}`, { headers: auth(admin) });
    assert.equal((await create(root, 'reused')).status, 201, 'the revocation freed the name');

    // A record as an older version wrote it: no index key. The scan still sees its name.
    const legacy = generateToken();
    const record = { id: legacy.id, name: 'legacy', scopes: parseScopes(['read:app/']), createdMs: 1, secretSha256: legacy.secretSha256, subject: undefined };
    await rawTxn([{ op: 'put', keyBase64: tokenKey(legacy.id).toString('base64'), valueBase64: encodeTokenRecord(record).toString('base64') }]);
    const refused = await create(root, 'legacy');
    assert.deepEqual([refused.status, refused.code], [409, 'TOKEN_NAME_TAKEN']);

    // A token deleted by a raw transaction leaves its index key naming it: the name is free all the same.
    const dropped = await create(root, 'dropped');
    await rawTxn([{ op: 'delete', keyBase64: tokenKey(dropped.id!).toString('base64') }]);
    assert.equal((await named('dropped')).length, 0);
    assert.equal((await create(root, 'dropped')).status, 201, 'a stale index key does not hold the name');
  });

  test('auth: a token record put by a raw transaction under a taken name (how an older replica forwards a create) is 409 TOKEN_NAME_TAKEN; a re-put under its own name passes', async () => {
    const held = await create(root, 'held');
    assert.equal(held.status, 201);
    // What a replica of a version from before unique names sends the root for `token create held`: the record alone.
    const older = generateToken();
    const record = { id: older.id, name: 'held', scopes: parseScopes(['read:app/']), createdMs: 1, secretSha256: older.secretSha256, subject: undefined };
    const answer = await request(root.url, 'POST', '/v1/txn', {
      headers: { ...auth(admin), 'content-type': 'application/json' },
      body: JSON.stringify({ success: [{ op: 'put', keyBase64: tokenKey(older.id).toString('base64'), valueBase64: encodeTokenRecord(record).toString('base64') }] }),
    });
    const json = JSON.parse(answer.body.toString('utf8')) as { error?: { code: string } };
    assert.deepEqual([answer.status, json.error?.code], [409, 'TOKEN_NAME_TAKEN'], answer.body.toString('utf8'));
    assert.equal((await named('held')).length, 1);
    // The holder itself re-put with its name and other scopes (the same id): not a second token of the name.
    const own = { ...record, id: held.id!, scopes: parseScopes(['read:other/']) };
    await rawTxn([{ op: 'put', keyBase64: tokenKey(held.id!).toString('base64'), valueBase64: encodeTokenRecord(own).toString('base64') }]);
    assert.equal((await named('held')).length, 1);
  });
});

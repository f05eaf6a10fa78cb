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
import { encodeTokenRecord, generateToken, parseScopes, tokenKey, tokenNameKey } from '../src/auth/index.js';
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

/** An admin's raw transaction on reserved keys, whatever its answer: status, error code and message, `succeeded`. */
async function rawAnswer(txn: Record<string, unknown>): Promise<{ status: number; code: string | undefined; message: string; succeeded: boolean | undefined }> {
  const answer = await request(root.url, 'POST', '/v1/txn', { headers: { ...auth(admin), 'content-type': 'application/json' }, body: JSON.stringify(txn) });
  const json = JSON.parse(answer.body.toString('utf8')) as { succeeded?: boolean; error?: { code: string; message: string } };
  return { status: answer.status, code: json.error?.code, message: json.error?.message ?? '', succeeded: json.succeeded };
}

/** A put of a new bearer token's record named `name`, in the JSON form of POST /v1/txn. */
function recordPut(id: string, name: string, secretSha256 = 'ab'.repeat(32)): Record<string, unknown> {
  const record = { id, name, scopes: parseScopes(['read:app/']), createdMs: 1, secretSha256, subject: undefined };
  return { op: 'put', keyBase64: tokenKey(id).toString('base64'), valueBase64: encodeTokenRecord(record).toString('base64') };
}

const nameKeyBase64 = (name: string): string => tokenNameKey(name).toString('base64');

/** Exactly one of `answers` made the token; the others are 409 TOKEN_NAME_TAKEN; the root holds one token of `name`. */
async function assertOneMade(answers: { status: number; code: string | undefined }[], name: string): Promise<void> {
  assert.deepEqual(answers.map((answer) => answer.status).sort(), [201, ...Array<number>(answers.length - 1).fill(409)], JSON.stringify(answers));
  for (const answer of answers) if (answer.status === 409) assert.equal(answer.code, 'TOKEN_NAME_TAKEN');
  assert.equal((await named(name)).length, 1);
}

/** Replicas of the root (in-process, under `labels`), caught up with it. */
async function startReplicas(labels: readonly string[]): Promise<MercuryNode[]> {
  const replicate = (await requestJson<{ token: string }>(root.url, 'POST', '/v1/auth/tokens', {
    headers: { ...auth(admin), 'content-type': 'application/json' },
    body: JSON.stringify({ name: `replicas-${labels.join('-')}`, scopes: ['replicate'] }),
  })).token;
  const replicas: MercuryNode[] = [];
  for (const label of labels) {
    const replica = await MercuryNode.start(validateConfig({ dataDir: join(dir, label), port: 0, upstreams: [root.replicationAddress] }), { limits: NODE_LIMITS_TEST, replicationToken: replicate });
    nodes.push(replica);
    replicas.push(replica);
  }
  await eventually(
    () => Promise.resolve(replicas.every((replica) => replica.store.head().seq === root.store.head().seq)),
    () => JSON.stringify(replicas.map((replica) => replica.replicationClient!.status())),
  );
  return replicas;
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
    const replicas = await startReplicas(['replica-a', 'replica-b']);
    await assertOneMade(await Promise.all(replicas.map((replica) => create(replica, 'raced-via-replicas'))), 'raced-via-replicas');
  });

  test('auth: a revoked name can be taken again; a token from before the name index still holds its name; a stale index key holds none', async () => {
    const first = await create(root, 'reused');
    assert.equal(first.status, 201);
    await requestJson(root.url, 'DELETE', `/v1/auth/tokens?id=${first.id!}`, { headers: auth(admin) });
    assert.equal((await create(root, 'reused')).status, 201, 'the revocation freed the name');

    // A record as an older version wrote it: no index key (committed as such an entry would be; POST /v1/txn now
    // refuses a record of a new name without its index key). The scan still sees its name.
    const legacy = generateToken();
    const record = { id: legacy.id, name: 'legacy', scopes: parseScopes(['read:app/']), createdMs: 1, secretSha256: legacy.secretSha256, subject: undefined };
    await root.committer!.submit({ compares: [], success: [{ type: 'put', key: tokenKey(legacy.id), value: encodeTokenRecord(record) }], failure: [] }, true);
    const refused = await create(root, 'legacy');
    assert.deepEqual([refused.status, refused.code], [409, 'TOKEN_NAME_TAKEN']);

    // A token deleted by a raw transaction of an older version left its index key naming it (committed as such an
    // entry would be; POST /v1/txn now refuses that delete): the name is free all the same.
    const dropped = await create(root, 'dropped');
    await root.committer!.submit({ compares: [], success: [{ type: 'delete', key: tokenKey(dropped.id!) }], failure: [] }, true);
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

  // Decision 57: a raw rename left the old name's index key naming the token and the new name unguarded, and two raw
  // puts of one name at once could both commit (the check saw only the tokens the root knew).
  test('auth: a raw transaction giving a token record a name without keeping its index key is 400 INVALID_ARGUMENT naming the keys; one that keeps it renames', async () => {
    const token = await create(root, 'before-rename');
    assert.equal(token.status, 201);
    const seq = root.store.head().seq;
    const alone = await rawAnswer({ success: [recordPut(token.id!, 'after-rename')] });
    assert.deepEqual([alone.status, alone.code], [400, 'INVALID_ARGUMENT'], alone.message);
    assert.match(alone.message, /success\[0\]: this put gives token \w+ the name "after-rename" \(it was "before-rename"\) but puts no "\\u0000mercury\/auth\/name\/after-rename" = "\w+" beside it; compares no .*; leaves "\\u0000mercury\/auth\/name\/before-rename" naming the token \(delete it\)/);
    assert.match(alone.message, /mercury token create/);
    assert.equal(root.store.head().seq, seq, 'nothing was committed');
    // In the failure branch a name is refused too: its compares cannot guard it.
    const inFailure = await rawAnswer({ compare: [{ keyBase64: nameKeyBase64('after-rename'), exists: true }], failure: [recordPut(token.id!, 'after-rename'), { op: 'put', keyBase64: nameKeyBase64('after-rename'), value: token.id }] });
    assert.deepEqual([inFailure.status, inFailure.code], [400, 'INVALID_ARGUMENT'], inFailure.message);
    assert.match(inFailure.message, /failure\[0\]: .* is in the failure branch/);

    const moved = await rawAnswer({
      compare: [{ keyBase64: nameKeyBase64('after-rename'), exists: false }],
      success: [recordPut(token.id!, 'after-rename'), { op: 'put', keyBase64: nameKeyBase64('after-rename'), value: token.id }, { op: 'delete', keyBase64: nameKeyBase64('before-rename') }],
    });
    assert.deepEqual([moved.status, moved.succeeded], [200, true], moved.message);
    assert.equal(root.store.get(tokenNameKey('after-rename')).record?.value.toString('latin1'), token.id);
    assert.equal(root.store.get(tokenNameKey('before-rename')).record, undefined, 'the old name index key is gone');
    const taken = await create(root, 'after-rename');
    assert.deepEqual([taken.status, taken.code], [409, 'TOKEN_NAME_TAKEN']);
    assert.equal((await create(root, 'before-rename')).status, 201, 'the old name is free');
  });

  // Decision 57: a raw delete of a token record left its name's index key naming the deleted token (litter a create
  // took as free).
  test('auth: a raw delete of a token record without its name index key is 400 INVALID_ARGUMENT pointing to mercury token revoke; with it, both go; revokes still pass', async () => {
    const token = await create(root, 'raw-deleted');
    assert.equal(token.status, 201);
    const seq = root.store.head().seq;
    const recordDelete = { op: 'delete', keyBase64: tokenKey(token.id!).toString('base64') };
    const alone = await rawAnswer({ success: [recordDelete] });
    assert.deepEqual([alone.status, alone.code], [400, 'INVALID_ARGUMENT'], alone.message);
    assert.match(alone.message, /success\[0\]: this delete of token \w+ \("raw-deleted"\) leaves "\\u0000mercury\/auth\/name\/raw-deleted" naming the token: delete that key in the same branch/);
    assert.match(alone.message, /mercury token revoke/);
    // In the failure branch as well: a branch that deletes the record deletes the key.
    const inFailure = await rawAnswer({ compare: [{ keyBase64: tokenKey(token.id!).toString('base64'), exists: false }], failure: [recordDelete] });
    assert.deepEqual([inFailure.status, inFailure.code], [400, 'INVALID_ARGUMENT'], inFailure.message);
    assert.match(inFailure.message, /failure\[0\]: this delete of token/);
    assert.equal(root.store.head().seq, seq, 'nothing was committed');
    assert.equal((await named('raw-deleted')).length, 1);

    const both = await rawAnswer({ success: [recordDelete, { op: 'delete', keyBase64: nameKeyBase64('raw-deleted') }] });
    assert.deepEqual([both.status, both.succeeded], [200, true], both.message);
    assert.equal(root.store.get(tokenNameKey('raw-deleted')).record, undefined, 'the name index key went with the record');
    assert.equal((await named('raw-deleted')).length, 0);

    // A revoke through the token API, at the root and forwarded by a replica (as a raw transaction the root checks).
    const [replica] = await startReplicas(['replica-revoke']);
    for (const on of [root, replica!]) {
      const name = `revoked-${on === root ? 'root' : 'replica'}`;
      const revoked = await create(root, name);
      await eventually(() => Promise.resolve(on.store.head().seq === root.store.head().seq), () => `${on.url} at seq ${on.store.head().seq}`);
      await requestJson(on.url, 'DELETE', `/v1/auth/tokens?id=${revoked.id!}`, { headers: auth(admin) });
      assert.equal(root.store.get(tokenKey(revoked.id!)).record, undefined);
      assert.equal(root.store.get(tokenNameKey(name)).record, undefined);
    }
  });

  test('auth: raw puts of one new name at once: a record alone is refused; with the index key and its compare, exactly one commits', async () => {
    const ids = Array.from({ length: 4 }, () => generateToken().id);
    const alone = await Promise.all(ids.map((id) => rawAnswer({ success: [recordPut(id, 'raw-raced')] })));
    assert.deepEqual(
      alone.map((answer) => [answer.status, answer.code]),
      ids.map(() => [400, 'INVALID_ARGUMENT']),
      JSON.stringify(alone),
    );
    assert.equal((await named('raw-raced')).length, 0);
    const indexed = await Promise.all(
      ids.map((id) =>
        rawAnswer({
          compare: [{ keyBase64: nameKeyBase64('raw-raced'), exists: false }],
          success: [recordPut(id, 'raw-raced'), { op: 'put', keyBase64: nameKeyBase64('raw-raced'), value: id }],
        }),
      ),
    );
    // The others failed the compare at the root (200, succeeded false), or met the name already in the registry (409).
    assert.equal(indexed.filter((answer) => answer.status === 200 && answer.succeeded === true).length, 1, JSON.stringify(indexed));
    for (const answer of indexed) assert.ok((answer.status === 200 && answer.succeeded !== undefined) || answer.code === 'TOKEN_NAME_TAKEN', JSON.stringify(answer));
    assert.equal((await named('raw-raced')).length, 1);
  });
});

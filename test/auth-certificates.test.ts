/**
 * Certificate grants on real TLS nodes (certificates made with openssl, test/support/certs.ts; in-process nodes with
 * auth required on loopback): a replica never lets its own certificate stand in for a caller's, on HTTP and the wire
 * port; a subject named by two grants authenticates as neither, before and after a restart (audit, 2026-12-06).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { encodeTokenRecord, parseScopes, tokenKey, tokenNameKey } from '../src/auth/index.js';
import { NodeClient, PermissionDeniedError, UnauthenticatedError, connect, type ServerError } from '../src/client/index.js';
import { validateConfig, type NodeConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../src/node/index.js';
import { clientTls, testCertificates, tlsPaths } from './support/certs.js';
import { waitUntil } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';

const certs = testCertificates();

/** The error `promise` rejects with (a fulfilment fails the test). */
function rejection(promise: Promise<unknown>): Promise<ServerError> {
  return promise.then(
    () => assert.fail('expected a rejection'),
    (error: unknown) => error as ServerError,
  );
}

describe('auth: certificate grants', () => {
  const dir = makeTempDir('auth-certificates');
  const nodes: MercuryNode[] = [];
  after(async () => {
    for (const node of nodes.reverse()) await node.close();
    removeDir(dir);
  });

  async function startNode(name: string, config: Partial<NodeConfig> = {}, auth: 'off' | 'required' = 'required'): Promise<MercuryNode> {
    const node = await MercuryNode.start(validateConfig({ dataDir: join(dir, name), host: '127.0.0.1', port: 0, tls: tlsPaths(), ...config }), { auth, limits: NODE_LIMITS_TEST });
    nodes.push(node);
    return node;
  }

  const adminOf = (name: string): NodeClient => new NodeClient(nodes.find((node) => node.config.dataDir === join(dir, name))!.url, 5_000, clientTls(), `Bearer ${readFileSync(join(dir, name, 'admin-token'), 'utf8').trim()}`);

  /** The authors the root recorded for the last entry that wrote `key`. */
  async function authorsOf(admin: NodeClient, key: string): Promise<string[] | undefined> {
    const page = await admin.log(1, 1_000);
    const entry = page.entries.filter((candidate) => JSON.stringify(candidate.ops).includes(`"key":"${key}"`)).at(-1);
    return (entry?.authors as { author: string }[] | undefined)?.map((author) => author.author);
  }

  test('auth: a replica refuses to forward a write authenticated by a client certificate alone (HTTP and wire); with a token it is recorded as the caller', async () => {
    const root = await startNode('root');
    const admin = adminOf('root');
    // The replica follows with its certificate (CN "node"); alice's certificate (CN "alice") may write app/.
    await admin.createToken('replica', ['replicate'], { subject: 'node' });
    await admin.createToken('alice', ['read:app/', 'write:app/'], { subject: 'alice' });
    const bob = await admin.createToken('bob', ['read:app/', 'write:app/']);
    const replica = await startNode('replica', { upstreams: [root.replicationAddress] });
    await waitUntil('the replica streams from its root', () => Promise.resolve(replica.replicationClient?.status().phase === 'streaming'));
    await waitUntil('the replica knows alice', () => Promise.resolve(replica.tokens.size === root.tokens.size));

    const alice = { ...clientTls(certs.client), attemptsMax: 1 };
    for (const url of [replica.url, replica.wireUrl]) {
      const refused = await rejection(connect(url, alice).put('app/by-alice', url));
      assert.ok(refused instanceof PermissionDeniedError, `${url}: ${String(refused)}`);
      assert.equal(refused.code, 'CERTIFICATE_NOT_FORWARDED');
      assert.match(refused.message, /client certificate \("alice"\).*Send the write to the root, or authenticate with a token/);
      assert.equal((await connect(url, alice).get('app/by-alice'))?.value, undefined, 'nothing was written');
    }
    // On the root itself the certificate is the caller's own: it writes, as alice.
    await connect(root.url, alice).put('app/by-alice', 'at the root');
    assert.deepEqual(await authorsOf(admin, 'app/by-alice'), ['alice']);
    // A token goes through the replica, and the root records its name, not the replica's subject.
    await connect(replica.url, { ...clientTls(), token: bob.token! }).put('app/by-bob', 'via the replica');
    assert.deepEqual(await authorsOf(admin, 'app/by-bob'), ['bob']);
  });

  test('auth: the root never takes the forwarding replica\'s certificate as the writer: a write without a credential through a replica with auth off is refused', async () => {
    const root = await startNode('root-2');
    const admin = adminOf('root-2');
    await admin.createToken('replica', ['admin'], { subject: 'node' });
    const replica = await startNode('replica-2', { upstreams: [root.replicationAddress] }, 'off');
    await waitUntil('the replica streams from its root', () => Promise.resolve(replica.replicationClient?.status().phase === 'streaming'));
    const refused = await rejection(connect(replica.url, { ...clientTls(), attemptsMax: 1 }).put('app/anonymous', 'x'));
    assert.ok(refused instanceof UnauthenticatedError, String(refused));
    assert.match(refused.message, /no credential/);
    assert.equal(await authorsOf(admin, 'app/anonymous'), undefined, 'nothing was written as the replica');
  });

  test('auth: a subject named by two grants authenticates as neither, the same before and after a restart; revoking one restores the other', async () => {
    let root = await startNode('root-3');
    let admin = adminOf('root-3');
    const write = await admin.createToken('alice', ['read:app/', 'write:app/'], { subject: 'alice' });
    const refused = await rejection(admin.createToken('alice-ro', ['read:other/'], { subject: 'alice' }));
    assert.equal(refused.code, 'SUBJECT_ALREADY_GRANTED');
    assert.match(refused.message, new RegExp(`grant ${write.id} \\("alice"\\) already names`));
    // Records still arrive through the log (from an older root, or two admins racing): put one directly, with an id
    // that sorts before the first, which a restart used to let win.
    const id = '0000000000000000';
    const record = encodeTokenRecord({ id, name: 'alice-ro', scopes: parseScopes(['read:other/']), createdMs: 1, secretSha256: undefined, subject: 'alice' });
    const nameKeyBase64 = tokenNameKey('alice-ro').toString('base64');
    await admin.txn({
      compare: [{ keyBase64: nameKeyBase64, exists: false }],
      success: [
        { op: 'put', keyBase64: tokenKey(id).toString('base64'), valueBase64: record.toString('base64') },
        { op: 'put', keyBase64: nameKeyBase64, value: id },
      ],
      failure: [],
    });
    const alice = { ...clientTls(certs.client), attemptsMax: 1 };
    const ambiguous = async (): Promise<void> => {
      const error = await rejection(connect(root.url, alice).put('app/x', 'y'));
      assert.ok(error instanceof UnauthenticatedError, String(error));
      assert.match(error.message, /"alice" is named by 2 grants .*revokes all but one/);
    };
    await ambiguous();
    await root.close();
    nodes.splice(nodes.indexOf(root), 1);
    root = await startNode('root-3');
    admin = adminOf('root-3');
    await ambiguous();
    await admin.revokeToken(id);
    await connect(root.url, alice).put('app/x', 'alice writes again');
  });
});
